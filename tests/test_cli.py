"""The CLI end to end: explain, layers, report, plugins, evaluate, and clear errors."""

from __future__ import annotations

import json

import pytest
from cli_runner import run
from synthetic import square_image

from neurolabel.plugin_core.data.result import LabelingResult

MODEL = "python:synthetic:ColorDetector?resize=none&size=64"


@pytest.fixture
def folder(tmp_path):
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(6):
        color = (230, 20, 20) if i % 2 else (20, 20, 230)
        square_image((80, 64), (10, 10, 50, 50), color, seed=i).save(images / f"{i}.png")
    return images


def test_explain_report_evaluate(folder, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run(
        [
            "explain",
            MODEL,
            "--layer",
            "features.1",
            "--layer",
            "fc",
            "--images",
            str(folder),
            "--scorer",
            "color",
            "--vocab",
            "colors",
            "--top-k",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert code == 0
    assert "Wrote" in stdout and "features.1" in stdout
    result = LabelingResult.load(out)
    assert result.explanation("features.1", 0).description == "red"
    assert result.explanation("fc", 1).description == "blue"
    code, stdout, _ = run(["report", str(out), "--layer", "fc"], capsys)
    assert code == 0 and "blue" in stdout and "features.1" not in stdout
    code, stdout, _ = run(["report", str(out / "result.json"), "--json"], capsys)
    assert json.loads(stdout)["schema_version"] == "1.5"
    truth = tmp_path / "truth.csv"
    truth.write_text("layer,unit,label\nfc,0,red\nfc,1,black\n")
    code, stdout, _ = run(
        ["evaluate", str(out), "--metric", f"accuracy?ground_truth={truth}"], capsys
    )
    assert code == 0
    assert LabelingResult.load(out).metrics["accuracy"] == {"top1": 0.5, "top5": 1.0, "units": 2}


def test_layers_and_plugins(capsys):
    code, stdout, _ = run(["layers", MODEL, "--json"], capsys)
    assert code == 0
    layers = {item["name"]: item for item in json.loads(stdout)}
    assert layers["features.1"]["shape"] == [3, 16, 16] and layers["fc"]["kind"] == "vector"
    code, stdout, _ = run(["plugins", "--json"], capsys)
    names = {(r["kind"], r["name"]) for r in json.loads(stdout)["registered"]}
    assert {
        ("scorer", "open_clip"),
        ("vocabulary", "words"),
        ("extractor", "hooks"),
        ("model source", "timm"),
        ("evaluator", "accuracy"),
    } <= names


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--layer", "featurs.1"], "features.1"),
        (["--layer", "fc", "--scorer", "colour"], "Did you mean 'color'"),
        (["--layer", "fc", "--vocab", "file:/nonexistent/v.txt"], "/nonexistent/v.txt"),
        (["--layer", "fc", "--units", "0-x"], "--units"),
        (["--layer", "fc", "--device", "tpu"], "Unknown device"),
    ],
)
def test_bad_input_gives_a_clear_error_without_traceback(folder, tmp_path, capsys, extra, message):
    scorer = [] if "--scorer" in extra else ["--scorer", "color"]
    args = [
        "explain",
        MODEL,
        "--images",
        str(folder),
        *scorer,
        "--vocab",
        "colors",
        "--out",
        str(tmp_path / "o"),
        "--quiet",
        *extra,
    ]
    code, _, err = run(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "result.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["layers", MODEL, "--depth", "2"], "No such option: --depth"),
        (["layers"], "Missing argument"),
        (["explain", MODEL, "--top-k", "many"], "Invalid value for '--top-k'"),
    ],
)
def test_usage_errors_are_reported_without_traceback(capsys, args, message):
    code, _, err = run(args, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_empty_folder_and_empty_vocabulary(tmp_path, folder, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(
        [
            "explain",
            MODEL,
            "--layer",
            "fc",
            "--images",
            str(empty),
            "--scorer",
            "color",
            "--vocab",
            "colors",
        ],
        capsys,
    )
    assert code == 2 and "No image files" in err
    vocab = tmp_path / "v.txt"
    vocab.write_text("# nothing here\n\n")
    code, _, err = run(
        [
            "explain",
            MODEL,
            "--layer",
            "fc",
            "--images",
            str(folder),
            "--scorer",
            "color",
            "--vocab",
            f"file:{vocab}",
        ],
        capsys,
    )
    assert code == 2 and "no concepts" in err


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "neurolabel", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "explain" in out.stdout and "demo" in out.stdout
