"""The plugin manager: built-in plugins, installed plugins and a typed facade over ``pm.hook``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .registry import Registry

if TYPE_CHECKING:
    from .describe import Summarizer
    from .patches import Patcher
    from .protocols import Evaluator, Extractor, LoadedModel, Scorer, VocabularyProvider

#: Built-in plugins: ordinary modules registered exactly like a third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "neurolabel.adapters.model_sources",
    "neurolabel.adapters.packaged_models",
    "neurolabel.adapters.hook_extractor",
    "neurolabel.adapters.captum_extractor",
    "neurolabel.adapters.captum_patchers",
    "neurolabel.adapters.captum_attribution",
    "neurolabel.backends.vocabularies",
    "neurolabel.backends.open_clip_scorer",
    "neurolabel.backends.classifier_scorer",
    "neurolabel.backends.color_scorer",
    "neurolabel.backends.composite_scorer",
    "neurolabel.backends.demo",
    "neurolabel.backends.llm_vocabulary",
    "neurolabel.backends.vlm_describer",
    "neurolabel.backends.llm_summary",
    "neurolabel.plugin_core.builtin_evaluators",
)

#: Comma-separated names of the installed (entry-point) plugins to load; unset loads all,
#: an empty value loads none. Built-in plugins always load.
PLUGINS_ENV = "NEUROLABEL_PLUGINS"

pm = pluggy.PluginManager("neurolabel")
pm.add_hookspecs(hookspecs)

_loaded = False


def load_plugins() -> None:
    """Register the built-in plugins and the installed ones (idempotent).

    The environment variable ``NEUROLABEL_PLUGINS`` restricts which installed plugins
    load: a comma-separated list of entry-point names (empty means none).
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        if not pm.is_registered(module):
            pm.register(module, name=module_name)
    allowed = os.environ.get(PLUGINS_ENV)
    if allowed is None:
        pm.load_setuptools_entrypoints("neurolabel")
        return
    wanted = {name.strip() for name in allowed.split(",") if name.strip()}
    for name in wanted:
        pm.load_setuptools_entrypoints("neurolabel", name=name)


@dataclass
class Registries:
    """Every registry, filled by calling each ``register_*`` hook once."""

    model_sources: Registry[LoadedModel] = field(default_factory=lambda: Registry("model source"))
    extractors: Registry[Extractor] = field(default_factory=lambda: Registry("extractor"))
    patchers: Registry[Patcher] = field(default_factory=lambda: Registry("patcher"))
    vocabularies: Registry[VocabularyProvider] = field(
        default_factory=lambda: Registry("vocabulary")
    )
    scorers: Registry[Scorer] = field(default_factory=lambda: Registry("scorer"))
    summarizers: Registry[Summarizer] = field(default_factory=lambda: Registry("summarizer"))
    evaluators: Registry[Evaluator] = field(default_factory=lambda: Registry("evaluator"))


def _registrar(registry: Registry[Any], plugin_name: str) -> Callable[..., None]:
    def register(name: str, factory: Callable[..., Any], description: str = "") -> None:
        registry.add(name, factory, description=description, plugin=plugin_name)

    return register


class Plugins:
    """Typed facade over the untyped ``pm.hook``: one method per hook.

    Examples:
        >>> from neurolabel.plugin_core.plugins import get_plugins
        >>> "imagenet" in get_plugins().registries().vocabularies
        True
    """

    def __init__(self, manager: pluggy.PluginManager) -> None:
        self.manager = manager

    def _collect(self, hook_name: str, registry: Registry[Any]) -> None:
        hook = getattr(self.manager.hook, hook_name)
        # Call each implementation separately so every entry records which plugin made it.
        for impl in hook.get_hookimpls():
            plugin_name = self.manager.get_name(impl.plugin) or repr(impl.plugin)
            impl.function(register=_registrar(registry, plugin_name))

    def registries(self) -> Registries:
        """Build fresh registries from every registered plugin (cheap: factories only)."""
        load_plugins()
        regs = Registries()
        self._collect("register_model_sources", regs.model_sources)
        self._collect("register_extractors", regs.extractors)
        self._collect("register_patchers", regs.patchers)
        self._collect("register_vocabularies", regs.vocabularies)
        self._collect("register_scorers", regs.scorers)
        self._collect("register_summarizers", regs.summarizers)
        self._collect("register_evaluators", regs.evaluators)
        return regs

    def register_commands(self, cli: Any) -> None:
        """Let every plugin add CLI commands to ``cli``."""
        load_plugins()
        self.manager.hook.register_commands(cli=cli)

    def plugin_names(self) -> list[str]:
        """Names of the registered plugins, with the distribution for installed ones."""
        load_plugins()
        dists = {id(p): d for p, d in self.manager.list_plugin_distinfo()}
        out = []
        for plugin in self.manager.get_plugins():
            name = self.manager.get_name(plugin) or repr(plugin)
            dist = dists.get(id(plugin))
            out.append(f"{name} ({dist.project_name} {dist.version})" if dist else name)
        return sorted(out)


def get_plugins() -> Plugins:
    """Return the facade over the process-wide plugin manager."""
    return Plugins(pm)
