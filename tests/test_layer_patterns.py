"""Layer patterns (`layer3.*.conv2`, `type:Conv2d`) in the API and the CLI."""

from __future__ import annotations

import json

import pytest
import torchvision
from cli_runner import run
from synthetic import ColorDetector, square_image

from neurolabel.plugin_core.data.layer_patterns import expand_layer_patterns
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import LayerNotFoundError
from neurolabel.plugin_core.pipeline.labeler import NeuronLabeler


@pytest.fixture(scope="module")
def resnet():
    return torchvision.models.resnet18(weights=None)


def test_patterns_expand_in_model_order(resnet):
    assert expand_layer_patterns(resnet, ["layer1.*.conv?"]) == [
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.1.conv1",
        "layer1.1.conv2",
    ]
    convs = expand_layer_patterns(resnet, ["type:Conv2d"])
    assert len(convs) == 20 and convs[0] == "conv1" and convs[-1] == "layer4.1.conv2"
    assert sum(resnet.get_submodule(n).out_channels for n in convs) == 4800
    # Plain names keep their place; a layer named twice appears once, at its first position.
    assert expand_layer_patterns(resnet, ["fc", "layer4.1.*2", "type:Linear"]) == [
        "fc",
        "layer4.1.conv2",
        "layer4.1.bn2",
    ]
    assert expand_layer_patterns(resnet, ["type:*Norm2d"])[0] == "bn1"


def test_a_pattern_that_matches_nothing_says_what_exists(resnet):
    with pytest.raises(LayerNotFoundError, match="Closest: Conv2d.*Its layer types: .*ReLU"):
        expand_layer_patterns(resnet, ["type:Conv2D"])
    with pytest.raises(LayerNotFoundError, match="case-sensitive.*layer1.0.conv1.*in all"):
        expand_layer_patterns(resnet, ["Layer4.*"])


def test_the_labeler_explains_every_layer_a_pattern_names(tmp_path):
    images = [square_image((64, 64), (8, 8, 40, 40), (230, 20, 20), seed=i) for i in range(6)]
    labeler = NeuronLabeler(
        ColorDetector(),
        layers=["type:Conv2d", "f*"],  # features.0; then features, features.1 and fc
        scorer="color",
        vocabulary="colors",
        top_k=2,
        device="cpu",
        progress=False,
        cache=False,
        scoring="patches",
        preprocessing=Preprocessing((64, 64), 64, (0, 0, 0), (1, 1, 1)),
    )
    result = labeler.run(images)
    assert list(result.neurons) == ["features.0", "features", "features.1", "fc"]
    assert result.settings["layers"] == ["features.0", "features", "features.1", "fc"]


def test_cli_layers_match_filters_and_counts_units(capsys):
    model = "python:synthetic:ColorDetector?resize=none&size=64"
    args = ["layers", model, "--match", "type:Conv2d", "--match", "fc"]
    code, out, _ = run([*args, "--json"], capsys)
    assert code == 0
    assert [layer["name"] for layer in json.loads(out)] == ["features.0", "fc"]
    code, out, _ = run(args, capsys)
    assert code == 0 and "2 layers, 5 units" in out
    code, _, err = run(["layers", model, "--match", "type:Conv3d"], capsys)
    assert code == 2 and "Closest: Conv2d" in " ".join(err.split())  # rich wraps lines
