"""``llm:MODEL`` vocabularies through litellm's real HTTP path to a local server."""

from __future__ import annotations

import doctest
import importlib
import json
import re

import pytest
from llm_server import ChatServer, user_text

from neurolabel.backends.llm_parsing import labelled_items, parse_lines
from neurolabel.backends.llm_vocabulary import clean_concepts, normalize_category
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.resolve import build_context, resolve_vocabulary

FAKE_KEY = "sk-test-FAKE0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def topics_of(body) -> list[str]:
    return re.findall(r"^- (.+)$", user_text(body), re.MULTILINE)


def concepts_answer(body) -> str:
    """What a model might propose: useful concepts plus the noise the filters must remove."""
    items = []
    for topic in topics_of(body) or ["street"]:
        items += [
            {"concept": f"{topic} Fur.", "category": "Texture"},
            {"concept": "pointed ears", "category": "object part"},
            {"concept": "pointed ear", "category": "part"},  # a plural's duplicate
            {"concept": "green grass", "category": "Places"},
            {"concept": "Red", "category": "colour"},
            {"concept": "thing", "category": "object"},  # too generic
            {"concept": "a very long concept with far too many words", "category": "shape"},
            {"concept": "asphalt", "category": "surface stuff"},  # unknown category
        ]
    return json.dumps({"concepts": items})


def spec(server, options: str = "") -> str:
    return f"llm:openai/whatever?api_base={server.url}&retries=1&backoff=0.01&{options}".rstrip("&")


def test_vocabulary_from_topics_is_cleaned_tagged_and_cached(ctx):
    with ChatServer(concepts_answer) as server:
        vocab = resolve_vocabulary(spec(server, "topics=dog,cat&per_request=1"), ctx)
        assert len(server.requests) == 2
        assert server.requests[0]["response_format"] == {"type": "json_object"}
        assert sorted(topics_of(r)[0] for r in server.requests) == ["cat", "dog"]
        assert vocab.concepts == (
            "dog",
            "cat",
            "dog fur",
            "pointed ears",
            "green grass",
            "red",
            "asphalt",
            "cat fur",
        )
        assert vocab.category("dog") == "object" and vocab.category("dog fur") == "texture"
        assert vocab.category("pointed ears") == "part" and vocab.category("red") == "color"
        assert vocab.category("green grass") == "scene" and vocab.category("asphalt") is None
        again = resolve_vocabulary(
            spec(server, "topics=dog,cat&per_request=1"), build_context("cpu")
        )
        assert again == vocab and len(server.requests) == 2  # the second run sends nothing
    offline = resolve_vocabulary(spec(server, "topics=dog,cat&per_request=1"), ctx)
    assert offline == vocab  # and works with the server gone
    for path in ctx.cache_dir.rglob("*.json"):
        assert FAKE_KEY not in path.read_text()


def test_seeds_from_another_vocabulary_a_domain_and_the_target(ctx, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("zebra\ntiger\n")
    with ChatServer(concepts_answer) as server:
        vocab = resolve_vocabulary(spec(server, f"seeds=file:{classes}&include_seeds=false"), ctx)
        assert topics_of(server.requests[-1]) == ["zebra", "tiger"]
        assert "zebra" not in vocab.concepts and "zebra fur" in vocab.concepts
        resolve_vocabulary(spec(server, "domain=city streets at night&concepts=40"), ctx)
        prompt = user_text(server.requests[-1])
        assert "List 40 distinct visual concepts" in prompt and "city streets at night" in prompt
        ctx.extra["class_names"] = ["goldfish", "shark"]
        resolve_vocabulary(spec(server), ctx)
        assert topics_of(server.requests[-1]) == ["goldfish", "shark"]
    ctx.extra["class_names"] = None
    with pytest.raises(SpecError, match="no seed topics"):
        resolve_vocabulary("llm:openai/whatever", ctx)
    with pytest.raises(SpecError, match="Unknown option"):
        resolve_vocabulary("llm:openai/whatever?topic=dog", ctx)


def test_truncated_and_non_json_answers_are_read_tolerantly(ctx):
    answers = iter(
        [
            '{"concepts": [{"concept": "feathers", "category": "texture"}, {"concept": "be',
            "Sure! Here are concepts:\n1. Beak (part)\n2. blue sky - scene\nColors: white, grey",
        ]
    )
    with ChatServer(lambda body: next(answers)) as server:
        server.plan = ["truncate:200"]
        vocab = resolve_vocabulary(spec(server, "topics=bird&include_seeds=false"), ctx)
        assert vocab.concepts == ("feathers",)
        vocab = resolve_vocabulary(spec(server, "topics=gull&include_seeds=false"), ctx)
    assert vocab.concepts == ("beak", "blue sky", "white", "grey")
    assert [vocab.category(c) for c in vocab.concepts] == ["part", "scene", "color", "color"]


def test_an_answer_without_any_concept_is_a_clear_error(ctx):
    with ChatServer(lambda body: '{"concepts": []}') as server:
        with pytest.raises(Exception, match="proposed no usable concept"):
            resolve_vocabulary(spec(server, "topics=x&include_seeds=false"), ctx)


def test_a_large_run_asks_first(ctx):
    asked = []
    ctx.extra["confirm"] = lambda message: asked.append(message) or False
    with ChatServer(concepts_answer) as server:
        with pytest.raises(Exception, match="not confirmed"):
            resolve_vocabulary(spec(server, "topics=a,b,c,d&per_request=1&ask_above=3"), ctx)
        assert server.requests == []
    assert "LLM vocabulary: 4 request(s)" in asked[0]


def test_cleaning_rules():
    kept, dropped = clean_concepts(
        [("The Stripes", "pattern"), ("stripe", None), ("of the", None), ("x", None), ("Wing!", "")]
    )
    assert kept == [("stripes", "texture"), ("wing", None)] and dropped == 2
    assert normalize_category("Scenes") == "scene" and normalize_category(None) is None
    assert parse_lines("* **Fur**\n- whiskers, paws") == [
        ("Fur", None),
        ("whiskers", None),
        ("paws", None),
    ]
    assert labelled_items('```json\n["a", "b"]\n```') == ([("a", None), ("b", None)], "json")
    by_category = '{"color": ["red"], "texture": ["fur"]}'
    assert labelled_items(by_category)[0] == [("red", "color"), ("fur", "texture")]


@pytest.mark.parametrize(
    "name",
    [
        "neurolabel.backends.llm_client",
        "neurolabel.backends.llm_parsing",
        "neurolabel.backends.llm_vocabulary",
        "neurolabel.backends.llm_summary",
        "neurolabel.backends.vlm_describer",
    ],
)
def test_docstring_examples(name):
    failures, _ = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert failures == 0
