"""Faithfulness on held-out images: does an explanation's concept predict its neuron?

Exemplar patches show where a neuron fires most; an explanation is faithful when its
concept also tracks the neuron on images the labeler never saw. On a held-out folder,
this evaluator compares each explained neuron's activations with the scorer's presence
scores of its top concept (Pearson correlation, AUPRC, best F1, IoU: the metrics that pass
the sanity checks of Oikarinen, Yan & Weng, ICML 2025), against a random concept of the
same vocabulary, runs those sanity checks on the labels at hand, and scores the whole
explanation set as a linear explanation (Oikarinen & Weng, ICML 2024): a sparse
non-negative combination of the neuron's concepts fitted on one part of the held-out
images and evaluated on the other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..data.holdout import PathListSource, held_out_source
from ..data.images import FolderSource
from ..data.result import LabelingResult, NeuronExplanation
from ..data.result_files import ResultFiles
from ..data.vocabulary import Vocabulary
from ..errors import LayerNotFoundError, NeurolabelError
from ..pipeline.held_out_images import HeldOut, collect_held_out, where_images
from ..pipeline.unit_mapping import result_extractor
from ..plugins.context import ResolveContext
from ..plugins.contracts import ConceptScorer, EmbeddingScorer, LoadedModel
from ..plugins.resolve import load_result_model
from ..plugins.spec import Spec
from .metrics import (
    DEFAULT_TOP,
    METRICS,
    RELIABLE,
    binarize_top,
    fit_linear_explanation,
    sanity_checks,
    top_count,
)

#: Metrics whose sanity checks every faithfulness run reports (CoSy's scores).
CHECKED_ALWAYS = ("auc", "mad")

MIN_SPLIT_IMAGES = 8
"""Fewest readable held-out images each of the fit and evaluation parts may have."""

FEW_POSITIVES = 5
"""Below this many positive images per neuron, a warning says the figures are noisy."""

OVERLAP_MODES = ("error", "drop")

_OPTIONS = frozenset(
    {
        "images",
        "layer",
        "concepts",
        "top",
        "split",
        "draws",
        "seed",
        "batch_size",
        "model",
        "scorer",
        "vocabulary",
        "metrics",
        "l1",
        "overlap",
        "pass_rate",
        "activation",
    }
)


def labeled_neurons(result: LabelingResult, layer: str) -> list[NeuronExplanation]:
    """The neurons of ``layer`` that have an explanation (not dead, at least one concept)."""
    return [n for n in result.neurons[layer] if not n.dead and n.concepts]


def exemplar_paths(result: LabelingResult) -> set[Path]:
    """Resolved paths of every exemplar image of the result (``#index`` names skipped)."""
    files = ResultFiles.of(result)
    paths: set[Path] = set()
    for neuron in result:
        for exemplar in neuron.exemplars:
            path = files.image(exemplar.image)
            if path is not None:
                paths.add(path.resolve())
    return paths


def disjoint_images(
    source: FolderSource | PathListSource,
    result: LabelingResult,
    overlap: str = "error",
    evaluator: str = "faithfulness",
) -> tuple[list[int], list[str]]:
    """Indices of the held-out images that the labeler did not see, as far as one can tell.

    The result keeps the paths of its exemplar images (each neuron's top-k), not of every
    probing image, so a probing image that was nobody's exemplar cannot be recognized by
    path; a folder whose fingerprint equals the probing set's is refused outright.

    Args:
        source: The held-out folder.
        result: The labeling result.
        overlap: ``error`` (refuse any exemplar among the held-out images) or ``drop``
            (leave them out and go on).
        evaluator: The evaluator's name, for messages.

    Returns:
        The kept indices and the descriptions of the dropped images.
    """
    if overlap not in OVERLAP_MODES:
        raise NeurolabelError(f"overlap={overlap!r}: use one of {', '.join(OVERLAP_MODES)}")
    probing = result.dataset.get("fingerprint")
    if probing and probing == source.fingerprint():
        raise NeurolabelError(
            f"The held-out folder {where_images(source)} is the probing set of this result (same "
            f"fingerprint): {evaluator} must be measured on images the labeler never saw; "
            "give a disjoint folder"
        )
    seen = exemplar_paths(result)
    kept: list[int] = []
    dropped: list[int] = []
    for index, path in enumerate(source.paths):
        (dropped if path.resolve() in seen else kept).append(index)
    if dropped and overlap == "error":
        names = [str(source.paths[i]) for i in dropped[:3]]
        raise NeurolabelError(
            f"{len(dropped)} held-out image(s) in {where_images(source)} are exemplars of the "
            f"result (e.g. {', '.join(names)}): {evaluator} must be measured on images the labeler "
            f"never saw; give a disjoint folder or pass {evaluator}?overlap=drop"
        )
    return kept, [str(source.paths[i]) for i in dropped]


def read_held_out(
    result: LabelingResult,
    context: ResolveContext,
    loaded: LoadedModel,
    neurons: dict[str, list[NeuronExplanation]],
    source: FolderSource | PathListSource,
    indices: Sequence[int],
    scorer: EmbeddingScorer | ConceptScorer,
    vocabulary: Vocabulary,
    *,
    reduce: str,
    batch_size: int,
) -> HeldOut:
    """:func:`collect_held_out` of ``neurons``' units, read through the result's own
    extractor and unit map (what faithfulness and CoSy both do)."""
    units = {layer: [n.unit for n in ns] for layer, ns in neurons.items()}
    with result_extractor(result, context).open(loaded, list(units)) as read:
        return collect_held_out(
            source,
            indices,
            loaded,
            read,
            units,
            scorer,
            vocabulary,
            device=context.device,
            reduce=reduce,
            batch_size=batch_size,
        )


def random_concepts(
    tops: Sequence[str], pool: Sequence[str], draws: int, generator: torch.Generator
) -> list[list[str | None]]:
    """For each draw and each neuron, a concept of ``pool`` other than the neuron's own.

    Args:
        tops: Each neuron's top concept.
        pool: The vocabulary to draw from.
        draws: How many random labels per neuron.
        generator: Random source.

    Returns:
        ``[draws][neurons]`` concepts (None when ``pool`` has no other concept).

    Examples:
        >>> g = torch.Generator().manual_seed(0)
        >>> out = random_concepts(["red", "blue"], ["red", "blue"], 2, g)
        >>> out
        [['blue', 'red'], ['blue', 'red']]
    """
    position = {c: i for i, c in enumerate(pool)}
    out: list[list[str | None]] = []
    for _ in range(draws):
        row: list[str | None] = []
        for top in tops:
            own = position.get(top)
            others = len(pool) - (own is not None)
            if others == 0:
                row.append(None)
                continue
            pick = int(torch.randint(others, (1,), generator=generator))
            if own is not None and pick >= own:
                pick += 1  # skip the neuron's own concept, keeping the draw uniform
            row.append(pool[pick])
        out.append(row)
    return out


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def _mean(values: Tensor) -> float | None:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else None


class FaithfulnessEvaluator:
    """``faithfulness?images=DIR&layer=L&concepts=10&top=0.05&split=0.5&draws=3&seed=0``.

    On held-out images (disjoint from the probing set), for every explained unit:
    correlation, AUPRC, best F1 and IoU of its top concept's presence with its activations
    (``top``: the share of images per unit counted as positives), the same figures for
    ``draws`` random concepts of the result's vocabulary (the baseline), the paper's
    missing- and extra-label sanity checks of each metric, and the figures of the
    explanation set: its ``concepts`` best concepts combined with sparse non-negative
    weights fitted on a ``split`` share of the images (evaluated, like everything else,
    on the rest). ``model``, ``scorer`` and ``vocabulary`` override the result's;
    ``metrics`` picks among ``correlation,auprc,f1,iou,recall,precision``; ``l1`` fixes
    the sparsity penalty (default: chosen per unit by validation); ``overlap=drop`` leaves
    out held-out images that are exemplars of the result instead of failing;
    ``pass_rate`` is the share of units whose score must fall for a check to pass.
    """

    name = "faithfulness"

    def __init__(self, spec: Spec) -> None:
        spec.check_options(_OPTIONS)
        images = spec.option("images") or spec.argument
        # Without a folder, the held-out part the result recorded (explain's holdout=).
        self.folder = Path(images) if images else None
        layers = spec.option("layer")
        self.layers = [x.strip() for x in layers.split(",") if x.strip()] if layers else None
        self.concepts = _positive_int(spec, "concepts", 10)
        self.top = _fraction(spec, "top", DEFAULT_TOP, inclusive=True)
        self.split = _fraction(spec, "split", 0.5)
        self.draws = _positive_int(spec, "draws", 3)
        self.seed = spec.option_int("seed", 0) or 0
        self.batch_size = _positive_int(spec, "batch_size", 32)
        self.model = spec.option("model")
        self.scorer = spec.option("scorer")
        self.vocabulary = spec.option("vocabulary")
        names = [m.strip() for m in (spec.option("metrics") or ",".join(RELIABLE)).split(",")]
        unknown = [m for m in names if m and m not in METRICS]
        if unknown or not any(names):
            raise NeurolabelError(
                f"faithfulness: unknown metric(s) {', '.join(unknown) or '(none)'}; "
                f"choose from {', '.join(METRICS)}"
            )
        self.metrics = list(dict.fromkeys(m for m in names if m))
        self.l1 = spec.option_float("l1")
        if self.l1 is not None and self.l1 < 0:
            raise NeurolabelError(f"faithfulness: l1 must be non-negative, got {self.l1}")
        self.overlap = spec.option("overlap", "error") or "error"
        if self.overlap not in OVERLAP_MODES:
            raise NeurolabelError(
                f"faithfulness: overlap={self.overlap!r}; use one of {', '.join(OVERLAP_MODES)}"
            )
        self.pass_rate = _fraction(spec, "pass_rate", 0.9, inclusive=True)
        # The result's own ranking activation by default; a fixed one compares results that
        # ranked images differently (CLIP-Dissect's spatial mean, our max) on one footing.
        self.activation = spec.option("activation")
        if self.activation not in (None, "max", "mean"):
            raise NeurolabelError(
                f"faithfulness: activation={self.activation!r}; use max or mean (default: the "
                "result's own)"
            )

    # -- resolution ---------------------------------------------------------------------
    def _layers(self, result: LabelingResult) -> list[str]:
        layers = self.layers or list(result.neurons)
        for layer in layers:
            if layer not in result.neurons:
                raise LayerNotFoundError(
                    f"Layer '{layer}' is not in the result. Layers: {', '.join(result.neurons)}"
                )
        return layers

    def _model(self, result: LabelingResult, context: ResolveContext) -> tuple[str, LoadedModel]:
        spec = self.model or str(result.model.get("name", ""))
        hint = "pass faithfulness?model=SPEC"
        return spec, load_result_model(result, context, self.model, hint=hint)

    def _scorer(
        self, result: LabelingResult, context: ResolveContext
    ) -> tuple[str, EmbeddingScorer | ConceptScorer]:
        spec = self.scorer or result.settings.get("scorer")
        if not spec:
            raise NeurolabelError("The result names no scorer: pass faithfulness?scorer=SPEC")
        try:
            scorer = context.registries.scorers.resolve(spec, context)
        except NeurolabelError as exc:
            raise NeurolabelError(
                f"faithfulness could not build the scorer '{spec}' ({exc}); pass "
                "faithfulness?scorer=SPEC"
            ) from exc
        if not isinstance(scorer, (EmbeddingScorer, ConceptScorer)):
            raise NeurolabelError(
                f"Scorer '{spec}' has neither encode_images/encode_texts nor score_images"
            )
        return spec, scorer

    def _pool(
        self, result: LabelingResult, context: ResolveContext
    ) -> tuple[Vocabulary, str, bool]:
        """The vocabulary random labels are drawn from, a note naming it, and whether it
        fell back to the concepts stored in the result."""
        from ..plugins.resolve import resolve_vocabulary

        if self.vocabulary:  # asked for explicitly: failing to build it is an error
            return resolve_vocabulary(self.vocabulary, context), self.vocabulary, False
        spec = result.settings.get("vocabulary")
        if isinstance(spec, str) and spec and spec != "list":
            try:
                return resolve_vocabulary(spec, context), spec, False
            # Any provider may fail its own way (an LLM vocabulary offline, a moved file);
            # the concepts stored in the result still make a fair, if smaller, pool.
            except Exception as exc:
                reason = f"could not re-resolve '{spec}': {exc}"
        else:
            reason = "the result names no vocabulary spec"
        seen = [str(c) for neuron in result for c, _ in neuron.concepts]
        return Vocabulary.build(seen, source="result"), f"concepts of the result ({reason})", True

    # -- evaluation ---------------------------------------------------------------------
    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]:
        """Measure faithfulness; see the class docstring for what is reported.

        Args:
            result: The labeling result.
            context: Resolve context (registries, device).

        Returns:
            ``{"layers": {layer: summary}, "per_unit": [...], "images": {...}, ...}``.
        """
        warnings: list[str] = []
        layers = self._layers(result)
        neurons = {layer: labeled_neurons(result, layer) for layer in layers}
        for layer in [name for name in layers if not neurons[name]]:
            warnings.append(f"layer '{layer}' has no labeled unit; skipped")
            del neurons[layer]
        if not neurons:
            raise NeurolabelError(
                f"No labeled unit in layer(s) {', '.join(layers)}: nothing to evaluate"
            )
        source: FolderSource | PathListSource = (
            FolderSource(self.folder) if self.folder else held_out_source(result.dataset)
        )
        kept, dropped = disjoint_images(source, result, self.overlap)
        if dropped:
            warnings.append(f"{len(dropped)} held-out image(s) were exemplars and were dropped")
        self._check_count(len(kept))  # before the expensive pass; again after unreadable ones
        model_spec, loaded = self._model(result, context)
        scorer_spec, scorer = self._scorer(result, context)
        pool, pool_note, fell_back = self._pool(result, context)
        if fell_back:
            warnings.append(f"random labels drawn from {pool_note}")

        generator = torch.Generator().manual_seed(self.seed)
        tops = {layer: [str(n.concepts[0][0]) for n in ns] for layer, ns in neurons.items()}
        randoms = {
            layer: random_concepts(tops[layer], pool.concepts, self.draws, generator)
            for layer in neurons
        }
        needed = [
            str(c) for ns in neurons.values() for n in ns for c, _ in n.concepts[: self.concepts]
        ]
        needed += [c for rows in randoms.values() for row in rows for c in row if c]
        vocabulary = Vocabulary.build(needed, categories=pool.categories, source="faithfulness")

        held = read_held_out(
            result,
            context,
            loaded,
            neurons,
            source,
            kept,
            scorer,
            vocabulary,
            reduce=self.activation or str(result.settings.get("activation", "max")),
            batch_size=self.batch_size,
        )
        count = len(held.images)
        n_fit = self._check_count(count)
        order = torch.randperm(count, generator=torch.Generator().manual_seed(self.seed))
        fit_rows, eval_rows = order[:n_fit].sort().values, order[n_fit:].sort().values
        positives = top_count(len(eval_rows), self.top)
        if positives < FEW_POSITIVES:
            warnings.append(
                f"only {positives} positive image(s) per unit (top={self.top} of "
                f"{len(eval_rows)} evaluation images): figures are noisy; use more held-out "
                "images or a larger top"
            )
        if held.skipped:
            warnings.append(f"{len(held.skipped)} held-out input(s) skipped (not readable images)")

        summaries: dict[str, Any] = {}
        per_unit: list[dict[str, Any]] = []
        for layer, layer_neurons in neurons.items():
            summary, rows = self._evaluate_layer(
                layer, layer_neurons, held, randoms[layer], fit_rows, eval_rows
            )
            summaries[layer] = summary
            per_unit.extend(rows)
        return {
            "model": model_spec,
            "scorer": scorer_spec,
            "baseline_vocabulary": pool_note,
            "top": self.top,
            "concepts": self.concepts,
            "draws": self.draws,
            "seed": self.seed,
            "metrics": self.metrics,
            "pass_rate": self.pass_rate,
            "images": {
                "folder": str(self.folder) if self.folder else "holdout of the result",
                "held_out": len(source),
                "used": count,
                "fit": len(fit_rows),
                "eval": len(eval_rows),
                "positives_per_unit": positives,
                "skipped": len(held.skipped),
                "skipped_inputs": [vars(s) for s in held.skipped[:20]],
                "dropped_overlap": len(dropped),
            },
            "layers": summaries,
            "per_unit": per_unit,
            "warnings": warnings,
        }

    def _check_count(self, count: int) -> int:
        """The number of fit images for ``count`` images, or an error when a side of the
        split would be too small."""
        n_fit = int(round(self.split * count))
        if min(n_fit, count - n_fit) < MIN_SPLIT_IMAGES:
            raise NeurolabelError(
                f"faithfulness needs at least {MIN_SPLIT_IMAGES} readable held-out images on "
                f"each side of split={self.split}; {count} are usable in "
                f"{self.folder or 'the held-out part of the result'}"
            )
        return n_fit

    def _evaluate_layer(
        self,
        layer: str,
        neurons: list[NeuronExplanation],
        held: HeldOut,
        randoms: list[list[str | None]],
        fit_rows: Tensor,
        eval_rows: Tensor,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        acts = held.acts[layer].double()
        presence = held.presence.double()
        top_cols = torch.tensor([held.column(str(n.concepts[0][0])) for n in neurons])
        labels = presence[:, top_cols]  # [N, U]: each unit's top concept
        acts_eval, labels_eval = acts[eval_rows], labels[eval_rows]

        single = {m: METRICS[m](acts_eval, labels_eval, self.top) for m in self.metrics}

        random_scores: dict[str, list[Tensor]] = {m: [] for m in self.metrics}
        random_labels: list[Tensor] = []
        for concepts_drawn in randoms:
            columns = [held.column(c) if c else None for c in concepts_drawn]
            drawn = torch.stack(
                [
                    presence[eval_rows, c] if c is not None else torch.full_like(acts_eval[:, 0], 0)
                    for c in columns
                ],
                dim=1,
            )
            random_labels.append(drawn)
            for m in self.metrics:
                random_scores[m].append(METRICS[m](acts_eval, drawn, self.top))
        baseline = {m: torch.stack(v).nanmean(dim=0) for m, v in random_scores.items()}

        # The explanation set: each unit's best concepts, missing slots as constant zeros
        # (a constant concept gets no weight).
        width = max(min(self.concepts, len(n.concepts)) for n in neurons)
        sets = [[str(c) for c, _ in n.concepts[:width]] for n in neurons]
        stacked = torch.zeros(len(held.images), len(neurons), width, dtype=torch.float64)
        for u, concepts in enumerate(sets):
            for k, concept in enumerate(concepts):
                stacked[:, u, k] = presence[:, held.column(concept)]
        fit = fit_linear_explanation(stacked[fit_rows], acts[fit_rows], l1=self.l1, seed=self.seed)
        simulated = fit.predict(stacked[eval_rows])
        combined = {m: METRICS[m](acts_eval, simulated, self.top) for m in self.metrics}

        # The same checks on three labelings: an ideal label (the unit's own top images)
        # tests the metric itself on these activations, as the paper's checks do with true
        # labels; the explanation's and a random concept's rates show how the labels at
        # hand respond (a faithful label behaves like the ideal one, a random one does not).
        ideal = binarize_top(acts_eval, self.top).double()
        labelings = {
            "ideal_label": ideal,
            "explanation": labels_eval,
            "random_label": random_labels[0],
        }
        sanity: dict[str, Any] = {}
        # CoSy's AUC and MAD are checked too, whatever the metrics asked for: the table
        # shows how they fare (the NeuronEval paper found both fail missing labels).
        for m in dict.fromkeys([*self.metrics, *CHECKED_ALWAYS]):
            entry: dict[str, Any] = {"passed": False}
            for kind, label in labelings.items():
                checks = sanity_checks(
                    m,
                    acts_eval,
                    label,
                    top=self.top,
                    draws=self.draws,
                    seed=self.seed,
                    pass_rate=self.pass_rate,
                )
                entry[kind] = {test: check.decrease_rate for test, check in checks.items()}
                if kind == "ideal_label":
                    entry["passed"] = all(check.passed for check in checks.values())
            sanity[m] = entry

        def beats(first: Tensor, second: Tensor) -> float | None:
            both = torch.isfinite(first) & torch.isfinite(second)
            return float((first[both] > second[both]).double().mean()) if both.any() else None

        # Flat keys: the top concept's figure under the metric's name, the random-label
        # baseline and the explanation set under prefixed names, as report tables show them.
        summary: dict[str, Any] = {"units": len(neurons)}
        for prefix, figures in (("", single), ("baseline_", baseline), ("set_", combined)):
            summary.update({f"{prefix}{m}": _mean(figures[m]) for m in self.metrics})
        summary["beats_baseline"] = {m: beats(single[m], baseline[m]) for m in self.metrics}
        summary["set_beats_top"] = {m: beats(combined[m], single[m]) for m in self.metrics}
        summary["undefined"] = {m: int((~torch.isfinite(single[m])).sum()) for m in self.metrics}
        summary["sanity_checks"] = sanity
        summary["trusted_metrics"] = [m for m in self.metrics if sanity[m]["passed"]]
        rows = []
        for u, neuron in enumerate(neurons):
            weights = sorted(
                (
                    (concept, float(w))
                    for concept, w in zip(sets[u], fit.weights[u].tolist(), strict=False)
                    if w > 0
                ),
                key=lambda pair: -pair[1],
            )
            row: dict[str, Any] = {"layer": layer, "unit": neuron.unit, "concept": sets[u][0]}
            for prefix, figures in (("", single), ("baseline_", baseline), ("set_", combined)):
                row.update({f"{prefix}{m}": _finite(figures[m][u]) for m in self.metrics})
            row["baseline_concepts"] = [drawn[u] for drawn in randoms]
            row["weights"] = [[c, round(w, 4)] for c, w in weights]
            rows.append(row)
        return summary, rows


def _positive_int(spec: Spec, key: str, default: int) -> int:
    value = spec.option_int(key, default)
    if value is None or value < 1:
        raise NeurolabelError(f"faithfulness: {key} must be a positive integer, got {value}")
    return value


def _fraction(spec: Spec, key: str, default: float, inclusive: bool = False) -> float:
    value = spec.option_float(key, default)
    if value is None or not (0 < value < 1 or (inclusive and value == 1)):
        bounds = "(0, 1]" if inclusive else "(0, 1)"
        raise NeurolabelError(f"faithfulness: {key} must be in {bounds}, got {value}")
    return value
