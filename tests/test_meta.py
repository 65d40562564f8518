"""Every hook is documented in docs/hooks.md and exercised by a test (datasette-style)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from neurolabel.plugin_core.plugins import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(
    name
    for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("register_")
)


def test_there_are_hooks():
    assert {"register_scorers", "register_commands"} <= set(HOOKS)


def signature(hook: str) -> str:
    """``register_x(register: Register[T]) -> None``, as the hookspec declares it."""
    function = getattr(hookspecs, hook)
    parameters = ", ".join(
        f"{name}: {p.annotation}" for name, p in inspect.signature(function).parameters.items()
    )
    return f"{hook}({parameters}) -> {inspect.signature(function).return_annotation}"


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_with_its_signature(hook):
    docs = (ROOT / "docs" / "hooks.md").read_text(encoding="utf-8")
    assert re.search(rf"^## {hook}\b", docs, re.MULTILINE), f"docs/hooks.md lacks '## {hook}'"
    section = docs.split(f"## {hook}", 1)[1].split("\n## ", 1)[0]
    assert f"`{signature(hook)}`" in " ".join(section.split()), (
        f"docs/hooks.md's '## {hook}' does not show its signature `{signature(hook)}`"
    )


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_test(hook):
    pattern = re.compile(rf"def {hook}\(self")
    tests = [p for p in (ROOT / "tests").glob("test_*.py") if p.name != "test_meta.py"]
    assert any(pattern.search(p.read_text(encoding="utf-8")) for p in tests), (
        f"no test registers a plugin implementing {hook}"
    )
