"""Run the neurolabel CLI in-process, as the tests of every command do."""

from __future__ import annotations

import pytest

from neurolabel.plugin_core.cli import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``neurolabel ARGS``: its exit code (0 when it returns), stdout and stderr."""
    code = 0
    try:
        main(args)
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err
