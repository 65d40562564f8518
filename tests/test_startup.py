"""Commands that need no model start without torch: ``--help``, ``--version``, ``plugins``
and ``report`` of a saved result each run in a fresh interpreter, which must end without
torch, torchvision, timm, open_clip or captum in ``sys.modules``.

Loading the built-in plugins is part of every command, so each plugin module imports its
heavy dependencies inside the functions that use them (docs/writing_plugins.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_results import make_result, source_folder

import neurolabel

HEAVY = ("torch", "torchvision", "timm", "open_clip", "captum")

#: Runs the CLI in a fresh interpreter, then writes what it left in sys.modules (and, for
#: each heavy module, the stack that first imported it, without library frames) as JSON.
SNIPPET = """
import json, sys, traceback

HEAVY = set(sys.argv[3].split(","))
first_import = {}


class Watch:
    @staticmethod
    def find_spec(name, path=None, target=None):
        top = name.partition(".")[0]
        if top in HEAVY and top not in first_import:
            first_import[top] = [
                f"{f.filename}:{f.lineno} {f.line}"
                for f in traceback.extract_stack()
                if not f.filename.startswith("<") and "-packages" not in f.filename
            ]
        return None


sys.meta_path.insert(0, Watch)
from neurolabel.plugin_core.cli import main

try:
    main(json.loads(sys.argv[1]))
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
loaded = sorted(m for m in HEAVY if m in sys.modules)
with open(sys.argv[2], "w", encoding="utf-8") as handle:
    json.dump({"code": code, "loaded": loaded, "first_import": first_import}, handle)
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved result with patches, maps and metrics, built without a model."""
    folder = tmp_path_factory.mktemp("startup")
    result = make_result(units=4, layers=("layer4", "fc"), sources=source_folder(folder / "i", 3))
    result.save(folder / "out")
    return folder / "out"


def run_fresh(args: list[str], tmp_path: Path) -> tuple[dict, subprocess.CompletedProcess, float]:
    """Run ``neurolabel ARGS`` in a new interpreter; its report, the process, wall seconds."""
    report = tmp_path / "modules.json"
    # Installed third-party plugins may import what they like; this is about neurolabel's own.
    env = {**os.environ, "NEUROLABEL_PLUGINS": ""}
    start = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", SNIPPET, json.dumps(args), str(report), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    seconds = time.perf_counter() - start
    assert report.is_file(), f"neurolabel {' '.join(args)} crashed:\n{process.stderr}"
    return json.loads(report.read_text(encoding="utf-8")), process, seconds


def offenders(args: list[str], report: dict) -> str:
    lines = [f"`neurolabel {' '.join(args)}` imported {', '.join(report['loaded'])}:"]
    for module, stack in report["first_import"].items():
        lines.append(f"  {module}, first imported through:")
        lines += [f"    {frame}" for frame in stack[-8:]]
    return "\n".join(lines)


COMMANDS = {
    "help": ["--help"],
    "version": ["--version"],
    "plugins": ["plugins"],
    "plugins-json": ["plugins", "--json"],
    "report": ["report", "{result}"],
    "report-json": ["report", "{result}", "--json"],
    "report-neuron": ["report", "{result}", "--neuron", "layer4:0"],
    "report-html": ["report", "{result}", "--html", "{html}"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_starts_without_torch(command, saved, tmp_path, record_property):
    html = tmp_path / "report.html"
    args = [a.format(result=saved, html=html) for a in COMMANDS[command]]
    report, process, seconds = run_fresh(args, tmp_path)
    assert report["code"] == 0, process.stdout + process.stderr
    assert not report["loaded"], offenders(args, report)
    # Loosely timed, never asserted: benchmarks are the place for timing.
    record_property("wall_seconds", round(seconds, 2))
    print(f"neurolabel {' '.join(COMMANDS[command])}: {seconds:.2f} s in a fresh interpreter")
    # ...and each did its job.
    if command == "help":
        assert "report" in process.stdout and "--version" in process.stdout
    elif command == "version":
        assert process.stdout.strip() == f"neurolabel {neurolabel.__version__}"
    elif command == "plugins-json":
        listed = json.loads(process.stdout)
        registered = {(r["kind"], r["name"]) for r in listed["registered"]}
        assert {("model source", "torchvision"), ("extractor", "hooks")} <= registered
        assert "neurolabel.adapters.model_sources" in listed["plugins"]
    elif command == "report-json":
        assert set(json.loads(process.stdout)["neurons"]) == {"layer4", "fc"}
    elif command == "report-neuron":
        assert "layer4:0" in process.stdout
    elif command == "report-html":
        assert html.is_file() and "<html" in html.read_text(encoding="utf-8")


def test_the_watch_sees_a_heavy_import(tmp_path):
    # The check above would pass vacuously if the snippet could not see imports: `layers`
    # loads a model, so it must report torch, and where it came from.
    report, process, _ = run_fresh(["layers", "torchvision:resnet18?weights=none"], tmp_path)
    assert report["code"] == 0, process.stdout + process.stderr
    assert "torch" in report["loaded"] and report["first_import"]["torch"]
