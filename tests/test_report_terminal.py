"""The terminal report: per-layer tables, one neuron, JSON, evaluation figures as tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from cli_runner import run
from report_results import make_result, source_folder
from rich.console import Console

from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.reporting.layer_summary import summarize_layer
from neurolabel.plugin_core.reporting.tables import (
    FigureTable,
    format_cell,
    format_value,
    scoped_figures,
    tabulate,
)
from neurolabel.plugin_core.reporting.terminal import (
    layer_report,
    neuron_json,
    neuron_report,
    parse_neuron,
    result_table,
    sparkline,
)


def render(renderable, width: int = 160) -> str:
    console = Console(width=width, color_system=None)
    with console.capture() as capture:
        console.print(renderable)
    return capture.get()


@pytest.fixture
def saved(tmp_path):
    result = make_result(units=5, layers=("layer4", "fc"), sources=source_folder(tmp_path / "i", 3))
    result.save(tmp_path / "out")
    return tmp_path / "out"


# -- evaluation figures as tables ---------------------------------------------------------
def test_tabulate_shapes():
    assert tabulate(None, "t") == [] and tabulate({}, "t") == []
    assert tabulate(0.5, "t")[0].rows == [[0.5]]
    ablation = {
        "layer": "layer4",
        "by_m": {"1": {"matched_drop": 0.3, "random_drop": 0.01}, "5": {"matched_drop": 0.5}},
        "per_class": [{"class": 3, "units": list(range(12)), "drop": 0.2}],
    }
    tables = {t.title: t for t in tabulate(ablation, "ablation")}
    assert tables["ablation"].rows == [["layer", "layer4"]]
    by_m = tables["ablation › by_m"]
    assert by_m.columns == ["name", "matched_drop", "random_drop"]
    assert by_m.rows == [["1", 0.3, 0.01], ["5", 0.5, None]]
    assert tables["ablation › per_class"].formatted()[0][1].startswith("0, 1, 2")
    numbers = tabulate(np.array([1.0, 2.0]), "v")[0]
    assert numbers.columns == ["#", "value"] and numbers.rows == [[0, 1.0], [1, 2.0]]
    long = tabulate([{"i": i} for i in range(250)], "long")[0]
    assert len(long.rows) == 200 and long.more == 50


def test_formatting():
    assert format_value(float("inf")) == "inf" and format_value(math.pi) == "3.142"
    assert format_value(np.float32(0.5).item()) == "0.5"
    assert format_cell({"deep": list(range(100))}, width=20).endswith("…")
    assert format_cell((1, 2)) == "1, 2"


def test_scoped_figures_conventions():
    metrics = {
        "faithfulness": {"layers": {"layer4": {"r": 0.4}}, "fc": {"r": 0.9}},
        "ablation": {"layer": "fc", "drop": 0.3},
        "per_unit": {"layer4:2": {"hit": True}, "layer4": {"3": {"hit": False}}},
        "rows": [{"layer": "fc", "unit": 1, "a": 1.0}, {"layer": "fc", "unit": 1, "a": 2.0}],
        "other": {"nothing": 1},
    }
    per_layer, per_neuron = scoped_figures(metrics, ["layer4", "fc"])
    assert [t.rows for t in per_layer["layer4"]] == [[["r", 0.4]]]
    assert sorted(t.title for t in per_layer["fc"]) == ["ablation", "faithfulness"]
    assert per_neuron[("layer4", 2)][0].rows == [["hit", True]]
    assert per_neuron[("layer4", 3)][0].rows == [["hit", False]]
    assert per_neuron[("fc", 1)][0].rows == [[1.0], [2.0]]  # several rows: one table


def test_plottable_tables():
    drops = FigureTable("t", ["class", "m", "drop"], [["a", 5, 0.2], ["b", 5, 0.1]])
    assert drops.plottable() and drops.series_columns() == [2] and drops.label_column() == 0
    assert not FigureTable("t", ["name", "value"], [["top1", 0.5], ["units", 3]]).plottable()
    assert not FigureTable("t", ["a"], [[1.0]]).plottable()


def test_layer_summary():
    result = make_result(units=6, metrics=False)
    summary = summarize_layer(result, "layer4")
    assert (summary.explained, summary.dead, summary.labeled, summary.summaries) == (6, 1, 5, 1)
    assert sum(n for _, n in summary.top_concepts) == 5 and len(summary.scores) == 5
    assert set(summary.score_quantiles()) == {"min", "p25", "median", "p75", "max"}


# -- rich views ---------------------------------------------------------------------------
def test_markup_in_strings_prints_as_written():
    neuron = NeuronExplanation("[b]l[/b]", 0, [["[bold red]x[/bold red]", 1.0], ["[dim]", 0.5]])
    result = LabelingResult({"name": "[red]m"}, {}, {"[b]l[/b]": [neuron]})
    text = render(result_table(result))
    assert "[bold red]x[/bold red]" in text and "[dim]" in text and "[red]m" in text
    assert "[bold red]x[/bold red]" in render(neuron_report(result, "[b]l[/b]", 0))


def test_layer_report_shows_summaries_tables_and_evaluation():
    result = make_result(units=30, layers=("layer4", "fc"))
    text = render(layer_report(result, limit=5))
    assert "layer layer4" in text and "layer fc" in text
    assert "30 explained of 30: 29 labeled, 1 dead" in text
    assert "frequent concepts" in text and "distribution" in text
    assert "25 more units" in text
    assert "ablation › classes" in text and "labeled_drop" in text
    assert "attribution › neurons" in text and "label" in text  # neurons get their labels
    only = render(layer_report(result, layer="fc"))
    assert "layer fc" in only and "layer4" not in only
    assert "faithfulness" in only and "spearman" in only  # that layer's own figures


def test_sparkline():
    assert sparkline([]) == ""
    line = sparkline([1.0, 2.0, 2.0, 3.0], bins=4)
    assert line.startswith("1 ") and line.endswith(" 3") and "█" in line


def test_neuron_report_and_json(saved):
    result = LabelingResult.load(saved)
    text = render(neuron_report(result, "layer4", 0, folder=saved), width=400)
    assert "layer4:0" in text and "Fires on striped fur." in text
    assert "█" in text  # score bars
    # paths relative to their folders, both folders named once
    assert "patches/layer4/unit00000_rank000.jpg" in text and "i/img_000" in text
    assert f"patches in {saved.resolve()}" in text
    assert "ablation" in text and "drop" in text  # the neuron's evaluation rows
    data = neuron_json(result, "layer4", 0, folder=saved)
    assert data["description"] == result.explanation("layer4", 0).description
    assert all(e["patch_file"].endswith(".jpg") for e in data["exemplars"])
    assert {m["title"] for m in data["metrics"]} == {"ablation", "attribution"}
    dead = render(neuron_report(result, "layer4", 1, folder=saved))
    assert "dead" in dead


def test_parse_neuron():
    assert parse_neuron("a:b.c:12") == ("a:b.c", 12)
    for bad in ("layer4", "layer4:x", ":3", "layer4:-1"):
        with pytest.raises(NeurolabelError, match="LAYER:UNIT"):
            parse_neuron(bad)


# -- CLI ----------------------------------------------------------------------------------
def test_cli_report_views(saved, capsys):
    code, out, _ = run(["report", str(saved), "--limit", "2"], capsys)
    assert code == 0 and "layer layer4" in out and "layer fc" in out and "evaluation" in out
    code, out, _ = run(["report", str(saved), "--neuron", "fc:3"], capsys)
    assert code == 0 and "fc:3" in out and "exemplars" in out
    code, out, _ = run(["report", str(saved), "--neuron", "fc:3", "--json"], capsys)
    data = json.loads(out)
    assert data["layer"] == "fc" and data["unit"] == 3 and "patch_file" in data["exemplars"][0]
    code, out, _ = run(["report", str(saved / "result.json"), "--json", "--layer", "fc"], capsys)
    data = json.loads(out)
    assert list(data["neurons"]) == ["fc"] and data["schema_version"] == "1.5"


def test_cli_report_html_with_json_keeps_stdout_clean(saved, tmp_path, capsys):
    target = tmp_path / "r.html"
    code, out, err = run(
        ["report", str(saved), "--neuron", "layer4:0", "--json", "--html", str(target)], capsys
    )
    assert code == 0 and target.is_file() and "Wrote" in err
    assert json.loads(out)["unit"] == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--neuron", "layer4:99"], "Unit 99 of layer 'layer4'"),
        (["--neuron", "nope:1"], "Layer 'nope' is not in this result"),
        (["--neuron", "layer4"], "LAYER:UNIT"),
        (["--layer", "nope"], "Layers: layer4, fc"),
    ],
)
def test_cli_report_errors_are_clear(saved, capsys, args, message):
    code, out, err = run(["report", str(saved), *args], capsys)
    assert code == 2 and message in " ".join(err.split()) and "Traceback" not in err


def test_output_units_name_their_class():
    result = make_result(units=3, layers=("fc",), metrics=False)
    result.layers["fc"].update(kind="vector", units=3)
    result.model["class_names"] = ["tench", "goldfish", "[shark]"]
    assert "output unit of class: [shark]" in render(neuron_report(result, "fc", 2))
