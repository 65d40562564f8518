"""The one spec grammar used everywhere: ``NAME[:ARGUMENT][?key=value&key=value]``.

Examples: ``open_clip:ViT-B-32/laion2b_s34b_b79k``, ``torchvision:resnet18?weights=none``,
``words:20000?pos=noun``, ``python:mypkg.models:build``, ``file:/data/concepts.txt``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..errors import SpecError
from ..runtime.terminal import shorten

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: ``key=value`` in a spec's query; the name is checked by :func:`_is_secret_name`.
_OPTION = re.compile(r"(^|[?&])([\w.-]+)=([^&+\s'\"]*)")
#: Words that make an option name a secret's (``api_key``, ``hf_token``, ``password``), as a
#: whole part of the name: ``max_tokens`` is not a secret, ``api_key_env`` names a variable.
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "pwd",
        "auth",
        "credential",
        "credentials",
        "bearer",
    }
)
#: ``scheme://user:password@host``: the password part of credentials in a URL.
_URL_CREDENTIALS = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/@:\s?&]*:)([^/@\s]+)(@)")
#: Strings shaped like API keys, wherever they appear.
_KEY_SHAPED = re.compile(r"\b(sk|pk|rk|hf|ghp|xox[bp])[-_][A-Za-z0-9_\-]{6,}")
REDACTED = "***"


def redact_secrets(text: str) -> str:
    """``text`` (a spec, a list of specs, a message quoting one) without its secrets.

    The values of options named like a secret (``api_key``, ``token``, ``password``...),
    passwords in URLs (``http://user:PASSWORD@host``) and key-shaped strings (``sk-...``)
    become ``***``, so that no secret given in a spec reaches a terminal, a log or a result
    file.

    Examples:
        >>> redact_secrets("llm:openai/gpt-4o?api_key=sk-abcdef123456&temperature=0")
        'llm:openai/gpt-4o?api_key=***&temperature=0'
        >>> redact_secrets("litellm:m?api_base=http://me:hunter2@host:8000/v1")
        'litellm:m?api_base=http://me:***@host:8000/v1'
        >>> redact_secrets("llm:m?max_tokens=50&hf_token=abc&api_key_env=MY_KEY")
        'llm:m?max_tokens=50&hf_token=***&api_key_env=MY_KEY'
        >>> redact_secrets("Unknown option(s) api_key in 'color?api_key=abc'. Allowed: size")
        "Unknown option(s) api_key in 'color?api_key=***'. Allowed: size"
    """
    text = _OPTION.sub(
        lambda m: (
            f"{m.group(1)}{m.group(2)}={REDACTED}" if _is_secret_name(m.group(2)) else m.group(0)
        ),
        text,
    )
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)
    return _KEY_SHAPED.sub(REDACTED, text)


def _is_secret_name(name: str) -> bool:
    parts = [p for p in re.split(r"[_.\-]", name.lower()) if p]
    if parts and parts[-1] == "env":  # the name of an environment variable, not its value
        return False
    return any(part in _SECRET_WORDS for part in parts)


@dataclass(frozen=True)
class Spec:
    """A parsed spec string.

    Args:
        name: Registered name (``open_clip``).
        argument: Everything after the first ``:`` and before ``?`` (may contain ``:``), or None.
        options: ``key=value`` pairs after ``?``, values as strings.

    Examples:
        >>> s = Spec.parse("torchvision:resnet18?weights=none")
        >>> s.name, s.argument, s.options["weights"]
        ('torchvision', 'resnet18', 'none')
    """

    name: str
    argument: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Spec:
        """Parse ``NAME[:ARGUMENT][?key=value&...]``.

        Args:
            text: The spec string.

        Returns:
            The parsed :class:`Spec`.
        """
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"Empty spec {text!r}: expected NAME[:ARGUMENT][?key=value&...]")
        text = text.strip()
        shown = shorten(redact_secrets(text))
        body, _, query = text.partition("?")
        name, sep, argument = body.partition(":")
        name = name.strip()
        if not name:
            raise SpecError(f"Spec {shown!r} has no name before ':'")
        try:
            # '+' is literal here (paths, '+'-joined specs), not a form-encoded space.
            pairs = parse_qsl(
                query.replace("+", "%2B"), keep_blank_values=True, strict_parsing=bool(query)
            )
        except ValueError as exc:
            raise SpecError(
                f"Spec {shown!r}: options after '?' must look like key=value&key=value"
            ) from exc
        options: dict[str, str] = {}
        for key, value in pairs:
            if not key:
                raise SpecError(f"Spec {shown!r} has an option without a name ('=value')")
            if key in options:
                raise SpecError(
                    f"Spec {shown!r} gives option '{key}' twice: keep one "
                    f"({key}={redact_secrets(key + '=' + options[key]).partition('=')[2]} or "
                    f"{key}={redact_secrets(key + '=' + value).partition('=')[2]})"
                )
            options[key] = value
        return cls(name=name, argument=argument if sep else None, options=options)

    def __str__(self) -> str:
        """The spec as written, without its secrets (see :func:`redact_secrets`): what
        messages, object names and results show. :meth:`text` keeps them."""
        return redact_secrets(self.text())

    def text(self) -> str:
        """The spec as written, secrets included (to hand on to the code that needs them)."""
        out = self.name if self.argument is None else f"{self.name}:{self.argument}"
        if self.options:
            out += "?" + "&".join(f"{k}={v}" for k, v in self.options.items())
        return out

    def require_argument(self, what: str) -> str:
        """Return the argument or fail saying what it should be.

        Args:
            what: Human description of the expected argument, e.g. ``"a model name"``.

        Returns:
            The non-empty argument.
        """
        if not self.argument:
            raise SpecError(f"'{self.name}' needs {what}: write {self.name}:<{what}>")
        return self.argument

    def option(self, key: str, default: str | None = None) -> str | None:
        """Return option ``key`` as a string, or ``default``."""
        return self.options.get(key, default)

    def option_bool(self, key: str, default: bool = False) -> bool:
        """Return option ``key`` as a boolean (``true/false/1/0/yes/no``)."""
        value = self.options.get(key)
        if value is None:
            return default
        low = value.strip().lower()
        if low in _TRUE or low == "":
            return True
        if low in _FALSE:
            return False
        raise SpecError(f"Option {key}={value!r} in '{self}' must be true or false")

    def option_int(self, key: str, default: int | None = None) -> int | None:
        """Return option ``key`` as an integer, or ``default``."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError as exc:
            raise SpecError(f"Option {key}={value!r} in '{self}' must be an integer") from exc

    def option_float(self, key: str, default: float | None = None) -> float | None:
        """Return option ``key`` as a float, or ``default``."""
        value = self.options.get(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError as exc:
            raise SpecError(f"Option {key}={value!r} in '{self}' must be a number") from exc

    def check_options(self, allowed: set[str] | frozenset[str]) -> None:
        """Fail on options the factory does not understand, naming the allowed ones."""
        unknown = sorted(set(self.options) - set(allowed))
        if unknown:
            allowed_text = ", ".join(sorted(allowed)) or "none"
            raise SpecError(
                f"Unknown option(s) {', '.join(unknown)} in '{shorten(str(self))}'. "
                f"Allowed: {allowed_text}"
            )
