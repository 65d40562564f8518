"""Channels against principal directions of one layer: significant labels and faithfulness.

    python benchmarks/unit_maps.py --json out.json

Target EfficientNet-Lite0 (packaged weights), layer ``blocks.6`` (320 channels), the shared
ImageNet sample split by row into 250 probing and 250 held-out images (as in
``evaluate.py``), the offline eye ``classifier:packaged:efficientnet_lite1``, vocabulary
``imagenet``, top_k 10. The same labeler settings explain the layer's first ``--units``
channels, its ``--units`` principal directions (``directions:pca?k=N``, fitted on the
probing half) and, with ``--sae FILE``, the first ``--units`` latents of a sparse
autoencoder (``train_sae.py`` on the probing half); reported for each: how many labels
pass the label test, the held-out faithfulness (correlation of the top concept and of
the explanation set, random-label baseline) and the ablation study on the held-out half
(``--m`` units whose labels match each of ``--classes`` classes taken out, against as many
random labeled units: the class's probability drop).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import emit, imagenet_labeler
from evaluate import DEFAULT_IMAGES, split_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="packaged:efficientnet_lite0")
    parser.add_argument("--eye", default="classifier:packaged:efficientnet_lite1")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--layer", default="blocks.6")
    parser.add_argument("--units", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--sae", type=Path, help="also label the first --units latents of this SAE file"
    )
    parser.add_argument("--m", type=int, default=10, help="units ablated per class")
    parser.add_argument("--classes", type=int, default=100, help="classes in the ablation")
    parser.add_argument("--text", default="classifier", help="text embedder of the ablation")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from neurolabel import build_context

    ctx = build_context("cpu")
    report: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        probe, heldout = split_folder(args.images, Path(tmp))
        spec = f"faithfulness?images={heldout}&model={args.target}&scorer={args.eye}"
        runs = [
            ("channels", "channels", range(args.units)),
            ("pca", f"directions:pca?k={args.units}", None),
        ]
        if args.sae:  # e.g. from train_sae.py on the probing half
            runs.append(("sae", f"sae:{args.sae}", range(args.units)))
        for name, units_from, units in runs:
            started = time.perf_counter()
            result = imagenet_labeler(
                args.target, args.layer, args, ctx, units=units, units_from=units_from
            ).run(probe)
            neurons = result.neurons[args.layer]
            live = [n for n in neurons if not n.dead]
            figures = ctx.registries.evaluators.resolve(spec, ctx).evaluate(result, ctx)
            layer = figures["layers"][args.layer]
            # The causal test: take out the m units whose labels match a class (channels
            # zeroed, directions' components and SAE latents' decoder contributions
            # subtracted) and compare the class's probability drop with m random units'.
            ablation = ctx.registries.evaluators.resolve(
                f"ablation?images={heldout}&m={args.m}&classes={args.classes}&text={args.text}"
                f"&model={args.target}",
                ctx,
            ).evaluate(result, ctx)["by_m"][str(args.m)]
            report[name] = {
                "units": len(neurons),
                "live": len(live),
                "significant_labels": sum(not n.unexplained for n in live),
                "correlation": layer["correlation"],
                "set_correlation": layer["set_correlation"],
                "baseline_correlation": layer["baseline_correlation"],
                "ablation_matched_drop": ablation["matched_drop"],
                "ablation_random_drop": ablation["random_drop"],
                "ablation_other_classes_drop": ablation["other_classes_drop"],
                "ablation_ratio": ablation["ratio"],
                "seconds": round(time.perf_counter() - started, 1),
            }
            if name == "pca":
                variance = result.settings["unit_map"]["explained_variance"][args.layer]
                report[name]["explained_variance"] = round(sum(variance), 4)
    report["settings"] = {k: str(v) for k, v in vars(args).items() if k != "json_path"}
    emit(report, args.json_path)


if __name__ == "__main__":
    main()
