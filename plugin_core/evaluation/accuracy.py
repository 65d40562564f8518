"""Agreement with ground truth: exact-match top-k accuracy and label cosine (CLIP-Dissect's).

Ground truth is a ``layer,unit,label`` CSV, or, for the final layer of a classifier, its
class names; :class:`AccuracyEvaluator` is the ``accuracy`` evaluator.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..data.imagenet import class_synonyms, is_imagenet_1k
from ..data.result import LabelingResult
from ..data.vocabulary import normalize_concept
from ..errors import NeurolabelError
from ..plugins.context import ResolveContext


def read_ground_truth(path: str | Path) -> dict[tuple[str, int], set[str]]:
    """Read a ``layer,unit,label`` CSV; several rows for one unit give synonyms.

    Args:
        path: CSV file with a header row containing ``layer``, ``unit`` and ``label``.

    Returns:
        ``{(layer, unit): {normalized labels}}``.
    """
    file = Path(path)
    if not file.is_file():
        raise NeurolabelError(f"Ground-truth file {file} does not exist")
    with file.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"layer", "unit", "label"} - set(reader.fieldnames or [])
        if missing:
            raise NeurolabelError(
                f"{file} must have columns layer,unit,label; missing {', '.join(sorted(missing))}"
            )
        truth: dict[tuple[str, int], set[str]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                key = (row["layer"], int(row["unit"]))
            except ValueError:
                raise NeurolabelError(
                    f"{file}:{line}: unit {row['unit']!r} is not an integer"
                ) from None
            truth.setdefault(key, set()).add(normalize_concept(row["label"]))
    return truth


def exact_match_accuracy(
    result: LabelingResult, truth: dict[tuple[str, int], set[str]], ks: tuple[int, ...] = (1, 5)
) -> dict[str, Any]:
    """Share of units with ground truth whose top-k concepts contain a true label.

    Args:
        result: The labeling result.
        truth: ``{(layer, unit): labels}``, e.g. from :func:`read_ground_truth`.
        ks: The k of each top-k accuracy.

    Returns:
        ``{"top1": ..., "top5": ..., "units": n}`` (dead units count as wrong).

    Examples:
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> neuron = NeuronExplanation("fc", 0, [["dog", 1], ["cat", 0]])
        >>> r = LabelingResult({}, {}, {"fc": [neuron]})
        >>> exact_match_accuracy(r, {("fc", 0): {"cat"}}, ks=(1, 2))
        {'top1': 0.0, 'top2': 1.0, 'units': 1}
    """
    hits = dict.fromkeys(ks, 0)
    units = 0
    for neuron in result:
        labels = truth.get((neuron.layer, neuron.unit))
        if not labels:
            continue
        units += 1
        ranked = [normalize_concept(str(c)) for c, _ in neuron.concepts]
        for k in ks:
            hits[k] += bool(labels & set(ranked[:k]))
    if units == 0:
        raise NeurolabelError("No explained unit has ground truth: check layer names and units")
    return {**{f"top{k}": hits[k] / units for k in ks}, "units": units}


def label_cosine(
    result: LabelingResult, truth: dict[tuple[str, int], set[str]], encode_texts: Any
) -> float:
    """Mean cosine between each unit's top label and its (best-matching) true label.

    Args:
        result: The labeling result.
        truth: ``{(layer, unit): labels}``.
        encode_texts: ``texts -> [N, D]`` L2-normalized embeddings (an embedding scorer's
            ``encode_texts``, e.g. a sentence model or CLIP's text tower).

    Returns:
        The mean over units with ground truth (dead units count as cosine 0).
    """
    total, units = 0.0, 0
    for neuron in result:
        labels = sorted(truth.get((neuron.layer, neuron.unit), ()))
        if not labels:
            continue
        units += 1
        if neuron.dead or not neuron.concepts:
            continue
        # The best-ranked concept, also for an unexplained unit (the figure is about the
        # ranking; the label test is reported on its own).
        embedded = encode_texts([str(neuron.concepts[0][0]), *labels])
        total += float((embedded[1:] @ embedded[0]).max())
    return total / units if units else 0.0


class AccuracyEvaluator:
    """``accuracy?ground_truth=FILE&text=SCORER``: CLIP-Dissect's metrics.

    Top-1/top-5 exact match against a ``layer,unit,label`` CSV (without a file, the final
    layer of a classifier is checked against its class names, stored in the result by
    model sources that know them; an ImageNet-1k class counts under any of its WordNet
    names), and, with ``text=`` naming an embedding scorer whose
    text side embeds labels (a sentence model, CLIP's text tower), the mean cosine between
    each label and its ground truth.
    """

    name = "accuracy"

    def __init__(self, ground_truth: str | None, text: str | None = None) -> None:
        self.ground_truth = ground_truth
        self.text = text

    def evaluate(self, result: LabelingResult, context: ResolveContext) -> dict[str, Any]:
        if self.ground_truth:
            truth = read_ground_truth(self.ground_truth)
        else:
            names = result.model.get("class_names")
            if not names:
                raise NeurolabelError(
                    "accuracy needs ground truth: pass accuracy?ground_truth=FILE.csv "
                    "(columns layer,unit,label) or explain a classifier whose class names are known"
                )
            # An ImageNet class may be named by any of its names ("Madagascar cat" or
            # "ring-tailed lemur"): every one counts.
            synonyms = class_synonyms() if is_imagenet_1k(names) else [[n] for n in names]
            truth = {}
            for layer, info in result.layers.items():
                if info.get("kind") == "vector" and info.get("units") == len(names):
                    for unit, all_names in enumerate(synonyms):
                        truth[(layer, unit)] = {normalize_concept(n) for n in all_names}
        figures = exact_match_accuracy(result, truth)
        if self.text:
            scorer = context.registries.scorers.resolve(self.text, context)
            if not hasattr(scorer, "encode_texts"):
                raise NeurolabelError(
                    f"accuracy?text={self.text}: that scorer cannot embed texts; name an "
                    "embedding scorer (e.g. classifier or open_clip:MODEL/TAG)"
                )
            figures["cosine"] = label_cosine(result, truth, scorer.encode_texts)
            figures["text_model"] = self.text
        return figures
