"""Clarity, polysemanticity and redundancy against planted ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neurolabel import NeuronLabeler
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.result import LabelingResult

SMALL = Preprocessing((32, 32), 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


class Planted(nn.Module):
    """detect (red, green, blue) -> units: 0 red, 1 red or green, 2 red again, 3 blue."""

    def __init__(self) -> None:
        super().__init__()
        self.detect = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
        self.units = nn.Conv2d(3, 4, 1, bias=False)
        with torch.no_grad():
            self.detect[0].weight.copy_(
                torch.tensor([[1.0, -1, -1], [-1, 1, -1], [-1, -1, 1]]).view(3, 3, 1, 1)
            )
            self.detect[0].bias.zero_()
            mixing = torch.tensor([[1.0, 0, 0], [1, 1, 0], [1, 0, 0], [0, 0, 1]])
            self.units.weight.copy_(mixing.view(4, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(self.detect(x)).mean(dim=(2, 3))


def colored_squares(count: int) -> list[Image.Image]:
    """Gray noise with one square of red, green or blue, of varied intensity."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        array = rng.integers(90, 140, size=(32, 32, 1), dtype=np.uint8).repeat(3, axis=2)
        color = [20, 20, 20]
        color[i % 3] = int(rng.integers(190, 250))
        side = int(rng.integers(8, 16))
        x, y = (int(v) for v in rng.integers(0, 32 - side, 2))
        array[y : y + side, x : x + side] = color
        images.append(Image.fromarray(array))
    return images


@pytest.fixture(scope="module")
def result() -> LabelingResult:
    return NeuronLabeler(
        Planted(),
        ["units"],
        scorer="color",
        vocabulary=["red", "green", "blue", "yellow", "gray"],
        top_k=10,
        device="cpu",
        progress=False,
        cache=False,
        preprocessing=SMALL,
    ).run(colored_squares(90))


def test_a_unit_firing_on_two_colors_gets_one_label_per_group(result):
    red, either, _, blue = result.neurons["units"]
    assert [g[0] for g in red.groups] == ["red"] and red.polysemanticity == 1
    assert blue.polysemanticity == 1 and blue.groups[0][0] == "blue"
    assert sorted(g[0] for g in either.groups) == ["green", "red"], either.groups
    assert sum(g[1] for g in either.groups) == 10
    # one color's exemplars are alike; two colors' are not
    assert red.clarity > 0.8 and blue.clarity > 0.8
    assert either.clarity < red.clarity - 0.3


def test_identical_units_are_redundant(result):
    neurons = result.neurons["units"]
    assert neurons[0].description == neurons[2].description == "red"
    assert neurons[0].redundancy >= 1 and neurons[2].redundancy >= 1
    assert neurons[3].redundancy == 0


def test_the_figures_survive_a_round_trip(result, tmp_path):
    loaded = LabelingResult.load(result.save(tmp_path / "out"))
    for ours, theirs in zip(result.neurons["units"], loaded.neurons["units"], strict=True):
        assert theirs.clarity == pytest.approx(ours.clarity)
        assert (theirs.groups, theirs.redundancy) == (ours.groups, ours.redundancy)
