"""The litellm client over real HTTP to a local server: retries, errors, cache, cost, keys."""

from __future__ import annotations

import json
import logging

import pytest
from llm_server import ChatServer, Fail, user_text

from neurolabel.backends.llm_client import (
    Answer,
    ChatRequest,
    LLMClient,
    LLMError,
    LLMSettings,
    is_local,
    scrub_secrets,
)
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.spec import Spec

FAKE_KEY = "sk-test-FAKE0123456789abcdefXYZ"


@pytest.fixture(autouse=True)
def fake_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)


def echo(body):
    return "echo: " + user_text(body)


def client(server, tmp_path, **options) -> LLMClient:
    settings = dict(retries=3, backoff=0.01, timeout=5.0, concurrency=2)
    settings.update(options)
    return LLMClient(LLMSettings("openai/whatever", api_base=server.url, **settings), tmp_path)


def ask(text: str) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}])


def test_answers_come_over_http_in_order_and_are_cached(tmp_path):
    with ChatServer(echo) as server:
        first = client(server, tmp_path).complete_many([ask("a"), ask("b"), ask("c")], "test")
        assert [a.content for a in first] == ["echo: a", "echo: b", "echo: c"]
        assert not any(a.cached for a in first) and len(server.requests) == 3
        assert server.headers[0]["authorization"] == f"Bearer {FAKE_KEY}"
        assert server.requests[0]["model"] == "whatever"
        again = client(server, tmp_path).complete_many([ask("a"), ask("c")], "test")
        assert [a.content for a in again] == ["echo: a", "echo: c"]
        assert all(a.cached for a in again) and len(server.requests) == 3
    # The server is gone: cached answers still work (offline), new ones cannot.
    offline = client(server, tmp_path, retries=0, timeout=1.0)
    assert offline.complete(ask("b")).content == "echo: b"
    assert offline.requests_sent == 0
    with pytest.raises(LLMError, match="Connection error"):
        offline.complete(ask("never asked"))


def test_cache_files_hold_no_key_and_are_keyed_by_model_and_prompt(tmp_path):
    with ChatServer(echo) as server:
        one = client(server, tmp_path)
        one.complete(ask("a"))
        other = LLMClient(LLMSettings("openai/other", api_base=server.url), tmp_path)
        assert other.cache_path(ask("a")) != one.cache_path(ask("a"))
        assert one.cache_path(ask("b")) != one.cache_path(ask("a"))
    files = list((tmp_path / "llm").rglob("*.json"))
    assert len(files) == 1
    assert json.loads(files[0].read_text())["content"] == "echo: a"
    assert FAKE_KEY not in files[0].read_text()


@pytest.mark.parametrize("failures", [["429"], ["500", "503"], ["429", "500", "429"]])
def test_rate_limits_and_server_errors_are_retried(tmp_path, failures, caplog):
    delays = []
    with ChatServer(echo) as server:
        server.plan = list(failures)
        llm = client(server, tmp_path, backoff=0.5)
        llm.sleep = delays.append
        with caplog.at_level(logging.WARNING, logger="neurolabel.llm"):
            assert llm.complete(ask("x")).content == "echo: x"
        assert len(server.requests) == len(failures) + 1
    assert delays == [0.5 * 2**i for i in range(len(failures))]  # exponential backoff
    assert "retry 1 of 3" in caplog.text


def test_timeouts_are_retried(tmp_path):
    with ChatServer(echo) as server:
        server.plan = ["sleep:1.5"]
        llm = client(server, tmp_path, timeout=0.4)
        assert llm.complete(ask("slow")).content == "echo: slow"
        assert llm.requests_sent == 2


def test_clear_error_after_the_last_retry_without_the_key(tmp_path, caplog, capsys):
    with ChatServer(echo) as server:
        server.plan = ["429"] * 3
        with caplog.at_level(logging.DEBUG), pytest.raises(LLMError) as error:
            client(server, tmp_path, retries=2).complete(ask("x"))
        assert len(server.requests) == 3
    message = str(error.value)
    assert "RateLimitError" in message and "after 3 attempt(s)" in message
    assert "retries=" in message  # says what to change
    captured = capsys.readouterr()
    for text in (message, caplog.text, captured.out, captured.err):
        assert FAKE_KEY not in text


def test_a_server_echoing_the_key_is_scrubbed(tmp_path, caplog):
    with ChatServer(echo) as server:
        server.plan = ["401"]
        with caplog.at_level(logging.DEBUG), pytest.raises(LLMError) as error:
            client(server, tmp_path).complete(ask("x"))
        assert len(server.requests) == 1  # an authentication error is not retried
    assert "AuthenticationError" in str(error.value) and "***" in str(error.value)
    assert FAKE_KEY not in str(error.value) and FAKE_KEY not in caplog.text


def test_a_body_that_is_not_json_is_a_clear_error(tmp_path):
    with ChatServer(echo) as server:
        server.plan = ["garbage"] * 5
        with pytest.raises(LLMError, match="openai/whatever"):
            client(server, tmp_path, retries=1).complete(ask("x"))


def test_finished_answers_are_kept_when_a_later_request_fails(tmp_path):
    broken = {"b"}

    def fail_on_b(body):
        if user_text(body) in broken:
            raise Fail(500)
        return "echo: " + user_text(body)

    with ChatServer(fail_on_b) as server:
        llm = client(server, tmp_path, retries=1, concurrency=1)
        with pytest.raises(LLMError, match=r"[12] of 3 test answers are cached; re-running"):
            llm.complete_many([ask("a"), ask("b"), ask("c")], "test")
        assert [user_text(b) for b in server.requests[:3]] == ["a", "b", "b"]
        sent = len(server.requests)
        broken.clear()
        again = client(server, tmp_path, concurrency=1).complete_many(
            [ask("a"), ask("b"), ask("c")], "test"
        )
        assert [a.content for a in again] == ["echo: a", "echo: b", "echo: c"]
        resent = [user_text(b) for b in server.requests[sent:]]
        assert "a" not in resent and "b" in resent  # only what was not finished


def test_concurrency_is_bounded(tmp_path):
    import threading

    active, peak = [0], [0]
    lock = threading.Lock()

    def slow(body):
        import time

        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.15)
        with lock:
            active[0] -= 1
        return "ok"

    with ChatServer(slow) as server:
        client(server, tmp_path, concurrency=3).complete_many([ask(str(i)) for i in range(7)], "t")
    assert peak[0] == 3


def test_estimate_and_confirmation_before_a_large_run(tmp_path):
    asked = []
    with ChatServer(echo) as server:
        llm = client(server, tmp_path, ask_above=2)
        llm.confirm = lambda message: asked.append(message) or False
        with pytest.raises(LLMError, match="not confirmed; nothing was sent"):
            llm.complete_many([ask("a"), ask("b"), ask("c")], "LLM vocabulary")
        assert server.requests == []
        assert "LLM vocabulary: 3 request(s) to openai/whatever on a local server" in asked[0]
        assert "estimated cost none (a local server)" in asked[0]
        llm.confirm = lambda message: True
        llm.complete_many([ask("a"), ask("b")], "small")  # at most ask_above: no question
        assert len(asked) == 1 and len(server.requests) == 2
    priced = LLMClient(LLMSettings("openai/gpt-4o-mini", max_tokens=100), tmp_path)
    message = priced.estimate([ask("hello " * 200)] * 10, "summaries")
    assert "10 request(s)" in message and "remote service" in message
    assert "at most 1000 answer tokens" in message and "at most $0.0" in message
    unpriced = LLMClient(LLMSettings("openai/not-a-real-model"), tmp_path)
    assert "cost unknown (litellm's cost map has no price" in unpriced.estimate([ask("x")], "t")


def test_json_mode_is_requested_where_supported(tmp_path):
    with ChatServer(echo) as server:
        client(server, tmp_path).complete(ChatRequest([{"role": "user", "content": "j"}], True))
        client(server, tmp_path).complete(ask("plain"))
    assert server.requests[0]["response_format"] == {"type": "json_object"}
    assert "response_format" not in server.requests[1]


def test_a_missing_key_variable_is_named_not_shown(tmp_path, monkeypatch):
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    settings = LLMSettings("openai/whatever", api_key_env="MY_LLM_KEY")
    with pytest.raises(LLMError, match="MY_LLM_KEY is not set"):
        LLMClient(settings, tmp_path).complete(ask("x"))


def test_api_key_env_sends_that_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-other-SECRET-987654321")
    with ChatServer(echo) as server:
        settings = LLMSettings("openai/whatever", api_base=server.url, api_key_env="MY_LLM_KEY")
        LLMClient(settings, tmp_path).complete(ask("x"))
    assert server.headers[0]["authorization"] == "Bearer sk-other-SECRET-987654321"


def test_settings_from_spec_and_bad_values():
    spec = Spec.parse(
        "llm:openai/whatever?api_base=http://127.0.0.1:9/v1&retries=1&backoff=0&concurrency=8"
    )
    settings = LLMSettings.from_spec(spec)
    assert (settings.api_base, settings.retries, settings.concurrency) == (
        "http://127.0.0.1:9/v1",
        1,
        8,
    )
    assert settings.local
    with pytest.raises(SpecError, match="concurrency must be at least 1"):
        LLMSettings.from_spec(Spec.parse("llm:m?concurrency=0"))
    with pytest.raises(SpecError, match="must be an http"):
        LLMSettings.from_spec(Spec.parse("llm:m?api_base=localhost:8000"))
    with pytest.raises(SpecError, match="needs a litellm model name"):
        LLMSettings.from_spec(Spec.parse("llm"))


def test_locality_and_scrubbing():
    assert is_local("hosted_vllm/qwen", "http://localhost:8000/v1")
    assert not is_local("hosted_vllm/qwen", "https://vllm.example.com/v1")
    assert is_local("ollama_chat/llava", None) and not is_local("anthropic/claude", None)
    assert scrub_secrets(f"bad key {FAKE_KEY}") == "bad key ***"
    assert scrub_secrets("Authorization: Bearer abc.def") == "Authorization: Bearer ***"
    assert Answer("x", "length").truncated and not Answer("x", "stop").truncated
