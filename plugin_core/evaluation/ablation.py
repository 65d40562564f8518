"""The causal test of explanations: ablate the units labeled like a class, measure the drop.

If the units whose labels match class ``c`` really carry ``c``, zeroing them must hurt
``c``'s images far more than zeroing as many random units, and far more than it hurts the
other classes (the paper's ablation study).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.images import open_image
from ..data.result import LabelingResult
from ..errors import EmptyInputError, LayerNotFoundError, NeurolabelError
from ..plugins.context import ResolveContext
from ..plugins.contracts import UnitMap
from ..plugins.resolve import load_result_model, result_unit_map
from ..plugins.spec import Spec
from ..plugins.unit_writes import check_writes_back, remove_units


@contextmanager
def units_zeroed(
    model: nn.Module,
    layer: str,
    units: Sequence[int] | Tensor,
    unit_map: UnitMap | None = None,
) -> Iterator[None]:
    """Zero channels of ``layer``'s output (or take out a unit map's units) while the
    context is open.

    Args:
        model: The network.
        layer: Dotted module name; its output is ``[B, C, ...]`` (channels in dim 1).
        units: Unit indices to ablate in every sample, or a ``[B, U]`` boolean mask giving
            each sample of the batch its own units (many ablations, one pass).
        unit_map: The units, when they are not channels: an SAE latent loses its decoder
            contribution, a head its output (:func:`remove_units`).

    Examples:
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.Identity())
        >>> with units_zeroed(net, "0", [1]):
        ...     out = net(torch.ones(1, 2))
        >>> float(out[0, 1].detach())
        0.0
    """
    try:
        module = model.get_submodule(layer)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        raise LayerNotFoundError(f"No layer '{layer}'. Layers: {', '.join(names)}") from None
    per_sample = isinstance(units, Tensor) and units.ndim == 2
    index = None if per_sample else torch.as_tensor(list(units), dtype=torch.long)

    def zero(_module: nn.Module, _inputs: object, output: Tensor) -> Tensor:
        if unit_map is not None:
            if per_sample:
                mask = units
            else:
                channels = int(output.shape[-1] if output.ndim == 3 else output.shape[1])
                count = unit_map.units(layer, channels)
                mask = torch.zeros(output.shape[0], count, dtype=torch.bool)
                mask[:, index] = True
            return remove_units(unit_map, layer, output, mask)  # type: ignore[arg-type]
        output = output.clone()
        if index is not None:
            output[:, index.to(output.device)] = 0
            return output
        keep = (~units.to(output.device)).to(output.dtype)  # type: ignore[union-attr]
        return output * keep.view(*keep.shape, *([1] * (output.ndim - 2)))

    handle = module.register_forward_hook(zero)
    try:
        yield
    finally:
        handle.remove()


def true_class_outcomes(
    model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 64
) -> tuple[Tensor, Tensor]:
    """Per image: whether the top-1 prediction is right, and the true class's probability.

    Args:
        model: Classifier returning logits.
        images: ``[N, 3, H, W]`` preprocessed inputs.
        labels: ``[N]`` class indices.
        batch_size: Images per forward pass.

    Returns:
        ``(correct [N] float, probability [N])`` on the CPU.
    """
    device = next(model.parameters()).device
    correct, probability = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            logits = model(images[start : start + batch_size].to(device)).float()
            target = labels[start : start + batch_size].to(device)
            correct.append((logits.argmax(dim=1) == target).float().cpu())
            probability.append(logits.softmax(dim=1).gather(1, target[:, None])[:, 0].cpu())
    return torch.cat(correct), torch.cat(probability)


def label_match(
    unit_labels: Sequence[Sequence[str]],
    class_names: Sequence[str],
    encode_texts: Any,
    decay: float = 0.9,
) -> Tensor:
    """How well each unit's explanation matches each class name.

    A unit's ranked labels are compared with the class name by text-embedding cosine; the
    label at rank ``r`` counts ``decay ** r`` times, and the best label decides.

    Args:
        unit_labels: Each unit's ranked labels (one or more).
        class_names: The class names.
        encode_texts: ``texts -> [N, D]`` L2-normalized embeddings.
        decay: Weight lost per rank.

    Returns:
        ``[units, classes]`` match scores.

    Examples:
        >>> table = {"dog": [1.0, 0.0], "cat": [0.0, 1.0], "puppy": [0.8, 0.6]}
        >>> encode = lambda texts: torch.tensor([table[t] for t in texts])
        >>> label_match([["cat", "dog"], ["puppy"]], ["dog"], encode, decay=0.5).tolist()
        [[0.5], [0.800000011920929]]
    """
    depth = max(len(labels) for labels in unit_labels)
    flat = [label for labels in unit_labels for label in labels]
    cosine = encode_texts(flat) @ encode_texts(list(class_names)).T  # [sum labels, classes]
    scores = torch.full((len(unit_labels), depth, len(class_names)), float("-inf"))
    row = 0
    for unit, labels in enumerate(unit_labels):
        for rank in range(len(labels)):
            scores[unit, rank] = cosine[row] * decay**rank
            row += 1
    return scores.amax(dim=1)


def matched_units(match: Tensor, m: int) -> Tensor:
    """The ``m`` units whose explanations best match a class (``match``: ``[units]`` scores).

    Ties (units with the same labels) go to the earlier unit, so a run is reproducible.

    Examples:
        >>> matched_units(torch.tensor([0.5, 0.9, 0.9, 0.1]), 2).tolist()
        [1, 2]
    """
    return match.sort(descending=True, stable=True).indices[: min(m, match.numel())]


def _read_labeled_folder(folder: Path) -> list[tuple[Path, int, str]]:
    path = folder / "labels.csv"
    if not path.is_file():
        raise NeurolabelError(
            f"ablation needs labeled images: {path} not found (columns file,class_index"
            "[,class_name], as in the shared ImageNet sample)"
        )
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "class_index"} - set(reader.fieldnames or [])
        if missing:
            raise NeurolabelError(f"{path} lacks column(s) {', '.join(sorted(missing))}")
        rows = [
            (
                folder / r["file"],
                int(r["class_index"]),
                (r.get("class_name") or "").replace("_", " "),
            )
            for r in reader
        ]
    if not rows:
        raise EmptyInputError(f"{path} lists no images")
    return rows


class AblationEvaluator:
    """``ablation?images=DIR&layer=L&m=10,30,100&draws=5&classes=50&others=20&text=SCORER``.

    For each of ``classes`` sampled classes ``c`` of the labeled folder: zero the ``m``
    explained units of ``layer`` whose explanations best match ``c``'s name (cosine of the
    ``text`` scorer's text embeddings, over each unit's ranked concepts with the concept at
    rank ``r`` discounted by ``decay ** r``; ``labels=N`` keeps the first N), and measure
    the drop in accuracy and true-class probability on ``c``'s images, against ``draws``
    sets of ``m`` random explained units and against ``others`` images of other classes.
    ``model`` overrides the result's model spec. The figures are reported for every ``m``:
    fewer, better-matched units give a sharper test.
    """

    name = "ablation"

    def __init__(self, spec: Spec) -> None:
        spec.check_options(
            {
                "images",
                "layer",
                "m",
                "draws",
                "classes",
                "others",
                "text",
                "seed",
                "batch_size",
                "model",
                "labels",
                "decay",
            }
        )
        images = spec.option("images") or spec.argument
        if not images:
            raise NeurolabelError("ablation needs images: ablation?images=DIR (with labels.csv)")
        self.folder = Path(images)
        self.layer = spec.option("layer")
        self.ms = [int(x) for x in (spec.option("m") or "10,30,100").split(",") if x]
        self.draws = spec.option_int("draws", 5) or 5
        self.classes = spec.option_int("classes", 50) or 50
        self.others = spec.option_int("others", 20) or 20
        self.text = spec.option("text")
        self.seed = spec.option_int("seed", 0) or 0
        self.batch_size = spec.option_int("batch_size", 64) or 64
        self.model = spec.option("model")
        # Every stored concept of an explanation counts by default (its rank discounted by
        # ``decay``): the explanation is a ranked set, and a unit whose second concept is
        # the class name carries the class more surely than one whose top concept merely
        # resembles it. ``labels=N`` keeps the first N (1 = the top label only).
        self.labels = spec.option_int("labels", 0) or 0
        if self.labels < 0:
            raise NeurolabelError(
                f"ablation: labels must be 0 (all) or positive, got {self.labels}"
            )
        self.decay = spec.option_float("decay", 0.9) or 0.9

    def _layer(self, result: LabelingResult) -> str:
        if self.layer:
            if self.layer not in result.neurons:
                raise LayerNotFoundError(
                    f"Layer '{self.layer}' is not in the result. "
                    f"Layers: {', '.join(result.neurons)}"
                )
            return self.layer
        if len(result.neurons) != 1:
            raise NeurolabelError(
                f"The result has several layers ({', '.join(result.neurons)}): pass layer=NAME"
            )
        return next(iter(result.neurons))

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]:
        layer = self._layer(result)
        loaded = load_result_model(result, context, self.model, hint="pass ablation?model=SPEC")
        model = loaded.model
        # Units that are not channels are taken out through their decoder (or zeroed as
        # channel groups); a map without either is refused here, before any work.
        unit_map = result_unit_map(result, context, loaded)
        if unit_map is not None:
            check_writes_back(unit_map, layer)
        text_spec = self.text or result.settings.get("scorer")
        if not text_spec:
            raise NeurolabelError("The result names no scorer: pass ablation?text=SCORER")
        scorer = context.registries.scorers.resolve(text_spec, context)
        if not hasattr(scorer, "encode_texts"):
            raise NeurolabelError(
                f"ablation matches unit labels to class names by text embedding, but "
                f"'{text_spec}' cannot embed texts: pass text=SCORER (an embedding scorer)"
            )
        rows = _read_labeled_folder(self.folder)
        names = loaded.class_names or []
        class_name = {c: (names[c] if c < len(names) else n) for _, c, n in rows}
        neurons = [n for n in result.neurons[layer] if not n.dead and n.concepts]
        if not neurons:
            raise NeurolabelError(f"Layer '{layer}' has no labeled units to ablate")
        units = torch.tensor([n.unit for n in neurons])
        generator = torch.Generator().manual_seed(self.seed)
        present = sorted(class_name)
        chosen = [
            present[i]
            for i in torch.randperm(len(present), generator=generator)[: self.classes]
            .sort()
            .values.tolist()
        ]
        match = label_match(
            [[c for c, _ in n.concepts[: self.labels or None]] for n in neurons],
            [class_name[c] for c in chosen],
            scorer.encode_texts,
            self.decay,
        )  # [units, classes]
        images = torch.stack([loaded.preprocessing(open_image(p)) for p, _, _ in rows])
        labels = torch.tensor([c for _, c, _ in rows])
        base_correct, base_prob = true_class_outcomes(model, images, labels, self.batch_size)
        channels = int(result.layers.get(layer, {}).get("units") or int(units.max()) + 1)
        per_class = []
        summary: dict[str, dict[str, float | None]] = {}
        for m in self.ms:
            m_eff = min(m, len(neurons))
            rows_m = [
                self._one_class(
                    unit_map,
                    model,
                    layer,
                    images,
                    labels,
                    base_correct,
                    base_prob,
                    units,
                    match[:, column],
                    c,
                    class_name[c],
                    m_eff,
                    channels,
                    generator,
                    result,
                )
                for column, c in enumerate(chosen)
            ]
            per_class.extend(rows_m)
            mean = {
                key: sum(r[key] for r in rows_m) / len(rows_m)
                for key in (
                    "matched_drop",
                    "random_drop",
                    "other_classes_drop",
                    "matched_accuracy_drop",
                    "random_accuracy_drop",
                )
            }
            ratio = mean["matched_drop"] / mean["random_drop"] if mean["random_drop"] > 0 else None
            summary[str(m)] = {**mean, "ratio": ratio}
        return {
            "layer": layer,
            "classes": len(chosen),
            "draws": self.draws,
            "text_model": text_spec,
            "by_m": summary,
            "per_class": per_class,
        }

    def _one_class(
        self,
        unit_map: UnitMap | None,
        model: nn.Module,
        layer: str,
        images: Tensor,
        labels: Tensor,
        base_correct: Tensor,
        base_prob: Tensor,
        units: Tensor,
        match: Tensor,
        c: int,
        name: str,
        m: int,
        channels: int,
        generator: torch.Generator,
        result: LabelingResult,
    ) -> dict[str, Any]:
        """Matched, random and other-class drops for class ``c``, in one forward pass."""
        own = (labels == c).nonzero().squeeze(1)
        others = (labels != c).nonzero().squeeze(1)
        others = others[torch.randperm(len(others), generator=generator)[: self.others]]
        picked = units[matched_units(match, m)]
        unit_sets = [picked] + [
            units[torch.randperm(len(units), generator=generator)[:m]] for _ in range(self.draws)
        ]
        # One batch: the class's images once per unit set, then the other classes' images
        # under the matched set; each sample carries its own mask.
        index = torch.cat([own.repeat(len(unit_sets)), others])
        masks = torch.zeros(len(index), channels, dtype=torch.bool)
        for position, unit_set in enumerate(unit_sets):
            masks[position * len(own) : (position + 1) * len(own), unit_set] = True
        masks[len(own) * len(unit_sets) :, picked] = True
        with units_zeroed(model, layer, masks, unit_map):
            correct, prob = true_class_outcomes(model, images[index], labels[index], len(index))
        n = len(own)
        base_p, base_c = base_prob[own].mean(), base_correct[own].mean()
        set_prob = prob[: n * len(unit_sets)].view(len(unit_sets), n).mean(dim=1)
        set_correct = correct[: n * len(unit_sets)].view(len(unit_sets), n).mean(dim=1)
        other_drop = (
            float(base_prob[others].mean() - prob[n * len(unit_sets) :].mean())
            if len(others)
            else 0.0
        )
        return {
            "class": c,
            "name": name,
            "m": m,
            "units": picked[:10].tolist(),
            "labels": [result.explanation(layer, int(u)).description for u in picked[:10]],
            "matched_drop": float(base_p - set_prob[0]),
            "random_drop": float((base_p - set_prob[1:]).mean()),
            "other_classes_drop": other_drop,
            "matched_accuracy_drop": float(base_c - set_correct[0]),
            "random_accuracy_drop": float((base_c - set_correct[1:]).mean()),
        }
