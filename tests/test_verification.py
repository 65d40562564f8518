"""Verified descriptions: the propose-test-refine loop end to end, against a local server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from llm_server import ChatServer, user_text
from test_unit_character import SMALL, Planted, colored_squares

from neurolabel import LabelingResult, NeuronLabeler
from neurolabel.plugin_core.errors import InvalidSettingError, NeurolabelError
from neurolabel.plugin_core.pipeline.settings import LabelingSettings
from neurolabel.plugin_core.pipeline.verification import combined_score, fisher_z
from neurolabel.plugin_core.plugins.resolve import build_context
from neurolabel.plugin_core.reporting.terminal import verified_phrase

#: Texts the tiny scorer below can embed: color words on the RGB axes.
WORDS = {
    "red": (1.0, 0.0, 0.0),
    "crimson": (0.95, 0.05, 0.1),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "gray": (0.58, 0.58, 0.58),
    "yellow": (0.7, 0.7, 0.0),
}


class RGBScorer:
    """An embedding scorer on three axes: an image's mean saturation toward red, green or
    blue; a text's fixed direction (WORDS)."""

    name = "rgb"

    def encode_images(self, images):
        rows = []
        for image in images:
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
            excess = np.clip(rgb - rgb.mean(axis=2, keepdims=True), 0, None).mean(axis=(0, 1))
            rows.append(excess + 1e-3)
        return torch.nn.functional.normalize(torch.tensor(np.array(rows)), dim=1)

    def encode_texts(self, texts):
        return torch.nn.functional.normalize(
            torch.tensor([WORDS.get(t, (0.3, 0.3, 0.3)) for t in texts]), dim=1
        )


def proposer(body) -> str:
    """Round 1 proposes what the scorer ranks last (bad guesses); once it sees scores, it
    proposes the scorer's first concept and a synonym."""
    text = user_text(body)
    ranked = re.search(r"ranks these concepts first for it: ([^.]+)\.", text)
    if "tested so far" not in text:
        concepts = ranked.group(1).split(", ") if ranked else ["gray"]
        return json.dumps({"candidates": [concepts[-1], "yellow"]})
    assert "r = " in text and "z = " in text  # the scores are fed back
    assert "(the scorer's label)" in text  # with the score to beat
    return json.dumps({"candidates": ["red", "crimson", "blue"]})


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-FAKE")


def run(server, ctx, rounds=2, extra="", **options):
    spec = (
        f"litellm:openai/whatever?api_base={server.url}&retries=1&backoff=0.01"
        f"&verify={rounds}&propose=3{extra}"
    )
    return planted_labeler(ctx, describer=spec, **options).run(colored_squares(90))


def planted_labeler(ctx, **options):
    """The planted red/either/blue units, seen by :class:`RGBScorer` (with a label test)."""
    return NeuronLabeler(
        Planted(),
        ["units"],
        scorer=RGBScorer(),
        vocabulary=["red", "green", "blue", "gray", "yellow"],
        top_k=8,
        sample_size=60,
        device="cpu",
        progress=False,
        context=ctx,
        preprocessing=SMALL,
        **options,
    )


def test_candidates_are_tested_refined_and_the_best_score_wins(tmp_path):
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    with ChatServer(proposer) as server:
        result = run(server, ctx)
        sent = len(server.requests)
    red = result.explanation("units", 0)
    record = red.verified
    # the verification split: 20 % of the 90 images, set aside before the exemplar search
    split = result.dataset["verification"]
    assert record["images"] == split["count"] == 18 and result.dataset["num_images"] == 72
    for unit in range(4):
        shown = {e.image for e in result.explanation("units", unit).exemplars}
        assert shown and not shown & set(split["images"])
    assert record["rounds"] == 2
    assert record["description"] in ("red", "crimson") and red.description == record["description"]
    tested = [
        [record["description"], 0, record["heldout_r"], record["exemplar_z"], record["score"]]
    ]
    tested += record["rejected"]
    for _, _, r, z, score in tested:  # both tests, combined by Stouffer's method
        assert score == combined_score(z, fisher_z(r, 18))
    assert record["score"] == max(c[4] for c in tested)
    scorers_own = [c for c in tested if c[1] == 0]  # the scorer's label competed as round 0
    assert [c[0] for c in scorers_own] == [red.concepts[0][0]]
    rejected = {c[0]: c for c in record["rejected"]}
    # blue on the red unit fails both tests; the off-target round-1 guesses score lower
    assert rejected["blue"][2] < 0 and rejected["blue"][3] < 0 and rejected["blue"][1] == 2
    assert rejected["yellow"][4] < record["score"] / 2
    # the description is the tested winner; the scorer's ranking and its p-values stay aligned
    assert red.score == record["score"] and red.similarity == record["similarity"] > 0.5
    assert red.p_values is not None and len(red.p_values) == len(red.concepts)
    blue = result.explanation("units", 3)
    assert blue.verified["description"] == "blue"  # round 2's third candidate
    result.save(tmp_path / "out")
    again = LabelingResult.load(tmp_path / "out" / "result.json").explanation("units", 0)
    assert again.description == red.description and again.verified == record
    assert sent == 2 * 4  # two rounds for each of the four units
    # a rerun answers every request from the cache: nothing is sent
    with ChatServer(proposer) as server:
        again = run(server, ctx)
        assert server.requests == []
    rerun = dict(again.explanation("units", 0).verified)
    assert rerun.pop("proposer") != record.pop("proposer")  # another server port...
    assert rerun == record  # ...the same answers, from the cache


def test_a_budget_stops_refining_and_failures_are_retried_or_skipped(tmp_path, monkeypatch):
    from neurolabel.backends.vlm_describer import LiteLLMDescriber

    # every round of uncached requests is priced at $0.60 against a $1 budget: round 1 is
    # sent, round 2 would pass the budget and is not
    monkeypatch.setattr(LiteLLMDescriber, "round_cost", lambda self, fresh: 0.6 if fresh else 0)
    monkeypatch.setattr(LiteLLMDescriber, "__init__", _with_budget(LiteLLMDescriber.__init__, 1.0))
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")

    def flaky(body):
        if "ranks these concepts first for it: blue" in user_text(body):
            return '{"candidates": ['  # a cut-off answer: no candidate for that unit
        return proposer(body)

    with ChatServer(flaky) as server:
        server.plan = ["429"]  # the first request is rate-limited, then retried
        result = run(server, ctx, rounds=3)
        assert len(server.requests) == 4 + 1  # round 1 for four units, plus the retry
    red = result.explanation("units", 0).verified
    assert red["rounds"] == 1 and red["stopped"] == "budget, before round 2"
    assert result.explanation("units", 3).verified is None  # nothing usable was proposed


def _with_budget(init, budget):
    def patched(self, spec, ctx):
        init(self, spec, ctx)
        self.budget = budget

    return patched


def test_text_only_models_and_the_evaluation_holdout_stay_apart(tmp_path):
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    with ChatServer(proposer) as server:
        result = run(server, ctx, extra="&vision=false", holdout=0.2, verify_split=0.25)
        bodies = list(server.requests)
    assert bodies and all("image_url" not in json.dumps(body) for body in bodies)
    assert all("no image is shown" in user_text(body) for body in bodies)
    # instead of the grid, each exemplar in the scorer's words: the red unit's are red
    first = next(user_text(b) for b in bodies if "Neuron 0 of layer" in user_text(b))
    captions = first.split("words that fit it best: ")[1].split(". ")[0].split("; ")
    assert len(captions) == 8 and captions.count("red") >= 6
    record = result.explanation("units", 0).verified
    assert record["saw_images"] is False and record["description"] in ("red", "crimson")
    evaluation, verification = result.dataset["holdout"], result.dataset["verification"]
    assert evaluation["count"] == 18 and verification["count"] == 18  # 25 % of the other 72
    assert not set(evaluation["images"]) & set(verification["images"])
    assert result.dataset["num_images"] == 54


def test_a_verification_split_outside_zero_to_one_is_refused():
    with pytest.raises(InvalidSettingError, match="verify_split=1.5"):
        LabelingSettings(verify_split=1.5)


def test_poor_proposals_never_replace_a_better_scorer_label(tmp_path):
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    with ChatServer(lambda body: json.dumps({"candidates": ["gray", "yellow"]})) as server:
        result = run(server, ctx, rounds=1)
    red = result.explanation("units", 0)
    assert red.verified["kept"] == "scorer" and red.description == red.concepts[0][0] == "red"
    assert {c[0] for c in red.verified["rejected"]} == {"gray", "yellow"}
    assert "no proposed candidate tested better than the scorer's label" in verified_phrase(red)


def test_a_scorer_without_a_text_side_and_a_stray_split_are_refused(tmp_path, capsys):
    from cli_runner import run as run_cli
    from test_vlm_describer import cli_args, describer_spec

    with ChatServer(proposer) as server:
        spec = describer_spec(server, "verify=2")
        with pytest.raises(NeurolabelError, match="'color' does not.*classifier:packaged"):
            NeuronLabeler(
                Planted(), ["units"], scorer="color", describer=spec, context=build_context("cpu")
            ).gather_evidence(colored_squares(30))
    images = tmp_path / "imgs"
    images.mkdir()
    for i, image in enumerate(colored_squares(4)):
        image.save(images / f"{i}.png")
    code, _, err = run_cli([*cli_args(images, tmp_path / "out"), "--verify-split", "0.3"], capsys)
    assert code == 2 and "--verify-split 0.3 sets images aside for verified descriptions" in (
        " ".join(err.split())
    )


def test_an_unreadable_verification_image_is_skipped_and_reported(tmp_path):
    from neurolabel.plugin_core.data.holdout import split_verification
    from neurolabel.plugin_core.data.images import as_image_source

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(colored_squares(60)):
        image.save(folder / f"{i:02d}.png")
    (folder / "zz_broken.png").write_bytes(b"not a png at all")
    source = as_image_source(folder)
    # the seed whose verification split holds the broken file
    seed = next(
        s
        for s in range(20)
        if any("zz_broken" in v.describe(i) for v in [split_verification(source, 0.3, s)[1]]
               for i in range(len(v)))
    )  # fmt: skip
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    with ChatServer(proposer) as server:
        spec = f"litellm:openai/x?api_base={server.url}&retries=1&verify=1&propose=3"
        result = planted_labeler(ctx, describer=spec, verify_split=0.3, holdout_seed=seed).run(
            folder
        )
    split = result.dataset["verification"]
    assert [Path(s["item"]).name for s in split["skipped"]] == ["zz_broken.png"]
    assert "zz_broken" not in str(result.dataset["skipped"])
    record = result.explanation("units", 0).verified
    assert record["images"] == split["count"] - 1  # tested on the readable ones
