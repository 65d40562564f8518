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


def test_sample_correlation_z_is_fisher_scaled_and_null_calibrated():
    from neurolabel.plugin_core.aggregation import sample_correlation_z

    g = torch.Generator().manual_seed(0)
    acts = torch.randn(400, 30, generator=g)
    noise = torch.randn(400, 200, generator=g)
    sims = torch.cat([acts[:, :1] + 0.5 * noise[:, :1], noise[:, 1:], torch.ones(400, 1)], dim=1)
    z = sample_correlation_z(ImageSample(acts, sims))
    r = torch.corrcoef(torch.stack([acts[:, 0], sims[:, 0]]))[0, 1]
    assert z[0, 0].item() == pytest.approx(math.atanh(r.item()) * math.sqrt(397), rel=1e-4)
    # unrelated pairs are roughly standard normal, a constant concept gets exactly zero
    null = z[:, 1:200]
    assert abs(null.mean().item()) < 0.1 and 0.85 < null.std().item() < 1.15
    assert torch.all(z[:, 200] == 0)


def test_contrast_weighs_image_level_correlation():
    """Exemplars favor concept 2 for even neurons and 0 for odd ones; over the sampled images
    each even neuron tracks concept 0 and each odd one concept 2, strongly. The correlation
    term decides, and ``correlation=0`` turns it off."""
    g = torch.Generator().manual_seed(1)
    neurons, images = 20, 200
    even = torch.arange(neurons) % 2 == 0
    sims = torch.full((neurons, 5, 4), 0.5)
    sims[even, :, 2] += 0.1
    sims[~even, :, 0] += 0.1
    acts = torch.ones(neurons, 5)
    signal = torch.randn(images, 2, generator=g)  # what even / odd neurons track
    sample_acts = signal[:, (~even).long()] + 0.5 * torch.randn(images, neurons, generator=g)
    sample_sims = 0.5 + 0.01 * torch.randn(images, 4, generator=g)
    sample_sims[:, 0] += 0.05 * signal[:, 0]
    sample_sims[:, 2] += 0.05 * signal[:, 1]
    sample = ImageSample(sample_acts, sample_sims)
    exemplars_only = [2 if e else 0 for e in even.tolist()]
    assert contrast(sims, acts, sample, correlation=0.0).argmax(dim=1).tolist() == exemplars_only
    assert contrast(sims, acts, sample).argmax(dim=1).tolist() == [0 if e else 2 for e in even]
    # too few sampled images: the exemplars alone decide
    few = ImageSample(sample_acts[:10], sample_sims[:10])
    assert contrast(sims, acts, few).argmax(dim=1).tolist() == exemplars_only
