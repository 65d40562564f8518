"""The Captum workflow example runs offline (so it cannot rot), and the Captum adapters'
docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import runpy
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "captum_workflow.py"
MODULES = [
    "neurolabel.adapters.captum_common",
    "neurolabel.adapters.captum_extractor",
    "neurolabel.adapters.captum_patchers",
    "neurolabel.adapters.captum_attribution",
    "neurolabel.adapters.captum_concepts",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failures == 0


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_captum_workflow_example_runs_offline(tmp_path, capsys):
    argv = sys.argv
    sys.argv = [str(EXAMPLE), str(tmp_path / "out")]
    try:
        runpy.run_path(str(EXAMPLE), run_name="__main__")
    finally:
        sys.argv = argv
    printed = capsys.readouterr().out
    assert "predicted: " in printed and "units carrying it" in printed
    sentence = next(line for line in printed.splitlines() if "' came " in line)
    assert "through units labeled '" in sentence and "%" in sentence
    heatmaps = sorted((tmp_path / "out" / "heatmaps").glob("bn2_unit*.png"))
    assert len(heatmaps) == 4
    assert "TCAV of '" in printed
    assert (tmp_path / "out" / "result.json").is_file()
