"""CLIP-Dissect as published: the reference mode against the formulas of its paper and code.

The expected values are re-derived here, one neuron and one image at a time in NumPy, from
the definitions of CLIP-Dissect's similarity functions (Oikarinen & Weng, ICLR 2023):
soft-WPMI, WPMI and cos^3 over ``[images, neurons]`` activations and ``[images, concepts]``
scores, with the authors' default options.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neurolabel import LabelingResult, NeuronLabeler
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.pipeline.aggregation import get_aggregation
from neurolabel.plugin_core.pipeline.clip_dissect import clip_dissect_scores
from neurolabel.plugin_core.pipeline.image_sample import ImageSample


def _softmax(row: np.ndarray) -> np.ndarray:
    e = np.exp(row - row.max())
    return e / e.sum()


def _top_images(acts: np.ndarray, neuron: int, k: int) -> list[int]:
    # highest first; equal activations in image order
    return sorted(range(len(acts)), key=lambda i: (-acts[i, neuron], i))[:k]


def _pmi(given: np.ndarray, lam: float) -> np.ndarray:
    neurons = given.shape[0]
    prior = np.array(
        [
            math.log(sum(math.exp(given[j, v]) for j in range(neurons)) / neurons)
            for v in range(given.shape[1])
        ]
    )
    return given - lam * prior


def expected_soft_wpmi(acts, sims, top_k=100, a=10.0, lam=1.0, p0=0.998, p1=0.97, eps=1e-7):
    probs = np.stack([_softmax(a * s) for s in sims])
    k = min(top_k, len(acts))
    given = np.zeros((acts.shape[1], sims.shape[1]))
    for neuron in range(acts.shape[1]):
        for rank, image in enumerate(_top_images(acts, neuron, k)):
            inside = p0 - rank / top_k * (p0 - p1)
            for concept in range(sims.shape[1]):
                given[neuron, concept] += math.log(1 + inside * (probs[image, concept] - 1) + eps)
    return _pmi(given, lam)


def expected_wpmi(acts, sims, top_k=28, a=2.0, lam=0.6, eps=1e-7):
    probs = np.stack([_softmax(a * s) for s in sims])
    given = np.zeros((acts.shape[1], sims.shape[1]))
    for neuron in range(acts.shape[1]):
        for image in _top_images(acts, neuron, min(top_k, len(acts))):
            given[neuron] += np.log(probs[image] + eps)
    return _pmi(given, lam)


def expected_cos_cubed(acts, sims, min_norm=1e-3):
    out = np.zeros((acts.shape[1], sims.shape[1]))
    for neuron in range(acts.shape[1]):
        t = (acts[:, neuron] - acts[:, neuron].mean()) ** 3
        t = t / max(np.linalg.norm(t), min_norm)
        for concept in range(sims.shape[1]):
            s = (sims[:, concept] - sims[:, concept].mean()) ** 3
            s = s / max(np.linalg.norm(s), min_norm)
            out[neuron, concept] = float(t @ s)
    return out


@pytest.fixture(scope="module")
def sample():
    g = torch.Generator().manual_seed(3)
    acts = torch.randn(140, 7, generator=g).double()  # more images than soft-WPMI's top 100
    sims = (0.2 + 0.1 * torch.randn(140, 9, generator=g)).double()
    return acts, sims


@pytest.mark.parametrize(
    ("function", "expected"),
    [("soft-wpmi", expected_soft_wpmi), ("wpmi", expected_wpmi), ("cos-cubed", expected_cos_cubed)],
)
def test_each_function_matches_the_published_formula(sample, function, expected):
    acts, sims = sample
    ours = clip_dissect_scores(ImageSample(acts.float(), sims.float()), function)
    want = expected(acts.numpy(), sims.numpy())
    assert ours.shape == want.shape
    assert np.abs(ours.double().numpy() - want).max() < 2e-3 * max(1.0, np.abs(want).max())
    assert (ours.argmax(dim=1).numpy() == want.argmax(axis=1)).all()


def test_factored_scores_give_the_same_labels(sample):
    acts, _ = sample
    g = torch.Generator().manual_seed(4)
    images = torch.nn.functional.normalize(torch.randn(140, 16, generator=g), dim=1)
    concepts = torch.nn.functional.normalize(torch.randn(9, 16, generator=g), dim=1)
    factored = ImageSample(acts.float(), image_embeddings=images, concept_embeddings=concepts)
    dense = ImageSample(acts.float(), images @ concepts.T)
    for function in ("soft-wpmi", "wpmi", "cos-cubed"):
        assert torch.allclose(
            clip_dissect_scores(factored, function), clip_dissect_scores(dense, function), atol=1e-4
        )


def test_the_mode_takes_no_options_and_names_its_functions():
    assert get_aggregation("clip-dissect").name == "clip-dissect:soft-wpmi"
    assert get_aggregation("clip-dissect:cos-cubed").whole_layer
    with pytest.raises(SpecError, match="takes no options"):
        get_aggregation("clip-dissect:soft-wpmi?top_k=10")
    with pytest.raises(NeurolabelError, match="soft-wpmi, wpmi, cos-cubed"):
        get_aggregation("clip-dissect:max")


class MeanColor:
    """A concept scorer whose score of concept v is a fixed projection of the image's
    mean color: known, image-dependent scores."""

    name = "mean-color"

    def __init__(self) -> None:
        self.weights = torch.tensor(
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.5, 0.5, 0.0], [-1.0, 0, 1]]
        )

    def score_images(self, images, vocabulary):
        means = torch.tensor(
            np.stack([np.asarray(i.convert("RGB"), float).mean((0, 1)) for i in images]) / 255.0
        ).float()
        return means @ self.weights[: len(vocabulary)].T


def _images(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        array = np.zeros((24, 24, 3), np.uint8)
        array[:] = rng.integers(0, 255, 3)
        y, x = rng.integers(0, 16, 2)
        array[y : y + 8, x : x + 8] = rng.integers(0, 255, 3)  # a spot: mean != max
        out.append(Image.fromarray(array))
    return out


def test_the_labeler_gathers_what_the_published_method_sees(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1))
    images = _images(120)
    vocabulary = ["red", "green", "blue", "yellow", "violet"]
    labeler = NeuronLabeler(
        model,
        ["1"],
        scorer=MeanColor(),
        vocabulary=vocabulary,
        units=[1, 4],
        aggregation="clip-dissect:soft-wpmi",
        top_k=5,
        sample_size=10,
        device="cpu",
        progress=False,
        cache=False,
    )
    # The published settings replace what would change the method.
    assert labeler.settings.activation == "mean" and labeler.settings.scoring == "images"
    evidence = labeler.gather_evidence(images)
    assert len(evidence.sample_ids) == 120  # every image, whatever sample_size said
    acts = evidence.sample_acts["1"]
    assert acts.shape == (120, 6)  # every unit of the layer, not only the explained two
    whole = evidence.scores.rows_for([(i, None) for i in range(120)])
    full = clip_dissect_scores(ImageSample(acts, whole), "soft-wpmi")
    result = labeler.explain(evidence)
    for unit in (1, 4):
        neuron = result.explanation("1", unit)
        ranked = [vocabulary[i] for i in full[unit].argsort(descending=True).tolist()]
        assert [c for c, _ in neuron.concepts] == ranked
        assert neuron.concepts[0][1] == pytest.approx(float(full[unit].max()), rel=1e-5)
    # The prior spans the whole layer: the explained units alone would shift the scores.
    alone = clip_dissect_scores(ImageSample(acts[:, [1, 4]], whole), "soft-wpmi")
    assert not torch.allclose(alone, full[[1, 4]])
    assert result.settings["clip_dissect"]["options"]["top_k"] == 100
    assert result.settings["aggregation"] == "clip-dissect:soft-wpmi"


def test_evidence_of_a_default_run_is_refused_with_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    labeler = NeuronLabeler(
        model,
        ["0"],
        scorer=MeanColor(),
        vocabulary=["red", "green"],
        top_k=3,
        device="cpu",
        progress=False,
        cache=False,
    )
    evidence = labeler.gather_evidence(_images(12), with_sample=True)
    with pytest.raises(NeurolabelError, match="spatial max; CLIP-Dissect averages"):
        labeler.explain(evidence, "clip-dissect:wpmi")


def test_the_cli_runs_the_published_mode_and_records_it(tmp_path, capsys):
    import json as _json

    from cli_runner import run
    from synthetic import square_image

    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(24):
        color = (230, 20, 20) if i % 2 else (20, 20, 230)
        square_image((80, 64), (10, 10, 10 + i, 10 + i), color, seed=i).save(images / f"{i}.png")
    out = tmp_path / "out"
    code, printed, err = run(
        [
            "explain",
            "python:synthetic:ColorDetector?resize=none&size=64",
            "--layer",
            "fc",
            "--images",
            str(images),
            "--scorer",
            "color",
            "--vocab",
            "colors",
            "--top-k",
            "3",
            "--aggregation",
            "clip-dissect:cos-cubed",
            "--out",
            str(out),
            "--no-html",
            "--metric",
            "layer-profile",
        ],
        capsys,
    )
    assert code == 0, err
    assert "Significant labels (p <= 0.05" in " ".join(printed.split())
    assert "layer-profile" in printed  # the figures of --metric are shown, not only saved
    assert "CLIP-Dissect as published scores every probing image whole" in " ".join(err.split())
    saved = _json.loads((out / "result.json").read_text())
    assert saved["settings"]["activation"] == "mean" and saved["settings"]["sample_size"] == 24
    assert saved["settings"]["clip_dissect"]["function"] == "cos-cubed"
    result = LabelingResult.load(out)
    assert result.explanation("fc", 0).concepts[0][0] == "red"
    assert result.explanation("fc", 1).concepts[0][0] == "blue"
