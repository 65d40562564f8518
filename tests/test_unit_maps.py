"""Units that are not channels: directions and sparse-autoencoder latents, with known truth.

The target's layer ``mix`` has 8 channels, each a blend of a planted red detector and a
planted blue detector (and a green one), so no channel is about one color; the unmixing
directions, or the latents of a small SAE trained on the layer, recover the detectors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from neurolabel import NeuronLabeler
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.plugins import Register, UnitMap, hookimpl
from neurolabel.plugin_core.plugins.resolve import build_context

#: Each channel of ``mix`` = MIXING @ (red, blue, green) detector responses.
MIXING = torch.tensor(
    [
        [1.0, 0.9, 0.1],
        [0.9, 1.0, 0.2],
        [0.6, 0.7, 0.5],
        [1.0, 1.0, 0.0],
        [0.5, 0.6, 0.9],
        [0.8, 0.8, 0.3],
        [0.7, 0.9, 0.4],
        [1.0, 0.8, 0.2],
    ]
)
SMALL = Preprocessing((32, 32), 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
COLORS = {"red": (230, 20, 20), "blue": (20, 20, 230), "green": (20, 200, 20)}


class Mixed(nn.Module):
    """detectors (red, blue, green; 1x1 conv + ReLU) -> mix (8 blended channels)."""

    def __init__(self) -> None:
        super().__init__()
        self.detect = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU())
        self.mix = nn.Conv2d(3, 8, 1, bias=False)
        with torch.no_grad():
            self.detect[0].weight.copy_(
                torch.tensor([[1.0, -1, -1], [-1, -1, 1], [-1, 1, -1]]).view(3, 3, 1, 1)
            )
            self.detect[0].bias.zero_()
            self.mix.weight.copy_(MIXING.view(8, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(self.detect(x)).mean(dim=(2, 3))


def squares(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    images = []
    for i in range(count):
        array = rng.integers(90, 140, size=(32, 32, 1), dtype=np.uint8).repeat(3, axis=2)
        side = int(rng.integers(6, 16))
        x, y = (int(v) for v in rng.integers(0, 32 - side, 2))
        array[y : y + side, x : x + side] = list(COLORS.values())[i % 3]
        images.append(Image.fromarray(array))
    return images


def label(units_from: str, **options) -> dict[int, tuple[str, bool]]:
    result = NeuronLabeler(
        Mixed(),
        ["mix"],
        scorer="color",
        vocabulary=list(COLORS) + ["yellow", "gray"],
        top_k=6,
        device="cpu",
        progress=False,
        cache=False,
        preprocessing=SMALL,
        units_from=units_from,
        **options,
    ).run(squares(60))
    return {
        n.unit: ("(dead)" if n.dead else str(n.concepts[0][0]), n.unexplained)
        for n in result.neurons["mix"]
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The unmixing directions, and a small SAE trained on the layer, in every format."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("unit_maps")
    unmix = torch.linalg.pinv(MIXING)[:2]  # rows: red, blue
    np.savez(root / "directions.npz", directions=unmix.numpy())
    # Per-position channel vectors of the layer on the probing images.
    model = Mixed()
    batch = torch.stack([SMALL(image) for image in squares(60)])
    with torch.no_grad():
        acts = model.mix(model.detect(batch)).permute(0, 2, 3, 1).reshape(-1, 8)
    torch.manual_seed(0)
    w_enc = nn.Parameter(torch.randn(8, 6) * 0.1)
    b_enc = nn.Parameter(torch.zeros(6))
    w_dec = nn.Parameter(torch.randn(6, 8) * 0.1)
    b_dec = nn.Parameter(acts.mean(dim=0).clone())
    optimizer = torch.optim.Adam([w_enc, b_enc, w_dec, b_dec], lr=0.02)
    for _ in range(400):
        latents = torch.relu((acts - b_dec) @ w_enc + b_enc)
        loss = ((latents @ w_dec + b_dec - acts) ** 2).mean() + 1e-3 * latents.abs().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tensors = {
        "W_enc": w_enc.detach().contiguous(),
        "b_enc": b_enc.detach().contiguous(),
        "W_dec": w_dec.detach().contiguous(),
        "b_dec": b_dec.detach().contiguous(),
    }
    save_file(tensors, str(root / "sae.safetensors"))
    np.savez(root / "sae.npz", **{k: v.numpy() for k, v in tensors.items()})
    # nn.Linear layout ([U, C] weights) under a module prefix, as torch.save'd state dicts are
    torch.save(
        {
            "sae.encoder.weight": tensors["W_enc"].T.contiguous(),
            "sae.encoder.bias": tensors["b_enc"],
            "sae.decoder.bias": tensors["b_dec"],
        },
        root / "sae.pt",
    )
    return root


def test_directions_recover_the_planted_detectors(files):
    units = label(f"directions:{files / 'directions.npz'}")
    assert units[0] == ("red", False) and units[1] == ("blue", False)


def test_channels_of_the_mixed_layer_are_not_clean():
    units = label("channels")
    # Every channel blends red and blue: its exemplars mix both colors.
    assert len(units) == 8
    assert sum(not unexplained for _, unexplained in units.values()) < 8


@pytest.mark.parametrize("name", ["sae.safetensors", "sae.npz", "sae.pt"])
def test_sae_latents_include_red_and_blue_detectors(files, name):
    units = label(f"sae:{files / name}")
    assert len(units) == 6
    found = {concept for concept, unexplained in units.values() if not unexplained}
    assert {"red", "blue"} <= found, units


def small_labeler(ctx, units_from: str) -> NeuronLabeler:
    """A labeler of ``mix`` in the context ``ctx`` (evaluators then find its network)."""
    return NeuronLabeler(
        Mixed(),
        ["mix"],
        scorer="color",
        vocabulary=list(COLORS),
        top_k=4,
        device="cpu",
        progress=False,
        context=ctx,
        preprocessing=SMALL,
        units_from=units_from,
    )


def test_the_result_records_the_unit_map_and_evaluators_use_it(files, tmp_path):
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    spec = f"sae:{files / 'sae.pt'}"  # this file holds no decoder
    labeler = small_labeler(ctx, spec)
    result = labeler.run(squares(40))
    record = result.settings["unit_map"]
    assert record["kind"] == "sae" and record["units"] == 6 and len(record["file_sha256"]) == 16
    assert result.layers["mix"]["units"] == 6 and result.settings["units_from"] == spec
    held = tmp_path / "held"
    held.mkdir()
    for i, image in enumerate(squares(90)[60:]):
        image.save(held / f"{i}.png")
    figures = ctx.registries.evaluators.resolve(
        f"faithfulness?images={held}&top=0.2&draws=1", ctx
    ).evaluate(result, ctx)
    live = sum(not n.dead for n in result.neurons["mix"])
    assert figures["layers"]["mix"]["units"] == live  # the live latents, not the 8 channels
    with pytest.raises(NeurolabelError, match="without its decoder weight W_dec"):
        ctx.registries.evaluators.resolve(f"ablation?images={held}", ctx).evaluate(result, ctx)


def test_a_map_that_does_not_fit_the_layer_says_so(files, tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, directions=np.ones((8, 2)))
    with pytest.raises(NeurolabelError, match="looks transposed"):
        label(f"directions:{bad}")
    with pytest.raises(NeurolabelError, match="unknown file kind"):
        label(f"sae:{tmp_path / 'sae.txt'}") if (tmp_path / "sae.txt").write_text("x") else None
    with pytest.raises(NeurolabelError, match="conductance flows through a neuron"):
        label(f"directions:{files / 'directions.npz'}", patches="conductance")


class Negated:
    """A third-party unit map: each channel's negation (units that fire where it is low)."""

    name = "negated"

    def units(self, layer, channels):
        return channels

    def __call__(self, layer, acts):
        return -acts

    def describe(self):
        return {"spec": "negated", "kind": "negated"}


class NegatedPlugin:
    @hookimpl
    def register_unit_maps(self, register: Register[UnitMap]) -> None:
        register("negated", lambda spec, ctx: Negated(), description="negated channels")


def test_a_plugin_registers_a_unit_map():
    from neurolabel.plugin_core.plugins.manager import pm

    pm.register(NegatedPlugin(), name="negated-unit-map")
    try:
        units = label("negated")
    finally:
        pm.unregister(name="negated-unit-map")
    assert len(units) == 8


def test_principal_directions_are_fitted_on_the_probing_images_and_restored(tmp_path):
    from neurolabel.plugin_core.pipeline.unit_mapping import result_extractor

    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    labeler = small_labeler(ctx, "directions:pca?k=3")
    result = labeler.run(squares(45))
    record = result.settings["unit_map"]
    assert record["kind"] == "pca" and result.layers["mix"]["units"] == 3
    variance = record["explained_variance"]["mix"]
    assert len(variance) == 3 and variance == sorted(variance, reverse=True)
    assert sum(variance) > 0.99  # three detectors span the eight blended channels
    # An evaluator rebuilds the very same units from the record, in a fresh context.
    batch = torch.stack([SMALL(image) for image in squares(4)])
    loaded = labeler.loaded
    with labeler._extractor().open(loaded, ["mix"]) as read:
        ours = read(batch)["mix"]
    fresh = build_context("cpu", cache_dir=tmp_path / "cache")
    with result_extractor(result, fresh).open(loaded, ["mix"]) as read:
        theirs = read(batch)["mix"]
    assert ours.shape[1] == 3 and torch.allclose(ours, theirs, atol=1e-5)
    # each direction fires high on what it is about: its largest projection is positive
    assert all(float(ours[:, u].max()) >= -float(ours[:, u].min()) for u in range(3))
    # Both reports say what the units are; the HTML leaves the fitted matrices out.
    from neurolabel import write_html_report
    from neurolabel.plugin_core.reporting.terminal import run_line

    assert "units directions:pca?k=3 (3 principal directions; 100 % of the variance of mix)" in (
        run_line(result)
    )
    page = write_html_report(result, tmp_path / "report.html").read_text()
    assert "3 principal directions" in page
    assert str(record["fitted"]["mix"]["mean"][0]) not in page


def test_attention_heads_of_a_timm_vit_are_units(tmp_path):
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(6)]
    common = dict(
        scorer="color",
        vocabulary=["red", "blue"],
        top_k=2,
        device="cpu",
        progress=False,
        cache=False,
        units_from="heads",
    )
    labeler = NeuronLabeler(
        "timm:vit_tiny_patch16_224?pretrained=false", ["blocks.0.attn.norm"], **common
    )
    result = labeler.run(images)
    assert result.layers["blocks.0.attn.norm"]["shape"] == [3, 14, 14]  # 3 heads, patch grid
    assert result.settings["unit_map"]["heads"] == {"blocks.0.attn.norm": 3}
    # A head's activation at a patch is the norm of its 64-d output there, before the
    # output projection: computed here by hand from the block.
    loaded = labeler.loaded
    batch = torch.stack([loaded.preprocessing(image) for image in images[:2]])
    captured = {}
    handle = loaded.model.blocks[0].attn.norm.register_forward_hook(
        lambda module, args, output: captured.setdefault("x", output.detach())
    )
    with torch.no_grad():
        loaded.model(batch)
    handle.remove()
    tokens = captured["x"][:, 1:]  # the class token is not a patch
    by_hand = tokens.reshape(2, 196, 3, 64).norm(dim=-1).permute(0, 2, 1).reshape(2, 3, 14, 14)
    with labeler._extractor().open(loaded, ["blocks.0.attn.norm"]) as read:
        mapped = read(batch)["blocks.0.attn.norm"]
    assert torch.allclose(mapped, by_hand, atol=1e-4)
    with pytest.raises(NeurolabelError, match="--layer blocks.0.attn.norm"):
        NeuronLabeler(
            "timm:vit_tiny_patch16_224?pretrained=false", ["blocks.0.attn"], **common
        ).run(images)
    with pytest.raises(NeurolabelError, match="is neither"):
        NeuronLabeler(
            "torchvision:vit_b_16?weights=none", ["encoder.layers.encoder_layer_0"], **common
        ).run(images[:2])


def noise_images(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)) for _ in range(count)
    ]


def heads_labeler(model: str, layer: str, **options) -> NeuronLabeler:
    """A labeler of ``layer``'s attention heads, scored by color."""
    return NeuronLabeler(
        model,
        [layer],
        scorer="color",
        vocabulary=["red", "blue"],
        top_k=2,
        device="cpu",
        progress=False,
        units_from="heads",
        **options,
    )


def test_attention_heads_of_a_torchvision_vit_are_read_back_through_the_projection():
    import torch.nn.functional as F

    images = noise_images(3, seed=0)
    layer = "encoder.layers.encoder_layer_1.self_attention"
    torch.manual_seed(0)
    labeler = heads_labeler("torchvision:vit_b_16?weights=none", layer, cache=False)
    result = labeler.run(images)
    assert result.layers[layer]["shape"] == [12, 14, 14]
    # By hand: the heads' outputs from the block's attention input, as nn.MultiheadAttention
    # computes them before its output projection.
    loaded = labeler.loaded
    block = loaded.model.encoder.layers[1]
    batch = torch.stack([loaded.preprocessing(image) for image in images[:2]])
    captured = {}
    handle = block.ln_1.register_forward_hook(lambda m, a, o: captured.setdefault("x", o))
    with torch.no_grad():
        loaded.model(batch)
        handle.remove()
        attention = block.self_attention
        q, k, v = F.linear(captured["x"], attention.in_proj_weight, attention.in_proj_bias).chunk(
            3, -1
        )
        split = lambda t: t.view(2, 197, 12, 64).transpose(1, 2)  # noqa: E731
        z = F.scaled_dot_product_attention(split(q), split(k), split(v))  # [2, 12, 197, 64]
    by_hand = z[:, :, 1:].norm(dim=-1).reshape(2, 12, 14, 14)
    with labeler._extractor().open(loaded, [layer]) as read:
        mapped = read(batch)[layer]
    assert torch.allclose(mapped, by_hand, rtol=1e-3, atol=1e-4)


def layer_output(images: list[Image.Image]) -> torch.Tensor:
    """The ``mix`` layer's output on ``images``."""
    model = Mixed()
    with torch.no_grad():
        return model.mix(model.detect(torch.stack([SMALL(image) for image in images])))


def test_ablating_a_mapped_unit_takes_out_what_it_writes(files):
    from neurolabel.plugin_core.evaluation.ablation import units_zeroed
    from neurolabel.plugin_core.plugins.unit_writes import remove_units

    ctx = build_context("cpu")
    acts = layer_output(squares(6))  # [6, 8, 32, 32]
    sae = ctx.registries.unit_maps.resolve(f"sae:{files / 'sae.npz'}", ctx)
    latents = sae("mix", acts)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[:3, 2] = True  # latent 2 out of the first three images only
    out = remove_units(sae, "mix", acts, mask)
    written = latents[:, 2:3] * sae.decoder("mix")[2].view(1, 8, 1, 1)
    assert torch.allclose(out[:3], acts[:3] - written[:3], atol=1e-5)
    assert torch.equal(out[3:], acts[3:])
    # A direction's component is gone: the projection on it is zero everywhere after.
    directions = ctx.registries.unit_maps.resolve(f"directions:{files / 'directions.npz'}", ctx)
    model = Mixed()
    batch = torch.stack([SMALL(image) for image in squares(6)])
    captured = {}
    with units_zeroed(model, "mix", [0], directions), torch.no_grad():
        # registered after the ablation's hook, so it sees the ablated output
        handle = model.mix.register_forward_hook(lambda m, a, o: captured.setdefault("mix", o))
        model(batch)
    handle.remove()
    after = directions("mix", captured["mix"])
    assert after[:, 0].abs().max() < 1e-4 and after[:, 1].abs().max() > 0.1
    # A map that cannot write back is refused with the reason.
    no_decoder = ctx.registries.unit_maps.resolve(f"sae:{files / 'sae.pt'}", ctx)
    with pytest.raises(NeurolabelError, match="no decoder"):
        remove_units(no_decoder, "mix", acts, mask)


def red_image() -> Image.Image:
    image = Image.new("RGB", (32, 32), (110, 110, 110))
    image.paste(COLORS["red"], (4, 4, 20, 20))
    return image


@pytest.mark.parametrize("method", ["gradient-x-activation", "integrated-gradients"])
def test_attribution_names_the_mapped_units_that_carried_a_prediction(files, tmp_path, method):
    from neurolabel.adapters.captum_attribution import attribute_prediction

    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    labeler = small_labeler(ctx, f"directions:{files / 'directions.npz'}")
    result = labeler.run(squares(30))
    explained = attribute_prediction(
        result, labeler.loaded, red_image(), target=0, layer="mix", method=method, device="cpu"
    )
    top = explained.neurons[0]
    assert (top.unit, top.label) == (0, "red") and top.share > 0.95, explained.sentence
    assert explained.maps is not None and explained.maps.shape == (2, 32, 32)
    with pytest.raises(NeurolabelError, match="Conductance flows through"):
        attribute_prediction(result, labeler.loaded, red_image(), target=0, method="conductance")


def test_attribution_to_principal_directions_is_complete_on_their_span(tmp_path):
    from neurolabel.adapters.captum_attribution import attribute_prediction

    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    labeler = small_labeler(ctx, "directions:pca?k=3")
    result = labeler.run(squares(30))
    explained = attribute_prediction(
        result, labeler.loaded, red_image(), target=3, method="integrated-gradients"
    )
    # The three directions span the layer's activations here, so the units' integrated
    # gradients add up to the target's change from the zero input.
    model = labeler.loaded.model
    with torch.no_grad():
        zero = float(model(torch.zeros(1, 3, 32, 32))[0, 3])
    total = float(explained.contributions.sum())
    assert total == pytest.approx(explained.output - zero, rel=1e-3, abs=1e-4)


def test_attribution_patches_of_mapped_units(files):
    from neurolabel.adapters.captum_patchers import neuron_attribution_maps

    units = label(f"directions:{files / 'directions.npz'}", patches="gradient")
    assert units[0][0] == "red" and units[1][0] == "blue"
    # The map of a mapped unit is the attribution of the unit as a function of the layer.
    ctx = build_context("cpu")
    directions = ctx.registries.unit_maps.resolve(f"directions:{files / 'directions.npz'}", ctx)
    model, batch = Mixed(), torch.stack([SMALL(red_image())])
    red = torch.linalg.pinv(MIXING)[0]
    by_hand = lambda out: (out.permute(0, 2, 3, 1) @ red).sum(dim=(1, 2))  # noqa: E731
    for method in ("gradient", "integrated-gradients"):
        ours = neuron_attribution_maps(model, "mix", batch, 0, method, unit_map=directions)
        theirs = neuron_attribution_maps(model, "mix", batch, by_hand, method)
        assert torch.allclose(ours, theirs, atol=1e-5)


def test_heads_are_ablated_and_attributed_as_their_channels(tmp_path):
    from neurolabel.adapters.captum_attribution import attribute_prediction
    from neurolabel.plugin_core.plugins.unit_writes import remove_units

    images = noise_images(4, seed=1)
    ctx = build_context("cpu", cache_dir=tmp_path / "cache")
    layer = "blocks.1.attn.norm"
    labeler = heads_labeler("timm:vit_tiny_patch16_224?pretrained=false", layer, context=ctx)
    result = labeler.run(images)
    heads = labeler._extractor().unit_map
    tokens = torch.randn(2, 197, 192)
    mask = torch.tensor([[False, True, False], [False, False, False]])
    out = remove_units(heads, layer, tokens, mask)
    assert out[0, :, 64:128].abs().max() == 0 and torch.equal(out[0, :, :64], tokens[0, :, :64])
    assert torch.equal(out[1], tokens[1])
    common = dict(target=3, layer=layer, method="gradient-x-activation", device="cpu")
    per_head = attribute_prediction(result, labeler.loaded, images[0], **common)
    per_channel = attribute_prediction(None, labeler.loaded, images[0], **common)
    expected = per_channel.contributions.view(3, 64).sum(dim=1)
    assert torch.allclose(per_head.contributions, expected, atol=1e-5)
    assert per_head.maps is not None and per_head.maps.shape == (3, 14, 14)
