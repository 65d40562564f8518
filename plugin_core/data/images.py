"""Probing images from a folder, a torch Dataset or an iterable of PIL images, read robustly.

Importing this module does not import torch (the report reads thumbnails through it);
:mod:`.probe_dataset` holds the torch ``Dataset`` the exemplar pass loads them with.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, UnidentifiedImageError

from ..errors import EmptyInputError, NeurolabelError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".jfif"}
)


_T = TypeVar("_T")


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


def printable_path(path: str | Path) -> str:
    """``path`` as text that can be printed and written anywhere (terminal, log, JSON).

    A file name need not be valid UTF-8; Python then holds its stray bytes as lone
    surrogates, which most text streams refuse to write. They appear as ``\\xNN`` here.

    Examples:
        >>> printable_path(os.fsdecode(b"bad\\xff.png"))
        'bad\\\\xff.png'
        >>> printable_path(Path("cat.png"))
        'cat.png'
    """
    text = os.fspath(path)
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:  # a surrogate no file system gave: escape it as it is
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((kind for test, kind in kinds if test(mode)), "a special file")


def _stat_failure(path: Path, exc: OSError) -> str:
    """Why ``path`` (possibly a symbolic link) could not be looked at."""
    if exc.errno == errno.ELOOP:
        return "symbolic link loop (following it never reaches a file)"
    if path.is_symlink():
        if exc.errno == errno.ENOENT:
            try:
                target = f" {printable_path(os.readlink(path))}"
            except OSError:  # removed meanwhile
                target = ""
            return f"broken symbolic link (its target{target} does not exist)"
        return f"symbolic link could not be followed ({exc.strerror or exc})"
    if exc.errno == errno.ENOENT:
        return "file not found"
    return f"could not be read ({exc.strerror or exc})"


def _check_regular_file(path: Path) -> None:
    """Raise :class:`ImageLoadError` unless ``path`` is (a link to) a regular file; nothing
    else is opened (opening a FIFO blocks until someone writes to it)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise ImageLoadError(_stat_failure(path, exc)) from None
    if not stat.S_ISREG(mode):
        raise ImageLoadError(f"not a regular file ({_file_kind(mode)}); not opened")


def _too_large(exc: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = f" (it has {int(found.group(1)):,})" if found else ""
    return (
        f"larger than PIL's safety limit of {Image.MAX_IMAGE_PIXELS or 0:,} pixels{pixels}, "
        "possibly a decompression bomb; raise PIL.Image.MAX_IMAGE_PIXELS to read it"
    )


def _with_image(path: Path, action: Callable[[Image.Image], _T]) -> _T:
    """``action(image)`` on the opened regular file ``path``; every failure to read it, an
    image over PIL's pixel limit included, becomes an :class:`ImageLoadError`."""
    _check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                return action(image)
    except UnidentifiedImageError:
        raise ImageLoadError("not a readable image (unknown or corrupt format)") from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise ImageLoadError(_too_large(exc)) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"could not be decoded ({exc})") from None


def _decode(image: Image.Image) -> Image.Image:
    image.load()
    return to_rgb(image)


def open_image(path: Path) -> Image.Image:
    """Open and fully decode an image file as RGB, or raise :class:`ImageLoadError`.

    Only a regular file (or a link to one) is opened; an image over PIL's pixel limit
    (``PIL.Image.MAX_IMAGE_PIXELS``) is refused before it is decoded.
    """
    return _with_image(Path(path), _decode)


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image file from its header, or raise :class:`ImageLoadError`
    for the same reasons as :func:`open_image` (an image too large to decode included)."""
    return _with_image(Path(path), lambda image: image.size)


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


def _revisit(link: Path, real: str) -> str:
    """Why the symbolically linked folder ``link`` (to ``real``) is not walked again."""
    parent = os.path.realpath(link.parent)
    if parent == real or parent.startswith(real.rstrip(os.sep) + os.sep):
        return f"symbolic link loop (points to {printable_path(real)}, a folder that contains it)"
    return f"folder already read (it is {printable_path(real)}, reached by another path)"


def _scan_folder(folder: Path) -> tuple[list[Path], list[SkippedInput]]:
    """The image files under ``folder`` and every entry left out with the reason, both in
    path order.

    Symbolically linked folders are followed, each real folder once; broken links, link
    loops, entries that are not regular files (FIFOs, devices, sockets) and files that are
    not images by their extension are left out and reported. Entries whose name starts
    with ``.`` (and everything under them) are ignored.
    """
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    walked = {os.path.realpath(folder)}
    pending = [folder]
    # Linked folders wait until every folder reached without a link was walked, so a link
    # to a folder inside the tree is what is left out, never the folder itself.
    linked: list[Path] = []
    while pending or linked:
        if not pending:
            linked.sort()
            link = linked.pop(0)
            real = os.path.realpath(link)
            if real in walked:
                skipped.append((link, _revisit(link, real)))
                continue
            walked.add(real)
            pending.append(link)
        current = pending.pop()
        try:
            with os.scandir(current) as listing:
                names = sorted(entry.name for entry in listing)
        except OSError as exc:
            skipped.append((current, f"folder could not be read ({exc.strerror or exc})"))
            continue
        for name in names:
            if name.startswith("."):
                continue
            path = current / name
            try:
                mode = os.stat(path).st_mode
            except OSError as exc:
                skipped.append((path, _stat_failure(path, exc)))
                continue
            if stat.S_ISDIR(mode):
                if path.is_symlink():
                    linked.append(path)
                elif (real := os.path.realpath(path)) in walked:
                    skipped.append((path, _revisit(path, real)))
                else:
                    walked.add(real)
                    pending.append(path)
            elif not stat.S_ISREG(mode):
                skipped.append((path, f"not a regular file ({_file_kind(mode)})"))
            elif path.suffix.lower() not in IMAGE_EXTENSIONS:
                skipped.append((path, f"not an image file (extension '{path.suffix}')"))
            else:
                found.append(path)
    skipped.sort(key=lambda entry: entry[0])
    return sorted(found), [SkippedInput(printable_path(p), reason) for p, reason in skipped]


class FolderSource(ImageSource):
    """Every file under a folder (recursively, sorted, through symbolically linked folders);
    entries that are not read (not images by their extension, not regular files, broken
    links, link loops) are reported as skipped instead of silently ignored."""

    def __init__(self, root: str | Path) -> None:
        self.folder = Path(root)
        if not self.folder.is_dir():
            raise NeurolabelError(
                f"Image folder {printable_path(self.folder)} does not exist or is not a folder"
            )
        self.paths, self.skipped_upfront = _scan_folder(self.folder)
        if not self.paths:
            count = len(self.skipped_upfront)
            skipped = f"; {count} entries skipped" if count else ""
            raise EmptyInputError(
                f"No image files found in {printable_path(self.folder)} "
                f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))}){skipped}"
            )

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return open_image(self.paths[index])

    def describe(self, index: int) -> str:
        return printable_path(self.paths[index])

    def name(self, index: int) -> str:
        # Kept exact (a name that is not UTF-8 keeps its surrogates; JSON escapes them) so
        # the recorded name finds the file again.
        return self.paths[index].relative_to(self.folder).as_posix()

    @property
    def root(self) -> Path:
        return self.folder

    def size(self, index: int) -> tuple[int, int]:
        return image_size(self.paths[index])  # reads the header only

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            # fsencode: the name's own bytes, also when they are not UTF-8.
            digest.update(os.fsencode(path.relative_to(self.folder)))
            digest.update(str(_stat_or_none(path, "st_size")).encode())
        return digest.hexdigest()[:16]

    def cache_key(self) -> str | None:
        # Names and sizes (the fingerprint) miss an image rewritten at the same size.
        digest = hashlib.sha256(self.fingerprint().encode())
        for path in self.paths:
            digest.update(str(_stat_or_none(path, "st_mtime_ns")).encode())
        return digest.hexdigest()[:20]


def _stat_or_none(path: Path, field: str) -> int | None:
    """One ``os.stat`` field of ``path``, or None when it is gone (or unreadable) by now:
    reading it will report the file as skipped, the hash only has to differ."""
    try:
        return int(getattr(os.stat(path), field))
    except OSError:
        return None


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
