"""A result.json is untrusted input: crafted, hand-edited, truncated or written by a later
neurolabel. Every malformed file gives one clear error naming the file and the field, from
``LabelingResult.load`` and from every command built on it; fields a later minor version
adds are ignored; ``evaluate`` writes strict JSON whatever its evaluators return."""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run

from neurolabel.plugin_core.data.result import (
    SCHEMA_VERSION,
    Exemplar,
    LabelingResult,
    NeuronExplanation,
)
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.plugins import hookimpl, pm


def document() -> dict[str, Any]:
    """A small, valid result.json document (schema 1.1)."""
    exemplar = {
        "image_index": 3,
        "image": "a.png",
        "activation": 2.0,
        "box": [0, 0, 5, 5],
        "patch": "patches/layer4/unit00000_rank000.jpg",
        "map": [[0.0, 1.0], [2.0, 3.0]],
    }
    neuron = {
        "layer": "layer4",
        "unit": 0,
        "description": "dog",
        "concepts": [["dog", 1.5], ["cat", 0.5]],
        "similarity": 0.31,
        "dead": False,
        "summary": None,
        "described": None,
        "stats": {"mean": 0.5, "std": 0.2, "min": 0.0, "max": 3.0, "threshold": 1.2},
        "exemplars": [exemplar],
    }
    dead = {"layer": "layer4", "unit": 1, "concepts": [], "dead": True, "exemplars": []}
    return {
        "schema_version": "1.1",
        "model": {
            "name": "m",
            "class_names": ["tench", "goldfish"],
            "preprocessing": {"crop_size": [224, 224], "resize_size": 256},
        },
        "layers": {"layer4": {"shape": [2, 7, 7], "kind": "spatial", "units": 2}},
        "dataset": {"num_images": 4, "num_used": 4, "num_skipped": 0, "skipped": []},
        "settings": {"scorer": "color", "vocabulary": "colors", "aggregation": "contrast"},
        "versions": {"neurolabel": "0.1.0"},
        "metrics": {"accuracy": {"top1": 0.5}},
        "neurons": {"layer4": [neuron, dead]},
    }


def changed(edit: Callable[[dict[str, Any]], Any]) -> str:
    """The document after ``edit`` (which changes it in place), as JSON text."""
    data = document()
    edit(data)
    return json.dumps(data)


def neuron0(data: dict[str, Any]) -> dict[str, Any]:
    return data["neurons"]["layer4"][0]


def exemplar0(data: dict[str, Any]) -> dict[str, Any]:
    return neuron0(data)["exemplars"][0]


def replace(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


VALID = json.dumps(document())

#: (case, result.json text, what the message must say). Each case is one malformation.
MALFORMED: list[tuple[str, str, str]] = [
    ("top-level-list", "[1, 2]", "must hold a JSON object (a neurolabel result), found a list"),
    ("top-level-string", '"result"', "must hold a JSON object"),
    ("empty-file", "", "is not valid JSON"),
    ("truncated", VALID[: len(VALID) // 2], "is not valid JSON"),
    ("not-utf8", "\udcff", "is not valid JSON"),
    ("no-schema-version", changed(lambda d: d.pop("schema_version")), "has no schema_version"),
    ("schema-version-number", changed(lambda d: d.update(schema_version=1.1)), "schema_version"),
    ("newer-major", changed(lambda d: d.update(schema_version="2.0")), "upgrade neurolabel"),
    ("no-neurons", changed(lambda d: d.pop("neurons")), "has no neurons"),
    ("model-list", changed(lambda d: d.update(model=[])), "model must be an object"),
    ("layers-string", changed(lambda d: d.update(layers="x")), "layers must be an object"),
    ("dataset-number", changed(lambda d: d.update(dataset=3)), "dataset must be an object"),
    ("settings-list", changed(lambda d: d.update(settings=[1])), "settings must be an object"),
    ("metrics-string", changed(lambda d: d.update(metrics="x")), "metrics must be an object"),
    ("versions-null", changed(lambda d: d.update(versions=None)), "versions must be an object"),
    ("neurons-list", changed(lambda d: d.update(neurons=[])), "neurons must be an object"),
    (
        "layer-not-list",
        changed(lambda d: d["neurons"].update(layer4={})),
        "neurons.layer4 must be a list of neurons, found an object",
    ),
    (
        "neuron-string",
        changed(lambda d: d["neurons"]["layer4"].__setitem__(1, "dog")),
        "neurons.layer4[1] must be an object, found a string",
    ),
    ("no-unit", changed(lambda d: neuron0(d).pop("unit")), "neurons.layer4[0] has no unit"),
    (
        "unit-string",
        changed(lambda d: neuron0(d).update(unit="0")),
        "neurons.layer4[0].unit must be a non-negative integer, found a string",
    ),
    ("unit-negative", changed(lambda d: neuron0(d).update(unit=-3)), "layer4[0].unit must be"),
    ("unit-true", changed(lambda d: neuron0(d).update(unit=True)), "unit must be"),
    ("unit-float", changed(lambda d: neuron0(d).update(unit=1.5)), "unit must be"),
    (
        "unit-1e400",
        replace(VALID, '"unit": 0', '"unit": 1e400'),
        "unit must be a non-negative integer, found a non-finite number",
    ),
    ("unit-NaN", replace(VALID, '"unit": 0', '"unit": NaN'), "unit must be a non-negative"),
    (
        "unit-4000-digits",
        replace(VALID, '"unit": 0', '"unit": ' + "9" * 4000),
        "unit must be a non-negative integer, found an integer too large to use",
    ),
    (
        "unit-5000-digits",
        replace(VALID, '"unit": 0', '"unit": ' + "9" * 5000),
        "is not valid JSON (Exceeds the limit (4300 digits)",
    ),
    ("layer-number", changed(lambda d: neuron0(d).update(layer=4)), "layer4[0].layer must be"),
    ("dead-string", changed(lambda d: neuron0(d).update(dead="no")), "dead must be true or false"),
    ("summary-list", changed(lambda d: neuron0(d).update(summary=[])), "summary must be a string"),
    (
        "concepts-string",
        changed(lambda d: neuron0(d).update(concepts="dog")),
        "neurons.layer4[0].concepts must be a list of [concept, score] pairs, found a string",
    ),
    (
        "concept-not-pair",
        changed(lambda d: neuron0(d).update(concepts=[["dog"]])),
        "neurons.layer4[0].concepts[0] must be a [concept, score] pair",
    ),
    (
        "concept-name-number",
        changed(lambda d: neuron0(d).update(concepts=[[1, 2.0]])),
        "concepts[0] must be a [concept, score] pair",
    ),
    (
        "concept-score-string",
        changed(lambda d: neuron0(d).update(concepts=[["dog", "high"]])),
        "neurons.layer4[0].concepts[0][1] must be a number or null, found a string",
    ),
    (
        "described-string",
        changed(lambda d: neuron0(d).update(described="fur")),
        "described must be a list of [label, score] pairs",
    ),
    (
        "similarity-string",
        changed(lambda d: neuron0(d).update(similarity="0.3")),
        "similarity must be a number or null, found a string",
    ),
    ("stats-list", changed(lambda d: neuron0(d).update(stats=[])), "stats must be an object"),
    (
        "stats-value-string",
        changed(lambda d: neuron0(d)["stats"].update(max="3")),
        "neurons.layer4[0].stats.max must be a number or null, found a string",
    ),
    (
        "exemplars-object",
        changed(lambda d: neuron0(d).update(exemplars={})),
        "exemplars must be a list of objects, found an object",
    ),
    (
        "exemplar-number",
        changed(lambda d: neuron0(d).update(exemplars=[7])),
        "neurons.layer4[0].exemplars[0] must be an object, found an integer",
    ),
    (
        "exemplar-no-image",
        changed(lambda d: exemplar0(d).pop("image")),
        "exemplars[0] has no image",
    ),
    (
        "image-index-string",
        changed(lambda d: exemplar0(d).update(image_index="3")),
        "exemplars[0].image_index must be a non-negative integer",
    ),
    ("image-number", changed(lambda d: exemplar0(d).update(image=5)), "image must be a string"),
    ("patch-number", changed(lambda d: exemplar0(d).update(patch=5)), "patch must be a string"),
    (
        "activation-string",
        changed(lambda d: exemplar0(d).update(activation="high")),
        "exemplars[0].activation must be a number or null",
    ),
    (
        "box-three",
        changed(lambda d: exemplar0(d).update(box=[0, 0, 5])),
        "exemplars[0].box must be a list of 4 numbers [x0, y0, x1, y1] or null, found a list of 3",
    ),
    (
        "box-strings",
        changed(lambda d: exemplar0(d).update(box=["0", "0", "5", "5"])),
        "box must be a list of 4 numbers",
    ),
    ("box-number", changed(lambda d: exemplar0(d).update(box=5)), "box must be a list of 4"),
    ("box-NaN", replace(VALID, '"box": [0, 0, 5, 5]', '"box": [0, NaN, 5, 5]'), "box must be"),
    (
        "map-flat",
        changed(lambda d: exemplar0(d).update(map=[1.0, 2.0])),
        "exemplars[0].map[0] must be a list of numbers, found a number",
    ),
    (
        "map-string-cell",
        changed(lambda d: exemplar0(d).update(map=[[0.0, "x"]])),
        "exemplars[0].map[0][1] must be a number or null, found a string",
    ),
    ("map-string", changed(lambda d: exemplar0(d).update(map="x")), "map must be a list of lists"),
    (
        "layers-entry-list",
        changed(lambda d: d["layers"].update(layer4=[80])),
        "layers.layer4 must be an object, found a list of 1",
    ),
    (
        "layers-units-string",
        changed(lambda d: d["layers"]["layer4"].update(units="2")),
        "layers.layer4.units must be a non-negative integer or null",
    ),
    (
        "layers-shape-number",
        changed(lambda d: d["layers"]["layer4"].update(shape=2)),
        "layers.layer4.shape must be a list of sizes or null",
    ),
    ("layers-kind-number", changed(lambda d: d["layers"]["layer4"].update(kind=1)), "kind must"),
    (
        "class-names-string",
        changed(lambda d: d["model"].update(class_names="tench")),
        "model.class_names must be a list of strings or null",
    ),
    (
        "crop-size-string",
        changed(lambda d: d["model"]["preprocessing"].update(crop_size="224")),
        "model.preprocessing.crop_size must be [height, width] in pixels",
    ),
    (
        "dataset-root-number",
        changed(lambda d: d["dataset"].update(root=5)),
        "dataset.root must be a string or null",
    ),
    (
        "dataset-skipped-number",
        changed(lambda d: d["dataset"].update(skipped=5)),
        "dataset.skipped must be a list or null",
    ),
    (
        "settings-vocabulary-number",
        changed(lambda d: d["settings"].update(vocabulary=5)),
        "settings.vocabulary must be a string or null, found an integer",
    ),
    (
        "settings-warnings-number",
        changed(lambda d: d["settings"].update(warnings=5)),
        "settings.warnings must be a list of strings or null",
    ),
    (
        "metrics-nested-deep",
        replace(VALID, '"metrics": {', '"metrics": {"deep": ' + nested(100) + ", "),
        "metrics is nested more than 64 levels deep",
    ),
    (
        "metrics-nested-100000",
        replace(VALID, '"metrics": {', '"metrics": {"deep": ' + nested(100_000) + ", "),
        "its JSON is nested too deeply",
    ),
]


def write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    # surrogateescape: the "not-utf8" case writes a raw 0xff byte.
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    return path


def flat(text: str) -> str:
    """``text`` on one line (rich may wrap long messages)."""
    return " ".join(text.split())


def test_the_base_document_is_valid(tmp_path):
    result = LabelingResult.load(write(tmp_path, VALID))
    assert result.explanation("layer4", 0).top(1) == [("dog", 1.5)]
    assert result.explanation("layer4", 0).exemplars[0].map == [[0.0, 1.0], [2.0, 3.0]]


@pytest.mark.parametrize(("case", "text", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_malformed_files_give_one_clear_error(tmp_path, case, text, message):
    path = write(tmp_path / case, text)
    with pytest.raises(NeurolabelError) as caught:
        LabelingResult.load(path.parent)
    error = str(caught.value)
    assert error.startswith(str(path)), error
    assert message in error
    assert "\n" not in error


COMMANDS = [
    [],
    ["--json"],
    ["--neuron", "layer4:0"],
    ["--html", "{out}/report.html"],
]


@pytest.mark.parametrize(("case", "text", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_report_says_what_is_malformed_without_traceback(tmp_path, capsys, case, text, message):
    folder = tmp_path / "result"
    write(folder, text)
    code, stdout, err = run(["report", str(folder)], capsys)
    assert code == 2, err
    assert message in flat(err) and "Traceback" not in err
    assert flat(err).startswith(f"Error: {folder / 'result.json'}") and not stdout


#: One case of each kind, through every command built on ``load`` (each fails there).
EVERY_COMMAND = [
    c
    for c in MALFORMED
    if c[0]
    in {
        "top-level-list",
        "truncated",
        "unit-5000-digits",
        "metrics-nested-100000",
        "settings-list",
        "neuron-string",
        "concepts-string",
        "box-three",
        "map-string-cell",
        "layers-units-string",
        "settings-vocabulary-number",
    }
]


@pytest.mark.parametrize(
    ("case", "text", "message"), EVERY_COMMAND, ids=[c[0] for c in EVERY_COMMAND]
)
def test_every_command_says_what_is_malformed(tmp_path, capsys, case, text, message):
    folder = tmp_path / "result"
    write(folder, text)
    commands = [["report", str(folder), *(a.format(out=tmp_path) for a in c)] for c in COMMANDS]
    commands.append(["evaluate", str(folder), "--metric", "layer-profile", "--device", "cpu"])
    for args in commands:
        code, stdout, err = run(args, capsys)
        assert code == 2, (args, err)
        assert message in flat(err) and "Traceback" not in err, (args, err)
        assert not stdout
    assert not (tmp_path / "report.html").exists()
    assert (folder / "result.json").read_bytes() == text.encode("utf-8", "surrogateescape")


def later_minor_version(data: dict[str, Any]) -> None:
    """What a later 1.x neurolabel might write: fields this version does not know."""
    data["schema_version"] = "1.7"
    data["provenance"] = {"host": "x"}
    neuron0(data)["attribution"] = {"method": "ig", "values": [1, 2]}
    neuron0(data)["tags"] = ["new"]
    exemplar0(data)["mask"] = [[1, 0], [0, 1]]
    exemplar0(data)["caption"] = "a dog on grass"
    data["layers"]["layer4"]["dtype"] = "float16"
    data["dataset"]["licenses"] = ["cc-by"]


def older_minor_version(data: dict[str, Any]) -> None:
    """A 1.0 result: no dataset.root, no described field."""
    data["schema_version"] = "1.0"
    for neuron in data["neurons"]["layer4"]:
        neuron.pop("described", None)


def non_finite(text: str) -> str:
    """NaN and Infinity (not JSON, never written by save()) and 1e400 (an infinity)."""
    text = replace(text, '"similarity": 0.31', '"similarity": NaN')
    text = replace(text, '["cat", 0.5]', '["cat", -Infinity]')
    text = replace(text, '"activation": 2.0', '"activation": Infinity')
    text = replace(text, '"max": 3.0', '"max": 1e400')
    text = replace(text, "[2.0, 3.0]", "[NaN, 1e400]")
    return replace(text, '"top1": 0.5', '"top1": NaN')


READABLE = [
    ("later-minor-version", changed(later_minor_version)),
    ("older-minor-version", changed(older_minor_version)),
    ("non-finite-numbers", non_finite(VALID)),
    ("minimal", json.dumps({"schema_version": "1.1", "model": {}, "layers": {}, "neurons": {}})),
]


@pytest.mark.parametrize(("case", "text"), READABLE, ids=[c[0] for c in READABLE])
def test_readable_files_load_and_report(tmp_path, capsys, case, text):
    folder = tmp_path / "result"
    write(folder, text)
    result = LabelingResult.load(folder)
    if result.neurons:
        neuron = result.explanation("layer4", 0)
        assert neuron.description == "dog" and neuron.exemplars[0].image == "a.png"
    commands = [["report", str(folder), *(a.format(out=tmp_path) for a in c)] for c in COMMANDS]
    if not result.neurons:
        commands = [args for args in commands if "--neuron" not in args]
    commands.append(["evaluate", str(folder), "--metric", "layer-profile", "--device", "cpu"])
    for args in commands:
        code, _, err = run(args, capsys)
        assert code == 0, (args, err)
    strict_json(folder / "result.json")  # evaluate saved it again: strict JSON


def test_unknown_fields_are_ignored_and_not_claimed_again(tmp_path, capsys):
    folder = tmp_path / "result"
    write(folder, changed(later_minor_version))
    result = LabelingResult.load(folder)
    neuron = result.explanation("layer4", 0)
    assert neuron.top(2) == [("dog", 1.5), ("cat", 0.5)]
    assert not hasattr(neuron, "attribution") and not hasattr(neuron.exemplars[0], "caption")
    # Free-form parts keep what they hold; the re-saved file claims only this schema.
    assert result.layers["layer4"]["dtype"] == "float16"
    assert result.dataset["licenses"] == ["cc-by"]
    assert result.schema_version == SCHEMA_VERSION
    result.save_json(folder / "result.json")
    saved = json.loads((folder / "result.json").read_text())
    assert (
        saved["schema_version"] == SCHEMA_VERSION
        and "attribution" not in saved["neurons"]["layer4"][0]
    )


def test_older_minor_version_keeps_its_version(tmp_path):
    result = LabelingResult.load(write(tmp_path, changed(older_minor_version)))
    assert result.schema_version == "1.0" and "root" not in result.dataset
    assert result.explanation("layer4", 0).described is None


def test_non_finite_numbers_read_as_null(tmp_path):
    result = LabelingResult.load(write(tmp_path, non_finite(VALID)))
    neuron = result.explanation("layer4", 0)
    assert neuron.similarity is None and neuron.stats["max"] is None
    assert neuron.concepts == [["dog", 1.5], ["cat", None]]
    assert neuron.exemplars[0].activation is None
    assert neuron.exemplars[0].map == [[0.0, 1.0], [None, None]]
    assert result.metrics["accuracy"]["top1"] is None
    assert neuron.score == 1.5 and math.isnan(neuron.top(2)[1][1])


def test_a_null_top_score_has_no_score():
    neuron = NeuronExplanation("fc", 0, [["dog", None]])
    assert neuron.score is None and neuron.description == "dog"


def test_from_dict_checks_too():
    neurons = {"fc": [{"unit": "0"}]}
    with pytest.raises(NeurolabelError, match=r"^result: neurons\.fc\[0\]\.unit must be"):
        LabelingResult.from_dict(
            {"schema_version": "1.1", "model": {}, "layers": {}, "neurons": neurons}
        )
    with pytest.raises(NeurolabelError, match=r"^neuron: concepts must be a list"):
        NeuronExplanation.from_dict({"layer": "fc", "unit": 0, "concepts": 5})
    data = copy.deepcopy(document())
    exemplar0(data)["map"] = [[1.0, float("inf")]]
    LabelingResult.from_dict(data)
    assert exemplar0(data)["map"] == [[1.0, float("inf")]]  # the caller's data is not changed


def strict_json(path: Path) -> Any:
    """Parse ``path`` refusing NaN and Infinity, as a strict JSON reader does."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)


FIGURES = {
    "inf": float("inf"),
    "per_layer": {"layer4": {"auc": float("nan"), "curve": [1.0, float("-inf"), {"x": math.inf}]}},
    "rows": [{"unit": 0, "drop": float("nan")}, [float("inf"), 2.0]],
    "numpy": {"scalar": np.float32("inf"), "array": np.array([1.5, np.nan])},
    "finite": 0.25,
}
SAFE_FIGURES = {
    "inf": None,
    "per_layer": {"layer4": {"auc": None, "curve": [1.0, None, {"x": None}]}},
    "rows": [{"unit": 0, "drop": None}, [None, 2.0]],
    "numpy": {"scalar": None, "array": [1.5, None]},
    "finite": 0.25,
}


@pytest.fixture
def non_finite_evaluator():
    class NonFinite:
        name = "non-finite"

        def evaluate(self, result, context):
            return copy.deepcopy(FIGURES)

    class Plugin:
        @hookimpl
        def register_evaluators(self, register):
            register("non-finite", lambda spec, ctx: NonFinite(), description="test")

    plugin = Plugin()
    pm.register(plugin, name="non-finite-evaluator")
    yield
    pm.unregister(plugin)


def test_evaluate_writes_non_finite_figures_as_null(tmp_path, capsys, non_finite_evaluator):
    folder = tmp_path / "result"
    write(folder, VALID)
    args = ["evaluate", str(folder), "--metric", "non-finite", "--device", "cpu"]
    code, _, err = run([*args, "--json"], capsys)
    assert code == 0, err
    saved = strict_json(folder / "result.json")
    assert saved["metrics"]["non-finite"] == SAFE_FIGURES
    assert saved["metrics"]["accuracy"] == {"top1": 0.5}
    code, _, err = run(args, capsys)  # the tables too
    assert code == 0, err
    assert strict_json(folder / "result.json")["metrics"]["non-finite"] == SAFE_FIGURES


def test_save_writes_non_finite_figures_anywhere_as_null(tmp_path):
    exemplar = Exemplar(0, "a.png", float("inf"), None, map=[[1.0, float("nan")]])
    neuron = NeuronExplanation("fc", 0, [["dog", float("nan")]], [exemplar], similarity=math.nan)
    result = LabelingResult({"name": "m"}, {"fc": {"units": 1}}, {"fc": [neuron]})
    result.metrics = copy.deepcopy(FIGURES)
    result.settings = {"seconds": float("inf")}
    saved = strict_json(result.save(tmp_path))
    assert saved["metrics"] == SAFE_FIGURES and saved["settings"] == {"seconds": None}
    written = saved["neurons"]["fc"][0]
    assert written["concepts"] == [["dog", None]] and written["similarity"] is None
    assert written["exemplars"][0]["activation"] is None
    assert written["exemplars"][0]["map"] == [[1.0, None]]
    assert LabelingResult.load(tmp_path).explanation("fc", 0).score is None
