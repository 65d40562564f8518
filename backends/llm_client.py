"""Chat requests through litellm: disk cache, bounded concurrency, retries, cost estimates.

Every LLM/VLM backend (``llm:`` vocabularies, the ``litellm:`` describer, summaries) sends its
requests through :class:`LLMClient`, so they share one behaviour:

* each answer is cached on disk under the context's cache folder, keyed by the model and the
  whole request (messages, JSON mode, temperature, token limit): a second run sends nothing
  and works offline, and an interrupted run keeps every answer it already received;
* at most ``concurrency`` requests are in flight;
* rate limits (429), timeouts, connection failures and 5xx answers are retried with
  exponential backoff; after the last retry the error says what failed, without any key;
* before a run of more than ``ask_above`` uncached requests, an estimate of the requests and
  their cost (litellm's local cost map) is passed to the context's ``confirm`` callback.

API keys come from the environment or litellm's own configuration (``api_key_env=NAME``
names another variable); they are never written to the cache, and error messages are
scrubbed of them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from neurolabel.plugin_core.data.atomic import atomic_write
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.spec import Spec
from neurolabel.plugin_core.runtime.progress import Steps, progress_steps, stderr_console

__all__ = [
    "CLIENT_OPTIONS",
    "Answer",
    "ChatRequest",
    "LLMClient",
    "LLMError",
    "LLMSettings",
    "is_local",
    "scrub_secrets",
]

log = logging.getLogger("neurolabel.llm")

#: Spec options every litellm-backed plugin accepts.
CLIENT_OPTIONS = frozenset(
    {
        "api_base",
        "api_key_env",
        "temperature",
        "max_tokens",
        "timeout",
        "retries",
        "backoff",
        "concurrency",
        "ask_above",
    }
)

#: Providers whose default endpoint is the user's own machine.
LOCAL_PROVIDERS = frozenset({"ollama", "ollama_chat", "lm_studio", "llamafile"})
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "0.0.0.0"})
#: Uncached requests from which a run shows a progress bar (on a terminal).
_PROGRESS_FROM = 5
#: Bump to invalidate every cached answer when the cache layout changes.
_CACHE_VERSION = 1
# Environment variables whose values are secrets, whatever the provider.
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
# Key-shaped strings an error message might echo back (OpenAI/Anthropic style, bearer headers).
_NAME_PREFIX = re.compile(r"^(?:(?:litellm\.)?\w+(?:Error|Exception|Timeout): )+")
_KEY_SHAPED = re.compile(r"(sk-[A-Za-z0-9_\-]{6,}|(?<=Bearer )[^\s'\"]+|(?<=x-api-key: )\S+)")


class LLMError(NeurolabelError):
    """A request to a language model failed for good (after retries) or was refused."""


def scrub_secrets(text: str, extra: Sequence[str] = ()) -> str:
    """Replace API keys in ``text`` by ``***``.

    Removes the values of environment variables whose names look secret (``*KEY*``,
    ``*TOKEN*``, ``*SECRET*``...), the strings in ``extra``, and key-shaped strings
    (``sk-...``, bearer tokens).

    Args:
        text: Any message, e.g. an exception's text.
        extra: Further secret values to remove.

    Returns:
        The text without secrets.

    Examples:
        >>> scrub_secrets("auth failed for sk-abcdefghijkl", extra=["hunter22"])
        'auth failed for ***'
    """
    secrets = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]
    secrets.extend(s for s in extra if s and len(s) >= 4)
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return _KEY_SHAPED.sub("***", text)


def is_local(model: str, api_base: str | None) -> bool:
    """Whether requests for ``model`` stay on this machine.

    Local means an ``api_base`` on localhost / 127.0.0.1, or a provider that runs locally by
    default (``ollama/``, ``ollama_chat/``, ``lm_studio/``, ``llamafile/``) with no remote
    ``api_base``.

    Args:
        model: litellm model name, ``provider/model``.
        api_base: The endpoint given by the user, if any.

    Returns:
        True when nothing leaves the machine.

    Examples:
        >>> is_local("openai/gpt-4o", "http://127.0.0.1:8000/v1"), is_local("openai/gpt-4o", None)
        (True, False)
        >>> is_local("ollama/llava", None), is_local("ollama/llava", "http://gpu-box:11434")
        (True, False)
    """
    if api_base:
        return (urlparse(api_base).hostname or "") in _LOCAL_HOSTS
    return model.split("/", 1)[0] in LOCAL_PROVIDERS


@dataclass(frozen=True)
class LLMSettings:
    """How to reach a model and how patiently.

    Args:
        model: litellm model name (``openai/gpt-4o-mini``, ``anthropic/claude-3-5-haiku-latest``,
            ``ollama/llava``, ``hosted_vllm/Qwen/Qwen2-VL-7B-Instruct``).
        api_base: Endpoint URL (a local Ollama or vLLM server, a proxy).
        api_key_env: Name of the environment variable holding the key, when it is not the
            provider's standard one (``OPENAI_API_KEY``...).
        temperature: Sampling temperature (0 = most repeatable answers).
        max_tokens: Longest answer.
        timeout: Seconds per request.
        retries: Retries after the first attempt on 429, timeouts, connection errors, 5xx.
        backoff: Seconds before the first retry; doubled each time.
        concurrency: Requests in flight at once.
        ask_above: Uncached requests above which a run asks for confirmation first.
    """

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    concurrency: int = 4
    ask_above: int = 20

    @classmethod
    def from_spec(cls, spec: Spec, **defaults: Any) -> LLMSettings:
        """Read the model (the spec's argument) and :data:`CLIENT_OPTIONS` from a spec.

        Args:
            spec: e.g. ``llm:openai/gpt-4o-mini?api_base=http://127.0.0.1:8000/v1``.
            **defaults: Defaults that differ from the class's (e.g. ``max_tokens=300``).

        Returns:
            The settings; bad values raise :class:`SpecError` naming the option.

        Examples:
            >>> s = LLMSettings.from_spec(Spec.parse("llm:openai/gpt-4o?retries=2&timeout=5"))
            >>> s.model, s.retries, s.timeout
            ('openai/gpt-4o', 2, 5.0)
        """
        model = spec.require_argument("a litellm model name, e.g. openai/gpt-4o-mini").strip()
        values: dict[str, Any] = {
            "api_base": spec.option("api_base"),
            "api_key_env": spec.option("api_key_env"),
            "temperature": spec.option_float("temperature", defaults.get("temperature", 0.0)),
            "max_tokens": spec.option_int("max_tokens", defaults.get("max_tokens", 1024)),
            "timeout": spec.option_float("timeout", defaults.get("timeout", 60.0)),
            "retries": spec.option_int("retries", defaults.get("retries", 4)),
            "backoff": spec.option_float("backoff", defaults.get("backoff", 1.0)),
            "concurrency": spec.option_int("concurrency", defaults.get("concurrency", 4)),
            "ask_above": spec.option_int("ask_above", defaults.get("ask_above", 20)),
        }
        settings = cls(model=model, **values)
        settings.check(spec)
        return settings

    def check(self, spec: Spec | str) -> None:
        """Fail clearly on values that cannot work."""
        problems = []
        if self.max_tokens < 1:
            problems.append("max_tokens must be at least 1")
        if self.timeout <= 0:
            problems.append("timeout must be positive (seconds)")
        if self.retries < 0:
            problems.append("retries must be 0 or more")
        if self.backoff < 0:
            problems.append("backoff must be 0 or more (seconds)")
        if self.concurrency < 1:
            problems.append("concurrency must be at least 1")
        if self.ask_above < 0:
            problems.append("ask_above must be 0 or more")
        if not 0 <= self.temperature <= 2:
            problems.append("temperature must be between 0 and 2")
        if self.api_base and urlparse(self.api_base).scheme not in ("http", "https"):
            problems.append(f"api_base {self.api_base!r} must be an http(s) URL")
        if problems:
            raise SpecError(f"'{spec}': " + "; ".join(problems))

    @property
    def local(self) -> bool:
        """Whether requests stay on this machine (see :func:`is_local`)."""
        return is_local(self.model, self.api_base)


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make.

    Args:
        messages: OpenAI-style messages (text, or content parts with ``image_url`` data URLs).
        json: Ask for a JSON object (``response_format``) when the provider supports it.
    """

    messages: list[dict[str, Any]]
    json: bool = False


@dataclass(frozen=True)
class Answer:
    """A model's answer.

    Args:
        content: The text of the first choice.
        finish_reason: ``stop``, ``length`` (the answer was cut at ``max_tokens``)...
        cached: True when it came from the disk cache.
    """

    content: str
    finish_reason: str | None = None
    cached: bool = False

    @property
    def truncated(self) -> bool:
        """True when the answer was cut off by the token limit."""
        return self.finish_reason == "length"


@dataclass
class _Tally:
    sent: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class LLMClient:
    """Sends chat requests to one model, with the caching and retry policy of this module.

    Args:
        settings: Model, endpoint and patience.
        cache_dir: The context's cache folder (answers go to ``cache_dir/llm``).
        confirm: ``confirm(message) -> bool``, asked before a run of more than
            ``settings.ask_above`` uncached requests; None proceeds (and logs the estimate).
        sleep: The function that waits between retries (tests replace it).

    Examples:
        >>> import tempfile
        >>> client = LLMClient(LLMSettings("openai/gpt-4o-mini"), tempfile.mkdtemp())
        >>> request = ChatRequest([{"role": "user", "content": "Say hi"}])
        >>> client.cached(request) is None
        True
    """

    def __init__(
        self,
        settings: LLMSettings,
        cache_dir: str | Path,
        confirm: Callable[[str], bool] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.cache_dir = Path(cache_dir) / "llm"
        self.confirm = confirm
        self.sleep = sleep
        self.tally = _Tally()
        self._json_mode: bool | None = None

    # -- cache ---------------------------------------------------------------------------
    def _key_payload(self, request: ChatRequest) -> dict[str, Any]:
        s = self.settings
        return {
            "v": _CACHE_VERSION,
            "model": s.model,
            "messages": request.messages,
            "json": request.json,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
        }

    def cache_path(self, request: ChatRequest) -> Path:
        """Where the answer to ``request`` is cached (keyed by model and prompt)."""
        blob = json.dumps(self._key_payload(request), sort_keys=True, ensure_ascii=False)
        digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()
        return self.cache_dir / digest[:2] / f"{digest}.json"

    def cached(self, request: ChatRequest) -> Answer | None:
        """The cached answer to ``request``, or None."""
        path = self.cache_path(request)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return Answer(str(data["content"]), data.get("finish_reason"), cached=True)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Ignoring unreadable cache entry %s", path)
            return None

    def _store(self, request: ChatRequest, answer: Answer) -> None:
        record = {
            "model": self.settings.model,
            "content": answer.content,
            "finish_reason": answer.finish_reason,
        }
        with atomic_write(self.cache_path(request)) as handle:
            json.dump(record, handle, ensure_ascii=False)

    # -- requests ------------------------------------------------------------------------
    @property
    def requests_sent(self) -> int:
        """HTTP requests attempted so far (retries included), for reports and tests."""
        return self.tally.sent

    def complete(self, request: ChatRequest, what: str = "LLM request") -> Answer:
        """One request (cached): see :meth:`complete_many`."""
        return self.complete_many([request], what)[0]

    def complete_many(
        self, requests: Sequence[ChatRequest], what: str, rounds: int = 1, growth: int = 0
    ) -> list[Answer]:
        """Answer every request: from the cache, else from the model, concurrently.

        Args:
            requests: The requests, in order.
            what: What the run is for, shown in the estimate (``"LLM vocabulary"``).
            rounds: How many rounds like these follow, this one included (the estimate
                counts them all).
            growth: Prompt tokens each later round adds per request (see :meth:`estimate`).

        Returns:
            The answers, in the order of ``requests``.

        Raises:
            LLMError: A request still failed after the last retry, the model could not be
                reached, or the run was not confirmed. Answers received before the failure
                stay cached, so re-running continues where it stopped.
        """
        answers: list[Answer | None] = [self.cached(r) for r in requests]
        todo = [i for i, a in enumerate(answers) if a is None]
        if not todo:
            return [a for a in answers if a is not None]
        self._check_key()
        if len(todo) > self.settings.ask_above:
            message = self.estimate([requests[i] for i in todo], what, rounds, growth)
            if self.confirm is None:
                log.info("%s", message)
            elif not self.confirm(message):
                raise LLMError(f"{what}: not confirmed; nothing was sent")
        workers = min(self.settings.concurrency, len(todo))
        failure: BaseException | None = None
        # A bar only where someone watches a run long enough to need one.
        shown = len(todo) >= _PROGRESS_FROM and stderr_console.is_terminal
        with (
            _progress(shown) as steps,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="neurolabel-llm") as pool,
        ):
            task = steps.task(f"{what} ({self.settings.model})", len(todo))
            futures = {pool.submit(self._fetch, requests[i]): i for i in todo}
            for future in as_completed(futures):
                if future.cancelled():
                    continue
                task.advance()
                error = future.exception()
                if error is None:
                    answers[futures[future]] = future.result()
                elif failure is None:
                    failure = error
                    for other in futures:  # stop early; requests already in flight finish
                        other.cancel()
        if failure is not None:
            finished = sum(a is not None for a in answers)
            raise LLMError(
                f"{failure} ({finished} of {len(requests)} {what} answers are cached; "
                "re-running continues from there)"
            ) from None
        return [a for a in answers if a is not None]

    def _check_key(self) -> None:
        name = self.settings.api_key_env
        if name and not os.environ.get(name):
            raise LLMError(
                f"api_key_env={name}: the environment variable {name} is not set; export "
                "it with your API key, or drop api_key_env to use the provider's standard one"
            )

    def _completion_kwargs(self) -> dict[str, Any]:
        s = self.settings
        kwargs: dict[str, Any] = {
            "model": s.model,
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            "timeout": s.timeout,
            # Retries are ours (backoff, a clear last error); the OpenAI client's own are off.
            "num_retries": 0,
            "max_retries": 0,
            "drop_params": True,
        }
        if s.api_base:
            kwargs["api_base"] = s.api_base
        if s.api_key_env:
            kwargs["api_key"] = os.environ[s.api_key_env]
        elif s.local and s.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY"):
            # Local OpenAI-compatible servers (vLLM, llama.cpp) ignore the key, but the
            # OpenAI client refuses to send a request without one.
            kwargs["api_key"] = "no-key-needed"
        return kwargs

    def supports_json(self) -> bool:
        """Whether the provider accepts ``response_format`` (asked of litellm once)."""
        if self._json_mode is None:
            litellm = _import_litellm()
            try:
                _, provider, _, _ = litellm.get_llm_provider(
                    self.settings.model, api_base=self.settings.api_base
                )
                params = litellm.get_supported_openai_params(
                    model=self.settings.model, custom_llm_provider=provider
                )
                self._json_mode = bool(params) and "response_format" in params
            except Exception:  # an unknown provider: fall back to tolerant text parsing
                self._json_mode = False
        return self._json_mode

    def _fetch(self, request: ChatRequest) -> Answer:
        litellm = _import_litellm()
        kwargs = self._completion_kwargs()
        if request.json and self.supports_json():
            kwargs["response_format"] = {"type": "json_object"}
        retryable = _retryable(litellm)
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            with self.tally.lock:
                self.tally.sent += 1
            try:
                response = litellm.completion(messages=request.messages, **kwargs)
            except retryable as exc:
                reason = self._describe(exc)
                if attempt == attempts:
                    raise LLMError(
                        f"{self.settings.model}: {reason}, still after {attempts} attempt(s); "
                        "try later, or raise retries=/timeout= in the spec"
                    ) from None
                delay = self.settings.backoff * 2 ** (attempt - 1)
                log.warning(
                    "%s: %s; retry %d of %d in %.1f s",
                    self.settings.model,
                    reason,
                    attempt,
                    attempts - 1,
                    delay,
                )
                self.sleep(delay)
                continue
            except Exception as exc:
                raise LLMError(f"{self.settings.model}: {self._describe(exc)}") from None
            answer = _answer_of(response, self.settings.model)
            self._store(request, answer)
            return answer
        raise AssertionError("unreachable")

    def _describe(self, exc: BaseException) -> str:
        extra = []
        if self.settings.api_key_env:
            extra.append(os.environ.get(self.settings.api_key_env, ""))
        text = " ".join(str(exc).split())
        # litellm repeats the class name ("litellm.RateLimitError: RateLimitError: ...").
        text = _NAME_PREFIX.sub("", text)
        if len(text) > 300:
            text = text[:300] + "..."
        return f"{type(exc).__name__}: {scrub_secrets(text, extra)}"

    def cost_bound(self, requests: Sequence[ChatRequest]) -> tuple[int, int, float | None]:
        """``(prompt tokens, answer tokens at most, dollars at most or None)`` of sending
        ``requests`` (cached ones included: filter them first to price a run)."""
        litellm = _import_litellm()
        model = self.settings.model
        prompt = 0
        for request in requests:
            try:
                prompt += int(litellm.token_counter(model=model, messages=request.messages))
            except Exception:  # no tokenizer for this model: about 4 characters a token
                prompt += len(json.dumps(request.messages)) // 4
        completion = self.settings.max_tokens * len(requests)
        return prompt, completion, self._price(prompt, completion)

    def _price(self, prompt: int, completion: int) -> float | None:
        """Dollars of ``prompt`` and ``completion`` tokens (None: litellm has no price)."""
        try:
            low, high = _import_litellm().cost_per_token(
                model=self.settings.model, prompt_tokens=prompt, completion_tokens=completion
            )
            return float(low + high)
        except Exception:
            return None

    def estimate(
        self, requests: Sequence[ChatRequest], what: str, rounds: int = 1, growth: int = 0
    ) -> str:
        """A one-paragraph estimate of the requests, tokens and cost of a run.

        Prompt tokens are counted with litellm's tokenizer; answers are counted at their
        limit (``max_tokens``), so the cost is an upper bound. Prices come from litellm's
        local cost map (``LITELLM_LOCAL_MODEL_COST_MAP=True`` keeps it offline).

        Args:
            requests: The requests about to be sent.
            what: What the run is for.
            rounds: Rounds of requests like these, this one included: round ``j`` (from 0)
                is counted at this round's size plus ``j * growth`` prompt tokens a request.
            growth: Prompt tokens a request gains per round (a verification round shows the
                earlier candidates' scores).

        Returns:
            The message shown before asking for confirmation.
        """
        model = self.settings.model
        prompt, completion, total = self.cost_bound(requests)
        if rounds > 1:
            prompt = rounds * prompt + growth * len(requests) * rounds * (rounds - 1) // 2
            completion *= rounds
            total = self._price(prompt, completion)
        if self.settings.local:
            cost = "none (a local server)"
        elif not total:  # unmapped, or listed without a price (litellm then answers 0)
            cost = "unknown (litellm's cost map has no price for this model)"
        else:
            cost = f"at most ${total:.2f}" if total >= 0.01 else f"at most ${total:.4f}"
        where = "a local server" if self.settings.local else "a remote service"
        count = f"{len(requests)} request(s)"
        if rounds > 1:
            count += f" a round, at most {rounds * len(requests)} in {rounds} rounds"
        return (
            f"{what}: {count} to {model} on {where}, about {prompt} prompt "
            f"tokens and at most {completion} answer tokens; estimated cost {cost}."
        )


@contextmanager
def _progress(shown: bool) -> Iterator[Steps]:
    """A progress display, or a silent one when another display is already live."""
    from rich.errors import LiveError

    stack = ExitStack()
    try:
        steps = stack.enter_context(progress_steps(shown))
    except LiveError:  # called inside a pipeline stage that shows its own bars
        steps = stack.enter_context(progress_steps(False))
    with stack:
        yield steps


def _import_litellm() -> Any:
    """litellm, told to use its bundled cost map instead of fetching one at import."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    litellm.suppress_debug_info = True  # no "Give Feedback" banners on stdout
    return litellm


def _retryable(litellm: Any) -> tuple[type[BaseException], ...]:
    return (
        litellm.RateLimitError,
        litellm.Timeout,
        litellm.APIConnectionError,
        litellm.InternalServerError,
        litellm.ServiceUnavailableError,
        litellm.BadGatewayError,
    )


def _answer_of(response: Any, model: str) -> Answer:
    try:
        choice = response.choices[0]
        content = choice.message.content
    except (AttributeError, IndexError, TypeError):
        raise LLMError(
            f"{model}: the answer has no message (got {type(response).__name__})"
        ) from None
    return Answer(str(content or ""), getattr(choice, "finish_reason", None))
