"""Registries: named factories that spec strings resolve through, one per kind of thing.

A ``register_*`` hook receives a :class:`Register` (a registry's ``registrar``); what it
records, :meth:`Registry.resolve` builds from a spec. :class:`Registries` holds one
registry per contract.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ..errors import SpecError, UnknownNameError
from ..runtime.terminal import shorten
from .spec import Spec

if TYPE_CHECKING:
    from .contracts import (
        ConceptScorer,
        Describer,
        EmbeddingScorer,
        Evaluator,
        Extractor,
        LoadedModel,
        Patcher,
        Summarizer,
        UnitMap,
        VocabularyProvider,
    )

T = TypeVar("T")

#: What a registry's factories build (contravariant: a Register of scorers accepts a
#: factory of any scorer).
Built = TypeVar("Built", contravariant=True)


class Register(Protocol[Built]):
    """The callback a ``register_*`` hook receives.

    Examples:
        >>> registry = Registry("scorer")
        >>> register = registry.registrar("my-plugin")
        >>> register("const", lambda spec, ctx: spec.argument, description="returns its argument")
        >>> registry.resolve("const:hi", context=None), registry.get("const").plugin
        ('hi', 'my-plugin')
    """

    def __call__(
        self,
        name: str,
        factory: Callable[[Spec, Any], Built],
        description: str = "",
    ) -> None:
        """Record ``factory`` under ``name`` (no ``:``, ``?``, ``+`` or spaces)."""
        ...


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

    def builds(self) -> type | None:
        """The class the factory says it returns (its return annotation), if it says.

        Examples:
            >>> class Thing: ...
            >>> def make(spec, ctx) -> Thing: return Thing()
            >>> Entry("x", make, "", "p").builds() is Thing
            True
        """
        hint = getattr(self.factory, "__annotations__", {}).get("return")
        if isinstance(hint, str):  # postponed annotations: look the name up where it lives
            hint = getattr(self.factory, "__globals__", {}).get(hint)
        return hint if isinstance(hint, type) else None


class Registry(Generic[T]):
    """A kind of thing (scorer, vocabulary, ...) and the factories registered for it.

    Args:
        kind: Human name of the kind, used in error messages ("scorer").
        plural: Its plural when not ``kind + "s"`` ("vocabularies").

    Examples:
        >>> reg = Registry("scorer")
        >>> reg.add("const", lambda spec, ctx: spec.argument, plugin="demo")
        >>> reg.resolve("const:hello", context=None)
        'hello'
    """

    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
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

    def registrar(self, plugin: str) -> Register[T]:
        """The ``register`` callback a ``register_*`` hook of ``plugin`` receives."""

        def register(name: str, factory: Callable[[Spec, Any], T], description: str = "") -> None:
            self.add(name, factory, description=description, plugin=plugin)

        return register

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
        return f"Unknown {self.kind} '{shorten(name)}'.{hint} Registered {self.plural}: {listed}"

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


@dataclass
class Registries:
    """Every registry, filled by calling each ``register_*`` hook once."""

    model_sources: Registry[LoadedModel] = field(default_factory=lambda: Registry("model source"))
    extractors: Registry[Extractor] = field(default_factory=lambda: Registry("extractor"))
    unit_maps: Registry[UnitMap] = field(default_factory=lambda: Registry("unit map"))
    patchers: Registry[Patcher] = field(default_factory=lambda: Registry("patcher"))
    vocabularies: Registry[VocabularyProvider] = field(
        default_factory=lambda: Registry("vocabulary", "vocabularies")
    )
    scorers: Registry[EmbeddingScorer | ConceptScorer | Describer] = field(
        default_factory=lambda: Registry("scorer")
    )
    summarizers: Registry[Summarizer] = field(default_factory=lambda: Registry("summarizer"))
    evaluators: Registry[Evaluator] = field(default_factory=lambda: Registry("evaluator"))

    def kinds(self) -> dict[str, Registry[Any]]:
        """Each registry by the human name of its kind (``"model source"``, ...)."""
        return {
            registry.kind: registry
            for registry in (
                self.model_sources,
                self.extractors,
                self.unit_maps,
                self.patchers,
                self.vocabularies,
                self.scorers,
                self.summarizers,
                self.evaluators,
            )
        }
