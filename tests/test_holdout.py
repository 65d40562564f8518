"""Holdout at explain time: disjoint probing and held-out parts of one folder, recorded in
the result and used by the faithfulness evaluator; ``explain --holdout --metric``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run as run_cli
from PIL import Image
from test_faithfulness import LAYER, MODEL, scene

from neurolabel import NeuronLabeler
from neurolabel.plugin_core.data.holdout import (
    PathListSource,
    SubsetSource,
    held_out_source,
    split_holdout,
)
from neurolabel.plugin_core.data.images import FolderSource, as_image_source
from neurolabel.plugin_core.data.result import LabelingResult
from neurolabel.plugin_core.errors import NeurolabelError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("holdout") / "images"
    root.mkdir()
    for i in range(48):
        scene(i).save(root / f"{i:02d}.png")
    return root


def test_split_is_disjoint_complete_and_seeded(folder):
    source = FolderSource(folder)
    probe, held = split_holdout(source, 0.25, seed=3)
    assert (len(probe), len(held)) == (36, 12)
    assert set(probe.indices).isdisjoint(held.indices)
    assert sorted(probe.indices + held.indices) == list(range(48))
    assert split_holdout(source, 0.25, seed=3)[1].indices == held.indices
    assert split_holdout(source, 0.25, seed=4)[1].indices != held.indices
    assert probe.holdout == {
        "fraction": 0.25,
        "seed": 3,
        "count": 12,
        "images": [source.paths[i].name for i in held.indices],  # relative to the folder
    }
    assert held.describe(0) == str(source.paths[held.indices[0]])
    assert probe.fingerprint() not in (source.fingerprint(), held.fingerprint())
    assert probe.cache_key() != split_holdout(source, 0.25, seed=4)[0].cache_key()
    for bad in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(NeurolabelError, match="between 0 and 1"):
            split_holdout(source, bad)
    with pytest.raises(NeurolabelError, match="leaves one side empty"):
        split_holdout(as_image_source([Image.new("RGB", (4, 4))] * 3), 0.1)


def test_path_list_source_reports_missing_files(tmp_path, folder):
    source = PathListSource([folder / "00.png", tmp_path / "gone.png"])
    assert source.load(0).size == (40, 40)
    with pytest.raises(NeurolabelError, match="file not found"):
        source.load(1)
    with pytest.raises(NeurolabelError, match="no held-out images"):
        held_out_source({"fingerprint": "x"})
    with pytest.raises(NeurolabelError, match="in-memory dataset"):
        held_out_source({"holdout": {"images": ["#3", "#7"]}})


def test_labeler_holdout_feeds_faithfulness(folder, ctx, tmp_path):
    labeler = NeuronLabeler(
        MODEL,
        layers=[LAYER],
        scorer="color",
        vocabulary="colors",
        top_k=5,
        device="cpu",
        progress=False,
        context=ctx,
        holdout=0.5,
    )
    result = labeler.run(folder)
    record = result.dataset["holdout"]
    assert record["count"] == 24 and result.dataset["num_images"] == 24
    held = {Path(p).resolve() for p in record["images"]}
    exemplars = {Path(e.image).resolve() for n in result for e in n.exemplars}
    assert exemplars and held.isdisjoint(exemplars)
    # saved and loaded, the result still knows its held-out part
    loaded = LabelingResult.load(result.save(tmp_path / "out"))
    evaluator = ctx.registries.evaluators.resolve("faithfulness?top=0.2", ctx)
    figures = evaluator.evaluate(loaded, ctx)
    assert figures["images"]["folder"] == "holdout of the result"
    assert figures["images"]["used"] == 24 and figures["images"]["dropped_overlap"] == 0
    layer = figures["layers"][LAYER]
    assert layer["correlation"] > layer["baseline_correlation"]
    # without a holdout and without a folder there is nothing to evaluate on
    plain = NeuronLabeler(
        MODEL,
        layers=[LAYER],
        scorer="color",
        vocabulary="colors",
        top_k=5,
        device="cpu",
        progress=False,
        context=ctx,
    ).run(folder)
    assert "holdout" not in plain.dataset
    with pytest.raises(NeurolabelError, match="no held-out images"):
        evaluator.evaluate(plain, ctx)
    with pytest.raises(NeurolabelError, match="between 0 and 1"):
        NeuronLabeler(MODEL, layers=[LAYER], holdout=2.0, context=ctx)


def test_subset_source_keeps_upfront_skips_on_the_probing_side(tmp_path, folder):
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i in range(4):
        scene(i).save(mixed / f"{i}.png")
    (mixed / "notes.txt").write_text("not an image")
    source = FolderSource(mixed)
    probe, held = split_holdout(source, 0.5)
    assert [s.item for s in probe.skipped_upfront] == [str(mixed / "notes.txt")]
    assert held.skipped_upfront == []
    assert isinstance(probe, SubsetSource) and probe.root == mixed


def test_cli_explain_with_holdout_and_metric(folder, tmp_path, capsys):
    out = tmp_path / "out"
    common = [
        "explain",
        MODEL,
        "--layer",
        LAYER,
        "--images",
        str(folder),
        "--scorer",
        "color",
        "--vocab",
        "colors",
        "--top-k",
        "5",
        "--device",
        "cpu",
        "--quiet",
        "--no-html",
        "--no-cache",
    ]
    code, _, err = run_cli(
        [
            *common,
            "--out",
            str(out),
            "--holdout",
            "0.5",
            "--metric",
            "faithfulness?top=0.2&draws=1",
            "--metric",
            "layer-profile",
        ],
        capsys,
    )
    assert code == 0, err
    saved = json.loads((out / "result.json").read_text())
    assert saved["dataset"]["holdout"]["count"] == 24
    assert saved["metrics"]["faithfulness"]["images"]["used"] == 24
    assert LAYER in saved["metrics"]["faithfulness"]["layers"]
    assert LAYER in saved["metrics"]["layer-profile"]["layers"]
    # a bad evaluator spec fails before the run, and nothing is written
    code, _, err = run_cli([*common, "--out", str(tmp_path / "bad"), "--metric", "nosuch"], capsys)
    assert code == 2 and "nosuch" in err
    assert not (tmp_path / "bad" / "result.json").exists()
