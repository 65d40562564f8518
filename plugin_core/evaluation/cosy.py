"""CoSy's scores: does a unit's label concept separate concept images from control images?

Kopf et al. (CoSy, NeurIPS 2024) score a neuron's explanation by the neuron's activations
on images of the concept against control images: the AUC (how often a concept image
activates the neuron more than a control image) and the MAD (the mean activation
difference in control standard deviations). CoSy generates its concept images with a
text-to-image model; offline there is none, so :class:`CosyEvaluator` takes them from a
held-out pool:

* where the pool has a ``labels.csv`` (``file,class_name[,class_index]``), the images whose
  class is the concept (any WordNet name of an ImageNet-1k class counts);
* otherwise the top ``share`` of the pool under a scorer named with ``scorer=``, which
  must not be the labeler's own (it chose the label: scoring the label with it is
  circular), unless ``force=true``.

Control images are the rest of the pool. A random label of the same vocabulary gives the
baseline. The NeuronEval paper (Oikarinen et al., ICML 2025) found that AUC and MAD fail
its missing-labels sanity check (they barely fall when half of the concept images lose
their label); the ``faithfulness`` evaluator's sanity table shows the same checks for both.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from ..data.holdout import PathListSource, held_out_source
from ..data.imagenet import class_synonyms
from ..data.images import FolderSource
from ..data.result import LabelingResult, NeuronExplanation
from ..data.vocabulary import Vocabulary, normalize_concept
from ..errors import NeurolabelError
from ..plugins.context import ResolveContext
from ..plugins.resolve import load_result_model
from ..plugins.spec import Spec
from .faithfulness import disjoint_images, labeled_neurons, random_concepts, read_held_out
from .metrics import mean_activation_difference, separation_auc, top_count

_OPTIONS = frozenset(
    {"images", "scorer", "share", "force", "layer", "model", "draws", "seed", "batch_size"}
)
#: Fewest concept images a unit's label needs to be scored.
MIN_CONCEPT_IMAGES = 2
CAVEAT = (
    "AUC and MAD fail the NeuronEval missing-labels sanity check (Oikarinen et al., ICML "
    "2025): they barely fall when half of the concept images lose their label, so a high "
    "score does not show that the label covers all the unit responds to"
)


#: Smallest fall of a score, in AUC units (and MAD units), counted as a decrease.
EPSILON = 1e-3


def _sanity_checks(masks: Tensor, acts: Tensor, seed: int) -> dict[str, float | None]:
    """NeuronEval's missing- and extra-labels checks of AUC and MAD on these labels: the
    share of units whose score falls when half of the concept images lose the concept
    (``missing_dropped``: they leave the data, as generated concept images would in CoSy;
    ``missing_to_control``: they join the control images, as in a labeled pool), and when
    as many control images gain it (``extra``). A trustworthy metric falls for (nearly)
    every unit; one that does not move on ``missing_dropped`` is the paper's finding."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, float | None] = {}
    auc, mad = separation_auc(masks, acts), mean_activation_difference(masks, acts)
    falls: dict[str, list[tuple[float, float]]] = {}
    for unit in range(masks.shape[1]):
        positive = masks[:, unit].nonzero().flatten()
        negative = (~masks[:, unit]).nonzero().flatten()
        if len(positive) < 2 or len(negative) < 2:
            continue
        lost = positive[torch.randperm(len(positive), generator=generator)[: len(positive) // 2]]
        gained = negative[torch.randperm(len(negative), generator=generator)[: len(positive)]]
        keep = torch.ones(len(acts), dtype=torch.bool)
        keep[lost] = False
        to_control = masks[:, unit].clone()
        to_control[lost] = False
        extra = masks[:, unit].clone()
        extra[gained] = True
        column = acts[:, unit : unit + 1]
        cases = {
            "missing_dropped": (masks[keep, unit : unit + 1], column[keep]),
            "missing_to_control": (to_control[:, None], column),
            "extra": (extra[:, None], column),
        }
        for name, (mask, values) in cases.items():
            after = (
                float(separation_auc(mask, values)[0]),
                float(mean_activation_difference(mask, values)[0]),
            )
            falls.setdefault(name, []).append(
                (float(auc[unit]) - after[0], float(mad[unit]) - after[1])
            )
    for name, changes in falls.items():
        for index, metric in enumerate(("auc", "mad")):
            defined = [c[index] for c in changes if c[index] == c[index]]
            out[f"{metric}_{name}"] = (
                round(sum(c > EPSILON for c in defined) / len(defined), 4) if defined else None
            )
    return out


class _NoPresence:
    """A concept scorer that scores nothing: the labels path needs only activations."""

    name = "none"

    def score_images(self, images: Sequence[Image.Image], vocabulary: Vocabulary) -> Tensor:
        return torch.zeros(len(images), len(vocabulary))


def read_class_names(folder: Path) -> dict[str, set[str]] | None:
    """``file -> {normalized class names}`` from the folder's ``labels.csv`` (None when the
    folder has none). An ImageNet-1k ``class_index`` adds every WordNet name of the class.
    """
    path = folder / "labels.csv"
    if not path.is_file():
        return None
    synonyms = class_synonyms()
    names: dict[str, set[str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"file", "class_name"} <= set(reader.fieldnames or []):
            raise NeurolabelError(f"{path} needs the columns file and class_name")
        for row in reader:
            found = {normalize_concept(row["class_name"].replace("_", " "))}
            index = (row.get("class_index") or "").strip()
            if index.isdigit() and int(index) < len(synonyms):
                found |= {normalize_concept(n) for n in synonyms[int(index)]}
            names[row["file"]] = found
    return names


class CosyEvaluator:
    """``cosy?images=DIR&scorer=SPEC&share=0.05``: CoSy's AUC and MAD of each unit's label.

    Options: ``images`` (the held-out pool; default the result's recorded holdout),
    ``scorer`` (concept images by score, when the pool has no ``labels.csv``), ``share``
    (top share of the pool counted as concept images, default 0.05), ``force`` (allow the
    labeler's own scorer), ``layer``, ``model``, ``draws`` (random labels per unit, 3),
    ``seed``, ``batch_size``.
    """

    name = "cosy"

    def __init__(self, spec: Spec) -> None:
        spec.check_options(_OPTIONS)
        images = spec.option("images") or spec.argument
        self.folder = Path(images) if images else None
        self.scorer = spec.option("scorer")
        share = spec.option_float("share", 0.05)
        if share is None or not 0 < share < 1:
            raise NeurolabelError(f"cosy: share={share} must be between 0 and 1, e.g. 0.05")
        self.share = share
        self.force = spec.option_bool("force")
        layers = spec.option("layer")
        self.layers = [x.strip() for x in layers.split(",") if x.strip()] if layers else None
        self.model = spec.option("model")
        self.draws = max(1, spec.option_int("draws", 3) or 3)
        self.seed = spec.option_int("seed", 0) or 0
        self.batch_size = max(1, spec.option_int("batch_size", 32) or 32)

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]:
        """CoSy's scores per layer, with a random-label baseline.

        Returns:
            ``{"layers": {layer: {"auc", "mad", "baseline_auc", "baseline_mad", "units",
            "without_concept_images"}}, "per_unit": [...], "concept_images": ..., ...}``.
        """
        layers = self.layers or list(result.neurons)
        missing = [layer for layer in layers if layer not in result.neurons]
        if missing:
            raise NeurolabelError(
                f"cosy: layer(s) {', '.join(missing)} not in the result; layers: "
                f"{', '.join(result.neurons)}"
            )
        neurons = {layer: labeled_neurons(result, layer) for layer in layers}
        neurons = {layer: ns for layer, ns in neurons.items() if ns}
        if not neurons:
            raise NeurolabelError("cosy: no labeled unit to evaluate")
        source: FolderSource | PathListSource = (
            FolderSource(self.folder) if self.folder else held_out_source(result.dataset)
        )
        kept, dropped = disjoint_images(source, result, "drop", evaluator="cosy")
        root = source.root if source.root is not None else None
        classes = read_class_names(root) if root is not None else None
        generator = torch.Generator().manual_seed(self.seed)
        tops = {layer: [str(n.concepts[0][0]) for n in ns] for layer, ns in neurons.items()}
        if classes is not None:
            pool = sorted({c for names in classes.values() for c in names})
            how = f"labels.csv of {root}"
        else:
            pool = sorted({str(c) for ns in neurons.values() for n in ns for c, _ in n.concepts})
            how = f"top {self.share:g} of the pool under {self._scorer_spec(result)}"
        randoms = {
            layer: random_concepts(tops[layer], pool, self.draws, generator) for layer in neurons
        }
        needed = sorted(
            {*[c for t in tops.values() for c in t]}
            | {c for rows in randoms.values() for row in rows for c in row if c}
        )
        vocabulary = Vocabulary.build(needed, source="cosy")
        scorer: Any = _NoPresence()
        if classes is None:
            scorer = context.registries.scorers.resolve(self._scorer_spec(result), context)
        loaded = load_result_model(result, context, self.model, hint="pass cosy?model=SPEC")
        held = read_held_out(
            result,
            context,
            loaded,
            neurons,
            source,
            kept,
            scorer,
            vocabulary,
            reduce=str(result.settings.get("activation", "max")),
            batch_size=self.batch_size,
        )
        files = [Path(name).name for name in held.images]

        def concept_images(concept: str | None) -> Tensor:
            count = len(files)
            if concept is None:
                return torch.zeros(count, dtype=torch.bool)
            if classes is not None:
                wanted = normalize_concept(concept)
                return torch.tensor([wanted in classes.get(f, set()) for f in files])
            scores = held.presence[:, held.column(concept)]
            k = top_count(count, self.share)
            mask = torch.zeros(count, dtype=torch.bool)
            mask[scores.topk(k).indices] = True
            return mask

        summaries: dict[str, Any] = {}
        per_unit: list[dict[str, Any]] = []
        for layer, layer_neurons in neurons.items():
            acts = held.acts[layer].double()
            summary, rows = self._layer(layer, layer_neurons, acts, randoms[layer], concept_images)
            summaries[layer] = summary
            per_unit.extend(rows)
        return {
            "concept_images": how,
            "images": {
                "pool": len(source),
                "used": len(held.images),
                "dropped_overlap": len(dropped),
            },
            "share": self.share if classes is None else None,
            "draws": self.draws,
            "seed": self.seed,
            "layers": summaries,
            "per_unit": per_unit,
            "caveat": CAVEAT,
        }

    def _scorer_spec(self, result: LabelingResult) -> str:
        own = result.settings.get("scorer")
        if not self.scorer:
            raise NeurolabelError(
                "cosy: the held-out folder has no labels.csv, so concept images are chosen by "
                "a scorer: pass cosy?scorer=SPEC (not the labeler's own scorer, which chose "
                "the labels)"
            )
        if own and self.scorer == own and not self.force:
            raise NeurolabelError(
                f"cosy: scorer={self.scorer} is the scorer that chose the labels; choosing "
                "their concept images with it again is circular. Name another scorer, or pass "
                "force=true to do it anyway"
            )
        return self.scorer

    def _layer(
        self,
        layer: str,
        neurons: list[NeuronExplanation],
        acts: Tensor,
        randoms: list[list[str | None]],
        concept_images: Any,
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        masks = torch.stack([concept_images(str(n.concepts[0][0])) for n in neurons], dim=1)
        scored = masks.sum(dim=0) >= MIN_CONCEPT_IMAGES
        auc = separation_auc(masks, acts).masked_fill(~scored, float("nan"))
        mad = mean_activation_difference(masks, acts).masked_fill(~scored, float("nan"))
        base_auc, base_mad = [], []
        for row in randoms:
            drawn = torch.stack([concept_images(c) for c in row], dim=1)
            ok = drawn.sum(dim=0) >= MIN_CONCEPT_IMAGES
            base_auc.append(separation_auc(drawn, acts).masked_fill(~ok, float("nan")))
            base_mad.append(mean_activation_difference(drawn, acts).masked_fill(~ok, float("nan")))
        baseline_auc = torch.stack(base_auc).nanmean(dim=0)
        baseline_mad = torch.stack(base_mad).nanmean(dim=0)

        def mean(values: Tensor) -> float | None:
            finite = values[torch.isfinite(values)]
            return round(float(finite.mean()), 4) if finite.numel() else None

        summary = {
            "sanity_checks": _sanity_checks(masks[:, scored], acts[:, scored], self.seed),
            "units": int(scored.sum()),
            "without_concept_images": int((~scored).sum()),
            "auc": mean(auc),
            "mad": mean(mad),
            "baseline_auc": mean(baseline_auc),
            "baseline_mad": mean(baseline_mad),
        }
        rows = [
            {
                "layer": layer,
                "unit": n.unit,
                "concept": str(n.concepts[0][0]),
                "concept_images": int(masks[:, i].sum()),
                "auc": mean(auc[i : i + 1]),
                "mad": mean(mad[i : i + 1]),
            }
            for i, n in enumerate(neurons)
        ]
        return summary, rows
