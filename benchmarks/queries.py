"""Asking results: find by class name, compare two networks, and the speed on 26,000 units.

    python benchmarks/queries.py --json benchmarks/results_queries.json

1. ``find`` on the logits of EfficientNet-Lite0 (packaged weights) labeled on the shared
   ImageNet sample as ``final_layer_accuracy.py`` labels them (eye: EfficientNet-Lite1
   and -Lite2, ConSE; vocabulary: the ImageNet class names; top_k 100): for 50 classes
   drawn at random (seed 0) among the 500 the sample holds, the class name is the query;
   reported is how often the class's own unit ranks in the top 5 (and top 1).
   Pairs are also counted by whether they join the same class unit in both models.
2. ``compare`` of those logits with EfficientNet-Lite1's logits (labeled the same way:
   mostly shared concepts expected) and with Lite0's ``blocks.2`` (an early block, 40
   channels, labeled with the same eye and vocabulary: mostly disjoint expected).
3. Speed: ``find`` and ``compare`` on a 26,000-unit result (the whole-ResNet-50
   benchmark's size) whose units carry five ranked ImageNet concepts and one or two
   exemplar groups drawn at random, with the ``text`` side, embeddings cached (the first
   run on a machine also embeds the 1,000 concept names once).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from pathlib import Path

from common import emit, imagenet_labeler
from final_layer_accuracy import DEFAULT_EYE, DEFAULT_IMAGES


def label(target: str, layer: str, args, ctx):
    started = time.perf_counter()
    result = imagenet_labeler(target, layer, args, ctx).run(args.images)
    return result, round(time.perf_counter() - started, 1)


def synthetic(units: int, concepts: list[str], seed: int):
    from neurolabel import LabelingResult, NeuronExplanation

    rng = random.Random(seed)
    layers: dict[str, list[NeuronExplanation]] = {}
    per_layer = 512
    for start in range(0, units, per_layer):
        name = f"layer{start // per_layer}"
        layers[name] = []
        for unit in range(min(per_layer, units - start)):
            ranked = rng.sample(concepts, 5)
            groups = [[c, rng.randint(2, 8), 0.5] for c in rng.sample(ranked, rng.randint(1, 2))]
            layers[name].append(
                NeuronExplanation(
                    name,
                    unit,
                    [[c, 1.0 - 0.1 * r] for r, c in enumerate(ranked)],
                    clarity=rng.random(),
                    groups=groups,
                    redundancy=0,
                )
            )
    info = {name: {"units": len(ns)} for name, ns in layers.items()}
    return LabelingResult({"name": "synthetic"}, info, layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eye", default=DEFAULT_EYE)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from neurolabel import build_context
    from neurolabel.plugin_core.data.unit_search import compare_results
    from neurolabel.plugin_core.plugins.resolve import resolve_text_side

    ctx = build_context("cpu")
    with (args.images / "labels.csv").open(newline="", encoding="utf-8") as handle:
        classes = {
            int(r["class_index"]): r["class_name"].replace("_", " ") for r in csv.DictReader(handle)
        }
    lite0, seconds0 = label("packaged:efficientnet_lite0", "classifier", args, ctx)
    text_side, spec = resolve_text_side(lite0, ctx)
    encode = text_side.encode_texts
    drawn = random.Random(0).sample(sorted(classes), args.queries)
    ranks = {}
    for index in drawn:
        found = lite0.find(classes[index], encode, layer="classifier", top=1000)
        order = [m.unit for m in found]
        ranks[classes[index]] = order.index(index) + 1 if index in order else None
    top5 = sum(1 for r in ranks.values() if r is not None and r <= 5) / len(ranks)
    top1 = sum(1 for r in ranks.values() if r == 1) / len(ranks)
    report: dict = {
        "find": {
            "queries": len(ranks),
            "own_unit_in_top5": round(top5, 4),
            "own_unit_top1": round(top1, 4),
            "ranks": ranks,
            "text": spec,
            "labeling_seconds": seconds0,
        }
    }
    lite1, seconds1 = label("packaged:efficientnet_lite1", "classifier", args, ctx)
    early, seconds_early = label("packaged:efficientnet_lite0", "blocks.2", args, ctx)
    for name, other in (("lite0_vs_lite1_logits", lite1), ("lite0_logits_vs_blocks2", early)):
        for counted in (False, True):  # significant labels only, then every live unit
            comparison = compare_results(lite0, other, encode, unexplained=counted)
            same_unit = sum(1 for pair in comparison["pairs"] if pair["a"][1] == pair["b"][1])
            report[name + ("_all_units" if counted else "")] = {
                **comparison["figures"],
                "pairs": len(comparison["pairs"]),
                "pairs_on_the_same_unit": same_unit,
                "shared_examples": [r["concept"] for r in comparison["shared"][:8]],
                "only_b_examples": [r["concept"] for r in comparison["only_b"][:8]],
            }
    report["labeling_seconds"] = {"lite1": seconds1, "blocks2": seconds_early}

    big = synthetic(26000, sorted(set(c for c in classes.values())), seed=0)
    other = synthetic(26000, sorted(set(c for c in classes.values())), seed=1)
    small_side, small_spec = resolve_text_side(None, ctx)
    small = small_side.encode_texts
    big.find("striped animal", small, top=10)  # embeds the concepts once (disk cache)
    timings = {}
    started = time.perf_counter()
    for query in ("striped animal", "dog", "something red", "wheel of a car", "water"):
        big.find(query, small, top=10)
    timings["find_seconds_per_query"] = round((time.perf_counter() - started) / 5, 3)
    started = time.perf_counter()
    compared = compare_results(big, other, small)
    timings["compare_seconds"] = round(time.perf_counter() - started, 3)
    timings["compare_shared_concepts"] = compared["figures"]["shared_a"]
    report["speed_26000_units"] = {**timings, "units": 26000, "text": small_spec}
    report["settings"] = {k: str(v) for k, v in vars(args).items() if k != "json_path"}
    emit(report, args.json_path)


if __name__ == "__main__":
    main()
