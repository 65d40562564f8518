"""Model sources torchvision:, timm:, file:, python: (offline: random or local weights)."""

from __future__ import annotations

import sys
import textwrap
import urllib.error
import uuid
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision import transforms as T

from neurolabel.adapters.model_sources import (
    _timm_class_names,
    preprocessing_from_transform,
    state_dict_from_checkpoint,
)
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.contracts import LoadedModel


def resolve(ctx, spec: str) -> LoadedModel:
    return ctx.registries.model_sources.resolve(spec, ctx)


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key])


def test_all_sources_registered(ctx) -> None:
    names = ctx.registries.model_sources.names()
    assert {"torchvision", "timm", "file", "python", "packaged"} <= set(names)
    entry = ctx.registries.model_sources.get("torchvision")
    assert entry.plugin == "neurolabel.adapters.model_sources"
    assert "weights=none" in entry.description


# --------------------------------------------------------------------------- torchvision


def test_torchvision_without_weights(ctx) -> None:
    loaded = resolve(ctx, "torchvision:resnet18?weights=none")
    assert not loaded.model.training
    assert loaded.name == "torchvision:resnet18?weights=none"
    assert loaded.class_names is None  # random weights: output units mean nothing
    assert loaded.preprocessing == Preprocessing()  # ImageNet 256/224 recipe
    assert next(loaded.model.parameters()).device == ctx.device
    assert loaded.model(torch.zeros(1, 3, 64, 64)).shape == (1, 1000)


def test_torchvision_weights_from_local_cache(ctx, tmp_path, monkeypatch) -> None:
    # torchvision looks in $TORCH_HOME/hub/checkpoints before downloading: put a file there.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    reference = torchvision.models.resnet18(weights=None)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(reference.state_dict(), cache / Path(weights.url).name)
    for spec in (
        "torchvision:resnet18",
        "torchvision:ResNet18?weights=IMAGENET1K_V1",
        "torchvision:resnet18?weights=ResNet18_Weights.IMAGENET1K_V1",
    ):
        loaded = resolve(ctx, spec)
        assert_same_weights(loaded.model, reference)
        assert loaded.class_names is not None and len(loaded.class_names) == 1000
        assert loaded.class_names[0] == "tench"
        assert loaded.preprocessing.crop_size == (224, 224)
        assert loaded.preprocessing.resize_size == 256
        assert loaded.preprocessing.interpolation == "bilinear"


def test_torchvision_download_failure_explains_offline_options(ctx, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(NeurolabelError, match="weights=none") as info:
        resolve(ctx, "torchvision:resnet18")
    assert "checkpoints" in str(info.value)


def test_torchvision_vit_prefix_tokens(ctx) -> None:
    loaded = resolve(ctx, "torchvision:vit_b_16?weights=none")
    assert loaded.prefix_tokens == 1


def test_torchvision_errors(ctx) -> None:
    with pytest.raises(SpecError, match="resnet18"):
        resolve(ctx, "torchvision:resnet81?weights=none")
    with pytest.raises(SpecError, match="IMAGENET1K_V1"):
        resolve(ctx, "torchvision:resnet18?weights=IMAGENET1K_V9")
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, "torchvision:resnet18?weights=none&pretrained=false")
    with pytest.raises(SpecError, match="needs"):
        resolve(ctx, "torchvision")


def test_preprocessing_from_weights_preset() -> None:
    preset = torchvision.models.ViT_B_16_Weights.IMAGENET1K_SWAG_E2E_V1.transforms()
    p = preprocessing_from_transform(preset)
    assert p.crop_size == (384, 384) and p.resize_size == 384
    assert p.interpolation == "bicubic"


# --------------------------------------------------------------------------- timm


def test_timm_random_weights_and_preprocessing(ctx) -> None:
    loaded = resolve(ctx, "timm:vit_tiny_patch16_224?pretrained=none")
    assert loaded.prefix_tokens == 1
    assert loaded.class_names is None
    assert not loaded.model.training
    p = loaded.preprocessing
    assert p.crop_size == (224, 224)
    assert p.resize_size == round(224 / 0.9)  # timm's crop_pct for this ViT
    assert p.mean == (0.5, 0.5, 0.5) and p.interpolation == "bicubic"
    resnet = resolve(ctx, "timm:resnet18?pretrained=false")
    assert resnet.prefix_tokens is None
    assert resnet.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))


def test_timm_checkpoint(ctx, tmp_path) -> None:
    torch.manual_seed(1)
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    plain = tmp_path / "plain.pth"
    torch.save(reference.state_dict(), plain)
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, nested)
    for file in (plain, nested):
        loaded = resolve(ctx, f"timm:resnet18?checkpoint={file}&num_classes=10")
        assert_same_weights(loaded.model, reference)
        assert loaded.class_names is None
    with pytest.raises(NeurolabelError, match="does not fit"):
        resolve(ctx, f"timm:resnet18?checkpoint={plain}")  # 1000-class head
    with pytest.raises(NeurolabelError, match="does not exist"):
        resolve(ctx, f"timm:resnet18?checkpoint={tmp_path / 'missing.pth'}")


def test_timm_errors(ctx) -> None:
    with pytest.raises(SpecError, match="vit_tiny_patch16_224"):
        resolve(ctx, "timm:vit_tiny_patch16?pretrained=false")
    with pytest.raises(NeurolabelError, match="no pretrained weights"):
        resolve(ctx, "timm:efficientnet_lite1")  # timm has none for it: fails offline too
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, "timm:resnet18?weights=none")


def test_timm_pretrained_offline_error(ctx) -> None:
    import huggingface_hub.constants

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        pytest.skip("HF_HUB_OFFLINE is off: the test would try to download")
    with pytest.raises(NeurolabelError, match="checkpoint=PATH"):
        resolve(ctx, "timm:resnet18")


def test_timm_imagenet_class_names() -> None:
    names = _timm_class_names(timm.create_model("resnet18", pretrained=False))
    assert names is not None and len(names) == 1000
    assert names[0] == "tench" and names[1] == "goldfish"
    assert _timm_class_names(timm.create_model("resnet18", num_classes=10)) is None


# --------------------------------------------------------------------------- file


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still loadable
def test_file_torchscript(ctx, tmp_path) -> None:
    model = small_cnn()
    path = tmp_path / "model.pt"
    torch.jit.save(torch.jit.script(model), str(path))
    loaded = resolve(ctx, f"file:{path}?size=64")
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded.model(x), model(x))
    assert loaded.preprocessing.crop_size == (64, 64)
    assert loaded.preprocessing.resize_size == 73  # keeps the 256/224 ratio
    squash = resolve(ctx, f"file:{path}?size=32&resize=none&mean=0.5&std=0.5,0.5,0.5")
    assert squash.preprocessing.resize_size is None
    assert squash.preprocessing.mean == (0.5, 0.5, 0.5)


def test_file_pickled_module_needs_trust(ctx, tmp_path) -> None:
    model = small_cnn()
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(NeurolabelError) as info:
        resolve(ctx, f"file:{path}")
    message = str(info.value)
    assert "executes code" in message
    assert "trust=true" in message and "--trust-pickle" in message
    x = torch.randn(2, 3, 16, 16)
    loaded = resolve(ctx, f"file:{path}?trust=true&classes=imagenet")
    torch.testing.assert_close(loaded.model(x), model(x))
    assert not loaded.model.training
    assert loaded.class_names is not None and loaded.class_names[0] == "tench"
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 (non-zip) format
    torch.save(model, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(NeurolabelError, match="executes code"):
        resolve(ctx, f"file:{legacy}")
    torch.testing.assert_close(resolve(ctx, f"file:{legacy}?trust=1").model(x), model(x))
    from neurolabel.plugin_core.plugins.resolve import build_context

    trusting = build_context("cpu", trust_pickle=True)
    loaded = trusting.registries.model_sources.resolve(f"file:{path}", trusting)
    torch.testing.assert_close(loaded.model(x), model(x))


def test_file_state_dict_points_to_python_and_timm(ctx, tmp_path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(small_cnn().state_dict(), path)
    checkpoint = tmp_path / "ckpt.pt"
    torch.save({"model": small_cnn().state_dict(), "epoch": 1}, checkpoint)
    for file in (path, checkpoint):
        with pytest.raises(NeurolabelError, match="only weights") as info:
            resolve(ctx, f"file:{file}")
        assert "python:" in str(info.value) and "state_dict=" in str(info.value)
        assert "checkpoint=" in str(info.value)


def test_file_errors(ctx, tmp_path) -> None:
    with pytest.raises(NeurolabelError, match="does not exist"):
        resolve(ctx, f"file:{tmp_path / 'nope.pt'}")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(NeurolabelError, match="neither"):
        resolve(ctx, f"file:{garbage}")
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, f"file:{garbage}?weights=none")
    tensor_file = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(NeurolabelError, match="not a model"):
        resolve(ctx, f"file:{tensor_file}")


# --------------------------------------------------------------------------- python

MODULE_CODE = """
import torch
from torch import nn
from torchvision import transforms as T

from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.plugins.contracts import LoadedModel


def build():
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(1), nn.LazyLinear(2))


def build_conv():
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def with_transform():
    transform = T.Compose([T.Resize(80), T.CenterCrop(64), T.ToTensor(),
                           T.Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))])
    return build_conv(), transform


def with_preprocessing():
    return build_conv(), Preprocessing(crop_size=(32, 32), resize_size=40)


def loaded():
    return LoadedModel(build_conv(), Preprocessing(), "mine", class_names=["a", "b"],
                       prefix_tokens=0)


def not_a_model():
    return 42


NOT_CALLABLE = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch) -> str:
    name = f"nl_user_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE_CODE))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_python_module_and_transforms(ctx, user_module) -> None:
    loaded = resolve(ctx, f"python:{user_module}:with_transform")
    p = loaded.preprocessing
    assert (p.crop_size, p.resize_size, p.mean, p.std) == (
        (64, 64),
        80,
        (0.5, 0.5, 0.5),
        (0.25, 0.25, 0.25),
    )
    assert not loaded.model.training
    assert resolve(ctx, f"python:{user_module}:with_preprocessing").preprocessing.crop_size == (
        32,
        32,
    )
    overridden = resolve(ctx, f"python:{user_module}:with_preprocessing?size=48")
    assert overridden.preprocessing.crop_size == (48, 48)
    assert overridden.preprocessing.resize_size == 60  # keeps the callable's 40/32 ratio
    mine = resolve(ctx, f"python:{user_module}:loaded")
    assert mine.class_names == ["a", "b"] and mine.prefix_tokens == 0
    assert mine.name == f"python:{user_module}:loaded"


def test_python_state_dict(ctx, user_module, tmp_path) -> None:
    torch.manual_seed(7)
    trained = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)
    )
    plain = tmp_path / "w.pt"
    torch.save(trained.state_dict(), plain)
    ddp = tmp_path / "ddp.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, ddp)
    for file in (plain, ddp):
        loaded = resolve(ctx, f"python:{user_module}:build_conv?state_dict={file}")
        assert_same_weights(loaded.model, trained)
    wrong = tmp_path / "wrong.pt"
    torch.save(nn.Linear(3, 3).state_dict(), wrong)
    with pytest.raises(NeurolabelError, match="missing keys") as info:
        resolve(ctx, f"python:{user_module}:build_conv?state_dict={wrong}")
    assert "0.weight" in str(info.value)
    pickled = tmp_path / "pickled.pt"
    torch.save(trained, pickled)
    with pytest.raises(NeurolabelError, match="state_dict"):
        resolve(ctx, f"python:{user_module}:build_conv?state_dict={pickled}")


def test_python_errors(ctx, user_module) -> None:
    with pytest.raises(NeurolabelError, match="Cannot import module"):
        resolve(ctx, "python:no_such_module_xyz:build")
    with pytest.raises(NeurolabelError, match="no attribute 'buid'") as info:
        resolve(ctx, f"python:{user_module}:buid")
    assert "build" in str(info.value)
    with pytest.raises(NeurolabelError, match="not a callable"):
        resolve(ctx, f"python:{user_module}:NOT_CALLABLE")
    with pytest.raises(NeurolabelError, match="must return an nn.Module"):
        resolve(ctx, f"python:{user_module}:not_a_model")
    with pytest.raises(SpecError, match="module.path:callable"):
        resolve(ctx, f"python:{user_module}")
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, f"python:{user_module}:build?trust=true")


def test_python_imports_from_current_folder(ctx, tmp_path, monkeypatch) -> None:
    name = f"nl_cwd_models_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODULE_CODE))
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    try:
        loaded = resolve(ctx, f"python:{name}:build_conv")
    finally:
        sys.modules.pop(name, None)
    assert isinstance(loaded.model, nn.Sequential)
    assert sys.path == path_before


def test_python_class_names_file(ctx, user_module, tmp_path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("cat\ndog\n\n")
    loaded = resolve(ctx, f"python:{user_module}:build_conv?classes={names}")
    assert loaded.class_names == ["cat", "dog"]


# --------------------------------------------------------------------------- helpers


def test_preprocessing_from_transform_variants() -> None:
    squash = preprocessing_from_transform(T.Compose([T.Resize((32, 48)), T.ToTensor()]))
    assert squash.crop_size == (32, 48) and squash.resize_size is None
    with pytest.raises(NeurolabelError, match="RandomHorizontalFlip"):
        preprocessing_from_transform(T.Compose([T.RandomHorizontalFlip(), T.CenterCrop(8)]))
    with pytest.raises(NeurolabelError, match="input size varies"):
        preprocessing_from_transform(T.Compose([T.Resize(64), T.ToTensor()]))


def test_state_dict_from_checkpoint_errors() -> None:
    with pytest.raises(NeurolabelError, match="top-level keys: epoch"):
        state_dict_from_checkpoint({"epoch": 3}, "c.pt")
    compiled = {"_orig_mod.w": torch.ones(1)}
    assert list(state_dict_from_checkpoint(compiled, "c.pt")) == ["w"]
