"""Small embedded images of exemplars: patch and source thumbnails as data URIs.

A report must open from disk with no other file, so every image travels inside it as a
``data:`` URI. Thumbnails are bounded (:data:`THUMBNAIL_SIZE` px, WebP or JPEG) and each
distinct image is stored once: a source image shared by many neurons' exemplars is one
thumbnail, its boxes and heatmaps are drawn over it by the page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from PIL import Image, UnidentifiedImageError, features

from ..data.images import to_rgb
from ..data.result import Exemplar, LabelingResult
from ..data.result_files import ResultFiles

#: Longest side of an embedded thumbnail, in pixels.
THUMBNAIL_SIZE = 80
#: Encoder quality (WebP or JPEG).
THUMBNAIL_QUALITY = 65

SourceImages = Sequence[Image.Image] | Mapping[int, Image.Image]


@lru_cache(maxsize=1)
def thumbnail_format() -> str:
    """``webp`` when Pillow can write it (about a third smaller), else ``jpeg``."""
    return "webp" if features.check("webp") else "jpeg"


def encode_image(
    image: Image.Image, max_side: int = THUMBNAIL_SIZE, quality: int = THUMBNAIL_QUALITY
) -> str:
    """A bounded thumbnail of ``image`` as a ``data:`` URI.

    Args:
        image: Any PIL image (converted to RGB as the labeler does: transparency on white).
        max_side: Longest side of the thumbnail.
        quality: Encoder quality.

    Returns:
        ``data:image/webp;base64,...`` (or JPEG when Pillow lacks WebP).

    Examples:
        >>> uri = encode_image(Image.new("RGB", (640, 320), "red"))
        >>> uri.startswith("data:image/") and len(uri) < 2000
        True
    """
    thumb = to_rgb(image)
    thumb = thumb.copy() if thumb is image else thumb  # thumbnail() works in place
    thumb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    fmt = thumbnail_format()
    if fmt == "webp":
        # method 2 encodes several times faster than the default 4 for a few % more bytes.
        thumb.save(buffer, format="WEBP", quality=quality, method=2)
    else:
        thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return f"data:image/{fmt};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


class ImageTable:
    """Data URIs stored once each; exemplars refer to them by index.

    Examples:
        >>> table = ImageTable()
        >>> table.add("data:a"), table.add("data:b"), table.add("data:a")
        (0, 1, 0)
        >>> table.uris
        ['data:a', 'data:b']
    """

    def __init__(self) -> None:
        self.uris: list[str] = []
        self._index: dict[str, int] = {}

    def add(self, uri: str) -> int:
        """Index of ``uri`` in :attr:`uris` (appended when new)."""
        index = self._index.get(uri)
        if index is None:
            index = self._index[uri] = len(self.uris)
            self.uris.append(uri)
        return index

    def total_chars(self) -> int:
        """Characters of all URIs together (the bulk of a report's size)."""
        return sum(len(u) for u in self.uris)


class ExemplarImages:
    """Finds and thumbnails an exemplar's patch and source image.

    Patches come from ``result.patch_images`` (a result still in memory) or from the
    ``patch`` file relative to the result folder (a loaded result). Sources are read from
    the exemplar's ``image`` path (folder inputs; tried as given, then relative to the
    result folder and its parent) or from ``images`` (the probing images of a run on a
    dataset or a list), indexed by ``image_index``.

    Args:
        result: The labeling result.
        table: Where the data URIs go.
        folder: The result folder (patch files and relative image paths), if any.
        images: The probing images, indexed like ``Exemplar.image_index``.
        max_side: Longest thumbnail side.
    """

    def __init__(
        self,
        result: LabelingResult,
        table: ImageTable,
        folder: str | Path | None = None,
        images: SourceImages | None = None,
        max_side: int = THUMBNAIL_SIZE,
        image_root: str | Path | None = None,
    ) -> None:
        self.result = result
        self.table = table
        self.folder = Path(folder) if folder is not None else None
        self.files = ResultFiles.of(result, folder, image_root)
        self.images = images
        self.max_side = max_side
        self._sources: dict[str, tuple[int, tuple[int, int]] | None] = {}
        self.missing_sources = 0
        self.missing_patches = 0

    def patch(self, layer: str, unit: int, rank: int, exemplar: Exemplar) -> int | None:
        """Table index of the exemplar's patch thumbnail, or None when there is none."""
        image = self.result.patch_images.get((layer, unit, rank))
        if image is None:
            path = self.files.patch(exemplar.patch)
            image = None if path is None else _open(path, self.max_side)
        if image is None:
            self.missing_patches += 1
            return None
        return self.table.add(encode_image(image, self.max_side))

    def source(self, exemplar: Exemplar) -> tuple[int, tuple[int, int]] | None:
        """``(table index, original (width, height))`` of the source thumbnail, or None."""
        key = f"{exemplar.image_index}\0{exemplar.image}"
        if key not in self._sources:
            image = self._load_source(exemplar)
            if image is None:
                self.missing_sources += 1
                self._sources[key] = None
            else:
                size = image.info.get("original_size", image.size)
                self._sources[key] = (self.table.add(encode_image(image, self.max_side)), size)
        return self._sources[key]

    def _load_source(self, exemplar: Exemplar) -> Image.Image | None:
        images = self.images
        if images is not None:
            try:
                image = images[exemplar.image_index]
            except (IndexError, KeyError, TypeError):
                image = None
            if isinstance(image, Image.Image):
                return image
        path = self.files.image(exemplar.image)
        return None if path is None else _open(path, self.max_side)


def _open(path: Path, max_side: int) -> Image.Image | None:
    """Read an image reduced for a thumbnail, remembering its full size; None if unreadable."""
    try:
        with Image.open(path) as image:
            size = image.size
            # JPEG decodes straight to a fraction of the size: far faster for photographs.
            image.draft("RGB", (max_side * 2, max_side * 2))
            image.load()
            loaded = to_rgb(image)
            loaded = loaded.copy() if loaded is image else loaded  # outlive the file
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None
    loaded.info["original_size"] = size
    return loaded
