"""Where the files a result names are: patches in its folder, source images under its root.

A result records each exemplar's source image by its path relative to the probing folder
(``dataset["root"]``), and that folder relative to the result folder when it lies inside it
(``neurolabel demo`` keeps its images in ``OUT/images``); patch files are relative to the
result folder. So a result folder can be moved or renamed, alone or with its images, and
every file is found again; ``--images DIR`` (``images=``) names the probing folder when it
moved too.

A result file is untrusted input (it may have been crafted or mangled): a name is only
followed inside its folder, to a regular file. A name that leads elsewhere (``..``, an
absolute path, a link out of the folder) or to a device or pipe is refused and counted in
:attr:`ResultFiles.refused`, never read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any

#: ``dataset`` key of the probing folder.
ROOT_KEY = "root"


def stored_root(root: str | Path | None, folder: str | Path) -> str | None:
    """How a result file records its probing folder: relative to the result folder when
    inside it, absolute otherwise.

    Examples:
        >>> stored_root("/data/out/images", "/data/out"), stored_root("/data/imgs", "/data/out")
        ('images', '/data/imgs')
    """
    if root is None:
        return None
    absolute = Path(os.path.abspath(root))
    base = Path(os.path.abspath(folder))
    return absolute.relative_to(base).as_posix() if absolute.is_relative_to(base) else str(absolute)


def loaded_root(dataset: Mapping[str, Any], folder: str | Path) -> str | None:
    """The recorded probing folder of a result read from ``folder``, as an absolute path."""
    root = dataset.get(ROOT_KEY)
    if not root:
        return None
    return os.path.abspath(Path(folder) / str(root))


class ResultFiles:
    """Finds a result's patch files and source images, refusing anything outside them.

    Args:
        dataset: ``result.dataset`` (its ``root``, made absolute by
            :meth:`~neurolabel.plugin_core.data.result.LabelingResult.load`).
        folder: The result folder (patches); None for a result only in memory.
        images: The probing folder, replacing the recorded one (it moved).

    Examples:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> (out / "images").mkdir(); (out / "images" / "a.png").write_bytes(b"png")
        3
        >>> files = ResultFiles({"root": str(out / "images")}, out)
        >>> files.image("a.png") == (out / "images" / "a.png").resolve()
        True
        >>> files.image("missing.png") is None and not files.refused
        True
        >>> files.image("../../etc/passwd"), files.image("/etc/passwd"), files.refused
        (None, None, ['../../etc/passwd', '/etc/passwd'])
    """

    def __init__(
        self,
        dataset: Mapping[str, Any],
        folder: str | Path | None = None,
        images: str | Path | None = None,
        names: Iterable[str] = (),
    ) -> None:
        self.folder = Path(folder).resolve() if folder is not None else None
        root = images if images is not None else dataset.get(ROOT_KEY)
        self.root = Path(root).resolve() if root else None
        # A result without a recorded folder (written before 1.1, or made by hand) that
        # names its images by absolute paths: their common folder is its probing folder.
        self._absolute = {n for n in names if n and not n.startswith("#") and Path(n).is_absolute()}
        self.inferred_root = _common_folder(self._absolute) if self.root is None else None
        self.refused: list[str] = []

    @classmethod
    def of(
        cls,
        result: Any,
        folder: str | Path | None = None,
        images: str | Path | None = None,
    ) -> ResultFiles:
        """The files of a :class:`~neurolabel.plugin_core.data.result.LabelingResult`."""
        names = (e.image for neuron in result for e in neuron.exemplars)
        return cls(result.dataset, folder, images, names)

    def patch(self, name: str | None) -> Path | None:
        """The patch file ``name`` (relative to the result folder), or None."""
        if not name or self.folder is None:
            return None
        return self._inside(self.folder, name)

    def image(self, name: str | None) -> Path | None:
        """The source image ``name`` (relative to the probing folder), or None.

        Results written before the probing folder was recorded name images by their path
        from where the labeler ran: such a name is looked for relative to the current
        folder, the result folder and its parent (never when absolute or leading up with
        ``..``).
        """
        if not name or name.startswith("#"):
            return None
        if self.root is not None:
            return self._inside(self.root, name)
        if self.inferred_root is not None and name in self._absolute:
            relative = Path(name).relative_to(self.inferred_root).as_posix()
            return self._inside(self.inferred_root, relative)
        bases = [Path.cwd()] + ([self.folder, self.folder.parent] if self.folder else [])
        if not _plain_relative(name):
            self.refused.append(name)
            return None
        for base in bases:
            found = self._inside(base, name, record=False)
            if found is not None:
                return found
        return None

    def _inside(self, base: Path, name: str, record: bool = True) -> Path | None:
        # Confined by the name itself: links the user made inside the folder are followed.
        if not _plain_relative(name):
            if record:
                self.refused.append(name)
            return None
        candidate = base / name
        if not candidate.is_file():  # missing, a folder, a pipe or a device: never opened
            if candidate.exists() and record:
                self.refused.append(name)
            return None
        return candidate


def _common_folder(paths: set[str]) -> Path | None:
    if not paths:
        return None
    return Path(os.path.commonpath([os.path.dirname(p) for p in paths]))


def _plain_relative(name: str) -> bool:
    """A relative path without ``..``: it cannot point outside the folder it is read from."""
    path = PurePath(name)
    return not path.is_absolute() and ".." not in path.parts and not name.startswith("~")
