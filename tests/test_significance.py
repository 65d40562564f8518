"""The label test: calibrated under the null, significant for a real detector, reported."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from rich.console import Console
from synthetic import ColorDetector, square_image
from torch import nn

from neurolabel import LabelingResult, NeuronLabeler
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.result import NeuronExplanation
from neurolabel.plugin_core.errors import InvalidSettingError
from neurolabel.plugin_core.pipeline.image_sample import ImageSample
from neurolabel.plugin_core.pipeline.settings import LabelingSettings
from neurolabel.plugin_core.pipeline.significance import (
    SignificanceSettings,
    benjamini_hochberg,
    unit_p_values,
)
from neurolabel.plugin_core.reporting.layer_summary import summarize_layer
from neurolabel.plugin_core.reporting.terminal import neuron_report, result_table

#: The images as they are (32 px): the default 224-px resize would only cost time.
SMALL = Preprocessing((32, 32), 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


class HashScorer:
    """Scores that depend on nothing an image shows: a pseudo-random vector per image."""

    name = "hash"

    def score_images(self, images, vocabulary):
        rows = []
        for image in images:
            seed = int(hashlib.sha256(image.tobytes()).hexdigest()[:8], 16)
            values = np.random.default_rng(seed).normal(size=len(vocabulary))
            rows.append(torch.from_numpy(values).float())
        return torch.stack(rows)


def noise_images(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(count)
    ]


def test_under_the_null_about_the_nominal_share_of_units_is_significant():
    """A randomly initialized network on random images, a scorer blind to the images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 48, 3))
    significant = tested = 0
    first = []
    for seed in range(4):
        result = NeuronLabeler(
            model,
            ["2"],
            scorer=HashScorer(),
            vocabulary=[f"concept {i}" for i in range(30)],
            top_k=10,
            device="cpu",
            progress=False,
            cache=False,
            preprocessing=SMALL,
        ).run(noise_images(150, seed))
        neurons = result.neurons["2"]
        assert all(n.p_value is not None for n in neurons)
        tested += len(neurons)
        significant += sum(not n.unexplained for n in neurons)
        first += [n.p_values[0] for n in neurons]
    # Nominal level 0.05 (false discoveries among all units under the global null).
    assert significant / tested <= 0.05
    # The labels' vocabulary-corrected p-values are not piled up near zero either.
    assert np.mean(np.array(first) <= 0.05) <= 0.1
    assert result.settings["significance_test"]["level"] == 0.05


def color_squares(count: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    images = []
    for i in range(count):
        side = int(rng.integers(30, 90))
        x, y = (int(v) for v in rng.integers(0, 160 - side, 2))
        color = (230, 20, 20) if i % 2 else (20, 20, 230)
        images.append(square_image((160, 160), (x, y, x + side, y + side), color, seed=i))
    return images


def test_the_red_square_unit_gets_a_significant_label(tmp_path):
    labeler = NeuronLabeler(
        ColorDetector(),
        ["features.1"],
        scorer="color",
        vocabulary=["red", "blue", "green", "yellow", "orange", "purple"],
        top_k=8,
        device="cpu",
        progress=False,
        cache=False,
    )
    result = labeler.run(color_squares(60))
    red, blue = result.explanation("features.1", 0), result.explanation("features.1", 1)
    assert red.description == "red" and blue.description == "blue"
    # significant at the default level (the spatial max picks any image with a square, so
    # the whole images' color shares separate them from the rest less than perfectly)
    assert red.p_value is not None and red.p_value < 0.05 and not red.unexplained
    assert blue.p_value is not None and blue.p_value < 0.05 and not blue.unexplained
    assert (
        result.explanation("features.1", 2).dead
        and result.explanation("features.1", 2).p_value is None
    )
    # A concept far down the ranking is not significant for the red unit.
    assert red.p_values is not None and red.p_values[-1] > 0.05
    folder = result.save(tmp_path / "out")
    rows = (tmp_path / "out" / "descriptions.csv").read_text().splitlines()
    assert rows[0] == "layer,unit,description,similarity,p_value"
    assert rows[1].startswith("features.1,0,red,") and rows[1].rsplit(",", 1)[1] != ""
    again = LabelingResult.load(folder)
    assert again.explanation("features.1", 0).p_value == pytest.approx(red.p_value)


def test_a_level_of_one_keeps_every_label_and_none_skips_the_test():
    images = noise_images(60, 3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    common = dict(
        preprocessing=SMALL,
        scorer=HashScorer(),
        vocabulary=["a", "b", "c"],
        top_k=5,
        device="cpu",
        progress=False,
        cache=False,
    )
    kept = NeuronLabeler(model, ["0"], significance=1.0, **common).run(images)
    assert all(not n.unexplained and n.p_value is not None for n in kept.neurons["0"])
    untested = NeuronLabeler(model, ["0"], significance=None, **common).run(images)
    assert all(n.p_value is None and not n.unexplained for n in untested.neurons["0"])
    assert "significance_test" not in untested.settings
    with pytest.raises(InvalidSettingError, match="above 0 and at most 1"):
        LabelingSettings(significance=0)


def test_too_few_sampled_images_leave_labels_untested():
    sample = ImageSample(torch.zeros(10, 1), torch.rand(10, 3))
    p = unit_p_values(
        torch.rand(1, 3, 2),
        torch.ones(1, 3, dtype=torch.bool),
        torch.ones(1, 3, dtype=torch.bool),
        torch.tensor([[0, 1]]),
        sample,
        SignificanceSettings(),
    )
    assert torch.isnan(p).all()


def test_exemplars_that_top_every_image_are_significant_and_ordinary_ones_are_not():
    g = torch.Generator().manual_seed(0)
    sims = torch.rand(200, 50, generator=g)
    sample = ImageSample(torch.zeros(200, 1), sims)
    top = sims[:, 7].argsort(descending=True)[:10]
    ordinary = torch.randperm(200, generator=g)[:10]
    scores = torch.stack([sims[top][:, [7, 8]], sims[ordinary][:, [7, 8]]])
    p = unit_p_values(
        scores,
        torch.ones(2, 10, dtype=torch.bool),
        torch.ones(2, 10, dtype=torch.bool),
        torch.tensor([[7, 8], [7, 8]]),
        sample,
        SignificanceSettings(permutations=999),
    )
    assert p[0, 0] == pytest.approx(1 / 1000) and p[0, 1] > 0.05 and p[1, 0] > 0.05


def test_benjamini_hochberg_matches_the_textbook_example():
    p = torch.tensor([0.01, 0.02, 0.03, 0.04, 0.05, 0.5], dtype=torch.float64)
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.06] * 5 + [0.5])


def _tested_result() -> LabelingResult:
    neurons = [
        NeuronExplanation(
            "fc", 0, [["dog", 2.0], ["cat", 1.0]], p_value=0.001, p_values=[0.001, 0.4]
        ),
        NeuronExplanation(
            "fc",
            1,
            [["wheel", 0.5], ["sky", 0.4]],
            p_value=0.6,
            p_values=[0.6, 0.9],
            unexplained=True,
        ),
        NeuronExplanation("fc", 2, [], dead=True),
    ]
    return LabelingResult(
        {"name": "m"},
        {"fc": {"units": 3}},
        {"fc": neurons},
        settings={"significance_test": {"level": 0.05}},
    )


def test_reports_say_unexplained_with_the_p_value():
    result = _tested_result()
    assert result.explanation("fc", 1).description == "(unexplained)"
    assert "fc,1,(unexplained),,0.6" in result.csv_text()
    console = Console(width=160, record=True)
    console.print(result_table(result))
    console.print(neuron_report(result, "fc", 1))
    text = console.export_text()
    assert "(unexplained)" in text and "0.6" in text and "better than chance" in text
    summary = summarize_layer(result, "fc")
    assert (summary.labeled, summary.unexplained, summary.dead) == (1, 1, 1)
    assert summary.top_concepts == [("dog", 1)]
    data = json.loads(json.dumps(result.to_dict()))
    assert LabelingResult.from_dict(data).explanation("fc", 1).unexplained


def test_the_html_report_marks_unexplained_units(tmp_path):
    from neurolabel.plugin_core.reporting.html_report import write_html_report

    path = write_html_report(_tested_result(), tmp_path / "report.html")
    html = path.read_text()
    assert '"un":true' in html.replace(" ", "") and "unexplained (p above the level)" in html
