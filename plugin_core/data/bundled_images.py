"""Probing images that need no download: the real photographs scikit-image ships.

The demo probes with them, and so can anyone trying neurolabel without a dataset at hand.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import NeurolabelError

if TYPE_CHECKING:
    from PIL import Image

#: Real photographs bundled inside scikit-image's wheel (no download).
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "rocket.jpg",
    "page.png",
)
#: Photographs other installed packages ship, as ``package:file`` (scikit-learn comes
#: with the offline extra's sentence-transformers; matplotlib with neurolabel).
OTHER_PHOTOS = (
    "sklearn:china.jpg",
    "sklearn:flower.jpg",
    "matplotlib:grace_hopper.jpg",
)
#: Every bundled photograph: the demo's probing set.
PHOTOS = SKIMAGE_PHOTOS + OTHER_PHOTOS
#: Names :func:`bundled_photographs` gives an image: ``stem`` or ``stem_qRC``; this pattern's
#: first group is the photograph's stem, so its quadrants count as one source.
QUADRANT_SOURCE_PATTERN = r"([^/\\]+?)(?:_q[01][01])?\.[a-z]+$"

_FOLDERS = {
    "skimage": ("data",),
    "sklearn": ("datasets", "images"),
    "matplotlib": ("mpl-data", "sample_data"),
}


def photograph_path(name: str) -> Path | None:
    """Where an installed package keeps the photograph ``name`` (``file`` in scikit-image,
    or ``package:file``), or None when it is not installed.

    Examples:
        >>> photograph_path("chelsea.png").name, photograph_path("sklearn:nothing.jpg")
        ('chelsea.png', None)
    """
    package, _, file = name.rpartition(":")
    package = package or "skimage"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations or package not in _FOLDERS:
        return None
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*_FOLDERS[package], file)
    return path if path.is_file() else None


def bundled_photographs(names: Sequence[str] = PHOTOS) -> Iterator[tuple[str, Image.Image]]:
    """Real photographs installed packages ship (no download), each then its four quadrants.

    Quadrants give each neuron more, smaller exemplars (objects at other scales); with
    ``source_pattern=QUADRANT_SOURCE_PATTERN`` a neuron keeps at most one view per photo.

    Args:
        names: File names in scikit-image's data folder, or ``package:file`` (see
            :data:`OTHER_PHOTOS`); missing ones are passed over.

    Returns:
        An iterator of ``(name, RGB PIL image)``: ``stem`` for a photo, ``stem_qRC`` for the
        quadrant at row R, column C.

    Examples:
        >>> [name for name, _ in bundled_photographs(["chelsea.png"])]
        ['chelsea', 'chelsea_q00', 'chelsea_q01', 'chelsea_q10', 'chelsea_q11']
        >>> len(list(bundled_photographs())) >= 5 * len(SKIMAGE_PHOTOS)
        True
    """
    from PIL import Image

    for name in names:
        path = photograph_path(name)
        if path is None:
            continue
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        stem = path.stem
        yield stem, image
        width, height = image.size
        for row in range(2):
            for col in range(2):
                box = (
                    col * width // 2,
                    row * height // 2,
                    (col + 1) * width // 2,
                    (row + 1) * height // 2,
                )
                yield f"{stem}_q{row}{col}", image.crop(box)


def write_probe_images(folder: Path) -> int:
    """Write :func:`bundled_photographs` to ``folder`` as PNG.

    Args:
        folder: Destination (created).

    Returns:
        The number of images written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for name, image in bundled_photographs():
        # Lossless, and fast to write: the default compression takes 3x longer here.
        image.save(folder / f"{name}.png", compress_level=1)
        count += 1
    if count == 0:
        raise NeurolabelError("No bundled photographs were found (is scikit-image installed?)")
    return count
