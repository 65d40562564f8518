"""Which units of a labeled network fire on one image, and where.

The result's model is run on the image through the result's own extractor and unit map;
each unit's activation (its spatial max on maps, as exemplars are ranked by default) is
compared with what the unit does over the probing images: its z-score against the
probing set's mean and standard deviation of that unit (``stats``). So a unit that
rarely fires and fires here ranks above a unit that is always on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.images import open_image
from ..data.result import LabelingResult
from ..errors import NeurolabelError
from ..plugins.context import ResolveContext
from ..plugins.resolve import load_result_model
from .patches import PatchSettings, image_box, input_boxes
from .unit_mapping import result_extractor


@dataclass
class FiringUnit:
    """A unit that fired on the image.

    Args:
        layer: Its layer.
        unit: Its index.
        label: Its description.
        z: Its activation in standard deviations above its probing-set mean.
        activation: Its activation on the image (spatial max on maps).
        box: Where it fired, ``[x0, y0, x1, y1]`` in image pixels (None on vector layers).
        p_value: Its label's p-value (None: untested).
        candidate: Its best-ranked concept (what an unexplained unit's label would be).
    """

    layer: str
    unit: int
    label: str
    z: float
    activation: float
    box: list[int] | None
    p_value: float | None
    candidate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def units_on_image(
    result: LabelingResult,
    image: str | Path,
    context: ResolveContext,
    *,
    model: str | None = None,
    layer: str | None = None,
    top: int = 10,
) -> list[FiringUnit]:
    """Rank a result's labeled units by how strongly they fire on ``image``.

    Args:
        result: The labeling result.
        image: An image file.
        context: Resolve context (model, extractor, unit map).
        model: Model spec when the result's cannot be reloaded.
        layer: Only this layer (default: all).
        top: Units returned.

    Returns:
        The ``top`` units by z-score, strongest first, with the box they fired in.
    """
    layers = [layer] if layer else list(result.neurons)
    for name in layers:
        if name not in result.neurons:
            raise NeurolabelError(
                f"Layer '{name}' is not in this result; its layers: {', '.join(result.neurons)}"
            )
    loaded = load_result_model(result, context, model, hint="pass --model SPEC")
    picture = open_image(Path(image))
    batch = loaded.preprocessing(picture).unsqueeze(0).to(context.device)
    extractor = result_extractor(result, context)
    with extractor.open(loaded, layers) as read, torch.inference_mode():
        outputs = {name: acts[0].float().cpu() for name, acts in read(batch).items()}
    found: list[tuple[FiringUnit, torch.Tensor | None, float]] = []
    for name in layers:
        acts = outputs[name]
        for neuron in result.neurons[name]:
            if neuron.dead or not neuron.concepts or neuron.unit >= acts.shape[0]:
                continue
            unit_map = acts[neuron.unit]
            value = float(unit_map.max()) if unit_map.ndim == 2 else float(unit_map)
            mean = neuron.stats.get("mean")
            std = neuron.stats.get("std")
            if mean is None or not std:
                continue
            z = (value - float(mean)) / float(std)
            threshold = neuron.stats.get("threshold")
            found.append(
                (
                    FiringUnit(
                        name,
                        neuron.unit,
                        neuron.description,
                        round(z, 4),
                        round(value, 6),
                        None,
                        neuron.p_value,
                        str(neuron.concepts[0][0]),
                    ),
                    unit_map if unit_map.ndim == 2 else None,
                    float(threshold) if threshold is not None else value,
                )
            )
    found.sort(key=lambda item: -item[0].z)
    chosen = found[: max(0, top)]
    settings = PatchSettings(
        threshold=str(result.settings.get("threshold") or "quantile"),
        min_size=float(result.settings.get("min_patch_size") or 0.25),
    )
    # Layers differ in map size (7x7, 14x14...): boxes are cut one map size at a time.
    by_size: dict[tuple[int, ...], list[tuple[int, torch.Tensor, float]]] = {}
    for i, (_, unit_map, threshold) in enumerate(chosen):
        if unit_map is not None:
            by_size.setdefault(tuple(unit_map.shape), []).append((i, unit_map, threshold))
    for group in by_size.values():
        maps = torch.stack([m for _, m, _ in group])
        thresholds = torch.tensor([t for _, _, t in group])
        boxes = input_boxes(maps, thresholds, loaded.preprocessing, settings)
        for (i, _, _), box in zip(group, boxes, strict=True):
            chosen[i][0].box = list(image_box(box, loaded.preprocessing, picture.size))
    return [unit for unit, _, _ in chosen]
