"""The ablation study on a synthetic model whose answer is known."""

from __future__ import annotations

import pytest
import torch
from synthetic import ColorClassifier, square_image

from neurolabel import NeuronLabeler
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.evaluation.ablation import true_class_outcomes, units_zeroed
from neurolabel.plugin_core.plugins.spec import Spec

MODEL = "python:synthetic:ColorClassifier?resize=none&size=32&mean=0,0,0&std=1,1,1"
COLORS = {0: ("red", (230, 30, 30)), 1: ("green", (30, 230, 30)), 2: ("blue", (40, 60, 220))}


@pytest.fixture(scope="module")
def labeled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("labeled")
    rows = ["file,class_index,class_name"]
    for i in range(18):
        cls = i % 3
        name, rgb = COLORS[cls]
        square_image((40, 40), (0, 0, 40, 40), rgb, seed=i).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{cls},{name}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder


def test_units_zeroed_and_true_class_outcomes():
    model = ColorClassifier().eval()
    red = torch.zeros(2, 3, 8, 8)
    red[:, 0] = 1.0
    labels = torch.zeros(2, dtype=torch.long)
    correct, _ = true_class_outcomes(model, red, labels)
    assert correct.tolist() == [1.0, 1.0]
    with units_zeroed(model, "features.1", [0]):
        _, hurt = true_class_outcomes(model, red, labels)
    assert hurt.tolist() == pytest.approx([1 / 3, 1 / 3], abs=1e-4)
    assert true_class_outcomes(model, red, labels)[1].min() > 0.99  # the hook is removed


def test_ablation_evaluator_finds_the_causal_unit(labeled, ctx):
    result = NeuronLabeler(
        MODEL,
        layers=["features.1"],
        scorer="color",
        vocabulary="colors",
        top_k=3,
        device="cpu",
        progress=False,
        context=ctx,
    ).run(labeled)
    assert [result.explanation("features.1", u).description for u in range(3)] == [
        "red",
        "green",
        "blue",
    ]
    evaluator = ctx.registries.evaluators.resolve(
        f"ablation?images={labeled}&m=1,3&draws=40&classes=3&others=6&text=classifier", ctx
    )
    figures = evaluator.evaluate(result, ctx)
    one = figures["by_m"]["1"]
    assert one["matched_drop"] > 0.5
    assert one["matched_drop"] >= 3 * one["random_drop"]
    assert abs(one["other_classes_drop"]) < 0.05
    assert {row["labels"][0] for row in figures["per_class"] if row["m"] == 1} == {
        "red",
        "green",
        "blue",
    }
    # more matched units still include the causal one; the test gets blunter with m
    three = figures["by_m"]["3"]
    assert three["matched_drop"] >= one["matched_drop"] - 1e-6
    assert three["ratio"] < one["ratio"]


def test_ablation_errors(labeled, ctx, tmp_path):
    with pytest.raises(NeurolabelError, match="needs images"):
        ctx.registries.evaluators.resolve("ablation", ctx)
    result = NeuronLabeler(
        MODEL,
        layers=["features.1", "fc"],
        scorer="color",
        vocabulary="colors",
        top_k=2,
        device="cpu",
        progress=False,
        context=ctx,
    ).run(labeled)
    with pytest.raises(NeurolabelError, match="pass layer=NAME"):
        ctx.registries.evaluators.resolve(f"ablation?images={labeled}", ctx).evaluate(result, ctx)
    with pytest.raises(NeurolabelError, match="labels.csv"):
        ctx.registries.evaluators.resolve(
            f"ablation?images={tmp_path}&layer=fc&text=classifier", ctx
        ).evaluate(result, ctx)
    with pytest.raises(NeurolabelError, match="cannot embed texts"):
        ctx.registries.evaluators.resolve(f"ablation?images={labeled}&layer=fc", ctx).evaluate(
            result, ctx
        )
    assert Spec.parse("ablation?m=10,30").option("m") == "10,30"


def test_ranked_labels_count_by_default(labeled, ctx):
    """The explanation is a ranked set: a unit whose second concept is the class name is
    matched to the class by default, and not when only top labels count (labels=1)."""
    result = NeuronLabeler(
        MODEL,
        layers=["features.1"],
        scorer="color",
        vocabulary="colors",
        top_k=3,
        device="cpu",
        progress=False,
        context=ctx,
    ).run(labeled)
    red_unit = result.explanation("features.1", 0)
    assert red_unit.description == "red"
    # a top concept naming no color, the true one second
    red_unit.concepts = [["wooden spoon", 1.0], ["red", 0.9]]
    for neuron in result.neurons["features.1"][1:]:
        neuron.concepts = [c for c in neuron.concepts if c[0] != "red"]

    def red_row(options: str) -> dict:
        evaluator = ctx.registries.evaluators.resolve(
            f"ablation?images={labeled}&m=1&draws=5&classes=3&others=3&text=classifier{options}",
            ctx,
        )
        rows = evaluator.evaluate(result, ctx)["per_class"]
        return next(row for row in rows if row["name"] == "red")

    default = red_row("")
    assert default["units"] == [0]
    assert default["matched_drop"] > 0.5
    top_only = red_row("&labels=1")
    assert top_only["units"] != [0]
    assert top_only["matched_drop"] < default["matched_drop"] - 0.3
    with pytest.raises(NeurolabelError, match="labels must be"):
        ctx.registries.evaluators.resolve(f"ablation?images={labeled}&labels=-1", ctx)
