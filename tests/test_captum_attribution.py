"""Explaining a prediction through labeled neurons: Captum layer attributions, the
sentence, heatmaps, the ``attribute`` command, Captum's target and layer-input conventions."""

from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from captum.attr import (
    LayerConductance,
    LayerGradientXActivation,
    LayerIntegratedGradients,
)
from PIL import Image
from synthetic import ColorDetector
from test_pipeline import color_images, labeler

from neurolabel.adapters.captum_attribution import (
    attribute_prediction,
    contribution_sentence,
    resolve_target,
)
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.plugins.contracts import LoadedModel

INPUT = Preprocessing((224, 224), 224, (0, 0, 0), (1, 1, 1))


@pytest.fixture(scope="module")
def labeled():
    """ColorDetector labeled on features.1 and fc: unit 0 red, unit 1 blue, unit 2 dead."""
    run = labeler(layers=["features.1", "fc"])
    return run.run(color_images()), run.loaded


def _red_input() -> torch.Tensor:
    return INPUT(color_images()[0]).unsqueeze(0)


@pytest.mark.parametrize("method", ["conductance", "gradient-x-activation", "integrated-gradients"])
def test_red_prediction_came_through_the_red_unit(labeled, method):
    result, loaded = labeled
    explained = attribute_prediction(
        result, loaded, color_images()[0], 0, layer="features.1", method=method, n_steps=8
    )
    assert explained.target == 0 and explained.layer == "features.1"
    assert [n.unit for n in explained.neurons] == [0, 1, 2]
    top = explained.neurons[0]
    assert top.label == "red" and top.share == pytest.approx(1.0)
    assert explained.neurons[2].label is None  # dead: no label
    assert explained.sentence == "'class 0' came mostly through units labeled 'red' (100 %)."
    # Completeness: the zero image gives output 0, so the contributions add up to the output,
    # up to Captum's convergence delta (8 integration steps here).
    total = float(explained.contributions.sum())
    assert total == pytest.approx(explained.output, rel=0.05)
    if method != "gradient-x-activation":
        assert total - explained.delta == pytest.approx(explained.output, rel=1e-4)


def test_contributions_are_captums_layer_attributions(labeled):
    result, loaded = labeled
    model, x = loaded.model, _red_input()
    for method, cls, kwargs in [
        ("conductance", LayerConductance, {"n_steps": 8}),
        ("integrated-gradients", LayerIntegratedGradients, {"n_steps": 8}),
        ("gradient-x-activation", LayerGradientXActivation, {}),
    ]:
        ours = attribute_prediction(
            result, loaded, x, 0, layer="features.1", method=method, n_steps=8
        )
        reference = cls(model, model.features[1]).attribute(x.clone(), target=0, **kwargs)
        torch.testing.assert_close(ours.contributions, reference[0].sum(dim=(1, 2)))
        torch.testing.assert_close(ours.maps, reference[0])


def test_attribute_to_layer_input_is_honoured(labeled):
    result, loaded = labeled
    model, x = loaded.model, _red_input()
    ours = attribute_prediction(
        None,
        loaded,
        x,
        0,
        layer="fc",
        method="gradient-x-activation",
        attribute_to_layer_input=True,
    )
    reference = LayerGradientXActivation(model, model.fc).attribute(
        x.clone(), target=0, attribute_to_layer_input=True
    )
    torch.testing.assert_close(ours.contributions, reference[0])
    assert ours.contributions.shape == (3,) and ours.attribute_to_layer_input
    # A result read on layer inputs (captum?layer_input=true) is attributed on inputs too.
    on_inputs = labeler(layers=["fc"], extractor="captum?layer_input=true").run(color_images())
    assert on_inputs.layers["fc"]["units"] == 3
    default = attribute_prediction(on_inputs, loaded, x, 0, method="gradient-x-activation")
    assert default.attribute_to_layer_input
    assert default.neurons[0].unit == 0 and default.neurons[0].label == "red"


def test_layer_as_module_or_captum_object(labeled):
    result, loaded = labeled
    model = loaded.model
    by_module = attribute_prediction(
        result, loaded, _red_input(), 0, layer=model.features[1], n_steps=8
    )
    by_captum = attribute_prediction(
        result, loaded, _red_input(), 0, layer=LayerConductance(model, model.features[1]), n_steps=8
    )
    assert by_module.layer == by_captum.layer == "features.1"
    torch.testing.assert_close(by_module.contributions, by_captum.contributions)


def test_targets_follow_captum_conventions():
    logits = torch.tensor([[0.1, 0.9, 0.3]])
    names = ["tabby", "tiger cat", "Persian cat"]
    assert resolve_target(None, logits, names) == (1, "tiger cat")
    assert resolve_target(2, logits, names) == (2, "Persian cat")
    assert resolve_target("persian CAT", logits, names) == (2, "Persian cat")
    assert resolve_target("0", logits, names) == (0, "tabby")
    assert resolve_target((1, 0), torch.zeros(1, 2, 3)) == ((1, 0), "output (1, 0)")
    with pytest.raises(NeurolabelError, match="Closest: tabby"):
        resolve_target("tabbby", logits, names)
    with pytest.raises(NeurolabelError, match="out of range"):
        resolve_target(3, logits, names)
    with pytest.raises(NeurolabelError, match="tuple of indices"):
        resolve_target(1, torch.zeros(1, 2, 3))
    with pytest.raises(NeurolabelError, match="no class names"):
        resolve_target("cat", logits, None)


def test_tuple_target_on_a_multidimensional_output():
    class Grid(torch.nn.Module):  # outputs [B, 2, 1]: the two fc units as a column
        def __init__(self):
            super().__init__()
            self.inner = ColorDetector()

        def forward(self, x):
            return self.inner(x).unsqueeze(-1)

    model = Grid().eval()
    loaded = LoadedModel(model, INPUT, "grid")
    explained = attribute_prediction(
        None, loaded, _red_input(), (0, 0), layer="inner.features.1", n_steps=8
    )
    assert explained.target == (0, 0) and explained.neurons[0].unit == 0


def test_real_cnn_with_labels_and_heatmaps(tmp_path):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    loaded = LoadedModel(model, Preprocessing((64, 64), 64), "resnet18")
    x = torch.randn(1, 3, 64, 64)
    reference = LayerIntegratedGradients(model, model.layer4).attribute(x, target=7, n_steps=8)
    totals = reference[0].sum(dim=(1, 2))
    best = totals.argsort(descending=True)[:2].tolist()
    result = LabelingResult(
        model={"name": "resnet18"},
        layers={"layer4": {"units": 512}},
        neurons={
            "layer4": [
                NeuronExplanation("layer4", best[0], [["fur", 1.0], ["grass", 0.5]]),
                NeuronExplanation("layer4", best[1], [["whiskers", 1.0]]),
            ]
        },
    )
    explained = attribute_prediction(
        result, loaded, x, 7, method="integrated-gradients", top=3, n_steps=8
    )
    torch.testing.assert_close(explained.contributions, totals)
    assert [n.label for n in explained.neurons[:2]] == ["fur", "whiskers"]
    assert explained.neurons[0].concepts == [("fur", 1.0), ("grass", 0.5)]
    assert explained.sentence.startswith("'class 7' came ")
    assert "'fur' (" in explained.sentence and "'whiskers' (" in explained.sentence
    assert "units the result does not label" in explained.sentence
    paths = explained.save_heatmaps(tmp_path / "heat")
    assert [p.name for p in paths] == [f"layer4_unit{n.unit:05d}.png" for n in explained.neurons]
    with Image.open(paths[0]) as png:
        assert png.format == "PNG" and png.size[0] > 100


def test_token_layers_sum_over_all_tokens():
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64).eval()
    loaded = LoadedModel(vit, Preprocessing((64, 64), 64), "vit")
    x = torch.randn(1, 3, 64, 64)
    explained = attribute_prediction(
        None, loaded, x, 3, layer="blocks.2", method="gradient-x-activation"
    )
    reference = LayerGradientXActivation(vit, vit.blocks[2]).attribute(x, target=3)
    torch.testing.assert_close(explained.contributions, reference[0].sum(0))  # CLS included
    assert explained.maps.shape == (192, 4, 4)  # the patch grid


def test_vector_layer_heatmaps_use_neuron_conductance(labeled, tmp_path):
    result, loaded = labeled
    explained = attribute_prediction(result, loaded, color_images()[0], 0, layer="fc", n_steps=8)
    assert explained.maps is None
    red = explained.heatmap(0)
    assert red.shape == (224, 224)
    # Only the red square lights up: (200..260, 40..100) of 320x240, resized to 299x224
    # and center-cropped 38 px from the left, is (149..205, 37..94) in the input.
    rows, cols = torch.nonzero(red > 0.5 * red.max(), as_tuple=True)
    assert 147 <= int(cols.min()) and int(cols.max()) <= 206
    assert 35 <= int(rows.min()) and int(rows.max()) <= 95
    paths = explained.save_heatmaps(tmp_path)
    assert len(paths) == 2 and all(p.stat().st_size > 0 for p in paths)


def test_sentence_wording():
    labels = {0: "fur", 1: "whiskers", 2: "fur", 3: "grass", 4: "sky", 6: "tail"}
    values = torch.tensor([3.0, 2.0, 1.0, 0.5, 0.3, 3.2, -2.0])
    # 'fur' counts units 0 and 2 together; unit 5 is unlabeled; 'sky' is left to the "…".
    assert contribution_sentence("cat", values, labels) == (
        "'cat' came mostly through units labeled 'fur' (40 %), 'whiskers' (20 %), "
        "'grass' (5 %) …; 32 % came through units the result does not label; units labeled "
        "'tail' pulled against it (-20 %)."
    )
    assert contribution_sentence("dog", torch.tensor([1.0, 3.0]), {0: "fur"}) == (
        "'dog' came partly through units labeled 'fur' (25 %); 75 % came through units the "
        "result does not label."
    )
    assert contribution_sentence("cat", torch.tensor([-1.0, 0.0]), {0: "fur"}).startswith(
        "No unit of this layer pushed 'cat' up"
    )
    assert "label them" in contribution_sentence("cat", torch.tensor([1.0]), {})


def test_errors_a_user_can_cause(labeled):
    result, loaded = labeled
    image = color_images()[0]
    with pytest.raises(NeurolabelError, match="choose one"):
        attribute_prediction(result, loaded, image, 0)
    with pytest.raises(NeurolabelError, match="not labeled in this result"):
        attribute_prediction(result, loaded, image, 0, layer="features.0")
    with pytest.raises(NeurolabelError, match="Unknown method"):
        attribute_prediction(result, loaded, image, 0, layer="fc", method="saliency")
    with pytest.raises(NeurolabelError, match="cannot be loaded from its name"):
        attribute_prediction(result, None, image, 0, layer="fc")

    class Other(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3 * 224 * 224, 4)

        def forward(self, x):
            return self.fc(x.flatten(1))

    other = Other().eval()
    with pytest.raises(NeurolabelError, match="4 units in this model but 2"):
        attribute_prediction(result, LoadedModel(other, INPUT, "other"), image, 0, layer="fc")
    with pytest.raises(NeurolabelError, match="No image at"):
        attribute_prediction(result, loaded, "/nonexistent.png", 0, layer="fc")
    with pytest.raises(NeurolabelError, match=r"\[3, H, W\]"):
        attribute_prediction(result, loaded, torch.zeros(2, 3, 8, 8), 0, layer="fc")


def _explain_folder(tmp_path):
    from neurolabel.plugin_core.cli import main

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
    main(args)
    return folder, out


def test_cli_attribute_command(tmp_path, capsys):
    from neurolabel.plugin_core.cli import main

    folder, out = _explain_folder(tmp_path)
    capsys.readouterr()
    heat = tmp_path / "heat"
    main(["attribute", str(out), str(folder / "0.png"), "--target", "0", "--heatmaps", str(heat)])
    printed = capsys.readouterr().out
    assert "'class 0' came mostly through units labeled 'red' (100 %)." in printed
    assert "Wrote 3 heatmaps" in printed
    assert sorted(p.name for p in heat.iterdir())[0] == "features.1_unit00000.png"
    main(["attribute", str(out), str(folder / "4.png"), "--method", "gradient-x-activation"])
    assert "'class 1' came mostly through units labeled 'blue'" in capsys.readouterr().out
    main(["attribute", str(out), str(folder / "0.png"), "--json", "--steps", "4"])
    data = json.loads(capsys.readouterr().out)
    assert data["target"] == 0 and data["neurons"][0]["label"] == "red"
    assert data["method"] == "conductance" and data["layer"] == "features.1"


def test_cli_attribute_errors(tmp_path, capsys):
    from neurolabel.plugin_core.cli import main

    folder, out = _explain_folder(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["attribute", str(out), str(folder / "0.png"), "--target", "dog"])
    assert exit_info.value.code == 2
    assert "no class names" in capsys.readouterr().err
