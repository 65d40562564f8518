"""Turn patch-concept similarities into per-neuron concept scores, vectorized over neurons.

Every function takes the exemplars of all neurons of a layer at once:

* ``sims``: ``[C, k, V]`` similarity of neuron c's j-th exemplar patch to concept v;
* ``acts``: ``[C, k]`` the exemplars' activations, descending, ``-inf`` where missing;

and returns ``[C, V]`` scores, higher = better description. Functions that, like
CLIP-Dissect's ``cos-cubed``, need image-level statistics over the whole probing set also
receive a :class:`ImageSample`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import NeurolabelError, SpecError
from ..plugins.spec import Spec
from . import clip_dissect
from .clip_dissect import (
    cos_cubed,
    pointwise_mutual_information,
    soft_wpmi_log_given,
    wpmi_log_given,
)
from .image_sample import ImageSample, block_rows

#: Weight of the image-level correlation evidence in :func:`contrast` (Stouffer's method) when
#: it is fixed, or when the sample is too small to validate one (``correlation="auto"``).
CORRELATION_WEIGHT = 1.0
#: Candidate weights that ``contrast(correlation="auto")`` validates on the sampled images.
CORRELATION_GRID = (0.0, 0.5, 1.0, 2.0, 4.0)
#: Folds of the sampled images in that validation.
CORRELATION_FOLDS = 5
#: Fewest sampled images for validating the weight: folds of at least 10 held-out images.
AUTO_MIN_SAMPLE = 50


@dataclass(frozen=True)
class Aggregation:
    """A named aggregation function and whether it needs an :class:`ImageSample`."""

    name: str
    function: Callable[..., Tensor]
    #: Whole-image statistics over a sample of the probing set: ``"required"``, ``"used"``
    #: (better with them, works without) or ``"no"``.
    sample: str = "no"
    description: str = ""
    #: Whether the function takes ``groups`` (each concept's category as an integer).
    uses_groups: bool = False
    #: Whether the function takes ``details``, a dict it fills with the choices it made for
    #: the layer (JSON-friendly; the labeler stores it in ``settings.aggregation_details``).
    reports_details: bool = False
    #: Whether the function scores every unit of the layer from the sample alone (its
    #: ``acts`` then hold every unit; the explained units' rows are taken from the result):
    #: CLIP-Dissect as published, whose concept prior spans the whole layer.
    whole_layer: bool = False


def _valid(acts: Tensor) -> Tensor:
    return torch.isfinite(acts)


def activation_weights(acts: Tensor, sharpness: float | None = None) -> Tensor:
    """Per-exemplar weights ``[C, k]`` summing to 1 over each neuron's valid exemplars.

    Args:
        acts: ``[C, k]`` exemplar activations (``-inf`` = missing).
        sharpness: None weights proportionally to the activation above the neuron's weakest
            exemplar (the paper's activation weighting, made shift-invariant so it also works
            for logits and pre-activation layers). A number ``b`` instead uses
            ``softmax(b * (a - a_max) / spread)``: larger = trust the top exemplars more.

    Returns:
        Weights with zeros at missing exemplars.
    """
    valid = _valid(acts)
    filled = torch.where(valid, acts, torch.zeros_like(acts))
    top = filled.amax(dim=1, keepdim=True)
    low = torch.where(valid, acts, top.expand_as(acts)).amin(dim=1, keepdim=True)
    spread = (top - low).clamp(min=1e-8)
    if sharpness is None:
        raw = torch.where(valid, (filled - low) / spread + 1e-3, torch.zeros_like(acts))
    else:
        logits = torch.where(
            valid, sharpness * (filled - top) / spread, torch.full_like(acts, -math.inf)
        )
        raw = torch.softmax(logits, dim=1)
    return raw / raw.sum(dim=1, keepdim=True).clamp(min=1e-12)


def mean_similarity(sims: Tensor, acts: Tensor, sample: ImageSample | None = None) -> Tensor:
    """The paper's aggregation: activation-weighted mean patch similarity, minus the
    concept's average over all neurons (so concepts that fit everything do not win).

    Examples:
        >>> sims = torch.tensor([[[0.9, 0.5]], [[0.1, 0.5]]])  # 2 neurons, 1 exemplar, 2 concepts
        >>> [[round(x, 3) for x in row] for row in mean_similarity(sims, torch.ones(2, 1)).tolist()]
        [[0.4, 0.0], [-0.4, 0.0]]
    """
    weights = activation_weights(acts)
    per_neuron = _by_chunks(
        sims, lambda rows, part: torch.einsum("ck,ckv->cv", weights[rows], torch.nan_to_num(part))
    )
    if per_neuron.shape[0] > 1:
        per_neuron = per_neuron - per_neuron.mean(dim=0, keepdim=True)
    return per_neuron


def _top_rows(sims: Tensor, acts: Tensor, top_k: int) -> tuple[Tensor, Tensor]:
    k = min(top_k, sims.shape[1])
    return sims[:, :k], _valid(acts[:, :k])


def _neuron_chunks(sims: Tensor) -> Iterator[slice]:
    """Slices of neurons whose ``[c, k, V]`` blocks hold about
    :data:`~neurolabel.plugin_core.pipeline.image_sample.BLOCK_ELEMENTS` elements: the
    temporaries of a whole large layer and vocabulary would need gigabytes each."""
    step = block_rows(math.prod(sims.shape[1:]))
    for start in range(0, sims.shape[0], step):
        yield slice(start, start + step)


def _by_chunks(sims: Tensor, function: Callable[[slice, Tensor], Tensor]) -> Tensor:
    """``function(rows, sims[rows])`` over chunks of neurons (:func:`_neuron_chunks`),
    concatenated."""
    return torch.cat([function(rows, sims[rows]) for rows in _neuron_chunks(sims)])


def wpmi(
    sims: Tensor,
    acts: Tensor,
    sample: ImageSample | None = None,
    top_k: int = 28,
    a: float = 2.0,
    lam: float = 0.6,
    min_prob: float = 1e-7,
) -> Tensor:
    """CLIP-Dissect's WPMI: ``sum_j log p(concept | exemplar j) - lam * log p(concept)``.

    ``p(concept | image)`` is the softmax over concepts of ``a * similarity``; ``p(concept)``
    is the mean over neurons (log-sum-exp), as in CLIP-Dissect's code.
    """
    top, valid = _top_rows(sims, acts, top_k)

    def given(rows: slice, part: Tensor) -> Tensor:
        return wpmi_log_given(part, valid[rows], a, min_prob)

    return pointwise_mutual_information(_by_chunks(top, given), lam)


def soft_wpmi(
    sims: Tensor,
    acts: Tensor,
    sample: ImageSample | None = None,
    top_k: int = 100,
    a: float = 10.0,
    lam: float = 1.0,
    p_start: float = 0.998,
    p_end: float = 0.97,
    min_prob: float = 1e-7,
) -> Tensor:
    """CLIP-Dissect's soft-WPMI with its defaults (top_k=100, a=10, lam=1, p 0.998→0.97).

    Exemplar j of the top_k is "in the concept's example set" with probability decreasing
    linearly from ``p_start`` to ``p_end``;
    ``log p(concept | neuron) = sum_j log(1 + p_j (p(concept|image_j) - 1))``.

    Examples:
        >>> sims = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
        >>> soft_wpmi(sims, torch.ones(2, 1)).argmax(dim=1).tolist()
        [0, 1]
    """
    top, valid = _top_rows(sims, acts, top_k)

    def given(rows: slice, part: Tensor) -> Tensor:
        return soft_wpmi_log_given(part, valid[rows], top_k, a, p_start, p_end, min_prob)

    return pointwise_mutual_information(_by_chunks(top, given), lam)


def family_adjusted(scores: Tensor, groups: Tensor) -> Tensor:
    """Put concept categories of different sizes on an equal footing (Sidak correction).

    A neuron's best score among 1000 object concepts is large by chance alone compared with
    its best among 11 colors. For roughly standard-normal scores ``z`` of a category with
    ``n`` concepts, ``-ndtri(1 - ndtr(z) ** n)`` is the z-score of the category's best
    match under the null, so the best color and the best object become comparable. The
    order within a category does not change.

    Args:
        scores: ``[C, V]`` z-like scores.
        groups: ``[V]`` integer category of each concept.

    Returns:
        Adjusted ``[C, V]`` scores.

    Examples:
        >>> adjusted = family_adjusted(torch.tensor([[3.0, 0.0, 2.0]]), torch.tensor([0, 0, 1]))
        >>> [round(x, 2) for x in adjusted[0].tolist()]  # the pair's best shrinks, the single stays
        [2.78, -0.67, 2.0]
    """
    out = scores.clone().double()
    for group in groups.unique():
        columns = groups == group
        count = int(columns.sum())
        if count <= 1:
            continue
        tail = -torch.expm1(count * torch.special.log_ndtr(out[:, columns]))
        out[:, columns] = -torch.special.ndtri(tail.clamp(min=1e-300))
    return out.float()


def _standardized_columns(x: Tensor) -> Tensor:
    """Columns centered and scaled to unit norm; a constant column (no correlation with
    anything) is left at zero."""
    x = x - x.mean(dim=0, keepdim=True)
    norm = x.norm(dim=0, keepdim=True)
    return torch.where(norm > 1e-12, x / norm.clamp(min=1e-12), torch.zeros_like(x))


def sample_correlation_z(sample: ImageSample, rows: Tensor | None = None) -> Tensor:
    """How surely each neuron's activation tracks each concept over the sampled images.

    The Pearson correlation ``r`` of a neuron's per-image activation with a concept's
    whole-image score, as a z-statistic: ``atanh(r) * sqrt(S - 3)`` (Fisher) for ``S``
    images, roughly standard normal when neuron and concept are unrelated, so it can be
    combined with other z-scores. Constant neurons or concepts get 0. Computed from the
    sample's moments and centered products (:class:`ImageSample`), which never form the
    ``[S, V]`` scores of a factored sample: memory stays small for large vocabularies.

    Args:
        sample: Activations ``[S, C]`` and concept scores over the same ``S`` images.
        rows: Only these sampled images (indices into ``S``); None = all.

    Returns:
        ``[C, V]`` z-statistics.

    Examples:
        >>> acts = torch.tensor([[0.0], [1.0], [2.0], [3.0], [4.0]])
        >>> sims = torch.stack([acts[:, 0], -acts[:, 0], torch.ones(5)], dim=1)
        >>> z = sample_correlation_z(ImageSample(acts, sims))
        >>> (z[0, 0] > 3, z[0, 1] < -3, float(z[0, 2]))
        (tensor(True), tensor(True), 0.0)
    """
    acts = sample.acts if rows is None else sample.acts[rows]
    count = acts.shape[0]
    if count < 4:
        return torch.zeros(acts.shape[1], sample.num_concepts)
    _, _, squares = sample.moments(rows)
    norms = squares.sqrt()
    # Centered concept scores, scaled to unit norm per concept, against standardized acts.
    r = sample.centered_products(_standardized_columns(acts.double()), rows)
    r = torch.where(norms > 1e-12, r / norms.clamp(min=1e-12), torch.zeros_like(r))
    return (torch.atanh(r.clamp(-0.9999, 0.9999)) * math.sqrt(count - 3)).float()


def population_moments(
    sims: Tensor, valid: Tensor, sample: ImageSample | None, rows: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Mean and standard deviation ``[V]`` of each concept over the valid exemplar patches
    and the sampled whole images (only ``rows`` of them, when given), accumulated in chunks
    (no copy of ``sims`` or of the sample's similarities).

    Args:
        sims: ``[C, k, V]`` exemplar similarities.
        valid: ``[C, k]`` which exemplars exist.
        sample: Whole-image statistics (None: the exemplars alone).
        rows: Only these sampled images.

    Returns:
        ``(mean [V], std [V])``; the spread is floored at ``1e-6``.

    Examples:
        >>> sims = torch.tensor([[[0.0], [2.0]]])
        >>> mean, std = population_moments(sims, torch.ones(1, 2, dtype=torch.bool), None)
        >>> float(mean[0]), round(float(std[0]), 4)
        (1.0, 1.4142)
    """
    total = torch.zeros(sims.shape[-1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    count = 0
    for neurons in _neuron_chunks(sims):
        block = sims[neurons][valid[neurons]].double()
        total += block.sum(dim=0)
        squares += block.square_().sum(dim=0)
        count += block.shape[0]
    if sample is not None and sample.num_images:
        images, image_mean, image_squares = sample.moments(rows)
        total += images * image_mean
        squares += image_squares + images * image_mean * image_mean
        count += images
    if count < 2:
        return torch.zeros(sims.shape[-1]), torch.ones(sims.shape[-1])
    mean = total / count
    variance = ((squares - count * mean * mean) / (count - 1)).clamp(min=0)
    return mean.to(sims.dtype), variance.sqrt().to(sims.dtype).clamp(min=1e-6)


def exemplar_evidence(
    sims: Tensor,
    acts: Tensor,
    sample: ImageSample | None,
    sharpness: float = 4.0,
    power: float = 3.0,
    min_neurons: int = 16,
    spread_floor: float = 0.3,
    sample_rows: Tensor | None = None,
    typical_spread: float | None = None,
) -> Tensor:
    """Steps 1-4 of :func:`contrast`: the exemplar evidence, standardized across neurons
    when there are at least ``min_neurons`` of them (verified descriptions test candidates
    with it too).

    Args:
        sims: ``[C, k, V]`` exemplar similarities (NaN where an exemplar is missing).
        acts: ``[C, k]`` exemplar activations (``-inf`` = missing).
        sample: Whole-image statistics; its images join the concept standardization.
        sharpness, power, min_neurons, spread_floor: As in :func:`contrast`.
        sample_rows: Only these sampled images count.
        typical_spread: The spread the floor scales (default: the median over these
            concepts); give a fixed one to score a few concepts on the scale of a vocabulary
            (:func:`typical_spread` of its scores), whatever else is scored with them.

    Returns:
        ``[C, V]`` scores: z-scores across the neurons when standardized.

    Examples:
        >>> sims = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]])
        >>> exemplar_evidence(sims, torch.ones(2, 1), None).argmax(dim=1).tolist()
        [0, 1]
    """
    # The population a concept is standardized against: every exemplar patch, plus whole
    # images of the probing set when sampled, so the statistics do not depend only on the
    # units chosen for explanation (three cat units alone would make "cat" look ordinary).
    valid = _valid(acts)
    mean, std = population_moments(sims, valid, sample, sample_rows)
    weights = activation_weights(acts, sharpness=sharpness)
    # In chunks of neurons: [C, k, V] temporaries of a large layer and vocabulary (500 logit
    # units x 100 exemplars x 20000 words) would need several gigabytes each.
    scores = torch.empty(sims.shape[0], sims.shape[-1], dtype=weights.dtype)
    for neurons in _neuron_chunks(sims):
        z = torch.nan_to_num_((sims[neurons] - mean).div_(std)).clamp_(min=0).pow_(power)
        scores[neurons] = torch.einsum("ck,ckv->cv", weights[neurons], z)
    if scores.shape[0] >= min_neurons:
        spread = scores.std(dim=0, keepdim=True)
        # A concept seen in one neuron only has a tiny spread: without the floor every such
        # concept would get the same maximal z-score, whatever its evidence.
        typical = spread.median() if typical_spread is None else torch.tensor(typical_spread)
        floor = spread_floor * typical**2
        scores = (scores - scores.mean(dim=0, keepdim=True)) / (spread**2 + floor).sqrt().clamp(
            min=1e-6
        )
    return scores


def typical_spread(scores: Tensor) -> float:
    """The median over concepts of their spread across neurons: what
    :func:`exemplar_evidence`'s floor scales, from unstandardized ``[C, V]`` scores.

    Examples:
        >>> typical_spread(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
        0.0
    """
    return float(scores.std(dim=0).median())


def _stouffer(exemplar_z: Tensor, correlation_z: Tensor, weight: float) -> Tensor:
    return (exemplar_z + weight * correlation_z) / math.sqrt(1 + weight**2)


def _column_correlation(x: Tensor, y: Tensor) -> Tensor:
    """Pearson correlation of each column of ``x`` with the same column of ``y`` (``[N, C]``
    each); NaN where either column is constant."""
    x = x.double() - x.double().mean(dim=0)
    y = y.double() - y.double().mean(dim=0)
    norms = x.norm(dim=0) * y.norm(dim=0)
    return torch.where(norms > 1e-12, (x * y).sum(dim=0) / norms.clamp(min=1e-12), math.nan)


def validate_correlation_weight(
    sims: Tensor,
    acts: Tensor,
    sample: ImageSample,
    groups: Tensor | None = None,
    grid: tuple[float, ...] = CORRELATION_GRID,
    folds: int = CORRELATION_FOLDS,
    seed: int = 0,
    **options: Any,
) -> tuple[float, dict[str, float | None], dict[str, float | None]]:
    """Choose :func:`contrast`'s correlation weight by cross-validation on the sampled images.

    The sampled images are split at random (``seed``) into ``folds`` parts. For each part,
    every neuron is labeled from the other parts only — the correlation term over their
    images, and the exemplar evidence without the exemplars whose images lie in the
    held-out part (a neuron whose exemplars all lie there keeps them) — once per candidate
    weight in ``grid``; the weight is scored by the Pearson correlation, over the held-out
    images, between each neuron's activation and its chosen concept's whole-image score,
    averaged over neurons and parts. This is what a held-out faithfulness test measures,
    computed inside the probing set, so no evaluation image takes part in the choice.

    Args:
        sims: ``[C, k, V]`` exemplar similarities, as for :func:`contrast`.
        acts: ``[C, k]`` exemplar activations (``-inf`` = missing).
        sample: The sampled whole images; its ``exemplar_rows`` (when given) say which
            exemplars to hold out with each part.
        groups: ``[V]`` concept categories, as for :func:`contrast`.
        grid: Candidate weights (each ``>= 0``).
        folds: Number of parts (at least 2).
        seed: Seed of the random split.
        **options: :func:`contrast`'s ``sharpness``, ``power``, ``min_neurons`` and
            ``spread_floor``.

    Returns:
        ``(weight, means, errors)``: the chosen weight; each candidate's mean held-out
        correlation (``None`` when no neuron gave a defined one); and the standard error of
        each candidate's fold-wise gap to the best candidate. The weight is the one closest
        to :data:`CORRELATION_WEIGHT` among the candidates within one standard error of the
        best (the one-standard-error rule), so noise between folds does not move it.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> signal = torch.randn(100, 20, generator=g)  # neuron i tracks concept i
        >>> sample = ImageSample(signal, signal + torch.randn(100, 20, generator=g))
        >>> sims = torch.rand(20, 5, 20, generator=g)  # exemplars carry no information
        >>> weight, means, _ = validate_correlation_weight(sims, torch.ones(20, 5), sample)
        >>> weight, means["0.0"] < 0.1 < means["1.0"]
        (1.0, True)
    """
    if folds < 2 or not grid or min(grid) < 0:
        raise NeurolabelError(
            "validate_correlation_weight needs folds >= 2 and non-negative candidate weights"
        )
    count = sample.acts.shape[0]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    parts = order.tensor_split(folds)
    per_fold = torch.full((len(parts), len(grid)), math.nan, dtype=torch.float64)
    for fold, part in enumerate(parts):
        held = torch.zeros(count, dtype=torch.bool)
        held[part] = True
        train = ~held
        fold_acts = acts
        if sample.exemplar_rows is not None:
            rows = sample.exemplar_rows
            out = (rows >= 0) & held[rows.clamp(min=0)]
            # Without any exemplar a neuron would have no evidence at all: keep its own.
            out &= ~(out | ~_valid(acts)).all(dim=1, keepdim=True)
            fold_acts = acts.masked_fill(out, -math.inf)
        # Row indices, not copies of the sampled images' scores.
        train_rows, held_rows = train.nonzero().squeeze(1), part
        exemplar_z = exemplar_evidence(sims, fold_acts, sample, sample_rows=train_rows, **options)
        correlation_z = sample_correlation_z(sample, train_rows)
        held_acts = sample.acts[held_rows]
        for index, weight in enumerate(grid):
            scores = _stouffer(exemplar_z, correlation_z, weight)
            if groups is not None and groups.unique().numel() > 1:
                scores = family_adjusted(scores, groups)
            chosen = sample.scores(scores.argmax(dim=1), held_rows)
            r = _column_correlation(held_acts, chosen)
            if torch.isfinite(r).any():
                per_fold[fold, index] = r.nanmean()
    means = per_fold.nanmean(dim=0)
    finite = torch.isfinite(means)
    if not finite.any():
        return CORRELATION_WEIGHT, dict.fromkeys(map(str, grid)), dict.fromkeys(map(str, grid))
    best = int(torch.where(finite, means, -math.inf).argmax())
    # The one-standard-error rule: any candidate whose mean is within one standard error
    # (of its fold-wise difference from the best) is as good as the data can tell, and
    # among those the one closest to the neutral equal weighting is taken, so the weight
    # moves away from it only on clear evidence rather than on fold-to-fold noise.
    errors = torch.full((len(grid),), math.nan, dtype=torch.float64)
    for index in range(len(grid)):
        both = torch.isfinite(per_fold[:, best]) & torch.isfinite(per_fold[:, index])
        gaps = per_fold[both, best] - per_fold[both, index]
        if index == best:
            errors[index] = 0.0
        elif gaps.numel() >= 2:
            errors[index] = gaps.std() / math.sqrt(gaps.numel())
    eligible = [i for i in range(len(grid)) if bool(means[best] - means[i] <= errors[i])]
    picked = min(eligible, key=lambda i: (abs(grid[i] - CORRELATION_WEIGHT), grid[i]))

    def rounded(values: Tensor) -> dict[str, float | None]:
        return {
            str(w): (round(float(v), 5) if math.isfinite(v) else None)
            for w, v in zip(grid, values.tolist(), strict=True)
        }

    return float(grid[picked]), rounded(means), rounded(errors)


def _correlation_weight(
    correlation: float | str,
    sims: Tensor,
    acts: Tensor,
    sample: ImageSample,
    groups: Tensor | None,
    details: dict[str, Any] | None,
    options: dict[str, Any],
) -> float:
    """The weight of the correlation term: the given number, or validated for ``"auto"``."""
    if correlation != "auto":
        if details is not None:
            details.update(correlation_weight=float(correlation), correlation_choice="fixed")
        return float(correlation)
    if sample.acts.shape[0] < AUTO_MIN_SAMPLE:
        if details is not None:
            details.update(
                correlation_weight=CORRELATION_WEIGHT,
                correlation_choice=f"default (fewer than {AUTO_MIN_SAMPLE} sampled images "
                "to validate a weight)",
            )
        return CORRELATION_WEIGHT
    weight, means, errors = validate_correlation_weight(sims, acts, sample, groups, **options)
    if details is not None:
        details.update(
            correlation_weight=weight,
            correlation_choice=f"validated ({CORRELATION_FOLDS} folds of "
            f"{sample.acts.shape[0]} sampled images, one-standard-error rule)",
            correlation_validation=means,
            correlation_standard_error=errors,
        )
    return weight


def contrast(
    sims: Tensor,
    acts: Tensor,
    sample: ImageSample | None = None,
    sharpness: float = 4.0,
    power: float = 3.0,
    groups: Tensor | None = None,
    min_neurons: int = 16,
    spread_floor: float = 0.3,
    correlation: float | str = "auto",
    min_sample: int = 20,
    details: dict[str, Any] | None = None,
) -> Tensor:
    """neurolabel's default: exemplar evidence, standardized on the concept side and across
    neurons, combined with the neurons' correlation with the concepts over whole images.

    1. Each concept's similarities are standardized over all exemplar patches of the layer
       and the sampled whole images (z-scores), so a concept counts by how much better it
       fits *this* patch than images in general — a concept that fits everything gets no
       credit.
    2. Only positive evidence counts, raised to ``power`` so that a patch where the concept
       is clearly present outweighs many where it is marginally above average (the same
       emphasis on extremes as CLIP-Dissect's cos^3, applied to exemplars only).
    3. Exemplars are weighted by a softmax over their normalized activations
       (``sharpness``): the strongest exemplars dominate, runners-up still vote.
    4. The per-neuron scores of each concept are standardized across the layer's explained
       neurons, so a concept that wins for many neurons (a hub) must win clearly to be
       chosen — the paper's "corrected by the concept's average over all neurons", scaled.
       The spread is floored at ``spread_floor`` times the median spread (squared), and
       the step is skipped for fewer than ``min_neurons`` neurons, where the spread of a
       concept over so few neurons says little.
    5. With a sample of at least ``min_sample`` whole images (and the step above done),
       image-level evidence joins the exemplar evidence: the z-statistic of the neuron's
       correlation with the concept over the sampled images
       (:func:`sample_correlation_z`) is combined with the exemplar z-score by Stouffer's
       method, ``(z_exemplars + w * z_correlation) / sqrt(1 + w^2)``. Exemplars say what a
       neuron fires *most* for; the correlation says what it tracks over all images, which
       is what a held-out evaluation (faithfulness) rewards, and keeps a concept seen in one
       lucky exemplar from winning. How much to trust each depends on the layer, the scorer
       and the sample size, so by default (``correlation="auto"``) ``w`` is chosen per call
       (per layer) among :data:`CORRELATION_GRID` by cross-validation on the sampled images
       (:func:`validate_correlation_weight`); below :data:`AUTO_MIN_SAMPLE` images it is
       :data:`CORRELATION_WEIGHT`. A number fixes ``w`` (0 = exemplars only).
    6. With concept ``groups`` (categories such as color and object), each category's
       scores are :func:`family_adjusted`, so a large category does not win by multiplicity.

    Args:
        sims: ``[C, k, V]`` exemplar similarities.
        acts: ``[C, k]`` exemplar activations (``-inf`` = missing).
        sample: Whole-image statistics over the probing set (optional).
        sharpness, power, min_neurons, spread_floor: Steps 2-4 above.
        groups: ``[V]`` concept categories (step 6).
        correlation: ``"auto"`` or a weight ``>= 0`` (step 5).
        min_sample: Fewest sampled images for step 5.
        details: When given, filled with ``correlation_weight`` (the weight used, or absent
            when step 5 did not run), ``correlation_choice`` (how it was chosen) and, when
            validated, ``correlation_validation`` (each candidate's mean held-out correlation)
            and ``correlation_standard_error`` (of its gap to the best candidate).

    Returns:
        ``[C, V]`` scores, higher = better description.

    Examples:
        >>> sims = torch.tensor([[[0.9, 0.5]], [[0.1, 0.9]], [[0.6, 0.1]]])
        >>> contrast(sims, torch.ones(3, 1)).argmax(dim=1).tolist()
        [0, 1, 0]
    """
    if not (correlation == "auto" or (isinstance(correlation, int | float) and correlation >= 0)):
        raise NeurolabelError(
            f"contrast's correlation must be 'auto' or a weight >= 0, got {correlation!r}"
        )
    options: dict[str, Any] = {
        "sharpness": sharpness,
        "power": power,
        "min_neurons": min_neurons,
        "spread_floor": spread_floor,
    }
    scores = exemplar_evidence(sims, acts, sample, **options)
    if scores.shape[0] >= min_neurons:
        if sample is not None and sample.acts.shape[0] >= min_sample:
            weight = _correlation_weight(correlation, sims, acts, sample, groups, details, options)
            if weight > 0:
                scores = _stouffer(scores, sample_correlation_z(sample), weight)
        if groups is not None and groups.unique().numel() > 1:
            scores = family_adjusted(scores, groups)
    return scores


AGGREGATIONS: dict[str, Aggregation] = {
    "contrast": Aggregation(
        "contrast",
        contrast,
        description="positive concept z-scores^3, softmax activation weights, neuron-standardized",
        uses_groups=True,
        sample="used",
        reports_details=True,
    ),
    "mean": Aggregation(
        "mean", mean_similarity, description="the paper's activation-weighted mean, corrected"
    ),
    "soft-wpmi": Aggregation("soft-wpmi", soft_wpmi, description="CLIP-Dissect's default"),
    "wpmi": Aggregation("wpmi", wpmi, description="CLIP-Dissect's WPMI"),
    "cos-cubed": Aggregation(
        "cos-cubed", cos_cubed, sample="required", description="CLIP-Dissect's cos^3"
    ),
}

DEFAULT_AGGREGATION = "contrast"


def get_aggregation(name: str) -> Aggregation:
    """Look up an aggregation by name or spec (``default`` = :data:`DEFAULT_AGGREGATION`).

    Options after ``?`` set the function's keyword arguments, e.g.
    ``contrast?correlation=1`` (a fixed correlation weight instead of the validated one) or
    ``soft-wpmi?top_k=20``; numbers are parsed with the type of the argument's default.

    Args:
        name: ``NAME[?key=value&...]``.

    Returns:
        The :class:`Aggregation`, its function bound to the options.

    Examples:
        >>> get_aggregation("contrast?correlation=2").name
        'contrast?correlation=2'
        >>> get_aggregation("wpmi?lam=0.5").function.keywords
        {'lam': 0.5}
    """
    spec = Spec.parse(name)
    if spec.name == clip_dissect.MODE:
        return _published_clip_dissect(spec)
    key = DEFAULT_AGGREGATION if spec.name == "default" else spec.name
    if key not in AGGREGATIONS or spec.argument is not None:
        import difflib

        close = difflib.get_close_matches(key, list(AGGREGATIONS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise NeurolabelError(
            f"Unknown aggregation '{name}'.{hint} Available: {', '.join(AGGREGATIONS)}, "
            f"default, {clip_dissect.MODE}:FUNCTION (CLIP-Dissect as published; FUNCTION: "
            f"{', '.join(clip_dissect.FUNCTIONS)})"
        )
    aggregation = AGGREGATIONS[key]
    if not spec.options:
        return aggregation
    parameters = inspect.signature(aggregation.function).parameters
    tunable = {
        n: p.default
        for n, p in parameters.items()
        if n not in _EVIDENCE_ARGUMENTS and p.default is not inspect.Parameter.empty
    }
    spec.check_options(set(tunable))
    bound = {option: _option_value(spec, option, tunable[option]) for option in spec.options}
    return dataclasses.replace(
        aggregation, name=name, function=functools.partial(aggregation.function, **bound)
    )


def _published_clip_dissect(spec: Spec) -> Aggregation:
    """``clip-dissect[:FUNCTION]``: the published method, which takes no options (its
    settings are the authors' defaults)."""
    if spec.options:
        raise SpecError(
            f"'{spec}': CLIP-Dissect as published runs with its authors' settings and takes "
            f"no options; for other settings use the aggregation '{spec.argument or 'soft-wpmi'}"
            "?OPTION=VALUE' on neurolabel's exemplars"
        )
    function = clip_dissect.check_function(spec.argument)
    return Aggregation(
        f"{clip_dissect.MODE}:{function}",
        functools.partial(_published_scores, function=function),
        sample="required",
        description=f"CLIP-Dissect as published ({function})",
        whole_layer=True,
    )


def _published_scores(
    sims: Tensor, acts: Tensor, sample: ImageSample | None, function: str
) -> Tensor:
    if sample is None:
        raise NeurolabelError("CLIP-Dissect as published needs every probing image's scores")
    return clip_dissect.clip_dissect_scores(sample, function)


#: Arguments the labeler passes: not options of an aggregation spec.
_EVIDENCE_ARGUMENTS = frozenset({"sims", "acts", "sample", "groups", "details"})


def _option_value(spec: Spec, option: str, default: Any) -> Any:
    """An option's value, typed like the argument's default (``auto`` kept as a word)."""
    text = spec.options[option]
    if isinstance(default, bool):
        return spec.option_bool(option)
    if isinstance(default, int):
        return spec.option_int(option)
    if isinstance(default, str) and text == default:
        return text
    value = spec.option_float(option)
    if value is None or not math.isfinite(value):
        raise SpecError(f"Option {option}={text!r} in '{spec}' must be a finite number")
    return value
