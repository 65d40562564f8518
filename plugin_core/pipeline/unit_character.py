"""How clean a unit is: clarity, polysemanticity (one label per exemplar group), redundancy.

Each exemplar is placed in the scorer's space by its *concept profile*: its similarity to
every concept of the vocabulary (for an embedding scorer, the projection of its patch
embedding on the concepts' text embeddings), centered on the layer's mean profile so that
what all exemplars share (the scorer's bias toward some concepts) does not make unrelated
exemplars look alike.

- **Clarity** (SemanticLens, Dreyer et al., Nature Machine Intelligence 2025: the mean
  pairwise cosine similarity of a unit's concept examples in the foundation model's
  space): the mean cosine between the centered profiles of two of the unit's exemplars,
  from -1 to 1; high when its exemplars show one thing.
- **Groups** and **polysemanticity**: the exemplars are clustered (average linkage on
  cosine distance, cut at :data:`GROUP_DISTANCE`: a group's members are on average closer
  to each other than orthogonal); each group of at least :func:`min_group_size` exemplars
  gets its own label (its members' best concept on average). Polysemanticity is the
  number of such groups, so a unit that fires on two unrelated things gets two labels
  instead of one averaged one (the idea of per-cluster descriptions in SemanticLens and of
  polysemanticity as several distinct exemplar clusters, Scherlis et al. 2022).
- **Redundancy** (SemanticLens' redundancy: units sharing a concept): how many other
  labeled units of the layer have the same top concept.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

#: Average-linkage cut: clusters whose members' mean cosine distance is below 1 (their
#: centered profiles point on average in a common direction) stay one group.
GROUP_DISTANCE = 1.0


def min_group_size(exemplars: int) -> int:
    """Exemplars a group needs to count: a fifth of them, at least 2 (a lone exemplar is
    noise, not a meaning)."""
    return max(2, math.ceil(exemplars / 5))


def mean_profile(sims: Tensor, values: Tensor, block: int = 256) -> Tensor:
    """``[V]`` mean similarity profile of a layer's valid exemplars (NaN-free rows with a
    finite activation), summed in blocks of units so no copy of ``sims`` is made."""
    import torch

    total = torch.zeros(sims.shape[2], dtype=torch.float64)
    count = 0
    for start in range(0, sims.shape[0], block):
        part, valid = (
            sims[start : start + block],
            _valid(sims[start : start + block], values[start : start + block]),
        )
        total += part[valid].double().sum(dim=0)
        count += int(valid.sum())
    return (total / max(count, 1)).float()


def _valid(sims: Tensor, values: Tensor) -> Tensor:
    return torch.isfinite(values) & torch.isfinite(sims).all(dim=2)


def centered_profiles(sims: Tensor, mean: Tensor) -> Tensor:
    """``[n, V]`` similarity rows minus the layer's mean profile, scaled to unit length
    (a row exactly at the mean stays zero)."""
    centered = sims.float() - mean
    return centered / centered.norm(dim=1, keepdim=True).clamp(min=1e-12)


def clarity(profiles: Tensor) -> float | None:
    """Mean pairwise cosine of ``[n, V]`` unit-length profiles (None below two).

    Examples:
        >>> clarity(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]))
        0.3333333432674408
    """
    n = profiles.shape[0]
    if n < 2:
        return None
    total = (profiles.sum(dim=0) ** 2).sum() - (profiles**2).sum()
    return float(total / (n * (n - 1)))


def exemplar_groups(
    profiles: Tensor, sims: Tensor, concepts: list[str], min_size: int
) -> list[list[Any]]:
    """Cluster one unit's exemplars and label each group.

    Args:
        profiles: ``[n, V]`` unit-length centered profiles of its valid exemplars.
        sims: ``[n, V]`` their raw concept similarities.
        concepts: The vocabulary.
        min_size: Exemplars a group needs.

    Returns:
        ``[[concept, size, mean similarity], ...]``, largest group first.

    Examples:
        >>> p = torch.tensor([[1.0, 0.0]] * 3 + [[0.0, 1.0]] * 2 + [[-0.6, -0.8]])
        >>> exemplar_groups(p, p.clamp(min=0), ["red", "green"], 2)
        [['red', 3, 1.0], ['green', 2, 1.0]]
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    n = profiles.shape[0]
    if n < min_size:
        return []
    if n == 1:
        labels = [1]
    else:
        # Profiles are unit length, or zero for an exemplar exactly at the layer's mean
        # (cosine 0 with every other: distance 1).
        unit = profiles.double()
        distance = (1 - unit @ unit.T).clamp(0, 2)
        distance.fill_diagonal_(0)
        condensed = squareform(distance.numpy(), checks=False)
        # strictly closer than orthogonal: an exact tie (two disjoint one-hot profiles)
        # stays apart
        tree = linkage(condensed, method="average")
        labels = fcluster(tree, t=GROUP_DISTANCE - 1e-9, criterion="distance").tolist()
    groups: list[list[Any]] = []
    for cluster in sorted(set(labels)):
        members = [i for i, c in enumerate(labels) if c == cluster]
        if len(members) < min_size:
            continue
        mean = sims[members].float().mean(dim=0)
        best = int(mean.argmax())
        groups.append([concepts[best], len(members), round(float(mean[best]), 6)])
    groups.sort(key=lambda g: (-g[1], -g[2]))
    return groups


def unit_character(
    sims: Tensor, values: Tensor, concepts: list[str], dead: Tensor
) -> list[dict[str, Any]]:
    """Clarity and labeled exemplar groups of every unit of a layer.

    Args:
        sims: ``[U, k, V]`` exemplar-concept similarities (NaN: missing exemplar).
        values: ``[U, k]`` exemplar activations (-inf: missing).
        concepts: The vocabulary, ``V`` names.
        dead: ``[U]`` dead units (left without figures).

    Returns:
        One ``{"clarity": float | None, "groups": [...]}`` per unit.
    """
    mean = mean_profile(sims, values)
    size = min_group_size(int(values.shape[1]))
    out: list[dict[str, Any]] = []
    for row in range(values.shape[0]):
        if bool(dead[row]):
            out.append({"clarity": None, "groups": None})
            continue
        # one unit at a time: a [k, V] block, never a second [U, k, V] array
        keep = _valid(sims[row : row + 1], values[row : row + 1])[0]
        raw = sims[row][keep]
        mine = centered_profiles(raw, mean)
        out.append(
            {
                "clarity": clarity(mine),
                "groups": exemplar_groups(mine, raw, concepts, size),
            }
        )
    return out


def mark_redundancy(neurons: list[Any]) -> None:
    """Set each neuron's ``redundancy`` from the layer's current labels (again after a
    describer re-ranks them)."""
    tops = [
        None if n.dead or n.unexplained or not n.concepts else str(n.concepts[0][0])
        for n in neurons
    ]
    for neuron, count in zip(neurons, redundancy(tops), strict=True):
        neuron.redundancy = count


def redundancy(top_concepts: list[str | None]) -> list[int | None]:
    """Per unit, how many other units share its top concept (None for unlabeled units).

    Examples:
        >>> redundancy(["dog", "cat", "dog", None])
        [1, 0, 1, None]
    """
    counts: dict[str, int] = {}
    for concept in top_concepts:
        if concept is not None:
            counts[concept] = counts.get(concept, 0) + 1
    return [None if c is None else counts[c] - 1 for c in top_concepts]
