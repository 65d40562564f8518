"""An exemplar's activation map, made small enough to embed and placed on its source image.

The map covers the model input (the resized, center-cropped image), so the report needs
where that crop lies in the original image (:func:`map_region`) and the map itself,
quantized to bytes (:func:`encode_map`); the page colors and scales it over the source
thumbnail. Results without maps (``Exemplar.map`` absent) simply show the box.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from ..data.preprocessing import Preprocessing
from ..data.result import Exemplar

#: Longest side of an embedded map; larger maps are averaged down (the page smooths them).
MAX_MAP_SIDE = 16


def exemplar_map(exemplar: Exemplar) -> np.ndarray | None:
    """The exemplar's low-resolution activation map as a finite 2-D float array, if any.

    Reads ``Exemplar.map`` (``[h][w]`` numbers, or an array/tensor) when the result has
    one; anything else (absent, ragged, non-finite, empty) gives None.

    Args:
        exemplar: An exemplar of a neuron.

    Returns:
        ``[h, w]`` float32 array, or None.

    Examples:
        >>> e = Exemplar(0, "a.png", 1.0, [0, 0, 4, 4])
        >>> exemplar_map(e) is None
        True
        >>> e.map = [[0.0, 1.0], [2.0, 3.0]]
        >>> exemplar_map(e).shape
        (2, 2)
    """
    raw: Any = getattr(exemplar, "map", None)
    if raw is None:
        return None
    if hasattr(raw, "detach"):
        raw = raw.detach().cpu().numpy()
    try:
        array = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):  # ragged lists or non-numbers
        return None
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2 or array.size == 0 or not np.isfinite(array).all():
        return None
    return array


def map_region(
    preprocessing: dict[str, Any] | None, image_size: tuple[int, int]
) -> tuple[float, float, float, float]:
    """Where the model input (and so the activation map) lies in the original image.

    Args:
        preprocessing: ``result.model["preprocessing"]`` (None: the whole image).
        image_size: Original ``(width, height)``.

    Returns:
        ``(x0, y0, x1, y1)`` in original-image pixels.

    Examples:
        >>> map_region({"crop_size": [224, 224], "resize_size": 256}, (512, 256))
        (144.0, 16.0, 368.0, 240.0)
        >>> map_region(None, (100, 50))
        (0.0, 0.0, 100.0, 50.0)
    """
    width, height = image_size
    if not preprocessing or not preprocessing.get("crop_size"):
        return 0.0, 0.0, float(width), float(height)
    crop_h, crop_w = (int(v) for v in preprocessing["crop_size"])
    resize = preprocessing.get("resize_size")
    steps = Preprocessing(crop_size=(crop_h, crop_w), resize_size=resize)
    return steps.input_box_to_image((0, 0, crop_w, crop_h), (width, height))


def encode_map(array: np.ndarray, low: float, high: float) -> dict[str, Any]:
    """Quantize a map to bytes in ``[low, high]``, at most :data:`MAX_MAP_SIDE` a side.

    Args:
        array: ``[h, w]`` map.
        low: Value drawn transparent (the neuron's lowest shown activation).
        high: Value drawn strongest (the neuron's highest shown activation).

    Returns:
        ``{"w": w, "h": h, "v": base64 of w*h bytes, row-major}``.

    Examples:
        >>> encode_map(np.array([[0.0, 1.0], [2.0, 4.0]]), 0.0, 4.0)
        {'w': 2, 'h': 2, 'v': 'AECA/w=='}
    """
    height, width = array.shape
    if max(height, width) > MAX_MAP_SIDE:
        scale = MAX_MAP_SIDE / max(height, width)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
        array = np.asarray(image.resize(size, Image.Resampling.BOX), dtype=np.float32)
        height, width = array.shape
    span = high - low if math.isfinite(high - low) and high > low else 1.0
    scaled = np.clip((array - low) / span, 0.0, 1.0)
    data = np.round(scaled * 255).astype(np.uint8).tobytes()
    return {"w": int(width), "h": int(height), "v": base64.b64encode(data).decode("ascii")}


def percent_box(box: Sequence[float], image_size: tuple[int, int]) -> list[float]:
    """A pixel box as percentages of the image (how the page positions overlays).

    Args:
        box: ``(x0, y0, x1, y1)`` in pixels.
        image_size: ``(width, height)``.

    Returns:
        ``[left, top, width, height]`` in percent, rounded to 0.1.

    Examples:
        >>> percent_box((10, 0, 60, 25), (100, 50))
        [10.0, 0.0, 50.0, 50.0]
    """
    width, height = (max(1, int(v)) for v in image_size)
    x0, y0, x1, y1 = (float(v) for v in box)
    return [
        round(100 * x0 / width, 1),
        round(100 * y0 / height, 1),
        round(100 * (x1 - x0) / width, 1),
        round(100 * (y1 - y0) / height, 1),
    ]
