"""Scoring the unique exemplar patches against the vocabulary: each patch encoded once.

Patches are deduplicated across neurons before this stage (one image region shared by many
neurons is one key), every image is read once, and under torch.distributed each rank encodes
its slice of the images. An embedding scorer's patch embeddings are cached on disk when the
scorer names a stable ``cache_id``, so a rerun with another vocabulary or aggregation encodes
nothing again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..data.atomic import ABANDONED_AFTER_SECONDS, atomic_write, remove_stale_temporaries
from ..data.images import ImageLoadError, ImageSource
from ..data.vocabulary import Vocabulary
from ..errors import NeurolabelError
from ..plugins.contracts import ConceptScorer, EmbeddingScorer
from ..runtime import distributed
from ..runtime.memory import PeriodicRelease
from ..runtime.progress import Steps
from .exemplar_pass import autocast_for, digest

#: Longest side of the exemplar thumbnails kept for reports and saved results.
PATCH_THUMBNAIL = 160

#: A patch: ``(image index, (left, top, right, bottom) box or None for the whole image)``.
PatchKey = tuple[int, tuple[int, int, int, int] | None]


class ExemplarCrops(torch.utils.data.Dataset):
    """The patches of each exemplar image, read, cut and preprocessed in DataLoader workers.

    Decoding hundreds of thousands of exemplar images and preprocessing their patches in the
    main process would leave the scorer (a GPU) waiting; workers overlap both with encoding.
    An unreadable image comes back with its error message instead of raising in a worker.

    Args:
        source: The probing images.
        images: Image indices, in reading order.
        boxes: The boxes to cut from each image (None: the whole image).
        transform: The scorer's preprocessing (``image_transform``), or None to return the
            patches as PIL images.
        thumbnails: ``(image index, box)`` of the patches whose thumbnail is also wanted.
    """

    def __init__(
        self,
        source: ImageSource,
        images: list[int],
        boxes: Mapping[int, list[tuple[int, int, int, int] | None]],
        transform: Callable[[Image.Image], Tensor] | None = None,
        thumbnails: frozenset[PatchKey] = frozenset(),
    ) -> None:
        self.source, self.images, self.boxes = source, images, boxes
        self.transform, self.thumbnails = transform, thumbnails

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, position: int) -> tuple[int, list[Any], list[Any], str | None]:
        """``(image index, patches, thumbnails (None where not wanted), error or None)``."""
        image_index = self.images[position]
        try:
            image = self.source.load(image_index)
        except ImageLoadError as exc:
            return image_index, [], [], str(exc)
        patches: list[Any] = []
        thumbs: list[Image.Image | None] = []
        for box in self.boxes[image_index]:
            patch = image if box is None else image.crop(box)
            thumb = None
            if (image_index, box) in self.thumbnails:
                thumb = patch.copy()
                thumb.thumbnail((PATCH_THUMBNAIL, PATCH_THUMBNAIL))
            patches.append(patch if self.transform is None else self.transform(patch))
            thumbs.append(thumb)
        return image_index, patches, thumbs, None


def _keep_sample(sample: Any) -> Any:
    """The DataLoader's collate step for :class:`ExemplarCrops`: PIL images pass as they are."""
    return sample


class PatchScores:
    """``[V]`` concept scores of every unique patch, and the exemplar thumbnails.

    An embedding scorer's scores are kept factored, as ``[P, D]`` patch embeddings and
    ``[V, D]`` concept embeddings, and multiplied out per request: a whole network's
    patches against a large vocabulary would otherwise take P x V floats.

    Args:
        rows: Scores by patch (concept scorers), or None.
        thumbnails: Exemplar thumbnails by ``(layer, unit, rank)``.
        embeddings: ``[P, D]`` patch embeddings (embedding scorers), or None.
        index: Row of each patch in ``embeddings``.
        text: ``[V, D]`` concept embeddings.
    """

    def __init__(
        self,
        rows: dict[PatchKey, Tensor] | None,
        thumbnails: dict[tuple[str, int, int], Image.Image],
        embeddings: Tensor | None = None,
        index: dict[PatchKey, int] | None = None,
        text: Tensor | None = None,
    ):
        self.rows = rows
        self.thumbnails = thumbnails
        self.embeddings = embeddings
        self.index = index or {}
        self.text = text

    def __contains__(self, key: object) -> bool:
        """Whether the patch ``key`` was scored."""
        return key in (self.rows if self.rows is not None else self.index)

    def row(self, key: PatchKey) -> Tensor:
        """``[V]`` scores of one patch."""
        return self.rows_for([key])[0]

    def embeddings_for(self, keys: list[PatchKey]) -> Tensor | None:
        """``[n, D]`` embeddings of several patches (None for a concept scorer's scores)."""
        if self.embeddings is None:
            return None
        return self.embeddings[torch.tensor([self.index[k] for k in keys], dtype=torch.long)]

    def sees_no_difference(self) -> bool:
        """True when every patch scores every concept the same: the scorer sees nothing of
        this vocabulary (the color scorer given object names), and any label would be the
        first word of the vocabulary.

        Examples:
            >>> flat = PatchScores({(0, None): torch.zeros(3), (1, None): torch.zeros(3)}, {})
            >>> flat.sees_no_difference()
            True
            >>> PatchScores({(0, None): torch.tensor([0.0, 1.0])}, {}).sees_no_difference()
            False
        """
        if self.rows is None:
            # Embedding scorers: only identical concept embeddings score all patches alike.
            if self.text is None or len(self.text) < 2:
                return False
            return bool((self.text == self.text[:1]).all())
        if not self.rows:
            return False
        stacked = torch.stack(list(self.rows.values()))
        if stacked.shape[-1] < 2:
            return False
        return bool((stacked.amax(dim=-1) == stacked.amin(dim=-1)).all())

    def unseen_concepts(self) -> Tensor | None:
        """``[V]`` True for each concept that scored the same on every patch: the scorer
        sees nothing of it (the color scorer and ``house``). None when no concept is unseen,
        every concept is, there are fewer than two patches, or the scorer embeds (an
        embedding scorer sees every concept).

        Examples:
            >>> rows = {(0, None): torch.tensor([0.9, 0.0]), (1, None): torch.tensor([0.1, 0.0])}
            >>> PatchScores(rows, {}).unseen_concepts()
            tensor([False,  True])
        """
        if self.rows is None or len(self.rows) < 2:
            return None
        stacked = torch.stack(list(self.rows.values()))
        unseen = stacked.amax(dim=0) == stacked.amin(dim=0)
        if not unseen.any() or unseen.all():
            return None
        return unseen

    def rows_for(self, keys: list[PatchKey]) -> Tensor:
        """``[n, V]`` scores of several patches."""
        if self.rows is not None:
            if not keys:
                return torch.empty(0, 0)
            return torch.stack([self.rows[k] for k in keys])
        picked = self.embeddings_for(keys)
        assert picked is not None and self.text is not None
        return picked @ self.text.T


class EmbeddingCache:
    """Patch embeddings of one scorer on one probing set, in one file.

    Args:
        root: Cache folder.
        scorer_id: The scorer's ``cache_id``.
        images: The probing set's ``cache_key()``.
        precision: Autocast precision the embeddings were computed at.
    """

    def __init__(self, root: Path, scorer_id: str, images: str, precision: str) -> None:
        self.key = {"scorer": scorer_id, "images": images, "precision": precision}
        self.path = root / "patch_embeddings" / f"{digest(self.key)}.pt"

    def load(self) -> dict[PatchKey, Tensor]:
        """Stored embeddings (empty when absent, damaged or made for another key)."""
        if not self.path.is_file():
            return {}
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged entry is only a cache miss
            return {}
        if saved.get("key") != self.key:
            return {}
        return {_as_key(k): row for k, row in zip(saved["keys"], saved["embeddings"], strict=True)}

    def store(self, embeddings: Mapping[PatchKey, Tensor]) -> None:
        keys = list(embeddings)
        stacked = torch.stack([embeddings[k] for k in keys]) if keys else torch.empty(0)
        plain = [[k[0], list(k[1]) if k[1] is not None else None] for k in keys]
        with atomic_write(self.path, "wb") as handle:
            torch.save({"key": self.key, "keys": plain, "embeddings": stacked}, handle)
        remove_stale_temporaries(self.path.parent, older_than=ABANDONED_AFTER_SECONDS)


def _as_key(stored: Any) -> PatchKey:
    image, box = stored
    return int(image), tuple(int(v) for v in box) if box is not None else None  # type: ignore[return-value]


def _encoding_label(fresh: list[PatchKey], reused: int) -> str:
    """What the progress bar counts: patches, whole images, or both (and what is cached)."""
    boxes = sum(key[1] is not None for key in fresh)
    if boxes == len(fresh):
        what = "patches"
    elif boxes == 0:
        what = "whole images"
    else:
        what = "patches and whole images"
    return f"Encoding {what}" + (f" ({reused:,} cached)" if reused else "")


def score_patches(
    keys: Iterable[PatchKey],
    source: ImageSource,
    scorer: EmbeddingScorer | ConceptScorer,
    vocabulary: Vocabulary,
    *,
    batch_size: int,
    steps: Steps,
    thumbnail_slots: Mapping[PatchKey, list[tuple[str, int, int]]],
    device: torch.device,
    precision: str = "fp32",
    cache_root: Path | None = None,
    num_workers: int = 0,
) -> PatchScores:
    """Score every unique patch against the vocabulary, reading each image only once.

    Args:
        keys: Unique patches.
        source: The probing images.
        scorer: Embedding scorer (image and text embeddings, cosine) or concept scorer.
        vocabulary: Concepts.
        batch_size: Patches per scorer call.
        steps: Progress display.
        thumbnail_slots: Exemplar slots ``(layer, unit, rank)`` whose thumbnails to keep,
            by patch.
        device: Device of autocast.
        precision: ``fp32``, ``bf16`` or ``fp16`` autocast for the scorer's image side.
        cache_root: Cache folder for patch embeddings (None: no cache).
        num_workers: DataLoader workers that read and cut the exemplar images, and
            preprocess the patches when the scorer has ``image_transform`` and
            ``encode_pixels`` (0: the main process).

    Returns:
        :class:`PatchScores` (calibrated when the scorer has ``calibrate``).
    """
    keys = list(keys)
    embedding = isinstance(scorer, EmbeddingScorer)
    cache = _embedding_cache(scorer, source, precision, cache_root) if embedding else None
    known = cache.load() if cache is not None else {}
    by_image: dict[int, list[PatchKey]] = {}
    for key in keys:
        if key not in known or key in thumbnail_slots:
            by_image.setdefault(key[0], []).append(key)
    owned = sorted(by_image)
    owned = [owned[i] for i in distributed.shard(len(owned))]
    outputs: dict[PatchKey, Tensor] = {}  # embeddings, or scores of a concept scorer
    thumbs: dict[tuple[str, int, int], Image.Image] = {}
    pending_keys: list[PatchKey] = []
    pending: list[Any] = []  # PIL patches, or pixels when the scorer preprocesses in workers
    fresh = [key for i in owned for key in by_image[i] if key not in known]
    task = steps.task(_encoding_label(fresh, len(keys) - len(fresh)), len(fresh))
    transform = getattr(scorer, "image_transform", None) if embedding else None
    encode_pixels = getattr(scorer, "encode_pixels", None)
    if not (callable(transform) and callable(encode_pixels)):
        transform = None

    release = PeriodicRelease()  # the VLM's batches must not grow the heap either

    def flush() -> None:
        if not pending:
            return
        release.tick()
        with autocast_for(device, precision):
            if transform is not None:
                batch = encode_pixels(torch.stack(pending))  # type: ignore[misc]
            elif embedding:
                batch = scorer.encode_images(pending)  # type: ignore[union-attr]
            else:
                batch = scorer.score_images(pending, vocabulary)  # type: ignore[union-attr]
        for key, row in zip(pending_keys, batch.float().cpu(), strict=True):
            outputs[key] = row
        task.advance(len(pending))
        pending_keys.clear()
        pending.clear()

    crops = ExemplarCrops(
        source,
        owned,
        {i: [key[1] for key in by_image[i]] for i in owned},
        transform,
        frozenset(thumbnail_slots),
    )
    loader = torch.utils.data.DataLoader(
        crops,
        batch_size=None,
        num_workers=num_workers,
        collate_fn=_keep_sample,
        pin_memory=transform is not None and device.type == "cuda",
    )
    for image_index, patches, patch_thumbs, error in loader:
        if error is not None:  # the file changed since the first pass
            raise NeurolabelError(f"{source.describe(image_index)} became unreadable: {error}")
        for key, patch, thumb in zip(by_image[image_index], patches, patch_thumbs, strict=True):
            for slot in thumbnail_slots.get(key, []):
                thumbs[slot] = thumb
            if key in known:
                continue
            pending_keys.append(key)
            pending.append(patch)
            if len(pending) >= batch_size:
                flush()
    flush()
    if distributed.is_active():
        for their_outputs, their_thumbs in distributed.all_gather((outputs, thumbs)):
            outputs.update(their_outputs)
            thumbs.update(their_thumbs)
    if cache is not None and outputs and distributed.rank_and_world()[0] == 0:
        cache.store({**known, **outputs})
    if embedding:
        every = {**known, **outputs}
        text = scorer.encode_texts(list(vocabulary.concepts)).float().cpu()  # type: ignore[union-attr]
        stacked = torch.stack([every[k] for k in keys]) if keys else torch.empty(0, text.shape[1])
        index = {key: i for i, key in enumerate(keys)}
        return PatchScores(None, thumbs, embeddings=stacked, index=index, text=text)
    rows = outputs
    calibrate = getattr(scorer, "calibrate", None)
    if callable(calibrate) and rows:
        stacked = calibrate(torch.stack([rows[k] for k in keys]), vocabulary)
        rows = {k: stacked[i] for i, k in enumerate(keys)}
    return PatchScores(rows, thumbs)


def _embedding_cache(
    scorer: EmbeddingScorer | ConceptScorer,
    source: ImageSource,
    precision: str,
    cache_root: Path | None,
) -> EmbeddingCache | None:
    scorer_id = getattr(scorer, "cache_id", None)
    images = source.cache_key()
    if cache_root is None or not scorer_id or images is None:
        return None
    return EmbeddingCache(cache_root, str(scorer_id), images, precision)
