"""End to end through the library API: real models, real extractor, real scorers."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from synthetic import ColorDetector, square_image

from neurolabel import LabelingResult, NeuronLabeler
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import EmptyInputError, LayerNotFoundError, NeurolabelError
from neurolabel.plugin_core.pipeline.patches import box_iou

RED, BLUE = (230, 20, 20), (20, 20, 230)
SQUARES = [
    ((320, 240), (200, 40, 260, 100)),
    ((240, 320), (30, 180, 110, 260)),
    ((256, 256), (100, 100, 160, 160)),
    ((400, 260), (150, 90, 230, 170)),
]


def color_images():
    images = [square_image(size, box, RED, seed=i) for i, (size, box) in enumerate(SQUARES)]
    images += [square_image((300, 300), (150, 20, 230, 100), BLUE, seed=10 + i) for i in range(4)]
    return images


def labeler(**overrides):
    settings = dict(
        layers=["features.1", "fc"],
        scorer="color",
        vocabulary=["red", "blue", "green", "yellow"],
        top_k=4,
        device="cpu",
        batch_size=3,
        progress=False,
        min_patch_size=0.05,
        preprocessing=Preprocessing((224, 224), 224, (0, 0, 0), (1, 1, 1)),
        # 8 images are fewer than the exemplar slots, so `auto` would score whole images.
        scoring="patches",
    )
    settings.update(overrides)
    return NeuronLabeler(ColorDetector(), **settings)


def test_known_square_patches_and_labels(tmp_path):
    result = labeler().run(color_images())
    red = result.explanation("features.1", 0)
    assert red.description == "red"
    assert result.explanation("features.1", 1).description == "blue"
    assert result.explanation("features.1", 2).dead
    for exemplar in red.exemplars:
        size, truth = SQUARES[exemplar.image_index]
        assert box_iou(tuple(exemplar.box), truth) >= 0.7
    # vector layer: whole images, no boxes
    assert result.explanation("fc", 0).description == "red"
    assert all(e.box is None and e.map is None for e in result.explanation("fc", 1).exemplars)
    heat = red.exemplars[0].map  # the report's heatmap: peak inside the known square
    assert heat is not None and len(heat) <= 16
    peak_row = max(range(len(heat)), key=lambda r: max(heat[r]))
    assert max(heat[peak_row]) == max(max(row) for row in heat) > 0
    assert result.layers["fc"]["kind"] == "vector"
    path = result.save(tmp_path)
    again = LabelingResult.load(path)
    assert again.explanation("features.1", 0).top(1)[0][0] == "red"
    assert again.settings["scorer"] == "color" and again.dataset["num_used"] == 8
    assert (tmp_path / again.explanation("features.1", 0).exemplars[0].patch).is_file()


@pytest.mark.parametrize("aggregation", ["mean", "soft-wpmi", "wpmi", "cos-cubed", "contrast"])
def test_every_aggregation_runs_end_to_end(aggregation):
    result = labeler(layers=["fc"], aggregation=aggregation).run(color_images())
    assert result.explanation("fc", 0).description == "red"
    assert result.explanation("fc", 1).description == "blue"


def test_torchvision_and_open_clip_random_weights(image_folder):
    result = NeuronLabeler(
        "torchvision:resnet18?weights=none",
        layers=["layer4", "fc"],
        scorer="open_clip:ViT-S-32-alt?pretrained=none&templates=none",
        vocabulary=[
            "dog",
            "cat",
            "car",
            "tree",
            "sky",
            "red",
            "stripes",
            "wheel",
            "fur",
            "grass",
            "water",
            "face",
        ],
        top_k=3,
        device="cpu",
        batch_size=5,
        units={"layer4": range(4), "fc": [0, 999]},
        progress=False,
    ).run(image_folder)
    assert [n.unit for n in result.neurons["layer4"]] == [0, 1, 2, 3]
    assert [n.unit for n in result.neurons["fc"]] == [0, 999]
    neuron = result.explanation("layer4", 2)
    assert len(neuron.concepts) == 10 and len(neuron.exemplars) == 3
    assert neuron.exemplars[0].image.endswith(".png")
    assert result.layers["layer4"]["shape"][0] == 512
    assert result.settings["vocabulary_size"] == 12


def test_skipped_inputs_are_reported(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(color_images()):
        image.save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    (folder / "readme.md").write_text("x")
    result = labeler(layers=["fc"]).run(folder)
    reasons = {s["item"].rsplit("/", 1)[-1]: s["reason"] for s in result.dataset["skipped"]}
    assert set(reasons) == {"broken.jpg", "readme.md"}
    assert result.dataset["num_used"] == 8 and result.dataset["num_skipped"] == 2


def test_bad_input_errors(tmp_path):
    with pytest.raises(LayerNotFoundError, match="features.1"):
        labeler(layers=["featurez.1"]).run(color_images())
    with pytest.raises(EmptyInputError, match="vocabulary"):
        labeler(vocabulary=["", "  "]).run(color_images())
    with pytest.raises(NeurolabelError, match="units 0..2"):
        labeler(layers=["features.1"], units=[5]).run(color_images())
    with pytest.raises(NeurolabelError, match="no patch can be cut"):
        labeler(layers=["fc"], patches="activation").run(color_images())
    with pytest.raises(NeurolabelError, match="patches='bogus'"):
        labeler(patches="bogus")
    whole = labeler(layers=["features.1"], patches="whole").run(color_images())
    assert all(e.box is None for n in whole for e in n.exemplars)
    with pytest.raises(NeurolabelError, match="at least one layer"):
        labeler(layers=[])
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"garbage")
    with pytest.raises(EmptyInputError, match="None of the 1 probing images"):
        labeler().run(folder)


def test_dataset_and_generator_inputs():
    images = color_images()

    class Pairs(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return images[i], i

    by_dataset = labeler(layers=["fc"]).run(Pairs())
    by_generator = labeler(layers=["fc"]).run(im for im in images)
    assert by_dataset.explanation("fc", 0).top(2) == by_generator.explanation("fc", 0).top(2)
    assert by_generator.explanation("fc", 0).exemplars[0].image.startswith("#")


def test_results_do_not_depend_on_batch_size():
    first = labeler(batch_size=1).run(color_images())
    second = labeler(batch_size=8).run(color_images())
    for a, b in zip(first, second, strict=True):
        assert [e.image_index for e in a.exemplars] == [e.image_index for e in b.exemplars]
        assert a.description == b.description


def test_grayscale_and_rgba_inputs_are_converted():
    images = [Image.new("L", (64, 64), 200), Image.new("RGBA", (64, 64), (255, 0, 0, 255))]
    result = labeler(layers=["fc"], top_k=1).run(images)
    assert result.explanation("fc", 0).exemplars[0].image_index == 1
