"""Naming layers: dotted names, patterns (``layer3.*.conv2``, ``type:Conv2d``), modules.

Dissecting a whole network means dozens of layers (ResNet-50's 53 convolutions hold its
~26,500 channels); a pattern names them without listing each one. A library user may also
hand over the modules themselves, or Captum layer attribution objects
(:func:`layer_names`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

from ..errors import LayerNotFoundError, NeurolabelError

if TYPE_CHECKING:
    from torch import nn

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
        >>> from torch import nn
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


def layer_names(model: nn.Module, layers: Any) -> list[str]:
    """Dotted names of layers given by name, as modules, or as Captum attribution objects.

    Anything with a ``layer`` attribute holding a module (or a list of modules) counts as a
    layer attribution object: Captum's ``LayerActivation``, ``LayerGradCam``,
    ``LayerConductance``, ``NeuronGradient``... Modules are found by identity in
    ``model.named_modules()``.

    Args:
        model: The model the layers belong to.
        layers: One layer or a sequence of them: ``str``, ``nn.Module`` or an object with
            a ``layer`` attribute.

    Returns:
        The dotted names, in order, without duplicates.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> layer_names(net, [net[1], "0"])
        ['1', '0']
    """
    from torch import nn

    if isinstance(layers, (str, nn.Module)) or hasattr(layers, "layer"):
        layers = [layers]
    names_of: dict[int, str] | None = None
    out: list[str] = []
    for item in layers:
        if isinstance(item, str):
            out.append(item)
            continue
        # A module is itself, even when it has a `.layer` attribute of its own.
        held = item if isinstance(item, nn.Module) else getattr(item, "layer", item)
        modules = list(held) if isinstance(held, (list, tuple)) else [held]
        if not modules or not all(isinstance(m, nn.Module) for m in modules):
            raise NeurolabelError(
                f"Cannot use a {type(item).__name__} as a layer: give a dotted name, an "
                "nn.Module of the model, or a Captum layer attribution object (with .layer)"
            )
        if names_of is None:
            names_of = {id(m): name for name, m in model.named_modules()}
        for module in modules:
            name = names_of.get(id(module))
            if name is None:
                raise LayerNotFoundError(
                    f"The {type(module).__name__} given as a layer is not a submodule of the "
                    f"{type(model).__name__} being explained (a copy, or another model's?)"
                )
            if not name:
                raise NeurolabelError(
                    "The whole model was given as a layer; name one of its layers (its last "
                    "one for the outputs), e.g. with `neurolabel layers`"
                )
            out.append(name)
    return list(dict.fromkeys(out))
