"""neurolabel: natural-language explanations of the neurons of deep vision networks.

Examples:
    >>> from neurolabel import NeuronLabeler  # doctest: +SKIP
    >>> labeler = NeuronLabeler("torchvision:resnet18", layers=["layer4"],
    ...                         scorer="open_clip:ViT-B-32/laion2b_s34b_b79k")  # doctest: +SKIP
    >>> result = labeler.run("images/")  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("neurolabel")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "NeuronLabeler",
    "LabelingResult",
    "NeuronExplanation",
    "Vocabulary",
    "Spec",
    "hookimpl",
    "__version__",
]

if TYPE_CHECKING:
    from .plugin_core.hookspecs import hookimpl
    from .plugin_core.labeler import NeuronLabeler
    from .plugin_core.result import LabelingResult, NeuronExplanation
    from .plugin_core.spec import Spec
    from .plugin_core.vocabulary import Vocabulary

_LAZY = {
    "NeuronLabeler": "neurolabel.plugin_core.labeler",
    "LabelingResult": "neurolabel.plugin_core.result",
    "NeuronExplanation": "neurolabel.plugin_core.result",
    "Vocabulary": "neurolabel.plugin_core.vocabulary",
    "Spec": "neurolabel.plugin_core.spec",
    "hookimpl": "neurolabel.plugin_core.hookspecs",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `neurolabel --help` does not import torch-heavy modules.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'neurolabel' has no attribute {name!r}")
