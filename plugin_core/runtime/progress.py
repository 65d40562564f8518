"""Rich progress bars for every long step (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .terminal import SafeConsole

stderr_console = SafeConsole(stderr=True)


class Steps:
    """A shared progress display; ``task(description, total)`` adds a bar.

    When disabled, tasks are silent no-ops so library callers can switch bars off.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress: Progress | None = None

    def note(self, message: str) -> None:
        """Print one line above the bars (nothing when disabled); ``message`` is plain text."""
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)

    def task(self, description: str, total: float | None) -> _Task:
        if self._progress is None:
            return _Task(None, None)
        return _Task(self._progress, self._progress.add_task(description, total=total))


class _Task:
    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        if self._progress is not None and self._task_id is not None:
            self._progress.advance(self._task_id, amount)

    def done(self) -> None:
        if self._progress is not None and self._task_id is not None:
            task = self._progress.tasks[self._task_id]
            self._progress.update(self._task_id, completed=task.total or task.completed)


@contextmanager
def progress_steps(enabled: bool = True) -> Iterator[Steps]:
    """Context manager yielding a :class:`Steps` whose bars render while it is open."""
    steps = Steps(enabled)
    if not enabled:
        yield steps
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr_console,
        transient=False,
    )
    steps._progress = progress
    with progress:
        yield steps
