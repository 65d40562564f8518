"""The one spec grammar used everywhere: ``NAME[:ARGUMENT][?key=value&key=value]``.

Examples: ``open_clip:ViT-B-32/laion2b_s34b_b79k``, ``torchvision:resnet18?weights=none``,
``words:20000?pos=noun``, ``python:mypkg.models:build``, ``file:/data/concepts.txt``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..errors import SpecError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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
        body, _, query = text.partition("?")
        name, sep, argument = body.partition(":")
        name = name.strip()
        if not name:
            raise SpecError(f"Spec {text!r} has no name before ':'")
        try:
            # '+' is literal here (paths, '+'-joined specs), not a form-encoded space.
            pairs = parse_qsl(
                query.replace("+", "%2B"), keep_blank_values=True, strict_parsing=bool(query)
            )
        except ValueError as exc:
            raise SpecError(
                f"Spec {text!r}: options after '?' must look like key=value&key=value"
            ) from exc
        return cls(name=name, argument=argument if sep else None, options=dict(pairs))

    def __str__(self) -> str:
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
                f"Unknown option(s) {', '.join(unknown)} in '{self}'. Allowed: {allowed_text}"
            )
