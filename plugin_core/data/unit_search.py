"""Ask a result's labels: rank units by a free-text query, compare two results.

Both work on what a result stores, with a text embedder given as a function
(``texts -> [N, D]`` L2-normalized rows, a scorer's text side): no model runs, so a
26,000-unit result answers in about a second.

A unit's *candidates* are its ranked concepts, the concept at rank ``r`` weighted
``decay ** r`` (the explanation is a ranked set, not only its top label), and the labels of
its exemplar groups (what clusters of its exemplars show, weighted ``decay``): a unit whose
second concept or second exemplar group matches the query is found, a little below one
whose top label does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ..errors import NeurolabelError

if TYPE_CHECKING:
    from torch import Tensor

#: A :class:`~neurolabel.plugin_core.data.result.LabelingResult` and a
#: :class:`~neurolabel.plugin_core.data.result.NeuronExplanation` (not imported: the result
#: module imports this one for ``LabelingResult.find``).
LabelingResult = Any
NeuronExplanation = Any

#: ``texts -> [N, D]`` L2-normalized embeddings.
EncodeTexts = Callable[[Sequence[str]], "Tensor"]
#: Weight lost per rank of a unit's concepts.
DECAY = 0.9


@dataclass
class UnitMatch:
    """A unit found by a query.

    Args:
        layer: Its layer.
        unit: Its index.
        label: Its description (``(unexplained)`` when no concept passed the label test).
        score: Match with the query (cosine times the candidate's rank weight).
        matched: The candidate concept that matched best.
        p_value: Its label's p-value (None: untested).
        unexplained: Its best concept was not significant.
    """

    layer: str
    unit: int
    label: str
    score: float
    matched: str
    p_value: float | None
    unexplained: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def candidates(neuron: NeuronExplanation, decay: float = DECAY) -> list[tuple[str, float]]:
    """A unit's concepts with their weights: ranked concepts ``decay ** rank``, exemplar
    groups' labels ``decay`` (a concept listed twice keeps its larger weight).

    Examples:
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> n = NeuronExplanation("fc", 0, [["red", 1.0], ["blue", 0.5]],
        ...                       groups=[["red", 6, 0.9], ["green", 4, 0.8]])
        >>> [(c, round(w, 2)) for c, w in candidates(n)]
        [('red', 1.0), ('blue', 0.9), ('green', 0.9)]
    """
    weights: dict[str, float] = {}
    for rank, (concept, _) in enumerate(neuron.concepts):
        weights[str(concept)] = max(weights.get(str(concept), 0.0), decay**rank)
    for concept, _, _ in neuron.groups or []:
        weights[str(concept)] = max(weights.get(str(concept), 0.0), decay)
    return list(weights.items())


def _live(result: LabelingResult, layer: str | None) -> list[NeuronExplanation]:
    if layer is not None and layer not in result.neurons:
        raise NeurolabelError(
            f"Layer '{layer}' is not in this result; its layers: {', '.join(result.neurons)}"
        )
    layers = [layer] if layer is not None else list(result.neurons)
    return [n for name in layers for n in result.neurons[name] if not n.dead and n.concepts]


def _candidate_table(
    neurons: Sequence[NeuronExplanation], decay: float
) -> tuple[list[str], Tensor, Tensor]:
    """Distinct concepts, and per unit the ``[U, R]`` concept indices and weights (padded
    with weight 0)."""
    import torch

    listed = [candidates(n, decay) for n in neurons]
    concepts = list(dict.fromkeys(c for pairs in listed for c, _ in pairs))
    index = {c: i for i, c in enumerate(concepts)}
    width = max((len(p) for p in listed), default=1)
    # padded Python rows, one tensor each: per-element tensor writes cost seconds at 26k units
    id_rows = [[index[c] for c, _ in pairs] + [0] * (width - len(pairs)) for pairs in listed]
    weight_rows = [[w for _, w in pairs] + [0.0] * (width - len(pairs)) for pairs in listed]
    ids = torch.tensor(id_rows, dtype=torch.long).view(len(neurons), width)
    weights = torch.tensor(weight_rows, dtype=torch.float32).view(len(neurons), width)
    return concepts, ids, weights


def find_units(
    result: LabelingResult,
    query: str,
    encode_texts: EncodeTexts,
    *,
    layer: str | None = None,
    top: int = 10,
    decay: float = DECAY,
) -> list[UnitMatch]:
    """Rank a result's units by how well their explanation matches a free-text query.

    A unit's score is the best of its candidates (ranked concepts and exemplar-group labels,
    see the module) by cosine with the query in the text embedding, times the candidate's
    weight. The query need not be in the vocabulary: "crimson" finds units labeled red.

    Args:
        result: The labeling result.
        query: Free text.
        encode_texts: The text embedder (a scorer's ``encode_texts``).
        layer: Search one layer (default: all).
        top: Units returned.
        decay: Weight lost per rank.

    Returns:
        The best ``top`` matches, best first (dead units are never returned; unexplained
        ones are, flagged).

    Examples:
        >>> import torch
        >>> from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation
        >>> table = {"red": [1.0, 0.0], "blue": [0.0, 1.0], "crimson": [0.9, 0.1]}
        >>> encode = lambda texts: torch.nn.functional.normalize(
        ...     torch.tensor([table[t] for t in texts]), dim=1)
        >>> r = LabelingResult({}, {}, {"fc": [NeuronExplanation("fc", 0, [["blue", 1.0]]),
        ...                                    NeuronExplanation("fc", 1, [["red", 1.0]])]})
        >>> [(m.unit, m.matched) for m in find_units(r, "crimson", encode, top=1)]
        [(1, 'red')]
    """

    if not query.strip():
        raise NeurolabelError("Give a query: a few words, e.g. 'striped animal'")
    neurons = _live(result, layer)
    if not neurons:
        return []
    concepts, ids, weights = _candidate_table(neurons, decay)
    embedded = encode_texts([query.strip(), *concepts]).float()
    cosine = embedded[1:] @ embedded[0]  # [concepts]
    scored = cosine[ids] * weights
    scored = scored.masked_fill(weights == 0, float("-inf"))
    best, column = scored.max(dim=1)
    order = best.argsort(descending=True, stable=True)[: max(0, top)]
    out = []
    for row in order.tolist():
        neuron = neurons[row]
        out.append(
            UnitMatch(
                layer=neuron.layer,
                unit=neuron.unit,
                label=neuron.description,
                score=round(float(best[row]), 6),
                matched=concepts[int(ids[row, column[row]])],
                p_value=neuron.p_value,
                unexplained=neuron.unexplained,
            )
        )
    return out


def unit_embeddings(
    neurons: Sequence[NeuronExplanation],
    encode_texts: EncodeTexts,
    decay: float = DECAY,
) -> Tensor:
    """``[U, D]`` L2-normalized embedding of each unit's explanation: the weighted mean of
    its candidates' text embeddings."""
    import torch

    concepts, ids, weights = _candidate_table(neurons, decay)
    if not concepts:
        return torch.zeros(len(neurons), 1)
    embedded = encode_texts(concepts).float()
    # in blocks of units: [block, candidates, D] stays small for a 26,000-unit layer
    mixed = torch.cat(
        [
            torch.einsum("urd,ur->ud", embedded[ids[i : i + 2048]], weights[i : i + 2048])
            for i in range(0, len(neurons), 2048)
        ]
    )
    return torch.nn.functional.normalize(mixed, dim=1)


def compare_results(
    a: LabelingResult,
    b: LabelingResult,
    encode_texts: EncodeTexts,
    *,
    layer_a: str | None = None,
    layer_b: str | None = None,
    synonym: float = 0.85,
    pairs: int = 20,
    decay: float = DECAY,
    unexplained: bool = False,
) -> dict[str, Any]:
    """What two results' units see in common and apart.

    The concepts of a result are its labeled units' top concepts (dead units left out, and
    unexplained ones unless ``unexplained``: then their best-ranked candidate counts). A
    concept of one result is *shared* when the other has it or a synonym of it (text
    cosine at least ``synonym``), else it is present in that result only. For
    each shared concept the best-matching unit pair (the highest cosine between the units'
    explanation embeddings, :func:`unit_embeddings`) is listed. Coverage counts each
    result's labeled units per concept category (``settings.concept_categories``).

    Args:
        a: A result.
        b: Another result (another model, layer, or run).
        encode_texts: The text embedder.
        layer_a: Compare this layer of ``a`` (default: all).
        layer_b: Compare this layer of ``b`` (default: all).
        synonym: Text cosine above which two concepts count as one.
        pairs: Unit pairs listed.
        decay: Weight lost per rank (unit embeddings).
        unexplained: Also count units whose label did not pass the label test, by their
            best-ranked concept.

    Returns:
        ``{"a", "b", "shared", "only_a", "only_b", "pairs", "coverage", "figures"}``:
        ``shared`` rows ``{"concept", "in_b", "units_a", "units_b", "similarity"}``,
        ``only_*`` rows ``{"concept", "units"}``, ``pairs`` rows ``{"a": [layer, unit],
        "b": [layer, unit], "concept", "similarity"}``, ``coverage`` ``{category: {"a": n,
        "b": n}}`` and ``figures`` (counts and the shared share of each side's concepts).
    """
    import torch

    units_a = [n for n in _live(a, layer_a) if unexplained or not n.unexplained]
    units_b = [n for n in _live(b, layer_b) if unexplained or not n.unexplained]
    count_a = Counter(_top(n) for n in units_a)
    count_b = Counter(_top(n) for n in units_b)
    names_a, names_b = list(count_a), list(count_b)
    shared: list[dict[str, Any]] = []
    only_a: list[dict[str, Any]] = []
    only_b: list[dict[str, Any]] = []
    if names_a and names_b:
        embedded = encode_texts([*names_a, *names_b]).float()
        cosine = embedded[: len(names_a)] @ embedded[len(names_a) :].T
        best_b, at_b = cosine.max(dim=1)
        best_a = cosine.max(dim=0).values
    else:
        best_b = at_b = best_a = torch.zeros(0)
    for i, concept in enumerate(names_a):
        if len(names_b) and float(best_b[i]) >= synonym:
            match = names_b[int(at_b[i])]
            shared.append(
                {
                    "concept": concept,
                    "in_b": match,
                    "units_a": count_a[concept],
                    "units_b": count_b[match],
                    "similarity": round(float(best_b[i]), 4),
                }
            )
        else:
            only_a.append({"concept": concept, "units": count_a[concept]})
    for j, concept in enumerate(names_b):
        if not (len(names_a) and float(best_a[j]) >= synonym):
            only_b.append({"concept": concept, "units": count_b[concept]})
    shared.sort(key=lambda r: (-(r["units_a"] + r["units_b"]), r["concept"]))
    only_a.sort(key=lambda r: (-r["units"], r["concept"]))
    only_b.sort(key=lambda r: (-r["units"], r["concept"]))
    matched_pairs = _best_pairs(units_a, units_b, shared, encode_texts, decay)[: max(0, pairs)]
    categories_a = a.settings.get("concept_categories") or {}
    categories_b = b.settings.get("concept_categories") or {}
    coverage: dict[str, dict[str, int]] = {}
    for side, units, categories in (("a", units_a, categories_a), ("b", units_b, categories_b)):
        for neuron in units:
            category = str(categories.get(_top(neuron)) or "uncategorized")
            coverage.setdefault(category, {"a": 0, "b": 0})[side] += 1
    shared_b = {row["in_b"] for row in shared}
    figures = {
        "concepts_a": len(names_a),
        "concepts_b": len(names_b),
        "shared_a": len(shared),
        "shared_b": len(shared_b),
        "shared_share_a": round(len(shared) / len(names_a), 4) if names_a else None,
        "shared_share_b": round(len(shared_b) / len(names_b), 4) if names_b else None,
        "labeled_units_a": len(units_a),
        "labeled_units_b": len(units_b),
        "synonym": synonym,
        "unexplained_counted": unexplained,
    }
    return {
        "a": _describe(a, layer_a),
        "b": _describe(b, layer_b),
        "figures": figures,
        "shared": shared,
        "only_a": only_a,
        "only_b": only_b,
        "pairs": matched_pairs,
        "coverage": dict(sorted(coverage.items())),
    }


def _top(neuron: NeuronExplanation) -> str:
    """A unit's top concept (an unexplained unit's best-ranked candidate)."""
    return str(neuron.concepts[0][0])


def _describe(result: LabelingResult, layer: str | None) -> dict[str, Any]:
    return {
        "model": result.model.get("name"),
        "layers": [layer] if layer else list(result.neurons),
        "scorer": result.settings.get("scorer"),
    }


def _best_pairs(
    units_a: list[NeuronExplanation],
    units_b: list[NeuronExplanation],
    shared: list[dict[str, Any]],
    encode_texts: EncodeTexts,
    decay: float,
) -> list[dict[str, Any]]:
    """Per shared concept, the pair of units (one labeled with it in each result) whose
    explanations are most alike; best pairs first."""
    if not shared:
        return []
    by_a: dict[str, list[int]] = {}
    by_b: dict[str, list[int]] = {}
    for i, n in enumerate(units_a):
        by_a.setdefault(_top(n), []).append(i)
    for j, n in enumerate(units_b):
        by_b.setdefault(_top(n), []).append(j)
    wanted_a = sorted({i for row in shared for i in by_a[row["concept"]]})
    wanted_b = sorted({j for row in shared for j in by_b[row["in_b"]]})
    import torch

    vectors_a = unit_embeddings([units_a[i] for i in wanted_a], encode_texts, decay)
    vectors_b = unit_embeddings([units_b[j] for j in wanted_b], encode_texts, decay)
    emb_a = dict(zip(wanted_a, vectors_a, strict=True))
    emb_b = dict(zip(wanted_b, vectors_b, strict=True))

    out = []
    for row in shared:
        left, right = by_a[row["concept"]], by_b[row["in_b"]]
        cosine = torch.stack([emb_a[i] for i in left]) @ torch.stack([emb_b[j] for j in right]).T
        flat = int(cosine.argmax())
        i, j = left[flat // len(right)], right[flat % len(right)]
        out.append(
            {
                "a": [units_a[i].layer, units_a[i].unit],
                "b": [units_b[j].layer, units_b[j].unit],
                "concept": row["concept"],
                "similarity": round(float(cosine.max()), 4),
            }
        )
    out.sort(key=lambda r: (-r["similarity"], r["concept"]))
    return out
