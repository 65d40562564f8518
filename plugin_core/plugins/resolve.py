"""From what a user gives (a spec string, an object, a saved result) to the thing it names.

:func:`build_context` makes the context every resolution goes through. Every resolution
through the registries lives here, so the pipeline, the evaluators, the CLI and the
adapters turn a model spec, a vocabulary spec, a describer or a summarizer into an object
the same way, and reload a saved result's model with one helper (:func:`load_result_model`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..data.vocabulary import Vocabulary
from ..errors import NeurolabelError, SpecError
from .context import ResolveContext, default_cache_dir, resolve_device
from .contracts import Describer, LoadedModel, Summarizer, UnitMap
from .manager import get_plugins
from .spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..data.preprocessing import Preprocessing
    from ..data.result import LabelingResult


#: The unit map that leaves channels as they are.
CHANNELS = "channels"


def build_context(
    device: str | torch.device = "auto", cache_dir: str | Path | None = None, **extra: Any
) -> ResolveContext:
    """Make a context with fresh registries from every loaded plugin.

    Args:
        device: ``auto``, ``cpu``, ``cuda``...
        cache_dir: Cache folder; default :func:`default_cache_dir`.
        **extra: Free-form settings for factories (e.g. ``trust_pickle=True``).

    Returns:
        A :class:`ResolveContext`.

    Examples:
        >>> ctx = build_context("cpu")
        >>> ctx.device.type
        'cpu'
    """
    return ResolveContext(
        device=resolve_device(device),
        registries=get_plugins().registries(),
        cache_dir=Path(cache_dir) if cache_dir else default_cache_dir(),
        extra=dict(extra),
    )


def as_loaded(
    model: nn.Module | LoadedModel, preprocessing: Preprocessing | None = None
) -> LoadedModel:
    """Wrap a bare module in a :class:`LoadedModel` (ImageNet preprocessing by default).

    Args:
        model: A module or a LoadedModel (returned as is, or as a copy with
            ``preprocessing`` when one is given; the caller's object is not changed).
        preprocessing: The input preprocessing.

    Returns:
        The LoadedModel, in eval mode.

    Examples:
        >>> from torch import nn
        >>> loaded = as_loaded(nn.Linear(2, 2))
        >>> loaded.name, loaded.preprocessing.crop_size, loaded.model.training
        ('Linear', (224, 224), False)
    """
    from torch import nn

    from ..data.preprocessing import Preprocessing

    if isinstance(model, LoadedModel):
        loaded = (
            model
            if preprocessing is None
            else dataclasses.replace(model, preprocessing=preprocessing)
        )
    elif isinstance(model, nn.Module):
        loaded = LoadedModel(model, preprocessing or Preprocessing(), type(model).__name__)
    else:
        raise NeurolabelError(
            f"Cannot use a {type(model).__name__} as the model: give a spec such as "
            "'torchvision:resnet18', an nn.Module, or a LoadedModel"
        )
    loaded.model.eval()
    return loaded


def resolve_model(
    model: str | nn.Module | LoadedModel,
    ctx: ResolveContext,
    preprocessing: Preprocessing | None = None,
) -> LoadedModel:
    """A model spec (through the model sources), a module or a LoadedModel, on ``ctx.device``.

    Args:
        model: ``torchvision:resnet18``, an ``nn.Module`` (ImageNet preprocessing unless
            ``preprocessing`` is given) or a :class:`LoadedModel`.
        ctx: Resolve context (its model sources and device).
        preprocessing: Replaces the model's own preprocessing when given.

    Returns:
        The :class:`LoadedModel`, in eval mode, on the context's device.

    Examples:
        >>> from neurolabel import build_context
        >>> loaded = resolve_model("torchvision:resnet18?weights=none", build_context("cpu"))
        >>> type(loaded.model).__name__, loaded.preprocessing.crop_size, loaded.model.training
        ('ResNet', (224, 224), False)
    """
    if isinstance(model, str):
        loaded = ctx.registries.model_sources.resolve(model, ctx)
        if preprocessing is not None:
            loaded = dataclasses.replace(loaded, preprocessing=preprocessing)
    else:
        loaded = as_loaded(model, preprocessing)
    loaded.model.eval().to(ctx.device)
    return loaded


def result_preprocessing(result: LabelingResult) -> Preprocessing | None:
    """The preprocessing a labeling result was computed with, or None if it does not say.

    Args:
        result: A :class:`~neurolabel.plugin_core.data.result.LabelingResult`.

    Returns:
        The :class:`Preprocessing` stored in ``result.model["preprocessing"]``.
    """
    from ..data.preprocessing import Preprocessing

    data = result.model.get("preprocessing") or {}
    if not data:
        return None
    return Preprocessing.from_dict(data)


def load_result_model(
    result: LabelingResult,
    ctx: ResolveContext,
    model: str | nn.Module | LoadedModel | None = None,
    hint: str = "give the model's spec",
) -> LoadedModel:
    """The model a saved result labeled, ready to run again (evaluators, attribution).

    Without ``model``, the result's model name is resolved as a spec; a model that was
    given as a module has no spec, and the error says how to pass one (``hint``). The
    result's stored preprocessing replaces the model source's, so images are prepared
    exactly as they were when the result was made.

    Args:
        result: The labeling result.
        ctx: Resolve context (model sources, device).
        model: The model to use instead: a spec, a module or a LoadedModel.
        hint: How the caller's user passes a model (``pass faithfulness?model=SPEC``).

    Returns:
        The :class:`LoadedModel`, in eval mode, on the context's device.
    """
    stored = result_preprocessing(result)
    if model is not None:
        if isinstance(model, LoadedModel):  # the caller's own preprocessing wins
            return resolve_model(model, ctx)
        return resolve_model(model, ctx, stored)
    name = str(result.model.get("name", ""))
    labeled = result.model.get("weights")
    # A network labeled with this context (``explain --metric``, or a module given to the
    # library) is the one to evaluate.
    for loaded in ctx.extra.get("loaded_models", {}).get(name, []):
        if labeled is None or loaded.fingerprint() == labeled:
            return loaded
    if name not in ctx.registries.model_sources and ":" not in name:
        raise NeurolabelError(
            f"The result's model '{name}' cannot be loaded from its name: it is not a model "
            f"spec (it was given as a module); {hint}"
        )
    try:
        loaded = resolve_model(name, ctx, stored)
    except SpecError as exc:
        raise NeurolabelError(
            f"The result's model '{name}' cannot be loaded from its name ({exc}); {hint}"
        ) from None
    if labeled is not None and loaded.fingerprint() != labeled:
        raise NeurolabelError(
            f"The model '{name}' loaded now is not the network this result labeled: its "
            "weights differ (a spec with random weights, ?weights=none or "
            "?pretrained=false, draws new ones at every load; or the weights file changed). "
            "Figures on another network would say nothing about these labels: evaluate in "
            "the run that labeled it (neurolabel explain ... --metric SPEC), or label a model "
            "whose weights are saved (file:PATH) and evaluate that one"
        )
    return loaded


def resolve_vocabulary(
    vocabulary: str | Vocabulary | Sequence[str], ctx: ResolveContext
) -> Vocabulary:
    """Build a vocabulary from a spec (``imagenet+words:5000``), a list, or a Vocabulary.

    ``+`` joins vocabularies; it only splits where the next part starts with a registered
    vocabulary name, so a file path containing ``+`` still works.

    Args:
        vocabulary: Spec string, list of concepts, or :class:`Vocabulary`.
        ctx: Resolve context (its vocabulary registry).

    Returns:
        The normalized, non-empty :class:`Vocabulary`.

    Examples:
        >>> from neurolabel import build_context
        >>> len(resolve_vocabulary("imagenet+colors", build_context("cpu"))) > 1000
        True
    """
    if isinstance(vocabulary, Vocabulary):
        return vocabulary.require_nonempty()
    if not isinstance(vocabulary, str):
        return Vocabulary.build(list(vocabulary), source="list").require_nonempty()
    registry = ctx.registries.vocabularies
    parts: list[str] = []
    for piece in vocabulary.split("+"):
        name = Spec.parse(piece).name if piece.strip() else ""
        if parts and name not in registry:
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    merged: Vocabulary | None = None
    for part in parts:
        vocab = registry.resolve(part, ctx)()
        merged = vocab if merged is None else merged.union(vocab)
    if merged is None:
        raise SpecError("Empty vocabulary spec: name one, e.g. imagenet or words:5000")
    return merged.require_nonempty()


def resolve_describer(spec: str | Describer, ctx: ResolveContext) -> Describer:
    """A describer object, or one resolved through the scorer registry (``litellm:MODEL``).

    Args:
        spec: A describer, or its spec.
        ctx: Resolve context (its scorer registry).

    Returns:
        The :class:`~neurolabel.plugin_core.plugins.contracts.Describer`.
    """
    describer = ctx.registries.scorers.resolve(spec, ctx) if isinstance(spec, str) else spec
    if not isinstance(describer, Describer):
        raise NeurolabelError(
            f"'{getattr(describer, 'name', spec)}' is not a describer (it has no describe(), "
            "num_patches, num_candidates and weight); give a chat-VLM spec such as "
            "litellm:openai/gpt-4o-mini"
        )
    return describer


def resolve_summarizer(spec: str | Summarizer, ctx: ResolveContext) -> Summarizer:
    """A summarizer object, or one from a spec; a bare model name means ``llm:MODEL``.

    Args:
        spec: A summarizer, its spec, or a litellm model name.
        ctx: Resolve context (its summarizer registry).

    Returns:
        The :class:`~neurolabel.plugin_core.plugins.contracts.Summarizer`.

    Examples:
        >>> from neurolabel import build_context
        >>> resolve_summarizer("openai/gpt-4o-mini", build_context("cpu")).name
        'llm:openai/gpt-4o-mini'
    """
    summarizer: Any
    if not isinstance(spec, str):
        summarizer = spec
    else:
        registry = ctx.registries.summarizers
        if Spec.parse(spec).name not in registry:
            spec = f"llm:{spec}"
        summarizer = registry.resolve(spec, ctx)
    if not isinstance(summarizer, Summarizer):
        raise NeurolabelError(f"{summarizer!r} is not a summarizer: it has no summarize()")
    return summarizer


def build_unit_map(
    units_from: str | UnitMap,
    ctx: ResolveContext,
    record: dict[str, Any] | None = None,
    loaded: LoadedModel | None = None,
) -> UnitMap:
    """Resolve a unit-map spec (or take the object), restore what a result recorded of it
    (a fitted map) and let it read ``loaded`` (attention heads)."""
    unit_map = (
        ctx.registries.unit_maps.resolve(units_from, ctx)
        if isinstance(units_from, str)
        else units_from
    )
    restore = getattr(unit_map, "restore", None)
    if record and callable(restore):
        restore(record)
    bind = getattr(unit_map, "bind", None)
    if loaded is not None and callable(bind):
        bind(loaded)
    return unit_map


def result_unit_map(
    result: Any, ctx: ResolveContext, loaded: LoadedModel | None = None
) -> UnitMap | None:
    """The unit map a :class:`~neurolabel.plugin_core.data.result.LabelingResult` was
    labeled with (fitted maps restored from the result), or None for channels."""
    units_from = result.settings.get("units_from")
    if not isinstance(units_from, str) or units_from == CHANNELS:
        return None
    return build_unit_map(units_from, ctx, result.settings.get("unit_map"), loaded)


#: The text side used when a result's scorer embeds no text (``find``, ``compare``).
DEFAULT_TEXT = "text"


def resolve_text_side(
    result: LabelingResult | None, ctx: ResolveContext, text: str | None = None
) -> tuple[Any, str]:
    """The text embedder that compares a result's concepts with other texts.

    Args:
        result: The result whose scorer's text side is wanted (None: ``text`` only).
        ctx: Resolve context.
        text: A scorer spec to use instead (``--text``).

    Returns:
        ``(scorer, spec)``: an object with ``encode_texts`` and the spec it came from,
        which the commands print (the result's scorer when it embeds texts, else ``text``,
        the packaged sentence embedder).
    """
    spec = text or (result.settings.get("scorer") if result is not None else None)
    if not text and result is not None and result.settings.get("scorer_embeds_texts") is False:
        spec = None  # recorded at labeling: no need to load the scorer to learn it
    if isinstance(spec, str) and spec.strip():
        # A scorer this process already built (the labeler's) is reused, not loaded again.
        built = ctx.extra.get("scorers", {}).get(spec)
        scorer = built if built is not None else ctx.registries.scorers.resolve(spec, ctx)
        if callable(getattr(scorer, "encode_texts", None)):
            return scorer, spec
        if text:
            raise NeurolabelError(
                f"--text {text}: this scorer embeds no text; use an embedding scorer "
                f"(classifier, open_clip:MODEL) or {DEFAULT_TEXT}"
            )
    return ctx.registries.scorers.resolve(DEFAULT_TEXT, ctx), DEFAULT_TEXT
