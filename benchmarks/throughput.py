"""Extraction overhead against a bare forward pass, and peak memory for N vs 10*N images.

    python benchmarks/throughput.py --model torchvision:resnet18?weights=none \
        --layers layer3 --layers layer1,layer2,layer3,layer4,fc --images 128 --json out.json

For each layer set (one ``--layers``, comma-separated names): ``overhead_ratio`` (explain's
extraction stage time / bare forward time over the same DataLoader; goal <= 1.10) and
``memory_ratio_10x`` (peak resident memory of the extraction stage with 10*N images / with
N; goal: within 10 %).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image


class NoiseImages(torch.utils.data.Dataset):
    """Deterministic random photographs-sized images (decoded PIL, like a folder would give)."""

    def __init__(self, count: int, size: tuple[int, int] = (320, 240)) -> None:
        self.count, self.size = count, size

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Image.Image:
        rng = np.random.default_rng(index)
        return Image.fromarray(rng.integers(0, 255, (self.size[1], self.size[0], 3), np.uint8))


def _labeler(args, count):
    from neurolabel import NeuronLabeler, build_context
    from neurolabel.plugin_core.data.images import as_image_source
    from neurolabel.plugin_core.runtime.progress import Steps

    ctx = build_context(args.device)
    labeler = NeuronLabeler(
        args.model,
        layers=args.layer.split(","),
        scorer="unused",
        top_k=args.top_k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        context=ctx,
        progress=False,
    )
    return labeler, as_image_source(NoiseImages(count)), Steps(False)


def time_both(args) -> dict[str, float]:
    """Bare forward and extraction over the same DataLoader, interleaved, best of repeats."""
    from neurolabel.plugin_core.data.probe_dataset import ProbeDataset

    labeler, source, steps = _labeler(args, args.images)
    loaded = labeler.loaded
    loader = torch.utils.data.DataLoader(
        ProbeDataset(source, loaded.preprocessing),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    bare, ours = [], []
    with torch.inference_mode():
        for batch, _, _ in loader:  # warm-up
            loaded.model(batch.to(labeler.ctx.device))
            break
    for _ in range(args.repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            for batch, _, _ in loader:
                loaded.model(batch.to(labeler.ctx.device))
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        labeler.collect_exemplars(source, steps)
        ours.append(time.perf_counter() - start)
    return {
        "bare_forward_s": min(bare),
        "extraction_s": min(ours),
        "overhead_ratio": min(ours) / min(bare),
    }


def peak_memory_child(args) -> None:
    labeler, source, steps = _labeler(args, args.child_images)
    _ = labeler.loaded  # load before measuring the baseline
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    labeler.collect_exemplars(source, steps)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_rss_kib": after, "baseline_rss_kib": before}))


def peak_memory(args, count: int) -> dict[str, int]:
    command = [
        sys.executable,
        __file__,
        "--child-images",
        str(count),
        "--model",
        args.model,
        "--layer",
        args.layer,
        "--batch-size",
        str(args.batch_size),
        "--top-k",
        str(args.top_k),
        "--device",
        args.device,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="torchvision:resnet18?weights=none")
    parser.add_argument(
        "--layers",
        action="append",
        help="comma-separated layers; repeat for several sets (default: 1 and 5 layers)",
    )
    parser.add_argument("--layer", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--child-images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("NEUROLABEL_PLUGINS", "")
    if args.child_images:
        peak_memory_child(args)
        return
    report: dict = {"layer_sets": {}}
    for layers in args.layers or ["layer3", "layer1,layer2,layer3,layer4,fc"]:
        args.layer = layers
        timing = time_both(args)
        small = peak_memory(args, args.images)
        large = peak_memory(args, 10 * args.images)
        report["layer_sets"][layers] = {
            **timing,
            "memory_ratio_10x": large["peak_rss_kib"] / small["peak_rss_kib"],
            "peak_rss_mib_n": small["peak_rss_kib"] / 1024,
            "peak_rss_mib_10n": large["peak_rss_kib"] / 1024,
        }
    report["settings"] = {
        "model": args.model,
        "images": args.images,
        "batch_size": args.batch_size,
        "top_k": args.top_k,
        "device": args.device,
        "torch_threads": torch.get_num_threads(),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")


if __name__ == "__main__":
    main()
