"""``llm:MODEL``: a concept vocabulary proposed by a language model, through litellm.

From seed topics (the target model's class names, another vocabulary such as a file of
classes, topics or a domain given by the user) the model is asked for the visual concepts a
vision neuron could respond to: colors, textures, materials, shapes, parts, objects and
scenes, each tagged with its category (the ``layer-profile`` evaluator counts them). The
answers are parsed tolerantly, normalized, deduplicated and filtered (length, generic words),
and cached on disk (see :mod:`neurolabel.backends.llm_client`), so a second run sends
nothing.

Examples:
    >>> clean_concepts([("Striped Fur.", "Texture"), ("the thing", "object"), ("fur", "material")])
    ([('striped fur', 'texture'), ('fur', 'material')], 1)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from neurolabel.plugin_core.data.vocabulary import Vocabulary, normalize_concept
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.contracts import VocabularyProvider
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

from .llm_client import CLIENT_OPTIONS, ChatRequest, LLMClient, LLMError, LLMSettings
from .llm_parsing import labelled_items
from .vocabularies import FUNCTION_WORDS

__all__ = [
    "CATEGORIES",
    "GENERIC_CONCEPTS",
    "clean_concepts",
    "concept_requests",
    "normalize_category",
    "register_vocabularies",
]

#: The categories concepts are tagged with (the layer-profile evaluator's).
CATEGORIES: tuple[str, ...] = ("color", "texture", "material", "shape", "part", "object", "scene")

_CATEGORY_SYNONYMS = {
    "colour": "color",
    "colors": "color",
    "colours": "color",
    "textures": "texture",
    "pattern": "texture",
    "patterns": "texture",
    "materials": "material",
    "shapes": "shape",
    "form": "shape",
    "parts": "part",
    "object part": "part",
    "object parts": "part",
    "objects": "object",
    "thing": "object",
    "scenes": "scene",
    "place": "scene",
    "places": "scene",
    "setting": "scene",
    "background": "scene",
}

#: Words too generic to explain a neuron (they fit every neuron), dropped from answers.
GENERIC_CONCEPTS: frozenset[str] = frozenset(
    {
        *CATEGORIES,
        *_CATEGORY_SYNONYMS,
        "thing",
        "things",
        "stuff",
        "item",
        "items",
        "image",
        "picture",
        "photo",
        "photograph",
        "visual",
        "feature",
        "features",
        "detail",
        "details",
        "element",
        "elements",
        "surface",
        "area",
        "region",
        "something",
        "various",
        "other",
        "misc",
        "miscellaneous",
        "none",
        "unknown",
        "n/a",
    }
)

DEFAULT_PER_REQUEST = 20
DEFAULT_CONCEPTS = 30
DEFAULT_MAX_WORDS = 4
MAX_CHARS = 40
_OPTIONS = CLIENT_OPTIONS | {
    "seeds",
    "topics",
    "domain",
    "per_request",
    "concepts",
    "max_words",
    "include_seeds",
}
_EDGE = re.compile(r"^[^a-z0-9]+|[^a-z0-9]+$")
_ARTICLE = re.compile(r"^(?:a|an|the|some)\s+")
_ALLOWED = re.compile(r"^[a-z0-9][a-z0-9 '\-/&]*$")

SYSTEM_PROMPT = (
    "You help explain the neurons of image-recognition networks. Neurons respond to visual "
    "concepts: colors, textures, materials, shapes, parts, objects and scenes. Answer with "
    "JSON only."
)


def normalize_category(tag: str | None) -> str | None:
    """Map a model's category tag onto :data:`CATEGORIES`, or None when it is none of them.

    Examples:
        >>> normalize_category(" Colours "), normalize_category("pattern"), normalize_category("x")
        ('color', 'texture', None)
    """
    if not tag:
        return None
    tag = normalize_concept(tag).strip(" .:;-")
    tag = _CATEGORY_SYNONYMS.get(tag, tag)
    return tag if tag in CATEGORIES else None


def _clean(text: str, max_words: int) -> str | None:
    concept = normalize_concept(text)
    concept = _EDGE.sub("", concept)
    concept = _ARTICLE.sub("", concept)
    concept = " ".join(concept.split())
    if not concept or len(concept) > MAX_CHARS or not _ALLOWED.match(concept):
        return None
    words = concept.split()
    if len(words) > max_words:
        return None
    if concept in GENERIC_CONCEPTS or all(w in FUNCTION_WORDS for w in words):
        return None
    if len(words) == 1 and len(concept) < 2:
        return None
    return concept


def _dedup_key(concept: str) -> str:
    """Singular and plural of a concept share a key ("stripes" ~ "stripe")."""
    try:
        from lemminflect import getLemma
    except ImportError:  # without the lexicon only exact duplicates merge
        return concept
    *head, last = concept.split()
    lemma = getLemma(last, upos="NOUN")
    return " ".join([*head, lemma[0] if lemma else last])


def clean_concepts(
    items: Iterable[tuple[str, str | None]], max_words: int = DEFAULT_MAX_WORDS
) -> tuple[list[tuple[str, str | None]], int]:
    """Normalize, filter and deduplicate ``(concept, category)`` items.

    Concepts are lower-cased, stripped of punctuation at the ends and of a leading article;
    those longer than ``max_words`` words or 40 characters, with unusual characters, made of
    function words only, or too generic (:data:`GENERIC_CONCEPTS`) are dropped. The first
    occurrence of a concept wins, a plural counting as its singular.

    Args:
        items: ``(concept, category tag or None)`` pairs as parsed from answers.
        max_words: Longest concept kept, in words.

    Returns:
        ``(kept, dropped)``: the kept pairs with normalized categories, and how many were
        dropped by the filters (duplicates not counted).
    """
    kept: list[tuple[str, str | None]] = []
    seen: set[str] = set()
    dropped = 0
    for raw, tag in items:
        concept = _clean(str(raw), max_words)
        if concept is None:
            dropped += 1
            continue
        key = _dedup_key(concept)
        if key in seen:
            continue
        seen.add(key)
        kept.append((concept, normalize_category(tag)))
    return kept, dropped


def concept_requests(
    seeds: Sequence[str], domain: str | None, per_request: int, concepts: int
) -> list[ChatRequest]:
    """The chat requests that ask for the concepts of ``seeds`` (or of a domain).

    Args:
        seeds: Topics or class names; ``per_request`` of them go into one request.
        domain: A description of the images (``"birds in the wild"``), or None.
        per_request: Seeds per request.
        concepts: Concepts asked for per seed (or for the domain, when there are no seeds).

    Returns:
        One request per batch of seeds, or one for the domain alone.
    """
    categories = ", ".join(CATEGORIES)
    shape = (
        '{"concepts": [{"concept": "striped fur", "category": "texture"}, '
        '{"concept": "pointed ear", "category": "part"}]}'
    )
    context = f" The images show {domain}." if domain else ""
    prompts = []
    if not seeds:
        prompts.append(
            f"List {concepts} distinct visual concepts a neuron of a vision network could "
            f"respond to in such images.{context} Cover every category: {categories}. "
        )
    for start in range(0, len(seeds), per_request):
        batch = seeds[start : start + per_request]
        listed = "\n".join(f"- {s}" for s in batch)
        prompts.append(
            f"For each of these topics, list about {concepts} visual concepts a neuron of a "
            f"vision network could respond to in images of it: its colors, textures, "
            f"materials, shapes, parts, related objects and typical scenes.{context}\n"
            f"Topics:\n{listed}\n"
        )
    return [
        ChatRequest(
            [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": prompt
                    + "Each concept: 1 to 3 words, concrete and visible, not a topic's name. "
                    f"Tag each with one category of: {categories}. Answer with JSON like " + shape,
                },
            ],
            json=True,
        )
        for prompt in prompts
    ]


class _LLMVocabulary:
    """The zero-argument provider ``llm:MODEL`` resolves to."""

    def __init__(self, spec: Spec, ctx: Any) -> None:
        spec.check_options(_OPTIONS)
        self.spec = spec
        self.ctx = ctx
        self.settings = LLMSettings.from_spec(spec, max_tokens=2048)
        self.per_request = spec.option_int("per_request", DEFAULT_PER_REQUEST) or 0
        self.concepts = spec.option_int("concepts", DEFAULT_CONCEPTS) or 0
        self.max_words = spec.option_int("max_words", DEFAULT_MAX_WORDS) or 0
        if self.per_request < 1 or self.concepts < 1 or self.max_words < 1:
            raise SpecError(f"'{spec}': per_request, concepts and max_words must be at least 1")
        self.domain = (spec.option("domain") or "").strip() or None
        self.topics = [t.strip() for t in (spec.option("topics") or "").split(",") if t.strip()]
        self.seed_spec = spec.option("seeds")
        self.include_seeds = spec.option_bool("include_seeds", True)
        self.client = LLMClient(self.settings, ctx.cache_dir, confirm=ctx.extra.get("confirm"))

    def seeds(self) -> list[str]:
        """The seed topics: ``topics=``, then ``seeds=`` (a vocabulary spec or ``target``)."""
        seeds = list(self.topics)
        spec = self.seed_spec
        if spec is None and not seeds and not self.domain:
            spec = "target"  # the target model's classes, when the labeler knows them
        if spec == "target":
            names = self.ctx.extra.get("class_names")
            if not names:
                raise SpecError(
                    f"'{self.spec}': no seed topics. The target model has no class names "
                    "here; give topics=dog,car, domain=street scenes, or seeds=file:classes.txt"
                )
            seeds.extend(str(n) for n in names)
        elif spec:
            if spec.split(":", 1)[0] == "llm":
                raise SpecError(f"'{self.spec}': seeds= cannot itself be an llm: vocabulary")
            vocabulary = self.ctx.registries.vocabularies.resolve(spec, self.ctx)()
            seeds.extend(vocabulary.concepts)
        return list(dict.fromkeys(seeds))

    def __call__(self) -> Vocabulary:
        seeds = self.seeds()
        requests = concept_requests(seeds, self.domain, self.per_request, self.concepts)
        answers = self.client.complete_many(requests, "LLM vocabulary")
        items: list[tuple[str, str | None]] = []
        if self.include_seeds:
            items.extend((s, "object") for s in seeds)
        unreadable = 0
        for answer in answers:
            found, _ = labelled_items(answer.content)
            if not found:
                unreadable += 1
            items.extend(found)
        kept, _ = clean_concepts(items, self.max_words)
        if not kept:
            raise LLMError(
                f"{self.settings.model} proposed no usable concept ({unreadable} of "
                f"{len(answers)} answers unreadable); try another model or more max_tokens"
            )
        categories = {c: t for c, t in kept if t}
        return Vocabulary.build(
            [c for c, _ in kept], categories=categories, source=str(self.spec)
        ).require_nonempty()


def _llm_factory(spec: Spec, ctx: Any) -> Callable[[], Vocabulary]:
    return _LLMVocabulary(spec, ctx)


@hookimpl
def register_vocabularies(register: Register[VocabularyProvider]) -> None:
    """Register ``llm:MODEL``."""
    register(
        "llm",
        _llm_factory,
        description=(
            "Concepts an LLM proposes for seed topics, tagged by category, cached: "
            "llm:openai/gpt-4o-mini?seeds=imagenet | topics=dog,car | domain=street scenes"
        ),
    )
