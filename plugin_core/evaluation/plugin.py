"""The built-in evaluator plugin: registers ``accuracy``, ``layer-profile``, ``faithfulness``,
``cosy`` and ``ablation`` through ``register_evaluators``, like any third-party plugin would."""

from __future__ import annotations

from ..plugins.context import ResolveContext
from ..plugins.contracts import Evaluator
from ..plugins.hookspecs import hookimpl
from ..plugins.registry import Register
from ..plugins.spec import Spec
from .accuracy import AccuracyEvaluator
from .layer_profile import LayerProfileEvaluator


def _accuracy(spec: Spec, ctx: ResolveContext) -> AccuracyEvaluator:
    spec.check_options({"ground_truth", "text"})
    return AccuracyEvaluator(spec.option("ground_truth") or spec.argument, spec.option("text"))


def _layer_profile(spec: Spec, ctx: ResolveContext) -> LayerProfileEvaluator:
    spec.check_options({"vocabulary"})
    return LayerProfileEvaluator(spec.option("vocabulary") or spec.argument)


def _ablation(spec: Spec, ctx: ResolveContext) -> Evaluator:
    from .ablation import AblationEvaluator

    return AblationEvaluator(spec)


def _cosy(spec: Spec, ctx: ResolveContext) -> Evaluator:
    from .cosy import CosyEvaluator

    return CosyEvaluator(spec)


def _faithfulness(spec: Spec, ctx: ResolveContext) -> Evaluator:
    from .faithfulness import FaithfulnessEvaluator

    return FaithfulnessEvaluator(spec)


@hookimpl
def register_evaluators(register: Register[Evaluator]) -> None:
    register(
        "layer-profile",
        _layer_profile,
        description="share of concept categories (color, object, ...) among each layer's labels",
    )
    register(
        "ablation",
        _ablation,
        description="zero the units labeled like a class: drop vs random units (causal test)",
    )
    register(
        "accuracy",
        _accuracy,
        description="top-1/top-5 exact match and label cosine vs ground truth (CLIP-Dissect's)",
    )
    register(
        "cosy",
        _cosy,
        description="CoSy's AUC and MAD: label concept images vs control images of a held-out "
        "pool (labels.csv, or another scorer's top share), random-label baseline",
    )
    register(
        "faithfulness",
        _faithfulness,
        description="held-out images: correlation, AUPRC, F1, IoU of concept vs activation, "
        "random-label baseline, sanity checks, explanation-set fit",
    )
