"""Verified descriptions: a chat model proposes, the evidence tests, the model refines.

For every live unit a describer that can propose (``propose_rounds`` > 0, e.g.
``litellm:MODEL?verify=ROUNDS``) suggests a few short descriptions; each candidate is
embedded as a concept by the run's scorer and tested twice, on disjoint images:

- **exemplar z**: the run's exemplar evidence for the candidate (steps 1-4 of the
  ``contrast`` aggregation: its activation-weighted excess over the probing images on the
  unit's exemplar patches), as a z-score across the layer's explained units — or, with
  fewer than 16 of them, against random sets of sampled probing images;
- **held-out r**: the correlation, over the **verification split** (a share of the images
  set aside before the exemplar search, ``verify_split``; the model never saw them and the
  exemplars never came from them), between the unit's activation and the candidate's
  whole-image score, and its Fisher z, ``atanh(r) * sqrt(n - 3)``.

A candidate's **score** is the two z-scores combined by Stouffer's method,
``(z_exemplars + z_held_out) / sqrt(2)``: the exemplars say what the unit fires most for,
the held-out images whether the words predict it on images its explanation was not built
from. The model then sees its candidates with their scores (never an image's label) and
proposes refinements, for up to ``propose_rounds`` rounds; the best score wins. The result
keeps the winner, the rejected candidates with their scores and the rounds
(``NeuronExplanation.verified``). The evaluation holdout (``holdout``) is split off first
and the verification split from the rest, so the report's own figures (faithfulness, CoSy)
never use an image the choice was tested on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..errors import NeurolabelError
from .aggregation import (
    activation_weights,
    exemplar_evidence,
    population_moments,
    typical_spread,
)
from .evidence import Evidence
from .held_out_images import VerificationImages, collect_held_out
from .image_sample import ImageSample

#: Random exemplar sets drawn for a layer with too few units to standardize across.
NULL_DRAWS = 200
#: Fewest units across which the exemplar evidence is standardized (as in ``contrast``).
MIN_UNITS = 16
#: The exemplar evidence's settings: ``contrast``'s defaults.
SHARPNESS, POWER = 4.0, 3.0


@dataclass
class Candidate:
    """One proposed description and its tests."""

    text: str
    round: int
    heldout_r: float | None
    exemplar_z: float | None
    score: float | None = None

    def to_list(self) -> list[Any]:
        return [self.text, self.round, self.heldout_r, self.exemplar_z, self.score]


@dataclass
class ProposeRequest:
    """One unit for the proposer: what it can show the model, and the history so far.

    Args:
        layer: Layer name.
        unit: Unit index.
        load_patches: The unit's exemplar patches, strongest first.
        concepts: The scorer's ranked concepts for it.
        tested: The candidates of earlier rounds with their scores, the scorer's label
            (round 0) first (empty in round 1).
        round: 1-based round number.
        captions: Each exemplar, strongest first, in the scorer's words (what a text-only
            model is told instead of seeing the grid).
    """

    layer: str
    unit: int
    load_patches: Any
    concepts: tuple[str, ...]
    tested: list[Candidate] = field(default_factory=list)
    round: int = 1
    captions: tuple[str, ...] = ()


def combined_score(exemplar_z: float | None, heldout_z: float | None) -> float | None:
    """Stouffer's combination of the two tests' z-scores (one alone when the other is
    missing; None when both are).

    Examples:
        >>> combined_score(2.0, 2.0), combined_score(None, 1.5), combined_score(None, None)
        (2.8284, 1.5, None)
    """
    present = [z for z in (exemplar_z, heldout_z) if z is not None]
    if not present:
        return None
    return round(sum(present) / math.sqrt(len(present)), 4)


def fisher_z(r: float | None, count: int) -> float | None:
    """``atanh(r) * sqrt(count - 3)``: a correlation over ``count`` images as a z-score.

    Examples:
        >>> fisher_z(0.5, 103), fisher_z(None, 50), fisher_z(0.2, 3)
        (5.4931, None, None)
    """
    if r is None or count < 4:
        return None
    return round(math.atanh(max(-0.9999, min(0.9999, r))) * math.sqrt(count - 3), 4)


class CandidateTester:
    """Scores candidate texts for one layer's units against the run's evidence.

    Args:
        evidence: The run's evidence (exemplar patches, the image sample).
        layer: The layer.
        encode_texts: The scorer's text side.
        held: The verification split (None: no held-out test, exemplar z alone).
    """

    def __init__(
        self,
        evidence: Evidence,
        layer: str,
        encode_texts: Any,
        held: VerificationImages | None,
    ) -> None:
        sims, values, sample = evidence.layer_tensors(layer, with_sample=True)
        if sample is None or sample.image_embeddings is None:
            raise NeurolabelError(
                "Verifying descriptions needs an embedding scorer (its text side embeds the "
                "candidates) and a sample of probing images (sample_size > 0)"
            )
        self.encode = encode_texts
        self.units = list(evidence.layer(layer).units)
        self.captions = _captions(sims, values, sample, list(evidence.vocabulary.concepts))
        # Candidates are standardized on the vocabulary's scale, so a z does not depend on
        # which other candidates were tested with it (each round, each unit's batch).
        raw = exemplar_evidence(
            sims, values, sample, sharpness=SHARPNESS, power=POWER, min_neurons=len(sims) + 1
        )
        self.typical_spread = typical_spread(raw)
        del sims, raw
        self.rows = {u: r for r, u in enumerate(self.units)}
        self.sample = sample
        self.values = values
        self.held_acts = None if held is None else held.acts[layer].float()
        self.held_embeddings = None if held is None else held.embeddings.float()
        # Every explained unit's exemplar patch embeddings, NaN where a slot is empty.
        dim = sample.image_embeddings.shape[1]
        self.patches = torch.full((*values.shape, dim), float("nan"))
        rows, ranks, keys = evidence.exemplar_slots(layer)
        found = evidence.scores.embeddings_for(keys) if keys else None
        if found is not None:
            self.patches[rows, ranks] = found.float()

    def caption(self, unit: int) -> tuple[str, ...]:
        """Each exemplar of ``unit``, strongest first, in the scorer's words."""
        return self.captions[self.rows[unit]]

    @property
    def images(self) -> int:
        """Held-out images a candidate is tested on."""
        return 0 if self.held_acts is None else int(self.held_acts.shape[0])

    def exemplar_z(self, embedded: Tensor) -> Tensor:
        """``[U, T]`` each text's exemplar evidence for every explained unit, as z-scores."""
        sims = torch.einsum("ukd,td->ukt", torch.nan_to_num(self.patches), embedded)
        sims[torch.isnan(self.patches[..., 0])] = float("nan")
        sample = ImageSample(
            self.sample.acts,
            image_embeddings=self.sample.image_embeddings.float(),  # type: ignore[union-attr]
            concept_embeddings=embedded,
        )
        scores = exemplar_evidence(
            sims,
            self.values,
            sample,
            sharpness=SHARPNESS,
            power=POWER,
            min_neurons=MIN_UNITS,
            typical_spread=self.typical_spread,
        )
        if len(self.units) >= MIN_UNITS:
            return scores  # standardized across the layer's units
        return self._against_random_sets(scores, sims, sample)

    def _against_random_sets(self, scores: Tensor, sims: Tensor, sample: ImageSample) -> Tensor:
        """Too few units to standardize across: each unit's score against the same score of
        ``NULL_DRAWS`` random sets of sampled images in place of its exemplars (its own
        activation weights; the concept standardization of the real score)."""
        k = self.values.shape[1]
        images = sample.scores()  # [S, T]
        if images.shape[0] < k + 1:
            return torch.full_like(scores, float("nan"))
        mean, std = population_moments(sims, torch.isfinite(self.values), sample)
        generator = torch.Generator().manual_seed(0)
        draws = torch.stack(
            [torch.randperm(images.shape[0], generator=generator)[:k] for _ in range(NULL_DRAWS)]
        )
        excess = ((images[draws] - mean) / std).clamp(min=0).pow(POWER)  # [draws, k, T]
        weights = activation_weights(self.values, sharpness=SHARPNESS)  # [U, k]
        null = torch.einsum("uk,dkt->udt", weights.to(excess.dtype), excess)
        return (scores - null.mean(dim=1)) / null.std(dim=1).clamp(min=1e-6)

    def similarity(self, unit: int, text: str) -> float | None:
        """Mean similarity of ``text`` with the unit's exemplar patches (the result's
        ``similarity`` of a description)."""
        patches = self.patches[self.rows[unit]]
        valid = ~torch.isnan(patches[:, 0])
        if not valid.any():
            return None
        embedded = self.encode([text]).float()[0]
        return round(float((patches[valid] @ embedded).mean()), 4)

    def test_many(self, items: Sequence[tuple[int, Sequence[str]]]) -> list[list[Candidate]]:
        """Test each ``(unit, texts)``: one embedding of every distinct text, one exemplar
        computation for the layer. Returns candidates (round 0; the caller sets it)."""
        texts = list(dict.fromkeys(t for _, group in items for t in group))
        if not texts:
            return [[] for _ in items]
        embedded = self.encode(texts).float()  # [T, D]
        column = {t: i for i, t in enumerate(texts)}
        z = self.exemplar_z(embedded)
        held_scores = None
        if self.held_embeddings is not None:
            held_scores = self.held_embeddings @ embedded.T  # [N, T]
        out = []
        for unit, group in items:
            row = self.rows[unit]
            tested = []
            for text in group:
                t = column[text]
                r = None
                if held_scores is not None and self.held_acts is not None:
                    r = _pearson(self.held_acts[:, row], held_scores[:, t])
                exemplar = float(z[row, t])
                exemplar_z = None if math.isnan(exemplar) else round(exemplar, 4)
                score = combined_score(exemplar_z, fisher_z(r, self.images))
                tested.append(Candidate(text, 0, r, exemplar_z, score))
            out.append(tested)
        return out


def _captions(
    sims: Tensor, values: Tensor, sample: ImageSample, concepts: list[str]
) -> list[tuple[str, ...]]:
    """Each exemplar's caption: the concept of the vocabulary it stands out on most (its
    similarity standardized over the layer's patches and the sampled images), so a
    text-only model learns what the images show without seeing them."""
    valid = torch.isfinite(values)
    mean, std = population_moments(sims, valid, sample)
    best = torch.nan_to_num((sims - mean) / std, nan=-math.inf).argmax(dim=-1)  # [U, k]
    return [
        tuple(concepts[int(c)] for c, ok in zip(row, keep, strict=True) if ok)
        for row, keep in zip(best.tolist(), valid.tolist(), strict=True)
    ]


def _pearson(x: Tensor, y: Tensor) -> float | None:
    if len(x) < 3:
        return None
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    norm = float(x.norm() * y.norm())
    return None if norm == 0 else round(float((x @ y) / norm), 4)


def verify_neurons(
    neurons: dict[str, list[Any]],
    evidence: Evidence,
    proposer: Any,
    encode_texts: Any,
    load_patches: Any,
    held: VerificationImages | None,
) -> None:
    """Run the propose-test-refine loop for every live neuron; record the winners.

    Args:
        neurons: Per layer, the explanations (changed in place).
        evidence: The run's evidence.
        proposer: Has ``propose_rounds`` and ``propose(requests) -> list[list[str]]``.
        encode_texts: The scorer's text side.
        load_patches: ``(layer, unit) -> callable`` returning the unit's patches.
        held: The verification split's activations and embeddings (None: exemplar z only).
    """
    live = [n for layer in neurons.values() for n in layer if not n.dead and n.concepts]
    if not live:
        return
    testers = {
        name: CandidateTester(evidence, name, encode_texts, held)
        for name in {n.layer for n in live}
    }
    tested: dict[tuple[str, int], list[Candidate]] = {(n.layer, n.unit): [] for n in live}
    # The scorer's own label competes (as round 0): a proposal replaces it only by testing
    # better, so a run of poor guesses cannot make a unit's description worse.
    scorers_label = _test_all(testers, [(n, [str(n.concepts[0][0])]) for n in live], 0)
    rounds = int(proposer.propose_rounds)
    stopped: str | None = None
    answered = 0
    for round_number in range(1, rounds + 1):
        requests = [
            ProposeRequest(
                n.layer,
                n.unit,
                load_patches(n.layer, n.unit),
                tuple(str(c) for c, _ in n.concepts),
                # from round 2 on, with the scorer's label: the score to beat
                [*scorers_label[(n.layer, n.unit)], *tested[(n.layer, n.unit)]]
                if round_number > 1
                else [],
                round_number,
                testers[n.layer].caption(n.unit),
            )
            for n in live
        ]
        answers = proposer.propose(requests)
        if answers is None:  # the proposer's budget is spent: keep what was tested
            stopped = f"budget, before round {round_number}"
            break
        if len(answers) != len(requests):
            raise NeurolabelError(
                f"The proposer answered {len(answers)} of {len(requests)} units in round "
                f"{round_number}"
            )
        answered += 1
        fresh = []
        for neuron, texts in zip(live, answers, strict=True):
            key = (neuron.layer, neuron.unit)
            seen = {c.text for c in [*tested[key], *scorers_label[key]]}
            new = [t for t in dict.fromkeys(texts) if t and t not in seen]
            if new:
                fresh.append((neuron, new))
        for key, candidates in _test_all(testers, fresh, round_number).items():
            tested[key].extend(candidates)
    for neuron in live:
        key = (neuron.layer, neuron.unit)
        history = tested[key]
        if not history:  # nothing usable was proposed: the unit is not verified
            continue
        ranked = sorted(
            [*history, *scorers_label[key]],
            key=lambda c: -(c.score if c.score is not None else -1e9),
        )
        winner = ranked[0]
        neuron.verified = {
            "description": winner.text,
            "score": winner.score,
            "heldout_r": winner.heldout_r,
            "exemplar_z": winner.exemplar_z,
            "images": testers[neuron.layer].images,
            "similarity": testers[neuron.layer].similarity(neuron.unit, winner.text),
            "rounds": answered,
            **({"kept": "scorer"} if winner.round == 0 else {}),
            "rejected": [c.to_list() for c in ranked[1:]],
            "proposer": getattr(proposer, "name", None),
            "saw_images": bool(getattr(proposer, "vision", True)),
            **({"stopped": stopped} if stopped else {}),
        }


def _test_all(
    testers: dict[str, CandidateTester], items: list[tuple[Any, list[str]]], round_number: int
) -> dict[tuple[str, int], list[Candidate]]:
    """Test each ``(neuron, texts)``, one batch per layer; candidates by ``(layer, unit)``."""
    by_layer: dict[str, list[tuple[Any, list[str]]]] = {}
    for neuron, texts in items:
        by_layer.setdefault(neuron.layer, []).append((neuron, texts))
    out: dict[tuple[str, int], list[Candidate]] = {}
    for layer, group in by_layer.items():
        results = testers[layer].test_many([(n.unit, texts) for n, texts in group])
        for (neuron, _), candidates in zip(group, results, strict=True):
            for candidate in candidates:
                candidate.round = round_number
            out[(neuron.layer, neuron.unit)] = candidates
    return out


def patch_loader(evidence: Evidence, count: int) -> Any:
    """``(layer, unit) -> callable`` giving the unit's first ``count`` exemplar patches."""
    import functools

    from .describe import PatchLoader

    loader = PatchLoader(evidence)
    return lambda layer, unit: functools.partial(loader.patches, layer, unit, count)


def apply_verified(neurons: list[Any]) -> None:
    """Make each verified winner its unit's description (``NeuronExplanation.description``
    and ``score`` read it from ``verified``) with its similarity to the exemplar patches.
    The scorer's ranked ``concepts`` and their p-values stay as they were. A unit whose label
    failed the label test stays unexplained: its tested candidates are kept only in
    ``verified``."""
    for neuron in neurons:
        record = neuron.verified
        if record and not neuron.unexplained and not neuron.dead:
            neuron.similarity = record.get("similarity")


def read_verification_images(
    source: Any,
    loaded: Any,
    extractor: Any,
    units: dict[str, list[int]],
    scorer: Any,
    *,
    device: Any,
    reduce: str,
    batch_size: int,
) -> VerificationImages:
    """Read the verification split once with the faithfulness evaluator's reader
    (:func:`~neurolabel.plugin_core.pipeline.held_out_images.collect_held_out`): each
    unit's activation and each image's embedding by the scorer.

    Args:
        source: The verification split (from :func:`~neurolabel.plugin_core.data.holdout.
            split_verification`).
        loaded: The target model.
        extractor: The run's extractor (with its unit map).
        units: Per layer, the explained units.
        scorer: The run's embedding scorer.
        device: Where the model runs.
        reduce: ``max`` or ``mean`` over a unit's map, as the exemplars were ranked.
        batch_size: Images per forward pass.

    Returns:
        The split's :class:`VerificationImages`.
    """
    with extractor.open(loaded, list(units)) as read:
        held = collect_held_out(
            source,
            range(len(source)),
            loaded,
            read,
            units,
            scorer,
            None,
            device=device,
            reduce=reduce,
            batch_size=batch_size,
        )
    assert held.embeddings is not None
    return VerificationImages(held.acts, held.embeddings, held.images, held.skipped)
