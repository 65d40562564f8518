"""Streaming top-k exemplars per neuron, in O(neurons * k) memory whatever the image count."""

from __future__ import annotations

from dataclasses import dataclass

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

    Args:
        k: Exemplars per neuron.
        reduce: How an image's activation map becomes one number: ``max`` (default,
            NetDissect/CLIP-Dissect) or ``mean``.
        quantile: Quantile of map cells used as the patch threshold (0.995 = top 0.5 %).
        reservoir: Map cells per neuron kept (uniform sample) to estimate that quantile.
        seed: Seed of the reservoir's random keys, for reproducible thresholds.

    Examples:
        >>> topk = StreamingTopK(k=2)
        >>> topk.update(torch.tensor([[1.0, 5.0], [3.0, 0.0], [2.0, 4.0]]), torch.arange(3))
        >>> state = topk.finalize()
        >>> state.ids.tolist(), state.values.tolist()
        ([[1, 2], [0, 2]], [[3.0, 2.0], [5.0, 4.0]])
    """

    def __init__(
        self,
        k: int,
        reduce: str = "max",
        quantile: float = 0.995,
        reservoir: int = 4096,
        seed: int = 0,
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
        self._generator = torch.Generator().manual_seed(seed)
        self._values: Tensor | None = None
        self._ids: Tensor | None = None
        self._maps: Tensor | None = None
        self._count = 0
        self._sum: Tensor | None = None
        self._sumsq: Tensor | None = None
        self._min: Tensor | None = None
        self._max: Tensor | None = None
        self._res_keys: Tensor | None = None
        self._res_values: Tensor | None = None

    def _init(self, channels: int, map_shape: tuple[int, int] | None, dtype_device) -> None:
        device = dtype_device
        self._values = torch.full((channels, self.k), float("-inf"), device=device)
        self._ids = torch.full((channels, self.k), -1, dtype=torch.long, device=device)
        if map_shape is not None:
            self._maps = torch.zeros((channels, self.k, *map_shape), device=device)
        self._sum = torch.zeros(channels, dtype=torch.float64, device=device)
        self._sumsq = torch.zeros(channels, dtype=torch.float64, device=device)
        self._min = torch.full((channels,), float("inf"), device=device)
        self._max = torch.full((channels,), float("-inf"), device=device)
        self._res_keys = torch.empty(0, device=device)
        self._res_values = torch.empty((channels, 0), device=device)

    @staticmethod
    def shrink_maps(acts: Tensor) -> Tensor:
        """Area-downsample ``[B, C, H, W]`` maps to at most ``MAX_MAP_SIDE`` per side."""
        h, w = acts.shape[-2:]
        if max(h, w) <= MAX_MAP_SIDE:
            return acts
        scale = MAX_MAP_SIDE / max(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        return F.adaptive_avg_pool2d(acts, size)

    def update(self, acts: Tensor, ids: Tensor) -> None:
        """Add one batch.

        Args:
            acts: ``[B, C, H, W]`` spatial or ``[B, C]`` vector activations.
            ids: ``[B]`` global image indices.
        """
        if acts.ndim not in (2, 4):
            raise ValueError(f"expected [B,C,H,W] or [B,C] activations, got {tuple(acts.shape)}")
        acts = acts.float()
        ids = ids.to(acts.device, torch.long)
        spatial = acts.ndim == 4
        maps = self.shrink_maps(acts) if spatial else None
        if self._values is None:
            self._init(
                acts.shape[1], tuple(maps.shape[-2:]) if maps is not None else None, acts.device
            )
        assert self._values is not None and self._ids is not None
        if acts.shape[1] != self._values.shape[0]:
            raise ValueError("channel count changed between batches")
        scores = per_image_activation(acts, self.reduce)
        batch = scores.shape[0]
        self._count += batch
        self._sum += scores.sum(0, dtype=torch.float64)
        self._sumsq += (scores.double() ** 2).sum(0)
        self._min = torch.minimum(self._min, scores.amin(0))
        self._max = torch.maximum(self._max, scores.amax(0))

        candidates = torch.cat([self._values, scores.T], dim=1)  # [C, k+B]
        # A stable sort keeps earlier (lower-index) images first among equal activations, so
        # exemplars do not depend on the batch size.
        new_values, index = candidates.sort(dim=1, descending=True, stable=True)
        new_values, index = new_values[:, : self.k], index[:, : self.k]
        from_old = index < self.k
        old_index = index.clamp(max=self.k - 1)
        new_index = (index - self.k).clamp(min=0)
        batch_ids = ids.unsqueeze(0).expand(scores.shape[1], -1)
        self._ids = torch.where(
            from_old, self._ids.gather(1, old_index), batch_ids.gather(1, new_index)
        )
        if maps is not None and self._maps is not None:
            c, _, h, w = self._maps.shape
            old = self._maps.reshape(c, self.k, h * w)
            new = maps.permute(1, 0, 2, 3).reshape(c, batch, h * w)
            gathered_old = old.gather(1, old_index.unsqueeze(-1).expand(-1, -1, h * w))
            gathered_new = new.gather(1, new_index.unsqueeze(-1).expand(-1, -1, h * w))
            self._maps = torch.where(from_old.unsqueeze(-1), gathered_old, gathered_new).reshape(
                c, self.k, h, w
            )
        self._values = new_values
        self._update_reservoir(maps if maps is not None else acts.unsqueeze(-1).unsqueeze(-1))

    def _update_reservoir(self, maps: Tensor) -> None:
        # Priority sampling: every map cell gets a uniform random key and the cells with the
        # smallest keys are kept, which is an exact uniform sample of all cells seen so far.
        assert self._res_keys is not None and self._res_values is not None
        cells = maps.permute(1, 0, 2, 3).reshape(maps.shape[1], -1)  # [C, B*h*w]
        keys = torch.rand(cells.shape[1], generator=self._generator).to(cells.device)
        take = min(self.reservoir, cells.shape[1])
        keys, pick = keys.topk(take, largest=False)
        all_keys = torch.cat([self._res_keys, keys])
        all_values = torch.cat([self._res_values, cells[:, pick]], dim=1)
        if all_keys.numel() > self.reservoir:
            all_keys, keep = all_keys.topk(self.reservoir, largest=False)
            all_values = all_values[:, keep]
        self._res_keys, self._res_values = all_keys, all_values

    def finalize(self) -> TopKState:
        """Return the exemplars (sorted by activation, descending) and statistics."""
        if self._values is None:
            raise ValueError("no batch was added")
        assert self._sum is not None and self._sumsq is not None and self._res_values is not None
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
