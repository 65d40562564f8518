"""Streaming top-k exemplars per neuron, in O(neurons * k) memory whatever the image count."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

#: Activation maps are kept at most this many cells per side: patches only need the
#: coarse location, and early layers' full-resolution maps would dominate memory.
MAX_MAP_SIDE = 56


@dataclass
class TopKState:
    """What the stream found for one layer.

    Args:
        values: ``[C, k]`` exemplar activations, descending; ``-inf`` where fewer than k images.
        ids: ``[C, k]`` image indices (``-1`` where missing).
        maps: ``[C, k, h, w]`` low-resolution activation maps, or None for vector layers.
        count: Number of images seen.
        mean, std, min, max: ``[C]`` statistics of the per-image activation.
        threshold: ``[C]`` activation-map threshold at the requested quantile (NetDissect's
            top 0.5 % of map cells by default), estimated from a uniform reservoir sample.
        quantile: The quantile ``threshold`` was taken at.
    """

    values: Tensor
    ids: Tensor
    maps: Tensor | None
    count: int
    mean: Tensor
    std: Tensor
    min: Tensor
    max: Tensor
    threshold: Tensor
    quantile: float

    @property
    def num_neurons(self) -> int:
        return int(self.values.shape[0])

    def dead(self) -> Tensor:
        """``[C]`` bool: neurons whose activation never varied over the probing set (e.g. a
        ReLU unit that never fired); they get no label."""
        spread = self.max - self.min
        return ~(spread > 1e-6 * (1.0 + self.max.abs()))


def per_image_activation(acts: Tensor, reduce: str = "max") -> Tensor:
    """``[B, C]`` activation per image: spatial max or mean of ``[B, C, H, W]`` maps, or the
    values themselves for ``[B, C]`` layers."""
    if acts.ndim == 2:
        return acts
    return acts.amax(dim=(2, 3)) if reduce == "max" else acts.mean(dim=(2, 3))


class StreamingTopK:
    """Keep each neuron's top-k images, their maps and running statistics over a stream.

    The state is exact and order-free: exemplars are the k images with the highest activation
    (ties go to the lower image index) and the threshold reservoir keeps the map cells with the
    smallest pseudo-random keys, a key being a hash of the cell's global position. So a stream
    split into shards (torch.distributed ranks) or interrupted and resumed from a
    :meth:`state_dict` gives the same state as one uninterrupted pass once :meth:`merge` d.

    Args:
        k: Exemplars per neuron.
        reduce: How an image's activation map becomes one number: ``max`` (default,
            NetDissect's) or ``mean`` (CLIP-Dissect's default pooling).
        quantile: Quantile of map cells used as the patch threshold (0.995 = top 0.5 %).
        reservoir: Map cells per neuron kept (uniform sample) to estimate that quantile.
        seed: Salt of the reservoir's keys (another seed draws another uniform sample).
        distinct_groups: Keep at most one exemplar per group of images (crops, frames or
            tiles of one source): :meth:`update` then takes each image's group, and a
            neuron's exemplars are the best image of each of its k best groups. Exact and
            order-free like the rest of the state.

    Examples:
        >>> topk = StreamingTopK(k=2)
        >>> topk.update(torch.tensor([[1.0, 5.0], [3.0, 0.0], [2.0, 4.0]]), torch.arange(3))
        >>> state = topk.finalize()
        >>> state.ids.tolist(), state.values.tolist()
        ([[1, 2], [0, 2]], [[3.0, 2.0], [5.0, 4.0]])

        Images 1 and 2 are crops of one photo (group 1): neuron 1 keeps only the better one.

        >>> grouped = StreamingTopK(k=2, distinct_groups=True)
        >>> acts = torch.tensor([[1.0, 3.0], [3.0, 5.0], [2.0, 4.0]])
        >>> grouped.update(acts, torch.arange(3), groups=torch.tensor([0, 1, 1]))
        >>> grouped.finalize().ids.tolist()
        [[1, 0], [1, 0]]
    """

    def __init__(
        self,
        k: int,
        reduce: str = "max",
        quantile: float = 0.995,
        reservoir: int = 4096,
        seed: int = 0,
        distinct_groups: bool = False,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if reduce not in ("max", "mean"):
            raise ValueError(f"reduce must be 'max' or 'mean', got {reduce!r}")
        if not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        self.k = k
        self.reduce = reduce
        self.quantile = quantile
        self.reservoir = reservoir
        self.seed = seed
        self.distinct_groups = distinct_groups
        self._values: Tensor | None = None
        self._ids: Tensor | None = None
        self._groups: Tensor | None = None  # [C, k] group of each exemplar (distinct_groups)
        self._maps: Tensor | None = None
        self._count = 0
        self._sum: Tensor | None = None
        self._sumsq: Tensor | None = None
        self._min: Tensor | None = None
        self._max: Tensor | None = None
        self._res_keys: Tensor | None = None
        self._res_values: Tensor | None = None
        # Candidates wait in fixed buffers until they could fill the reservoir (see
        # _merge_reservoir); allocated once per layer, like the rest of the state.
        self._pending_keys: Tensor | None = None
        self._pending_values: Tensor | None = None
        self._pending_count = 0

    def _init(self, channels: int, map_shape: tuple[int, int] | None, device) -> None:
        self._values = torch.full((channels, self.k), float("-inf"), device=device)
        self._ids = torch.full((channels, self.k), -1, dtype=torch.long, device=device)
        if self.distinct_groups:
            self._groups = torch.full((channels, self.k), -1, dtype=torch.long, device=device)
        if map_shape is not None:
            self._maps = torch.zeros((channels, self.k, *map_shape), device=device)
        self._sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self._sumsq = torch.zeros(channels, dtype=torch.float64, device=device)
        self._min = torch.full((channels,), float("inf"), device=device)
        self._max = torch.full((channels,), float("-inf"), device=device)
        # Keys live on the host: they hash image indices and cell positions, which the host
        # knows, so choosing the cells that enter the reservoir never waits for the device.
        self._res_keys = torch.empty(0, dtype=torch.long)
        self._res_values = torch.empty((channels, 0), device=device)
        self._init_pending(channels, device)

    def _init_pending(self, channels: int, device) -> None:
        self._pending_keys = torch.empty(self.reservoir, dtype=torch.long)
        self._pending_values = torch.empty((channels, self.reservoir), device=device)
        self._pending_count = 0

    @staticmethod
    def shrink_maps(acts: Tensor) -> Tensor:
        """Area-downsample ``[B, C, H, W]`` maps to at most ``MAX_MAP_SIDE`` per side."""
        h, w = acts.shape[-2:]
        if max(h, w) <= MAX_MAP_SIDE:
            return acts
        scale = MAX_MAP_SIDE / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return F.adaptive_avg_pool2d(acts, size)

    def update(self, acts: Tensor, ids: Tensor, groups: Tensor | None = None) -> None:
        """Add one batch. Runs on the activations' device without synchronizing with the host.

        Args:
            acts: ``[B, C, H, W]`` spatial or ``[B, C]`` vector activations.
            ids: ``[B]`` global image indices (distinct; any order).
            groups: ``[B]`` non-negative group of each image; required with
                ``distinct_groups``, ignored otherwise.
        """
        if acts.ndim not in (2, 4):
            raise ValueError(f"expected [B,C,H,W] or [B,C] activations, got {tuple(acts.shape)}")
        if self.distinct_groups and groups is None:
            raise ValueError("distinct_groups needs the group of every image")
        acts = acts.float()
        host_ids = ids if ids.device.type == "cpu" and ids.dtype == torch.long else ids.long().cpu()
        ids = host_to_device(host_ids, acts.device)
        maps = self.shrink_maps(acts) if acts.ndim == 4 else None
        if self._values is None:
            map_size = (int(maps.shape[-2]), int(maps.shape[-1])) if maps is not None else None
            self._init(acts.shape[1], map_size, acts.device)
        assert self._values is not None and self._ids is not None
        if acts.shape[1] != self._values.shape[0]:
            raise ValueError("channel count changed between batches")
        scores = per_image_activation(acts, self.reduce)
        assert self._sum is not None and self._sumsq is not None
        assert self._min is not None and self._max is not None
        self._count += scores.shape[0]
        self._sum += scores.sum(0, dtype=torch.float64)
        self._sumsq += (scores.double() ** 2).sum(0)
        torch.minimum(self._min, scores.amin(0), out=self._min)
        torch.maximum(self._max, scores.amax(0), out=self._max)
        channels = scores.shape[1]
        candidate_groups = None
        if self.distinct_groups:
            assert groups is not None
            device_groups = host_to_device(groups.long().cpu(), acts.device)
            candidate_groups = device_groups.unsqueeze(0).expand(channels, -1)
        self._keep_best(
            scores.T,
            ids.unsqueeze(0).expand(channels, -1),
            maps,
            batch_first=True,
            groups=candidate_groups,
        )
        cells = maps if maps is not None else acts[:, :, None, None]
        self._add_to_reservoir(cells, host_ids)

    def _keep_best(
        self,
        values: Tensor,
        ids: Tensor,
        maps: Tensor | None,
        batch_first: bool = False,
        groups: Tensor | None = None,
    ) -> None:
        """Merge ``[C, n]`` candidates (and their ``[C, n]`` groups) into the top-k.

        Their maps are ``[n, C, h, w]`` (a batch, ``batch_first``) or ``[C, n, h, w]``.
        """
        assert self._values is not None and self._ids is not None
        all_values = torch.cat([self._values, values], dim=1)
        all_ids = torch.cat([self._ids, ids], dim=1)
        # Highest activation first, the lower image index first among equal activations:
        # a total order, so the result does not depend on batching, sharding or resuming.
        by_id = all_ids.argsort(dim=1, stable=True)
        by_value = all_values.gather(1, by_id).argsort(dim=1, descending=True, stable=True)
        ranked = by_id.gather(1, by_value)
        kept: Tensor | None = None
        if self._groups is not None and groups is not None:
            ranked, kept = _best_of_each_group(ranked, torch.cat([self._groups, groups], dim=1))
        order = ranked[:, : self.k]
        # In place, like the reservoir: the state never moves in the heap.
        self._values.copy_(all_values.gather(1, order))
        self._ids.copy_(all_ids.gather(1, order))
        if kept is not None and self._groups is not None and groups is not None:
            all_groups = torch.cat([self._groups, groups], dim=1)
            self._groups.copy_(all_groups.gather(1, order))
            # A slot with no distinct group left is empty, not a second view of one source.
            empty = torch.arange(self.k, device=order.device).unsqueeze(0) >= kept.unsqueeze(1)
            self._values.masked_fill_(empty, float("-inf"))
            self._ids.masked_fill_(empty, -1)
            self._groups.masked_fill_(empty, -1)
        if maps is not None and self._maps is not None:
            # Only the k winners' maps are gathered: the candidates' maps are never copied.
            h, w = self._maps.shape[-2:]
            kept = self._maps.gather(
                1, order.clamp(max=self.k - 1)[..., None, None].expand(-1, -1, h, w)
            )
            picked = (order - self.k).clamp(min=0)
            rows = torch.arange(order.shape[0], device=order.device).unsqueeze(1)
            new = maps[picked, rows] if batch_first else maps[rows, picked]
            self._maps.copy_(torch.where((order < self.k)[..., None, None], kept, new))

    def _add_to_reservoir(self, maps: Tensor, host_ids: Tensor) -> None:
        batch, channels, h, w = maps.shape
        cells = h * w
        keys = batch_cell_keys(host_ids, cells, self.seed)
        pick: Tensor | None = None  # every cell of the batch
        assert self._res_keys is not None
        if self._res_keys.numel() >= self.reservoir:
            # A cell whose key is above the full reservoir's largest can never enter it: late
            # in a stream almost every cell is, and the reservoir is left alone.
            pick = torch.nonzero(keys < self._res_keys.max()).squeeze(1)
            keys = keys[pick]
        if keys.numel() > self.reservoir:
            # Only this batch's smallest keys can enter: the batch's cells (an early layer's
            # are millions) are never copied whole.
            keys, best = keys.topk(self.reservoir, largest=False, sorted=False)
            pick = best if pick is None else pick[best]
        if keys.numel() == 0:
            return
        if pick is None:
            pick = torch.arange(keys.numel())
        pick = host_to_device(pick, maps.device)
        # Indexing copies: the state never holds a view of the activations, which the model
        # may overwrite in place (the extractor can hand them over before its next layer).
        values = maps.reshape(batch, channels, cells)[pick // cells, :, pick % cells].T
        self._merge_reservoir(keys, values)

    def _merge_reservoir(self, keys: Tensor, values: Tensor) -> None:
        # Bottom-k sampling: keep the cells with the smallest keys, an exact uniform sample of
        # every cell seen whatever the order or sharding of the stream. Candidates wait in a
        # buffer until they could fill the reservoir: small batches (vector layers give one
        # cell per image) then cost one merge per `reservoir` cells, not one per batch. The
        # buffer is written in place: late in a stream a few cells arrive per batch, and
        # keeping each batch's few as a tensor of its own, alive across many batches among
        # every batch's large temporaries, fragments the heap until the process's memory
        # creeps up with the number of images (measured: +180 MB over 6,400 images).
        assert self._pending_keys is not None and self._pending_values is not None
        count = keys.numel()
        if self._pending_count + count > self.reservoir:
            self._flush_reservoir()
        if count > self.reservoir:  # more than a reservoir at once: merged directly
            self._flush_reservoir(keys.cpu(), values)
            return
        end = self._pending_count + count
        self._pending_keys[self._pending_count : end] = keys.cpu()
        self._pending_values[:, self._pending_count : end] = values
        self._pending_count = end
        if self._pending_count >= self.reservoir:
            self._flush_reservoir()

    def _flush_reservoir(self, keys: Tensor | None = None, values: Tensor | None = None) -> None:
        """Merge the waiting candidates (or ``keys`` and ``values``) into the reservoir."""
        assert self._res_keys is not None and self._res_values is not None
        if keys is None or values is None:
            if not self._pending_count:
                return
            assert self._pending_keys is not None and self._pending_values is not None
            keys = self._pending_keys[: self._pending_count]
            values = self._pending_values[:, : self._pending_count]
            self._pending_count = 0
        all_keys = torch.cat([self._res_keys, keys])
        all_values = torch.cat([self._res_values, values], dim=1)
        if all_keys.numel() > self.reservoir:
            all_keys, keep = all_keys.topk(self.reservoir, largest=False, sorted=False)
            all_values = all_values[:, host_to_device(keep, all_values.device)]
        if self._res_values.shape == all_values.shape:  # a full reservoir stays where it is
            self._res_keys.copy_(all_keys)
            self._res_values.copy_(all_values)
        else:
            self._res_keys, self._res_values = all_keys, all_values

    # -- checkpoints and shards ---------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The whole streaming state, on the CPU (to save, or to send to another rank)."""
        if self._res_keys is not None:
            self._flush_reservoir()
        names = (
            "values",
            "ids",
            "groups",
            "maps",
            "sum",
            "sumsq",
            "min",
            "max",
            "res_keys",
            "res_values",
        )
        # Copies: the state is updated in place, and a saved or sent state must not change.
        state: dict[str, Any] = {}
        for name in names:
            tensor = getattr(self, f"_{name}")
            state[name] = None if tensor is None else tensor.to("cpu", copy=True)
        state["count"] = self._count
        state["settings"] = self._settings()
        return state

    def load_state_dict(self, state: dict[str, Any], device: str | torch.device = "cpu") -> None:
        """Restore a :meth:`state_dict` (made with the same settings) onto ``device``."""
        self._check_settings(state)
        # Copies: the state is updated in place, and the caller's state must not change.
        for name in ("values", "ids", "groups", "maps", "sum", "sumsq", "min", "max", "res_values"):
            tensor = state.get(name)
            setattr(self, f"_{name}", None if tensor is None else tensor.to(device, copy=True))
        res_keys = state["res_keys"]
        self._res_keys = None if res_keys is None else res_keys.to("cpu", copy=True)
        self._count = int(state["count"])
        if self._res_values is not None:
            self._init_pending(self._res_values.shape[0], self._res_values.device)

    def merge(self, state: dict[str, Any]) -> None:
        """Fold in the :meth:`state_dict` of a stream over *other* images (another shard).

        Exact: merging the shards of a probing set gives the state of one pass over all of it.
        """
        self._check_settings(state)
        if state["values"] is None:  # that shard saw no image
            return
        if self._values is None:
            self.load_state_dict(state)
            return
        assert self._sum is not None and self._sumsq is not None
        assert self._min is not None and self._max is not None
        device = self._values.device
        other = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in state.items()}
        if other["values"].shape[0] != self._values.shape[0]:
            raise ValueError("cannot merge streams over layers with different channel counts")
        self._keep_best(other["values"], other["ids"], other["maps"], groups=other.get("groups"))
        self._count += int(other["count"])
        self._sum += other["sum"]
        self._sumsq += other["sumsq"]
        torch.minimum(self._min, other["min"], out=self._min)
        torch.maximum(self._max, other["max"], out=self._max)
        self._merge_reservoir(other["res_keys"], other["res_values"])

    def _settings(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "reduce": self.reduce,
            "quantile": self.quantile,
            "reservoir": self.reservoir,
            "seed": self.seed,
            **({"distinct_groups": True} if self.distinct_groups else {}),
        }

    def _check_settings(self, state: dict[str, Any]) -> None:
        if state.get("settings") != self._settings():
            raise ValueError(
                f"streaming state made with {state.get('settings')}, not {self._settings()}"
            )

    def finalize(self) -> TopKState:
        """Return the exemplars (sorted by activation, descending) and statistics."""
        if self._values is None:
            raise ValueError("no batch was added")
        self._flush_reservoir()
        assert self._sum is not None and self._sumsq is not None and self._res_values is not None
        assert self._min is not None and self._max is not None and self._ids is not None
        n = max(self._count, 1)
        mean = self._sum / n
        var = (self._sumsq / n - mean**2).clamp(min=0)
        threshold = torch.quantile(self._res_values.double(), self.quantile, dim=1).float()
        return TopKState(
            values=self._values.cpu(),
            ids=self._ids.cpu(),
            maps=None if self._maps is None else self._maps.cpu(),
            count=self._count,
            mean=mean.float().cpu(),
            std=var.sqrt().float().cpu(),
            min=self._min.cpu(),
            max=self._max.cpu(),
            threshold=threshold.cpu(),
            quantile=self.quantile,
        )


def _best_of_each_group(ranked: Tensor, groups: Tensor) -> tuple[Tensor, Tensor]:
    """Reorder each row of ranked candidates so that the best of each group comes first.

    Args:
        ranked: ``[C, n]`` candidate positions, best first.
        groups: ``[C, n]`` group of each candidate position.

    Returns:
        ``(order, kept)``: the positions with each group's best first (in rank order) and
        the repeats after, and ``[C]`` how many distinct groups each row has.
    """
    ranked_groups = groups.gather(1, ranked)
    # A stable sort by group keeps the rank order inside a group: its first is its best.
    by_group = ranked_groups.argsort(dim=1, stable=True)
    sorted_groups = ranked_groups.gather(1, by_group)
    first = torch.ones_like(sorted_groups, dtype=torch.bool)
    first[:, 1:] = sorted_groups[:, 1:] != sorted_groups[:, :-1]
    best = torch.empty_like(first).scatter_(1, by_group, first)
    repeats_last = (~best).to(torch.uint8).argsort(dim=1, stable=True)
    return ranked.gather(1, repeats_last), best.sum(dim=1)


_MASK31 = (1 << 31) - 1


def host_to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy a small host tensor (indices) to ``device`` without waiting for the device.

    A copy from pageable host memory to a GPU first waits for the stream; from pinned
    memory it is queued like a kernel, so the host keeps running ahead.

    Examples:
        >>> host_to_device(torch.arange(3), torch.device("cpu")).tolist()
        [0, 1, 2]
    """
    if device.type != "cuda":
        return tensor.to(device)
    if not tensor.is_pinned():
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


# The cell keys of the last batch, by (cells per map, seed): every layer of a forward pass
# sees the same images, and layers with maps of one size share their keys.
_last_batch: tuple[Tensor | None, int] = (None, -1)
_last_keys: dict[tuple[int, int], Tensor] = {}


def batch_cell_keys(ids: Tensor, cells: int, seed: int = 0) -> Tensor:
    """:func:`cell_keys` of every map cell of a batch, ``[B * cells]`` in batch order.

    Computed once per batch and map size: later calls with the same (unmodified) ``ids``
    tensor reuse the keys.

    Args:
        ids: ``[B]`` global image indices (CPU, int64).
        cells: Cells per map (``h * w``).
        seed: Salt of the keys.

    Examples:
        >>> ids = torch.tensor([3, 7])
        >>> keys = batch_cell_keys(ids, 4)
        >>> torch.equal(keys, cell_keys(torch.tensor([12, 13, 14, 15, 28, 29, 30, 31])))
        True
    """
    global _last_batch, _last_keys
    if _last_batch[0] is not ids or _last_batch[1] != ids._version:
        _last_batch, _last_keys = (ids, ids._version), {}
    if (cells, seed) not in _last_keys:
        positions = ids.unsqueeze(1) * cells + torch.arange(cells)
        _last_keys[(cells, seed)] = cell_keys(positions.reshape(-1), seed)
    return _last_keys[(cells, seed)]


def cell_keys(positions: Tensor, seed: int = 0) -> Tensor:
    """Distinct pseudo-random int64 sampling keys of global map-cell positions.

    The high bits are a hash of the position (31-bit multiply-xorshift rounds, kept below
    2**62 so int64 never overflows), the low 32 bits the position itself, which makes keys of
    distinct cells distinct. Bottom-k over these keys is a uniform sample.

    Examples:
        >>> keys = cell_keys(torch.arange(5))
        >>> bool((keys.unique().numel() == 5))
        True
        >>> torch.equal(cell_keys(torch.arange(5)), keys)
        True
    """
    x = positions.long()
    x = ((x & _MASK31) * 1103515245 + ((x >> 31) & _MASK31) * 1597334677 + seed) & _MASK31
    for multiplier in (0x5BD1E995, 0x27D4EB2F):
        x = x ^ (x >> 15)
        x = (x * multiplier) & _MASK31
    x = x ^ (x >> 16)
    return (x << 32) | (positions.long() & 0xFFFFFFFF)
