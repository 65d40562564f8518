"""The paper's layer-wise finding as a metric: the concept categories of each layer's labels."""

from __future__ import annotations

from typing import Any

from ..data.result import LabelingResult
from ..plugins.context import ResolveContext
from ..plugins.resolve import resolve_vocabulary


class LayerProfileEvaluator:
    """``layer-profile[?vocabulary=SPEC]``: the share of each concept category (color,
    texture, material, shape, part, object, scene, ...) among each layer's labels — the
    paper's layer-wise finding. Categories come from the vocabulary's tags (re-resolved from
    the result's settings, or ``vocabulary=``); untagged concepts count as
    ``uncategorized``."""

    name = "layer-profile"

    def __init__(self, vocabulary: str | None) -> None:
        self.vocabulary = vocabulary

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]:
        spec = self.vocabulary or result.settings.get("vocabulary")
        categories: dict[str, str] = {}
        if spec and spec != "list":
            categories = dict(resolve_vocabulary(spec, context).categories)
        profile: dict[str, Any] = {}
        for layer, neurons in result.neurons.items():
            labeled = [n for n in neurons if not n.dead and n.concepts]
            counts: dict[str, int] = {}
            for neuron in labeled:
                category = categories.get(neuron.description, "uncategorized")
                counts[category] = counts.get(category, 0) + 1
            profile[layer] = {
                "labeled_units": len(labeled),
                "dead_units": sum(n.dead for n in neurons),
                "shares": {c: counts[c] / len(labeled) for c in sorted(counts)} if labeled else {},
            }
        return {"vocabulary": spec or "list", "layers": profile}
