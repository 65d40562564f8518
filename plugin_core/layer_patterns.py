"""Layer patterns: name many layers at once (``layer3.*.conv2``, ``type:Conv2d``).

Dissecting a whole network means dozens of layers (ResNet-50's 53 convolutions hold its
~26,500 channels); a pattern names them without listing each one.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from .errors import LayerNotFoundError

#: Prefix of a pattern over module class names rather than dotted names.
TYPE_PREFIX = "type:"
_GLOB_CHARACTERS = frozenset("*?[")


def is_layer_pattern(text: str) -> bool:
    """Whether ``text`` names layers by pattern (glob characters or ``type:``).

    Examples:
        >>> is_layer_pattern("layer4.*"), is_layer_pattern("type:Conv2d")
        (True, True)
        >>> is_layer_pattern("layer4.2.conv3")
        False
    """
    return text.startswith(TYPE_PREFIX) or not _GLOB_CHARACTERS.isdisjoint(text)


def expand_layer_patterns(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """Replace each layer pattern by the model's layers it matches, in the model's order.

    A pattern with ``*``, ``?`` or ``[...]`` is matched (case-sensitively, ``*`` crossing
    dots) against the dotted names of ``model.named_modules()``; ``type:NAME`` matches the
    modules whose class name matches ``NAME`` (itself a glob: ``type:Conv*``). Plain names
    pass through unchanged, and duplicates keep their first position.

    Args:
        model: The model whose layers are named.
        layers: Dotted names and patterns.

    Returns:
        Dotted layer names.

    Raises:
        LayerNotFoundError: A pattern matches no layer (the message shows names and types
            that do exist).

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
        >>> expand_layer_patterns(net, ["type:Conv2d"])
        ['0', '2']
        >>> expand_layer_patterns(net, ["1", "[0-2]"])
        ['1', '0', '2']
    """
    named = [(name, type(module).__name__) for name, module in model.named_modules() if name]
    out: list[str] = []
    for layer in layers:
        if not is_layer_pattern(layer):
            out.append(layer)
            continue
        if layer.startswith(TYPE_PREFIX):
            wanted = layer[len(TYPE_PREFIX) :]
            matches = [name for name, kind in named if fnmatchcase(kind, wanted)]
        else:
            matches = [name for name, _ in named if fnmatchcase(name, layer)]
        if not matches:
            raise LayerNotFoundError(_no_match_message(layer, named, model))
        out.extend(matches)
    return list(dict.fromkeys(out))


def _no_match_message(pattern: str, named: list[tuple[str, str]], model: nn.Module) -> str:
    if pattern.startswith(TYPE_PREFIX):
        kinds = sorted({kind for _, kind in named})
        close = difflib.get_close_matches(pattern[len(TYPE_PREFIX) :], kinds, n=3, cutoff=0.5)
        hint = f" Closest: {', '.join(close)}." if close else ""
        return (
            f"The pattern '{pattern}' matches no layer of the {type(model).__name__}.{hint} "
            f"Its layer types: {', '.join(kinds)}"
        )
    sample = [name for name, _ in named[:12]]
    more = f" ... ({len(named)} in all)" if len(named) > len(sample) else ""
    return (
        f"The pattern '{pattern}' matches no layer of the {type(model).__name__} ('*' also "
        f"crosses dots; names are case-sensitive). Its layers: {', '.join(sample)}{more}; "
        "list them with `neurolabel layers MODEL`"
    )
