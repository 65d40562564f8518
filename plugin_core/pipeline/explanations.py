"""From a layer's evidence to its neurons' explanations: aggregate, rank, keep the exemplars.

:func:`explain_layer` runs an aggregation over a layer's patch-concept similarities and
turns each unit's row of concept scores into a
:class:`~neurolabel.plugin_core.data.result.NeuronExplanation`: ranked concepts, the mean
similarity of the top concept, the exemplars with their boxes and small activation maps,
and the unit's activation statistics.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..data.result import Exemplar, NeuronExplanation
from .aggregation import Aggregation
from .evidence import Evidence, ExplainedLayer, PatchRequests
from .image_sample import ImageSample
from .patches import Box
from .significance import SignificanceSettings, benjamini_hochberg, unit_p_values
from .topk import TopKState
from .unit_character import mark_redundancy, unit_character

#: Report heatmaps need only the coarse shape of the map; this bounds result.json's size.
REPORT_MAP_SIDE = 16


def explain_layer(
    layer: ExplainedLayer,
    evidence: Evidence,
    aggregation: Aggregation,
    num_concepts: int,
    saved_patches: int,
    details: dict[str, dict[str, Any]] | None = None,
    cautions: list[str] | None = None,
    significance: SignificanceSettings | None = None,
) -> list[NeuronExplanation]:
    """Explain every explained unit of ``layer`` from the gathered evidence.

    Args:
        layer: The layer (its streaming state and explained units).
        evidence: What the run gathered (similarities, patch boxes, image sample).
        aggregation: How exemplar similarities become concept scores.
        num_concepts: Ranked concepts kept per neuron.
        saved_patches: Exemplars per neuron that keep their activation map (for reports).
        details: Filled with the aggregation's per-layer details (e.g. the validated
            correlation weight) when it reports any.
        cautions: Filled with reasons to doubt this layer's labels (one sentence each).
        significance: How to test the labels (None: not tested); a unit whose best concept
            is not significant is marked unexplained.

    Returns:
        One :class:`NeuronExplanation` per explained unit (dead units get no concepts).
    """
    state = layer.state
    requests, source, vocabulary = evidence.requests, evidence.source, evidence.vocabulary
    top_k = state.values.shape[1]
    units = torch.tensor(layer.units, dtype=torch.long)
    with_sample = (aggregation.sample != "no" or significance is not None) and len(
        evidence.sample_ids
    ) > 0
    exemplar_sims, values, sample = evidence.layer_tensors(
        layer.name, with_sample, every_unit=aggregation.whole_layer
    )
    options: dict[str, Any] = {}
    if aggregation.uses_groups:
        names = [vocabulary.category(c) or "" for c in vocabulary.concepts]
        index = {name: i for i, name in enumerate(dict.fromkeys(names))}
        options["groups"] = torch.tensor([index[n] for n in names])
    if aggregation.reports_details:
        options["details"] = {}
    scores = aggregation.function(exemplar_sims, values, sample, **options)
    if aggregation.whole_layer:  # scores of every unit: keep the explained ones
        scores = scores[units]
    if options.get("details") and details is not None:
        details[layer.name] = options["details"]
    dead = state.dead()[units]
    unseen = evidence.unseen_concepts
    ranking = scores
    if unseen is not None:
        # No evidence either way: such a concept ranks after every concept the scorer saw,
        # or it would win a unit whose seen concepts all score below average.
        ranking = scores.masked_fill(unseen.to(scores.device), float("-inf"))
        overruled = unseen[scores.argmax(dim=1).cpu()] & ~dead.cpu()
        if overruled.any() and cautions is not None:
            names = sorted({vocabulary.concepts[int(c)] for c in scores.argmax(dim=1)[overruled]})
            cautions.append(
                f"{int(overruled.sum())} unit(s) of '{layer.name}' scored highest on a concept "
                f"the scorer saw nothing of in any patch or image ({', '.join(names[:5])}"
                f"{', ...' if len(names) > 5 else ''}); such concepts are ranked after every "
                "concept it saw, as they do not suit this scorer."
            )
    order = ranking.argsort(dim=1, descending=True, stable=True)[:, :num_concepts]
    p_values = q_values = None
    if significance is not None and sample is not None:
        p_values = label_p_values(layer, evidence, sample, order, significance)
        labels = p_values[:, 0].masked_fill(dead.cpu(), float("nan"))
        q_values = benjamini_hochberg(labels)
    character = unit_character(exemplar_sims, values, list(vocabulary.concepts), dead.cpu())
    neurons = []
    for row, unit in enumerate(layer.units):
        exemplars = [
            Exemplar(
                image_index=int(state.ids[unit, rank]),
                image=source.name(int(state.ids[unit, rank])),
                activation=finite(state.values[unit, rank]),
                box=list(requests.box_of[(layer.name, unit, rank)] or []) or None,
                map=report_map(state, unit, rank) if rank < saved_patches else None,
            )
            for rank in range(top_k)
            if (layer.name, unit, rank) in requests.key_of
        ]
        stats = {
            "mean": finite(state.mean[unit]),
            "std": finite(state.std[unit]),
            "min": finite(state.min[unit]),
            "max": finite(state.max[unit]),
            "threshold": finite(state.threshold[unit]),
        }
        if bool(dead[row]):
            neurons.append(NeuronExplanation(layer.name, unit, [], exemplars, True, stats=stats))
            continue
        ranked = [[vocabulary.concepts[int(c)], finite(scores[row, c])] for c in order[row]]
        best = int(order[row, 0])
        valid = torch.isfinite(values[row])
        similarity = finite(torch.nanmean(exemplar_sims[row, valid, best])) if valid.any() else None
        tested: dict[str, Any] = {}
        if p_values is not None and q_values is not None:
            q = finite(q_values[row])
            tested = {
                "p_value": q,
                "p_values": [finite(p) for p in p_values[row].tolist()],
                "unexplained": q is not None and q > significance.level,  # type: ignore[union-attr]
            }
        neurons.append(
            NeuronExplanation(
                layer.name,
                unit,
                ranked,
                exemplars,
                False,
                stats=stats,
                similarity=similarity,
                **tested,
                **character[row],
            )
        )
    mark_redundancy(neurons)
    return neurons


def exemplar_images(layers: list[ExplainedLayer], requests: PatchRequests) -> list[int]:
    """The distinct images of the explained units' exemplars, in order of first use."""
    images: dict[int, None] = {}
    for layer in layers:
        for unit in layer.units:
            for rank in range(layer.state.values.shape[1]):
                key = requests.key_of.get((layer.name, unit, rank))
                if key is not None:
                    images[key[0]] = None
    return list(images)


def label_p_values(
    layer: ExplainedLayer,
    evidence: Evidence,
    sample: ImageSample,
    order: Tensor,
    settings: SignificanceSettings,
) -> Tensor:
    """Vocabulary-corrected p-values ``[U, n]`` of each explained unit's ranked concepts
    (:func:`~neurolabel.plugin_core.pipeline.significance.unit_p_values`), from the
    whole-image scores of its exemplars' images against the sampled images.

    Args:
        layer: The layer.
        evidence: The gathered evidence (exemplar images scored whole).
        sample: The layer's sampled whole images.
        order: ``[U, n]`` each unit's ranked concept indices.
        settings: Permutations and seed.
    """
    top_k = layer.state.values.shape[1]
    units = layer.units
    n = order.shape[1]
    scores = torch.zeros(len(units), top_k, n)
    valid = torch.zeros(len(units), top_k, dtype=torch.bool)
    in_sample = torch.zeros(len(units), top_k, dtype=torch.bool)
    sampled = set(evidence.sample_ids.tolist())
    text = evidence.scores.text
    for row, unit in enumerate(units):
        ranks = [r for r in range(top_k) if (layer.name, unit, r) in evidence.requests.key_of]
        images = [evidence.requests.key_of[(layer.name, unit, r)][0] for r in ranks]
        wholes: list[tuple[int, Box | None]] = [
            (image, None) for image in images if (image, None) in evidence.scores
        ]
        if len(wholes) < len(images):  # gathered without the test: exemplars not scored whole
            continue
        concepts = order[row]
        if text is not None:
            embedded = evidence.scores.embeddings_for(wholes)
            assert embedded is not None
            block = embedded.float() @ text[concepts].float().T
        else:
            block = evidence.scores.rows_for(wholes)[:, concepts]
        scores[row, : len(ranks)] = block
        valid[row, : len(ranks)] = True
        in_sample[row, : len(ranks)] = torch.tensor([i in sampled for i in images])
    cache = evidence.significance_nulls.setdefault(layer.name, {})
    return unit_p_values(scores, in_sample, valid, order, sample, settings, cache)


def report_map(state: TopKState, unit: int, rank: int) -> list[list[float]] | None:
    """The exemplar's low-resolution activation map, shrunk and rounded for the result.

    Args:
        state: A layer's streaming top-k state (None maps: a vector layer).
        unit: The unit.
        rank: The exemplar's rank.

    Returns:
        At most :data:`REPORT_MAP_SIDE` cells a side, 4 significant digits, or None.
    """
    if state.maps is None:
        return None
    cells = state.maps[unit, rank].float()
    if max(cells.shape) > REPORT_MAP_SIDE:
        scale = REPORT_MAP_SIDE / max(cells.shape)
        size = (max(1, round(cells.shape[0] * scale)), max(1, round(cells.shape[1] * scale)))
        cells = torch.nn.functional.adaptive_avg_pool2d(cells[None, None], size)[0, 0]
    return [[float(f"{v:.4g}") for v in row] for row in cells.tolist()]


def finite(value: Any) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite (JSON has neither).

    Examples:
        >>> finite(2), finite(float("nan")), finite(float("-inf"))
        (2.0, None, None)
    """
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None
