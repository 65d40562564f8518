"""neurolabel: natural-language explanations of the neurons of deep vision networks.

The public API is :data:`__all__` (docs/api.md lists it with the documented modules for
plugin authors). Names load on first use, so ``import neurolabel`` and the CLI start fast.

Examples:
    >>> from neurolabel import LabelingSettings, NeuronLabeler
    >>> LabelingSettings(top_k=5).top_k
    5
    >>> NeuronLabeler.__module__
    'neurolabel.plugin_core.pipeline.labeler'
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = metadata.version("neurolabel")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    # labeling
    "NeuronLabeler": "neurolabel.plugin_core.pipeline.labeler",
    "LabelingSettings": "neurolabel.plugin_core.pipeline.settings",
    # results and data
    "LabelingResult": "neurolabel.plugin_core.data.result",
    "NeuronExplanation": "neurolabel.plugin_core.data.result",
    "Exemplar": "neurolabel.plugin_core.data.result",
    "Vocabulary": "neurolabel.plugin_core.data.vocabulary",
    "Preprocessing": "neurolabel.plugin_core.data.preprocessing",
    "bundled_photographs": "neurolabel.plugin_core.data.bundled_images",
    # reports
    "write_html_report": "neurolabel.plugin_core.reporting.html_report",
    # plugins and resolution
    "hookimpl": "neurolabel.plugin_core.plugins.hookspecs",
    "Register": "neurolabel.plugin_core.plugins.registry",
    "Spec": "neurolabel.plugin_core.plugins.spec",
    "ResolveContext": "neurolabel.plugin_core.plugins.context",
    "build_context": "neurolabel.plugin_core.plugins.resolve",
    "LoadedModel": "neurolabel.plugin_core.plugins.contracts",
    "resolve_model": "neurolabel.plugin_core.plugins.resolve",
    "resolve_vocabulary": "neurolabel.plugin_core.plugins.resolve",
    # errors
    "NeurolabelError": "neurolabel.plugin_core.errors",
    "SpecError": "neurolabel.plugin_core.errors",
    "UnknownNameError": "neurolabel.plugin_core.errors",
    "InvalidSettingError": "neurolabel.plugin_core.errors",
    "LayerNotFoundError": "neurolabel.plugin_core.errors",
    "MissingExtraError": "neurolabel.plugin_core.errors",
    "EmptyInputError": "neurolabel.plugin_core.errors",
}

__all__ = [
    "NeuronLabeler",
    "LabelingSettings",
    "LabelingResult",
    "NeuronExplanation",
    "Exemplar",
    "Vocabulary",
    "Preprocessing",
    "bundled_photographs",
    "write_html_report",
    "hookimpl",
    "Register",
    "Spec",
    "ResolveContext",
    "build_context",
    "LoadedModel",
    "resolve_model",
    "resolve_vocabulary",
    "NeurolabelError",
    "SpecError",
    "UnknownNameError",
    "InvalidSettingError",
    "LayerNotFoundError",
    "MissingExtraError",
    "EmptyInputError",
    "__version__",
]

if TYPE_CHECKING:
    from .plugin_core.data.bundled_images import bundled_photographs
    from .plugin_core.data.preprocessing import Preprocessing
    from .plugin_core.data.result import Exemplar, LabelingResult, NeuronExplanation
    from .plugin_core.data.vocabulary import Vocabulary
    from .plugin_core.errors import (
        EmptyInputError,
        InvalidSettingError,
        LayerNotFoundError,
        MissingExtraError,
        NeurolabelError,
        SpecError,
        UnknownNameError,
    )
    from .plugin_core.pipeline.labeler import NeuronLabeler
    from .plugin_core.pipeline.settings import LabelingSettings
    from .plugin_core.plugins.context import ResolveContext
    from .plugin_core.plugins.contracts import LoadedModel
    from .plugin_core.plugins.hookspecs import hookimpl
    from .plugin_core.plugins.registry import Register
    from .plugin_core.plugins.resolve import build_context, resolve_model, resolve_vocabulary
    from .plugin_core.plugins.spec import Spec
    from .plugin_core.reporting.html_report import write_html_report


def __getattr__(name: str) -> Any:
    # Lazy so that `neurolabel --help` does not import torch-heavy modules.
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'neurolabel' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
