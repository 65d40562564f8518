"""The word table that lets the HTML report rank units by a free-text query, offline.

A browser cannot run the scorer's text encoder, so the report carries the embeddings of
every concept its units name plus the most frequent English words (``wordfreq``), taken by
the result's text side (:func:`~neurolabel.plugin_core.plugins.resolve.resolve_text_side`),
projected on their first principal components and stored as 8-bit integers. The page
embeds a query as the mean of its known words (or as the concept it names exactly) and
ranks units as ``neurolabel find`` does: each unit's best candidate (ranked concepts
weighted ``0.9 ** rank``, exemplar-group labels ``0.9``) by cosine with the query. The
projection makes the ranking approximate; ``find`` on the command line is exact.

Embedding 20,000 words takes a CPU about 20 s the first time (then the text embedder's
disk cache answers). A text side may ship the words' table ready
(``word_table() -> {"words", "vectors", "basis", "mean"}``, as the packaged sentence
embedder does); it is used when a sample of its words, embedded now, lands where the table
says (so a table never serves another model), and only the result's concepts are embedded.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from ..data.result import LabelingResult

if TYPE_CHECKING:
    from torch import Tensor

#: English words in the table besides the concepts: enough to hold descriptive words
#: ("striped" is about the 14,000th); the most frequent are left out of a multi-word
#: query's mean (they carry little meaning: "the", "of").
TABLE_WORDS = 20000
SKIPPED_WORDS = 150
DIMENSIONS = 48
#: Words of a ready table embedded again to check it belongs to this model.
CHECKED_WORDS = 8


def english_words(count: int) -> list[str]:
    """The ``count`` most frequent alphabetic English words of ``wordfreq``."""
    try:
        import wordfreq
    except ImportError:  # a dependency; a broken install still gets a concept-only table
        return []
    words = []
    for word in wordfreq.iter_wordlist("en"):
        if word.isalpha() and len(word) > 1:
            words.append(word)
        if len(words) >= count:
            break
    return words


def principal_projection(embedded: Tensor, dimensions: int) -> tuple[Tensor, Tensor]:
    """``(basis [D, d], mean [D])`` of the first ``d`` principal components of rows."""
    import torch

    mean = embedded.mean(dim=0)
    keep = max(1, min(dimensions, embedded.shape[0], embedded.shape[1]))
    _, _, vt = torch.linalg.svd(embedded - mean, full_matrices=False)
    return vt[:keep].T.contiguous(), mean


def quantize(embedded: Tensor, basis: Tensor, mean: Tensor) -> Tensor:
    """Rows projected on ``basis``, unit length, as int8 (-127..127)."""
    import torch

    projected = torch.nn.functional.normalize((embedded - mean) @ basis, dim=1)
    return (projected * 127).round().clamp(-127, 127).to(torch.int8)


def _ready_table(text_side: Any, encode: Any) -> dict[str, Any] | None:
    """The text side's shipped table, when it matches what the model embeds now."""
    import torch

    provide = getattr(text_side, "word_table", None)
    table = provide() if callable(provide) else None
    if not table:
        return None
    words = list(table["words"])
    step = max(1, len(words) // CHECKED_WORDS)
    rows = list(range(0, len(words), step))[:CHECKED_WORDS]
    fresh = quantize(encode([words[i] for i in rows]).float(), table["basis"], table["mean"])
    stored = table["vectors"][rows].float()
    agreement = torch.nn.functional.cosine_similarity(fresh.float(), stored, dim=1)
    return table if bool((agreement > 0.98).all()) else None


def query_table(
    result: LabelingResult,
    text_side: Any,
    *,
    words: int = TABLE_WORDS,
    dimensions: int = DIMENSIONS,
) -> dict[str, Any]:
    """The report's word table.

    Args:
        result: The labeling result (its concepts and exemplar-group labels).
        text_side: An object with ``encode_texts`` (the result's text side), optionally
            ``word_table()``.
        words: Frequent English words added to the concepts (a ready table brings its own).
        dimensions: Principal components kept.

    Returns:
        ``{"texts", "dim", "vectors" (base64 int8, row-major), "skip"}``.

    Examples:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> r = LabelingResult({}, {}, {"fc": [NeuronExplanation("fc", 0, [["dog", 1.0]])]})
        >>> side = SimpleNamespace(encode_texts=lambda texts: torch.nn.functional.normalize(
        ...     torch.randn(len(texts), 8), dim=1))
        >>> table = query_table(r, side, words=5, dimensions=4)
        >>> table["texts"][0], table["dim"], len(base64.b64decode(table["vectors"]))
        ('dog', 4, 24)
    """
    import torch

    encode = text_side.encode_texts
    concepts: dict[str, None] = {}
    for neurons in result.neurons.values():
        for neuron in neurons:
            for concept, _ in neuron.concepts:
                concepts[str(concept)] = None
            for concept, _, _ in neuron.groups or []:
                concepts[str(concept)] = None
    names = list(concepts)
    ready = _ready_table(text_side, encode)
    if ready is not None:
        listed = [w for w in ready["words"] if w not in concepts]
        keep = torch.tensor([i for i, w in enumerate(ready["words"]) if w not in concepts])
        own = quantize(encode(names).float(), ready["basis"], ready["mean"]) if names else None
        vectors = ready["vectors"][keep] if len(keep) else ready["vectors"][:0]
        if own is not None:
            vectors = torch.cat([own, vectors])
        frequent = list(ready["words"])
    else:
        frequent = english_words(words)
        listed = [w for w in frequent if w not in concepts]
        embedded = encode(names + listed).float()
        basis, mean = principal_projection(embedded, dimensions)
        vectors = quantize(embedded, basis, mean)
    return {
        "texts": names + listed,
        "dim": int(vectors.shape[1]),
        "vectors": base64.b64encode(vectors.numpy().tobytes()).decode("ascii"),
        "skip": frequent[:SKIPPED_WORDS],
    }


def ask_table(result: LabelingResult, context: Any) -> dict[str, Any] | None:
    """:func:`query_table` with the result's text side, or None (and the report goes
    without its Ask tab) when no text embedder is installed.

    Args:
        result: The labeling result.
        context: A resolve context (a labeler's reuses the scorer it built).
    """
    from ..errors import MissingExtraError
    from ..plugins.resolve import resolve_text_side

    try:
        text_side, _ = resolve_text_side(result, context)
        return query_table(result, text_side)
    except MissingExtraError:
        return None
