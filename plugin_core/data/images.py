"""Probing images from a folder, a torch Dataset or an iterable of PIL images, read robustly.

Importing this module does not import torch (the report reads thumbnails through it);
:mod:`.probe_dataset` holds the torch ``Dataset`` the exemplar pass loads them with.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import EmptyInputError, NeurolabelError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)


class ImageLoadError(NeurolabelError):
    """One input could not be read as an image (the run skips it and reports why)."""


@dataclass(frozen=True)
class SkippedInput:
    """An input left out of the run, and why."""

    item: str
    reason: str


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode (L, LA, P, RGBA, CMYK, 16-bit, float) to 8-bit RGB.

    Transparent pixels are composited on white so they do not become arbitrary colors;
    16-bit and float images are rescaled to their own range rather than clipped.
    """
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) * 255.0 if high > low else np.zeros_like(array)
        return Image.fromarray(scaled.astype(np.uint8), "L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file as RGB, or raise :class:`ImageLoadError`."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                return to_rgb(image)
    except UnidentifiedImageError:
        raise ImageLoadError("not a readable image (unknown or corrupt format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(f"could not be decoded ({exc})") from None


class ImageSource:
    """Random access to probing images: ``len``, ``load(i)``, ``describe(i)``.

    Build one with :func:`as_image_source`.
    """

    skipped_upfront: list[SkippedInput]

    def __len__(self) -> int:
        raise NotImplementedError

    def load(self, index: int) -> Image.Image:
        """Return image ``index`` as RGB or raise :class:`ImageLoadError`."""
        raise NotImplementedError

    def describe(self, index: int) -> str:
        """A path or ``#index`` naming image ``index`` in messages."""
        return f"#{index}"

    def name(self, index: int) -> str:
        """How a result records image ``index``: its path relative to :attr:`root` for a
        folder (so the record survives moving both), ``#index`` otherwise."""
        return self.describe(index)

    @property
    def root(self) -> Path | None:
        """The folder the images are read from (None for in-memory images)."""
        return None

    def size(self, index: int) -> tuple[int, int]:
        """``(width, height)`` of image ``index``."""
        return self.load(index).size

    def fingerprint(self) -> str:
        """A short hash identifying the probing set."""
        raise NotImplementedError

    def cache_key(self) -> str | None:
        """A hash that changes whenever any image could have changed, or None when that
        cannot be told cheaply (then nothing computed from these images is cached)."""
        return None


class FolderSource(ImageSource):
    """Every file under a folder (recursively, sorted); files that are not images by their
    extension are reported as skipped instead of silently ignored."""

    def __init__(self, root: str | Path) -> None:
        self.folder = Path(root)
        if not self.folder.is_dir():
            raise NeurolabelError(f"Image folder {self.folder} does not exist or is not a folder")
        self.paths: list[Path] = []
        self.skipped_upfront = []
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            if any(part.startswith(".") for part in path.relative_to(self.folder).parts):
                continue
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                self.paths.append(path)
            else:
                self.skipped_upfront.append(
                    SkippedInput(str(path), f"not an image file (extension '{path.suffix}')")
                )
        if not self.paths:
            raise EmptyInputError(
                f"No image files found in {self.folder} "
                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return open_image(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def name(self, index: int) -> str:
        return self.paths[index].relative_to(self.folder).as_posix()

    @property
    def root(self) -> Path:
        return self.folder

    def size(self, index: int) -> tuple[int, int]:
        try:
            with Image.open(self.paths[index]) as image:  # reads the header only
                return image.size
        except (OSError, UnidentifiedImageError) as exc:
            raise ImageLoadError(f"could not be read ({exc})") from None

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(str(path.relative_to(self.folder)).encode())
            digest.update(str(path.stat().st_size).encode())
        return digest.hexdigest()[:16]

    def cache_key(self) -> str | None:
        # Names and sizes (the fingerprint) miss an image rewritten at the same size.
        digest = hashlib.sha256(self.fingerprint().encode())
        for path in self.paths:
            digest.update(str(path.stat().st_mtime_ns).encode())
        return digest.hexdigest()[:20]


def _item_to_image(item: Any) -> Image.Image:
    if isinstance(item, (tuple, list)) and item:
        item = item[0]  # (image, label) pairs from classification datasets
    if isinstance(item, dict):
        item = item.get("image", item.get("img"))
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, (str, Path)):
        return open_image(Path(item))
    import numpy as np
    import torch

    if isinstance(item, torch.Tensor):
        from torchvision.transforms.functional import to_pil_image

        tensor = item.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.clamp(0, 1)
        return to_rgb(to_pil_image(tensor))
    if isinstance(item, np.ndarray):
        return to_rgb(Image.fromarray(item))
    raise ImageLoadError(
        f"unsupported item type {type(item).__name__}: give PIL images, paths, "
        "[C,H,W] tensors in [0,1] or uint8 arrays"
    )


class SequenceSource(ImageSource):
    """A torch ``Dataset`` or any indexable sequence of images (PIL, path, tensor, array, or
    ``(image, label)`` pairs)."""

    def __init__(self, items: Sequence[Any], name: str = "") -> None:
        self.items = items
        self.label = name or type(items).__name__
        self.skipped_upfront = []
        if len(items) == 0:
            raise EmptyInputError("The probing set is empty: give at least one image")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> Image.Image:
        try:
            return _item_to_image(self.items[index])
        except ImageLoadError:
            raise
        except Exception as exc:  # a user's dataset may fail in any way; report, don't crash
            raise ImageLoadError(f"dataset item could not be read ({exc})") from None

    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.label}:{len(self.items)}".encode())
        for index in range(min(len(self.items), 16)):
            try:
                digest.update(self.load(index).tobytes()[:4096])
            except ImageLoadError:
                digest.update(b"unreadable")
        return digest.hexdigest()[:16]


def as_image_source(images: Any) -> ImageSource:
    """Accept a folder path, a torch Dataset / sequence, or an iterable of PIL images.

    Args:
        images: The probing images. One-shot iterables (generators) are materialized in
            memory, since exemplar images are read twice; use a folder or Dataset for large sets.

    Returns:
        An :class:`ImageSource`.

    Examples:
        >>> src = as_image_source([Image.new("RGB", (8, 8))])
        >>> len(src), src.load(0).size
        (1, (8, 8))
    """
    if isinstance(images, ImageSource):
        return images
    if isinstance(images, (str, Path)):
        return FolderSource(images)
    if hasattr(images, "__getitem__") and hasattr(images, "__len__"):
        return SequenceSource(images)
    if isinstance(images, Iterable):
        return SequenceSource(list(images), name="iterable")
    raise NeurolabelError(
        f"Cannot read images from a {type(images).__name__}: give a folder path, a torch "
        "Dataset, or an iterable of PIL images"
    )
