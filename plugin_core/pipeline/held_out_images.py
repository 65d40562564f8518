"""Read a set of images once: each unit's activation and each concept's presence.

What the faithfulness and CoSy evaluators measure on held-out images, and what verified
descriptions test their candidates on (the verification split): one forward pass and one
scorer call per batch, row-aligned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..data.holdout import PathListSource
from ..data.images import FolderSource, ImageLoadError, SkippedInput
from ..data.vocabulary import Vocabulary, normalize_concept
from ..errors import EmptyInputError, NeurolabelError
from ..plugins.contracts import ConceptScorer, EmbeddingScorer, LoadedModel
from .topk import per_image_activation


@dataclass
class HeldOut:
    """What the held-out images gave: activations and concept presence, row-aligned.

    Args:
        acts: Per layer, ``[N, U]`` activations of the evaluated units (column order of
            ``units``).
        units: Per layer, the evaluated units.
        presence: ``[N, V]`` presence scores of ``concepts``.
        concepts: The scored concepts (columns of ``presence``).
        images: Descriptions (paths) of the ``N`` images used.
        skipped: Inputs left out, with the reason.
        embeddings: ``[N, D]`` image embeddings (embedding scorers only).
    """

    acts: dict[str, Tensor]
    units: dict[str, list[int]]
    presence: Tensor
    concepts: list[str]
    images: list[str]
    skipped: list[SkippedInput]
    #: ``[N, D]`` the images' embeddings, when the scorer embeds images.
    embeddings: Tensor | None = None
    _index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.concepts)}

    def column(self, concept: str) -> int:
        """Column of ``concept`` in :attr:`presence`."""
        return self._index[normalize_concept(concept)]


def where_images(source: FolderSource | PathListSource) -> str:
    """The held-out images, in words, for messages."""
    return str(source.root) if source.root is not None else str(source)


def collect_held_out(
    source: FolderSource | PathListSource,
    indices: Sequence[int],
    loaded: LoadedModel,
    read: Any,
    units: dict[str, list[int]],
    scorer: EmbeddingScorer | ConceptScorer,
    vocabulary: Vocabulary | None,
    *,
    device: torch.device,
    reduce: str = "max",
    batch_size: int = 32,
) -> HeldOut:
    """Read the held-out images once: per-image activations and concept presence.

    Args:
        source: The held-out folder.
        indices: Which of its images to use.
        loaded: The target model.
        read: An open activation reader (``Extractor.open(...)``'s value) for the layers.
        units: Per layer, the units to keep.
        scorer: Embedding scorer (cosine image-text) or concept scorer (``score_images``,
            then its ``calibrate`` if it has one, as the labeler does).
        vocabulary: The concepts to score; None keeps only an embedding scorer's image
            embeddings (``HeldOut.embeddings``; no concept is scored).
        device: Where the model runs.
        reduce: ``max`` or ``mean`` over a unit's map, as the labeler ranked images.
        batch_size: Images per forward pass and per scorer call.

    Returns:
        The :class:`HeldOut` figures of the readable images.
    """
    skipped = list(source.skipped_upfront)
    text = None
    embedder = scorer if isinstance(scorer, EmbeddingScorer) else None
    if vocabulary is None and embedder is None:
        raise NeurolabelError("Reading images without a vocabulary needs an embedding scorer")
    concepts = [] if vocabulary is None else list(vocabulary.concepts)
    if embedder is not None and concepts:
        text = embedder.encode_texts(concepts).float().cpu()
    embedded_images: list[Tensor] = []
    acts: dict[str, list[Tensor]] = {layer: [] for layer in units}
    presence: list[Tensor] = []
    used: list[str] = []
    pending: list[Image.Image] = []

    def flush() -> None:
        if not pending:
            return
        batch = torch.stack([loaded.preprocessing(image) for image in pending]).to(device)
        with torch.inference_mode():  # activations never need gradients
            outputs = read(batch)
        for layer, chosen in units.items():
            per_image = per_image_activation(outputs[layer], reduce)
            index = torch.tensor(chosen, dtype=torch.long, device=per_image.device)
            acts[layer].append(per_image[:, index].float().cpu())
        if embedder is not None:
            embedded = embedder.encode_images(pending).float().cpu()
            embedded_images.append(embedded)
            presence.append(embedded @ text.T if text is not None else embedded[:, :0])
        else:
            assert vocabulary is not None  # refused above otherwise
            presence.append(scorer.score_images(pending, vocabulary).float().cpu())  # type: ignore[union-attr]
        pending.clear()

    for index in indices:
        try:
            image = source.load(index)
        except ImageLoadError as exc:
            skipped.append(SkippedInput(source.describe(index), str(exc) or "unreadable"))
            continue
        pending.append(image)
        used.append(source.describe(index))
        if len(pending) >= batch_size:
            flush()
    flush()
    if not used:
        first = f"; first problem: {skipped[0].item}: {skipped[0].reason}" if skipped else ""
        raise EmptyInputError(
            f"None of the held-out images in {where_images(source)} is readable{first}"
        )
    scores = torch.cat(presence)
    calibrate = getattr(scorer, "calibrate", None)
    if callable(calibrate) and vocabulary is not None:
        scores = calibrate(scores, vocabulary).float()
    return HeldOut(
        acts={layer: torch.cat(chunks) for layer, chunks in acts.items()},
        units=units,
        presence=scores,
        concepts=concepts,
        images=used,
        skipped=skipped,
        embeddings=torch.cat(embedded_images) if embedded_images else None,
    )


@dataclass
class VerificationImages:
    """The verification split, read once: activations and whole-image embeddings.

    Args:
        acts: Per layer, ``[N, U]`` activations of the layer's explained units (column order
            of the evidence's units).
        embeddings: ``[N, D]`` the scorer's image embeddings.
        images: The ``N`` images' names.
        skipped: The verification images that could not be read, with the reason.
    """

    acts: dict[str, Tensor]
    embeddings: Tensor
    images: list[str]
    skipped: list[SkippedInput] = field(default_factory=list)
