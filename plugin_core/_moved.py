"""The core's old flat module paths, kept importable for one release (until 0.3).

``import neurolabel.plugin_core.labeler`` (or ``from ... import X``) still works: the
import system finds an alias module whose names come from the modules they moved to, and
a :class:`FutureWarning` names the new path. New code imports the new paths, or the
public API of ``neurolabel`` (docs/api.md).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from collections.abc import Sequence
from typing import Any

_CORE = "neurolabel.plugin_core."

#: Old module -> the modules its public names live in now (the first is its new home).
MOVED: dict[str, tuple[str, ...]] = {
    "atomic": ("data.atomic",),
    "images": ("data.images",),
    "holdout": ("data.holdout",),
    "layer_patterns": ("data.layer_patterns",),
    "preprocessing": ("data.preprocessing",),
    "result": ("data.result",),
    "vocabulary": ("data.vocabulary",),
    "distributed": ("runtime.distributed",),
    "memory": ("runtime.memory",),
    "progress": ("runtime.progress",),
    "hookspecs": ("plugins.hookspecs",),
    "registry": ("plugins.registry",),
    "spec": ("plugins.spec",),
    "protocols": ("plugins.contracts", "plugins.context", "plugins.resolve"),
    "context": ("plugins.context", "plugins.resolve"),
    "labeler": (
        "pipeline.labeler",
        "pipeline.settings",
        "pipeline.evidence",
        "plugins.resolve",
        "data.layer_patterns",
    ),
    "exemplar_pass": ("pipeline.exemplar_pass",),
    "topk": ("pipeline.topk",),
    "activation_cache": ("pipeline.activation_cache",),
    "patches": ("pipeline.patches", "plugins.contracts"),
    "scoring_plan": ("pipeline.scoring_plan",),
    "patch_scoring": ("pipeline.patch_scoring",),
    "image_sample": ("pipeline.image_sample",),
    "aggregation": ("pipeline.aggregation",),
    "describe": ("pipeline.describe", "plugins.contracts", "plugins.resolve"),
    "metrics": ("evaluation.metrics",),
    "faithfulness": ("evaluation.faithfulness",),
    "ablation": ("evaluation.ablation",),
    "builtin_evaluators": (
        "evaluation.plugin",
        "evaluation.accuracy",
        "evaluation.layer_profile",
    ),
    "report": ("reporting.terminal",),
    "html_report": ("reporting.html_report",),
    "report_plots": ("reporting.plots",),
    "metric_tables": ("reporting.tables",),
    "thumbnails": ("reporting.thumbnails",),
    "heatmaps": ("reporting.heatmaps",),
    "layer_summary": ("reporting.layer_summary",),
}


class _AliasLoader(importlib.abc.Loader):
    """Makes an alias module that takes each name from the first new module having it."""

    def __init__(self, old: str, targets: Sequence[str]) -> None:
        self.old = old
        self.targets = tuple(_CORE + target for target in targets)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"Moved to {self.targets[0]} (alias until 0.3).")
        targets = self.targets

        def __getattr__(name: str) -> Any:
            for target in targets:
                module = importlib.import_module(target)
                if hasattr(module, name):
                    return getattr(module, name)
            raise AttributeError(f"module {spec.name!r} has no attribute {name!r}")

        module.__getattr__ = __getattr__  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        warnings.warn(
            f"{module.__name__} moved to {self.targets[0]}; the old path goes away in "
            f"neurolabel 0.3 (docs/api.md lists the public imports)",
            FutureWarning,
            stacklevel=_importer_level(),
        )


class _MovedFinder(importlib.abc.MetaPathFinder):
    """Finds the alias of an old core module path, and nothing else."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_CORE):
            return None
        old = fullname[len(_CORE) :]
        if old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(old, MOVED[old]))


def _importer_level() -> int:
    """The stack level of the code that wrote the import, past importlib's own frames."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and (
        frame.f_code.co_filename.startswith("<frozen importlib") or frame.f_globals is globals()
    ):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (importing the core does it)."""
    if not any(isinstance(finder, _MovedFinder) for finder in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
