from __future__ import annotations

import csv
import json

import pytest
from PIL import Image

from neurolabel.plugin_core.data.atomic import atomic_write
from neurolabel.plugin_core.data.result import Exemplar, LabelingResult, NeuronExplanation
from neurolabel.plugin_core.errors import LayerNotFoundError, NeurolabelError


def sample_result() -> LabelingResult:
    neurons = [
        NeuronExplanation(
            "layer4",
            0,
            [["dog", 1.5], ["cat", 0.5]],
            [Exemplar(3, "a.png", 2.0, [0, 0, 5, 5])],
            similarity=0.31,
        ),
        NeuronExplanation("layer4", 1, [], [], dead=True),
    ]
    result = LabelingResult(
        model={"name": "m"},
        layers={"layer4": {"units": 2}},
        neurons={"layer4": neurons},
        settings={"top_k": 1},
    )
    result.patch_images[("layer4", 0, 0)] = Image.new("RGB", (5, 5), "red")
    return result


def test_save_load_round_trip(tmp_path):
    result = sample_result()
    path = result.save(tmp_path / "out")
    loaded = LabelingResult.load(tmp_path / "out")
    assert loaded.explanation("layer4", 0).top(1) == [("dog", 1.5)]
    assert loaded.explanation("layer4", 1).description == "(dead)"
    patch = loaded.explanation("layer4", 0).exemplars[0].patch
    assert patch and (tmp_path / "out" / patch).is_file()
    assert json.loads(path.read_text())["schema_version"] == "1.5"
    rows = list(csv.reader((tmp_path / "out" / "descriptions.csv").open()))
    assert rows == [
        ["layer", "unit", "description", "similarity", "p_value"],
        ["layer4", "0", "dog", "0.31", ""],
        ["layer4", "1", "(dead)", "", ""],
    ]
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_lookup_errors(tmp_path):
    result = sample_result()
    with pytest.raises(LayerNotFoundError, match="Layers: layer4"):
        result.explanation("layer3", 0)
    with pytest.raises(NeurolabelError, match="units explained: 0..1"):
        result.explanation("layer4", 7)
    with pytest.raises(NeurolabelError, match="No result"):
        LabelingResult.load(tmp_path)
    (tmp_path / "result.json").write_text('{"schema_version": "9.0"}')
    with pytest.raises(NeurolabelError, match="schema 9.0"):
        LabelingResult.load(tmp_path)


def test_atomic_write_uses_normal_permissions(tmp_path):
    import os

    with atomic_write(tmp_path / "a.txt") as handle:
        handle.write("x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(target) as handle:
            handle.write("half")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


def test_many_patches_are_written_by_threads_and_a_failure_stops_the_save(tmp_path):
    result = sample_result()
    explained = result.neurons["layer4"][0]
    explained.exemplars = [Exemplar(i, f"{i}.png", 1.0, None) for i in range(40)]
    for rank in range(40):
        result.patch_images[("layer4", 0, rank)] = Image.new("RGB", (6, 4), (rank, 0, 0))
    result.save(tmp_path / "out")
    saved = sorted((tmp_path / "out" / "patches" / "layer4").iterdir())
    assert len(saved) == 40 and not list((tmp_path / "out").rglob(".*.tmp"))
    with Image.open(saved[17]) as patch:
        assert patch.size == (6, 4) and abs(patch.getpixel((3, 2))[0] - 17) <= 3
    # JPEG has no alpha: one unwritable patch fails the save, no result.json, no temp files.
    result.patch_images[("layer4", 0, 5)] = Image.new("RGBA", (6, 4))
    with pytest.raises(OSError):
        result.save(tmp_path / "broken")
    assert not (tmp_path / "broken" / "result.json").exists()
    assert not list((tmp_path / "broken").rglob(".*.tmp"))


def test_result_json_has_one_neuron_per_line_and_the_same_document(tmp_path):
    result = sample_result()
    result.neurons["layer4"][0].exemplars[0].map = [[0.5, 1.0], [0.25, 0.0]]
    result.neurons["fc"] = [NeuronExplanation("fc", 0, [["cat", 0.2]])]
    result.layers["fc"] = {"units": 1}
    path = result.save(tmp_path / "out")
    text = path.read_text()
    assert json.loads(text) == json.loads(json.dumps(result.to_dict()))
    lines = text.splitlines()
    neuron_lines = [line for line in lines if line.startswith('   {"layer":')]
    assert len(neuron_lines) == 3 and '"map":[[0.5,1.0],[0.25,0.0]]' in neuron_lines[0]
    assert '"top_k": 1' in text  # the rest stays indented
    empty = LabelingResult(model={"name": "m"}, layers={}, neurons={})
    assert json.loads(empty.save(tmp_path / "empty").read_text())["neurons"] == {}
