"""Synthetic labeling results for the report tests: no model, any size, fast to make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from neurolabel.plugin_core.data.result import Exemplar, LabelingResult, NeuronExplanation

CONCEPTS = [
    "dog",
    "cat",
    "striped",
    "red",
    "wheel",
    "sky",
    "grass",
    "water",
    "fur",
    "metal",
    "<script>alert(1)</script>",
    'a "quoted" & <b>bold</b> concept',
]


def photo(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A smooth, photo-like image (gradients, a disc, mild noise): it compresses like a
    photograph, unlike pure noise."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6, size=3)
    array = np.stack([128 + 90 * np.sin(x / (9 + 3 * c) + phase[c] + y / 23) for c in range(3)], -1)
    cx, cy, r = rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height, height / 4
    disc = (x - cx) ** 2 + (y - cy) ** 2 < r**2
    array[disc] = rng.integers(0, 255, size=3)
    array += rng.normal(0, 6, size=array.shape)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8), "RGB")


def source_folder(folder: Path, count: int) -> list[Path]:
    """Write ``count`` small JPEG source images into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"img_{i:04d}.jpg"
        photo(i).save(path, quality=85)
        paths.append(path)
    return paths


def make_result(
    units: int = 8,
    layers: tuple[str, ...] = ("layer4",),
    exemplars: int = 5,
    sources: list[Path] | None = None,
    maps: bool = True,
    metrics: bool = True,
    seed: int = 0,
) -> LabelingResult:
    """A result with ``units`` neurons per layer, patches in memory, optional maps/metrics.

    Unit 1 of each layer is dead; the concepts include HTML-looking strings.
    """
    rng = np.random.default_rng(seed)
    neurons: dict[str, list[NeuronExplanation]] = {}
    patch_images: dict[tuple[str, int, int], Image.Image] = {}
    # Crops of a few larger images: every patch differs (no free deduplication), cheaply.
    bases = [photo(1000 + i, (320, 240)) for i in range(8)]
    for layer in layers:
        items = []
        for unit in range(units):
            dead = unit == 1
            order = rng.permutation(len(CONCEPTS))[:6]
            scores = np.sort(rng.normal(1.0, 0.6, size=6))[::-1]
            ranked = zip(order, scores, strict=True)
            concepts = [] if dead else [[CONCEPTS[c], float(s)] for c, s in ranked]
            shown = []
            for rank in range(exemplars):
                index = int(rng.integers(0, len(sources))) if sources else int(rng.integers(0, 999))
                name = str(sources[index]) if sources else f"#{index}"
                x0, y0 = int(rng.integers(0, 80)), int(rng.integers(0, 60))
                exemplar = Exemplar(
                    index, name, float(3.0 - rank * 0.3), [x0, y0, x0 + 60, y0 + 50]
                )
                if maps:
                    exemplar.map = rng.random((7, 7)).round(3).tolist()
                shown.append(exemplar)
                px, py = int(rng.integers(0, 224)), int(rng.integers(0, 160))
                base = bases[(unit + rank) % len(bases)]
                patch_images[(layer, unit, rank)] = base.crop((px, py, px + 96, py + 80))
            items.append(
                NeuronExplanation(
                    layer,
                    unit,
                    concepts,
                    shown,
                    dead=dead,
                    summary="Fires on striped fur." if unit == 0 else None,
                    stats={"mean": 0.5, "std": 0.2, "min": 0.0, "max": 3.0, "threshold": 1.2},
                    similarity=None if dead else float(rng.uniform(0.2, 0.4)),
                )
            )
        neurons[layer] = items
    result = LabelingResult(
        model={
            "name": "synthetic<net>",
            "class": "Net",
            "preprocessing": {"crop_size": [224, 224], "resize_size": 256},
        },
        layers={
            layer: {"shape": [units, 7, 7], "kind": "spatial", "units": units} for layer in layers
        },
        neurons=neurons,
        dataset={
            "num_images": 10,
            "num_used": 9,
            "num_skipped": 1,
            "skipped": [{"item": "imgs/<bad>.txt", "reason": "not an image file"}],
        },
        settings={"scorer": "color", "vocabulary": "colors", "aggregation": "contrast"},
        versions={"neurolabel": "0.1.0"},
    )
    if metrics:
        first = layers[0]
        result.metrics = {
            "accuracy": {"top1": 0.5, "top5": 1.0, "units": 2},
            "ablation": {
                "classes": [
                    {"class": "dog", "labeled_drop": 0.41, "random_drop": 0.05},
                    {"class": "cat", "labeled_drop": 0.33, "random_drop": 0.04},
                    {"class": "<img src=x>", "labeled_drop": 0.2, "random_drop": 0.06},
                ],
                "units": [{"layer": first, "unit": 0, "drop": 0.25}],
            },
            "faithfulness": {layer: {"spearman": 0.42, "auc": 0.71} for layer in layers},
            "attribution": {
                "image": "imgs/cat.png",
                "prediction": "tabby",
                "neurons": [
                    {"layer": first, "unit": 0, "attribution": 0.31},
                    {"layer": first, "unit": 2, "attribution": 0.12},
                ],
            },
        }
    result.patch_images = patch_images
    return result
