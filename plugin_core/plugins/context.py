"""The :class:`ResolveContext` every factory receives: device, registries, cache folder.

:func:`~neurolabel.plugin_core.plugins.resolve.build_context` makes one with the registries
of every loaded plugin. Importing this module does not import torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import NeurolabelError

if TYPE_CHECKING:
    import torch

    from .registry import Registries

CACHE_ENV = "NEUROLABEL_CACHE_DIR"


@dataclass
class ResolveContext:
    """What a factory may need besides its spec.

    Args:
        device: Where models should run.
        registries: Every registry, so one plugin can use another's (a classifier-grounded
            scorer resolves its classifier through the model sources).
        cache_dir: Folder for caches (text embeddings, LLM answers).
        extra: Free-form settings passed by the caller (e.g. ``{"trust_pickle": True}``).
    """

    device: torch.device
    registries: Registries
    cache_dir: Path
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a device, failing clearly when unavailable.

    Args:
        device: Requested device; ``auto`` picks CUDA when available, else CPU.

    Returns:
        The :class:`torch.device`.

    Examples:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    import torch

    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise NeurolabelError(f"Unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise NeurolabelError(
            f"Device {device!r} asked for, but CUDA is not available here; use --device cpu or auto"
        )
    return dev


def default_cache_dir() -> Path:
    """``$NEUROLABEL_CACHE_DIR`` or ``~/.cache/neurolabel``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "neurolabel"
