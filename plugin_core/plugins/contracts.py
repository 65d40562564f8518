"""The small contracts every plugin implements: what each registry's factories return.

A model source returns a :class:`LoadedModel`, an extractor an :class:`Extractor`, a
patcher a :class:`Patcher`, a vocabulary provider a :class:`VocabularyProvider`, a scorer an
:class:`EmbeddingScorer`, a :class:`ConceptScorer` or a :class:`Describer`, a summarizer a
:class:`Summarizer` and an evaluator an :class:`Evaluator`. Importing this module imports
neither torch nor PIL: the names below only appear in annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor, nn

    from ..data.preprocessing import Preprocessing
    from ..data.result import LabelingResult, NeuronExplanation
    from ..data.vocabulary import Vocabulary
    from .context import ResolveContext


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

    def fingerprint(self) -> str:
        """Hash of the model's class, parameters and buffers: the same weights, the same
        key (a spec with random weights gives another one at every load)."""
        import hashlib

        import torch

        hasher = hashlib.sha256(type(self.model).__name__.encode())
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            hasher.update(name.encode())
            # A numpy array is a buffer (no copy); typeshed's Buffer type predates it on 3.10.
            data: Any = tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy()
            hasher.update(data)
        return hasher.hexdigest()[:20]


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


class ConsumingReader(ActivationReader, Protocol):
    """A reader that can hand each layer's activations over while the forward pass runs."""

    supports_consume: bool

    def __call__(
        self, batch: Tensor, consume: Callable[[str, Tensor], None] | None = None
    ) -> dict[str, Tensor]:
        """With ``consume``, call ``consume(layer, activations)`` for each layer as it runs
        and return only the layers not handed over; without it, return every layer."""
        ...


@runtime_checkable
class Extractor(Protocol):
    """Reads activations of named layers (``register_extractors``)."""

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
class UnitMap(Protocol):
    """Turns a layer's activations into the units to explain (``register_unit_maps``).

    A unit map keeps the spatial layout: ``[B, C, H, W]`` becomes ``[B, U, H, W]`` (and
    ``[B, C]`` becomes ``[B, U]``), so exemplars, patches, scoring and evaluation work on
    its units as they do on channels. ``channels`` (the identity) is the default; a sparse
    autoencoder's latents or a matrix of directions are others.

    Optional methods say how units write back into the layer, which ablation and
    prediction attribution need (a map with neither is refused there, with the reason):
    ``decoder(layer) -> Tensor | None``, ``[U, C]``: unit ``u`` contributes
    ``u * decoder[u]`` to a channel vector (an SAE's decoder weight); or
    ``channel_groups(layer) -> Tensor``, ``[U, C]`` 0/1: each unit is a group of channels
    (attention heads). Also optional: ``bind(loaded)`` (read the model before use),
    ``needs_fit`` with ``fit``/``restore`` (fitted on the probing images and recorded).
    """

    name: str

    def units(self, layer: str, channels: int) -> int:
        """How many units ``layer`` (with ``channels`` channels) has under this map; raises
        :class:`~neurolabel.plugin_core.errors.NeurolabelError` when the map does not fit."""
        ...

    def __call__(self, layer: str, acts: Tensor) -> Tensor:
        """Map a batch of ``layer``'s activations, channels on dimension 1."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the result records: the spec, a hash of any file, the kind of units."""
        ...


@runtime_checkable
class Patcher(Protocol):
    """Locates the region of exemplar images that drove a neuron (``register_patchers``).

    The labeler's built-in modes cut patches from the activation maps the exemplar search
    kept; a patcher instead computes, for each exemplar, a map at input resolution (an
    attribution such as Grad-CAM or integrated gradients), from which the patch is cut.

    Optional: ``for_unit_map(unit_map) -> Patcher``, the patcher attributing a unit map's
    units instead of channels (``units_from``); a patcher without it is refused there.
    """

    name: str

    def locate(self, loaded: LoadedModel, layer: str, unit: int, images: Tensor) -> Tensor:
        """Return ``[N, H, W]`` maps for ``images`` ``[N, 3, H, W]`` (preprocessed model
        inputs): higher where the image drove ``unit`` of ``layer`` more. Called with
        gradients enabled (outside inference mode)."""
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


@dataclass(frozen=True)
class DescribeRequest:
    """One neuron to describe.

    Args:
        layer: Layer name.
        unit: Unit index.
        load_patches: Returns the neuron's exemplar patches, strongest first (called when
            the describer needs them, so all neurons' patches are never in memory at once).
        candidates: The scorer's concepts for this neuron, best first (the choices of a
            constrained describer).
    """

    layer: str
    unit: int
    load_patches: Callable[[], list[Image.Image]]
    candidates: tuple[str, ...] = ()


@runtime_checkable
class Describer(Protocol):
    """A model that names what a neuron's exemplar patches share (``litellm:MODEL``).

    The scorer variant of a model that cannot embed (a chat VLM), registered through
    ``register_scorers``; the labeler fuses its ranking with the scorer's.

    Attributes:
        name: The spec it was built from.
        num_patches: Exemplar patches it looks at per neuron.
        num_candidates: Scorer concepts it is offered per neuron (0 = free-form only).
        weight: Share of its ranking in the combined one (0..1; 1 = its labels only).
    """

    name: str
    num_patches: int
    num_candidates: int
    weight: float

    def describe(self, requests: Sequence[DescribeRequest]) -> list[list[tuple[str, float]]]:
        """Per request, ranked ``(label, confidence)`` pairs, best first (may be empty)."""
        ...


@runtime_checkable
class Summarizer(Protocol):
    """Writes one sentence per neuron from its explanation (``register_summarizers``)."""

    name: str

    def summarize(self, neurons: Sequence[NeuronExplanation]) -> list[str | None]:
        """One sentence (or None when none could be written) per neuron, in order."""
        ...


class VocabularyProvider(Protocol):
    """Returns the concepts of a vocabulary spec (built lazily: may read files or ask an LLM)."""

    def __call__(self) -> Vocabulary: ...


@runtime_checkable
class Evaluator(Protocol):
    """Computes metrics of a labeling result; the figures go into ``result.metrics``."""

    name: str

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]: ...


def iter_batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of ``items`` of at most ``size`` elements.

    Examples:
        >>> [list(b) for b in iter_batches([1, 2, 3, 4, 5], 2)]
        [[1, 2], [3, 4], [5]]
    """
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + size]


#: A picklable PIL image -> ``[3, H, W]`` tensor transform (see :class:`EmbeddingScorer`).
ImageTransform = Callable[["Image.Image"], "Tensor"]
