"""Per-exemplar CPU costs of the scoring stage, for projecting whole-network runs.

    python benchmarks/stage_costs.py --images ../shared/data/imagenet-sample \
        --json benchmarks/results_stage_costs.json

Measured one at a time, in the main process:

* ``boxes``: locating each exemplar's patch (``input_boxes``: upsample the activation map
  to the 224-pixel input, threshold it at the dataset quantile, box the connected region
  holding the peak), for map grids of 56, 28, 14 and 7 cells (ResNet-50's stages), on
  smooth random maps like a ReLU layer's;
* ``read_and_cut``: decoding an exemplar image and cutting two patches (``ExemplarCrops``,
  what the DataLoader workers of the scoring stage run);
* ``vlm_preprocess``: open_clip's preprocessing of one patch (also run in those workers).

The projection multiplies them by the ~260k exemplar slots of ResNet-50's ~26k channels at
k = 10 (every slot its own image: the worst case): boxes in the main process (where the
labeler computes them), reading, cutting and preprocessing spread over ``--cores`` workers.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from neurolabel import Preprocessing
from neurolabel.plugin_core.data.images import as_image_source
from neurolabel.plugin_core.pipeline.patch_scoring import ExemplarCrops
from neurolabel.plugin_core.pipeline.patches import PatchSettings, input_boxes

RESNET50_SLOTS = 26_000 * 10


def boxes_ms(grid: int, count: int) -> float:
    torch.manual_seed(grid)
    noise = torch.randn(count, 1, grid, grid)
    maps = torch.nn.functional.avg_pool2d(noise, 3, stride=1, padding=1).squeeze(1).relu()
    thresholds = torch.quantile(maps.flatten()[:1_000_000], 0.995).repeat(count)
    start = time.perf_counter()
    input_boxes(maps, thresholds, Preprocessing(), PatchSettings())
    return 1000 * (time.perf_counter() - start) / count


def read_and_cut_ms(folder: Path, count: int) -> tuple[float, list]:
    source = as_image_source(folder)
    count = min(count, len(source))
    crops = ExemplarCrops(
        source, list(range(count)), {i: [None, (10, 10, 120, 120)] for i in range(count)}
    )
    start = time.perf_counter()
    patches = [crops[i][1][0] for i in range(count)]
    return 1000 * (time.perf_counter() - start) / count, patches


def preprocess_ms(patches: list, model: str) -> float:
    import open_clip

    _, _, transform = open_clip.create_model_and_transforms(model, pretrained=None)
    start = time.perf_counter()
    for patch in patches:
        transform(patch)
    return 1000 * (time.perf_counter() - start) / len(patches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=Path, required=True, help="a folder of photographs")
    parser.add_argument("--count", type=int, default=500, help="maps and images measured")
    parser.add_argument("--vlm", default="ViT-B-16")
    parser.add_argument("--cores", type=int, default=16)
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args()
    torch.set_num_threads(1)  # per-core costs: workers run one thread each
    boxes = {str(grid): boxes_ms(grid, args.count) for grid in (56, 28, 14, 7)}
    read, patches = read_and_cut_ms(args.images, args.count)
    preprocess = preprocess_ms(patches, args.vlm)
    boxes_minutes = RESNET50_SLOTS * float(np.mean(list(boxes.values()))) / 60_000
    worker_minutes = RESNET50_SLOTS * (read + preprocess) / 60_000
    report = {
        "settings": {"images": str(args.images), "count": args.count, "vlm": args.vlm},
        "ms_per_slot": {"boxes": boxes, "read_and_cut": read, "vlm_preprocess": preprocess},
        "resnet50_all_layers": {
            "slots": RESNET50_SLOTS,
            "boxes_minutes_main_process": boxes_minutes,
            "read_cut_preprocess_minutes_one_core": worker_minutes,
            f"read_cut_preprocess_minutes_{args.cores}_workers": worker_minutes / args.cores,
        },
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
