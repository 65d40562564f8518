"""Is a unit's label more than chance? A permutation test per unit, corrected twice.

The question for each of a unit's ranked concepts: is the concept more present on the
unit's exemplar images than on the probing images at large? The evidence is what the
labeler already scored: the whole-image score of every concept on a uniform sample of the
probing images, and on each exemplar's image.

1. **Statistic.** For concept ``v``, each exemplar image's score is turned into its
   percentile among the sampled images (mid-ranks for ties; a sampled image is compared
   with the others). The mean percentile of the unit's ``m`` strongest exemplars is about
   0.5 when the concept has nothing to do with what the unit picked and near 1 when each
   of them shows it more than nearly every other image. A unit may be about its few
   strongest exemplars only (a logit unit on a set with one photo per class) or about all
   of them, so the statistic is the largest standardized mean over ``m`` = 2, 4, 8, ... and
   ``k`` (:func:`prefix_sizes`): ``(mean - 0.5) / sd(m)``.
2. **Null, corrected across the vocabulary.** If the unit's choice of images had nothing to
   do with the concepts, its exemplars would be like ``k`` images drawn at random, in a
   random order. The test draws ``permutations`` such sequences and takes, for each, the
   *largest* statistic over the whole vocabulary (and every ``m``: Westfall & Young's
   max-T). A concept's p-value is the share of draws whose largest statistic reaches its
   own: it holds the family-wise error over all concepts, so picking the best of 20,000
   words does not make a label look significant by multiplicity.
3. **Across the units of a layer**, the label's p-values get the Benjamini–Hochberg
   false-discovery-rate adjustment. A unit whose adjusted p-value is above the level
   (default 0.05) is *unexplained*: reported so, never given an arbitrary label.

The draws depend only on ``k`` and the sample, so one null serves every unit of a layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import NeurolabelError
from .image_sample import ImageSample, block_rows

#: Default significance level of a label (after both corrections).
DEFAULT_LEVEL = 0.05
#: Random exemplar sets drawn for the null; the smallest p-value is 1 / (this + 1).
DEFAULT_PERMUTATIONS = 2000
#: Fewest sampled images the test needs (with fewer, every label is untested).
MIN_SAMPLE = 20


@dataclass(frozen=True)
class SignificanceSettings:
    """How labels are tested.

    Args:
        level: Largest adjusted p-value of a label (0 < level <= 1; 1 keeps every label).
        permutations: Random exemplar sets of the null.
        seed: Seed of those draws.
    """

    level: float = DEFAULT_LEVEL
    permutations: int = DEFAULT_PERMUTATIONS
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.level <= 1:
            raise NeurolabelError(
                f"significance level={self.level}: give a level in (0, 1], e.g. 0.05"
            )
        if self.permutations < 99:
            raise NeurolabelError(
                f"significance permutations={self.permutations}: use at least 99 (p-values "
                "below 0.01 need more)"
            )

    def to_dict(self) -> dict[str, object]:
        return {
            "level": self.level,
            "permutations": self.permutations,
            "seed": self.seed,
            "test": "mean percentile of the exemplar images' whole-image concept scores "
            "among the sampled images; max-T permutation null over the vocabulary "
            "(Westfall-Young); Benjamini-Hochberg across the units of a layer",
        }


def percentiles(values: Tensor, sorted_sample: Tensor, in_sample: Tensor) -> Tensor:
    """Mid-rank percentile of each value among the sampled scores of the same concept.

    Args:
        values: ``[V, m]`` scores (concept-major).
        sorted_sample: ``[V, S]`` each concept's sampled scores, ascending.
        in_sample: ``[m]`` bool, whether value ``j`` is itself one of the sampled images
            (it is then compared with the ``S - 1`` others).

    Returns:
        ``[V, m]`` percentiles in ``[0, 1]``.

    Examples:
        >>> sample = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
        >>> percentiles(torch.tensor([[3.0, 5.0]]), sample, torch.tensor([True, False])).tolist()
        [[1.0, 1.0]]
    """
    count = sorted_sample.shape[1]
    below = torch.searchsorted(sorted_sample, values.contiguous(), right=False).double()
    upto = torch.searchsorted(sorted_sample, values.contiguous(), right=True).double()
    ties = upto - below
    mine = in_sample.double().unsqueeze(0)
    # A sampled image ties with itself: that tie is not a comparison.
    others = count - mine
    return ((below + 0.5 * (ties - mine)) / others.clamp(min=1)).float()


def _sorted_blocks(sample: ImageSample) -> Iterator[tuple[slice, Tensor]]:
    """Each concept's sampled scores, ascending, a block of concepts ``[v, S]`` at a time
    (never the whole ``[V, S]`` matrix: 20,000 words x 2,000 images)."""
    for columns, part in sample.chunks():
        yield columns, part.T.contiguous().sort(dim=1).values


def prefix_sizes(k: int) -> list[int]:
    """The numbers of strongest exemplars the statistic looks at: 2, 4, 8, ... and ``k``.

    Examples:
        >>> prefix_sizes(5), prefix_sizes(100), prefix_sizes(1)
        ([2, 4, 5], [2, 4, 8, 16, 32, 64, 100], [1])
    """
    sizes = []
    m = 2
    while m < k:
        sizes.append(m)
        m *= 2
    return [*sizes, k]


def _standardized_prefix_means(percentile: Tensor, count: int) -> Tensor:
    """``[..., k]`` percentiles in exemplar order -> ``[...]`` the largest standardized
    mean over the prefixes of :func:`prefix_sizes` (``count`` sampled images)."""
    k = percentile.shape[-1]
    sizes = prefix_sizes(k)
    sums = percentile.double().cumsum(dim=-1)[..., [m - 1 for m in sizes]]
    m = torch.tensor(sizes, dtype=torch.float64)
    # The spread of a mean of m percentiles drawn without replacement from ``count``.
    spread = torch.sqrt(
        (1 / 12) / m * ((count - m) / max(count - 1, 1)).clamp(min=1 / max(count, 1))
    )
    return ((sums / m - 0.5) / spread).amax(dim=-1).float()


def max_t_null(sample: ImageSample, k: int, settings: SignificanceSettings) -> Tensor:
    """``[permutations]`` the largest statistic over all concepts of random sequences of
    ``k`` sampled images: the null of :func:`unit_p_values`.

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> sample = ImageSample(torch.zeros(50, 1), torch.rand(50, 3, generator=g))
        >>> null = max_t_null(sample, 5, SignificanceSettings(permutations=200))
        >>> null.shape, 0.0 < float(null.median()) < 4.0  # z-like: the best of 3 concepts
        (torch.Size([200]), True)
    """
    count = sample.num_images
    k = min(k, count)
    generator = torch.Generator().manual_seed(settings.seed)
    draws = torch.stack(
        [torch.randperm(count, generator=generator)[:k] for _ in range(settings.permutations)]
    )
    best = torch.full((settings.permutations,), -math.inf)
    for _, part in sample.chunks():
        # Within-sample mid-rank percentiles of every sampled image, per concept.
        ranks = _mid_ranks(part)  # [S, v], 0-based
        scaled = (ranks / max(count - 1, 1)).float()
        step = block_rows(k * scaled.shape[1])
        for start in range(0, len(draws), step):
            rows = draws[start : start + step]
            picked = scaled[rows.reshape(-1)].view(len(rows), k, -1).transpose(1, 2)
            stat = _standardized_prefix_means(picked, count)  # [b, v]
            best[start : start + step] = torch.maximum(best[start : start + step], stat.amax(1))
    return best


def _mid_ranks(part: Tensor) -> Tensor:
    """0-based mid-ranks of each column's entries among the column (ties averaged)."""
    order = part.argsort(dim=0, stable=True)
    sorted_part = part.gather(0, order)
    below = torch.searchsorted(sorted_part.T.contiguous(), part.T.contiguous(), right=False)
    upto = torch.searchsorted(sorted_part.T.contiguous(), part.T.contiguous(), right=True)
    return (below + (upto - below - 1) / 2).T.double()


def unit_p_values(
    exemplar_scores: Tensor,
    in_sample: Tensor,
    valid: Tensor,
    concepts: Tensor,
    sample: ImageSample,
    settings: SignificanceSettings,
    nulls: dict[int, Tensor] | None = None,
) -> Tensor:
    """Vocabulary-corrected p-values of some concepts of each unit (max-T, step 2 above).

    Args:
        exemplar_scores: ``[U, k, n]`` whole-image scores of each unit's exemplar images,
            strongest first, for the ``n`` concepts in ``concepts[u]``.
        in_sample: ``[U, k]`` whether each exemplar image is one of the sampled images.
        valid: ``[U, k]`` which exemplars exist.
        concepts: ``[U, n]`` concept indices (into the sample's vocabulary).
        sample: The sampled whole images' scores.
        settings: Permutations and seed.
        nulls: Null distributions by exemplar count, reused and filled (the null depends
            only on the sample and the count).

    Returns:
        ``[U, n]`` p-values; NaN for a unit without exemplars or with a sample under
        :data:`MIN_SAMPLE` images.
    """
    units, _, n = exemplar_scores.shape
    out = torch.full((units, n), math.nan)
    if sample.num_images < MIN_SAMPLE or units == 0:
        return out
    stats = torch.zeros(units, n)
    for columns, sorted_block in _sorted_blocks(sample):
        start, stop = columns.start, min(columns.stop, sample.num_concepts)
        inside = (concepts >= start) & (concepts < stop)
        if not inside.any():
            continue
        for unit in inside.any(dim=1).nonzero().flatten().tolist():
            picked = inside[unit].nonzero().flatten()
            rows = valid[unit]
            values = exemplar_scores[unit][rows][:, picked].T  # [p, k']
            local = sorted_block[concepts[unit, picked] - start]  # [p, S]
            found = percentiles(values, local, in_sample[unit][rows])  # [p, k'], rank order
            stats[unit, picked] = _standardized_prefix_means(found, sample.num_images)
    counts = valid.sum(dim=1)
    nulls = {} if nulls is None else nulls
    for unit in range(units):
        k = int(counts[unit])
        if k == 0:
            continue
        if k not in nulls:
            nulls[k] = max_t_null(sample, k, settings)
        null = nulls[k]
        reached = (null.unsqueeze(0) >= stats[unit].unsqueeze(1) - 1e-9).sum(dim=1)
        out[unit] = (reached + 1).float() / (len(null) + 1)
    return out


def benjamini_hochberg(p_values: Tensor) -> Tensor:
    """Benjamini–Hochberg adjusted p-values (q-values); NaN entries stay NaN and do not
    count.

    Examples:
        >>> q = benjamini_hochberg(torch.tensor([0.01, 0.04, 0.03, float("nan")]))
        >>> [round(v, 4) for v in q.tolist()]
        [0.03, 0.04, 0.04, nan]
    """
    out = torch.full_like(p_values, math.nan, dtype=torch.float64)
    finite = torch.isfinite(p_values)
    values = p_values[finite].double()
    m = values.numel()
    if m == 0:
        return out.to(p_values.dtype)
    order = values.argsort()
    ranked = values[order] * m / torch.arange(1, m + 1, dtype=torch.float64)
    # The running minimum from the largest p-value down keeps the adjustment monotone.
    adjusted = ranked.flip(0).cummin(0).values.flip(0).clamp(max=1.0)
    result = torch.empty_like(values)
    result[order] = adjusted
    out[finite] = result
    return out.to(p_values.dtype)
