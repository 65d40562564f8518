"""The wheel holds every subpackage and every data file the code reads, and the public API
resolves: a folder missing from pyproject.toml would install a neurolabel that fails on
import, only outside the source tree."""

from __future__ import annotations

import ast
import fnmatch
import importlib
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import pytest
import tomllib

import neurolabel

ROOT = Path(__file__).resolve().parents[1]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]


def package_folders() -> dict[str, Path]:
    """Dotted package name -> folder, for every folder with an __init__.py."""
    mapping = {name: ROOT / folder for name, folder in CONFIG["package-dir"].items()}
    found = {}
    for name, folder in mapping.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            dotted = ".".join((name, *parts))
            # a folder mapped on its own (plugin_core/_neurolabel -> neurolabel) is that package
            owner = max((n for n, f in mapping.items() if init.parent == f), key=len, default=None)
            found[owner or dotted] = init.parent
    return found


def test_every_package_folder_is_listed():
    missing = sorted(set(package_folders()) - set(CONFIG["packages"]))
    assert not missing, f"add to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(set(CONFIG["packages"]) - set(package_folders()))
    assert not stale, f"listed but no such package folder: {stale}"


def test_every_data_file_is_package_data():
    data = CONFIG["package-data"]
    unlisted = []
    for name, folder in package_folders().items():
        for path in folder.rglob("*"):
            if path.is_dir() or path.suffix in {".py", ".pyc"} or "__pycache__" in path.parts:
                continue
            # the file belongs to the innermost package folder holding it
            owner = max(
                (n for n, f in package_folders().items() if f in path.parents),
                key=lambda n: len(package_folders()[n].parts),
            )
            if owner != name:
                continue
            relative = path.relative_to(folder).as_posix()
            if not any(fnmatch.fnmatch(relative, g) for g in data.get(name, [])):
                unlisted.append(f"{name}: {relative}")
    assert not unlisted, f"add to [tool.setuptools.package-data]: {unlisted}"


def test_public_api_resolves_and_is_what_docs_teach():
    for name in neurolabel.__all__:
        assert getattr(neurolabel, name) is not None, name
    documented = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    for name in neurolabel.__all__:
        assert f"`{name}`" in documented, f"docs/api.md does not describe neurolabel.{name}"
    assert sorted(dir(neurolabel)) == sorted(neurolabel.__all__)


def documented_modules() -> set[str]:
    """The modules docs/api.md names as importable (its "Documented modules" section)."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("## Documented modules", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"`(neurolabel(?:\.\w+)+)`", section))


def neurolabel_imports(path: Path) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every neurolabel import in a Python file or a Markdown file's
    code blocks."""
    text = path.read_text(encoding="utf-8")
    sources = [text] if path.suffix == ".py" else re.findall(r"```python\n(.*?)```", text, re.S)
    found = []
    for source in sources:
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("neurolabel"):
                found.append((node.module or "", [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                found += [(a.name, []) for a in node.names if a.name.startswith("neurolabel")]
    return found


def user_facing_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for folder in ("examples", "benchmarks"):
        files += sorted((ROOT / folder).glob("*.py"))
    return files


@pytest.mark.parametrize("path", user_facing_files(), ids=lambda p: p.name)
def test_docs_examples_and_benchmarks_import_only_public_names(path):
    allowed = documented_modules()
    wrong = []
    for module, names in neurolabel_imports(path):
        if module == "neurolabel":
            wrong += [f"neurolabel.{n}" for n in names if n not in neurolabel.__all__]
        elif module not in allowed:
            wrong.append(module)
    assert not wrong, f"{path.name} imports what docs/api.md does not document: {wrong}"


def test_every_documented_module_imports_with_what_it_exports():
    for name in documented_modules():
        module = importlib.import_module(name)
        missing = [n for n in getattr(module, "__all__", []) if not hasattr(module, n)]
        assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    from neurolabel.plugin_core import plugins

    assert plugins.Register is neurolabel.Register


def test_old_module_paths_still_import_and_warn():
    with pytest.warns(FutureWarning, match="moved to neurolabel.plugin_core.plugins.contracts"):
        from neurolabel.plugin_core.protocols import EmbeddingScorer, ResolveContext
    from neurolabel.plugin_core.plugins.context import ResolveContext as new_context
    from neurolabel.plugin_core.plugins.contracts import EmbeddingScorer as new_scorer

    assert ResolveContext is new_context and EmbeddingScorer is new_scorer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from neurolabel.plugin_core.context import build_context
        from neurolabel.plugin_core.labeler import NeuronLabeler, resolve_vocabulary

    assert build_context is neurolabel.build_context
    assert NeuronLabeler is neurolabel.NeuronLabeler
    assert resolve_vocabulary is neurolabel.resolve_vocabulary
    with pytest.raises(ImportError), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        from neurolabel.plugin_core.labeler import no_such_name  # noqa: F401


@pytest.mark.slow
def test_the_built_wheel_holds_every_package_and_asset(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("neurolabel-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in CONFIG["packages"]:
        assert package.replace(".", "/") + "/__init__.py" in names, package
    assert "neurolabel/py.typed" in names
    assert {
        "neurolabel/plugin_core/reporting/assets/report.css",
        "neurolabel/plugin_core/reporting/assets/report.js",
    } <= names
