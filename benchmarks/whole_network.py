"""Every neuron of a network: stage times, peak memory and output sizes of one run.

    python benchmarks/whole_network.py --images ../shared/data/imagenet-sample \
        --json benchmarks/results_whole_network.json

Defaults: ResNet-50 (random weights: the cost does not depend on them), every ``Conv2d``
(53 layers, 26,560 units), the offline classifier scorer, the ImageNet vocabulary, k = 10.
Reported: seconds of the forward pass plus scoring (``gather_evidence``), of labeling every
unit (``explain``), of saving ``result.json`` and the exemplar patches, and of the HTML
report; the scoring plan; the peak resident memory; and the sizes written.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from neurolabel import NeuronLabeler, write_html_report


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="a folder of photographs")
    parser.add_argument("--model", default="torchvision:resnet50?weights=none")
    parser.add_argument("--layers", nargs="+", default=["type:Conv2d"])
    parser.add_argument("--scorer", default="classifier:packaged:efficientnet_lite1")
    parser.add_argument("--vocab", default="imagenet")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    labeler = NeuronLabeler(
        args.model,
        layers=args.layers,
        scorer=args.scorer,
        vocabulary=args.vocab,
        top_k=args.top_k,
        batch_size=args.batch_size,
        device="cpu",
        cache=False,
        progress=False,
    )
    report: dict = {"settings": {**vars(args), "images": str(args.images)}}
    report["settings"]["torch_threads"] = torch.get_num_threads()
    start = time.perf_counter()
    evidence = labeler.gather_evidence(args.images)
    report["pass_and_scoring_s"] = time.perf_counter() - start
    report["layers"] = len(evidence.layers)
    report["units"] = sum(len(layer.units) for layer in evidence.layers)
    start = time.perf_counter()
    result = labeler.explain(evidence)
    report["explain_s"] = time.perf_counter() - start
    report["scoring"] = result.settings["scoring"]
    report["aggregation_details_first_layer"] = next(
        iter(result.settings.get("aggregation_details", {}).values()), None
    )
    start = time.perf_counter()
    result.save(out)
    report["save_s"] = time.perf_counter() - start
    report["patches_saved"] = len(result.patch_images)
    start = time.perf_counter()
    write_html_report(result, out / "report.html")
    report["html_report_s"] = time.perf_counter() - start
    report["total_s"] = time.perf_counter() - started
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report["result_json_mb"] = (out / "result.json").stat().st_size / 1e6
    report["report_html_mb"] = (out / "report.html").stat().st_size / 1e6
    report["output_mb"] = _megabytes(out)
    text = json.dumps(report, indent=1, default=str)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
