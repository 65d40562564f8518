"""Concept vocabularies: normalized, deduplicated lists of concepts with optional categories."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..errors import EmptyInputError

_SPACE = re.compile(r"\s+")


def normalize_concept(text: str) -> str:
    """Lower-case, fold whitespace and underscores, strip; ``"  Tabby_Cat "`` -> ``"tabby cat"``."""
    return _SPACE.sub(" ", text.replace("_", " ")).strip().lower()


@dataclass(frozen=True)
class Vocabulary:
    """An ordered set of concepts.

    Args:
        concepts: Normalized, unique, non-empty concept strings.
        categories: Optional concept -> category tag ("color", "object", "texture", ...).
        source: The spec it came from.

    Examples:
        >>> v = Vocabulary.build(["Dog", "dog ", "", "red"], categories={"red": "color"})
        >>> v.concepts, v.category("red"), v.category("dog")
        (('dog', 'red'), 'color', None)
    """

    concepts: tuple[str, ...]
    categories: Mapping[str, str] = field(default_factory=dict)
    source: str = ""

    @classmethod
    def build(
        cls,
        concepts: Iterable[str],
        *,
        categories: Mapping[str, str] | None = None,
        source: str = "",
    ) -> Vocabulary:
        """Normalize, deduplicate (first occurrence wins) and drop empty entries."""
        seen: dict[str, None] = {}
        for raw in concepts:
            concept = normalize_concept(str(raw))
            if concept and concept not in seen:
                seen[concept] = None
        cats = {normalize_concept(k): v for k, v in (categories or {}).items()}
        ordered = tuple(seen)
        return cls(ordered, {c: cats[c] for c in ordered if c in cats}, source)

    def __len__(self) -> int:
        return len(self.concepts)

    def category(self, concept: str) -> str | None:
        """The category tag of ``concept``, if any."""
        return self.categories.get(concept)

    def union(self, other: Vocabulary) -> Vocabulary:
        """Concepts of both, in order, deduplicated; categories merged (self wins)."""
        cats = {**other.categories, **self.categories}
        source = "+".join(s for s in (self.source, other.source) if s)
        return Vocabulary.build([*self.concepts, *other.concepts], categories=cats, source=source)

    def require_nonempty(self) -> Vocabulary:
        """Return self, or fail clearly when no concept is left."""
        if not self.concepts:
            raise EmptyInputError(
                f"The vocabulary '{self.source or '?'}' has no concepts after normalization "
                "(empty lines and duplicates are dropped). Give a file or list with at least "
                "one concept."
            )
        return self
