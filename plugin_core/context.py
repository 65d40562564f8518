"""Building the :class:`ResolveContext` factories receive."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .errors import NeurolabelError
from .plugins import get_plugins
from .protocols import ResolveContext

CACHE_ENV = "NEUROLABEL_CACHE_DIR"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N|mps`` into a device, failing clearly when unavailable.

    Args:
        device: Requested device; ``auto`` picks CUDA when available, else CPU.

    Returns:
        The :class:`torch.device`.
    """
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


def build_context(
    device: str | torch.device = "auto", cache_dir: str | Path | None = None, **extra: Any
) -> ResolveContext:
    """Make a context with fresh registries from every loaded plugin.

    Args:
        device: ``auto``, ``cpu``, ``cuda``...
        cache_dir: Cache folder; default :func:`default_cache_dir`.
        **extra: Free-form settings for factories (e.g. ``trust_pickle=True``).

    Returns:
        A :class:`ResolveContext`.

    Examples:
        >>> ctx = build_context("cpu")
        >>> ctx.device.type
        'cpu'
    """
    return ResolveContext(
        device=resolve_device(device),
        registries=get_plugins().registries(),
        cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
        extra=dict(extra),
    )
