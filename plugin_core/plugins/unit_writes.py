"""How a unit map's units write back into their layer: ablating and attributing them.

The optional ``decoder`` / ``channel_groups`` methods of a
:class:`~neurolabel.plugin_core.plugins.contracts.UnitMap` say what each unit contributes to
the layer's channels; the ablation evaluator and prediction attribution read them here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import NeurolabelError
from .contracts import UnitMap

if TYPE_CHECKING:
    from torch import Tensor


def unit_writes(unit_map: UnitMap, layer: str, channels: int) -> tuple[str, Tensor]:
    """How the units of ``layer`` write into its ``channels`` channels.

    Returns:
        ``("groups", [U, C] 0/1)`` for units that are groups of channels (attention heads),
        ``("decoder", [U, C])`` for units with a decoder (SAE latents, directions).

    Raises:
        NeurolabelError: The map has neither (an SAE file without a decoder weight).
    """
    unit_map.units(layer, channels)  # checks the map fits, and lets it read the layer
    groups = getattr(unit_map, "channel_groups", None)
    if callable(groups):
        return "groups", groups(layer).float()
    return "decoder", _decoder(unit_map, layer).float()


def check_writes_back(unit_map: UnitMap, layer: str) -> None:
    """Raise unless ``unit_map``'s units can be ablated and attributed to (they have a
    decoder or are groups of channels); see :func:`unit_writes`."""
    if not callable(getattr(unit_map, "channel_groups", None)):
        _decoder(unit_map, layer)


def _decoder(unit_map: UnitMap, layer: str) -> Tensor:
    decoder = getattr(unit_map, "decoder", None)
    found = decoder(layer) if callable(decoder) else None
    if found is None:
        raise NeurolabelError(
            f"The units of '{unit_map.name}' do not say how they write into layer '{layer}' "
            "(no decoder, e.g. an SAE file without its decoder weight W_dec): they cannot be "
            "ablated or attributed to; give the decoder, or evaluate with faithfulness or cosy"
        )
    return found


def remove_units(unit_map: UnitMap, layer: str, output: Tensor, mask: Tensor) -> Tensor:
    """``layer``'s output with the units of ``mask`` taken out, sample by sample.

    A group of channels (a head) is zeroed; a unit with a decoder has its contribution
    ``u * decoder[u]`` subtracted at every position (an SAE latent's reconstruction share,
    a direction's component; a principal direction's centered projection, which moves the
    vector to the mean along it). Channels are dimension 1 of ``[B, C]`` and ``[B, C, H,
    W]`` outputs and the last of ``[B, T, C]`` tokens.

    Args:
        unit_map: The map.
        layer: The layer's name.
        output: The layer's output.
        mask: ``[B, U]`` boolean, the units to remove from each sample.

    Examples:
        >>> import torch
        >>> class Sum:  # one unit: the sum of two channels, written back evenly
        ...     name = "sum"
        ...     def units(self, layer, channels): return 1
        ...     def __call__(self, layer, acts): return acts.sum(1, keepdim=True)
        ...     def decoder(self, layer): return torch.tensor([[0.5, 0.5]])
        >>> remove_units(Sum(), "fc", torch.tensor([[3.0, 1.0]]), torch.tensor([[True]]))
        tensor([[ 1., -1.]])
    """
    x = output.movedim(1, -1) if output.ndim == 4 else output  # channels last
    channels = int(x.shape[-1])
    kind, writes = unit_writes(unit_map, layer, channels)
    writes = writes.to(x.device, x.dtype)
    chosen = mask.to(x.device, x.dtype)
    flat = x.reshape(x.shape[0], -1, channels)  # [B, positions, C]
    if kind == "groups":
        flat = flat * (1 - (chosen @ writes).clamp(max=1))[:, None, :]
    else:
        units = unit_map(layer, flat.reshape(-1, channels)).reshape(*flat.shape[:2], -1)
        flat = flat - (units * chosen[:, None, :]) @ writes
    out = flat.reshape(x.shape)
    return out.movedim(-1, 1) if output.ndim == 4 else out
