"""The result folder a command writes: checked before any work, held by one writer at a time.

A run that learns only after an hour's forward pass that ``--out`` is read-only, or is a
file, loses the hour: :func:`claim_output_folder` finds out first. Two runs writing the same
folder at once could mix their files into one inconsistent result: the folder is locked
(``.neurolabel.lock``, an advisory lock the operating system drops when its process ends,
even on ``kill -9``) and a second writer is refused. Temporary files a killed writer left
behind (:func:`~neurolabel.plugin_core.data.atomic.atomic_write` writes beside the target
and renames) are removed once the lock is held, when no other writer can own them.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import NeurolabelError
from .atomic import remove_stale_temporaries

#: The lock file in a result folder; the lock, not the file, is what counts.
LOCK_FILE = ".neurolabel.lock"


class OutputFolderError(NeurolabelError):
    """The result folder cannot be written (a file, read-only, or held by another run)."""


def check_output_folder(folder: Path, option: str = "--out") -> None:
    """Raise :class:`OutputFolderError` unless ``folder`` is (or can be made) a folder this
    process can write; creates it.

    Examples:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "taken"
        >>> _ = file.write_text("")
        >>> try:
        ...     check_output_folder(file)
        ... except OutputFolderError as error:
        ...     print(str(error).split(": ")[1])
        name a folder for the results
    """
    if folder.exists() and not folder.is_dir():
        raise OutputFolderError(
            f"{option} {folder} is a file, not a folder: name a folder for the results"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Permission bits do not tell the whole story (read-only mounts, ACLs, quotas):
        # creating a file does.
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno == errno.ENOTDIR:
            reason = "a part of the path is a file"
        raise OutputFolderError(
            f"Cannot write to {option} {folder} ({reason}): choose a folder you can write to"
        ) from None


@contextmanager
def claim_output_folder(folder: str | Path, option: str = "--out") -> Iterator[Path]:
    """Check that ``folder`` can be written, lock it for this process and clean it up.

    Args:
        folder: The result folder; created (with its parents) when missing.
        option: How the user named it, for messages (``--out``, ``RESULT``).

    Returns:
        A context manager yielding the folder as a :class:`~pathlib.Path`. On leaving, the
        lock is released (its empty file stays); a folder this call created is removed
        again when the command failed before writing anything into it.

    Raises:
        OutputFolderError: ``folder`` is a file, cannot be written, or another process
            holds it.

    Examples:
        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "run"
        >>> with claim_output_folder(out) as folder:
        ...     _ = (folder / "result.json").write_text("{}")
        >>> sorted(p.name for p in out.iterdir())
        ['.neurolabel.lock', 'result.json']
    """
    from filelock import FileLock, Timeout

    path = Path(folder)
    existed = path.exists()
    check_output_folder(path, option)
    lock = FileLock(str(path / LOCK_FILE), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputFolderError(
            f"Another neurolabel run is writing to {option} {path}: wait for it to finish, "
            "or choose another folder"
        ) from None
    try:
        remove_stale_temporaries(path)
        yield path
    except BaseException:
        if not existed:
            _remove_if_empty(path)
        raise
    finally:
        # The lock file stays: removing it would let a run that opened it just before
        # lock a file nobody else sees, beside one that opens the new file.
        lock.release()


def _remove_if_empty(path: Path) -> None:
    """Remove the folder a failed command created, when nothing was written into it."""
    try:
        entries = {entry.name for entry in os.scandir(path)}
        if entries <= {LOCK_FILE}:
            (path / LOCK_FILE).unlink(missing_ok=True)
            path.rmdir()
    except OSError:
        pass  # something was written meanwhile (a checkpoint to resume from): keep it
