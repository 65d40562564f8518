"""The plugin boundary: hooks, the plugin manager, registries, specs, contracts, resolution.

Everything a plugin author needs is importable from here: ``hookimpl`` and the typed
``Register`` callback of :mod:`.registry`, the contracts of :mod:`.contracts` (what each
registry's factories build), :class:`.spec.Spec` (the ``NAME[:ARGUMENT][?key=value]``
grammar), :class:`.context.ResolveContext` (what every factory receives) and the plugin
manager of :mod:`.manager`. :mod:`.resolve` turns specs into objects through the registries.
Nothing here imports torch.
"""

from .context import ResolveContext
from .contracts import (
    ActivationReader,
    ConceptScorer,
    ConsumingReader,
    Describer,
    DescribeRequest,
    EmbeddingScorer,
    Evaluator,
    Extractor,
    ImageTransform,
    LayerInfo,
    LoadedModel,
    Patcher,
    Scorer,
    Summarizer,
    UnitMap,
    VocabularyProvider,
    iter_batches,
)
from .hookspecs import hookimpl, hookspec
from .manager import DEFAULT_PLUGINS, PLUGINS_ENV, Plugins, get_plugins, load_plugins, pm
from .registry import Entry, Register, Registries, Registry
from .resolve import build_context
from .spec import Spec

__all__ = [
    "DEFAULT_PLUGINS",
    "PLUGINS_ENV",
    "ActivationReader",
    "ConceptScorer",
    "ConsumingReader",
    "DescribeRequest",
    "Describer",
    "EmbeddingScorer",
    "Entry",
    "Evaluator",
    "Extractor",
    "ImageTransform",
    "LayerInfo",
    "LoadedModel",
    "Patcher",
    "Plugins",
    "Register",
    "Registries",
    "Registry",
    "ResolveContext",
    "Scorer",
    "Spec",
    "Summarizer",
    "UnitMap",
    "VocabularyProvider",
    "build_context",
    "get_plugins",
    "hookimpl",
    "hookspec",
    "iter_batches",
    "load_plugins",
    "pm",
]
