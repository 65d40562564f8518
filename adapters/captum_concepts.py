"""TCAV on the concepts neurolabel discovered: labels as ``captum.concept.Concept`` objects.

A concept neurolabel discovered in a layer is the label of some of its units; its examples
are those units' exemplar patches (the image regions that made them fire).
:func:`neuron_concepts` exports a neuron's top concepts this way: concept *i* holds the
exemplar patches of the units of the same layer whose label — their top concept, or one
of their top ``depth`` concepts — is the neuron's *i*-th concept (the neuron itself is
always among the units of its own label). :func:`layer_concepts` exports every label of a
layer, and :func:`random_concepts` random crops of the probing images, TCAV's random
counterparts. Each concept's ``data_iter`` is a DataLoader of preprocessed patch batches
(each patch resized to the model input), read lazily.

Patch pixels come from, in order: the probing ``images`` you pass (any form the labeler
accepts; full resolution), the exemplar's image file when the result was computed on a
folder, the patches the result holds in memory, and the patch files of a saved result.

Examples:
    A two-unit model (unit 0 sees red, unit 1 blue), labeled on squares of both colors;
    TCAV then asks how much class 0 depends on the concept ``red`` that neurolabel found.

    >>> import tempfile
    >>> import warnings
    >>> import numpy as np
    >>> from captum.concept import TCAV
    >>> from torch import nn
    >>> from neurolabel import NeuronLabeler, Preprocessing
    >>> conv = nn.Conv2d(3, 2, 1, bias=False)
    >>> conv.weight.data = torch.tensor([[1.0, 0, -1], [-1, 0, 1]]).view(2, 3, 1, 1)
    >>> model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    >>> images = [Image.new("RGB", (64, 64), "gray") for _ in range(6)]
    >>> for image, color, x in zip(images, ["red"] * 3 + ["blue"] * 3, [0, 20, 40] * 2):
    ...     image.paste(color, (x, 16, x + 24, 40))
    >>> preprocessing = Preprocessing((32, 32), resize_size=None)
    >>> labeler = NeuronLabeler(model, ["1"], scorer="color", vocabulary="colors", top_k=3,
    ...                         preprocessing=preprocessing, device="cpu", progress=False)
    >>> result = labeler.run(images)
    >>> concepts = neuron_concepts(result, "1", 0, top=1, images=images)
    >>> randoms = random_concepts(result, count=2, size=6, images=images)
    >>> [concept.name for concept in concepts + randoms]
    ['red', 'random-0', 'random-1']
    >>> inputs = torch.stack([preprocessing(image) for image in images[:3]])  # red squares
    >>> np.random.seed(0)  # Captum's default CAV classifier (sklearn's SGD) draws from numpy
    >>> with warnings.catch_warnings():  # Captum's notes on its default CAV classifier
    ...     warnings.simplefilter("ignore")
    ...     tcav = TCAV(model, layers=["2"], save_path=tempfile.mkdtemp())
    ...     scores = tcav.interpret(inputs, experimental_sets(concepts, randoms), target=0)
    >>> # Per random set: the share of the inputs whose class 0 grows along the red CAV.
    >>> {key: float(by_layer["2"]["sign_count"][0]) for key, by_layer in scores.items()}
    {'0-1000': 1.0, '0-1001': 1.0}
"""

from __future__ import annotations

import dataclasses
import functools
import random
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from neurolabel.plugin_core.data.images import (
    ImageLoadError,
    ImageSource,
    as_image_source,
    open_image,
)
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.result import Exemplar, LabelingResult, NeuronExplanation
from neurolabel.plugin_core.data.result_files import ResultFiles
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.plugins.resolve import result_preprocessing

#: Side of a random crop, as a fraction of the image's shorter side.
RANDOM_CROP = (0.3, 1.0)
#: Random concepts get ids from here on, clear of the discovered concepts' ids.
RANDOM_FIRST_ID = 1000


def neuron_concepts(
    result: LabelingResult | str | Path,
    layer: str,
    unit: int,
    *,
    top: int = 3,
    depth: int = 1,
    images: Any = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int = 16,
    first_id: int = 0,
    min_examples: int = 1,
) -> list[Any]:
    """Export a neuron's top concepts, with exemplar patches, as Captum concepts.

    Args:
        result: A labeling result, or the folder / ``result.json`` of a saved one.
        layer: The neuron's layer.
        unit: The neuron.
        top: How many of its ranked concepts to export.
        depth: A unit belongs to a concept when the concept is among its top ``depth``
            concepts (1: its label).
        images: The probing images of the run (folder, Dataset, list...); needed for
            in-memory runs beyond the patches the result keeps.
        preprocessing: How a patch becomes a model input (resized to the crop size, then
            normalized); default the result's.
        batch_size: Patches per batch of the data iterators.
        first_id: The first concept's id (the next get the following ids).
        min_examples: Concepts with fewer patches are left out, with a warning.

    Returns:
        ``captum.concept.Concept`` objects, the neuron's best concept first.

    Examples:
        >>> from torch import nn
        >>> from neurolabel import NeuronLabeler, Preprocessing
        >>> conv = nn.Conv2d(3, 2, 1, bias=False)  # unit 0: red minus blue, unit 1: the reverse
        >>> conv.weight.data = torch.tensor([[1.0, 0, -1], [-1, 0, 1]]).view(2, 3, 1, 1)
        >>> probe = [Image.new("RGB", (32, 32), color) for color in ("red", "blue") * 3]
        >>> labeler = NeuronLabeler(nn.Sequential(conv, nn.ReLU()), ["1"], scorer="color",
        ...                         vocabulary="colors", top_k=3, device="cpu", progress=False,
        ...                         preprocessing=Preprocessing((32, 32), resize_size=None))
        >>> result = labeler.run(probe)
        >>> concepts = neuron_concepts(result, "1", 0, top=1, images=probe)
        >>> concepts[0].name, next(iter(concepts[0].data_iter)).shape  # its 3 exemplars
        ('red', torch.Size([3, 3, 32, 32]))
    """
    result, root = _load(result)
    neuron = result.explanation(layer, unit)
    if neuron.dead or not neuron.concepts:
        raise NeurolabelError(f"Unit {unit} of '{layer}' has no concepts (dead or unlabeled)")
    names = [str(c) for c, _ in neuron.concepts[: max(1, top)]]
    reader = _PatchReader(result, root, images)
    found: list[tuple[int, str, list[Callable[[], Image.Image | None]]]] = []
    for offset, name in enumerate(names):
        members = [n for n in result.neurons[layer] if _has_concept(n, name, depth)]
        if name == neuron.description and neuron not in members:
            members.insert(0, neuron)
        readable = [slot for slot in reader.slots(members) if slot() is not None]
        found.append((first_id + offset, name, readable))
    kept = [item for item in found if len(item[2]) >= max(1, min_examples)]
    if not kept:
        raise NeurolabelError(
            f"No concept of unit {unit} of '{layer}' has {max(1, min_examples)} readable "
            "exemplar patches: pass the probing images (images=...), load the result from its "
            "saved folder, or lower min_examples"
        )
    for _, name, readable in found:
        if len(readable) < max(1, min_examples):
            warnings.warn(
                f"Concept '{name}' left out: {len(readable)} readable patches (fewer than "
                f"{max(1, min_examples)}); no other unit of '{layer}' has it among its top "
                f"{depth} concepts (raise depth=, or label more units)",
                stacklevel=2,
            )
    return [
        _concept(concept_id, name, readable, result, preprocessing, batch_size)
        for concept_id, name, readable in kept
    ]


def layer_concepts(
    result: LabelingResult | str | Path,
    layer: str,
    *,
    images: Any = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int = 16,
    first_id: int = 0,
    min_examples: int = 2,
) -> list[Any]:
    """Every label of a layer as a Captum concept, with the patches of its units.

    Args:
        result: A labeling result, or the folder / ``result.json`` of a saved one.
        layer: The layer.
        images: The probing images (see :func:`neuron_concepts`).
        preprocessing: How a patch becomes a model input; default the result's.
        batch_size: Patches per batch.
        first_id: The first concept's id.
        min_examples: Labels with fewer patches are left out (silently: a layer has many).

    Returns:
        ``Concept`` objects, most patches first.
    """
    result, root = _load(result)
    if layer not in result.neurons:
        raise NeurolabelError(
            f"Layer '{layer}' is not in this result. Layers: {', '.join(result.neurons)}"
        )
    reader = _PatchReader(result, root, images)
    groups: dict[str, list[NeuronExplanation]] = {}
    for neuron in result.neurons[layer]:
        if not neuron.dead and neuron.concepts:
            groups.setdefault(neuron.description, []).append(neuron)
    ranked = sorted(groups.items(), key=lambda item: -sum(len(n.exemplars) for n in item[1]))
    concepts: list[Any] = []
    for name, members in ranked:
        slots = [slot for slot in reader.slots(members) if slot() is not None]
        if len(slots) < max(1, min_examples):
            continue
        concepts.append(
            _concept(first_id + len(concepts), name, slots, result, preprocessing, batch_size)
        )
    return concepts


def random_concepts(
    result: LabelingResult | str | Path,
    count: int = 2,
    *,
    size: int = 20,
    images: Any = None,
    preprocessing: Preprocessing | None = None,
    batch_size: int = 16,
    first_id: int = RANDOM_FIRST_ID,
    seed: int = 0,
) -> list[Any]:
    """Random counterparts for TCAV: random crops of the probing images.

    Args:
        result: A labeling result, or the folder / ``result.json`` of a saved one.
        count: How many random concepts (TCAV's significance test compares several).
        size: Crops per concept.
        images: The probing images; default the images the result's exemplars name
            (folder runs).
        preprocessing: How a crop becomes a model input; default the result's.
        batch_size: Crops per batch.
        first_id: The first random concept's id.
        seed: Seed of the crops.

    Returns:
        ``Concept`` objects named ``random-0``, ``random-1``...
    """
    result, root = _load(result)
    if count < 1 or size < 1:
        raise NeurolabelError(f"count and size must be at least 1, got {count} and {size}")
    reader = _PatchReader(result, root, images)
    pool = reader.image_indices()
    if not pool:
        raise NeurolabelError(
            "No probing image can be read for random concepts: pass images=... (the probing "
            "set of the run)"
        )
    rng = random.Random(seed)
    concepts: list[Any] = []
    for number in range(count):
        slots: list[Callable[[], Image.Image | None]] = []
        for _ in range(size):
            index = rng.choice(pool)
            fraction, fx, fy = rng.uniform(*RANDOM_CROP), rng.random(), rng.random()
            slots.append(functools.partial(reader.random_crop, index, fraction, fx, fy))
        concepts.append(
            _concept(
                first_id + number,
                f"random-{number}",
                slots,
                result,
                preprocessing,
                batch_size,
            )
        )
    return concepts


def experimental_sets(concepts: Sequence[Any], randoms: Sequence[Any]) -> list[list[Any]]:
    """TCAV's experimental sets: each concept against each random concept.

    Args:
        concepts: Concepts to test.
        randoms: Random concepts.

    Returns:
        ``[[concept, random], ...]`` for ``TCAV.interpret``.
    """
    return [[concept, other] for concept in concepts for other in randoms]


# --------------------------------------------------------------------------- internals


def _load(result: LabelingResult | str | Path) -> tuple[LabelingResult, Path | None]:
    if isinstance(result, LabelingResult):
        return result, None
    path = Path(result)
    return LabelingResult.load(path), path if path.is_dir() else path.parent


def _has_concept(neuron: NeuronExplanation, name: str, depth: int) -> bool:
    return not neuron.dead and name in [str(c) for c, _ in neuron.concepts[: max(1, depth)]]


def _safe_name(name: str) -> str:
    # Captum writes activations under a path built from the concept's name.
    return re.sub(r"[^\w\- .]", "_", name) or "concept"


def _concept(
    concept_id: int,
    name: str,
    slots: list[Callable[[], Image.Image | None]],
    result: LabelingResult,
    preprocessing: Preprocessing | None,
    batch_size: int,
) -> Any:
    from captum.concept import Concept
    from captum.concept._utils.data_iterator import dataset_to_dataloader

    chosen = preprocessing or result_preprocessing(result) or Preprocessing()
    # A patch is resized whole to the input, not center-cropped: its region is the point.
    stretch = dataclasses.replace(chosen, resize_size=None)
    dataset = _PatchDataset(slots, stretch)
    return Concept(concept_id, _safe_name(name), dataset_to_dataloader(dataset, batch_size))


class _PatchDataset(torch.utils.data.Dataset):
    """Patches read on demand and preprocessed into model inputs."""

    def __init__(
        self, slots: list[Callable[[], Image.Image | None]], preprocessing: Preprocessing
    ) -> None:
        self.slots = slots
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.slots)

    def __getitem__(self, index: int) -> Tensor:
        image = self.slots[index]()
        if image is None:
            raise NeurolabelError("An exemplar patch became unreadable while TCAV read it")
        return self.preprocessing(image)


class _PatchReader:
    """Finds the pixels of exemplar patches (see the module docstring for the order)."""

    def __init__(self, result: LabelingResult, root: Path | None, images: Any) -> None:
        self.result = result
        self.root = root
        self.files = ResultFiles.of(result, root)
        self.source: ImageSource | None = as_image_source(images) if images is not None else None
        self.described = {e.image_index: e.image for n in result for e in n.exemplars}
        self._cache: dict[int, Image.Image] = {}

    def slots(self, members: list[NeuronExplanation]) -> list[Callable[[], Image.Image | None]]:
        out: list[Callable[[], Image.Image | None]] = []
        for neuron in members:
            for rank, exemplar in enumerate(neuron.exemplars):
                out.append(functools.partial(self.patch, neuron.layer, neuron.unit, rank, exemplar))
        return out

    def image(self, index: int, described: str | None = None) -> Image.Image | None:
        if index in self._cache:
            return self._cache[index]
        image = None
        try:
            if self.source is not None:
                image = self.source.load(index)
            elif (path := self.files.image(described)) is not None:
                image = open_image(path)
        except ImageLoadError:
            image = None
        if image is not None:
            if len(self._cache) >= 64:
                self._cache.pop(next(iter(self._cache)))
            self._cache[index] = image
        return image

    def patch(self, layer: str, unit: int, rank: int, exemplar: Exemplar) -> Image.Image | None:
        image = self.image(exemplar.image_index, exemplar.image)
        if image is not None:
            if not exemplar.box:
                return image.copy()
            x0, y0, x1, y1 = exemplar.box
            return image.crop((x0, y0, x1, y1))
        kept = self.result.patch_images.get((layer, unit, rank))
        if kept is not None:
            return kept.copy()
        if self.root is not None and exemplar.patch:
            try:
                return open_image(self.root / exemplar.patch)
            except (ImageLoadError, OSError):
                return None
        return None

    def image_indices(self) -> list[int]:
        if self.source is not None:
            return list(range(len(self.source)))
        return sorted(i for i, d in self.described.items() if self.image(i, d) is not None)

    def random_crop(self, index: int, fraction: float, fx: float, fy: float) -> Image.Image | None:
        image = self.image(index, self.described.get(index))
        if image is None:
            return None
        width, height = image.size
        side = max(1, int(round(fraction * min(width, height))))
        x0 = int(fx * (width - side))
        y0 = int(fy * (height - side))
        return image.crop((x0, y0, x0 + side, y0 + side))
