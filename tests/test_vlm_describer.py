"""The ``litellm:`` describer and LLM summaries, end to end through a local VLM server.

The server really looks at the grid image it receives: it answers with the color of the
saturated pixels, so a right answer proves the patches reached it intact.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run
from llm_server import ChatServer, request_image, user_text
from PIL import Image
from rich.console import Console
from synthetic import square_image

from neurolabel import hookimpl
from neurolabel.backends.llm_summary import first_sentence
from neurolabel.backends.vlm_describer import LiteLLMDescriber, compose_grid
from neurolabel.plugin_core.data.result import LabelingResult
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.pipeline.describe import combine_rankings
from neurolabel.plugin_core.pipeline.labeler import NeuronLabeler
from neurolabel.plugin_core.plugins.manager import get_plugins, pm
from neurolabel.plugin_core.plugins.resolve import (
    build_context,
    resolve_describer,
    resolve_summarizer,
)
from neurolabel.plugin_core.plugins.spec import Spec
from neurolabel.plugin_core.reporting.html_report import write_html_report
from neurolabel.plugin_core.reporting.terminal import neuron_report

MODEL = "python:synthetic:ColorDetector?resize=none&size=64"
TESTS = Path(__file__).resolve().parent
FAKE_KEY = "sk-test-FAKE0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(6):
        color = (230, 20, 20) if i % 2 else (20, 20, 230)
        square_image((80, 64), (10, 10, 50, 50), color, seed=i).save(images / f"{i}.png")
    return images


def dominant_color(image: Image.Image) -> str:
    rgb = np.asarray(image, dtype=np.int32)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    red = int(((r > g + 80) & (r > b + 80)).sum())
    blue = int(((b > r + 80) & (b > g + 80)).sum())
    return "red" if red > blue else "blue"


def vlm(body) -> str:
    """A VLM that names the color it sees, or an LLM that writes a summary."""
    image = request_image(body)
    if image is None:  # a summary request
        top = re.search(r"better\): ([a-z ]+) \(", user_text(body)).group(1)
        return f'Summary: "Responds to {top} squares." It ignores gray.'
    color = dominant_color(image)
    candidates = re.findall(r"^- (.+)$", user_text(body), re.MULTILINE)
    if candidates:  # constrained: pick from the list (and say one thing that is not in it)
        return json.dumps({"labels": ["banana", color, candidates[-1]]})
    return json.dumps({"labels": [f"{color} square", color]})


def describer_spec(server, options="") -> str:
    spec = f"litellm:openai/whatever?api_base={server.url}&retries=1&backoff=0.01&{options}"
    return spec.rstrip("&")


def label(folder, ctx, **kwargs):
    labeler = NeuronLabeler(
        MODEL,
        layers=["features.1"],
        scorer="color",
        vocabulary="colors",
        top_k=3,
        device="cpu",
        progress=False,
        context=ctx,
        **kwargs,
    )
    return labeler.run(folder)


def test_free_descriptions_and_summaries_end_to_end(folder, ctx, tmp_path):
    with ChatServer(vlm) as server:
        spec = describer_spec(server)
        summarize = f"openai/whatever?api_base={server.url}"
        result = label(folder, ctx, describer=spec, summarize=summarize)
        grids = [request_image(b) for b in server.requests if request_image(b) is not None]
        assert len(grids) == 2  # units 0 and 1; the dead unit 2 is not sent
        assert all(g.size == (2 * 192 + 6, 2 * 192 + 6) for g in grids)  # 3 patches, 2x2
        assert server.requests[0]["response_format"] == {"type": "json_object"}
        red, blue, dead = (result.explanation("features.1", u) for u in range(3))
        assert red.described == [["red square", 1.0], ["red", 0.5]]
        assert red.description == "red" and blue.description == "blue"
        assert red.concepts[1][0] == "red square"  # a free label outside the vocabulary
        assert red.similarity is not None
        assert red.summary == "Responds to red squares." and blue.summary.endswith("blue squares.")
        assert dead.dead and dead.described is None and dead.summary is None
        assert result.settings["describer"] == spec
        assert result.settings["summarizer"] == summarize
        sent = len(server.requests)
        again = label(folder, build_context("cpu"), describer=spec, summarize=summarize)
        assert len(server.requests) == sent  # all cached
        assert again.explanation("features.1", 0).summary == red.summary
    path = result.save(tmp_path / "out")
    loaded = LabelingResult.load(path)
    assert loaded.explanation("features.1", 0).described == red.described
    assert loaded.explanation("features.1", 1).summary == blue.summary
    assert FAKE_KEY not in path.read_text()
    console = Console(record=True, width=120)
    console.print(neuron_report(loaded, "features.1", 0, folder=path.parent))
    text = console.export_text()
    assert "Responds to red squares." in text and "describer: red square, red" in text
    html = write_html_report(loaded, tmp_path / "report.html", folder=path.parent).read_text()
    assert '"vlm":["red square","red"]' in html


def test_constrained_mode_ranks_the_scorers_candidates(folder, ctx):
    with ChatServer(vlm) as server:
        spec = describer_spec(server, "mode=constrained&candidates=5&weight=1")
        result = label(folder, ctx, describer=spec, num_concepts=3)
        prompts = [user_text(b) for b in server.requests]
    assert all(len(re.findall(r"^- ", p, re.MULTILINE)) == 5 for p in prompts)
    red = result.explanation("features.1", 0)
    assert "banana" not in [c for c, _ in red.described]  # not a candidate: dropped
    assert red.described[0][0] == "red"
    assert [c for c, _ in red.concepts][0] == "red" and len(red.concepts) == 2  # weight=1


def test_a_truncated_answer_keeps_the_scorers_ranking(folder, ctx):
    with ChatServer(vlm) as server:
        server.plan = ["truncate:5", "truncate:5"]
        result = label(folder, ctx, describer=describer_spec(server))
    red = result.explanation("features.1", 0)
    assert red.described == [] and red.description == "red"


def test_describer_options_and_locality(ctx):
    local = resolve_describer("litellm:hosted_vllm/qwen?api_base=http://localhost:8000/v1", ctx)
    assert not local.remote and local.num_candidates == 0  # free mode offers no candidates
    assert resolve_describer("litellm:anthropic/claude-3-5-sonnet-latest", ctx).remote
    with pytest.raises(SpecError, match="mode must be free or constrained"):
        resolve_describer("litellm:ollama/llava?mode=both", ctx)
    with pytest.raises(SpecError, match="weight must be between 0 and 1"):
        resolve_describer("litellm:ollama/llava?weight=2", ctx)
    with pytest.raises(NeurolabelError, match="is not a describer"):
        resolve_describer("color", ctx)
    describer = LiteLLMDescriber(Spec.parse("litellm:ollama/llava?mode=constrained"), ctx)
    assert describer.parse('{"labels": ["Red", "nope", "blue"]}', ["red", "blue"]) == [
        ("red", 1.0),
        ("blue", 0.5),
    ]
    assert compose_grid([Image.new("RGB", (10, 40))], cell=32).size == (32, 32)


def test_rank_fusion_weights():
    scored = [["a", 3.0], ["b", 2.0], ["c", 1.0]]
    described = [["c", 1.0], ["d", 0.5]]
    assert [c for c, _ in combine_rankings(scored, described, 0.0)] == ["a", "b", "c"]
    assert [c for c, _ in combine_rankings(scored, described, 1.0)] == ["c", "d"]
    assert [c for c, _ in combine_rankings(scored, described, 0.5)][0] == "c"
    with pytest.raises(NeurolabelError, match=r"in \[0, 1\]"):
        combine_rankings(scored, described, 1.5)


def test_first_sentence():
    assert first_sentence("Sentence: 'Fires on fur.' More.") == "Fires on fur."
    assert first_sentence("Fires on striped fur of") == "Fires on striped fur of…"
    assert first_sentence("  ") is None


class FirstConcept:
    name = "first-concept"

    def summarize(self, neurons):
        return [f"Mostly {n.concepts[0][0]}." for n in neurons]


@pytest.fixture
def summary_plugin():
    class Plugin:
        @hookimpl
        def register_summarizers(self, register):
            register("first-concept", lambda spec, ctx: FirstConcept(), description="test")

    plugin = Plugin()
    pm.register(plugin, name="summary-plugin")
    yield plugin
    pm.unregister(plugin)


def test_register_summarizers_hook(summary_plugin, folder):
    ctx = build_context("cpu")
    assert "first-concept" in get_plugins().registries().summarizers
    assert resolve_summarizer("first-concept", ctx).name == "first-concept"
    assert resolve_summarizer("gpt-4o-mini?max_tokens=50", ctx).name == (
        "llm:gpt-4o-mini?max_tokens=50"
    )
    result = label(folder, ctx, summarize="first-concept")
    assert result.explanation("features.1", 0).summary == "Mostly red."
    assert result.settings["summarizer"] == "first-concept"


def cli_args(folder, out, *extra):
    return [
        "explain",
        MODEL,
        "--layer",
        "features.1",
        "--images",
        str(folder),
        "--scorer",
        "color",
        "--vocab",
        "colors",
        "--top-k",
        "3",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        "--no-html",
        *extra,
    ]


def test_cli_describer_summaries_and_yes(folder, tmp_path, capsys):
    with ChatServer(vlm) as server:
        code, _, err = run(
            cli_args(
                folder,
                tmp_path / "out",
                "--describer",
                describer_spec(server, "ask_above=0"),
                "--summarize",
                f"openai/whatever?api_base={server.url}",
                "--yes",
            ),
            capsys,
        )
    assert code == 0, err
    err = " ".join(err.split())  # rich wraps long lines
    assert "Note:" not in err  # a local model: nothing leaves the machine
    assert "VLM neuron descriptions: 2 request(s)" in err and "Proceeding (--yes)" in err
    result = LabelingResult.load(tmp_path / "out")
    assert result.explanation("features.1", 1).summary == "Responds to blue squares."
    assert FAKE_KEY not in err


def test_cli_remote_describer_says_so_and_refuses_without_yes(folder, tmp_path, capsys):
    describer = "litellm:openai/gpt-4o-mini?ask_above=0"
    code, _, err = run(cli_args(folder, tmp_path / "out", "--describer", describer), capsys)
    err = " ".join(err.split())  # rich wraps long lines
    assert code == 2
    assert err.count("sent to the remote model") == 1
    assert "pass --yes to proceed" in err and "estimated cost at most $" in err
    assert not (tmp_path / "out" / "result.json").exists()


def test_results_without_the_described_field_still_load():
    old = {"layer": "fc", "unit": 0, "concepts": [["dog", 1.0]], "summary": None}
    data = {"schema_version": "1.0", "model": {}, "layers": {}, "neurons": {"fc": [old]}}
    neuron = LabelingResult.from_dict(data).explanation("fc", 0)
    assert neuron.described is None and neuron.description == "dog"


def test_two_ranks_send_each_request_once(folder, tmp_path):
    def model(body):
        if "Topics:" in user_text(body):
            return json.dumps({"concepts": [{"concept": "crimson", "category": "color"}]})
        return vlm(body)

    with ChatServer(model) as server:
        vocab = f"llm:openai/whatever?api_base={server.url}&topics=red,blue"
        args = [vocab if a == "colors" else a for a in cli_args(folder, tmp_path / "out")]
        args += ["--yes"]
        args += ["--describer", describer_spec(server)]
        args += ["--summarize", f"openai/whatever?api_base={server.url}"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1",
        }
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        command += ["--nproc-per-node", "2", "-m", "neurolabel", *args]
        ranks = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert ranks.returncode == 0, ranks.stderr[-3000:]
        kinds = [
            "vocabulary"
            if "Topics:" in user_text(b)
            else "describer"
            if request_image(b) is not None
            else "summary"
            for b in server.requests
        ]
    assert sorted(kinds) == ["describer"] * 2 + ["summary"] * 2 + ["vocabulary"]
    result = LabelingResult.load(tmp_path / "out")
    assert result.settings["world_size"] == 2
    assert result.explanation("features.1", 0).summary == "Responds to red squares."
    assert FAKE_KEY not in ranks.stderr + ranks.stdout


def test_a_describer_given_as_the_scorer_is_pointed_to_describer(folder, ctx):
    labeler = NeuronLabeler(
        "python:synthetic:ColorDetector",
        layers=["fc"],
        scorer="litellm:ollama/llava",
        context=ctx,
        progress=False,
    )
    with pytest.raises(NeurolabelError, match="is a describer: pass it as describer="):
        labeler.run(folder)


def test_fused_rankings_keep_each_p_value_with_its_concept(tmp_path):
    from test_unit_character import colored_squares
    from test_verification import planted_labeler

    def labeler(**options):
        return planted_labeler(build_context("cpu", cache_dir=tmp_path / "cache"), **options)

    images = colored_squares(90)
    plain = labeler().run(images)
    # the describer puts a free label first and a concept the scorer ranks low second
    with ChatServer(lambda body: json.dumps({"labels": ["scarlet thing", "blue"]})) as server:
        fused = labeler(describer=describer_spec(server, "weight=0.9")).run(images)
    before = plain.explanation("units", 0)
    after = fused.explanation("units", 0)
    assert {c for c, _ in after.concepts[:2]} == {"scarlet thing", "blue"}
    assert "blue" not in [c for c, _ in before.concepts[:2]]  # the ranking did change
    tested = dict(zip((c for c, _ in before.concepts), before.p_values, strict=True))
    assert len(tested) > 2 and all(p is not None for p in tested.values())
    for concept, p in zip((c for c, _ in after.concepts), after.p_values, strict=True):
        assert p == tested.get(concept)  # None for the free label: it was never tested
