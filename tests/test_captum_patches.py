"""Attribution-guided patches: the known-square test for every Captum patcher, Captum's
neuron-selector conventions, the register_patchers hook and its errors."""

from __future__ import annotations

import warnings

import pytest
import torch
from captum.attr import LayerGradCam, NeuronGradient, NeuronIntegratedGradients
from synthetic import ColorDetector
from test_pipeline import SQUARES, color_images, labeler

from neurolabel.adapters.captum_patchers import CaptumPatcher, neuron_attribution_maps
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.pipeline.patches import attribution_boxes, box_iou
from neurolabel.plugin_core.plugins.contracts import Patcher
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.manager import get_plugins, pm

INPUT = Preprocessing((224, 224), 224, (0, 0, 0), (1, 1, 1))


def _square_batch() -> torch.Tensor:
    return torch.stack([INPUT(image) for image in color_images()[:4]])


@pytest.mark.parametrize(
    "patches",
    [
        "gradcam",
        "gradcam?layer_input=true",
        "gradient",
        "conductance?steps=8",
        "integrated-gradients?steps=8",
    ],
)
def test_known_square_patches_and_labels(patches):
    result = labeler(layers=["features.1"], patches=patches).run(color_images())
    red = result.explanation("features.1", 0)
    assert red.description == "red"
    assert result.explanation("features.1", 1).description == "blue"
    assert result.explanation("features.1", 2).dead
    assert result.settings["patches"] == patches
    for exemplar in red.exemplars:
        size, truth = SQUARES[exemplar.image_index]
        assert box_iou(tuple(exemplar.box), truth) >= 0.7


@pytest.mark.parametrize("patches", ["gradcam:features.1", "gradient", "conductance?steps=8"])
def test_vector_layers_get_attribution_patches_too(patches):
    # fc unit 0 is the mean redness: its attribution points at the red square.
    result = labeler(layers=["fc"], patches=patches).run(color_images())
    red = result.explanation("fc", 0)
    assert red.description == "red"
    for exemplar in red.exemplars:
        size, truth = SQUARES[exemplar.image_index]
        assert box_iou(tuple(exemplar.box), truth) >= 0.7


def test_registered_patchers_and_their_options(ctx):
    names = ctx.registries.patchers.names()
    assert {"gradcam", "gradient", "conductance", "integrated-gradients"} <= set(names)
    entry = ctx.registries.patchers.get("gradcam")
    assert entry.plugin == "neurolabel.adapters.captum_patchers"
    patcher = ctx.registries.patchers.resolve("gradcam:layer3?layer_input=true", ctx)
    assert isinstance(patcher, Patcher)
    assert patcher.grad_cam_layer == "layer3" and patcher.layer_input
    assert ctx.registries.patchers.resolve("conductance?steps=5", ctx).n_steps == 5
    with pytest.raises(SpecError, match="Allowed: layer_input, smooth"):
        ctx.registries.patchers.resolve("gradient?steps=5", ctx)
    with pytest.raises(SpecError, match="positive number of steps"):
        ctx.registries.patchers.resolve("conductance?steps=0", ctx)
    with pytest.raises(SpecError, match="takes no argument"):
        ctx.registries.patchers.resolve("gradient:layer3", ctx)


def test_int_selector_is_the_channel_as_captum_sums_a_slice():
    model = ColorDetector().eval()
    x = _square_batch()[:2]
    for method in ("gradient", "integrated-gradients", "conductance", "gradcam"):
        by_int = neuron_attribution_maps(model, "features.1", x, 0, method, n_steps=4)
        by_slice = neuron_attribution_maps(
            model, model.features[1], x, (0, slice(None), slice(None)), method, n_steps=4
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            by_callable = neuron_attribution_maps(
                model, "features.1", x, lambda out: out[:, 0].sum(dim=(1, 2)), method, n_steps=4
            )
        # A user's own callable keeps Captum's warning about aggregating selectors.
        warned = any("neuron_selector provided" in str(w.message) for w in caught)
        assert warned == (method == "conductance")
        assert by_int.shape == (2, 224, 224)
        torch.testing.assert_close(by_int, by_slice)
        torch.testing.assert_close(by_int, by_callable)


def test_maps_are_captums_own_attributions():
    model = ColorDetector().eval()
    x = _square_batch()
    selector = (0, slice(None), slice(None))
    reference = NeuronGradient(model, model.features[1]).attribute(
        x.clone().requires_grad_(), selector
    )
    ours = neuron_attribution_maps(model, "features.1", x, selector, "gradient")
    torch.testing.assert_close(ours, reference.abs().sum(1))
    ig = NeuronIntegratedGradients(model, model.features[1]).attribute(
        x.clone(), selector, n_steps=8
    )
    ours = neuron_attribution_maps(
        model, "features.1", x, selector, "integrated-gradients", n_steps=8
    )
    torch.testing.assert_close(ours, ig.sum(1).clamp(min=0), rtol=1e-4, atol=1e-6)

    class ChannelSum(torch.nn.Module):  # the neuron's channel sum, as a model output
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner.features(x).sum(dim=(2, 3))

    wrapped = ChannelSum(model)
    cam = LayerGradCam(wrapped, model.features[0]).attribute(
        x.clone().requires_grad_(), target=0, relu_attributions=True
    )
    cam = LayerGradCam.interpolate(cam, (224, 224), "bilinear").squeeze(1)
    ours = neuron_attribution_maps(
        model, "features.1", x, 0, "gradcam", grad_cam_layer="features.0"
    )
    torch.testing.assert_close(ours, cam, rtol=1e-4, atol=1e-6)


def test_conductance_to_the_neuron_itself_is_its_integrated_gradients():
    # Dhamdhere et al.: conductance through a neuron to itself is its integrated gradients;
    # Captum's product of sums over the channel's 56x56 cells scales it by the cell count.
    model = ColorDetector().eval()
    x = _square_batch()
    conductance = neuron_attribution_maps(model, "features.1", x, 0, "conductance", n_steps=8)
    integrated = neuron_attribution_maps(
        model, "features.1", x, 0, "integrated-gradients", n_steps=8
    )
    torch.testing.assert_close(conductance, integrated * 56 * 56, rtol=1e-3, atol=1e-5)


def test_single_neuron_tuple_and_attribute_to_neuron_input():
    model = ColorDetector().eval()
    x = _square_batch()
    # One cell of the red square of image 2 ((100..160)/4 = cells 25..39): its 4x4 input
    # receptive field is all the gradient sees.
    cell = neuron_attribution_maps(model, "features.1", x[2:3], (0, 30, 30), "gradient")
    rows, cols = torch.nonzero(cell[0], as_tuple=True)
    assert (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (
        120,
        123,
        120,
        123,
    )
    # On the ReLU's input (the linear conv output) every pixel counts the same.
    before = neuron_attribution_maps(
        model, "features.1", x, 0, "gradient", attribute_to_neuron_input=True
    )
    assert torch.allclose(before, before[:, :1, :1].expand_as(before))
    after = neuron_attribution_maps(model, "features.1", x, 0, "gradient")
    assert not torch.allclose(after, after[:, :1, :1].expand_as(after))


def test_patches_work_under_inference_mode_and_with_gradients_off():
    model = ColorDetector().eval()
    with torch.inference_mode():
        x = _square_batch()
        maps = neuron_attribution_maps(model, "features.1", x, 0, "gradient")
    with torch.no_grad():
        again = neuron_attribution_maps(model, "features.1", x.clone(), 0, "gradient")
    torch.testing.assert_close(maps, again)


def test_attribution_boxes_threshold_each_map_on_its_own():
    maps = torch.zeros(2, 64, 64)
    maps[0, 10:30, 20:40] = 5.0
    maps[1, 40:60, 0:16] = 1e-6  # another scale entirely
    boxes = attribution_boxes(maps, Preprocessing((64, 64), 64), _settings(0.1))
    assert boxes == [(20, 10, 40, 30), (0, 40, 16, 60)]
    flat = attribution_boxes(torch.zeros(1, 64, 64), Preprocessing((64, 64), 64), _settings(0.1))
    assert flat == [(0, 0, 64, 64)]  # nothing located: the whole input


def _settings(min_size: float):
    from neurolabel.plugin_core.pipeline.patches import PatchSettings

    return PatchSettings(min_size=min_size)


def test_errors_a_user_can_cause():
    model = ColorDetector().eval()
    x = _square_batch()
    with pytest.raises(NeurolabelError, match="gradcam:LAYER"):
        neuron_attribution_maps(model, "fc", x, 0, "gradcam")
    with pytest.raises(NeurolabelError, match="did not run before"):
        neuron_attribution_maps(model, "features.1", x, 0, "gradcam", grad_cam_layer="fc")
    with pytest.raises(NeurolabelError, match="units 0..2"):
        neuron_attribution_maps(model, "features.1", x, 7, "gradient")
    with pytest.raises(NeurolabelError, match="one value per example"):
        neuron_attribution_maps(model, "features.1", x, (0,), "gradient")
    with pytest.raises(NeurolabelError, match="Unknown attribution method"):
        neuron_attribution_maps(model, "features.1", x, 0, "saliency")
    with pytest.raises(NeurolabelError, match=r"patches='bogus'.*gradcam.*gradient"):
        labeler(patches="bogus")
    with pytest.raises(NeurolabelError, match="gradcam:LAYER"):
        labeler(layers=["fc"], patches="gradcam").run(color_images())


def test_cli_explain_accepts_attribution_patches(tmp_path):
    from neurolabel.plugin_core.cli import main
    from neurolabel.plugin_core.data.result import LabelingResult

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(color_images()):
        image.save(folder / f"{i}.png")
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("red\nblue\ngreen\n")
    out = tmp_path / "out"
    args = ["explain", "python:synthetic:ColorDetector", "--layer", "features.1"]
    args += ["--images", str(folder), "--scorer", "color", "--vocab", f"file:{vocab}"]
    args += ["--top-k", "2", "--out", str(out), "--device", "cpu", "--quiet"]
    main([*args, "--patches", "gradient"])
    result = LabelingResult.load(out)
    assert result.settings["patches"] == "gradient"
    assert result.explanation("features.1", 0).description == "red"
    assert all(e.box is not None for e in result.explanation("features.1", 0).exemplars)


class CenterPatcher:
    """A plugin patcher: always the central quarter of the input."""

    name = "center"

    def locate(self, loaded, layer, unit, images):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        maps = torch.zeros(images.shape[0], *images.shape[-2:])
        h, w = images.shape[-2:]
        maps[:, h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = 1.0
        return maps


@pytest.fixture
def center_plugin():
    class Plugin:
        @hookimpl
        def register_patchers(self, register):
            register("center", lambda spec, ctx: CenterPatcher(), description="the center")

    plugin = Plugin()
    pm.register(plugin, name="center-plugin")
    yield plugin
    pm.unregister(plugin)


def test_register_patchers_hook(center_plugin):
    regs = get_plugins().registries()
    assert regs.patchers.get("center").plugin == "center-plugin"
    result = labeler(layers=["features.1", "fc"], patches="center").run(color_images())
    for neuron in result:
        if neuron.dead:  # no label will be given, so no attribution is spent on it
            assert all(e.box is None for e in neuron.exemplars)
            continue
        for exemplar in neuron.exemplars:
            size = SQUARES[exemplar.image_index][0] if exemplar.image_index < 4 else (300, 300)
            # The central quarter of the 224 input, mapped back to the original image.
            expected = INPUT.input_box_to_image((56, 56, 168, 168), size)
            assert all(abs(a - b) <= 1 for a, b in zip(exemplar.box, expected, strict=True))


def test_a_patcher_object_and_a_bad_patcher(center_plugin):
    result = labeler(layers=["features.1"], patches=CaptumPatcher("gradient")).run(color_images())
    assert result.settings["patches"] == "gradient"

    class Broken:
        name = "broken"

        def locate(self, loaded, layer, unit, images):
            return torch.zeros(3, 3)

    with pytest.raises(NeurolabelError, match="expected .* maps"):
        labeler(layers=["features.1"], patches=Broken()).run(color_images())
    with pytest.raises(NeurolabelError, match="locate"):
        labeler(patches=object())


def test_no_captum_warnings_for_our_own_selectors():
    model = ColorDetector().eval()
    x = _square_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for method in ("gradient", "conductance", "gradcam"):
            neuron_attribution_maps(model, "features.1", x, 0, method, n_steps=4)


def test_token_layers_and_the_plugins_listing(capsys):
    import json

    import timm

    from neurolabel.plugin_core.cli import main

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    maps = neuron_attribution_maps(vit, "blocks.1", x, 5, "gradient")
    assert maps.shape == (2, 64, 64) and bool((maps > 0).any())
    with pytest.raises(NeurolabelError, match="spatial"):
        neuron_attribution_maps(vit, "blocks.1", x, 5, "gradcam")
    main(["plugins", "--json"])
    listed = json.loads(capsys.readouterr().out)["registered"]
    patchers = {r["name"] for r in listed if r["kind"] == "patcher"}
    assert {"gradcam", "gradient", "conductance", "integrated-gradients"} <= patchers
