"""What a layer's explanations add up to: counts, frequent concepts, score distribution."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ..data.result import LabelingResult


@dataclass
class LayerSummary:
    """Figures about one layer of a result, shared by the terminal and HTML reports.

    Args:
        name: Layer name.
        kind: ``spatial`` or ``vector`` (None when the result does not say).
        shape: Output shape without the batch dimension, when known.
        units: Units in the layer (explained or not).
        explained: Units explained in the result.
        dead: Explained units that never varied (no label).
        unexplained: Explained units whose best concept was not significant (no label).
        top_concepts: The most frequent top concepts with their neuron counts.
        distinct: Distinct top concepts over the labeled units.
        scores: Top-concept scores of the labeled units, in unit order.
        similarities: ``similarity`` of the labeled units that have one.
        summaries: Units with a summary sentence.
        clarities: ``clarity`` of the live units that have one.
        polysemantic: Live units whose exemplars form two or more labeled groups.
        redundant: Labeled units sharing their top concept with another unit.
        measured: Live units with exemplar groups measured (results before 1.4 have none).
    """

    name: str
    kind: str | None
    shape: list[int] | None
    units: int
    explained: int
    dead: int
    top_concepts: list[tuple[str, int]] = field(default_factory=list)
    distinct: int = 0
    scores: list[float] = field(default_factory=list)
    similarities: list[float] = field(default_factory=list)
    summaries: int = 0
    unexplained: int = 0
    clarities: list[float] = field(default_factory=list)
    polysemantic: int = 0
    redundant: int = 0
    measured: int = 0

    @property
    def labeled(self) -> int:
        """Explained units that got a label (neither dead nor unexplained)."""
        return self.explained - self.dead - self.unexplained

    def score_quantiles(self) -> dict[str, float]:
        """``min``, ``p25``, ``median``, ``p75``, ``max`` of the top scores (empty if none)."""
        return quantiles(self.scores)


def summarize_layer(result: LabelingResult, layer: str, top: int = 10) -> LayerSummary:
    """Summarize the explanations of one layer.

    Args:
        result: The labeling result.
        layer: A layer of ``result``.
        top: How many frequent concepts to keep.

    Returns:
        The :class:`LayerSummary`.

    Examples:
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> neurons = [NeuronExplanation("fc", 0, [["dog", 2.0]]),
        ...            NeuronExplanation("fc", 1, [["dog", 1.0]]),
        ...            NeuronExplanation("fc", 2, [], dead=True)]
        >>> s = summarize_layer(LabelingResult({}, {"fc": {"units": 3}}, {"fc": neurons}), "fc")
        >>> s.labeled, s.dead, s.top_concepts, s.scores
        (2, 1, [('dog', 2)], [2.0, 1.0])
    """
    neurons = result.neurons.get(layer, [])
    info: dict[str, Any] = result.layers.get(layer, {})
    labeled = [n for n in neurons if not n.dead and not n.unexplained and n.concepts]
    counts = Counter(n.description for n in labeled)
    scores = [s for n in labeled if (s := n.score) is not None and math.isfinite(s)]
    similarities = [
        float(n.similarity)
        for n in labeled
        if n.similarity is not None and math.isfinite(float(n.similarity))
    ]
    shape = info.get("shape")
    live = [n for n in neurons if not n.dead]
    clarities = [
        float(n.clarity) for n in live if n.clarity is not None and math.isfinite(n.clarity)
    ]
    return LayerSummary(
        name=layer,
        kind=info.get("kind"),
        shape=list(shape) if shape else None,
        units=int(info.get("units") or len(neurons)),
        explained=len(neurons),
        dead=sum(1 for n in neurons if n.dead),
        unexplained=sum(1 for n in neurons if n.unexplained and not n.dead),
        top_concepts=counts.most_common(top),
        distinct=len(counts),
        scores=scores,
        similarities=similarities,
        summaries=sum(1 for n in neurons if n.summary),
        clarities=clarities,
        polysemantic=sum(1 for n in live if (n.polysemanticity or 0) >= 2),
        redundant=sum(1 for n in labeled if (n.redundancy or 0) >= 1),
        measured=sum(1 for n in live if n.groups is not None),
    )


def quantiles(values: list[float]) -> dict[str, float]:
    """Five-number summary of ``values`` (linear interpolation between ranks).

    Args:
        values: Numbers (any order).

    Returns:
        ``{"min", "p25", "median", "p75", "max"}``, or ``{}`` for no values.

    Examples:
        >>> quantiles([4.0, 1.0, 2.0, 3.0])
        {'min': 1.0, 'p25': 1.75, 'median': 2.5, 'p75': 3.25, 'max': 4.0}
    """
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    return {"min": at(0), "p25": at(0.25), "median": at(0.5), "p75": at(0.75), "max": at(1)}


def histogram(values: list[float], bins: int = 20) -> tuple[list[int], list[float]]:
    """Counts of ``values`` in ``bins`` equal-width bins.

    Args:
        values: Numbers.
        bins: Number of bins.

    Returns:
        ``(counts, edges)`` with ``len(edges) == bins + 1``; empty lists for no values.

    Examples:
        >>> histogram([0.0, 0.5, 1.0], bins=2)
        ([1, 2], [0.0, 0.5, 1.0])
    """
    if not values:
        return [], []
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 0.5, high + 0.5
    width = (high - low) / bins
    counts = [0] * bins
    for value in values:
        counts[min(int((value - low) / width), bins - 1)] += 1
    return counts, [low + i * width for i in range(bins + 1)]
