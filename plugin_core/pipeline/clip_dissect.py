"""CLIP-Dissect as its authors run it, on neurolabel's evidence: the reference baseline.

CLIP-Dissect (Oikarinen & Weng, ICLR 2023) describes a neuron from *every* probing image,
not from exemplar patches: each image's activation is the spatial mean of the neuron's map
(``describe_neurons.py``'s default pooling), each image is scored whole against every
concept, and a similarity function turns the two ``[images, neurons]`` and ``[images,
concepts]`` matrices into ``[neurons, concepts]`` scores:

* ``soft-wpmi`` (its default): soft weighted pointwise mutual information over each
  neuron's 100 top images, ``a = 10``, ``lam = 1``, inclusion probability from 0.998 down
  to 0.97; the concept prior is the mean over **every** unit of the layer;
* ``wpmi``: over the 28 top images, ``a = 2``, ``lam = 0.6``, prior over every unit;
* ``cos-cubed``: the cosine of centered, cubed activations and scores over **all** images.

The mode (``aggregation="clip-dissect:FUNCTION"``) makes the labeler gather exactly that
(spatial-mean activations and whole-image scores of every probing image, for every unit of
each layer) and computes the scores from it, whatever units are explained; the functions of
:mod:`.aggregation` with the same names run on neurolabel's exemplars instead, and are
named for that ("soft-WPMI on our exemplars"), never "CLIP-Dissect".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import NeurolabelError
from .image_sample import ImageSample, block_rows

#: ``aggregation`` spec prefix of the published mode.
MODE = "clip-dissect"
#: The similarity functions of the published method; the first is its default.
FUNCTIONS = ("soft-wpmi", "wpmi", "cos-cubed")
#: Sample size meaning "every probing image".
EVERY_IMAGE = 2**31 - 1
#: What the labeler gathers in this mode (settings of
#: :class:`~neurolabel.plugin_core.pipeline.settings.LabelingSettings`): whole images, each
#: scored, ranked by the spatial mean.
LABELER_SETTINGS: dict[str, Any] = {
    "activation": "mean",
    "sample_size": EVERY_IMAGE,
    "scoring": "images",
    "patches": "whole",
}
#: Each function's options, as in CLIP-Dissect's ``similarity.py``.
OPTIONS: dict[str, dict[str, float]] = {
    "soft-wpmi": {
        "top_k": 100,
        "a": 10.0,
        "lam": 1.0,
        "p_start": 0.998,
        "p_end": 0.97,
        "min_prob": 1e-7,
    },
    "wpmi": {"top_k": 28, "a": 2.0, "lam": 0.6, "min_prob": 1e-7},
    "cos-cubed": {"min_norm": 1e-3},
}


# -- the formulas of CLIP-Dissect's similarity functions ------------------------------


def masked_sum(terms: Tensor, valid: Tensor) -> Tensor:
    """Sum of per-exemplar terms ``[C, k, V]`` over the valid exemplars ``[C, k]``."""
    return torch.where(valid.unsqueeze(-1), terms, torch.zeros_like(terms)).sum(dim=1)


def pointwise_mutual_information(given: Tensor, lam: float) -> Tensor:
    """``log p(concept | neuron) - lam * log p(concept)`` from ``given = log p(concept |
    neuron)`` ``[C, V]``; ``p(concept)`` is the mean over neurons (log-sum-exp), as in
    CLIP-Dissect."""
    prior = torch.logsumexp(given, dim=0, keepdim=True) - math.log(given.shape[0])
    return given - lam * prior


def wpmi_log_given(part: Tensor, valid: Tensor, a: float = 2.0, min_prob: float = 1e-7) -> Tensor:
    """WPMI's ``log p(concept | neuron)`` ``[c, V]`` from the similarities ``[c, k, V]`` of
    some neurons' top images (``valid`` ``[c, k]``: which of them exist)."""
    log_p = torch.log(torch.softmax(a * part, dim=-1) + min_prob)
    return masked_sum(log_p, valid)


def soft_wpmi_log_given(
    part: Tensor,
    valid: Tensor,
    top_k: int = 100,
    a: float = 10.0,
    p_start: float = 0.998,
    p_end: float = 0.97,
    min_prob: float = 1e-7,
) -> Tensor:
    """Soft-WPMI's ``log p(concept | neuron)`` ``[c, V]`` from the similarities ``[c, k, V]``
    of some neurons' top images, best first (``valid`` ``[c, k]``: which of them exist)."""
    k = part.shape[1]
    p_in = p_start - torch.arange(k, dtype=part.dtype) / max(top_k, 1) * (p_start - p_end)
    probs = torch.softmax(a * part, dim=-1)
    terms = torch.log(1 + p_in.view(1, k, 1) * (probs - 1) + min_prob)
    return masked_sum(terms, valid)


def cos_cubed(
    sims: Tensor, acts: Tensor, sample: ImageSample | None = None, min_norm: float = 1e-3
) -> Tensor:
    """CLIP-Dissect's cos^3: cosine between each neuron's centered, cubed activations and
    each concept's centered, cubed similarities over the probing images."""
    if sample is None:
        raise NeurolabelError("cos-cubed needs whole-image statistics over the probing set")
    t = sample.acts.double()
    t = (t - t.mean(dim=0, keepdim=True)) ** 3
    t = t / t.norm(dim=0, keepdim=True).clamp(min=min_norm)
    out = torch.empty(t.shape[1], sample.num_concepts)
    # Column by column the same as on the whole [S, V] matrix, in chunks of concepts.
    for columns, s in sample.chunks():
        s = (s - s.mean(dim=0, keepdim=True)) ** 3
        s = s / s.norm(dim=0, keepdim=True).clamp(min=min_norm)
        out[:, columns] = (t.T @ s).float()
    return out


def published_settings(function: str) -> dict[str, Any]:
    """The exact settings of the published mode with ``function``, for result and benchmark
    records (``settings.clip_dissect``).

    Examples:
        >>> published_settings("soft-wpmi")["options"]["top_k"]
        100
    """
    return {
        "function": function,
        "images": "every probing image, scored whole",
        "activation": "spatial mean per image (describe_neurons.py's pool_mode 'avg')",
        "prior": "mean over every unit of the layer",
        "options": dict(OPTIONS[function]),
        "source": "Oikarinen & Weng, CLIP-Dissect, ICLR 2023 (similarity.py defaults)",
    }


def check_function(name: str | None) -> str:
    """The function a ``clip-dissect[:FUNCTION]`` spec names (default ``soft-wpmi``)."""
    function = name or FUNCTIONS[0]
    if function not in FUNCTIONS:
        raise NeurolabelError(
            f"Unknown CLIP-Dissect function '{function}': use one of {', '.join(FUNCTIONS)} "
            f"(e.g. {MODE}:cos-cubed)"
        )
    return function


def clip_dissect_scores(sample: ImageSample, function: str = "soft-wpmi") -> Tensor:
    """CLIP-Dissect's ``[C, V]`` scores of every unit from every probing image.

    Args:
        sample: ``acts`` ``[N, C]``: the spatial-mean activation of every unit of the layer
            on every probing image; the images' whole-image concept scores.
        function: ``soft-wpmi``, ``wpmi`` or ``cos-cubed``.

    Returns:
        ``[C, V]`` scores, higher = better description.

    Examples:
        >>> acts = torch.tensor([[3.0, 0.0], [2.0, 0.1], [0.0, 2.0], [0.1, 3.0]])
        >>> sims = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
        >>> clip_dissect_scores(ImageSample(acts, sims)).argmax(dim=1).tolist()
        [0, 1]
    """
    function = check_function(function)
    options = OPTIONS[function]
    if function == "cos-cubed":
        return cos_cubed(torch.empty(0), torch.empty(0), sample, **options)
    acts = sample.acts.float()
    k = min(int(options["top_k"]), acts.shape[0])
    # Ties in order of the image index, as the streaming top-k breaks them.
    order = torch.sort(acts, dim=0, descending=True, stable=True).indices[:k].T  # [C, k]
    valid = torch.ones(order.shape, dtype=torch.bool)
    given: Callable[[Tensor, Tensor], Tensor]
    if function == "soft-wpmi":
        keep = ("top_k", "a", "p_start", "p_end", "min_prob")

        def given(part: Tensor, ok: Tensor) -> Tensor:
            return soft_wpmi_log_given(part, ok, **{n: options[n] for n in keep})  # type: ignore[arg-type]
    else:

        def given(part: Tensor, ok: Tensor) -> Tensor:
            return wpmi_log_given(part, ok, options["a"], options["min_prob"])

    # In chunks of units: [c, k, V] blocks of a 20,000-word vocabulary are large.
    step = block_rows(k * sample.num_concepts)
    blocks = []
    for start in range(0, order.shape[0], step):
        rows = order[start : start + step]
        part = sample.scores(rows=rows.reshape(-1)).view(rows.shape[0], k, -1)
        blocks.append(given(part, valid[start : start + step]))
    return pointwise_mutual_information(torch.cat(blocks), float(options["lam"]))


def published_mode_problem(activation: str, sampled: int, usable: int) -> str | None:
    """Why gathered evidence cannot give CLIP-Dissect as published (None: it can).

    Args:
        activation: How the evidence ranked images (``max`` or ``mean``).
        sampled: Whole images sampled with activations of every unit.
        usable: Readable probing images.
    """
    if activation != "mean":
        return (
            "it ranked images by the spatial max; CLIP-Dissect averages each map "
            "(activation='mean')"
        )
    if sampled < usable:
        return (
            f"it sampled {sampled:,} of {usable:,} images; CLIP-Dissect scores every probing "
            f"image (sample_size >= {usable:,})"
        )
    return None
