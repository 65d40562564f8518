"""The forward pass over the probing set: streaming top-k, image sample, skipped inputs.

One pass feeds every requested layer. Its state can be checkpointed and resumed, and the
states of torch.distributed ranks (each over its own shard of the images) merge exactly,
so an interrupted or sharded run gives the result of one uninterrupted process.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from ..data.atomic import atomic_write
from ..data.images import ImageSource, SkippedInput
from ..data.probe_dataset import ProbeDataset
from ..errors import EmptyInputError, NeurolabelError
from ..plugins.contracts import ConsumingReader, Extractor, LoadedModel
from ..runtime import distributed
from ..runtime.memory import PeriodicRelease
from ..runtime.progress import Steps
from .topk import StreamingTopK, TopKState, host_to_device, per_image_activation

#: Autocast dtypes for ``precision``; ``fp32`` runs without autocast.
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_for(device: torch.device, precision: str) -> AbstractContextManager[Any]:
    """``torch.autocast`` to ``precision``'s dtype on ``device``; a no-op for ``fp32``.

    Examples:
        >>> with autocast_for(torch.device("cpu"), "bf16"):
        ...     (torch.ones(2, 2) @ torch.ones(2, 2)).dtype
        torch.bfloat16
    """
    dtype = PRECISIONS[precision]
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@dataclass
class StreamSettings:
    """What decides a pass's streaming state (and so its checkpoint and cache keys).

    Args:
        top_k: Exemplars per neuron.
        activation: ``max`` or ``mean`` over a map, to rank images.
        quantile: Map-cell quantile of the patch threshold.
        sample_size: Whole images sampled uniformly for image-level statistics (0: none).
        sources: A digest of how the images group into sources (crops, frames or tiles of
            one photo), when a neuron keeps at most one exemplar per source; empty when
            every image is its own source.
    """

    top_k: int
    activation: str
    quantile: float
    sample_size: int
    sources: str = ""

    def stream(self) -> StreamingTopK:
        return StreamingTopK(
            self.top_k,
            reduce=self.activation,
            quantile=self.quantile,
            distinct_groups=bool(self.sources),
        )


@dataclass
class PassOutput:
    """A finished pass: per-layer states, sampled activations and what could not be read."""

    states: dict[str, TopKState]
    skipped: list[SkippedInput]
    sample_acts: dict[str, Tensor]
    sample_ids: Tensor
    unreadable_ids: list[int] = field(default_factory=list)


class ExemplarPass:
    """Streaming state of one pass (or one rank's shard of it).

    Args:
        layers: Layer names.
        settings: :class:`StreamSettings`.
        sample_ids: Sorted indices of the images whose per-image activations are kept.
        groups: ``[N]`` source of every image of the probing set (host), when the settings
            keep one exemplar per source.
    """

    def __init__(
        self,
        layers: list[str],
        settings: StreamSettings,
        sample_ids: Tensor,
        groups: Tensor | None = None,
    ) -> None:
        if bool(settings.sources) != (groups is not None):
            raise ValueError("settings.sources and groups go together")
        self.layers = layers
        self.settings = settings
        self.groups = groups
        self.streams = {layer: settings.stream() for layer in layers}
        self.sample_ids = sample_ids
        # [S, C] per layer, row i for sample_ids[i], filled as the stream reaches the image:
        # allocated once, so no small tensor per batch outlives the batch (heap fragmentation
        # would make the process's memory creep up with the number of batches).
        self.sample_rows: dict[str, Tensor | None] = dict.fromkeys(layers)
        self.sample_filled = torch.zeros(len(sample_ids), dtype=torch.bool)
        self.unreadable: list[tuple[int, str]] = []
        self.done = 0  # images of this process's shard already streamed
        self._sampled_for: Tensor | None = None
        self._sampled_mask: Tensor | None = None

    def add(self, activations: Mapping[str, Tensor], indices: Tensor) -> None:
        """Stream one batch of readable images (``indices`` on the CPU): the layers given
        here, after any handed over one by one with :meth:`add_layer`."""
        for layer, acts in activations.items():
            self.add_layer(layer, acts, indices)
        keep = self._sampled(indices)
        if keep is not None and bool(keep.any()):
            self.sample_filled[self._sample_positions(indices[keep])] = True

    def _sample_positions(self, image_ids: Tensor) -> Tensor:
        """Rows of sampled images (host indices) in :attr:`sample_rows`."""
        return torch.searchsorted(self.sample_ids, image_ids)

    def _store_sample_rows(self, layer: str, positions: Tensor, rows: Tensor) -> None:
        buffer = self.sample_rows[layer]
        if buffer is None:
            buffer = torch.zeros(len(self.sample_ids), rows.shape[1], device=rows.device)
            self.sample_rows[layer] = buffer
        buffer[host_to_device(positions, buffer.device)] = rows.to(buffer.device)

    def add_layer(self, layer: str, acts: Tensor, indices: Tensor) -> None:
        """Stream one layer's activations of a batch; :meth:`add` ends the batch."""
        # Host indices: the reservoir picks its cells on the host, with no device sync.
        groups = None if self.groups is None else self.groups[indices]
        self.streams[layer].update(acts, indices, groups)
        keep = self._sampled(indices)
        if keep is not None and bool(keep.any()):
            per_image = per_image_activation(acts, self.settings.activation)
            # Kept on the device until the end: no host synchronization per batch.
            rows = per_image[host_to_device(keep, acts.device)].float()
            self._store_sample_rows(layer, self._sample_positions(indices[keep]), rows)

    def _sampled(self, indices: Tensor) -> Tensor | None:
        """Which images of the batch are in the sample (None without a sample)."""
        if not len(self.sample_ids):
            return None
        if self._sampled_for is not indices:
            self._sampled_for, self._sampled_mask = indices, torch.isin(indices, self.sample_ids)
        return self._sampled_mask

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything streamed so far, on the CPU (checkpoints, gathering across ranks)."""
        filled = self.sample_filled
        return {
            "streams": {name: stream.state_dict() for name, stream in self.streams.items()},
            "sample_rows": {
                name: None if rows is None else rows[host_to_device(filled, rows.device)].cpu()
                for name, rows in self.sample_rows.items()
            },
            "sample_row_ids": self.sample_ids[filled].clone(),
            "unreadable": list(self.unreadable),
            "done": self.done,
        }

    def load_state_dict(self, state: Mapping[str, Any], device: torch.device) -> None:
        """Continue from a :meth:`state_dict` of a pass with the same layers and settings."""
        for name, stream in self.streams.items():
            stream.load_state_dict(state["streams"][name], device)
        self.sample_rows = dict.fromkeys(self.layers)
        self.sample_filled.zero_()
        self._add_sample_rows(state, device)
        self.unreadable = [(int(index), str(error)) for index, error in state["unreadable"]]
        self.done = int(state["done"])

    def merge(self, state: Mapping[str, Any]) -> None:
        """Fold in another shard's :meth:`state_dict` (exact)."""
        for name, stream in self.streams.items():
            stream.merge(state["streams"][name])
        self._add_sample_rows(state)
        self.unreadable.extend((int(index), str(error)) for index, error in state["unreadable"])

    def _add_sample_rows(
        self, state: Mapping[str, Any], device: torch.device | None = None
    ) -> None:
        """Fill in the sampled rows of a :meth:`state_dict` (on ``device``, else where the
        rows already are)."""
        ids = state["sample_row_ids"]
        if not len(ids):
            return
        positions = self._sample_positions(ids)
        for name in self.layers:
            rows = state["sample_rows"][name]
            if rows is not None:
                self._store_sample_rows(
                    name, positions, rows if device is None else rows.to(device)
                )
        self.sample_filled[positions] = True

    def finish(self, source: ImageSource) -> PassOutput:
        """The finalized states, with sampled rows in image order."""
        unreadable = sorted(self.unreadable)
        if len(unreadable) == len(source):
            raise EmptyInputError(
                f"None of the {len(source)} probing images could be read; first problem: "
                f"{source.describe(unreadable[0][0])}: {unreadable[0][1]}"
            )
        states = {name: stream.finalize() for name, stream in self.streams.items()}
        filled = self.sample_filled  # unreadable sampled images stay out
        samples = {
            name: rows[host_to_device(filled, rows.device)].cpu()
            if rows is not None
            else torch.empty(0, states[name].num_neurons)
            for name, rows in self.sample_rows.items()
        }
        return PassOutput(
            states=states,
            skipped=[SkippedInput(source.describe(i), reason) for i, reason in unreadable],
            sample_acts=samples,
            sample_ids=self.sample_ids[filled].clone(),
            unreadable_ids=[i for i, _ in unreadable],
        )


class Checkpoint:
    """Atomic periodic saves of an :class:`ExemplarPass`, tied to what produced it.

    Args:
        path: Checkpoint file (one per rank under torch.distributed).
        key: JSON-able description of the run; a resume with another key is refused.
        every: Save after this many batches (0: only on interruption).
    """

    def __init__(self, path: Path, key: Mapping[str, Any], every: int) -> None:
        self.path = path
        self.key = dict(key)
        self.every = every

    def save(self, state: ExemplarPass) -> None:
        with atomic_write(self.path, "wb") as handle:
            torch.save({"key": self.key, "state": state.state_dict()}, handle)

    def load_into(self, state: ExemplarPass, device: torch.device) -> bool:
        """Restore a saved pass into ``state``; False when there is no checkpoint."""
        if not self.path.is_file():
            return False
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged file must not be trusted, nor crash obscurely
            raise NeurolabelError(
                f"Checkpoint {self.path} cannot be read (damaged, or not a neurolabel "
                f"checkpoint: {type(exc).__name__}); delete it to start over"
            ) from None
        if saved.get("key") != self.key:
            changed = sorted(
                k
                for k in {*self.key, *saved.get("key", {})}
                if self.key.get(k) != saved["key"].get(k)
            )
            hint = ""
            if "model" in changed:
                hint = (
                    " The model's weights differ: a model whose weights are drawn at random "
                    "when it is built (torchvision:NAME?weights=none, timm:NAME?pretrained="
                    "false) gets new ones in every process, so its runs cannot be resumed; "
                    "save it once and load it with file:PATH, or seed it in a python: spec."
                )
            raise NeurolabelError(
                f"Checkpoint {self.path} was made by a different run (differs in: "
                f"{', '.join(changed)}); rerun with the same settings, or delete it to start "
                f"over.{hint}"
            )
        state.load_state_dict(saved["state"], device)
        return True

    def remove(self) -> None:
        """Delete the checkpoint, and its folder when nothing else is left in it."""
        self.path.unlink(missing_ok=True)
        try:
            self.path.parent.rmdir()
        except OSError:  # other files in it, or already gone
            pass


class _DeferredInterrupt:
    """Ctrl-C noted during a batch, raised between batches; a second one raises at once."""

    def __init__(self) -> None:
        self.interrupted = False

    def handle(self, signum: int, frame: Any) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def raise_if_interrupted(self) -> None:
        if self.interrupted:
            raise KeyboardInterrupt


@contextmanager
def _interrupts_between_batches(deferred: _DeferredInterrupt) -> Iterator[_DeferredInterrupt]:
    """Defer Ctrl-C to the end of the current batch, where the stream's state is whole.

    Only Python's own SIGINT handler is replaced, and only in the main thread (signals
    cannot be handled elsewhere); a program that installed its own keeps it.
    """
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield deferred
        return
    signal.signal(signal.SIGINT, deferred.handle)
    try:
        yield deferred
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def digest(value: Any) -> str:
    """Short stable hash of a JSON-able value.

    Examples:
        >>> digest({"a": 1}) == digest({"a": 1})
        True
    """
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def run_pass(
    loaded: LoadedModel,
    extractor: Extractor,
    source: ImageSource,
    layers: list[str],
    settings: StreamSettings,
    sample_ids: Tensor,
    *,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    steps: Steps,
    check_batch: Callable[[str, Tensor], None] = lambda layer, acts: None,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
    precision: str = "fp32",
    channels_last: bool = False,
    groups: Tensor | None = None,
) -> PassOutput:
    """Stream this process's shard of ``source`` through the model, then merge the shards.

    Args:
        loaded: The target model.
        extractor: Reads the layers' activations.
        source: Probing images.
        layers: Layer names.
        settings: :class:`StreamSettings`.
        sample_ids: Indices of images whose per-image activations are kept.
        device: Where the model runs.
        batch_size, num_workers: DataLoader settings.
        steps: Progress display.
        check_batch: Called with each layer's first activations (to refuse unusable layers).
        checkpoint: Periodic saves; on Ctrl-C or a crash the last batches are saved too.
        resume: Continue from ``checkpoint``'s file when it exists.
        precision: ``fp32``, ``bf16`` or ``fp16`` (autocast of the target's forward).
        channels_last: Feed the model channels-last batches (faster convolutions on GPUs).
        groups: ``[N]`` source of every image, when ``settings.sources`` is set.

    Returns:
        The merged :class:`PassOutput` (identical on every rank).
    """
    state = ExemplarPass(layers, settings, sample_ids, groups)
    if resume and checkpoint is not None:
        if checkpoint.load_into(state, device):
            steps.note(
                f"Resuming from {checkpoint.path}: {state.done:,} of "
                f"{len(distributed.shard(len(source))):,} images already streamed"
            )
        else:
            steps.note(f"No checkpoint at {checkpoint.path}: starting from the first image")
    owned = distributed.shard(len(source))
    remaining = owned[state.done :]
    dataset = torch.utils.data.Subset(ProbeDataset(source, loaded.preprocessing), remaining)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    autocast = autocast_for(device, precision)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    world = distributed.rank_and_world()[1]
    task = steps.task("Finding exemplars", len(source))
    task.advance(state.done * world)  # each rank shows the whole set's progress
    checked: set[str] = set()
    batches = 0
    release = PeriodicRelease()  # resident memory must not creep up with the image count
    # A batch's layers are streamed one by one as the model reaches them, so a batch cut
    # short leaves some layers with its images and others without: such a state is never
    # saved (a resume would stream those images twice), and Ctrl-C waits for the batch.
    mid_batch = False
    pending = _DeferredInterrupt()
    try:
        with extractor.open(loaded, layers) as read, _interrupts_between_batches(pending):
            for batch, indices, errors in loader:
                mid_batch = True
                ok = torch.tensor([not e for e in errors], dtype=torch.bool)
                for index, error in zip(indices.tolist(), errors, strict=True):
                    if error:
                        state.unreadable.append((index, error))
                if ok.any():
                    if not ok.all():
                        batch, indices = batch[ok], indices[ok]
                    batch = batch.to(device, non_blocking=True, memory_format=memory_format)

                    def consume(layer: str, acts: Tensor, indices: Tensor = indices) -> None:
                        state.add_layer(layer, acts, indices)

                    with torch.inference_mode(), autocast:  # activations need no gradients
                        # Readers that can hand each layer over as soon as it has run spare
                        # holding every layer's output of the batch at once.
                        if getattr(read, "supports_consume", False):
                            activations = cast(ConsumingReader, read)(batch, consume=consume)
                        else:
                            activations = read(batch)
                    for layer, acts in activations.items():
                        if layer not in checked:
                            check_batch(layer, acts)
                            checked.add(layer)
                    state.add(activations, indices)
                state.done += len(errors)
                mid_batch = False
                batches += 1
                release.tick()
                task.advance(len(errors) * world)
                if checkpoint is not None and checkpoint.every and batches % checkpoint.every == 0:
                    checkpoint.save(state)
                pending.raise_if_interrupted()
    except BaseException:
        # Ctrl-C or a crash mid-stream: keep every finished batch for --resume (a crash
        # inside a batch leaves the last periodic checkpoint in place).
        if checkpoint is not None and state.done and not mid_batch:
            checkpoint.save(state)
        if pending.interrupted:
            # DataLoader workers get Ctrl-C too and quit, which the loader reports as its
            # own error: it is the user's interruption all the same.
            raise KeyboardInterrupt from None
        raise
    if checkpoint is not None and batches:
        checkpoint.save(state)  # a crash in the later stages then resumes after the pass
    gathered = distributed.all_gather(state.state_dict())
    if len(gathered) > 1:
        merged = ExemplarPass(layers, settings, sample_ids, groups)
        for shard_state in gathered:
            merged.merge(shard_state)
        state = merged
    try:
        return state.finish(source)
    except EmptyInputError:
        # Not one readable image: nothing to resume, so no checkpoint is left behind.
        if checkpoint is not None:
            checkpoint.remove()
        raise
