"""Asking a result: find units by text and by image, compare two results (planted truth)."""

from __future__ import annotations

import json

import pytest
import torch
from cli_runner import run
from PIL import Image
from test_unit_character import SMALL, Planted, colored_squares
from torch import nn

from neurolabel import NeuronLabeler
from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation
from neurolabel.plugin_core.data.unit_search import compare_results
from neurolabel.plugin_core.plugins.resolve import build_context

VOCABULARY = ["red", "green", "blue", "yellow", "gray"]


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    """The planted network labeled in a context that keeps it (for --image), and saved."""
    ctx = build_context("cpu", cache_dir=tmp_path_factory.mktemp("cache"))
    labeler = NeuronLabeler(
        Planted(),
        ["units", "detect"],
        scorer="color",
        vocabulary=VOCABULARY,
        top_k=10,
        device="cpu",
        progress=False,
        context=ctx,
        preprocessing=SMALL,
    )
    result = labeler.run(colored_squares(90))
    folder = tmp_path_factory.mktemp("result")
    result.save(folder)
    return result, ctx, folder


@pytest.fixture(scope="module")
def text(labeled):
    _, ctx, _ = labeled
    return ctx.registries.scorers.resolve("text", ctx).encode_texts


@pytest.mark.parametrize("query", ["red", "crimson"])
def test_a_query_finds_the_red_units_even_out_of_the_vocabulary(labeled, text, query):
    result = labeled[0]
    found = result.find(query, text, layer="units", top=3)
    assert {(m.unit, m.matched) for m in found[:2]} == {(0, "red"), (2, "red")}, found
    assert result.find("navy", text, layer="units", top=1)[0].unit == 3


def test_the_exemplar_groups_count_as_evidence(labeled, text):
    # unit 1 fires on red and on green: a query for green finds it through its green group
    result = labeled[0]
    either = result.explanation("units", 1)
    assert "green" in [g[0] for g in either.groups]
    found = result.find("green", text, layer="units", top=1)[0]
    assert (found.unit, found.matched) == (1, "green")


def test_an_image_finds_the_units_firing_on_it_and_where(labeled, tmp_path):
    from neurolabel.plugin_core.pipeline.image_query import units_on_image

    result, ctx, _ = labeled
    image = Image.new("RGB", (64, 64), (120, 120, 120))
    image.paste((40, 40, 235), (32, 8, 60, 36))  # a blue square, top right
    path = tmp_path / "blue.png"
    image.save(path)
    firing = units_on_image(result, path, ctx, layer="units", top=2)
    assert firing[0].unit == 3 and firing[0].label == "blue" and firing[0].z > 1
    x0, y0, x1, y1 = firing[0].box
    assert x0 >= 24 and y1 <= 44 and x1 > 50 and y0 < 16  # around the square


def test_find_by_image_saves_the_patches(labeled, tmp_path, capsys):
    _, _, folder = labeled
    image = Image.new("RGB", (64, 64), (120, 120, 120))
    image.paste((40, 40, 235), (32, 8, 60, 36))
    image.save(tmp_path / "blue.png")
    # a fresh process would reload the network from a spec: the planted one is importable
    code, out, err = run(
        ["find", str(folder), "--image", str(tmp_path / "blue.png"), "--layer", "units",
         "-k", "2", "--save", str(tmp_path / "patches"), "--json",
         "--model", "python:test_unit_character:Planted"],
        capsys,
    )  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)["units"]
    patch = Image.open(rows[0]["patch"])
    assert rows[0]["unit"] == 3 and patch.size[0] < 64


def test_compare_merges_synonyms_and_pairs_units():
    table = {
        "dog": [1.0, 0.0, 0.0],
        "puppy": [0.95, 0.3, 0.0],
        "car": [0.0, 1.0, 0.0],
        "tree": [0.0, 0.0, 1.0],
    }

    def encode(texts):
        return torch.nn.functional.normalize(torch.tensor([table[t] for t in texts]), dim=1)

    def result(*labels):
        units = [NeuronExplanation("fc", i, [[c, 1.0]]) for i, c in enumerate(labels)]
        return LabelingResult({"name": "m"}, {"fc": {"units": len(units)}}, {"fc": units})

    comparison = compare_results(result("dog", "car", "dog"), result("puppy", "tree"), encode)
    assert [(r["concept"], r["in_b"]) for r in comparison["shared"]] == [("dog", "puppy")]
    assert [r["concept"] for r in comparison["only_a"]] == ["car"]
    assert [r["concept"] for r in comparison["only_b"]] == ["tree"]
    assert comparison["pairs"][0]["b"] == ["fc", 0] and comparison["pairs"][0]["a"][1] in (0, 2)
    assert comparison["figures"]["shared_share_a"] == 0.5


def test_find_and_compare_from_the_command_line(labeled, capsys):
    _, _, folder = labeled
    code, out, err = run(["find", str(folder), "crimson", "--layer", "units", "--json"], capsys)
    assert code == 0, err
    found = json.loads(out)
    assert found["text"] == "text" and found["units"][0]["matched"] == "red"
    code, out, _ = run(["find", str(folder), "crimson", "-k", "2"], capsys)
    assert code == 0 and "units matching 'crimson'" in out and "red" in out
    code, out, _ = run(
        ["compare", str(folder), str(folder), "--layer-a", "units", "--layer-b", "detect"], capsys
    )
    assert code == 0 and "concepts in both" in out
    code, out, _ = run(["compare", str(folder), str(folder), "--json"], capsys)
    data = json.loads(out)
    assert data["figures"]["shared_share_a"] == 1.0 and not data["only_a"]
    code, _, err = run(["find", str(folder)], capsys)
    assert code == 2 and "Give a QUERY or --image PATH" in err


def test_report_compares_and_asks(labeled, tmp_path, capsys):
    _, _, folder = labeled
    code, out, _ = run(["report", str(folder), "--compare", str(folder)], capsys)
    assert code == 0 and "concepts in both" in out
    page = tmp_path / "r.html"
    code, _, err = run(
        ["report", str(folder), "--html", str(page), "--compare", str(folder), "--ask"], capsys
    )
    assert code == 0, err
    text = page.read_text(encoding="utf-8")
    assert "id='compare'" in text and "id='ask'" in text and '"query":' in text
    code, _, _ = run(["report", str(folder), "--html", str(page)], capsys)
    assert "id='ask'" not in page.read_text(encoding="utf-8")


def test_untrusted_concepts_are_escaped_in_the_compare_tab(tmp_path):
    from neurolabel import write_html_report
    from neurolabel.plugin_core.reporting.comparison import comparison_html

    evil = "<img src=x onerror=alert(1)>"
    units = [NeuronExplanation("fc", 0, [[evil, 1.0]], groups=[[evil, 3, 0.5]])]
    result = LabelingResult({"name": "m"}, {"fc": {"units": 1}}, {"fc": units})

    def encode(texts):
        return torch.ones(len(texts), 2) / 2**0.5

    comparison = compare_results(result, result, encode)
    fragment = comparison_html(comparison, "<b>other</b>")
    assert evil not in fragment and "&lt;img src=x" in fragment and "<b>" not in fragment
    page = write_html_report(
        result, tmp_path / "r.html", comparison=(comparison, "<b>other</b>")
    ).read_text(encoding="utf-8")
    assert evil not in page and "<b>other</b>" not in page


def test_the_text_scorer_cannot_label():
    from neurolabel.plugin_core.errors import NeurolabelError

    labeler = NeuronLabeler(
        Planted(), ["units"], scorer="text", vocabulary=VOCABULARY, device="cpu",
        progress=False, preprocessing=SMALL,
    )  # fmt: skip
    with pytest.raises(NeurolabelError, match="embeds texts only"):
        labeler.run(colored_squares(3))


def test_an_image_query_over_layers_of_different_map_sizes(tmp_path):
    from neurolabel.plugin_core.pipeline.image_query import units_on_image

    net = Planted()
    net.pooled = nn.AvgPool2d(4)  # a second layer with 8x8 maps beside the 32x32 ones

    def forward(x):
        return net.pooled(net.units(net.detect(x))).mean(dim=(2, 3))

    net.forward = forward
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    result = NeuronLabeler(
        net, ["units", "pooled"], scorer="color", vocabulary=VOCABULARY, top_k=5,
        device="cpu", progress=False, context=ctx, preprocessing=SMALL,
    ).run(colored_squares(30))  # fmt: skip
    image = Image.new("RGB", (64, 64), (120, 120, 120))
    image.paste((40, 40, 235), (32, 8, 60, 36))
    image.save(tmp_path / "blue.png")
    firing = units_on_image(result, tmp_path / "blue.png", ctx, top=8)
    assert {unit.layer for unit in firing} == {"units", "pooled"}
    assert all(unit.box is not None for unit in firing)
