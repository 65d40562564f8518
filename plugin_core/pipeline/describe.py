"""Describers and summarizers: per-neuron labels from a chat model, combined with the scores.

A *describer* is the scorer variant of a model that cannot embed (a chat VLM): instead of
scoring every patch against every concept, it looks at a neuron's exemplar patches together
and names what they share, either freely or by picking and ranking candidates (the scorer's
best concepts for that neuron). :func:`describe_neurons` asks it for every explained neuron
and fuses its ranking with the scorer's by weighted reciprocal-rank fusion.

A *summarizer* writes one sentence per neuron from its ranked concepts and scores
(:func:`summarize_neurons`), stored in :attr:`NeuronExplanation.summary`.

Both contracts live in :mod:`~neurolabel.plugin_core.plugins.contracts` and are resolved
through the registries (describers are registered as scorers, summarizers through
``register_summarizers``; see :mod:`~neurolabel.plugin_core.plugins.resolve`), so this module
names no model.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..data.vocabulary import normalize_concept
from ..errors import NeurolabelError
from ..plugins.contracts import Describer, DescribeRequest, Summarizer

if TYPE_CHECKING:
    from PIL import Image

    from ..data.result import NeuronExplanation
    from .evidence import Evidence

#: Reciprocal-rank-fusion constant (Cormack et al., 2009): damps the weight of the top ranks.
RRF_K = 60
#: Decoded exemplar images kept while patches are cut for the describer.
_IMAGE_CACHE = 64


def combine_rankings(
    scored: Sequence[Sequence[Any]],
    described: Sequence[Sequence[Any]],
    weight: float,
    k: int = RRF_K,
) -> list[list[Any]]:
    """Fuse the scorer's and the describer's rankings of one neuron.

    Weighted reciprocal-rank fusion: a concept at rank ``r`` (1-based) of a list earns
    ``share / (k + r)`` from it, with share ``1 - weight`` for the scorer and ``weight`` for
    the describer; concepts are matched after :func:`normalize_concept`. Scores are scaled
    by ``k + 1`` so that a concept first in both lists scores 1. Concepts no list ranks with
    a non-zero share are left out; ties keep the scorer's order.

    Args:
        scored: The scorer's ``[concept, score]`` pairs, best first.
        described: The describer's ``[label, confidence]`` pairs, best first.
        weight: The describer's share, in ``[0, 1]``.
        k: The fusion constant.

    Returns:
        ``[concept, fused score]`` pairs, best first.

    Examples:
        >>> scorer, vlm = [["dog", 2.0], ["cat", 1.0]], [["cat", 0.9], ["fur", 0.5]]
        >>> fused = combine_rankings(scorer, vlm, weight=0.5)
        >>> [(c, round(s, 3)) for c, s in fused]
        [('cat', 0.992), ('dog', 0.5), ('fur', 0.492)]
    """
    if not 0 <= weight <= 1:
        raise NeurolabelError(f"The describer's weight must be in [0, 1], got {weight}")
    fused: dict[str, float] = {}
    for share, ranking in ((1 - weight, scored), (weight, described)):
        for rank, item in enumerate(ranking, start=1):
            concept = normalize_concept(str(item[0]))
            if concept and share > 0:
                fused[concept] = fused.get(concept, 0.0) + share * (k + 1) / (k + rank)
    order = sorted(fused, key=lambda c: -fused[c])  # stable: scorer's order breaks ties
    return [[c, fused[c]] for c in order]


class PatchLoader:
    """Cuts exemplar patches from the probing images, keeping a few decoded images."""

    def __init__(self, evidence: Evidence) -> None:
        self.evidence = evidence
        self.images: OrderedDict[int, Image.Image] = OrderedDict()

    def image(self, index: int) -> Image.Image:
        if index in self.images:
            self.images.move_to_end(index)
            return self.images[index]
        image = self.evidence.source.load(index)
        self.images[index] = image
        if len(self.images) > _IMAGE_CACHE:
            self.images.popitem(last=False)
        return image

    def patches(self, layer: str, unit: int, count: int) -> list[Image.Image]:
        out = []
        key_of = self.evidence.requests.key_of
        for rank in range(self.evidence.layer(layer).state.values.shape[1]):
            key = key_of.get((layer, unit, rank))
            if key is None:
                continue
            image = self.image(key[0])
            out.append(image if key[1] is None else image.crop(key[1]))
            if len(out) >= count:
                break
        return out


def describe_neurons(
    neurons: Mapping[str, list[NeuronExplanation]],
    evidence: Evidence,
    describer: Describer,
    num_concepts: int,
) -> None:
    """Ask ``describer`` about every live neuron and re-rank its concepts in place.

    Each neuron's ``concepts`` (the scorer's ranking, at least ``describer.num_candidates``
    long) become the fused ranking (:func:`combine_rankings`), cut to ``num_concepts``;
    the describer's own answer is kept in ``described``, and ``similarity`` is recomputed
    for the new top concept (None when the describer's label is not in the vocabulary).

    Args:
        neurons: Per layer, the explanations from the scorer.
        evidence: The evidence they came from (probing images, patch boxes, similarities).
        describer: The describer.
        num_concepts: Concepts kept per neuron.
    """
    loader = PatchLoader(evidence)
    live = [n for layer in neurons.values() for n in layer if not n.dead]
    requests = [
        DescribeRequest(
            n.layer,
            n.unit,
            functools.partial(loader.patches, n.layer, n.unit, describer.num_patches),
            tuple(str(c) for c, _ in n.concepts[: describer.num_candidates]),
        )
        for n in live
    ]
    answers = describer.describe(requests) if requests else []
    if len(answers) != len(requests):
        raise NeurolabelError(
            f"Describer '{describer.name}' answered {len(answers)} of {len(requests)} neurons"
        )
    index = {c: i for i, c in enumerate(evidence.vocabulary.concepts)}
    sims_of: dict[str, tuple[Any, Any, dict[int, int]]] = {}
    for neuron, answer in zip(live, answers, strict=True):
        neuron.described = [[str(label), float(conf)] for label, conf in answer]
        fused = combine_rankings(neuron.concepts, neuron.described, describer.weight)
        tested = dict(
            zip((str(c) for c, _ in neuron.concepts), neuron.p_values or [], strict=False)
        )
        neuron.concepts = fused[:num_concepts]
        if neuron.p_values is not None:  # each p-value stays with its concept (None: untested)
            neuron.p_values = [tested.get(str(c)) for c, _ in neuron.concepts]
        if neuron.layer not in sims_of:
            sims, values, _ = evidence.layer_tensors(neuron.layer)
            rows = {u: r for r, u in enumerate(evidence.layer(neuron.layer).units)}
            sims_of[neuron.layer] = (sims, values, rows)
        sims, values, rows = sims_of[neuron.layer]
        top = index.get(str(neuron.concepts[0][0])) if neuron.concepts else None
        neuron.similarity = None
        if top is not None:
            row = rows[neuron.unit]
            valid = torch.isfinite(values[row])
            if valid.any():
                value = float(torch.nanmean(sims[row, valid, top]))
                neuron.similarity = value if value == value else None


def summarize_neurons(
    neurons: Mapping[str, list[NeuronExplanation]], summarizer: Summarizer
) -> None:
    """Fill ``summary`` of every live neuron with the summarizer's sentence.

    Args:
        neurons: Per layer, the explanations.
        summarizer: The summarizer.
    """
    live = [n for layer in neurons.values() for n in layer if not n.dead and n.concepts]
    sentences = summarizer.summarize(live) if live else []
    if len(sentences) != len(live):
        raise NeurolabelError(
            f"Summarizer '{summarizer.name}' answered {len(sentences)} of {len(live)} neurons"
        )
    for neuron, sentence in zip(live, sentences, strict=True):
        neuron.summary = sentence
