"""On-disk cache of finished exemplar passes, one entry per layer.

A rerun with another vocabulary, scorer or aggregation needs the same exemplars: the entry
for a layer is keyed by the model's weights, the layer, the preprocessing, the probing set
and the streaming settings, so such a rerun skips the forward pass over the images.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..data.atomic import ABANDONED_AFTER_SECONDS, atomic_write, remove_stale_temporaries
from ..data.images import ImageSource, SkippedInput
from .exemplar_pass import PassOutput, digest
from .topk import TopKState

_STATE_FIELDS = ("values", "ids", "maps", "mean", "std", "min", "max", "threshold")


class ActivationCache:
    """Per-layer cache entries under ``root/exemplars``.

    Args:
        root: Cache folder (``NEUROLABEL_CACHE_DIR``).
        key: What every entry of this run shares (model, preprocessing, images, settings).
    """

    def __init__(self, root: Path, key: Mapping[str, Any]) -> None:
        self.folder = root / "exemplars"
        self.key = dict(key)

    def path(self, layer: str) -> Path:
        return self.folder / f"{digest({**self.key, 'layer': layer})}.pt"

    def load(self, layer: str) -> dict[str, Any] | None:
        """The stored entry of ``layer``, or None (absent or unreadable: recompute)."""
        path = self.path(layer)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a damaged entry is only a cache miss
            return None
        return entry if entry.get("key") == {**self.key, "layer": layer} else None

    def store(self, output: PassOutput) -> None:
        """Write one entry per layer of a finished pass."""
        for layer, state in output.states.items():
            entry = {
                "key": {**self.key, "layer": layer},
                "state": {name: getattr(state, name) for name in _STATE_FIELDS},
                "count": state.count,
                "quantile": state.quantile,
                "sample_acts": output.sample_acts[layer],
                "sample_ids": output.sample_ids,
                "unreadable_ids": list(output.unreadable_ids),
                "reasons": [s.reason for s in output.skipped],
            }
            with atomic_write(self.path(layer), "wb") as handle:
                torch.save(entry, handle)
        remove_stale_temporaries(self.folder, older_than=ABANDONED_AFTER_SECONDS)


def restore(entries: Mapping[str, dict[str, Any]], source: ImageSource) -> PassOutput:
    """Rebuild a :class:`PassOutput` from cache entries of one run (same images, sample)."""
    first = next(iter(entries.values()))
    states = {
        layer: TopKState(**entry["state"], count=entry["count"], quantile=entry["quantile"])
        for layer, entry in entries.items()
    }
    skipped = [
        SkippedInput(source.describe(i), reason)
        for i, reason in zip(first["unreadable_ids"], first["reasons"], strict=True)
    ]
    return PassOutput(
        states=states,
        skipped=skipped,
        sample_acts={layer: entry["sample_acts"] for layer, entry in entries.items()},
        sample_ids=first["sample_ids"],
        unreadable_ids=list(first["unreadable_ids"]),
    )
