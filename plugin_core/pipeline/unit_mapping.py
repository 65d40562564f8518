"""Explain a unit map's units instead of channels: an extractor that maps what it reads.

:class:`MappedExtractor` wraps any extractor so that every layer's activations pass through
a :class:`~neurolabel.plugin_core.plugins.contracts.UnitMap` (``[B, C, H, W] -> [B, U, H,
W]``) batch by batch, including the layers a reader hands over from inside the forward
pass. The exemplar pass, the patches, the scoring and the evaluators then see units where
they saw channels; nothing of the whole probing set is ever held in the unit space.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from torch import Tensor

from ..plugins.context import ResolveContext
from ..plugins.contracts import Extractor, LayerInfo, LoadedModel, UnitMap
from ..plugins.resolve import CHANNELS, build_unit_map
from ..plugins.spec import Spec


class MappedReader:
    """An activation reader whose every output goes through a unit map."""

    def __init__(self, read: Any, unit_map: UnitMap) -> None:
        self.read = read
        self.unit_map = unit_map
        self.supports_consume = bool(getattr(read, "supports_consume", False))
        self.checked: set[str] = set()

    def map(self, layer: str, acts: Tensor) -> Tensor:
        if layer not in self.checked:  # a map that does not fit the layer says so at once
            self.unit_map.units(layer, int(acts.shape[1]))
            self.checked.add(layer)
        return self.unit_map(layer, acts)

    def __call__(
        self, batch: Tensor, consume: Callable[[str, Tensor], None] | None = None
    ) -> dict[str, Tensor]:
        if consume is not None and self.supports_consume:
            mapped_consume = lambda layer, acts: consume(layer, self.map(layer, acts))  # noqa: E731
            outputs = self.read(batch, consume=mapped_consume)
        else:
            outputs = self.read(batch)
        return {layer: self.map(layer, acts) for layer, acts in outputs.items()}


class MappedExtractor:
    """``extractor``, with each layer's channels mapped to ``unit_map``'s units.

    Args:
        extractor: The extractor that reads the layers.
        unit_map: What a unit is.
    """

    def __init__(self, extractor: Extractor, unit_map: UnitMap) -> None:
        self.extractor = extractor
        self.unit_map = unit_map
        self.name = extractor.name

    def _bind(self, loaded: LoadedModel) -> None:
        """Let a map that depends on the model (attention heads) read it first."""
        bind = getattr(self.unit_map, "bind", None)
        if callable(bind):
            bind(loaded)

    @contextmanager
    def open(self, loaded: LoadedModel, layers: Sequence[str]) -> Iterator[MappedReader]:
        self._bind(loaded)
        with self.extractor.open(loaded, layers) as read:
            yield MappedReader(read, self.unit_map)

    def list_layers(self, loaded: LoadedModel) -> list[LayerInfo]:
        """The layers, with their unit count under the map where it fits them."""
        self._bind(loaded)
        out = []
        for info in self.extractor.list_layers(loaded):
            try:
                units = self.unit_map.units(info.name, info.shape[0])
            except Exception:  # the map fits some layers only (it was trained on one)
                out.append(info)
                continue
            out.append(dataclasses.replace(info, shape=(units, *info.shape[1:])))
        return out


def mapped_extractor(
    extractor: Extractor,
    units_from: str | UnitMap | None,
    ctx: ResolveContext,
    record: dict[str, Any] | None = None,
) -> Extractor:
    """``extractor`` itself for channels, else wrapped in a :class:`MappedExtractor`.

    Args:
        extractor: The extractor that reads the layers.
        units_from: A unit-map spec (``channels``, ``sae:PATH``, ``directions:PATH``) or
            object; None means channels.
        ctx: Resolve context (its unit-map registry).
        record: What a result recorded of the map (``settings.unit_map``): a map fitted on
            the probing images (``directions:pca``) is restored from it.
    """
    if units_from is None or units_from == CHANNELS:
        return extractor
    return MappedExtractor(extractor, build_unit_map(units_from, ctx, record))


def fit_unit_map(
    extractor: MappedExtractor,
    loaded: LoadedModel,
    source: Any,
    layers: Sequence[str],
    *,
    device: Any,
    batch_size: int,
    steps: Any,
    sign_positions: int = 4096,
) -> None:
    """Fit a map that needs the probing images (``needs_fit``, e.g. PCA directions): one
    pass over ``source`` collecting each layer's channel mean and covariance over every
    position, then ``unit_map.fit(layer, mean, covariance, sample)`` with the first
    ``sign_positions`` channel vectors as ``sample``.
    """
    import torch

    from ..data.probe_dataset import ProbeDataset

    loader = torch.utils.data.DataLoader(
        ProbeDataset(source, loaded.preprocessing), batch_size=batch_size
    )
    totals: dict[str, Any] = {}
    task = steps.task("Fitting the unit map", len(source))
    with extractor.extractor.open(loaded, layers) as read, torch.inference_mode():
        for batch, _, errors in loader:
            ok = torch.tensor([not e for e in errors], dtype=torch.bool)
            if ok.any():
                for layer, acts in read(batch[ok].to(device)).items():
                    flat = acts.double()
                    if flat.ndim == 4:
                        flat = flat.permute(0, 2, 3, 1).reshape(-1, flat.shape[1])
                    count, total, outer, sample = totals.get(layer, (0, 0.0, 0.0, []))
                    kept = sum(len(part) for part in sample)
                    if kept < sign_positions:
                        sample.append(flat[: sign_positions - kept].cpu())
                    totals[layer] = (
                        count + len(flat),
                        total + flat.sum(dim=0),
                        outer + flat.T @ flat,
                        sample,
                    )
            task.advance(len(errors))
    for layer, (count, total, outer, sample) in totals.items():
        mean = (total / count).cpu()
        covariance = (outer / count).cpu() - torch.outer(mean, mean)
        extractor.unit_map.fit(layer, mean, covariance, torch.cat(sample))  # type: ignore[attr-defined]


def result_extractor(result: Any, context: ResolveContext) -> Any:
    """The extractor a result was made with (``hooks`` when it names none this install
    has), mapping channels to the result's units (``settings.units_from``)."""
    spec = result.settings.get("extractor")
    registry = context.registries.extractors
    if not isinstance(spec, str) or not spec.strip() or Spec.parse(spec).name not in registry:
        spec = "hooks"
    units_from = result.settings.get("units_from")
    record = result.settings.get("unit_map")
    return mapped_extractor(
        registry.resolve(spec, context),
        units_from if isinstance(units_from, str) else None,
        context,
        record if isinstance(record, dict) else None,
    )
