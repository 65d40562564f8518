"""The whole pipeline against a baseline following CLIP-Dissect's procedure, patch
deduplication, and 2 torch.distributed (gloo) ranks against one process.

    python benchmarks/scale.py --images 24000 --small-images 200 --json out.json

Pipeline vs baseline (same target, layers, units, images, VLM and vocabulary; each run in
its own process, so peak memory is its own):

* ``ours``: neurolabel's explain: one streaming pass keeping each neuron's top-k, then the
  VLM encodes the unique exemplar patches plus a uniform sample of whole images.
* ``baseline``: CLIP-Dissect's procedure: store every image's pooled activations of every
  unit of the layers, encode every probing image with the VLM, keep every embedding, then
  label each unit by soft-WPMI over its top-k images. Its labeling step is not the
  published one (the same top-k as ours by the spatial max, the prior over the explained
  units; CLIP-Dissect: 100 images by the mean, the prior over every unit): a cost model of
  the procedure, whose labels are measured against the published mode elsewhere
  (``final_layer_accuracy.py``, ``evaluate.py``).

Reported: wall-time ratio (baseline / ours), peak RSS above the process's RSS once the models
are loaded (working memory) and its ratio, on CUDA also the peak of device allocations above
the loaded models (``device_memory_ratio``), the bytes of state that grow with the number of
images (the baseline's per-image activations, embeddings and image-concept similarities),
and how many images each encodes. ``--device cuda --num-workers 16 --precision bf16`` runs
both methods on a GPU with the same loader and autocast settings. Run at a size where
images outnumber exemplar patches tenfold, and at a small size where patches outnumber
images (where ``ours`` plans image-level scoring itself).

Distributed: ``neurolabel explain`` under ``torchrun --nproc-per-node 2`` (gloo, one
thread each) against one process with two threads, on the packaged EfficientNet-Lite0;
``same_result`` compares the neurons of both result.json files.
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

import torch
from throughput import NoiseImages  # the same generated photographs as the throughput run


def _rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _start_measuring(device: str) -> int:
    """Peak memory from here on: host RSS (whose peak cannot be reset: its rise is the
    working memory) and, on CUDA, the device's allocations (reset)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    return 0


def _device_working_mib(device: str, allocated_before: int) -> float | None:
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - allocated_before) / 2**20


class SourceImages(torch.utils.data.Dataset):
    """The probing images as decoded PIL images (the baseline's VLM pass)."""

    def __init__(self, source) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        return self.source.load(index)


def _units(args) -> dict[str, list[int]]:
    return {layer: list(range(args.units)) for layer in args.layers}


def run_ours(args, count: int) -> dict:
    from neurolabel import NeuronLabeler, build_context, resolve_vocabulary

    ctx = build_context(args.device, cache_dir=tempfile.mkdtemp())
    # The scorer is built here so that its encodings can be counted.
    scorer = ctx.registries.scorers.resolve(args.scorer, ctx)
    counted = _count_encodes(scorer)
    labeler = NeuronLabeler(
        args.model,
        layers=args.layers,
        scorer=scorer,
        vocabulary=args.vocab,
        top_k=args.top_k,
        units=_units(args),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        precision=args.precision,
        channels_last=args.precision != "fp32",
        sample_size=args.sample_size,
        context=ctx,
        progress=False,
        cache=False,
    )
    _ = labeler.loaded
    # Text embeddings are the same work for both methods: computed (and cached) up front.
    scorer.encode_texts(list(resolve_vocabulary(args.vocab, ctx).concepts))
    before = _rss_kib()
    allocated = _start_measuring(args.device)
    start = time.perf_counter()
    evidence = labeler.gather_evidence(NoiseImages(count))
    result = labeler.explain(evidence)
    seconds = time.perf_counter() - start
    slots = sum(len(n.exemplars) for layer in result.neurons.values() for n in layer)
    state_bytes = sum(
        t.numel() * t.element_size()
        for layer in evidence.layers
        for t in (layer.state.values, layer.state.ids, layer.state.maps)
        if t is not None
    )
    return {
        "seconds": seconds,
        "peak_rss_kib": _rss_kib(),
        "loaded_rss_kib": before,
        "device_working_mib": _device_working_mib(args.device, allocated),
        "images_encoded": counted["images"],
        "exemplar_slots": slots,
        "unique_exemplar_patches": len(set(evidence.requests.key_of.values())),
        "unique_patches_with_sample": len(evidence.requests.unique),
        "scoring_mode": result.settings["scoring"]["mode"],
        "state_bytes": state_bytes,
    }


def run_baseline(args, count: int) -> dict:
    from neurolabel import build_context, resolve_model, resolve_vocabulary
    from neurolabel.plugin_core.data.images import as_image_source
    from neurolabel.plugin_core.data.probe_dataset import ProbeDataset
    from neurolabel.plugin_core.pipeline.aggregation import soft_wpmi
    from neurolabel.plugin_core.pipeline.exemplar_pass import autocast_for
    from neurolabel.plugin_core.pipeline.topk import per_image_activation

    ctx = build_context(args.device, cache_dir=tempfile.mkdtemp())
    loaded = resolve_model(args.model, ctx, None)
    scorer = ctx.registries.scorers.resolve(args.scorer, ctx)
    counted = _count_encodes(scorer)
    vocabulary = resolve_vocabulary(args.vocab, ctx)
    extractor = ctx.registries.extractors.resolve("hooks", ctx)
    scorer.encode_texts(list(vocabulary.concepts))
    source = as_image_source(NoiseImages(count))
    before = _rss_kib()
    allocated = _start_measuring(args.device)
    start = time.perf_counter()
    loader = torch.utils.data.DataLoader(
        ProbeDataset(source, loaded.preprocessing),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    # Like CLIP-Dissect, the per-image activations [N, C] and embeddings [N, D] are kept on
    # the host, here in arrays allocated once: appending each batch's small result to a list
    # interleaves it with the batch's freed buffers, and glibc's heap then grows by about
    # 135 KB per image that is never given back (measured), which would overstate the
    # baseline's memory.
    activations: dict[str, torch.Tensor] = {}
    done = 0
    with extractor.open(loaded, args.layers) as read:
        for batch, _, _ in loader:
            with torch.inference_mode(), autocast_for(ctx.device, args.precision):
                for layer, acts in read(batch.to(ctx.device)).items():
                    pooled = per_image_activation(acts).float().cpu()
                    if layer not in activations:
                        activations[layer] = torch.empty(count, pooled.shape[1])
                    activations[layer][done : done + len(pooled)] = pooled
            done += len(batch)
    images = torch.utils.data.DataLoader(
        SourceImages(source),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        collate_fn=list,
    )
    image_embeddings = torch.empty(0)
    done = 0
    for batch in images:
        with torch.inference_mode(), autocast_for(ctx.device, args.precision):
            encoded = scorer.encode_images(batch).float().cpu()
        if not len(image_embeddings):
            image_embeddings = torch.empty(count, encoded.shape[1])
        image_embeddings[done : done + len(encoded)] = encoded
        done += len(encoded)
    sims = image_embeddings @ scorer.encode_texts(list(vocabulary.concepts)).float().T
    labels = {}
    for layer, acts in activations.items():
        units = torch.tensor(_units(args)[layer])
        values, ids = acts[:, units].T.topk(args.top_k, dim=1)
        scores = soft_wpmi(sims[ids], values)
        labels[layer] = scores.argmax(dim=1).tolist()
    seconds = time.perf_counter() - start
    # Per-image activations, embeddings and image-concept similarities all grow with N.
    state_bytes = sum(a.numel() * 4 for a in (*activations.values(), image_embeddings, sims))
    return {
        "seconds": seconds,
        "peak_rss_kib": _rss_kib(),
        "loaded_rss_kib": before,
        "device_working_mib": _device_working_mib(args.device, allocated),
        "images_encoded": counted["images"],
        "state_bytes": state_bytes,
    }


def _count_encodes(scorer) -> dict[str, int]:
    """Count the images the VLM encodes (open_clip's encode_images goes through encode_pixels,
    which the pipeline also calls directly)."""
    counted = {"images": 0}
    name = "encode_pixels" if hasattr(scorer, "encode_pixels") else "encode_images"
    encode = getattr(scorer, name)

    def counting(images):
        counted["images"] += len(images)
        return encode(images)

    setattr(scorer, name, counting)
    return counted


def child(args) -> None:
    torch.manual_seed(0)
    run = run_ours if args.child == "ours" else run_baseline
    print(json.dumps(run(args, args.child_images)))


def _child_run(args, method: str, count: int) -> dict:
    command = [sys.executable, __file__, "--child", method, "--child-images", str(count)]
    command += ["--model", args.model, "--scorer", args.scorer, "--vocab", args.vocab]
    command += ["--top-k", str(args.top_k), "--units", str(args.units)]
    command += ["--batch-size", str(args.batch_size), "--sample-size", str(args.sample_size)]
    command += ["--device", args.device, "--num-workers", str(args.num_workers)]
    command += ["--precision", args.precision]
    command += ["--layers", *args.layers]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(args, count: int) -> dict:
    ours = _child_run(args, "ours", count)
    baseline = _child_run(args, "baseline", count)
    for run in (ours, baseline):
        run["working_mib"] = (run["peak_rss_kib"] - run["loaded_rss_kib"]) / 1024
    return {
        "images": count,
        "images_per_exemplar_patch": count / ours["exemplar_slots"],
        "time_ratio": baseline["seconds"] / ours["seconds"],
        "working_memory_ratio": baseline["working_mib"] / max(ours["working_mib"], 1e-3),
        # The whole process, loaded models and libraries included (the same in both).
        "peak_rss_ratio": baseline["peak_rss_kib"] / ours["peak_rss_kib"],
        "device_memory_ratio": (
            baseline["device_working_mib"] / max(ours["device_working_mib"], 1e-3)
            if ours["device_working_mib"] is not None
            else None
        ),
        "state_bytes_ratio": baseline["state_bytes"] / ours["state_bytes"],
        # Patches encoded per exemplar slot (below 1: regions shared by several neurons).
        "dedup_ratio": ours["unique_exemplar_patches"] / ours["exemplar_slots"],
        "ours": ours,
        "baseline": baseline,
    }


def distributed(args) -> dict:
    folder = Path(tempfile.mkdtemp())
    images = folder / "images"
    images.mkdir()
    noise = NoiseImages(args.dist_images)
    for i in range(len(noise)):
        noise[i].save(images / f"{i:05d}.jpg", quality=90)
    base = ["explain", "packaged:efficientnet_lite0", "--layer", "blocks.4", "--layer", "bn2"]
    base += ["--images", str(images), "--scorer", "color", "--vocab", "colors", "--top-k", "5"]
    base += ["--scoring", "patches", "--no-cache", "--no-html", "--quiet", "--device", "cpu"]
    env = {**os.environ, "NEUROLABEL_CACHE_DIR": str(folder / "cache")}
    timings = {}
    for name, launcher, threads in [
        ("one_process", [sys.executable, "-m", "neurolabel"], "2"),
        (
            "two_ranks",
            [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            + ["--nproc-per-node", "2", "-m", "neurolabel"],
            "1",
        ),
    ]:
        start = time.perf_counter()
        out = subprocess.run(
            [*launcher, *base, "--out", str(folder / name)],
            env={**env, "OMP_NUM_THREADS": threads},
            capture_output=True,
            text=True,
        )
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        timings[name] = time.perf_counter() - start
    one = json.loads((folder / "one_process" / "result.json").read_text())
    two = json.loads((folder / "two_ranks" / "result.json").read_text())
    return {
        "images": args.dist_images,
        "same_result": one["neurons"] == two["neurons"],
        "world_size": two["settings"]["world_size"],
        "seconds_one_process": timings["one_process"],
        "seconds_two_ranks": timings["two_ranks"],
        "time_ratio": timings["one_process"] / timings["two_ranks"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="torchvision:resnet18?weights=none")
    parser.add_argument("--layers", nargs="+", default=["layer1", "layer2", "layer3", "layer4"])
    parser.add_argument("--units", type=int, default=16, help="units explained per layer")
    # Random weights cost the same as real ones. CLIP-Dissect's concept set is the 20,000
    # most common English words: its [N, V] image-concept matrix is most of its memory.
    parser.add_argument("--scorer", default="open_clip:ViT-B-32?pretrained=none&templates=none")
    parser.add_argument("--vocab", default="words:20000")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu", help="cpu, cuda (both methods)")
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--sample-size", type=int, default=2000, help="as the labeler")
    parser.add_argument("--images", type=int, default=24000)
    parser.add_argument("--small-images", type=int, default=200)
    parser.add_argument("--dist-images", type=int, default=240)
    parser.add_argument("--skip", nargs="*", default=[], choices=["large", "small", "dist"])
    parser.add_argument("--json", dest="json_path")
    parser.add_argument("--child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    parser.add_argument("--child-images", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    if args.child:
        child(args)
        return
    report: dict = {
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("child", "child_images", "json_path")
        }
    }
    report["settings"]["torch_threads"] = torch.get_num_threads()
    if "large" not in args.skip:
        report["images_outnumber_patches"] = compare(args, args.images)
    if "small" not in args.skip:
        report["patches_outnumber_images"] = compare(args, args.small_images)
    if "dist" not in args.skip:
        report["distributed"] = distributed(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json_path:
        Path(args.json_path).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
