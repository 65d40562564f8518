"""Peak memory of the exemplar pass with a 16,384-latent SAE as the unit map, N vs 10*N images.

    python benchmarks/unit_map_memory.py --images 100 --json out.json

Target EfficientNet-Lite0 (packaged weights), layer ``blocks.6`` (320 channels, 7x7), a
random sparse autoencoder with 16,384 latents (``sae:FILE``, safetensors), top_k 10, no
image sample (the sample's ``[S, U]`` activations grow with ``sample_size``, up to its cap,
by design). Each size runs in its own process; reported: the peak resident memory of the
pass, its ratio between 10*N and N images (goal: within 10 %), and the seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import emit
from PIL import Image


class NoiseImages(torch.utils.data.Dataset):
    """Deterministic random images."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> Image.Image:
        rng = np.random.default_rng(index)
        return Image.fromarray(rng.integers(0, 255, (240, 320, 3), np.uint8))


def make_sae(path: Path, channels: int, latents: int) -> None:
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    save_file(
        {
            "W_enc": torch.randn(channels, latents, generator=generator) / channels**0.5,
            "b_enc": torch.zeros(latents),
            "b_dec": torch.zeros(channels),
        },
        str(path),
    )


def child(args) -> None:
    from neurolabel import NeuronLabeler, build_context
    from neurolabel.plugin_core.data.images import as_image_source
    from neurolabel.plugin_core.runtime.progress import Steps

    labeler = NeuronLabeler(
        "packaged:efficientnet_lite0",
        layers=["blocks.6"],
        scorer="color",
        top_k=10,
        batch_size=args.batch_size,
        context=build_context("cpu"),
        progress=False,
        cache=False,
        units_from=f"sae:{args.sae}",
    )
    assert labeler.loaded is not None  # loaded first: the model's memory is not the pass's
    started = time.perf_counter()
    states, _, _, _ = labeler.collect_exemplars(
        as_image_source(NoiseImages(args.count)), Steps(False)
    )
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    units = states["blocks.6"].num_neurons
    print(json.dumps({"peak_rss_kib": peak, "seconds": round(seconds, 1), "units": units}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--images",
        type=int,
        default=100,
        help="N (and 10*N); at least ~84 so that the threshold reservoir (4,096 map cells per "
        "unit) is full at both sizes",
    )
    parser.add_argument("--latents", type=int, default=16384)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", dest="json_path", type=Path)
    parser.add_argument("--child-count", dest="count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sae", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        sae = Path(tmp) / "sae.safetensors"
        make_sae(sae, 320, args.latents)
        runs = {}
        for count in (args.images, 10 * args.images):
            command = [
                sys.executable,
                __file__,
                "--child-count",
                str(count),
                "--sae",
                str(sae),
                "--batch-size",
                str(args.batch_size),
            ]
            out = subprocess.run(command, capture_output=True, text=True, env=os.environ)
            if out.returncode:
                raise SystemExit(out.stderr)
            runs[str(count)] = json.loads(out.stdout.strip().splitlines()[-1])
    small, large = runs[str(args.images)], runs[str(10 * args.images)]
    report = {
        "runs": runs,
        "memory_ratio_10x": round(large["peak_rss_kib"] / small["peak_rss_kib"], 3),
        "settings": {
            "target": "packaged:efficientnet_lite0",
            "layer": "blocks.6 (320 x 7 x 7)",
            "latents": args.latents,
            "top_k": 10,
            "batch_size": args.batch_size,
            "sample": "none",
            "torch_threads": torch.get_num_threads(),
        },
    }
    emit(report, args.json_path)


if __name__ == "__main__":
    main()
