from __future__ import annotations

import pytest
import torch

from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.evaluation.accuracy import (
    AccuracyEvaluator,
    exact_match_accuracy,
    label_cosine,
    read_ground_truth,
)


def result_with(*neurons):
    return LabelingResult(
        {"name": "m", "class_names": ["Dog", "cat", "car"]},
        {"fc": {"kind": "vector", "units": 3}},
        {"fc": list(neurons)},
    )


def test_exact_match_and_class_names(ctx):
    result = result_with(
        NeuronExplanation("fc", 0, [["dog", 2.0], ["wolf", 1.0]]),
        NeuronExplanation("fc", 1, [["lynx", 2.0], ["cat", 1.0]]),
        NeuronExplanation("fc", 2, [], dead=True),
    )
    figures = AccuracyEvaluator(None).evaluate(result, ctx)
    assert figures == {"top1": pytest.approx(1 / 3), "top5": pytest.approx(2 / 3), "units": 3}


def test_an_imagenet_class_counts_under_any_of_its_names(ctx):
    from neurolabel.plugin_core.data.imagenet import readable_class_names

    names = list(readable_class_names())
    neurons = [NeuronExplanation("fc", u, [["tench", 1.0]]) for u in range(1000)]
    neurons[383] = NeuronExplanation("fc", 383, [["madagascar cat", 2.0]])  # WordNet's lemma
    neurons[282] = NeuronExplanation("fc", 282, [["tiger cat", 2.0]])  # the readable name
    neurons[264] = NeuronExplanation("fc", 264, [["cardigan", 2.0]])  # the sweater, not a corgi
    result = LabelingResult(
        {"name": "m", "class_names": names},
        {"fc": {"kind": "vector", "units": 1000}},
        {"fc": neurons},
    )
    assert names[383] == "ring-tailed lemur"
    figures = AccuracyEvaluator(None).evaluate(result, ctx)
    assert figures["top1"] == pytest.approx(3 / 1000)  # tench (unit 0), 383 and 282


def test_ground_truth_csv_with_synonyms(tmp_path):
    path = tmp_path / "gt.csv"
    path.write_text("layer,unit,label\nfc,0,Puppy\nfc,0,dog\n")
    truth = read_ground_truth(path)
    assert truth == {("fc", 0): {"puppy", "dog"}}
    result = result_with(NeuronExplanation("fc", 0, [["dog", 1.0]]))
    assert exact_match_accuracy(result, truth)["top1"] == 1.0
    bad = tmp_path / "bad.csv"
    bad.write_text("layer,unit\nfc,0\n")
    with pytest.raises(NeurolabelError, match="missing label"):
        read_ground_truth(bad)


def test_label_cosine_by_hand():
    vectors = {"dog": [1.0, 0.0], "puppy": [0.6, 0.8], "cat": [0.0, 1.0]}

    def encode(texts):
        return torch.tensor([vectors[t] for t in texts])

    result = result_with(
        NeuronExplanation("fc", 0, [["puppy", 1.0]]), NeuronExplanation("fc", 1, [], dead=True)
    )
    truth = {("fc", 0): {"dog", "cat"}, ("fc", 1): {"cat"}}
    # unit 0: best of cos(puppy, dog)=0.6 and cos(puppy, cat)=0.8; unit 1 is dead: 0
    assert label_cosine(result, truth, encode) == pytest.approx(0.4)


def test_accuracy_with_a_text_scorer(ctx):
    result = result_with(NeuronExplanation("fc", 1, [["tabby", 1.0]]))
    figures = AccuracyEvaluator(None, text="classifier").evaluate(result, ctx)
    assert figures["top1"] == 0.0 and 0.3 < figures["cosine"] < 1.0
    with pytest.raises(NeurolabelError, match="cannot embed texts"):
        AccuracyEvaluator(None, text="color").evaluate(result, ctx)


def test_layer_profile_counts_categories(ctx):
    from neurolabel.plugin_core.evaluation.layer_profile import LayerProfileEvaluator

    neurons = {
        "early": [
            NeuronExplanation("early", 0, [["red", 1.0]]),
            NeuronExplanation("early", 1, [["blue", 1.0]]),
            NeuronExplanation("early", 2, [["tabby cat", 1.0]]),
            NeuronExplanation("early", 3, [], dead=True),
        ],
        "late": [
            NeuronExplanation("late", 0, [["tabby cat", 1.0]]),
            NeuronExplanation("late", 1, [["zebra", 1.0]]),
            NeuronExplanation("late", 2, [["red", 0.1]], p_value=0.5, unexplained=True),
        ],
    }
    result = LabelingResult({"name": "m"}, {}, neurons, settings={"vocabulary": "imagenet+colors"})
    figures = LayerProfileEvaluator(None).evaluate(result, ctx)
    shares = {"color": pytest.approx(2 / 3), "object": pytest.approx(1 / 3)}
    assert figures["layers"]["early"] == {
        "labeled_units": 3,
        "dead_units": 1,
        "unexplained_units": 0,
        "shares": shares,
        "shares_best_ranked": shares,
    }
    # an unexplained unit has no label; its best-ranked concept counts only in the second
    assert figures["layers"]["late"]["shares"] == {"object": 1.0}
    assert figures["layers"]["late"]["unexplained_units"] == 1
    assert figures["layers"]["late"]["shares_best_ranked"] == {
        "color": pytest.approx(1 / 3),
        "object": pytest.approx(2 / 3),
    }
    untagged = LayerProfileEvaluator("words:50").evaluate(result, ctx)
    assert untagged["layers"]["late"]["shares"] == {"uncategorized": 1.0}


def test_an_evaluator_refuses_a_network_other_than_the_one_labeled(tmp_path):
    """A spec with random weights draws new ones at every load: evaluating the reloaded
    network would measure labels against another network."""
    import numpy as np
    from PIL import Image

    from neurolabel import NeuronLabeler
    from neurolabel.plugin_core.plugins.resolve import build_context, load_result_model

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    spec = "torchvision:resnet18?weights=none"
    result = NeuronLabeler(
        spec,
        ["layer1"],
        scorer="color",
        vocabulary=["red", "blue"],
        top_k=2,
        units=range(2),
        device="cpu",
        progress=False,
        context=ctx,
    ).run(images)
    assert len(result.model["weights"]) == 20
    # the same process finds the network it labeled
    assert load_result_model(result, ctx).fingerprint() == result.model["weights"]
    with pytest.raises(NeurolabelError, match="not the network this result labeled"):
        load_result_model(result, build_context("cpu", cache_dir=tmp_path / "cache"))
