"""Faithfulness metrics: does a concept's presence track a neuron's activation?

Every function compares, column by column, the activations of ``U`` neurons on ``N``
images (``acts [N, U]``) with the presence scores of one concept per neuron on the same
images (``presence [N, U]``: column ``u`` holds the concept that explains neuron ``u``),
and returns one figure per neuron (``[U]``, float64). This is the NeuronEval framing of
Oikarinen, Yan & Weng, "Evaluating Neuron Explanations: A Unified Framework with Sanity
Checks" (ICML 2025): an explanation is good when its concept vector resembles the
activation vector. Their sanity checks single out the metrics kept here as reliable
(:data:`RELIABLE`): Pearson correlation, AUPRC, F1 and IoU; recall and precision are
kept too, because they fail those checks and so show what the checks catch.

A figure that is undefined for a neuron (a constant column, no positive image) is NaN.

The module also fits *linear explanations* (Oikarinen & Weng, "Linear Explanations for
Individual Neurons", ICML 2024): a sparse non-negative combination of several concepts'
presence scores that simulates a neuron's activation (:func:`fit_linear_explanation`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

DEFAULT_TOP = 0.05
"""Share of images per neuron counted as its positives (top-activating) by default."""

RELIABLE = ("correlation", "auprc", "f1", "iou")
"""The metrics that pass the paper's missing- and extra-label sanity checks."""

L1_FRACTIONS = (0.3, 0.1, 0.03, 0.01, 0.003, 0.001)
"""L1 penalties tried by :func:`fit_linear_explanation`, as fractions of the smallest
penalty that zeroes every weight."""


def _check_pair(first: Tensor, second: Tensor, names: tuple[str, str]) -> None:
    if first.ndim != 2 or first.shape != second.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must both be [images, neurons]; got "
            f"{tuple(first.shape)} and {tuple(second.shape)}"
        )


def _constant(values: Tensor) -> Tensor:
    """``[U]`` bool: columns whose values do not vary (up to float rounding)."""
    spread = values.amax(dim=0) - values.amin(dim=0)
    return spread <= 1e-12 * (1.0 + values.abs().amax(dim=0))


def top_count(num_images: int, top: float) -> int:
    """How many images a top fraction ``top`` of ``num_images`` selects (at least one).

    Examples:
        >>> top_count(100, 0.05), top_count(10, 0.05), top_count(100, 0.07)
        (5, 1, 7)
    """
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    # The epsilon keeps 0.07 * 100 = 7.000000000000001 from becoming 8.
    return min(num_images, max(1, math.ceil(top * num_images - 1e-9)))


def binarize_top(values: Tensor, top: float = DEFAULT_TOP) -> Tensor:
    """Each column's top fraction of images, as a boolean mask.

    The cutoff is the column's ``ceil(top * N)``-th largest value; values tied with it are
    included (so a 0/1 column keeps all its ones), and the column's minimum never is (so
    a ReLU neuron silent on most images does not count every image as a positive, and a
    constant column has no positive at all).

    Args:
        values: ``[N, U]`` activations or presence scores.
        top: Share of images to select, in ``(0, 1]``.

    Returns:
        ``[N, U]`` bool.

    Examples:
        >>> binarize_top(torch.tensor([[0.0], [3.0], [1.0], [3.0]]), top=0.25).flatten().tolist()
        [False, True, False, True]
        >>> binarize_top(torch.tensor([[0.0], [0.0], [0.0], [2.0]]), top=0.5).flatten().tolist()
        [False, False, False, True]
    """
    if values.ndim != 2:
        raise ValueError(f"values must be [images, neurons], got {tuple(values.shape)}")
    k = top_count(values.shape[0], top)
    cutoff = values.topk(k, dim=0).values[-1]
    return (values >= cutoff) & (values > values.amin(dim=0))


def pearson(acts: Tensor, presence: Tensor) -> Tensor:
    """Pearson correlation of each neuron's activations with its concept's presence.

    Args:
        acts: ``[N, U]`` activations.
        presence: ``[N, U]`` presence scores (column ``u``: the concept explaining neuron ``u``).

    Returns:
        ``[U]`` correlations in ``[-1, 1]``; NaN where either column is constant.

    Examples:
        >>> acts = torch.tensor([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
        >>> presence = torch.tensor([[1.0, 0.0], [2.0, 1.0], [4.0, 0.0]])
        >>> [round(x, 4) for x in pearson(acts, presence).tolist()]
        [0.982, 0.0]
    """
    _check_pair(acts, presence, ("acts", "presence"))
    a = acts.double() - acts.double().mean(dim=0)
    p = presence.double() - presence.double().mean(dim=0)
    out = (a * p).sum(dim=0) / ((a * a).sum(dim=0) * (p * p).sum(dim=0)).sqrt()
    return out.masked_fill(_constant(acts) | _constant(presence), float("nan")).clamp(-1, 1)


def _ranked(positives: Tensor, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sort each column by score (descending); return cumulative true positives, whether
    each position ends a group of tied scores, and the index where its group ends."""
    _check_pair(positives, scores, ("positives", "scores"))
    order = scores.argsort(dim=0, descending=True, stable=True)
    ranked = scores.gather(0, order)
    hits = positives.bool().gather(0, order).double()
    n = scores.shape[0]
    last = torch.ones_like(ranked, dtype=torch.bool)
    last[:-1] = ranked[:-1] != ranked[1:]
    index = torch.arange(n, device=scores.device)[:, None].expand_as(ranked)
    ends = torch.where(last, index, torch.full_like(index, n))
    # A tie group is decided at once: every position takes the next group end below it.
    ends = ends.flip(0).cummin(dim=0).values.flip(0)
    return hits, last, ends


def auprc(positives: Tensor, scores: Tensor) -> Tensor:
    """Average precision of the concept scores at retrieving each neuron's positives.

    The area under the precision-recall curve as ``sklearn.metrics.average_precision_score``
    computes it (a step function over the distinct score values, ties decided together).

    Args:
        positives: ``[N, U]`` bool, e.g. ``binarize_top(acts)``: the images a neuron fires on.
        scores: ``[N, U]`` presence scores of each neuron's concept.

    Returns:
        ``[U]`` average precision in ``[0, 1]`` (chance level: the share of positives);
        NaN for a neuron without positives.

    Examples:
        >>> positives = torch.tensor([[True], [False], [True], [False]])
        >>> scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
        >>> round(float(auprc(positives, scores)[0]), 4)  # (1/1 + 2/3) / 2
        0.8333
    """
    hits, _, ends = _ranked(positives, scores)
    n_pos = hits.sum(dim=0)
    true_positives = hits.cumsum(dim=0)
    precision = true_positives.gather(0, ends) / (ends + 1).double()
    out = (precision * hits).sum(dim=0) / n_pos
    return out.masked_fill(n_pos == 0, float("nan"))


def best_f1(positives: Tensor, scores: Tensor) -> Tensor:
    """F1 of ``scores >= t`` against the positives, at the best threshold ``t`` per neuron.

    Every distinct score value is tried as the threshold, so the figure is an upper bound
    on the F1 of any fixed threshold (compare it with a baseline scored the same way).

    Args:
        positives: ``[N, U]`` bool positives of each neuron.
        scores: ``[N, U]`` presence scores of each neuron's concept.

    Returns:
        ``[U]`` F1 in ``[0, 1]``; NaN for a neuron without positives.

    Examples:
        >>> positives = torch.tensor([[True], [False], [True], [False]])
        >>> scores = torch.tensor([[0.9], [0.8], [0.7], [0.1]])
        >>> round(float(best_f1(positives, scores)[0]), 4)  # t = 0.7: 2 TP, 1 FP
        0.8
    """
    hits, last, ends = _ranked(positives, scores)
    n_pos = hits.sum(dim=0)
    true_positives = hits.cumsum(dim=0)
    predicted = (ends + 1).double()
    f1 = 2 * true_positives / (predicted + n_pos)
    out = torch.where(last, f1, torch.zeros_like(f1)).amax(dim=0)
    return out.masked_fill(n_pos == 0, float("nan"))


def iou(positives: Tensor, scores: Tensor, top: float = DEFAULT_TOP) -> Tensor:
    """Intersection over union of the neuron's positives and the concept's top images.

    The concept is binarized like the activations, at its own top fraction ``top``
    (:func:`binarize_top`), rather than at a fixed score: presence scores of different
    scorers (cosine similarities, pixel shares, calibrated z-scores) share no scale, while
    a quantile means the same thing for all of them (NetDissect thresholds activations
    the same way). A 0/1 concept keeps all its ones whatever ``top`` is.

    Args:
        positives: ``[N, U]`` bool positives of each neuron.
        scores: ``[N, U]`` presence scores of each neuron's concept.
        top: Share of images counted as showing the concept.

    Returns:
        ``[U]`` IoU in ``[0, 1]``; NaN when both sets are empty.

    Examples:
        >>> positives = torch.tensor([[True], [True], [False], [False]])
        >>> scores = torch.tensor([[0.9], [0.1], [0.8], [0.2]])
        >>> round(float(iou(positives, scores, top=0.5)[0]), 4)  # {0, 1} vs {0, 2}
        0.3333
    """
    _check_pair(positives, scores, ("positives", "scores"))
    positives = positives.bool()
    concept = binarize_top(scores, top)
    intersection = (positives & concept).sum(dim=0).double()
    union = (positives | concept).sum(dim=0).double()
    return (intersection / union).masked_fill(union == 0, float("nan"))


def recall(positives: Tensor, scores: Tensor, top: float = DEFAULT_TOP) -> Tensor:
    """Share of a neuron's positives that show the concept (concept binarized as in
    :func:`iou`). It fails the extra-label check: a concept present everywhere scores 1.

    Args:
        positives: ``[N, U]`` bool positives of each neuron.
        scores: ``[N, U]`` presence scores of each neuron's concept.
        top: Share of images counted as showing the concept.

    Returns:
        ``[U]`` recall; NaN for a neuron without positives.

    Examples:
        >>> positives = torch.tensor([[True], [True], [False], [False]])
        >>> scores = torch.tensor([[0.9], [0.1], [0.8], [0.2]])
        >>> float(recall(positives, scores, top=0.5)[0])
        0.5
    """
    _check_pair(positives, scores, ("positives", "scores"))
    positives = positives.bool()
    hits = (positives & binarize_top(scores, top)).sum(dim=0).double()
    n_pos = positives.sum(dim=0).double()
    return (hits / n_pos).masked_fill(n_pos == 0, float("nan"))


def precision(positives: Tensor, scores: Tensor, top: float = DEFAULT_TOP) -> Tensor:
    """Share of the concept's images that are positives of the neuron (concept binarized
    as in :func:`iou`). It fails the missing-label check: a concept shown on only some of
    the neuron's images still scores 1.

    Args:
        positives: ``[N, U]`` bool positives of each neuron.
        scores: ``[N, U]`` presence scores of each neuron's concept.
        top: Share of images counted as showing the concept.

    Returns:
        ``[U]`` precision; NaN when the concept is never present.

    Examples:
        >>> positives = torch.tensor([[True], [True], [True], [False]])
        >>> scores = torch.tensor([[0.9], [0.1], [0.8], [0.2]])
        >>> float(precision(positives, scores, top=0.5)[0])
        1.0
    """
    _check_pair(positives, scores, ("positives", "scores"))
    concept = binarize_top(scores, top)
    hits = (positives.bool() & concept).sum(dim=0).double()
    shown = concept.sum(dim=0).double()
    return (hits / shown).masked_fill(shown == 0, float("nan"))


def separation_auc(positives: Tensor, acts: Tensor) -> Tensor:
    """CoSy's AUC: how often a concept image activates the neuron more than a control image
    (ties count half; Kopf et al., NeurIPS 2024).

    Args:
        positives: ``[N, U]`` bool, the concept images of each neuron's label.
        acts: ``[N, U]`` activations.

    Returns:
        ``[U]`` AUC in ``[0, 1]``; NaN without concept or control images.

    Examples:
        >>> acts = torch.tensor([[3.0], [2.0], [1.0], [2.0]])
        >>> float(separation_auc(torch.tensor([[True], [True], [False], [False]]), acts[:, :1]))
        0.875
    """
    _check_pair(positives, acts, ("positives", "acts"))
    out = torch.full((acts.shape[1],), float("nan"), dtype=torch.float64)
    for unit in range(acts.shape[1]):
        mask = positives[:, unit].bool()
        concept, control = acts[mask, unit].double(), acts[~mask, unit].double()
        if concept.numel() and control.numel():
            greater = (concept[:, None] > control[None, :]).double().mean()
            ties = (concept[:, None] == control[None, :]).double().mean()
            out[unit] = greater + 0.5 * ties
    return out


def mean_activation_difference(positives: Tensor, acts: Tensor) -> Tensor:
    """CoSy's MAD: ``(mean on concept images - mean on control images) / std on control``.

    Examples:
        >>> acts = torch.tensor([[4.0], [2.0], [1.0], [3.0]])
        >>> round(float(mean_activation_difference(torch.tensor([[True], [False], [False],
        ...     [False]]), acts)), 3)
        2.0
    """
    _check_pair(positives, acts, ("positives", "acts"))
    out = torch.full((acts.shape[1],), float("nan"), dtype=torch.float64)
    for unit in range(acts.shape[1]):
        mask = positives[:, unit].bool()
        concept, control = acts[mask, unit].double(), acts[~mask, unit].double()
        if concept.numel() and control.numel() >= 2 and control.std() > 0:
            out[unit] = (concept.mean() - control.mean()) / control.std()
    return out


@dataclass(frozen=True)
class Metric:
    """A metric with a uniform signature ``(acts, presence, top) -> [U]``.

    Args:
        name: Short name used in reports.
        function: ``(acts [N, U], presence [N, U], top) -> [U]``.
        low: Smallest possible value (to express score changes as a share of the range).
        high: Largest possible value.

    Examples:
        >>> acts = torch.tensor([[0.0], [1.0], [0.0], [2.0]])
        >>> METRICS["auprc"](acts, acts, top=0.5).tolist()
        [1.0]
    """

    name: str
    function: Callable[[Tensor, Tensor, float], Tensor]
    low: float = 0.0
    high: float = 1.0

    def __call__(self, acts: Tensor, presence: Tensor, top: float = DEFAULT_TOP) -> Tensor:
        return self.function(acts, presence, top)


def _correlation(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return pearson(acts, presence)


def _auprc(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return auprc(binarize_top(acts, top), presence)


def _f1(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return best_f1(binarize_top(acts, top), presence)


def _iou(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return iou(binarize_top(acts, top), presence, top)


def _recall(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return recall(binarize_top(acts, top), presence, top)


def _precision(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return precision(binarize_top(acts, top), presence, top)


def _auc(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return separation_auc(binarize_top(presence, top), acts)


def _mad(acts: Tensor, presence: Tensor, top: float) -> Tensor:
    return mean_activation_difference(binarize_top(presence, top), acts)


METRICS: dict[str, Metric] = {
    "correlation": Metric("correlation", _correlation, -1.0, 1.0),
    "auprc": Metric("auprc", _auprc),
    "f1": Metric("f1", _f1),
    "iou": Metric("iou", _iou),
    "recall": Metric("recall", _recall),
    "precision": Metric("precision", _precision),
    # CoSy's scores (concept images = the concept's top share); MAD is unbounded, its range
    # here only scales the sanity checks' smallest counted change.
    "auc": Metric("auc", _auc),
    "mad": Metric("mad", _mad, -1.0, 1.0),
}
"""Every metric by name; the activations are binarized at the top fraction where needed."""


def get_metric(metric: str | Metric) -> Metric:
    """A :class:`Metric` by name (``correlation``, ``auprc``, ``f1``, ``iou``, ``recall``,
    ``precision``), or the metric itself."""
    if isinstance(metric, Metric):
        return metric
    try:
        return METRICS[metric]
    except KeyError:
        raise ValueError(f"Unknown metric {metric!r}; known: {', '.join(METRICS)}") from None


# -- sanity checks ----------------------------------------------------------------------


def _random_rows(mask: Tensor, count: Tensor, generator: torch.Generator) -> Tensor:
    """``[N, U]`` bool: ``count[u]`` rows picked uniformly at random among ``mask[:, u]``."""
    keys = torch.rand(mask.shape, generator=generator).to(mask.device)
    keys = keys.masked_fill(~mask, float("inf"))
    rank = keys.argsort(dim=0).argsort(dim=0)
    return (rank < count[None, :]) & mask


def _draw_from(
    values: Tensor, donors: Tensor, receivers: Tensor, generator: torch.Generator
) -> Tensor:
    """``values`` where the ``receivers`` rows take values of random ``donors`` rows of
    their column (drawn with replacement); columns without donors are left alone."""
    n_donors = donors.sum(dim=0)
    keys = torch.rand(values.shape, generator=generator).to(values.device)
    donor_rows = keys.masked_fill(~donors, float("inf")).argsort(dim=0)  # donors first
    pick = torch.rand(values.shape, generator=generator).to(values.device)
    pick = (pick * n_donors[None, :]).long().clamp(max=values.shape[0] - 1)
    borrowed = values.gather(0, donor_rows.gather(0, pick))
    return torch.where(receivers & (n_donors > 0)[None, :], borrowed, values)


def missing_labels(presence: Tensor, top: float, generator: torch.Generator) -> Tensor:
    """The paper's *missing labels* perturbation: half of the concept's positive images
    lose it.

    The positives are the concept's top images (:func:`binarize_top`; for a 0/1 concept,
    its ones). A random half of them (rounded up) take the presence score of a random
    negative image of the same column: a 0/1 label becomes 0, exactly the paper's test,
    and a continuous score keeps the column's distribution of negative values.

    Args:
        presence: ``[N, U]`` presence scores.
        top: Share of images that count as the concept's positives.
        generator: Random source.

    Returns:
        The perturbed ``[N, U]`` scores.

    Examples:
        >>> labels = torch.tensor([[1.0], [1.0], [1.0], [1.0], [0.0], [0.0]])
        >>> out = missing_labels(labels, 0.5, torch.Generator().manual_seed(0))
        >>> float(out.sum()), float(out[4:].sum())
        (2.0, 0.0)
    """
    positives = binarize_top(presence, top)
    n_pos = positives.sum(dim=0)
    dropped = _random_rows(positives, (n_pos + 1) // 2, generator)
    return _draw_from(presence, ~positives, dropped, generator)


def extra_labels(presence: Tensor, top: float, generator: torch.Generator) -> Tensor:
    """The paper's *extra labels* perturbation: as many negative images as there are
    positives gain the concept.

    Random negatives (as many as positives, or all of them when fewer) take the presence
    score of a random positive image of the same column: a 0/1 label becomes 1, doubling
    the positives as in the paper.

    Args:
        presence: ``[N, U]`` presence scores.
        top: Share of images that count as the concept's positives.
        generator: Random source.

    Returns:
        The perturbed ``[N, U]`` scores.

    Examples:
        >>> labels = torch.tensor([[1.0], [1.0], [0.0], [0.0], [0.0], [0.0]])
        >>> out = extra_labels(labels, 0.3, torch.Generator().manual_seed(0))
        >>> float(out.sum()), float(out[:2].sum())
        (4.0, 2.0)
    """
    positives = binarize_top(presence, top)
    added = _random_rows(~positives, positives.sum(dim=0), generator)
    return _draw_from(presence, positives, added, generator)


@dataclass(frozen=True)
class SanityCheck:
    """Outcome of one sanity check of one metric over a set of neurons.

    Args:
        test: ``missing`` or ``extra``.
        decrease_rate: Share of neurons whose score fell by more than ``epsilon`` of the
            metric's range after the perturbation (averaged over draws).
        mean_change: Mean change of the score, as a share of the metric's range.
        units: Neurons where the score was defined before and after.
        passed: ``decrease_rate >= pass_rate`` (False when no neuron counted).
    """

    test: str
    decrease_rate: float | None
    mean_change: float | None
    units: int
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return asdict(self)


def sanity_checks(
    metric: str | Metric,
    acts: Tensor,
    presence: Tensor,
    *,
    top: float = DEFAULT_TOP,
    concept_top: float | None = None,
    draws: int = 1,
    seed: int = 0,
    epsilon: float = 1e-3,
    pass_rate: float = 0.9,
) -> dict[str, SanityCheck]:
    """Run the paper's missing-labels and extra-labels checks of a metric.

    A trustworthy metric must give a *lower* score to the explanation's concept once half
    of its positive images lose it (:func:`missing_labels`) and once as many wrong images
    gain it (:func:`extra_labels`). As in the paper's code, a neuron counts as a decrease
    when its score (averaged over ``draws`` perturbations) falls by more than ``epsilon``
    times the metric's range; the check passes when at least ``pass_rate`` of the neurons
    decrease. The outcome depends on the labels too: with a concept that matches the
    neuron every reliable metric passes, while with an unrelated concept the perturbation
    changes nothing systematic and about half the neurons decrease.

    Args:
        metric: Metric name or :class:`Metric`.
        acts: ``[N, U]`` activations.
        presence: ``[N, U]`` presence scores of each neuron's concept.
        top: Share of top-activating images that count as a neuron's positives.
        concept_top: Share of images that count as a concept's positives (default ``top``).
        draws: Perturbations averaged per neuron.
        seed: Seed of the perturbations.
        epsilon: Smallest change, as a share of the metric's range, counted as a decrease.
        pass_rate: Share of neurons that must decrease for the check to pass.

    Returns:
        ``{"missing": SanityCheck, "extra": SanityCheck}``.

    Examples:
        >>> acts = torch.rand(200, 8, generator=torch.Generator().manual_seed(0))
        >>> perfect = binarize_top(acts, 0.1).float()
        >>> checks = sanity_checks("correlation", acts, perfect, top=0.1)
        >>> checks["missing"].passed, checks["extra"].passed
        (True, True)
        >>> sanity_checks("recall", acts, perfect, top=0.1)["extra"].passed
        False
    """
    chosen = get_metric(metric)
    _check_pair(acts, presence, ("acts", "presence"))
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    concept_top = top if concept_top is None else concept_top
    generator = torch.Generator().manual_seed(seed)
    original = chosen(acts, presence, top)
    span = chosen.high - chosen.low
    out: dict[str, SanityCheck] = {}
    for test, perturb in (("missing", missing_labels), ("extra", extra_labels)):
        perturbed = torch.stack(
            [chosen(acts, perturb(presence, concept_top, generator), top) for _ in range(draws)]
        ).mean(dim=0)
        change = (perturbed - original) / span
        defined = torch.isfinite(change)
        units = int(defined.sum())
        if units == 0:
            out[test] = SanityCheck(test, None, None, 0, False)
            continue
        rate = float((change[defined] < -epsilon).double().mean())
        out[test] = SanityCheck(test, rate, float(change[defined].mean()), units, rate >= pass_rate)
    return out


# -- linear explanations ----------------------------------------------------------------


@dataclass
class LinearExplanation:
    """Sparse non-negative weights of several concepts that simulate each neuron.

    The simulated activation of neuron ``u`` is ``sum_k weights[u, k] * z[:, u, k]``, where
    ``z`` are its concepts' presence scores standardized with the fitting images' ``mean``
    and ``std``; the weights are in activation standard deviations per presence standard
    deviation, so they compare across concepts and scorers.

    Args:
        weights: ``[U, K]`` non-negative weights.
        mean: ``[U, K]`` presence means on the fitting images.
        std: ``[U, K]`` presence standard deviations (0 for a constant concept).
        l1: ``[U]`` L1 penalty used for each neuron (on the standardized scale).
    """

    weights: Tensor
    mean: Tensor
    std: Tensor
    l1: Tensor

    def predict(self, presence: Tensor) -> Tensor:
        """Simulated activations (standardized scale) from ``[N, U, K]`` presence scores.

        Args:
            presence: ``[N, U, K]`` presence of each neuron's ``K`` concepts.

        Returns:
            ``[N, U]`` simulated activations (up to an affine map, which correlation ignores).
        """
        z = _standardize(presence.double(), self.mean, self.std)
        return torch.einsum("nuk,uk->nu", z, self.weights)


def _standardize(values: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    # A constant concept carries no information: zero it instead of dividing by ~0.
    safe = torch.where(std > 0, std, torch.ones_like(std))
    return torch.where(std > 0, (values - mean) / safe, torch.zeros_like(values))


def _moments(values: Tensor) -> tuple[Tensor, Tensor]:
    mean = values.mean(dim=0)
    std = values.std(dim=0, unbiased=False)
    constant = (values.amax(dim=0) - values.amin(dim=0)) <= 1e-12 * (1.0 + values.abs().amax(dim=0))
    return mean, std.masked_fill(constant, 0.0)


def _lasso_nonnegative(
    gram: Tensor, xty: Tensor, l1: Tensor, iterations: int, tolerance: float = 1e-7
) -> Tensor:
    """Solve ``min_w |y - x w|^2 / 2n + l1 * sum(w)`` with ``w >= 0`` for a batch of
    problems by FISTA (accelerated projected proximal gradient).

    Args:
        gram: ``[B, K, K]`` ``x^T x / n`` of standardized features.
        xty: ``[B, K]`` ``x^T y / n``.
        l1: ``[B]`` penalties.
        iterations: Upper bound on FISTA steps.
        tolerance: Stop once no weight moves more than this.

    Returns:
        ``[B, K]`` weights.
    """
    lipschitz = torch.linalg.eigvalsh(gram)[:, -1].clamp_min(1e-12)
    step = (1.0 / lipschitz)[:, None]
    weights = torch.zeros_like(xty)
    momentum = weights.clone()
    t = 1.0
    for _ in range(iterations):
        gradient = (gram @ momentum[..., None]).squeeze(-1) - xty
        updated = (momentum - step * (gradient + l1[:, None])).clamp_min(0.0)
        t_next = (1.0 + math.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = updated + ((t - 1.0) / t_next) * (updated - weights)
        moved = float((updated - weights).abs().max()) if updated.numel() else 0.0
        weights, t = updated, t_next
        if moved < tolerance:
            break
    return weights


def fit_linear_explanation(
    presence: Tensor,
    acts: Tensor,
    *,
    l1: float | None = None,
    validation: float = 0.25,
    seed: int = 0,
    iterations: int = 500,
    fractions: Sequence[float] = L1_FRACTIONS,
) -> LinearExplanation:
    """Fit, per neuron, sparse non-negative weights of its concepts that simulate it.

    Linear Explanations (Oikarinen & Weng, ICML 2024) describe a neuron by a weighted set
    of concepts whose presence, summed with those weights, predicts its activation. Here
    the weights are an L1-penalized non-negative least-squares fit (a positive Lasso) on
    standardized presence scores and activations. Without ``l1``, the penalty of each
    neuron is chosen among ``fractions`` of its largest useful value by the correlation on
    a random ``validation`` share of the images, then the weights are refitted on all of
    them; with ``l1``, that penalty is used for every neuron.

    Args:
        presence: ``[N, U, K]`` presence of each neuron's ``K`` concepts on ``N`` images.
        acts: ``[N, U]`` activations on the same images.
        l1: Fixed L1 penalty on the standardized scale (0 = non-negative least squares).
        validation: Share of images held out to choose the penalty (when ``l1`` is None).
        seed: Seed of that split.
        iterations: FISTA steps at most.
        fractions: Candidate penalties, as fractions of the penalty that zeroes every weight.

    Returns:
        The :class:`LinearExplanation`.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> presence = torch.rand(300, 1, 3, generator=g)
        >>> acts = 2 * presence[:, :, 0] + presence[:, :, 1]
        >>> fit = fit_linear_explanation(presence, acts, l1=0.0)
        >>> [round(w, 2) for w in (fit.weights[0] / fit.weights[0].sum()).tolist()]
        [0.67, 0.33, 0.0]
    """
    if presence.ndim != 3 or acts.ndim != 2 or presence.shape[:2] != acts.shape:
        raise ValueError(
            f"presence must be [N, U, K] and acts [N, U]; got {tuple(presence.shape)} and "
            f"{tuple(acts.shape)}"
        )
    if presence.shape[0] < 2:
        raise ValueError("fit_linear_explanation needs at least two images")
    presence, acts = presence.double(), acts.double()

    def solve(rows: Tensor, penalty: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        mean, std = _moments(presence[rows])
        x = _standardize(presence[rows], mean, std).permute(1, 0, 2)  # [U, n, K]
        y_mean, y_std = _moments(acts[rows])
        y = _standardize(acts[rows], y_mean, y_std).T  # [U, n]
        n = x.shape[1]
        gram = x.transpose(1, 2) @ x / n
        xty = (x.transpose(1, 2) @ y[..., None]).squeeze(-1) / n
        if penalty is None:  # every candidate fraction at once: [F * U] problems
            # Above the largest positive x^T y / n every weight is zero.
            grid = torch.tensor(fractions, dtype=x.dtype)[:, None] * xty.amax(dim=1).clamp_min(0)
            count = len(fractions)
            weights = _lasso_nonnegative(
                gram.repeat(count, 1, 1), xty.repeat(count, 1), grid.flatten(), iterations
            )
            return weights.view(count, *xty.shape), mean, std, grid
        return _lasso_nonnegative(gram, xty, penalty, iterations), mean, std, penalty

    num_images, num_units = acts.shape
    everything = torch.arange(num_images)
    if l1 is not None:
        if l1 < 0:
            raise ValueError(f"l1 must be non-negative, got {l1}")
        penalty = torch.full((num_units,), float(l1), dtype=torch.float64)
        weights, mean, std, _ = solve(everything, penalty)
        return LinearExplanation(weights, mean, std, penalty)
    held = int(round(validation * num_images))
    if held < 2 or num_images - held < 2:
        raise ValueError(
            f"{num_images} images are too few to choose the penalty by validation; pass l1"
        )
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    train, valid = order[held:], order[:held]
    candidates, mean, std, grid = solve(train, None)  # [F, U, K], grid [F, U]
    z = _standardize(presence[valid], mean, std)  # [n, U, K]
    scores = torch.stack(
        [pearson(acts[valid], torch.einsum("nuk,uk->nu", z, w)) for w in candidates]
    )  # [F, U]
    best = torch.nan_to_num(scores, nan=-2.0).argmax(dim=0)
    penalty = grid.gather(0, best[None, :]).squeeze(0)
    weights, mean, std, _ = solve(everything, penalty)
    return LinearExplanation(weights, mean, std, penalty)
