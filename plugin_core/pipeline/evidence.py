"""What the labeler gathers before aggregation: exemplars, the patches they need, scores.

An :class:`Evidence` is the expensive part of a run (the forward pass and the VLM's
encodings). :meth:`NeuronLabeler.explain
<neurolabel.plugin_core.pipeline.labeler.NeuronLabeler.explain>` turns it into a result with
any aggregation, so several aggregations can be compared without re-reading an image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..data.images import ImageSource, SkippedInput
from ..data.vocabulary import Vocabulary
from ..errors import NeurolabelError
from .held_out_images import VerificationImages
from .image_sample import ImageSample
from .patch_scoring import PatchScores
from .patches import Box
from .scoring_plan import ScoringPlan
from .topk import TopKState


@dataclass
class ExplainedLayer:
    """One layer of a run: its streaming top-k state and the units being explained.

    Args:
        name: Dotted layer name.
        state: The exemplar pass's per-neuron top-k, maps and statistics.
        spatial: Whether the layer has activation maps (else one value per unit).
        shape: ``(C, H, W)`` or ``(C,)``.
        units: The explained units, sorted.
    """

    name: str
    state: TopKState
    spatial: bool
    shape: tuple[int, ...]
    units: list[int]


class PatchRequests:
    """Unique (image, box) patches needed, and which exemplar slot each one fills."""

    def __init__(self) -> None:
        self.unique: dict[tuple[int, Box | None], None] = {}
        self.key_of: dict[tuple[str, int, int], tuple[int, Box | None]] = {}
        self.box_of: dict[tuple[str, int, int], Box | None] = {}

    def add(
        self, layer: str, unit: int, rank: int, image_index: int, box: Sequence[int] | None
    ) -> None:
        """Record that exemplar ``rank`` of ``unit`` needs ``box`` of image ``image_index``."""
        patch: Box | None = None if box is None else (box[0], box[1], box[2], box[3])
        key = (image_index, patch)
        self.unique[key] = None
        self.key_of[(layer, unit, rank)] = key
        self.box_of[(layer, unit, rank)] = key[1]


@dataclass
class Evidence:
    """Everything gathered before aggregation: exemplars, patch-concept scores, samples.

    Returned by :meth:`NeuronLabeler.gather_evidence`; :meth:`NeuronLabeler.explain` turns it
    into a result with any aggregation, and :meth:`layer_tensors` exposes the raw tensors.
    """

    source: ImageSource
    scorer_name: str
    vocabulary: Vocabulary
    layers: list[ExplainedLayer]
    requests: PatchRequests
    scores: PatchScores
    sample_acts: dict[str, Tensor]
    sample_ids: Tensor
    skipped: list[SkippedInput]
    num_unreadable: int
    seconds: float
    plan: ScoringPlan | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: Why the labels of this run may mislead (one sentence each), recorded in the result.
    warnings: list[str] = field(default_factory=list)
    #: ``[V]`` concepts the scorer saw nothing of (the same score on every patch), left out
    #: of the labels; None when there are none.
    unseen_concepts: Tensor | None = None
    #: How an image's activation map became the number images are ranked by (and the
    #: sample's activations): ``max`` or ``mean``.
    activation: str = "max"
    #: Whether the scorer embeds texts (``find`` and ``compare`` then use its text side).
    scorer_embeds_texts: bool = False
    #: Null distributions of the label test, per layer and exemplar count: they depend only
    #: on the sample, so every aggregation of this evidence reuses them.
    significance_nulls: dict[str, dict[int, Tensor]] = field(default_factory=dict, repr=False)
    #: The verification split read once (verified descriptions only), else None.
    verification: VerificationImages | None = None

    def layer(self, name: str) -> ExplainedLayer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise NeurolabelError(f"No layer '{name}' in this evidence")

    def exemplar_slots(self, name: str) -> tuple[list[int], list[int], list[Any]]:
        """``(rows, ranks, keys)`` of the layer's scored exemplar slots: the row of the unit
        (its position among the explained units), the exemplar's rank and its patch's key
        in :attr:`scores`; slots without a scored patch are left out."""
        layer = self.layer(name)
        rows: list[int] = []
        ranks: list[int] = []
        keys: list[Any] = []
        for row, unit in enumerate(layer.units):
            for rank in range(layer.state.values.shape[1]):
                key = self.requests.key_of.get((name, unit, rank))
                if key is not None:
                    rows.append(row)
                    ranks.append(rank)
                    keys.append(key)
        return rows, ranks, keys

    def layer_tensors(
        self, name: str, with_sample: bool = False, every_unit: bool = False
    ) -> tuple[Tensor, Tensor, ImageSample | None]:
        """``(sims [U, k, V], activations [U, k], sample)`` of the explained units of a layer.

        Missing exemplars have ``-inf`` activation and NaN similarities. With
        ``every_unit``, the sample's activations hold every unit of the layer (``[S, C]``),
        not only the explained ones.
        """
        layer = self.layer(name)
        k = layer.state.values.shape[1]
        units = torch.tensor(layer.units, dtype=torch.long)
        values = layer.state.values[units].clone()
        sims = torch.full((len(layer.units), k, len(self.vocabulary)), float("nan"))
        rows, ranks, keys = self.exemplar_slots(name)
        scored = torch.zeros_like(values, dtype=torch.bool)
        scored[rows, ranks] = True
        values[~scored] = float("-inf")
        if keys:  # one product for the whole layer
            sims[rows, ranks] = self.scores.rows_for(keys)
        sample = None
        if with_sample:
            whole_images: list[tuple[int, Box | None]] = [
                (int(i), None) for i in self.sample_ids.tolist()
            ]
            # An embedding scorer's sample stays factored: no [S, V] scores are formed.
            embeddings = self.scores.embeddings_for(whole_images)
            scores = (
                {"sims": self.scores.rows_for(whole_images)}
                if embeddings is None
                else {"image_embeddings": embeddings, "concept_embeddings": self.scores.text}
            )
            # Where each exemplar's image sits in the sample, so that a validation on held-out
            # sampled images can keep those images out of the exemplar evidence too.
            ids = layer.state.ids[units]
            size = max([int(ids.max()) if ids.numel() else -1, *self.sample_ids.tolist()]) + 1
            row_of = torch.full((max(size, 1),), -1, dtype=torch.long)
            row_of[self.sample_ids.long()] = torch.arange(len(self.sample_ids))
            exemplar_rows = torch.where(ids >= 0, row_of[ids.clamp(min=0)], -1)
            exemplar_rows[~torch.isfinite(values)] = -1
            acts = self.sample_acts[name] if every_unit else self.sample_acts[name][:, units]
            sample = ImageSample(
                acts=acts, exemplar_rows=None if every_unit else exemplar_rows, **scores
            )
        return sims, values, sample
