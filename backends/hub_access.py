"""Whether weights that live on the Hugging Face hub can be had here: cached, or reachable.

Without a network, huggingface_hub retries every file for about a minute and logs each try
twice; open_clip then logs its own error. A user deserves one clear message within seconds:
:func:`hub_reachable` asks once per process (a short TCP connection, no retries), and
:func:`quiet_hub` keeps the hub's and open_clip's logging off the terminal while a load
that is known to be possible runs.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import urlparse

#: Seconds to wait for the hub to answer before calling it unreachable.
CONNECT_TIMEOUT = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def cached_hub_file(repo_id: str, filenames: Sequence[str]) -> str | None:
    """The local path of the first of ``filenames`` in the hub cache, or None.

    Examples:
        >>> cached_hub_file("no-such-org/no-such-model", ["weights.bin"]) is None
        True
    """
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    return None


def hub_offline_setting() -> bool:
    """Whether the user told huggingface_hub to stay offline (``HF_HUB_OFFLINE``)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@functools.cache
def hub_reachable() -> bool:
    """Whether the hub answers a TCP connection within :data:`CONNECT_TIMEOUT` (asked once).

    Behind a proxy the direct connection says nothing, so the hub is taken as reachable.

    Examples:
        >>> isinstance(hub_reachable(), bool)
        True
    """
    if hub_offline_setting():
        return False
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


@contextmanager
def hub_offline() -> Iterator[None]:
    """Make huggingface_hub read its cache without asking the hub while the block runs
    (what ``HF_HUB_OFFLINE=1`` does; that variable is read once, when the hub is imported).
    """
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@contextmanager
def quiet_hub() -> Iterator[None]:
    """Keep huggingface_hub's retry warnings and open_clip's root-logger errors (which
    repeat what neurolabel's own message says) off the terminal while the block runs.

    Examples:
        >>> with quiet_hub():
        ...     logging.getLogger().error("not shown")
    """
    loggers = [logging.getLogger(), logging.getLogger("huggingface_hub")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.CRITICAL)
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
