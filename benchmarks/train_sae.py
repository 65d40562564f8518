"""Train a small sparse autoencoder on one layer's activations, for ``--units-from sae:FILE``.

    python benchmarks/train_sae.py --images DIR --out sae.safetensors

Streams the probing images through the target once, keeps every position's channel vector
of the layer (EfficientNet-Lite0 ``blocks.6``: 320 channels, 49 positions per image; 250
images give 12,250 vectors), and trains a ReLU SAE ``relu((x - b_dec) W_enc + b_enc)``
with a decoder whose columns have unit norm, loss = mean squared reconstruction error
(on standardized inputs) + ``l1`` x the mean L1 norm of the latents, Adam. Saves
``W_enc [C, U]``, ``b_enc``, ``W_dec [U, C]``, ``b_dec`` (SAELens' names) as safetensors,
and prints the fraction of variance explained, the mean number of active latents per
position and the number of latents never active, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def layer_vectors(target: str, layer: str, images: Path, batch_size: int) -> torch.Tensor:
    """``[N * H * W, C]``: the layer's channel vector at every position of every image."""
    from neurolabel import build_context, resolve_model
    from neurolabel.plugin_core.data.images import as_image_source
    from neurolabel.plugin_core.data.probe_dataset import ProbeDataset

    ctx = build_context("cpu")
    loaded = resolve_model(target, ctx)
    extractor = ctx.registries.extractors.resolve("hooks", ctx)
    loader = torch.utils.data.DataLoader(
        ProbeDataset(as_image_source(images), loaded.preprocessing), batch_size=batch_size
    )
    parts = []
    with extractor.open(loaded, [layer]) as read, torch.inference_mode():
        for batch, _, errors in loader:
            ok = torch.tensor([not e for e in errors], dtype=torch.bool)
            acts = read(batch[ok])[layer]
            parts.append(acts.permute(0, 2, 3, 1).reshape(-1, acts.shape[1]).clone())
    return torch.cat(parts)


def train(vectors: torch.Tensor, latents: int, l1: float, steps: int, seed: int) -> dict:
    generator = torch.Generator().manual_seed(seed)
    channels = vectors.shape[1]
    scale = vectors.std(dim=0).mean()  # the loss is on inputs of unit average spread
    x = vectors / scale
    w_dec = torch.randn(latents, channels, generator=generator)
    w_dec = torch.nn.Parameter(w_dec / w_dec.norm(dim=1, keepdim=True))
    w_enc = torch.nn.Parameter(w_dec.detach().T.clone())
    b_enc = torch.nn.Parameter(torch.zeros(latents))
    b_dec = torch.nn.Parameter(x.mean(dim=0).clone())
    optimizer = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=1e-3)
    batch = 1024
    for _ in range(steps):
        rows = torch.randint(len(x), (batch,), generator=generator)
        sample = x[rows]
        codes = torch.relu((sample - b_dec) @ w_enc + b_enc)
        loss = ((codes @ w_dec + b_dec - sample) ** 2).sum(1).mean() + l1 * codes.sum(1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # unit-norm decoder columns keep the L1 penalty meaningful
            w_dec /= w_dec.norm(dim=1, keepdim=True).clamp(min=1e-8)
    with torch.no_grad():
        codes = torch.relu((x - b_dec) @ w_enc + b_enc)
        error = ((codes @ w_dec + b_dec - x) ** 2).sum()
        explained = 1 - float(error / ((x - x.mean(dim=0)) ** 2).sum())
        stats = {
            "variance_explained": round(explained, 4),
            "active_per_position": round(float((codes > 0).sum(1).float().mean()), 2),
            "never_active": int(((codes > 0).sum(0) == 0).sum()),
        }
    # Back to the layer's own scale: the file encodes raw activations.
    return {
        "tensors": {
            "W_enc": (w_enc.detach() / scale).contiguous(),
            "b_enc": b_enc.detach().contiguous(),
            "W_dec": (w_dec.detach() * scale).contiguous(),
            "b_dec": (b_dec.detach() * scale).contiguous(),
        },
        "stats": stats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="packaged:efficientnet_lite0")
    parser.add_argument("--layer", default="blocks.6")
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--latents", type=int, default=1024)
    parser.add_argument("--l1", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safetensors.torch import save_file

    started = time.perf_counter()
    vectors = layer_vectors(args.target, args.layer, args.images, args.batch_size)
    trained = train(vectors, args.latents, args.l1, args.steps, args.seed)
    save_file(trained["tensors"], str(args.out))
    report = {
        **trained["stats"],
        "vectors": len(vectors),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
