"""The plugin manager: built-in plugins, installed plugins and a typed facade over ``pm.hook``."""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

from ..errors import NeurolabelError
from . import hookspecs
from .registry import Registries, Registry

if TYPE_CHECKING:
    import typer

#: Built-in plugins: ordinary modules registered exactly like a third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "neurolabel.adapters.model_sources",
    "neurolabel.adapters.packaged_models",
    "neurolabel.adapters.hook_extractor",
    "neurolabel.adapters.unit_maps",
    "neurolabel.adapters.captum_extractor",
    "neurolabel.adapters.captum_patchers",
    "neurolabel.adapters.captum_attribution",
    "neurolabel.backends.vocabularies",
    "neurolabel.backends.open_clip_scorer",
    "neurolabel.backends.classifier_scorer",
    "neurolabel.backends.color_scorer",
    "neurolabel.backends.text_embedding",
    "neurolabel.backends.composite_scorer",
    "neurolabel.backends.llm_vocabulary",
    "neurolabel.backends.vlm_describer",
    "neurolabel.backends.llm_summary",
    "neurolabel.plugin_core.evaluation.plugin",
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
    load: a comma-separated list of entry-point names (empty means none). A plugin that
    implements a hook neurolabel does not have (a misspelled ``register_scorer``), or
    declares arguments its hook does not pass, fails here with an error naming the plugin
    and the hook, instead of being silently ignored.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True  # also guards against a plugin that loads plugins while it is imported
    try:
        _load_all()
    except BaseException:
        _loaded = False  # the next call reports the same problem
        raise


def _load_all() -> None:
    for module_name in DEFAULT_PLUGINS:
        module = importlib.import_module(module_name)
        if not pm.is_registered(module):
            pm.register(module, name=module_name)
    allowed = os.environ.get(PLUGINS_ENV)
    try:
        if allowed is None:
            pm.load_setuptools_entrypoints("neurolabel")
        else:
            for name in {name.strip() for name in allowed.split(",") if name.strip()}:
                pm.load_setuptools_entrypoints("neurolabel", name=name)
    except pluggy.PluginValidationError as exc:
        # The module's own name: pluggy versions differ on whether the entry-point name is
        # still registered once validation failed (pluggy's message names it anyway).
        plugin_module = getattr(exc.plugin, "__name__", None) or repr(exc.plugin)
        raise NeurolabelError(
            f"The plugin module '{plugin_module}' does not fit neurolabel's hooks: {exc} "
            f"(leave it out with {PLUGINS_ENV}=the,plugins,to,load)"
        ) from None
    check_hooks()


def check_hooks(manager: pluggy.PluginManager | None = None) -> None:
    """Fail when a registered plugin implements a hook that does not exist.

    pluggy keeps such implementations without calling them (``check_pending`` finds
    them); this turns that into an error a plugin author can act on.

    Args:
        manager: The plugin manager (default: neurolabel's).
    """
    manager = manager or pm
    try:
        manager.check_pending()
    except pluggy.PluginValidationError:
        known = sorted(name for name in vars(hookspecs) if name.startswith("register_"))
        for hook_name, caller in vars(manager.hook).items():
            if hook_name.startswith("_") or caller.spec is not None:
                continue
            for impl in caller.get_hookimpls():
                if impl.optionalhook:
                    continue
                close = difflib.get_close_matches(hook_name, known, n=1)
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise NeurolabelError(
                    f"The plugin {_plugin_name(impl.plugin, manager)} implements "
                    f"'{hook_name}', which is not a neurolabel hook.{hint} Hooks: "
                    f"{', '.join(known)} (docs/hooks.md)"
                ) from None
        raise


def _plugin_name(plugin: Any, manager: pluggy.PluginManager | None = None) -> str:
    name = (manager or pm).get_name(plugin) if plugin is not None else None
    return f"'{name or getattr(plugin, '__name__', repr(plugin))}'"


class Plugins:
    """Typed facade over the untyped ``pm.hook``: one method per hook.

    Examples:
        >>> from neurolabel.plugin_core.plugins.manager import get_plugins
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
            call: Callable[..., Any] = impl.function
            call(register=registry.registrar(plugin_name))

    def registries(self) -> Registries:
        """Build fresh registries from every registered plugin (cheap: factories only)."""
        load_plugins()
        regs = Registries()
        self._collect("register_model_sources", regs.model_sources)
        self._collect("register_extractors", regs.extractors)
        self._collect("register_unit_maps", regs.unit_maps)
        self._collect("register_patchers", regs.patchers)
        self._collect("register_vocabularies", regs.vocabularies)
        self._collect("register_scorers", regs.scorers)
        self._collect("register_summarizers", regs.summarizers)
        self._collect("register_evaluators", regs.evaluators)
        return regs

    def register_commands(self, cli: typer.Typer) -> None:
        """Let every plugin add CLI commands to ``cli``."""
        load_plugins()
        self.manager.hook.register_commands(cli=cli)

    def distributions(self) -> dict[str, str]:
        """``plugin name -> "distribution version"`` of the plugins installed as packages."""
        load_plugins()
        out = {}
        for plugin, dist in self.manager.list_plugin_distinfo():
            name = self.manager.get_name(plugin) or repr(plugin)
            out[name] = f"{dist.project_name} {dist.version}"
        return out

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
