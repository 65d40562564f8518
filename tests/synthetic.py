"""A synthetic target whose unit 0 fires on red, unit 1 on blue, unit 2 never (dead)."""

from __future__ import annotations

import time

import numpy as np
import torch
from PIL import Image
from torch import nn


class ColorDetector(nn.Module):
    """conv (stride 4) -> relu: unit 0 = redness, unit 1 = blueness, unit 2 = always 0."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 3, kernel_size=4, stride=4), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 2)
        with torch.no_grad():
            weight = torch.zeros(3, 3, 4, 4)
            weight[0, 0], weight[0, 1], weight[0, 2] = (
                1 / 16,
                -1 / 16,
                -1 / 16,
            )  # red - green - blue
            weight[1, 2], weight[1, 0], weight[1, 1] = 1 / 16, -1 / 16, -1 / 16
            self.features[0].weight.copy_(weight)
            self.features[0].bias.copy_(torch.tensor([0.0, 0.0, -100.0]))
            self.fc.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


def square_image(size: tuple[int, int], box: tuple[int, int, int, int], color, seed: int = 0):
    """Gray noisy background with a solid square ``box`` (x0, y0, x1, y1) of ``color``."""
    rng = np.random.default_rng(seed)
    array = rng.integers(90, 140, size=(size[1], size[0], 1), dtype=np.uint8).repeat(3, axis=2)
    x0, y0, x1, y1 = box
    array[y0:y1, x0:x1] = color
    return Image.fromarray(array, "RGB")


class ColorClassifier(nn.Module):
    """Classes red/green/blue, each carried by exactly one unit of ``features.1``.

    Units 0-2 detect red, green, blue; units 3-5 detect brightness, yellow and cyan, which
    the classifier ignores, so ablating unit k hurts class k only.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, kernel_size=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)
        with torch.no_grad():
            weight = torch.tensor(
                [
                    [1.0, -0.5, -0.5],
                    [-0.5, 1.0, -0.5],
                    [-0.5, -0.5, 1.0],
                    [0.33, 0.33, 0.33],
                    [0.5, 0.5, -1.0],
                    [-1.0, 0.5, 0.5],
                ]
            )
            self.features[0].weight.copy_(weight.view(6, 3, 1, 1))
            self.features[0].bias.zero_()
            self.fc.weight.zero_()
            self.fc.weight[torch.arange(3), torch.arange(3)] = 8.0
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


class SeededConvNet(nn.Module):
    """Two random conv blocks and a linear head, the same weights in every process (seed 0):
    a target with many distinct activations for exactness tests across runs and ranks."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.block1 = nn.Sequential(nn.Conv2d(3, 12, 3, stride=2, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.block2(self.block1(x))).flatten(1))


class SlowColorDetector(ColorDetector):
    """:class:`ColorDetector` taking 0.2 s a batch: a run long enough to interrupt."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.2)
        return super().forward(x)
