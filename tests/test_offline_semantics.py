"""The offline real-semantics path: demo command, and final-layer labels on real photos."""

from __future__ import annotations

import csv
import re
import shutil

import pytest
from conftest import IMAGENET_SAMPLE

from neurolabel import NeuronLabeler
from neurolabel.backends.vocabularies import imagenet_classes
from neurolabel.plugin_core.cli import main
from neurolabel.plugin_core.data.result import LabelingResult


def test_demo_command_runs_offline_and_writes_results(tmp_path, capsys):
    out = tmp_path / "demo"
    main(["demo", "--out", str(out), "--units", "3", "--top-k", "2", "--device", "cpu", "--quiet"])
    printed = capsys.readouterr().out
    assert "Units whose best-ranked concept is a color, by depth" in printed
    assert "Significant labels (p <= 0.05" in printed
    result = LabelingResult.load(out)
    assert list(result.neurons) == ["bn1", "blocks.2", "blocks.4", "blocks.6", "classifier"]
    assert result.settings["scorer"].startswith("composite:color+classifier:")
    assert result.dataset["num_skipped"] == 0
    assert (
        (out / "descriptions.csv")
        .read_text()
        .startswith("layer,unit,description,similarity,p_value")
    )
    # a photograph and its quadrants are one source: a unit's exemplars show different photos
    assert result.settings["source_pattern"]
    pattern = re.compile(result.settings["source_pattern"])
    for neuron in result:
        photos = [pattern.search(e.image).group(1) for e in neuron.exemplars]
        assert len(photos) == len(set(photos)), (neuron.layer, neuron.unit, photos)
    assert result.dataset["num_used"] >= 90  # 19 photographs and their quadrants
    assert "<html" in (out / "report.html").read_text()[:500].lower()
    # the logit units explained are those the photographs make the model predict: most of
    # many must have their own class name among their top-5 labels
    classes = result.model["class_names"]
    logits = result.neurons["classifier"]
    assert logits and len(logits) < 80
    own = sum(classes[n.unit].lower() in [c for c, _ in n.concepts[:5]] for n in logits)
    assert own / len(logits) >= 0.25  # chance: 5 of ~1000 concepts


@pytest.mark.shared_data
def test_final_layer_labels_name_their_class(tmp_path):
    with (IMAGENET_SAMPLE / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))[::10]  # 50 classes, one photo each
    folder = tmp_path / "imgs"
    folder.mkdir()
    for row in rows:
        shutil.copy(IMAGENET_SAMPLE / row["file"], folder / row["file"])
    units = [int(r["class_index"]) for r in rows]
    labeler = NeuronLabeler(
        "packaged:efficientnet_lite0",
        layers=["classifier"],
        scorer="classifier:packaged:efficientnet_lite1?temperature=1&top=1",
        vocabulary="imagenet",
        top_k=10,
        units=units,
        device="cpu",
        batch_size=25,
        progress=False,
    )
    result = labeler.run(folder)
    concepts = imagenet_classes()
    # The best-ranked concept: one photo per class is too little evidence for the label test
    # (a unit's own-class photo is one of its 10 exemplars), so the labels are unexplained.
    right = sum(
        result.explanation("classifier", u).concepts[0][0] == concepts[u].lower() for u in units
    )
    assert right / len(units) >= 0.7
    assert all(result.explanation("classifier", u).p_value is not None for u in units)


def test_library_quickstart_example_runs(tmp_path, capsys):
    import runpy
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "library_quickstart.py"
    argv = sys.argv
    sys.argv = [str(example), str(tmp_path / "out")]
    try:
        runpy.run_path(str(example), run_name="__main__")
    finally:
        sys.argv = argv
    printed = capsys.readouterr().out
    assert "classifier unit 281" in printed and "saved" in printed
    assert (tmp_path / "out" / "result.json").is_file()
