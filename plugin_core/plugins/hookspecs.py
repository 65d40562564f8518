"""Hook specifications: every extension point is a ``register_*`` callback hook.

Each hook receives ``register``, a :class:`~.registry.Register` typed by what its factories build:
``register(name, factory, description="")`` records ``factory(spec, context) -> thing``
under ``name``, so that the spec ``name:ARGUMENT?key=value`` builds it. docs/hooks.md
documents every hook; tests/test_meta.py fails when one lacks documentation or a test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import typer

    from .contracts import (
        ConceptScorer,
        Describer,
        EmbeddingScorer,
        Evaluator,
        Extractor,
        LoadedModel,
        Patcher,
        Summarizer,
        UnitMap,
        VocabularyProvider,
    )
    from .registry import Register

hookspec = pluggy.HookspecMarker("neurolabel")
hookimpl = pluggy.HookimplMarker("neurolabel")


@hookspec
def register_model_sources(register: Register[LoadedModel]) -> None:
    """Named ways to load a target model: torchvision:, timm:, file:, python:, ..."""


@hookspec
def register_extractors(register: Register[Extractor]) -> None:
    """Ways to read a layer's activations (forward hooks, Captum, ...)."""


@hookspec
def register_unit_maps(register: Register[UnitMap]) -> None:
    """What a unit is: channels (default), sparse-autoencoder latents, directions, ..."""


@hookspec
def register_patchers(register: Register[Patcher]) -> None:
    """Ways to locate the region of an exemplar that drove a neuron: Grad-CAM, gradients, ..."""


@hookspec
def register_vocabularies(register: Register[VocabularyProvider]) -> None:
    """Concept vocabulary providers: imagenet, words:N, file:PATH, ..."""


@hookspec
def register_scorers(register: Register[EmbeddingScorer | ConceptScorer | Describer]) -> None:
    """Vision-language scorers: open_clip:MODEL/TAG, classifier-grounded, ..."""


@hookspec
def register_summarizers(register: Register[Summarizer]) -> None:
    """Ways to write one sentence per neuron from its ranked concepts: llm:MODEL, ..."""


@hookspec
def register_evaluators(register: Register[Evaluator]) -> None:
    """Explanation metrics: accuracy, ..."""


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Extra CLI commands, added to the typer application ``cli``."""
