"""How a PIL image becomes a model input, and how to map input pixels back to the image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NeurolabelError

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Interpolation name -> the name of its PIL ``Image.Resampling`` member (PIL and torch are
#: imported when an image is preprocessed, not when this module is).
_RESAMPLE = {
    "nearest": "NEAREST",
    "bilinear": "BILINEAR",
    "bicubic": "BICUBIC",
    "lanczos": "LANCZOS",
}


@dataclass(frozen=True)
class Preprocessing:
    """Resize the shorter side, center-crop, normalize: the ImageNet evaluation recipe.

    Args:
        crop_size: ``(height, width)`` of the model input.
        resize_size: Shorter side after resizing, before the crop; None resizes the whole
            image straight to ``crop_size`` (no crop, aspect ratio not kept).
        mean: Per-channel mean subtracted after scaling to [0, 1].
        std: Per-channel standard deviation divided by.
        interpolation: ``nearest``, ``bilinear``, ``bicubic`` or ``lanczos``.

    Examples:
        >>> from PIL import Image
        >>> p = Preprocessing(crop_size=(224, 224), resize_size=256)
        >>> p(Image.new("RGB", (512, 256))).shape
        torch.Size([3, 224, 224])
        >>> p.input_box_to_image((0, 0, 224, 224), (512, 256))  # undo the resize and crop
        (144.0, 16.0, 368.0, 240.0)
    """

    crop_size: tuple[int, int] = (224, 224)
    resize_size: int | None = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"

    @classmethod
    def from_crop_pct(
        cls,
        crop_size: int | tuple[int, int],
        crop_pct: float,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        interpolation: str = "bilinear",
    ) -> Preprocessing:
        """timm's convention: resize the shorter side to ``crop / crop_pct``, then crop."""
        hw = (crop_size, crop_size) if isinstance(crop_size, int) else tuple(crop_size)
        resize = int(round(min(hw) / crop_pct))
        return cls(
            crop_size=(int(hw[0]), int(hw[1])),
            resize_size=resize,
            mean=tuple(float(m) for m in mean),  # type: ignore[arg-type]
            std=tuple(float(s) for s in std),  # type: ignore[arg-type]
            interpolation=interpolation if interpolation in _RESAMPLE else "bilinear",
        )

    def _resized_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        width, height = image_size
        if self.resize_size is None:
            return self.crop_size[1], self.crop_size[0]
        scale = self.resize_size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))

    def _crop_offset(self, resized: tuple[int, int]) -> tuple[float, float]:
        if self.resize_size is None:
            return 0.0, 0.0
        crop_h, crop_w = self.crop_size
        return (resized[0] - crop_w) / 2.0, (resized[1] - crop_h) / 2.0

    def __call__(self, image: Image.Image) -> Tensor:
        """Turn an RGB PIL image into a normalized ``[3, H, W]`` tensor."""
        import torch
        from PIL import Image

        image = image.convert("RGB") if image.mode != "RGB" else image
        resized = self._resized_size(image.size)
        image = image.resize(resized, Image.Resampling[_RESAMPLE[self.interpolation]])
        left, top = self._crop_offset(resized)
        crop_h, crop_w = self.crop_size
        # Pad by cropping outside the image when it is smaller than the crop (PIL fills black).
        left_i, top_i = int(round(left)), int(round(top))
        image = image.crop((left_i, top_i, left_i + crop_w, top_i + crop_h))
        array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
        tensor = array.view(crop_h, crop_w, 3).permute(2, 0, 1).float().div_(255.0)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (tensor - mean) / std

    def input_box_to_image(
        self, box: tuple[float, float, float, float], image_size: tuple[int, int]
    ) -> tuple[float, float, float, float]:
        """Map a box ``(x0, y0, x1, y1)`` in model-input pixels to original-image pixels.

        Args:
            box: Box in the coordinates of the ``crop_size`` input.
            image_size: ``(width, height)`` of the original image.

        Returns:
            The box in original-image coordinates, clipped to the image.
        """
        width, height = image_size
        resized = self._resized_size(image_size)
        left, top = self._crop_offset(resized)
        left, top = float(round(left)), float(round(top))
        sx, sy = resized[0] / width, resized[1] / height
        x0, y0, x1, y1 = box
        out = ((x0 + left) / sx, (y0 + top) / sy, (x1 + left) / sx, (y1 + top) / sy)
        return (
            min(max(out[0], 0.0), width),
            min(max(out[1], 0.0), height),
            min(max(out[2], 0.0), width),
            min(max(out[3], 0.0), height),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessing:
        """The preprocessing :meth:`to_dict` wrote (e.g. a result's ``model["preprocessing"]``).

        Args:
            data: The stored form.

        Returns:
            The :class:`Preprocessing`.

        Examples:
            >>> Preprocessing.from_dict(Preprocessing(crop_size=(96, 96)).to_dict()).crop_size
            (96, 96)
        """
        try:
            return cls(
                crop_size=(int(data["crop_size"][0]), int(data["crop_size"][1])),
                resize_size=None if data.get("resize_size") is None else int(data["resize_size"]),
                mean=_triple(data["mean"]),
                std=_triple(data["std"]),
                interpolation=str(data.get("interpolation", "bilinear")),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise NeurolabelError(f"The stored preprocessing is malformed ({exc})") from None

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly form, stored in results."""
        return {
            "crop_size": list(self.crop_size),
            "resize_size": self.resize_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }


def _triple(values: Sequence[Any]) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"expected 3 channel values, got {len(values)}")
    return (float(values[0]), float(values[1]), float(values[2]))
