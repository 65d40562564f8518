"""Write files so that a crash or Ctrl-C never leaves a half-written output."""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


def _process_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: Read once: setting the umask to read it is not thread-safe, and outputs are written from
#: several threads (exemplar patches).
_UMASK = _process_umask()

#: What :func:`atomic_write` names its temporary files: ``.<target name>.<8 random>.tmp``.
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: Age after which a temporary file in a folder several processes share (the caches) is
#: surely abandoned: no single write lasts an hour.
ABANDONED_AFTER_SECONDS = 3600.0


@contextmanager
def atomic_write(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    Args:
        path: Final file path.
        mode: ``w`` (text) or ``wb`` (binary).
        encoding: Text encoding (ignored for binary).

    Examples:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_write(target) as fh:
        ...     _ = fh.write("done")
        >>> target.read_text()
        'done'
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    # mkstemp creates owner-only files; outputs get the permissions a plain open() would.
    os.chmod(tmp, 0o666 & ~_UMASK)
    try:
        handle: IO[Any]
        if "b" in mode:
            handle = os.fdopen(fd, mode)
        else:
            handle = os.fdopen(fd, mode, encoding=encoding, newline="")
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def remove_stale_temporaries(folder: str | Path, older_than: float = 0.0) -> int:
    """Delete the temporary files a killed :func:`atomic_write` left under ``folder``.

    A process killed with ``kill -9`` (or a power cut) cannot remove its temporary file;
    the next writer of the folder does. Symbolic links are not followed.

    Args:
        folder: Folder searched, with its subfolders.
        older_than: Only files last modified more than this many seconds ago; where other
            processes may be writing at the same time (a shared cache), an age that no
            write lasts.

    Returns:
        How many files were removed.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / ".result.json.a1b2c3d4.tmp").write_text('{"half')
        >>> _ = (folder / "result.json").write_text("{}")
        >>> remove_stale_temporaries(folder), sorted(p.name for p in folder.iterdir())
        (1, ['result.json'])
    """
    removed = 0
    deadline = time.time() - older_than
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if not TEMPORARY_NAME.match(name):
                continue
            path = os.path.join(root, name)
            try:
                if os.lstat(path).st_mtime <= deadline:
                    os.unlink(path)
                    removed += 1
            except OSError:
                pass  # gone already, or not ours to remove
    return removed
