"""CoSy's AUC and MAD of labels, on a synthetic model whose right labels are known."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from test_faithfulness import LAYER, PALETTE, labeled_probe

from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.evaluation.faithfulness import CHECKED_ALWAYS


def one_square(color: str, seed: int, size: int = 40) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(90, 140, size=(size, size, 1), dtype=np.uint8).repeat(3, axis=2)
    side = int(rng.integers(10, 30))
    x, y = rng.integers(0, size - side, size=2)
    array[y : y + side, x : x + side] = PALETTE[color]
    return Image.fromarray(array, "RGB")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cosy")
    labeled, unlabeled = root / "labeled", root / "unlabeled"
    labeled.mkdir()
    unlabeled.mkdir()
    rows = []
    for i in range(80):
        color = list(PALETTE)[i % len(PALETTE)]
        image = one_square(color, 2000 + i)
        image.save(labeled / f"{i:02d}.png")
        image.save(unlabeled / f"{i:02d}.png")
        rows.append({"file": f"{i:02d}.png", "class_name": color})
    with (labeled / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "class_name"])
        writer.writeheader()
        writer.writerows(rows)
    _, ctx, result = labeled_probe(root)
    return root, ctx, result


def test_labels_separate_concept_images_from_controls(setup):
    root, ctx, result = setup
    figures = ctx.registries.evaluators.resolve(f"cosy?images={root / 'labeled'}", ctx).evaluate(
        result, ctx
    )
    layer = figures["layers"][LAYER]
    rows = {row["unit"]: row for row in figures["per_unit"]}
    assert [rows[u]["concept"] for u in range(3)] == ["red", "green", "blue"]
    assert all(rows[u]["concept_images"] == 10 for u in range(3))
    # the color detectors separate their color's images from the rest almost perfectly
    assert all(rows[u]["auc"] > 0.9 and rows[u]["mad"] > 1.0 for u in range(3))
    assert layer["auc"] > layer["baseline_auc"] + 0.2
    assert "labels.csv" in figures["concept_images"] and "NeuronEval" in figures["caveat"]


def test_without_labels_another_scorer_chooses_the_concept_images(setup):
    root, ctx, result = setup
    folder = root / "unlabeled"
    with pytest.raises(NeurolabelError, match="pass cosy\\?scorer=SPEC"):
        ctx.registries.evaluators.resolve(f"cosy?images={folder}", ctx).evaluate(result, ctx)
    with pytest.raises(NeurolabelError, match="circular"):
        ctx.registries.evaluators.resolve(f"cosy?images={folder}&scorer=color", ctx).evaluate(
            result, ctx
        )
    spec = f"cosy?images={folder}&scorer=color&force=true&share=0.1"
    figures = ctx.registries.evaluators.resolve(spec, ctx).evaluate(result, ctx)
    layer = figures["layers"][LAYER]
    assert layer["auc"] > 0.9 and layer["auc"] > layer["baseline_auc"]
    assert (
        figures["share"] == 0.1 and "top 0.1 of the pool under color" in figures["concept_images"]
    )


def test_the_sanity_table_shows_cosy_scores_too(setup):
    root, ctx, result = setup
    spec = f"faithfulness?images={root / 'labeled'}"
    figures = ctx.registries.evaluators.resolve(spec, ctx).evaluate(result, ctx)
    sanity = figures["layers"][LAYER]["sanity_checks"]
    for metric in CHECKED_ALWAYS:
        assert set(sanity[metric]["ideal_label"]) == {"missing", "extra"}
    assert "auc" not in figures["layers"][LAYER]["trusted_metrics"]


def test_cosy_reports_the_missing_labels_check_both_ways(setup):
    root, ctx, result = setup
    figures = ctx.registries.evaluators.resolve(f"cosy?images={root / 'labeled'}", ctx).evaluate(
        result, ctx
    )
    checks = figures["layers"][LAYER]["sanity_checks"]
    # Concept images that leave the data (CoSy's generated images) barely move AUC or MAD:
    # about half the units fall by chance. Moved among the controls, they do lower both.
    assert checks["auc_missing_dropped"] < 0.9 and checks["mad_missing_dropped"] < 0.9
    assert checks["auc_missing_to_control"] >= 0.9 and checks["auc_extra"] >= 0.9


def test_the_probing_set_is_refused_as_a_pool_naming_cosy(setup):
    root, ctx, result = setup
    with pytest.raises(NeurolabelError, match="cosy must be measured on images the labeler"):
        ctx.registries.evaluators.resolve(f"cosy?images={root / 'probe'}", ctx).evaluate(
            result, ctx
        )
