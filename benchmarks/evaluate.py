"""Evaluation benchmark: faithfulness of hidden-layer labels, and the ablation study.

    python benchmarks/evaluate.py --json evaluate.json

Target EfficientNet-Lite0 (packaged weights) on the shared ImageNet sample, offline eye.
The sample is split in two halves by row: probing images and held-out images.

* Faithfulness (held-out half): for an early, a middle and the last conv block, the
  project's default labels (top concept and fitted concept set), CLIP-Dissect as published
  (``clip-dissect:soft-wpmi``: every probing image scored whole, spatial-mean activations,
  top_k 100, the concept prior over every unit of the layer; gathered by a second labeler
  from the same probing images with the same eye) and soft-WPMI on our exemplars, against a
  random-label baseline. Each result is evaluated on its own ranking activation (ours: the
  spatial max; CLIP-Dissect: the mean) and, for a like-for-like check, on the other one.
* Ablation (all images): the last conv block's units (``conv_head``, the 1280-channel
  convolution before ``bn2``'s ReLU6) are labeled, then for each sampled class the m units
  whose explanations best match the class name are zeroed; the drop of the true-class
  probability is compared with m random units and with other classes.
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from common import emit

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
#: The exact settings of the CLIP-Dissect baseline, filled by the run.
CLIP_DISSECT_SETTINGS: dict = {}


def split_folder(images: Path, workdir: Path) -> tuple[Path, Path]:
    """Symlink alternate rows of ``labels.csv`` into a probing and a held-out folder."""
    with (images / "labels.csv").open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields, rows = reader.fieldnames or [], list(reader)
    halves = []
    for name, part in (("probe", rows[0::2]), ("heldout", rows[1::2])):
        folder = workdir / name
        folder.mkdir()
        for row in part:
            (folder / row["file"]).symlink_to((images / row["file"]).resolve())
        with (folder / "labels.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(part)
        halves.append(folder)
    return halves[0], halves[1]


def faithfulness(args, ctx, probe: Path, heldout: Path) -> dict:
    from neurolabel import NeuronLabeler, resolve_model

    layers = args.layers.split(",")
    loaded = resolve_model(args.target, ctx, None)
    extractor = ctx.registries.extractors.resolve("hooks", ctx)
    channels = {info.name: info.shape[0] for info in extractor.list_layers(loaded)}

    def labeler_for(**settings) -> NeuronLabeler:
        return NeuronLabeler(
            loaded,
            layers=layers,
            scorer=args.eye,
            vocabulary=args.vocabulary,
            top_k=args.top_k,
            context=ctx,
            units={layer: range(min(args.units, channels[layer])) for layer in layers},
            batch_size=args.batch_size,
            progress=not args.quiet,
            **settings,
        )

    labeler = labeler_for(scoring=args.scoring, activation=args.activation)
    evidence = labeler.gather_evidence(probe, with_sample=True)
    spec = f"faithfulness?images={heldout}&model={args.target}&scorer={args.eye}"

    def evaluate(result, activation: str | None = None) -> dict:
        full = spec + (f"&activation={activation}" if activation else "")
        return ctx.registries.evaluators.resolve(full, ctx).evaluate(result, ctx)["layers"]

    default = labeler.explain(evidence)
    other = "mean" if args.activation == "max" else "max"
    ours, ours_on_other = evaluate(default), evaluate(default, other)
    on_exemplars = evaluate(labeler.explain(evidence, "soft-wpmi"))
    # CLIP-Dissect as published: a labeler in that mode gathers its own evidence.
    reference = labeler_for(aggregation="clip-dissect:soft-wpmi")
    published = reference.explain(reference.gather_evidence(probe))
    CLIP_DISSECT_SETTINGS.update(published.settings["clip_dissect"])
    theirs_all, theirs_on_max = evaluate(published), evaluate(published, "max")
    chosen = default.settings.get("aggregation_details", {})
    out = {}
    for layer in layers:
        mine, theirs = ours[layer], theirs_all[layer]
        out[layer] = {
            "correlation": mine["correlation"],
            "set_correlation": mine["set_correlation"],
            "baseline_correlation": mine["baseline_correlation"],
            "clip_dissect_correlation": theirs["correlation"],
            "clip_dissect_set_correlation": theirs["set_correlation"],
            "clip_dissect_baseline_correlation": theirs["baseline_correlation"],
            # like for like: both results on the spatial max, and both on the mean
            f"correlation_on_{other}": ours_on_other[layer]["correlation"],
            f"set_correlation_on_{other}": ours_on_other[layer]["set_correlation"],
            "clip_dissect_correlation_on_max": theirs_on_max[layer]["correlation"],
            "clip_dissect_set_correlation_on_max": theirs_on_max[layer]["set_correlation"],
            # CLIP-Dissect's soft-WPMI formula on our exemplars (not CLIP-Dissect as run)
            "soft_wpmi_on_exemplars_correlation": on_exemplars[layer]["correlation"],
            "soft_wpmi_on_exemplars_set_correlation": on_exemplars[layer]["set_correlation"],
            "auprc": mine["auprc"],
            "f1": mine["f1"],
            "iou": mine["iou"],
            "baseline_auprc": mine.get("baseline_auprc"),
            "sanity_checks": mine.get("sanity_checks"),
            # contrast's correlation weight, validated on the probing images only
            "correlation_weight": chosen.get(layer, {}).get("correlation_weight"),
            "correlation_validation": chosen.get(layer, {}).get("correlation_validation"),
        }
    return out


def ablation(args, ctx, images: Path) -> dict:
    from neurolabel import NeuronLabeler

    labeler = NeuronLabeler(
        args.target,
        layers=[args.ablation_layer],
        scorer=args.ablation_eye,
        vocabulary=args.vocabulary,
        top_k=args.top_k,
        context=ctx,
        patches="whole",
        batch_size=args.batch_size,
        progress=not args.quiet,
    )
    result = labeler.run(images)
    spec = (
        f"ablation?images={images}&layer={args.ablation_layer}&m={args.m}"
        f"&classes={args.classes}&draws={args.draws}&text={args.text}&model={args.target}"
    )
    figures = ctx.registries.evaluators.resolve(spec, ctx).evaluate(result, ctx)
    first = str(args.m.split(",")[0])
    return {
        **figures["by_m"][first],
        "by_m": figures["by_m"],
        "layer": args.ablation_layer,
        "per_class": figures["per_class"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="efficientnet_lite0")
    parser.add_argument("--eye", default="classifier:packaged:efficientnet_lite1")
    parser.add_argument("--ablation-eye", default=None, help="default: --eye")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument(
        "--layers", default="blocks.2,blocks.4,blocks.6", help="hidden layers for faithfulness"
    )
    parser.add_argument(
        "--layer",
        dest="ablation_layer",
        default="conv_head",
        help="layer for the ablation: the last conv block's convolution. Not bn2 after it: "
        "its ReLU6 clips 98%% of the exemplar activations at 6, so the top-k ranking ties",
    )
    parser.add_argument("--vocabulary", default="imagenet")
    parser.add_argument(
        "--scoring",
        default="auto",
        choices=("auto", "patches", "images"),
        help="faithfulness labels: score exemplar patches or whole images (auto: the cheaper)",
    )
    parser.add_argument(
        "--activation",
        default="max",
        choices=("max", "mean"),
        help="how our labeler ranks images (CLIP-Dissect as published always uses the mean)",
    )
    parser.add_argument("--units", type=int, default=64, help="units per faithfulness layer")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--m", default="10,30,100")
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--text", default="classifier", help="text embedder (scorer spec)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip", choices=("faithfulness", "ablation"), action="append", default=[])
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if ":" not in args.target:
        args.target = f"packaged:{args.target}"
    args.ablation_eye = args.ablation_eye or args.eye

    from neurolabel import build_context

    ctx = build_context(args.device)
    report: dict = {}
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        probe, heldout = split_folder(args.images, Path(tmp))
        if "faithfulness" not in args.skip:
            started = time.perf_counter()
            report["faithfulness"] = faithfulness(args, ctx, probe, heldout)
            seconds["faithfulness"] = round(time.perf_counter() - started, 1)
        if "ablation" not in args.skip:
            started = time.perf_counter()
            report["ablation"] = ablation(args, ctx, args.images)
            seconds["ablation"] = round(time.perf_counter() - started, 1)
    report["settings"] = {k: str(v) for k, v in vars(args).items() if k != "json_path"}
    report["settings"]["seconds"] = seconds
    if CLIP_DISSECT_SETTINGS:
        report["settings"]["clip_dissect"] = CLIP_DISSECT_SETTINGS
    emit(report, args.json_path)


if __name__ == "__main__":
    main()
