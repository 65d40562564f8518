"""One home for the labeler's settings: validated, frozen, torch-free, recorded as given,
and the CLI's defaults read from it instead of restated."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys

import pytest
from synthetic import ColorDetector, square_image

from neurolabel import InvalidSettingError, LabelingSettings, NeuronLabeler, Preprocessing
from neurolabel.plugin_core.cli import explain as explain_command


def test_defaults_and_normalized_values():
    settings = LabelingSettings(units={"fc": range(3), "conv": None}, checkpoint="a/b.pt")
    assert settings.units == {"fc": (0, 1, 2), "conv": None}
    assert settings.units_for("fc") == (0, 1, 2) and settings.units_for("other") is None
    assert str(settings.checkpoint) == "a/b.pt" and settings.top_k == 10
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.top_k = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"top_k": 0}, "top_k must be at least 1, got 0"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"scoring": "all"}, "scoring='all': use one of auto, patches, images"),
        ({"precision": "fp8"}, "precision='fp8'"),
        ({"threshold": "mean"}, "threshold='mean': use one of quantile, otsu"),
        ({"activation": "median"}, "activation='median': use one of max, mean"),
        ({"min_patch_size": 0.0}, r"min_patch_size must be in \(0, 1\]"),
        ({"quantile": 1.5}, r"quantile must be in \[0, 1\]"),
        ({"holdout": 1.0}, "between 0 and 1"),
        ({"num_workers": -1}, "num_workers must not be negative"),
        ({"units": ["a"]}, "give unit numbers"),
    ],
)
def test_bad_values_fail_saying_what_is_accepted(changes, message):
    with pytest.raises(InvalidSettingError, match=message):
        LabelingSettings(**changes)
    with pytest.raises(ValueError):  # also a ValueError, for callers that catch those
        LabelingSettings().replace(**changes)


def test_unknown_names_fail_with_the_closest_one():
    with pytest.raises(TypeError, match="'topk' \\(did you mean 'top_k'\\?\\)"):
        LabelingSettings().replace(topk=3)
    with pytest.raises(TypeError, match="Unknown setting.*'batchsize'.*'batch_size'"):
        NeuronLabeler(ColorDetector(), ["fc"], scorer="color", batchsize=3)


def test_importing_settings_does_not_import_torch():
    code = (
        "import sys\nfrom neurolabel.plugin_core.pipeline.settings import LabelingSettings\n"
        "LabelingSettings(top_k=3).to_dict()\nassert 'torch' not in sys.modules, 'torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_cli_reads_its_defaults_from_the_settings():
    defaults = LabelingSettings()
    options = inspect.signature(explain_command.explain).parameters
    same_name = {
        "scorer": "scorer",
        "vocab": "vocabulary",
        "top_k": "top_k",
        "aggregation": "aggregation",
        "extractor": "extractor",
        "threshold": "threshold",
        "patches": "patches",
        "activation": "activation",
        "device": "device",
        "batch_size": "batch_size",
        "num_workers": "num_workers",
        "scoring": "scoring",
        "precision": "precision",
        "checkpoint_every": "checkpoint_every",
    }
    for option, setting in same_name.items():
        assert options[option].default == getattr(defaults, setting), option
    source = inspect.getsource(explain_command)
    assert defaults.scorer not in source  # the literal default lives in settings.py only


def test_the_result_records_the_settings_and_what_the_run_resolved():
    images = [
        square_image((200, 200), (40, 40, 120, 120), color, seed=i)
        for i, color in enumerate([(230, 20, 20), (20, 20, 230)] * 3)
    ]
    settings = LabelingSettings(
        scorer="color",
        top_k=3,
        device="cpu",
        batch_size=4,
        progress=False,
        scoring="patches",
        min_patch_size=0.1,
        sample_size=4,
    )
    labeler = NeuronLabeler(
        ColorDetector(),
        ["features.1"],
        vocabulary=["red", "blue", "green"],
        settings=settings,
        preprocessing=Preprocessing((224, 224), 224, (0, 0, 0), (1, 1, 1)),
        top_k=2,  # an option given by name wins over the settings object
    )
    assert labeler.settings == settings.replace(top_k=2)
    result = labeler.run(images)
    recorded = result.settings
    resolved = {"vocabulary": "list", "aggregation": "contrast", "sample_size": 4}
    for key, value in labeler.settings.to_dict().items():
        if key == "scoring":
            assert recorded["scoring"]["mode"] == "patches"
        else:
            assert recorded[key] == resolved.get(key, value), key
    assert recorded["layers"] == ["features.1"] and recorded["vocabulary_size"] == 3
    assert recorded["world_size"] == 1 and recorded["top_k"] == 2
    assert result.explanation("features.1", 0).description == "red"
