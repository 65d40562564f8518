"""The ``hooks`` extractor: shapes, token grids, early stop, hook hygiene, errors."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from torch import Tensor, nn

from neurolabel.adapters.hook_extractor import HookExtractor, first_tensor, tokens_to_grid
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import LayerNotFoundError, NeurolabelError
from neurolabel.plugin_core.plugins.contracts import Extractor, LoadedModel

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def resnet() -> LoadedModel:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    # 64 px keeps every layer's map non-trivial (layer4: 2x2) and the tests fast.
    return LoadedModel(model, Preprocessing(crop_size=(64, 64), resize_size=73), "resnet18")


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    torch.manual_seed(0)
    # 112 px: a 7x7 patch grid plus CLS, a quarter of the 224 px cost.
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112).eval()
    return LoadedModel(model, Preprocessing(crop_size=(112, 112), resize_size=128), "vit_tiny")


def _manual(model: nn.Module, names: list[str], x: Tensor) -> dict[str, Tensor]:
    """Reference: plain forward hooks that keep a copy of each module's last output."""
    out: dict[str, Tensor] = {}
    handles = [
        model.get_submodule(n).register_forward_hook(
            lambda m, a, o, n=n: out.__setitem__(n, first_tensor(o).detach().clone())
        )
        for n in names
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return out


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_registered_and_satisfies_protocol(ctx) -> None:
    extractor = ctx.registries.extractors.resolve("hooks", ctx)
    assert extractor.name == "hooks"
    assert extractor.device == ctx.device
    assert isinstance(extractor, Extractor)
    entry = ctx.registries.extractors.get("hooks")
    assert entry.plugin == "neurolabel.adapters.hook_extractor"


def test_resnet_shapes_dtype_and_equality_with_manual_hooks(resnet: LoadedModel) -> None:
    layers = ["conv1", "layer1", "layer3.1.conv2", "layer4", "avgpool", "fc"]
    x = torch.randn(3, 3, 64, 64)
    with HookExtractor(CPU).open(resnet, layers) as read:
        acts = read(x)
    assert list(acts) == layers
    assert acts["conv1"].shape == (3, 64, 32, 32)
    assert acts["layer4"].shape == (3, 512, 2, 2)
    assert acts["avgpool"].shape == (3, 512, 1, 1)
    assert acts["fc"].shape == (3, 1000)
    reference = _manual(resnet.model, layers, x)
    for name in layers:
        assert acts[name].dtype == torch.float32
        assert not acts[name].requires_grad
        torch.testing.assert_close(acts[name], reference[name])


def test_output_is_copied_before_inplace_relu(resnet: LoadedModel) -> None:
    # resnet's bn1 output is overwritten by ReLU(inplace=True); a reference would be >= 0.
    x = torch.randn(2, 3, 64, 64)
    with HookExtractor(CPU).open(resnet, ["bn1"]) as read:
        got = read(x)["bn1"]
    with torch.no_grad():
        expected = resnet.model.bn1(resnet.model.conv1(x))
    torch.testing.assert_close(got, expected)
    assert (got < 0).any()
    got.mul_(2)  # a normal tensor, usable outside inference mode


def test_consumed_layers_are_handed_over_during_the_pass_before_inplace_ops(
    resnet: LoadedModel,
) -> None:
    # bn1 is overwritten by an in-place ReLU right after; layer1.0.relu runs twice per pass.
    layers = ["bn1", "layer1.0.relu", "layer2"]
    x1, x2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    handed: dict[str, Tensor] = {}

    def consume(name: str, acts: Tensor) -> None:
        assert not torch.is_inference_mode_enabled() and acts.dtype == torch.float32
        handed[name] = acts.clone()

    with HookExtractor(CPU).open(resnet, layers) as read:
        assert set(read(x1, consume=consume)) == set(layers)  # the first batch comes whole
        assert not handed
        rest = read(x2, consume=consume)
    reference = _manual(resnet.model, layers, x2)
    assert set(rest) == {"layer1.0.relu"} and set(handed) == {"bn1", "layer2"}
    with torch.no_grad():
        bn1 = resnet.model.bn1(resnet.model.conv1(x2))
    torch.testing.assert_close(handed["bn1"], bn1)
    assert (handed["bn1"] < 0).any()  # before the in-place ReLU
    torch.testing.assert_close(handed["layer2"], reference["layer2"])
    torch.testing.assert_close(rest["layer1.0.relu"], reference["layer1.0.relu"])


def test_early_stop_skips_later_layers_and_keeps_values(resnet: LoadedModel) -> None:
    fc_calls = []
    handle = resnet.model.fc.register_forward_hook(lambda *a: fc_calls.append(1))
    x1, x2 = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    try:
        with HookExtractor(CPU).open(resnet, ["layer1"]) as read:
            read(x1)  # counts the calls: runs the whole model once
            assert len(fc_calls) == 1
            early = read(x2)["layer1"]
            assert len(fc_calls) == 1  # stopped before fc
    finally:
        handle.remove()
    torch.testing.assert_close(early, _manual(resnet.model, ["layer1"], x2)["layer1"])


def test_module_called_twice_reports_its_last_call(resnet: LoadedModel) -> None:
    # BasicBlock calls its one ReLU twice; the last call is the block's output.
    x = torch.randn(2, 3, 64, 64)
    with HookExtractor(CPU).open(resnet, ["layer1.0.relu", "layer1.0"]) as read:
        for _ in range(2):  # second batch uses early stop
            acts = read(x)
            torch.testing.assert_close(acts["layer1.0.relu"], acts["layer1.0"])


def test_hooks_removed_on_exit_and_on_interrupt(resnet: LoadedModel) -> None:
    before = _hook_count(resnet.model)
    extractor = HookExtractor(CPU)
    with extractor.open(resnet, ["layer2", "fc"]) as read:
        assert _hook_count(resnet.model) == before + 2
        read(torch.randn(1, 3, 64, 64))
    assert _hook_count(resnet.model) == before
    with pytest.raises(KeyboardInterrupt), extractor.open(resnet, ["layer2"]):
        raise KeyboardInterrupt
    assert _hook_count(resnet.model) == before
    with pytest.raises(NeurolabelError, match="ended"):
        read(torch.randn(1, 3, 64, 64))


def test_wrong_layer_lists_valid_layers_and_closest(resnet: LoadedModel) -> None:
    with pytest.raises(LayerNotFoundError) as info, HookExtractor(CPU).open(resnet, ["layer5"]):
        pass
    message = str(info.value)
    assert "Closest: layer4" in message
    # The first 40 of 67 names, and where to see them all: a deep model has hundreds.
    assert "conv1" in message and "layer4.1.conv2" not in message
    assert "67 in all" in message and "neurolabel layers" in message
    assert _hook_count(resnet.model) == 0


def test_timm_vit_drops_cls_and_reshapes_to_grid(vit: LoadedModel) -> None:
    x = torch.randn(2, 3, 112, 112)
    layers = ["patch_embed", "blocks.3", "norm", "head"]
    with HookExtractor(CPU).open(vit, layers) as read:
        acts = read(x)
    reference = _manual(vit.model, layers, x)
    tokens = reference["blocks.3"]  # [2, 1 + 49, 192], CLS first
    expected = tokens[:, 1:, :].reshape(2, 7, 7, 192).permute(0, 3, 1, 2)
    torch.testing.assert_close(acts["blocks.3"], expected)
    assert acts["norm"].shape == (2, 192, 7, 7)
    # patch_embed runs before the CLS token is prepended: all 49 tokens are patches.
    expected_embed = reference["patch_embed"].reshape(2, 7, 7, 192).permute(0, 3, 1, 2)
    torch.testing.assert_close(acts["patch_embed"], expected_embed)
    assert acts["head"].shape == (2, 1000)


def test_timm_vit_registers_and_non_square_grid() -> None:
    torch.manual_seed(0)
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=(32, 64), reg_tokens=4
    ).eval()
    assert model.num_prefix_tokens == 5
    loaded = LoadedModel(model, Preprocessing(crop_size=(32, 64), resize_size=None), "vit")
    x = torch.randn(2, 3, 32, 64)
    with HookExtractor(CPU).open(loaded, ["blocks.1"]) as read:
        got = read(x)["blocks.1"]
    tokens = _manual(model, ["blocks.1"], x)["blocks.1"]  # [2, 5 + 2*4, 192]
    expected = tokens[:, 5:, :].reshape(2, 2, 4, 192).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, expected)


def test_loaded_prefix_tokens_overrides_model() -> None:
    # A model that says nothing about its tokens: the LoadedModel's count is used.
    class Tokens(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.flatten(2)[:, :, :20].transpose(1, 2)  # [B, 20, 3]

    model = nn.Sequential(Tokens()).eval()
    loaded = LoadedModel(model, Preprocessing(crop_size=(8, 8)), "tok", prefix_tokens=4)
    x = torch.randn(2, 3, 8, 8)
    with HookExtractor(CPU).open(loaded, ["0"]) as read:
        got = read(x)["0"]
    expected = x.flatten(2)[:, :, 4:20].reshape(2, 3, 4, 4)
    torch.testing.assert_close(got, expected)


def test_torchvision_vit_class_token() -> None:
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32
    ).eval()
    loaded = LoadedModel(model, Preprocessing(crop_size=(32, 32), resize_size=36), "tv-vit")
    layer = "encoder.layers.encoder_layer_1"
    x = torch.randn(2, 3, 32, 32)
    with HookExtractor(CPU).open(
        loaded, [layer, "encoder.layers.encoder_layer_0.self_attention"]
    ) as read:
        acts = read(x)
    tokens = _manual(model, [layer], x)[layer]  # [2, 1 + 16, 16]
    torch.testing.assert_close(acts[layer], tokens[:, 1:].reshape(2, 4, 4, 16).permute(0, 3, 1, 2))
    # nn.MultiheadAttention returns (output, weights): the output is read.
    assert acts["encoder.layers.encoder_layer_0.self_attention"].shape == (2, 16, 4, 4)


def test_tokens_to_grid_inference_and_errors() -> None:
    tokens = torch.arange(2 * 17 * 3, dtype=torch.float32).reshape(2, 17, 3)
    grid = tokens_to_grid(tokens)  # 17 = 1 + 4*4
    torch.testing.assert_close(grid[:, :, 0, 0], tokens[:, 1, :])
    assert tokens_to_grid(tokens, prefix_tokens=1).shape == (2, 3, 4, 4)
    assert tokens_to_grid(torch.zeros(1, 2 + 12, 5), grid=(3, 4)).shape == (1, 5, 3, 4)
    assert tokens_to_grid(torch.zeros(1, 12, 5), prefix_tokens=2, grid=(3, 4)).shape == (
        1,
        5,
        3,
        4,
    )
    with pytest.raises(NeurolabelError, match="not a grid of patch tokens"):
        tokens_to_grid(torch.zeros(1, 7, 5), prefix_tokens=1, layer="odd")


def test_first_tensor_of_containers_and_odd_outputs() -> None:
    class Multi(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)

        def forward(self, x: Tensor) -> dict[str, object]:
            return {"meta": "x", "feat": (self.conv(x), x)}

    class Video(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            return x.unsqueeze(2)  # [B, 3, 1, H, W]

    class Nothing(nn.Module):
        def forward(self, x: Tensor) -> str:
            return "none"

    model = nn.ModuleDict({"multi": Multi(), "video": Video(), "nothing": Nothing()})
    model.forward = lambda x: (model["multi"](x), model["video"](x), model["nothing"](x))
    loaded = LoadedModel(model, Preprocessing(crop_size=(8, 8)), "multi")
    x = torch.randn(2, 3, 8, 8)
    with HookExtractor(CPU).open(loaded, ["multi"]) as read:
        assert read(x)["multi"].shape == (2, 4, 8, 8)
    with (
        pytest.raises(NeurolabelError, match="5-D"),
        HookExtractor(CPU).open(loaded, ["video"]) as read,
    ):
        read(x)
    with (
        pytest.raises(NeurolabelError, match="no tensor"),
        HookExtractor(CPU).open(loaded, ["nothing"]) as read,
    ):
        read(x)
    assert _hook_count(model) == 0


def test_layer_that_never_runs_is_reported() -> None:
    class Partly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.unused = nn.Linear(2, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.conv(x)

    model = Partly()
    loaded = LoadedModel(model.eval(), Preprocessing(crop_size=(8, 8)), "m")
    with (
        pytest.raises(NeurolabelError, match="did not run"),
        HookExtractor(CPU).open(loaded, ["unused"]) as read,
    ):
        read(torch.randn(1, 3, 8, 8))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, still loadable
def test_torchscript_model_is_refused_clearly() -> None:
    model = torch.jit.trace(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), torch.zeros(1, 3, 8, 8))
    loaded = LoadedModel(model, Preprocessing(crop_size=(8, 8)), "ts")
    with (
        pytest.raises(NeurolabelError, match="TorchScript"),
        HookExtractor(CPU).open(loaded, ["0"]),
    ):
        pass


def test_list_layers_resnet(resnet: LoadedModel) -> None:
    infos = HookExtractor(CPU).list_layers(resnet)
    by_name = {i.name: i for i in infos}
    assert "" not in by_name
    assert by_name["layer4"].shape == (512, 2, 2) and by_name["layer4"].kind == "spatial"
    assert by_name["layer4"].type == "Sequential"
    assert by_name["fc"].shape == (1000,) and by_name["fc"].kind == "vector"
    assert by_name["layer1.0.conv1"].type == "Conv2d"
    assert len(infos) == len([n for n, _ in resnet.model.named_modules() if n])
    assert _hook_count(resnet.model) == 0


def test_list_layers_vit_reports_tokens(vit: LoadedModel) -> None:
    infos = {i.name: i for i in HookExtractor(CPU).list_layers(vit)}
    assert infos["blocks.0"].shape == (50, 192) and infos["blocks.0"].kind == "tokens"
    assert infos["patch_embed.proj"].kind == "spatial"
    assert infos["head"].shape == (1000,)
    assert "blocks" in infos  # a Sequential that runs is listed


def test_timm_swin_channels_last_and_windowed_attention() -> None:
    torch.manual_seed(0)
    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        img_size=(32, 48),
        window_size=4,
        embed_dim=16,
        depths=(1, 1),
        num_heads=(1, 1),
    ).eval()
    assert model.output_fmt == "NHWC"
    loaded = LoadedModel(model, Preprocessing(crop_size=(32, 48), resize_size=None), "swin")
    x = torch.randn(2, 3, 32, 48)
    with HookExtractor(CPU).open(loaded, ["layers.0", "patch_embed.proj"]) as read:
        acts = read(x)
    reference = _manual(model, ["layers.0"], x)["layers.0"]  # [2, 8, 12, 16] channels-last
    torch.testing.assert_close(acts["layers.0"], reference.permute(0, 3, 1, 2))
    assert acts["patch_embed.proj"].shape == (2, 16, 8, 12)  # a conv: already [B, C, H, W]
    infos = {i.name: i for i in HookExtractor(CPU).list_layers(loaded)}
    assert infos["layers.1"].shape == (32, 4, 6) and infos["layers.1"].kind == "spatial"
    attn = "layers.0.blocks.0.attn"  # windows folded into the batch: [B * windows, 16, C]
    assert infos[attn].kind == "other"
    with (
        pytest.raises(NeurolabelError, match="not the batch size"),
        HookExtractor(CPU).open(loaded, [attn]) as read,
    ):
        read(x)
