"""The color scorer: pixel shares within a CIELAB distance of named colors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neurolabel.backends.color_scorer import (
    BASIC_COLORS,
    ColorScorer,
    build_color_scorer,
    color_key,
    color_table,
    is_color_word,
)
from neurolabel.plugin_core.data.vocabulary import Vocabulary
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.contracts import ConceptScorer, EmbeddingScorer
from neurolabel.plugin_core.plugins.spec import Spec

RED = (255, 0, 0)
BLUE = (0, 0, 255)


def solid(color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> Image.Image:
    return Image.new("RGB", size, color)


def halves(left: tuple[int, int, int], right: tuple[int, int, int], size=(80, 40)) -> Image.Image:
    array = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    array[:, : size[0] // 2] = left
    array[:, size[0] // 2 :] = right
    return Image.fromarray(array, "RGB")


@pytest.fixture(scope="module")
def scorer() -> ColorScorer:
    return ColorScorer()


def scores_of(scorer: ColorScorer, image: Image.Image, concepts: list[str], **categories: str):
    vocab = Vocabulary.build(concepts, categories=categories or None)
    return dict(zip(vocab.concepts, scorer.score_images([image], vocab)[0].tolist(), strict=True))


def test_is_a_concept_scorer_not_an_embedding_scorer(scorer):
    assert isinstance(scorer, ConceptScorer)
    assert not isinstance(scorer, EmbeddingScorer)


def test_pure_red_is_red_not_blue(scorer):
    got = scores_of(scorer, solid(RED), ["red", "blue", "orange", "green"])
    assert got["red"] == pytest.approx(1.0)
    assert got["blue"] == 0.0 and got["orange"] == 0.0 and got["green"] == 0.0


def test_half_red_half_blue_scores_half_each(scorer):
    got = scores_of(scorer, halves(RED, BLUE), ["red", "blue", "yellow"])
    assert got["red"] == pytest.approx(0.5, abs=0.03)
    assert got["blue"] == pytest.approx(0.5, abs=0.03)
    assert got["yellow"] == 0.0


def test_large_images_are_downsampled_without_changing_shares(scorer):
    got = scores_of(scorer, halves(RED, BLUE, size=(640, 480)), ["red", "blue"])
    assert got["red"] == pytest.approx(0.5, abs=0.03)
    assert got["blue"] == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((0, 0, 0), "black"),
        ((255, 255, 255), "white"),
        ((128, 128, 128), "gray"),
        ((128, 128, 128), "grey"),
        ((0, 128, 0), "green"),
        ((255, 165, 0), "orange"),
        ((255, 255, 0), "yellow"),
        ((128, 0, 128), "purple"),
        ((255, 192, 203), "pink"),
        ((139, 69, 19), "brown"),
        ((0, 0, 139), "blue"),  # dark blue still counts as blue
    ],
)
def test_each_basic_color_recognizes_its_own_swatch(scorer, rgb, name):
    got = scores_of(scorer, solid(rgb), list(BASIC_COLORS) + ["grey"])
    assert got[name] == pytest.approx(1.0)
    # A swatch belongs to few basic terms: basic colors are regions, not the whole space.
    assert sum(v > 0.5 for v in got.values()) <= 3


def test_css4_and_xkcd_names(scorer):
    image = solid((135, 206, 235))  # CSS4 skyblue
    got = scores_of(
        scorer, image, ["sky blue", "skyblue", "xkcd:sky blue", "crimson", "navy blue", "dog"]
    )
    assert got["sky blue"] == 1.0 and got["skyblue"] == 1.0 and got["xkcd:sky blue"] == 1.0
    assert got["crimson"] == 0.0 and got["navy blue"] == 0.0 and got["dog"] == 0.0
    slate = scores_of(scorer, solid((47, 79, 79)), ["dark slate gray", "darkslategray"])
    assert slate == {"dark slate gray": 1.0, "darkslategray": 1.0}
    assert scores_of(scorer, solid((220, 20, 60)), ["crimson"])["crimson"] == 1.0


def test_color_names_normalize():
    assert color_key("xkcd:Blue/Green") == "blue green"
    assert color_key("dark-red") == "dark red"
    table = color_table()
    assert "sky blue" in table and "darkslategray" in table and len(table) > 1000
    assert is_color_word("reddish brown") and not is_color_word("banana")


def test_can_score_uses_categories(scorer):
    assert scorer.can_score("red") and scorer.can_score("Sky-Blue")
    assert not scorer.can_score("dog")
    assert not scorer.can_score("orange", "object")  # the fruit
    # Survey names that are objects first are claimed only when tagged as colors.
    assert not scorer.can_score("salmon") and scorer.can_score("salmon", "color")
    got = scores_of(scorer, solid((250, 128, 114)), ["salmon"])  # CSS4 salmon
    assert got["salmon"] == 0.0
    got = scores_of(scorer, solid((250, 128, 114)), ["salmon"], salmon="color")
    assert got["salmon"] == 1.0


def test_delta_e_controls_the_radius():
    dark_red = solid((200, 20, 20))  # ΔE76 ≈ 27 from CSS4 red
    tight = ColorScorer(delta_e=15.0, palettes=["css4"])
    loose = ColorScorer(delta_e=30.0, palettes=["css4"])
    assert scores_of(tight, dark_red, ["red"])["red"] == 0.0
    assert scores_of(loose, dark_red, ["red"])["red"] == 1.0


def test_ciede2000_agrees_on_clear_cases():
    scorer = ColorScorer(metric="ciede2000")
    got = scores_of(scorer, halves(RED, BLUE), ["red", "blue", "green"])
    assert got["red"] == pytest.approx(0.5, abs=0.03)
    assert got["blue"] == pytest.approx(0.5, abs=0.03)
    assert got["green"] == 0.0


def test_batches_and_edge_cases(scorer):
    vocab = Vocabulary.build(["red", "dog", "blue"])
    images = [solid(RED), solid(BLUE), solid(RED, (1, 1)), solid(BLUE).convert("L").convert("RGB")]
    out = scorer.score_images(images, vocab)
    assert out.shape == (4, 3) and out.dtype == torch.float32
    assert out[:, 1].eq(0).all()
    assert out[0, 0] == 1 and out[1, 2] == 1 and out[2, 0] == 1
    assert scorer.score_images([], vocab).shape == (0, 3)
    no_colors = Vocabulary.build(["dog", "cat"])
    assert scorer.score_images(images, no_colors).eq(0).all()


def test_factory_and_registry(ctx):
    scorer = ctx.registries.scorers.resolve("color:basic?delta_e=10&metric=cie76&size=32", ctx)
    assert isinstance(scorer, ColorScorer)
    assert scorer.delta_e == 10.0 and scorer.size == 32 and scorer.palettes == ("basic",)
    assert not scorer.can_score("sky blue")  # not in the basic palette
    assert build_color_scorer(Spec.parse("color")).palettes == ("basic", "css4", "xkcd")
    with pytest.raises(SpecError, match="Allowed"):
        build_color_scorer(Spec.parse("color?radius=3"))
    with pytest.raises(SpecError, match="palette"):
        build_color_scorer(Spec.parse("color:rainbow"))
    with pytest.raises(SpecError, match="metric"):
        build_color_scorer(Spec.parse("color?metric=cie94"))
    with pytest.raises(SpecError, match="delta_e"):
        build_color_scorer(Spec.parse("color?delta_e=0"))
