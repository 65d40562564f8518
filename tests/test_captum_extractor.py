"""The ``captum`` extractor (Captum's LayerActivation) against the ``hooks`` extractor, and
layers given as modules or Captum objects."""

from __future__ import annotations

import pytest
import timm
import torch
import torchvision
from captum.attr import LayerActivation, LayerConductance, LayerGradCam, NeuronGradient
from synthetic import ColorDetector
from test_pipeline import color_images, labeler

from neurolabel.adapters.captum_extractor import CaptumExtractor
from neurolabel.adapters.hook_extractor import HookExtractor
from neurolabel.plugin_core.data.layer_patterns import layer_names
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import LayerNotFoundError, NeurolabelError
from neurolabel.plugin_core.pipeline.labeler import NeuronLabeler
from neurolabel.plugin_core.plugins.contracts import Extractor, LoadedModel

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def resnet() -> LoadedModel:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    return LoadedModel(model, Preprocessing(crop_size=(64, 64), resize_size=73), "resnet18")


@pytest.fixture(scope="module")
def vit() -> LoadedModel:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=112).eval()
    return LoadedModel(model, Preprocessing(crop_size=(112, 112), resize_size=128), "vit")


def _both(loaded: LoadedModel, layers: list[str], x: torch.Tensor, **options):
    with HookExtractor(CPU).open(loaded, layers) as read:
        hooks = read(x)
    with CaptumExtractor(CPU, **options).open(loaded, layers) as read:
        captum = read(x)
    return hooks, captum


def test_registered_by_name_and_satisfies_protocol(ctx):
    extractor = ctx.registries.extractors.resolve("captum", ctx)
    assert isinstance(extractor, Extractor) and extractor.name == "captum"
    assert ctx.registries.extractors.get("captum").plugin == "neurolabel.adapters.captum_extractor"
    assert ctx.registries.extractors.resolve("captum?layer_input=true", ctx).layer_input
    with pytest.raises(NeurolabelError, match="Allowed: layer_input"):
        ctx.registries.extractors.resolve("captum?input=1", ctx)


def test_same_activations_as_hooks_on_a_cnn(resnet):
    layers = ["conv1", "layer1.0.relu", "layer3", "layer4", "avgpool", "fc"]
    x = torch.randn(3, 3, 64, 64)
    hooks, captum = _both(resnet, layers, x)
    assert list(captum) == layers
    for name in layers:
        assert captum[name].dtype == torch.float32 and not captum[name].requires_grad
        torch.testing.assert_close(captum[name], hooks[name], rtol=1e-5, atol=1e-6)


def test_same_activations_as_hooks_on_vit_tokens(vit):
    x = torch.randn(2, 3, 112, 112)
    hooks, captum = _both(vit, ["blocks.3", "norm"], x)
    assert captum["blocks.3"].shape == (2, 192, 7, 7)  # CLS dropped, token grid
    for name in hooks:
        torch.testing.assert_close(captum[name], hooks[name], rtol=1e-5, atol=1e-5)


def test_layer_input_reads_what_captum_reads_with_attribute_to_layer_input(resnet):
    x = torch.randn(2, 3, 64, 64)
    with CaptumExtractor(CPU, layer_input=True).open(resnet, ["fc", "layer4"]) as read:
        acts = read(x)
    model = resnet.model
    with torch.no_grad():
        pooled = torch.flatten(
            model.avgpool(
                model.layer4(
                    model.layer3(
                        model.layer2(
                            model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(x)))))
                        )
                    )
                )
            ),
            1,
        )
    torch.testing.assert_close(acts["fc"], pooled, rtol=1e-5, atol=1e-5)
    reference = LayerActivation(model, model.layer4).attribute(x, attribute_to_layer_input=True)
    torch.testing.assert_close(acts["layer4"], reference)
    infos = {i.name: i for i in CaptumExtractor(CPU, layer_input=True).list_layers(resnet)}
    assert infos["fc"].shape == (512,) and infos["layer4"].shape == (256, 4, 4)


def test_list_layers_matches_hooks(resnet):
    assert CaptumExtractor(CPU).list_layers(resnet) == HookExtractor(CPU).list_layers(resnet)


def test_errors_name_the_problem(resnet):
    with pytest.raises(LayerNotFoundError, match="layer4"):
        with CaptumExtractor(CPU).open(resnet, ["layer5"]):
            pass

    class Unused(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used = torch.nn.Conv2d(3, 2, 3)
            self.unused = torch.nn.Conv2d(3, 2, 3)

        def forward(self, x):
            return self.used(x)

    loaded = LoadedModel(Unused().eval(), Preprocessing((16, 16), 16), "unused")
    with CaptumExtractor(CPU).open(loaded, ["used", "unused"]) as read:
        with pytest.raises(NeurolabelError, match="did not run"):
            read(torch.zeros(1, 3, 16, 16))


def test_labeler_gives_the_same_result_with_either_extractor():
    images = color_images()
    hooks = labeler(layers=["features.1", "fc"]).run(images)
    captum = labeler(layers=["features.1", "fc"], extractor="captum").run(images)
    assert captum.settings["extractor"] == "captum"
    for layer in ("features.1", "fc"):
        for a, b in zip(hooks.neurons[layer], captum.neurons[layer], strict=True):
            assert a.concepts == b.concepts and a.dead == b.dead
            assert [(e.image_index, e.box) for e in a.exemplars] == [
                (e.image_index, e.box) for e in b.exemplars
            ]


def test_layers_as_modules_or_captum_objects():
    model = ColorDetector().eval()
    relu, fc = model.features[1], model.fc
    assert layer_names(model, [LayerGradCam(model, relu), fc, "features.0"]) == [
        "features.1",
        "fc",
        "features.0",
    ]
    assert layer_names(model, LayerActivation(model, [relu, fc])) == ["features.1", "fc"]
    assert layer_names(model, NeuronGradient(model, relu)) == ["features.1"]
    result = NeuronLabeler(
        model,
        layers=[LayerConductance(model, relu), fc],
        scorer="color",
        vocabulary=["red", "blue", "green"],
        top_k=2,
        device="cpu",
        progress=False,
        preprocessing=Preprocessing((224, 224), 224, (0, 0, 0), (1, 1, 1)),
    ).run(color_images())
    assert list(result.neurons) == ["features.1", "fc"]
    assert result.explanation("features.1", 0).description == "red"


def test_layer_objects_that_do_not_fit_fail_clearly():
    model = ColorDetector()
    other = ColorDetector()
    with pytest.raises(LayerNotFoundError, match="not a submodule"):
        layer_names(model, [other.fc])
    with pytest.raises(NeurolabelError, match="whole model"):
        layer_names(model, [model])
    with pytest.raises(NeurolabelError, match="Cannot use a int"):
        layer_names(model, [3])
    with pytest.raises(NeurolabelError, match="need the model itself"):
        NeuronLabeler("torchvision:resnet18?weights=none", layers=[model.fc], progress=False)
