"""The small contracts every plugin implements, and the context factories receive."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from PIL import Image
from torch import Tensor, nn

from .preprocessing import Preprocessing
from .vocabulary import Vocabulary

if TYPE_CHECKING:
    from .plugins import Registries
    from .result import LabelingResult


@dataclass
class ResolveContext:
    """What a factory may need besides its spec.

    Args:
        device: Where models should run.
        registries: Every registry, so one plugin can use another's (a classifier-grounded
            scorer resolves its classifier through the model sources).
        cache_dir: Folder for caches (text embeddings, LLM answers).
        extra: Free-form settings passed by the caller (e.g. ``{"trust_pickle": True}``).
    """

    device: torch.device
    registries: Registries
    cache_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A target model ready to probe.

    Args:
        model: The module, in eval mode.
        preprocessing: How a PIL image becomes its input (and how to undo the geometry).
        name: The spec it was loaded from.
        class_names: Names of its output units when it is a classifier, else None.
        prefix_tokens: For transformers, how many leading tokens are not patches
            (CLS, registers); None lets the extractor infer it.
    """

    model: nn.Module
    preprocessing: Preprocessing
    name: str
    class_names: list[str] | None = None
    prefix_tokens: int | None = None


@dataclass(frozen=True)
class LayerInfo:
    """A hookable layer: dotted name, module type and output shape for one input."""

    name: str
    type: str
    shape: tuple[int, ...]
    kind: str  # "spatial" [C,H,W] | "tokens" [T,C] | "vector" [C] | "other"


class ActivationReader(Protocol):
    """Returned by :meth:`Extractor.open`: run one batch, get each layer's activations.

    A reader whose ``supports_consume`` attribute is true also takes ``consume=fn`` and
    calls ``fn(layer, activations)`` during the forward pass, returning only the layers it
    did not hand over (see the ``hooks`` extractor).
    """

    def __call__(self, batch: Tensor) -> dict[str, Tensor]:
        """Return ``{layer: [B,C,H,W] or [B,C]}`` (tokens already reshaped to their grid)."""
        ...


@runtime_checkable
class Extractor(Protocol):
    """Reads activations of named layers."""

    name: str

    def open(
        self, loaded: LoadedModel, layers: Sequence[str]
    ) -> AbstractContextManager[ActivationReader]:
        """Attach to ``layers`` of the model; detaches on exit. Unknown layers raise
        :class:`~neurolabel.plugin_core.errors.LayerNotFoundError` listing valid ones."""
        ...

    def list_layers(self, loaded: LoadedModel) -> list[LayerInfo]:
        """Every hookable layer with its output shape for one input of the model's size."""
        ...


@runtime_checkable
class EmbeddingScorer(Protocol):
    """A vision-language model with a shared embedding space (open_clip, ConSE).

    An optional ``cache_id`` string attribute, naming the weights and every setting that
    changes an image embedding, lets neurolabel cache patch embeddings on disk. An optional
    pair, ``image_transform`` (a picklable callable, PIL image to ``[3, H, W]`` tensor) and
    ``encode_pixels(pixels [N, 3, H, W]) -> [N, D]``, lets DataLoader workers preprocess
    exemplar patches while the model encodes the previous batch.
    """

    name: str

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """``[N, D]`` L2-normalized image embeddings."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """``[V, D]`` L2-normalized text embeddings."""
        ...


@runtime_checkable
class ConceptScorer(Protocol):
    """A scorer that cannot embed but scores concept presence directly (color, composite)."""

    name: str

    def score_images(self, images: Sequence[Image.Image], vocabulary: Vocabulary) -> Tensor:
        """``[N, V]`` presence scores, higher = more present."""
        ...


Scorer = EmbeddingScorer | ConceptScorer


class VocabularyProvider(Protocol):
    """Returns the concepts of a vocabulary spec (built lazily: may read files or ask an LLM)."""

    def __call__(self) -> Vocabulary: ...


@runtime_checkable
class Evaluator(Protocol):
    """Computes metrics of a labeling result; the figures go into ``result.metrics``."""

    name: str

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]: ...


def iter_batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


ImageTransform = Callable[[Image.Image], Tensor]
