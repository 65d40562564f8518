"""Final-layer accuracy: do the labels of an ImageNet classifier's logit units name their class?

    python benchmarks/final_layer_accuracy.py --json final_layer.json

Target EfficientNet-Lite0 (packaged weights), layer = logits, probing set = the shared
ImageNet sample (one image per even class), vocabulary = the 1000 ImageNet class names,
scorer = the classifier-grounded (ConSE) scorer with EfficientNet-Lite1 and -Lite2 as its
eye. For every
aggregation (ours and CLIP-Dissect's), top-1/top-5 exact-match accuracy over the units that
have ground truth and the mean text-embedding cosine (all-MiniLM-L6-v2) between the label and
the true class name; the same with a ``words:N`` vocabulary (cosine only).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from pathlib import Path

import torch

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
#: Two classifiers the target is not, as one eye; temperature 1 and top-1 because the
#: vocabulary is exactly their class names (ConSE's exact-class setting).
DEFAULT_EYE = (
    "classifier:packaged:efficientnet_lite1,packaged:efficientnet_lite2?temperature=1&top=1"
)
AGGREGATIONS = ("mean", "soft-wpmi", "wpmi", "cos-cubed", "contrast")


def read_labels(folder: Path) -> dict[int, str]:
    """``class_index -> class name`` from the folder's ``labels.csv``."""
    path = folder / "labels.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: --images needs a folder with labels.csv")
    with path.open(newline="", encoding="utf-8") as handle:
        return {
            int(row["class_index"]): row["class_name"].replace("_", " ")
            for row in csv.DictReader(handle)
        }


def score_result(result, layer: str, truth: dict[int, str], concept_of_class, embedder):
    """Top-1/top-5 exact match (when ``concept_of_class`` is given) and label cosine: the
    cosine of each label with the closest name of its class (the readable name, the
    folder's WordNet name or another WordNet lemma), as the ``accuracy`` evaluator does."""
    from neurolabel.plugin_core.data.imagenet import class_synonyms

    synonyms = class_synonyms()
    hits1 = hits5 = 0
    cosines = []
    for unit, name in truth.items():
        neuron = result.explanation(layer, unit)
        ranked = [c for c, _ in neuron.concepts]
        if concept_of_class is not None:
            hits1 += bool(ranked[:1] == [concept_of_class[unit]])
            hits5 += concept_of_class[unit] in ranked[:5]
        label = neuron.description if not neuron.dead else ""
        names = list(dict.fromkeys([name, *synonyms[unit]]))
        embedded = embedder.encode([label, *names])
        cosines.append(float((embedded[1:] @ embedded[0]).max()))
    cosine = sum(cosines) / len(cosines)
    out = {"cosine": round(cosine, 4)}
    if concept_of_class is not None:
        out = {"top1": round(hits1 / len(truth), 4), "top5": round(hits5 / len(truth), 4), **out}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--target",
        default="efficientnet_lite0",
        help="efficientnet_liteN (packaged weights) or any model spec",
    )
    parser.add_argument("--eye", default=DEFAULT_EYE, help="scorer spec")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--layer", default="classifier")
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--words", type=int, default=20000, help="size of the words vocabulary")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from neurolabel import NeuronLabeler, build_context
    from neurolabel.backends.text_embedding import load_text_embedder
    from neurolabel.backends.vocabularies import imagenet_classes
    from neurolabel.plugin_core.data.vocabulary import normalize_concept
    from neurolabel.plugin_core.pipeline.aggregation import DEFAULT_AGGREGATION

    target = args.target if ":" in args.target else f"packaged:{args.target}"
    truth = read_labels(args.images)
    ctx = build_context(args.device)
    embedder = load_text_embedder(None, "cpu")
    vocab_names = [normalize_concept(c) for c in imagenet_classes()]
    report: dict = {"imagenet_vocab": {}, "words_vocab": {}, "default": DEFAULT_AGGREGATION}
    timings = {}
    for vocab_key, vocabulary in (
        ("imagenet_vocab", "imagenet"),
        ("words_vocab", f"words:{args.words}"),
    ):
        started = time.perf_counter()
        labeler = NeuronLabeler(
            target,
            layers=[args.layer],
            scorer=args.eye,
            vocabulary=vocabulary,
            top_k=args.top_k,
            context=ctx,
            units=sorted(truth),
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        evidence = labeler.gather_evidence(args.images, with_sample=True)
        concept_of_class = None
        if vocab_key == "imagenet_vocab":
            # Class i's concept is its (normalized) readable name; the two pairs of classes
            # that share a name ("missile", "sunglasses") share the concept.
            concepts = set(evidence.vocabulary.concepts)
            concept_of_class = {unit: vocab_names[unit] for unit in truth}
            if not set(concept_of_class.values()) <= concepts:
                raise SystemExit("the imagenet vocabulary lacks a class's name")
        for aggregation in AGGREGATIONS:
            result = labeler.explain(evidence, aggregation)
            report[vocab_key][aggregation] = score_result(
                result, args.layer, truth, concept_of_class, embedder
            )
            details = result.settings.get("aggregation_details", {}).get(args.layer)
            if details:  # contrast's correlation weight, validated on the probing images
                report[vocab_key][aggregation]["details"] = details
        timings[vocab_key] = round(time.perf_counter() - started, 1)
    best_baseline = max(
        report["imagenet_vocab"][a]["top1"] for a in AGGREGATIONS if a not in ("contrast",)
    )
    report["default_margin_over_best_clip_dissect"] = round(
        report["imagenet_vocab"][DEFAULT_AGGREGATION]["top1"] - best_baseline, 4
    )
    report["settings"] = {
        "target": target,
        "eye": args.eye,
        "layer": args.layer,
        "images": str(args.images),
        "units_with_ground_truth": len(truth),
        "top_k": args.top_k,
        "words_vocabulary": f"words:{args.words}",
        "text_embedder": "all-MiniLM-L6-v2",
        "seconds": timings,
        "device": str(ctx.device),
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_path:
        args.json_path.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
