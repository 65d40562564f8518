from __future__ import annotations

import math

import pytest
import torch

from neurolabel.plugin_core.aggregation import (
    ImageSample,
    activation_weights,
    contrast,
    cos_cubed,
    get_aggregation,
    mean_similarity,
    soft_wpmi,
    wpmi,
)
from neurolabel.plugin_core.errors import NeurolabelError


def test_soft_wpmi_against_hand_computation():
    # 2 neurons, 2 exemplars each, 2 concepts; a=1, lam=1, top_k=2, p from 0.9 to 0.8
    sims = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 2.0], [0.0, 0.0]]])
    acts = torch.ones(2, 2)
    got = soft_wpmi(sims, acts, top_k=2, a=1.0, lam=1.0, p_start=0.9, p_end=0.8, min_prob=0.0)

    def softmax(row):
        e = [math.exp(x) for x in row]
        return [x / sum(e) for x in e]

    p_in = [0.9, 0.9 - 0.5 * 0.1]
    given = []
    for n in range(2):
        row = []
        for c in range(2):
            total = 0.0
            for j in range(2):
                prob = softmax(sims[n, j].tolist())[c]
                total += math.log(1 + p_in[j] * (prob - 1))
            row.append(total)
        given.append(row)
    for c in range(2):
        prior = math.log(sum(math.exp(given[n][c]) for n in range(2)) / 2)
        for n in range(2):
            assert got[n, c].item() == pytest.approx(given[n][c] - prior, abs=1e-5)


def test_wpmi_and_mean_and_contrast_pick_the_right_concept():
    sims = torch.tensor([[[0.9, 0.2, 0.5], [0.8, 0.1, 0.5]], [[0.1, 0.9, 0.5], [0.2, 0.7, 0.5]]])
    acts = torch.tensor([[3.0, 2.0], [5.0, float("-inf")]])
    for function in (wpmi, mean_similarity, contrast, soft_wpmi):
        assert function(sims, acts).argmax(dim=1).tolist() == [0, 1], function.__name__


def test_activation_weights_favor_strong_exemplars_and_ignore_missing():
    acts = torch.tensor([[4.0, 2.0, 1.0, float("-inf")]])
    linear = activation_weights(acts)
    sharp = activation_weights(acts, sharpness=8.0)
    assert linear[0, 3] == 0 and sharp[0, 3] == 0
    assert torch.allclose(linear.sum(), torch.tensor(1.0))
    assert linear[0, 0] > linear[0, 1] > linear[0, 2] > 0
    assert sharp[0, 0] > linear[0, 0]


def test_cos_cubed_uses_the_image_sample():
    torch.manual_seed(0)
    acts = torch.randn(50, 3)
    sims = torch.cat([acts[:, [2, 0, 1]], torch.randn(50, 1)], dim=1)
    sample = ImageSample(acts=acts, sims=sims)
    got = cos_cubed(torch.zeros(3, 1, 4), torch.ones(3, 1), sample)
    assert got.argmax(dim=1).tolist() == [1, 2, 0]
    with pytest.raises(NeurolabelError):
        cos_cubed(torch.zeros(3, 1, 4), torch.ones(3, 1), None)


def test_aggregation_lookup():
    assert get_aggregation("default").name == "contrast"
    assert get_aggregation("cos-cubed").sample == "required"
    assert get_aggregation("default").sample == "used"
    with pytest.raises(NeurolabelError, match="Did you mean 'soft-wpmi'"):
        get_aggregation("soft_wpmi")
