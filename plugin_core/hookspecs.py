"""Hook specifications: every extension point is a ``register_*`` callback hook."""

from __future__ import annotations

from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("neurolabel")
hookimpl = pluggy.HookimplMarker("neurolabel")


@hookspec
def register_model_sources(register: Any) -> None:
    """Named ways to load a target model: torchvision:, timm:, file:, python:, ..."""


@hookspec
def register_extractors(register: Any) -> None:
    """Ways to read a layer's activations (forward hooks, Captum, ...)."""


@hookspec
def register_patchers(register: Any) -> None:
    """Ways to locate the region of an exemplar that drove a neuron: Grad-CAM, gradients, ..."""


@hookspec
def register_vocabularies(register: Any) -> None:
    """Concept vocabulary providers: imagenet, words:N, file:PATH, ..."""


@hookspec
def register_scorers(register: Any) -> None:
    """Vision-language scorers: open_clip:MODEL/TAG, classifier-grounded, ..."""


@hookspec
def register_summarizers(register: Any) -> None:
    """Ways to write one sentence per neuron from its ranked concepts: llm:MODEL, ..."""


@hookspec
def register_evaluators(register: Any) -> None:
    """Explanation metrics: accuracy, ..."""


@hookspec
def register_commands(cli: Any) -> None:
    """Extra CLI commands, added to the typer application ``cli``."""
