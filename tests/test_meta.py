"""Every hook is documented in docs/hooks.md and exercised by a test (datasette-style)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from neurolabel.plugin_core import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("register_")
)


def test_there_are_hooks():
    assert {"register_scorers", "register_commands"} <= set(HOOKS)


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented(hook):
    docs = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {hook}\b", docs, re.MULTILINE), f"docs/hooks.md lacks '## {hook}'"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    pattern = re.compile(rf"def {hook}\(self")
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py"]
    assert any(pattern.search(p.read_text(encoding="utf-8")) for p in tests), (
        f"no test registers a plugin implementing {hook}"
    )
