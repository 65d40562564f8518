"""The faithfulness evaluator on a synthetic model whose right labels are known."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from neurolabel import NeuronLabeler
from neurolabel.plugin_core.data.result import LabelingResult
from neurolabel.plugin_core.errors import LayerNotFoundError, NeurolabelError, SpecError
from neurolabel.plugin_core.evaluation.faithfulness import random_concepts
from neurolabel.plugin_core.evaluation.metrics import RELIABLE
from neurolabel.plugin_core.plugins.resolve import build_context

MODEL = "python:synthetic:ColorClassifier?resize=none&size=32&mean=0,0,0&std=1,1,1"
LAYER = "features.1"  # units: red, green, blue, brightness, yellow, cyan detectors
PALETTE = {
    "red": (230, 30, 30),
    "green": (30, 230, 30),
    "blue": (40, 60, 220),
    "yellow": (235, 225, 40),
    "white": (250, 250, 250),
    "black": (10, 10, 10),
    "purple": (130, 40, 170),
    "orange": (245, 140, 20),
}


def scene(seed: int, size: int = 40) -> Image.Image:
    """Gray noise with one or two squares of random palette colors and sizes."""
    rng = np.random.default_rng(seed)
    array = rng.integers(90, 140, size=(size, size, 1), dtype=np.uint8).repeat(3, axis=2)
    names = list(PALETTE)
    for _ in range(int(rng.integers(1, 3))):
        side = int(rng.integers(6, 30))
        x, y = rng.integers(0, size - side, size=2)
        array[y : y + side, x : x + side] = PALETTE[names[int(rng.integers(len(names)))]]
    return Image.fromarray(array, "RGB")


def labeled_probe(root: Path):
    """30 probing scenes in ``root/probe`` labeled with the color scorer:
    ``(probe folder, context, result)``."""
    probe = root / "probe"
    probe.mkdir()
    for i in range(30):
        scene(i).save(probe / f"{i:02d}.png")
    ctx = build_context("cpu", cache_dir=root / "cache")
    result = NeuronLabeler(
        MODEL,
        layers=[LAYER],
        scorer="color",
        vocabulary="colors",
        top_k=5,
        device="cpu",
        progress=False,
        context=ctx,
    ).run(probe)
    return probe, ctx, result


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("faithfulness")
    held = root / "held"
    held.mkdir()
    for i in range(64):
        scene(1000 + i).save(held / f"{i:02d}.png")
    probe, ctx, result = labeled_probe(root)
    return root, probe, held, ctx, result


def evaluate(setup, options: str = "") -> dict:
    _, _, held, ctx, result = setup
    evaluator = ctx.registries.evaluators.resolve(f"faithfulness?images={held}{options}", ctx)
    return evaluator.evaluate(result, ctx)


def test_faithfulness_end_to_end(setup, tmp_path):
    _, _, _, ctx, result = setup
    assert [result.explanation(LAYER, u).description for u in range(3)] == ["red", "green", "blue"]
    figures = evaluate(setup, "&top=0.2&metrics=correlation,auprc,f1,iou,recall,precision")
    layer = figures["layers"][LAYER]
    assert layer["units"] == 6
    assert figures["images"] == {
        "folder": str(setup[2]),
        "held_out": 64,
        "used": 64,
        "fit": 32,
        "eval": 32,
        "positives_per_unit": 7,
        "skipped": 0,
        "skipped_inputs": [],
        "dropped_overlap": 0,
    }
    assert figures["baseline_vocabulary"] == "colors"
    # the explanations beat random labels of the same vocabulary on every metric
    for metric in RELIABLE:
        assert layer[metric] > layer[f"baseline_{metric}"] + 0.1, metric
    assert layer["correlation"] > 0.4
    assert layer["baseline_correlation"] < 0.2
    assert layer["beats_baseline"]["correlation"] >= 0.8
    # the explanation set simulates the units at least as well as the top concept
    assert layer["set_correlation"] >= layer["correlation"]
    # the paper's verdict on the metrics, reproduced on these activations
    assert layer["trusted_metrics"] == list(RELIABLE)
    sanity = layer["sanity_checks"]
    assert sanity["recall"]["ideal_label"]["extra"] == 0.0 and not sanity["recall"]["passed"]
    assert sanity["precision"]["ideal_label"]["missing"] == 0.0
    for metric in RELIABLE:
        assert sanity[metric]["ideal_label"] == {"missing": 1.0, "extra": 1.0}
        # a faithful label reacts to corruption far more often than a random one
        assert sanity[metric]["explanation"]["missing"] > sanity[metric]["random_label"]["missing"]
    rows = {row["unit"]: row for row in figures["per_unit"]}
    assert [rows[u]["concept"] for u in range(3)] == ["red", "green", "blue"]
    for unit, color in enumerate(("red", "green", "blue")):
        assert rows[unit]["correlation"] > 0.5
        assert color in [c for c, _ in rows[unit]["weights"]]
        assert all(w > 0 for _, w in rows[unit]["weights"])
        assert color not in rows[unit]["baseline_concepts"]
        assert rows[unit]["auprc"] > rows[unit]["baseline_auprc"]
    assert figures["warnings"] == []
    # JSON-friendly (no NaN), and storable in the result
    json.dumps(figures, allow_nan=False)
    result.metrics["faithfulness"] = figures
    saved = LabelingResult.load(result.save(tmp_path / "out"))
    assert saved.metrics["faithfulness"]["layers"][LAYER]["units"] == 6


def test_options_are_honoured(setup):
    figures = evaluate(setup, f"&layer={LAYER}&concepts=1&metrics=correlation&draws=1&split=0.25")
    layer = figures["layers"][LAYER]
    assert figures["images"]["fit"] == 16 and figures["images"]["eval"] == 48
    assert "correlation" in layer and "auprc" not in layer and "set_f1" not in layer
    # one concept per set: the set is the top concept, rescaled
    for row in figures["per_unit"]:
        assert [c for c, _ in row["weights"]] in ([row["concept"]], [])
        assert len(row["baseline_concepts"]) == 1
    assert any("positive image" in w for w in figures["warnings"])  # 3 positives of 48
    fixed = evaluate(setup, "&top=0.2&l1=0&metrics=correlation")
    assert fixed["layers"][LAYER]["set_correlation"] is not None


def test_unreadable_and_overlapping_images(setup, tmp_path):
    root, probe, held, ctx, result = setup
    mixed = tmp_path / "mixed"
    shutil.copytree(held, mixed)
    (mixed / "broken.png").write_bytes(b"not an image")
    (mixed / "notes.txt").write_text("hello")
    figures = ctx.registries.evaluators.resolve(
        f"faithfulness?images={mixed}&top=0.2", ctx
    ).evaluate(result, ctx)
    assert figures["images"]["used"] == 64 and figures["images"]["skipped"] == 2
    reasons = {Path(s["item"]).name for s in figures["images"]["skipped_inputs"]}
    assert reasons == {"broken.png", "notes.txt"}
    assert any("skipped" in w for w in figures["warnings"])

    # the probing folder itself, and a folder holding exemplars, are refused
    with pytest.raises(NeurolabelError, match="probing set"):
        ctx.registries.evaluators.resolve(f"faithfulness?images={probe}", ctx).evaluate(result, ctx)
    with pytest.raises(NeurolabelError, match="overlap=drop"):
        ctx.registries.evaluators.resolve(f"faithfulness?images={root}", ctx).evaluate(result, ctx)
    exemplars = {e.image for n in result for e in n.exemplars}
    figures = ctx.registries.evaluators.resolve(
        f"faithfulness?images={root}&overlap=drop&top=0.2", ctx
    ).evaluate(result, ctx)
    assert figures["images"]["dropped_overlap"] == len(exemplars)
    assert figures["images"]["used"] == 64 + 30 - len(exemplars)


def test_baseline_falls_back_to_the_result_concepts(setup):
    _, _, held, ctx, result = setup
    changed = copy.deepcopy(result)
    changed.settings["vocabulary"] = "list"
    figures = ctx.registries.evaluators.resolve(
        f"faithfulness?images={held}&top=0.2", ctx
    ).evaluate(changed, ctx)
    assert figures["baseline_vocabulary"].startswith("concepts of the result")
    assert any("random labels drawn" in w for w in figures["warnings"])
    layer = figures["layers"][LAYER]
    assert layer["correlation"] > layer["baseline_correlation"]


def test_random_concepts_never_repeat_the_own_label():
    generator = torch.Generator().manual_seed(0)
    pool = ["red", "green", "blue", "white"]
    draws = random_concepts(["red", "blue", "unseen"], pool, 50, generator)
    assert all(row[0] != "red" and row[1] != "blue" for row in draws)
    assert {row[2] for row in draws} == set(pool)  # a concept outside the pool: any of it
    assert random_concepts(["red"], ["red"], 1, generator) == [[None]]


def test_faithfulness_errors(setup, tmp_path):
    _, _, held, ctx, result = setup
    resolve = ctx.registries.evaluators.resolve
    with pytest.raises(NeurolabelError, match="no held-out images"):  # and no holdout recorded
        resolve("faithfulness", ctx).evaluate(result, ctx)
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(f"faithfulness?images={held}&bogus=1", ctx)
    for bad, message in [
        ("top=0", "top must be"),
        ("split=1", "split must be"),
        ("concepts=0", "concepts must be"),
        ("metrics=roc", "unknown metric"),
        ("activation=median", "use max or mean"),
        ("overlap=keep", "overlap"),
        ("l1=-1", "l1 must be"),
    ]:
        with pytest.raises(NeurolabelError, match=message):
            resolve(f"faithfulness?images={held}&{bad}", ctx)
    with pytest.raises(LayerNotFoundError, match="not in the result"):
        resolve(f"faithfulness?images={held}&layer=fc", ctx).evaluate(result, ctx)
    few = tmp_path / "few"
    few.mkdir()
    for i in range(10):
        shutil.copy(held / f"{i:02d}.png", few)
    with pytest.raises(NeurolabelError, match="at least 8"):
        resolve(f"faithfulness?images={few}", ctx).evaluate(result, ctx)
    module_result = copy.deepcopy(result)
    module_result.model["name"] = "ColorClassifier"
    with pytest.raises(NeurolabelError, match="model=SPEC"):
        resolve(f"faithfulness?images={held}", ctx).evaluate(module_result, ctx)
    with pytest.raises(NeurolabelError, match="scorer=SPEC"):
        resolve(f"faithfulness?images={held}&scorer=nosuchscorer", ctx).evaluate(result, ctx)
    with pytest.raises(NeurolabelError, match="nosuchvocab"):  # asked for: no fallback
        resolve(f"faithfulness?images={held}&vocabulary=nosuchvocab", ctx).evaluate(result, ctx)
    dead = copy.deepcopy(result)
    for neuron in dead.neurons[LAYER]:
        neuron.dead, neuron.concepts = True, []
    with pytest.raises(NeurolabelError, match="No labeled unit"):
        resolve(f"faithfulness?images={held}", ctx).evaluate(dead, ctx)


class MeanColorEmbedder:
    """An embedding scorer whose space is RGB: images embed as their mean color."""

    name = "mean-color"
    axes = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}

    def encode_images(self, images):
        means = torch.stack(
            [torch.tensor(np.asarray(i), dtype=torch.float32).mean((0, 1)) for i in images]
        )
        return torch.nn.functional.normalize(means, dim=1)

    def encode_texts(self, texts):
        return torch.tensor([self.axes[t] for t in texts])


def test_collect_held_out_with_an_embedding_scorer(setup):
    from neurolabel.plugin_core.data.images import FolderSource
    from neurolabel.plugin_core.data.vocabulary import Vocabulary
    from neurolabel.plugin_core.evaluation.faithfulness import collect_held_out

    _, _, held, ctx, _ = setup
    loaded = ctx.registries.model_sources.resolve(MODEL, ctx)
    source = FolderSource(held)
    extractor = ctx.registries.extractors.resolve("hooks", ctx)
    scorer = MeanColorEmbedder()
    vocabulary = Vocabulary.build(["red", "green", "blue"])
    with extractor.open(loaded, [LAYER]) as read:
        out = collect_held_out(
            source,
            range(10),
            loaded,
            read,
            {LAYER: [2, 0]},
            scorer,
            vocabulary,
            device=ctx.device,
            batch_size=4,
        )
    assert out.acts[LAYER].shape == (10, 2) and out.presence.shape == (10, 3)
    images = [source.load(i) for i in range(10)]
    expected = scorer.encode_images(images) @ scorer.encode_texts(["red", "green", "blue"]).T
    assert torch.allclose(out.presence, expected, atol=1e-6)  # cosine image . text
    inputs = torch.stack([loaded.preprocessing(i) for i in images])
    with torch.no_grad():
        maps = loaded.model.features(inputs)
    assert torch.allclose(out.acts[LAYER], maps.amax(dim=(2, 3))[:, [2, 0]], atol=1e-5)
    assert out.column("Green") == 1 and out.images[0].endswith("00.png")
