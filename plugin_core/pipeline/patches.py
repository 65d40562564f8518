"""Cut the patch of an exemplar image that made a neuron fire (its receptive region)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..data.preprocessing import Preprocessing
from .settings import THRESHOLD_METHODS

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PatchSettings:
    """How patches are cut.

    Args:
        threshold: ``quantile`` (dataset-level per-neuron quantile, NetDissect's top 0.5 %)
            or ``otsu`` (per-map Otsu threshold).
        min_size: Minimum patch side as a fraction of the model input's shorter side; small
            regions are grown around their center so the scorer sees some context.
    """

    threshold: str = "quantile"
    min_size: float = 0.25

    def __post_init__(self) -> None:
        if self.threshold not in THRESHOLD_METHODS:
            raise ValueError(
                f"Unknown threshold method {self.threshold!r}: use one of {THRESHOLD_METHODS}"
            )
        if not 0.0 < self.min_size <= 1.0:
            raise ValueError(f"min_size must be in (0, 1], got {self.min_size}")


def upsample_maps(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinearly upsample ``[N, h, w]`` maps to ``[N, H, W]`` (the model input size)."""
    return F.interpolate(
        maps.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=False
    ).squeeze(1)


def region_mask(upsampled: np.ndarray, threshold: float | None, method: str) -> np.ndarray:
    """Binary mask of the cells above the threshold.

    Args:
        upsampled: ``[H, W]`` activation map at input resolution.
        threshold: Dataset-level threshold (used by ``quantile``).
        method: ``quantile`` or ``otsu``.

    Returns:
        Boolean ``[H, W]`` mask; never empty (falls back to the upper half of the map's range
        when nothing passes, e.g. an exemplar weaker than the dataset threshold).
    """
    if method == "otsu":
        from skimage.filters import threshold_otsu

        level = float(threshold_otsu(upsampled)) if np.ptp(upsampled) > 0 else None
        mask = upsampled > level if level is not None else np.zeros_like(upsampled, bool)
    else:
        mask = upsampled > threshold if threshold is not None else np.zeros_like(upsampled, bool)
    if not mask.any():
        low, high = float(upsampled.min()), float(upsampled.max())
        mask = upsampled >= low + 0.5 * (high - low)
    return mask


def strongest_region_box(upsampled: np.ndarray, mask: np.ndarray) -> Box:
    """Bounding box ``(x0, y0, x1, y1)`` of the connected region holding the map's peak."""
    from skimage.measure import label

    labels = label(mask, connectivity=2)
    peak = np.unravel_index(int(np.argmax(np.where(mask, upsampled, -np.inf))), upsampled.shape)
    rows, cols = np.nonzero(labels == labels[peak])
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def grow_box(box: Box, min_side: int, size: tuple[int, int]) -> Box:
    """Grow ``box`` around its center to at least ``min_side`` per side, inside ``size`` (H, W)."""
    height, width = size
    x0, y0, x1, y1 = box
    out = []
    for lo, hi, limit in ((x0, x1, width), (y0, y1, height)):
        side = max(hi - lo, min(min_side, limit))
        center = (lo + hi) / 2.0
        start = int(round(center - side / 2.0))
        start = min(max(start, 0), limit - side)
        out.append((start, start + side))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def input_boxes(
    maps: Tensor,
    thresholds: Tensor,
    preprocessing: Preprocessing,
    settings: PatchSettings,
    chunk: int = 128,
) -> list[Box]:
    """Boxes, in model-input pixels, of the strongest region of each activation map.

    Args:
        maps: ``[N, h, w]`` low-resolution activation maps.
        thresholds: ``[N]`` per-map thresholds (each map's neuron's dataset quantile).
        preprocessing: Gives the model input size.
        settings: Threshold method and minimum size.
        chunk: Maps upsampled at once (bounds memory).

    Returns:
        One ``(x0, y0, x1, y1)`` box per map.
    """
    size = preprocessing.crop_size
    min_side = _min_side(settings, size)
    boxes: list[Box] = []
    for start in range(0, maps.shape[0], chunk):
        ups = upsample_maps(maps[start : start + chunk], size).numpy()
        for offset, up in enumerate(ups):
            mask = region_mask(up, float(thresholds[start + offset]), settings.threshold)
            boxes.append(grow_box(strongest_region_box(up, mask), min_side, size))
    return boxes


def attribution_boxes(
    maps: Tensor, preprocessing: Preprocessing, settings: PatchSettings
) -> list[Box]:
    """Boxes, in model-input pixels, of the strongest region of each attribution map.

    Attribution maps (Grad-CAM, gradients, conductance) have no dataset-level scale: their
    values depend on the image, the method and the path integral, so the dataset quantile
    of activation maps does not apply. Each map is thresholded on its own with Otsu's
    method, whatever ``settings.threshold`` says; the rest (strongest connected region,
    minimum size) is the same as for activation maps.

    Args:
        maps: ``[N, H, W]`` maps at the model input's resolution (``preprocessing.crop_size``);
            other sizes are resized bilinearly first.
        preprocessing: Gives the model input size.
        settings: Minimum patch size.

    Returns:
        One ``(x0, y0, x1, y1)`` box per map.

    Examples:
        >>> maps = torch.zeros(1, 32, 32)
        >>> maps[0, 8:16, 4:12] = 1.0
        >>> attribution_boxes(maps, Preprocessing((32, 32), 32), PatchSettings(min_size=0.1))
        [(4, 8, 12, 16)]
    """
    size = preprocessing.crop_size
    min_side = _min_side(settings, size)
    maps = maps.detach().float().cpu()
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = upsample_maps(maps, size)
    boxes: list[Box] = []
    for up in maps.numpy():
        up = np.nan_to_num(up, nan=0.0, posinf=0.0, neginf=0.0)
        mask = region_mask(up, None, "otsu")
        boxes.append(grow_box(strongest_region_box(up, mask), min_side, size))
    return boxes


def _min_side(settings: PatchSettings, size: tuple[int, int]) -> int:
    return max(1, int(round(settings.min_size * min(size))))


def image_box(box: Box, preprocessing: Preprocessing, image_size: tuple[int, int]) -> Box:
    """Map a model-input box to integer original-image pixels (undoing resize and crop)."""
    x0, y0, x1, y1 = preprocessing.input_box_to_image(box, image_size)
    width, height = image_size
    ix0, iy0 = int(np.floor(x0)), int(np.floor(y0))
    ix1, iy1 = max(ix0 + 1, int(np.ceil(x1))), max(iy0 + 1, int(np.ceil(y1)))
    return max(0, ix0), max(0, iy0), min(width, ix1), min(height, iy1)


def cut(image: Image.Image, box: Box | None) -> Image.Image:
    """Crop ``box`` out of ``image`` (the whole image when ``box`` is None)."""
    return image.copy() if box is None else image.crop(box)


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``(x0, y0, x1, y1)`` boxes."""
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def flatten_maps(maps: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flatten ``[C, k, h, w]`` maps to the valid exemplars.

    Returns:
        ``(maps [N, h, w], unit row [N], rank [N])``.
    """
    valid = ids >= 0
    unit, rank = torch.nonzero(valid, as_tuple=True)
    return maps[unit, rank], unit, rank
