"""A newcomer's first ten minutes, scripted: what they type, what they must see.

Each step guards a point a stranger hit once (issue 16): the layer list works offline, a
result folder can be moved and re-rendered whole, evaluate prints tables, messages say
what the numbers are, the plugin table names describers as describers, a pattern that
names nothing says so. (``--help`` and ``report`` without torch: tests/test_startup.py;
the demo's own figures: tests/test_offline_semantics.py.)
"""

from __future__ import annotations

import json
import shutil

import pytest
from cli_runner import run
from synthetic import square_image

from neurolabel.plugin_core.data.result import LabelingResult

MODEL = "python:synthetic:ColorDetector?resize=none&size=64"


@pytest.fixture
def explained(tmp_path, capsys):
    """``neurolabel explain`` on six small photographs: the result folder."""
    images = tmp_path / "photos"
    images.mkdir()
    for i in range(6):
        color = (230, 20, 20) if i % 2 else (20, 20, 230)
        square_image((80, 64), (10, 10, 50, 50), color, seed=i).save(images / f"{i}.png")
    out = tmp_path / "out"
    args = ["explain", MODEL, "-l", "features.1", "-l", "fc", "-i", str(images)]
    args += ["--scorer", "color", "--vocab", "colors", "--top-k", "3", "-o", str(out)]
    args += ["--scoring", "patches"]  # patches beside their source images, boxed
    code, stdout, stderr = run([*args, "--device", "cpu"], capsys)
    assert code == 0, stderr
    return out, images, stdout, stderr


def test_the_run_says_what_its_numbers_are(explained):
    _, _, stdout, stderr = explained
    # the scoring plan names slots, and the crops the bar then counts
    assert "exemplar slots" in stderr and "distinct crops encoded" in stderr
    assert "forced" not in stderr
    # the table says what its score is, and why it is not descriptions.csv's similarity
    text = " ".join(stdout.split())
    assert "comparable between the units of one layer" in text and "similarity" in text


def test_a_moved_result_renders_whole(explained, tmp_path, capsys):
    out, images, _, _ = explained
    stored = json.loads((out / "result.json").read_text())
    assert stored["dataset"]["root"] == str(images.resolve())
    exemplar = stored["neurons"]["features.1"][0]["exemplars"][0]
    assert "/" not in exemplar["image"]  # relative to the probing folder
    assert exemplar["patch"].startswith("patches/")

    moved = tmp_path / "elsewhere" / "renamed"
    shutil.move(str(out), str(moved))
    code, _, stderr = run(["report", str(moved), "--html", str(tmp_path / "a.html")], capsys)
    page = (tmp_path / "a.html").read_text()
    assert code == 0 and "could not be read" not in page and "were not found" not in page
    sources = page.count("data:image/")

    # the probing images moved as well: --images says where to
    shutil.move(str(images), str(tmp_path / "photos2"))
    run(["report", str(moved), "--html", str(tmp_path / "b.html")], capsys)
    assert "could not be read" in (tmp_path / "b.html").read_text()
    args = ["report", str(moved), "--html", str(tmp_path / "c.html")]
    code, _, stderr = run([*args, "--images", str(tmp_path / "photos2")], capsys)
    page = (tmp_path / "c.html").read_text()
    assert code == 0 and "could not be read" not in page and page.count("data:image/") == sources
    code, stdout, _ = run(["report", str(moved), "--neuron", "features.1:0"], capsys)
    assert code == 0 and "patches/features.1/unit00000_ra" in stdout and "missing" not in stdout

    # a result that carries its images inside its folder moves with them
    inside = tmp_path / "inside"
    inside.mkdir()
    shutil.move(str(tmp_path / "photos2"), str(inside / "images"))
    result = LabelingResult.load(moved)
    result.dataset["root"] = str(inside / "images")
    result.save_json(inside / "result.json")
    shutil.copytree(moved / "patches", inside / "patches")
    assert json.loads((inside / "result.json").read_text())["dataset"]["root"] == "images"
    shutil.move(str(inside), str(tmp_path / "inside-moved"))
    run(["report", str(tmp_path / "inside-moved"), "--html", str(tmp_path / "d.html")], capsys)
    assert (tmp_path / "d.html").read_text().count("data:image/") == sources


def test_evaluate_prints_tables_and_json_only_when_asked(explained, tmp_path, capsys):
    out, _, _, _ = explained
    truth = tmp_path / "truth.csv"
    truth.write_text("layer,unit,label\nfc,0,red\nfc,1,blue\n")
    metric = f"accuracy?ground_truth={truth}"
    code, stdout, _ = run(["evaluate", str(out), "--metric", metric], capsys)
    assert code == 0 and "┃" in stdout and "top1" in stdout and "Stored in" in stdout
    assert "{" not in stdout
    code, stdout, _ = run(["evaluate", str(out), "--metric", metric, "--json"], capsys)
    assert json.loads(stdout) == {"accuracy": {"top1": 1.0, "top5": 1.0, "units": 2}}
    assert LabelingResult.load(out).metrics["accuracy"]["top1"] == 1.0


def test_layers_offline_and_patterns_that_name_nothing(capsys, tmp_path, monkeypatch):
    # No weights may be fetched to list layers (the machine has no network either way).
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))
    code, stdout, stderr = run(["layers", "torchvision:resnet50", "--match", "layer4.*"], capsys)
    assert code == 0, stderr
    assert "layer4.2.conv3" in stdout and not (tmp_path / "empty-torch-home").exists()
    code, _, stderr = run(["layers", "torchvision:resnet18", "--match", "layer9"], capsys)
    message = " ".join(stderr.split())
    assert code == 2 and "No layer of torchvision:resnet18 matches 'layer9'" in message
    assert "Closest: layer4" in message


def test_plugins_names_describers_and_help_hides_flag_types(capsys):
    code, stdout, _ = run(["plugins", "--json"], capsys)
    kinds = {r["name"]: r["kind"] for r in json.loads(stdout)["registered"]}
    assert kinds["litellm"] == "describer" and kinds["open_clip"] == "scorer"
    code, stdout, _ = run(["layers", "--help"], capsys)
    trust = next(line for line in stdout.splitlines() if "--trust-pickle" in line)
    assert "<bool>" not in trust and "Allow unpickling" in trust
    for args in (["--help"], ["explain", "--help"], ["report", "--help"]):
        code, stdout, _ = run(args, capsys)
        assert code == 0 and "<bool>" not in stdout, args  # --help and --version are flags
    code, stdout, _ = run(["plugins"], capsys)
    assert "built in" in stdout and "adapters.model_so" not in stdout
