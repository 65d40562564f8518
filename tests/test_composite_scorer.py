"""The composite scorer: routing concepts to sub-scorers, and probing-set calibration."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from neurolabel.backends.color_scorer import ColorScorer
from neurolabel.backends.composite_scorer import (
    CompositeScorer,
    calibrate_columns,
    split_sub_specs,
)
from neurolabel.plugin_core.data.vocabulary import Vocabulary
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.contracts import ConceptScorer, EmbeddingScorer
from neurolabel.plugin_core.plugins.spec import Spec

RED = (255, 0, 0)


class FakeEmbeddingScorer:
    """Embeds texts by a fixed table; an image's embedding is chosen by its top-left pixel."""

    def __init__(self, name: str = "fakeemb") -> None:
        self.name = name
        self.text_calls = 0
        self.table = {"dog": [1.0, 0.0, 0.0], "car": [0.0, 1.0, 0.0], "red": [0.0, 0.0, 1.0]}

    def encode_texts(self, texts) -> Tensor:
        self.text_calls += 1
        rows = [self.table.get(t, [0.5, 0.5, 0.5]) for t in texts]
        return F.normalize(torch.tensor(rows), dim=1)

    def encode_images(self, images) -> Tensor:
        rows = []
        for image in images:
            r, g, b = image.convert("RGB").getpixel((0, 0))
            rows.append([r + 1.0, g + 1.0, b + 1.0])
        return F.normalize(torch.tensor(rows), dim=1)


class SelfCalibrating:
    """A specialist concept scorer that sees 'square' and calibrates by adding 100."""

    name = "square"

    def can_score(self, concept: str, category: str | None = None) -> bool:
        return concept == "square"

    def score_images(self, images, vocabulary) -> Tensor:
        return torch.full((len(images), len(vocabulary)), 0.5)

    def calibrate(self, scores: Tensor, vocabulary) -> Tensor:
        return scores + 100


def solid(color) -> Image.Image:
    return Image.new("RGB", (24, 24), color)


@pytest.fixture
def composite() -> CompositeScorer:
    return CompositeScorer([ColorScorer(), FakeEmbeddingScorer()])


def test_protocols(composite):
    assert isinstance(composite, ConceptScorer)
    # The pipeline must call score_images, not treat it as an embedding scorer.
    assert not isinstance(composite, EmbeddingScorer)


def test_routing_by_category_and_color_names(composite):
    vocab = Vocabulary.build(
        ["red", "dog", "sky blue", "orange", "salmon", "car"],
        categories={"orange": "object", "salmon": "color"},
    )
    assert composite.route(vocab) == [0, 1, 0, 1, 0, 1]
    assert composite.can_score("red") and composite.can_score("dog")


def test_scores_come_from_the_routed_scorer(composite):
    vocab = Vocabulary.build(["red", "dog", "car", "blue"])
    images = [solid(RED), solid((0, 255, 0))]
    got = composite.score_images(images, vocab)
    colors = ColorScorer().score_images(images, Vocabulary.build(["red", "blue"]))
    fake = composite.scorers[1]
    cosine = fake.encode_images(images) @ fake.encode_texts(["dog", "car"]).T
    assert torch.allclose(got[:, [0, 3]], colors)
    assert torch.allclose(got[:, [1, 2]], cosine)
    # Text embeddings are computed once per vocabulary, not per batch.
    composite.score_images(images, vocab)
    assert fake.text_calls == 2  # one above for `cosine`, one inside the composite


def test_zscore_calibration_properties():
    torch.manual_seed(0)
    scores = torch.rand(50, 4) * torch.tensor([1.0, 0.1, 5.0, 0.01]) + torch.tensor([0, 3, 0, 1])
    blocks = [torch.tensor([0, 1]), torch.tensor([2, 3])]
    out = calibrate_columns(scores, blocks, "zscore", std_floor=0.0)
    assert torch.allclose(out.mean(dim=0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(out.std(dim=0, unbiased=False), torch.ones(4), atol=1e-4)
    # Within a column the order of patches never changes.
    assert torch.equal(out.argsort(dim=0), scores.argsort(dim=0))
    # The floor caps the z-scores of a nearly constant column: column 3 is 100x tighter than
    # column 2, so its spread is raised to half their median.
    floored = calibrate_columns(scores, blocks, "zscore", std_floor=0.5)
    assert floored[:, 3].std(unbiased=False) < 0.1
    assert torch.allclose(floored[:, 2], out[:, 2])
    # A constant column becomes 0.
    constant = calibrate_columns(torch.ones(5, 2), [torch.tensor([0, 1])])
    assert constant.eq(0).all()


def test_block_calibration_keeps_each_scorers_concept_ranking():
    torch.manual_seed(1)
    scores = torch.rand(30, 5)
    blocks = [torch.tensor([0, 1, 2]), torch.tensor([3, 4])]
    out = calibrate_columns(scores, blocks, "block")
    for block in blocks:
        assert torch.equal(out[:, block].argsort(dim=1), scores[:, block].argsort(dim=1))
        assert out[:, block].mean().abs() < 1e-5
    assert torch.equal(calibrate_columns(scores, blocks, "none"), scores)
    with pytest.raises(ValueError, match="calibration"):
        calibrate_columns(scores, blocks, "rank")


def test_a_strongly_red_patch_ranks_red_above_a_weak_object_match():
    """Raw units disagree: cosines sit near 0.6, red shares near 0. Calibration fixes it."""
    color_scorer = ColorScorer()
    composite = CompositeScorer([color_scorer, FakeEmbeddingScorer()])
    vocab = Vocabulary.build(["red", "dog"])
    torch.manual_seed(0)
    probing = 40
    raw = torch.empty(probing, 2)
    raw[:, 0] = torch.rand(probing) * 0.05  # red: a few stray pixels in most patches
    raw[:, 1] = 0.6 + 0.05 * torch.randn(probing)  # dog: cosines of unrelated patches
    raw[0] = torch.tensor([0.5, 0.62])  # half red; only a weak dog match
    raw[1] = torch.tensor([0.0, 0.85])  # a real dog
    assert raw[0, 0] < raw[0, 1]  # raw units would call patch 0 a dog
    out = composite.calibrate(raw, vocab)
    assert out[0, 0] > out[0, 1]  # red wins for the red patch
    assert out[1, 1] > out[1, 0]  # dog wins for the dog patch


def test_unseen_concepts_and_self_calibrating_sub_scorers():
    composite = CompositeScorer([ColorScorer(), SelfCalibrating()])  # no generalist
    vocab = Vocabulary.build(["red", "dog", "square"])
    assert composite.route(vocab) == [0, None, 1]
    assert not composite.can_score("dog")
    images = [solid(RED), solid((0, 0, 255)), solid((250, 10, 10))]
    raw = composite.score_images(images, vocab)
    assert raw[:, 1].eq(0).all() and raw[:, 2].eq(0.5).all()
    out = CompositeScorer([ColorScorer(), SelfCalibrating()], calibration="none").calibrate(
        raw, vocab
    )
    assert out[:, 2].eq(100.5).all()  # the sub-scorer's own calibration ran
    out = composite.calibrate(raw, vocab)
    assert out[:, 1].eq(out[:, [0, 2]].min()).all()  # unseen concepts never win


def test_composite_validation():
    with pytest.raises(SpecError, match="at most one"):
        CompositeScorer([FakeEmbeddingScorer("a"), FakeEmbeddingScorer("b")])
    with pytest.raises(SpecError, match="at least one"):
        CompositeScorer([])
    with pytest.raises(SpecError, match="neither"):
        CompositeScorer([object()])
    with pytest.raises(SpecError, match="calibrate"):
        CompositeScorer([ColorScorer()], calibration="rank")


def test_split_sub_specs():
    subs = split_sub_specs(
        Spec.parse(
            "composite:color:basic+classifier:packaged:efficientnet_lite1"
            "?calibrate=block&color.delta_e=9&2.top=3&classifier.tta=true"
        )
    )
    assert [str(s) for s in subs] == [
        "color:basic?delta_e=9",
        "classifier:packaged:efficientnet_lite1?top=3&tta=true",
    ]
    # A Spec built in code may carry sub-spec options inline.
    inline = split_sub_specs(Spec("composite", "color?delta_e=5+fakeemb"))
    assert [str(s) for s in inline] == ["color?delta_e=5", "fakeemb"]
    for text, match in [
        ("composite", "needs"),
        ("composite:color++x", "empty"),
        ("composite:color?delta_e=3", "Unknown option"),
        ("composite:color?clip.top=3", "names no sub-scorer"),
        ("composite:color?3.top=3", "names sub-scorer 3"),
    ]:
        with pytest.raises(SpecError, match=match):
            split_sub_specs(Spec.parse(text))


def test_factory_resolves_sub_scorers_through_the_registry(ctx):
    ctx.registries.scorers.add("fakeemb", lambda spec, c: FakeEmbeddingScorer(), plugin="test")
    scorer = ctx.registries.scorers.resolve(
        "composite:color:basic+fakeemb?color.delta_e=12&calibrate=block&std_floor=0.2", ctx
    )
    assert isinstance(scorer, CompositeScorer)
    assert [type(s).__name__ for s in scorer.scorers] == ["ColorScorer", "FakeEmbeddingScorer"]
    assert scorer.scorers[0].delta_e == 12.0 and scorer.scorers[0].palettes == ("basic",)
    assert scorer.calibration == "block" and scorer.std_floor == 0.2
    with pytest.raises(SpecError):
        ctx.registries.scorers.resolve("composite:color?calibrate=rank", ctx)


def test_real_color_and_classifier_composite(ctx):
    if "packaged" not in ctx.registries.model_sources:
        pytest.skip("the 'packaged' model source (adapters/packaged_models.py) is not registered")
    scorer = ctx.registries.scorers.resolve(
        "composite:color+classifier:packaged:efficientnet_lite0?classifier.top=5", ctx
    )
    vocab = Vocabulary.build(["red", "blue", "dog", "car"], categories={"red": "color"})
    images = [solid(RED), solid((0, 0, 255)), Image.new("RGB", (64, 48), (120, 90, 60))]
    raw = scorer.score_images(images, vocab)
    assert raw.shape == (3, 4) and torch.isfinite(raw).all()
    assert raw[0, 0] == 1.0 and raw[1, 1] == 1.0 and raw[2, :2].eq(0).all()
    assert raw[:, 2:].abs().le(1.0 + 1e-5).all()  # cosines
    out = scorer.calibrate(raw, vocab)
    assert out.shape == (3, 4) and out[0].argmax() == 0 and out[1].argmax() == 1
