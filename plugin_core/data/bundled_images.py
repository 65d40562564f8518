"""Probing images that need no download: the real photographs scikit-image ships.

The demo probes with them, and so can anyone trying neurolabel without a dataset at hand.
"""

from __future__ import annotations

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


def bundled_photographs(names: Sequence[str] = SKIMAGE_PHOTOS) -> Iterator[tuple[str, Image.Image]]:
    """The real photographs scikit-image ships (no download), each then its four quadrants.

    Quadrants give each neuron more, smaller exemplars (objects at other scales).

    Args:
        names: File names in scikit-image's data folder; missing ones are passed over.

    Returns:
        An iterator of ``(name, RGB PIL image)``: ``stem`` for a photo, ``stem_qRC`` for the
        quadrant at row R, column C.

    Examples:
        >>> [name for name, _ in bundled_photographs(["chelsea.png"])]
        ['chelsea', 'chelsea_q00', 'chelsea_q01', 'chelsea_q10', 'chelsea_q11']
    """
    import skimage
    from PIL import Image

    source = Path(skimage.__file__).parent / "data"
    for name in names:
        path = source / name
        if not path.is_file():
            continue
        with Image.open(path) as opened:
            image = opened.convert("RGB")
        stem = Path(name).stem
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
        image.save(folder / f"{name}.png")
        count += 1
    if count == 0:
        raise NeurolabelError("scikit-image's bundled photographs were not found")
    return count
