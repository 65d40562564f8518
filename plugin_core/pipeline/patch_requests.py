"""Which patch of which image each exemplar needs: boxes from activation or attribution maps.

Every exemplar slot (layer, unit, rank) gets an image and a box in that image's original
pixels (None for the whole image). Slots that need the same (image, box) share it, so the
scorer encodes each unique patch once (:class:`~.evidence.PatchRequests`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..data.images import ImageLoadError, ImageSource
from ..data.preprocessing import Preprocessing
from ..errors import NeurolabelError
from ..plugins.contracts import LoadedModel, Patcher, iter_batches
from ..runtime.progress import Steps
from .evidence import ExplainedLayer, PatchRequests
from .patches import PatchSettings, attribution_boxes, flatten_maps, image_box, input_boxes

#: Preprocessed exemplar images kept in memory while attribution maps are computed.
IMAGE_CACHE = 256


def activation_requests(
    layers: list[ExplainedLayer],
    source: ImageSource,
    preprocessing: Preprocessing,
    settings: PatchSettings,
    steps: Steps,
    whole: bool = False,
) -> PatchRequests:
    """Cut each exemplar's patch from the neuron's activation map (whole images for vector
    layers, or for every layer when ``whole``).

    Args:
        layers: The explained layers, with their streamed maps and thresholds.
        source: The probing images (for their original sizes).
        preprocessing: The target's preprocessing (input boxes back to image pixels).
        settings: Threshold method and minimum patch size.
        steps: Progress bars.
        whole: Score whole images for every layer.

    Returns:
        The :class:`PatchRequests`.
    """
    requests = PatchRequests()
    sizes: dict[int, tuple[int, int]] = {}
    for layer in layers:
        state = layer.state
        if whole or not layer.spatial:
            _add_whole_images(requests, layer)
            continue
        units = torch.tensor(layer.units, dtype=torch.long)
        ids = state.ids[units]
        assert state.maps is not None
        maps, rows, ranks = flatten_maps(state.maps[units], ids)
        task = steps.task(f"Cutting patches ({layer.name})", len(rows))
        boxes = input_boxes(maps, state.threshold[units][rows], preprocessing, settings)
        for box, row, rank in zip(boxes, rows.tolist(), ranks.tolist(), strict=True):
            image_index = int(ids[row, rank])
            if image_index not in sizes:
                sizes[image_index] = source.size(image_index)
            original = image_box(box, preprocessing, sizes[image_index])
            requests.add(layer.name, layer.units[row], rank, image_index, original)
            task.advance()
    return requests


def attribution_requests(
    patcher: Patcher,
    loaded: LoadedModel,
    layers: list[ExplainedLayer],
    source: ImageSource,
    settings: PatchSettings,
    steps: Steps,
    batch_size: int,
    device: torch.device,
) -> PatchRequests:
    """Cut every exemplar's patch from the patcher's map of it (any layer kind).

    Args:
        patcher: Computes ``[N, H, W]`` maps at input resolution (Grad-CAM, gradients...).
        loaded: The target model.
        layers: The explained layers.
        source: The probing images.
        settings: Minimum patch size (attribution maps use Otsu's threshold per map).
        steps: Progress bars.
        batch_size: Exemplars per call of the patcher.
        device: Where the model runs.

    Returns:
        The :class:`PatchRequests`.
    """
    requests = PatchRequests()
    preprocessing = loaded.preprocessing
    images = _ImageCache(source, preprocessing)
    sizes: dict[int, tuple[int, int]] = {}
    height, width = preprocessing.crop_size
    for layer in layers:
        state = layer.state
        dead = state.dead()
        total = int((state.ids[torch.tensor(layer.units, dtype=torch.long)] >= 0).sum())
        task = steps.task(f"Locating patches with {patcher.name} ({layer.name})", total)
        for unit in layer.units:
            slots = [(r, i) for r, i in enumerate(state.ids[unit].tolist()) if i >= 0]
            if bool(dead[unit]):  # no label will be given: spare the backward passes
                for rank, image_index in slots:
                    requests.add(layer.name, unit, rank, image_index, None)
                task.advance(len(slots))
                continue
            for chunk in iter_batches(slots, batch_size):
                batch = torch.stack([images.get(i) for _, i in chunk]).to(device)
                # Attribution needs gradients, whatever mode the caller runs in.
                with torch.inference_mode(False), torch.enable_grad():
                    maps = patcher.locate(loaded, layer.name, unit, batch)
                if not isinstance(maps, Tensor) or tuple(maps.shape) != (
                    len(chunk),
                    height,
                    width,
                ):
                    shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps)
                    raise NeurolabelError(
                        f"Patcher '{patcher.name}' returned {shape} for {len(chunk)} images;"
                        f" expected [{len(chunk)}, {height}, {width}] maps"
                    )
                boxes = attribution_boxes(maps, preprocessing, settings)
                for (rank, image_index), box in zip(chunk, boxes, strict=True):
                    if image_index not in sizes:
                        sizes[image_index] = source.size(image_index)
                    original = image_box(box, preprocessing, sizes[image_index])
                    requests.add(layer.name, unit, rank, image_index, original)
                task.advance(len(chunk))
    return requests


def _add_whole_images(requests: PatchRequests, layer: ExplainedLayer) -> None:
    ids = layer.state.ids[torch.tensor(layer.units, dtype=torch.long)]
    for row, unit in enumerate(layer.units):
        for rank, image_index in enumerate(ids[row].tolist()):
            if image_index >= 0:
                requests.add(layer.name, unit, rank, image_index, None)


class _ImageCache:
    """Preprocessed exemplar images, re-read from the source at most once while they fit."""

    def __init__(
        self, source: ImageSource, preprocessing: Preprocessing, limit: int = IMAGE_CACHE
    ) -> None:
        self.source = source
        self.preprocessing = preprocessing
        self.limit = limit
        self.tensors: dict[int, Tensor] = {}

    def get(self, index: int) -> Tensor:
        if index in self.tensors:
            return self.tensors[index]
        try:
            tensor = self.preprocessing(self.source.load(index))
        except ImageLoadError as exc:  # the file changed since the first pass
            where = self.source.describe(index)
            raise NeurolabelError(f"{where} became unreadable: {exc}") from None
        if len(self.tensors) >= self.limit:
            self.tensors.pop(next(iter(self.tensors)))  # oldest first
        self.tensors[index] = tensor
        return tensor
