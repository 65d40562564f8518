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
    ``uncategorized``. Unexplained units have no label: ``shares`` leaves them out, and
    ``shares_best_ranked`` counts every live unit's best-ranked concept."""

    name = "layer-profile"

    def __init__(self, vocabulary: str | None) -> None:
        self.vocabulary = vocabulary

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]:
        spec = self.vocabulary or result.settings.get("vocabulary")
        categories: dict[str, str] = {}
        if spec and spec != "list":
            categories = dict(resolve_vocabulary(spec, context).categories)
        profile: dict[str, Any] = {}

        def shares(units: list[Any]) -> dict[str, float]:
            counts: dict[str, int] = {}
            for neuron in units:
                category = categories.get(str(neuron.concepts[0][0]), "uncategorized")
                counts[category] = counts.get(category, 0) + 1
            return {c: counts[c] / len(units) for c in sorted(counts)} if units else {}

        for layer, neurons in result.neurons.items():
            live = [n for n in neurons if not n.dead and n.concepts]
            labeled = [n for n in live if not n.unexplained]
            profile[layer] = {
                "labeled_units": len(labeled),
                "dead_units": sum(n.dead for n in neurons),
                "unexplained_units": len(live) - len(labeled),
                # the labels (significant or untested), and every live unit's best-ranked
                # concept whether its label passed the test or not
                "shares": shares(labeled),
                "shares_best_ranked": shares(live),
            }
        return {"vocabulary": spec or "list", "layers": profile}
