"""Named factories that spec strings resolve through."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .errors import SpecError, UnknownNameError
from .spec import Spec

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered factory.

    Args:
        name: The spec name it answers to.
        factory: ``factory(spec, context) -> T``.
        description: One line shown by ``neurolabel plugins``.
        plugin: Name of the plugin that registered it.
    """

    name: str
    factory: Callable[[Spec, Any], T]
    description: str
    plugin: str


class Registry(Generic[T]):
    """A kind of thing (scorer, vocabulary, ...) and the factories registered for it.

    Args:
        kind: Human name of the kind, used in error messages ("scorer").

    Examples:
        >>> reg = Registry("scorer")
        >>> reg.add("const", lambda spec, ctx: spec.argument, plugin="demo")
        >>> reg.resolve("const:hello", context=None)
        'hello'
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def add(
        self,
        name: str,
        factory: Callable[[Spec, Any], T],
        *,
        description: str = "",
        plugin: str = "?",
    ) -> None:
        """Record ``factory`` under ``name``; a second registration of a name replaces the first."""
        if not name or any(c in name for c in ":?+ "):
            raise ValueError(f"Invalid {self.kind} name {name!r}: no ':', '?', '+' or spaces")
        self._entries[name] = Entry(name, factory, description, plugin)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries[n] for n in self.names())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry[T]:
        """Return the entry for ``name`` or fail listing the registered names and the closest."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        """Explain that ``name`` is unknown, with the closest match and every valid name."""
        names = self.names()
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(names) if names else "(none registered)"
        return f"Unknown {self.kind} '{name}'.{hint} Registered {self.kind}s: {listed}"

    def resolve(self, spec: str | Spec, context: Any) -> T:
        """Build the thing a spec string names.

        Args:
            spec: A spec string or parsed :class:`Spec`.
            context: Passed to the factory (device, the other registries, cache folder).

        Returns:
            Whatever the factory builds.
        """
        parsed = spec if isinstance(spec, Spec) else Spec.parse(spec)
        entry = self.get(parsed.name)
        try:
            return entry.factory(parsed, context)
        except SpecError:
            raise
        except TypeError as exc:
            if "argument" in str(exc) and "factory" in str(exc):
                raise SpecError(f"{self.kind} '{parsed}': {exc}") from exc
            raise
