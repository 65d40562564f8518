"""Faults and fuzz: what a careless or hostile user can do to a run, and what must hold.

Each case builds its inputs in a fresh folder (bad images and names, links, specs, model
files, outputs, crafted result files, injected strings, secrets in specs) and runs one CLI
command. For every case: the exit status is the promised one; a failure is one paragraph
starting ``Error:``, never a traceback; nothing is written outside the output folder; no
secret (from a spec or the environment) appears in any output or file; no half-written
temporary file is left. The interruption tests run the CLI as a subprocess: Ctrl-C exits
130 with its message, and ``kill -9`` followed by a rerun leaves no stale temporary files.
docs/reliability.md lists the promises and these tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from synthetic import ColorDetector, square_image

from neurolabel.plugin_core.cli import main
from neurolabel.plugin_core.data.atomic import TEMPORARY_NAME

HERE = Path(__file__).resolve().parent
MODEL = "python:synthetic:ColorDetector?resize=none&size=64"
SLOW_MODEL = "python:synthetic:SlowColorDetector?resize=none&size=64"
#: A key given in a spec, and one in the environment: neither may appear anywhere.
SPEC_SECRET = "sk-specsecret0123456789"
ENV_SECRET = "sk-envsecret9876543210"
#: Longest message a case may print: echoed input is cut.
MESSAGE_LIMIT = 6000
#: A case that runs longer is taken as hung (a FIFO read, a loop).
HANG_SECONDS = 120


@dataclass
class Workspace:
    """One case's folder: good probing images, an output folder, room for crafted inputs."""

    root: Path
    images: Path
    out: Path
    #: Paths outside ``out`` the command is meant to write (report --html FILE).
    writes: list[Path] = field(default_factory=list)

    def explain(self, *extra: str, model: str = MODEL, vocab: str = "colors") -> list[str]:
        """``explain`` argv on this workspace, with ``extra`` options."""
        return [
            "explain",
            model,
            "--layer",
            "features.1",
            "--images",
            str(self.images),
            "--scorer",
            "color",
            "--vocab",
            vocab,
            "--top-k",
            "3",
            "--out",
            str(self.out),
            "--device",
            "cpu",
            "--no-html",
            *extra,
        ]


def _images(folder: Path, count: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        color = (230, 20, 20) if i % 2 else (20, 20, 230)
        square_image((80, 64), (10, 10, 50, 50), color, seed=i).save(folder / f"{i}.png")
    return folder


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes that declares ``width x height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def good_result(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One result folder (with report.html), copied by the cases that craft result files."""
    root = tmp_path_factory.mktemp("good")
    images = _images(root / "imgs")
    out = root / "result"
    args = Workspace(root, images, out).explain()
    args.remove("--no-html")
    assert _call(args) == 0
    return out


def _call(args: list[str]) -> int:
    """Run the CLI in-process (outputs go to the caller's capture); its exit status."""
    try:
        main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def _copy_result(ws: Workspace, good: Path) -> Path:
    target = ws.root / "copied"
    shutil.copytree(good, target)
    return target


def _edit_result(folder: Path, edit: Callable[[dict], object]) -> None:
    path = folder / "result.json"
    data = json.loads(path.read_text())
    replaced = edit(data)
    path.write_text(json.dumps(data if replaced is None else replaced))


# -- the cases ------------------------------------------------------------------------------
# Each builds its inputs in a Workspace and returns the argv; `code` is the exit status,
# `says` a fragment of stdout+stderr, `quiet` fragments that must not appear.


@dataclass
class Case:
    name: str
    build: Callable[[Workspace, Path], list[str]]
    code: int
    says: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    check: Callable[[Workspace], None] | None = None
    skip_if: Callable[[], str | None] | None = None


def _skipped_image(ws: Workspace, name: str | bytes, content: bytes) -> list[str]:
    path = os.path.join(os.fsencode(ws.images), name if isinstance(name, bytes) else name.encode())
    with open(path, "wb") as handle:
        handle.write(content)
    return ws.explain()


def _case_truncated_png(ws: Workspace, _: Path) -> list[str]:
    data = (ws.images / "0.png").read_bytes()
    return _skipped_image(ws, "cut.png", data[: len(data) // 2])


def _case_text_as_jpeg(ws: Workspace, _: Path) -> list[str]:
    return _skipped_image(ws, "notes.jpg", b"this is not a picture\n")


def _case_non_utf8_name(ws: Workspace, _: Path) -> list[str]:
    path = os.path.join(os.fsencode(ws.images), b"caf\xff.png")
    shutil.copyfile(ws.images / "1.png", path)
    return ws.explain()


def _case_decompression_bomb(ws: Workspace, _: Path) -> list[str]:
    return _skipped_image(ws, "bomb.png", _png_header_only(14000, 13000))


def _case_links(ws: Workspace, _: Path) -> list[str]:
    (ws.images / "gone.png").symlink_to(ws.root / "missing.png")
    (ws.images / "loop").symlink_to(ws.images)
    linked = _images(ws.root / "elsewhere", 2)
    (ws.images / "more").symlink_to(linked)
    return ws.explain()


def _case_fifo_and_device(ws: Workspace, _: Path) -> list[str]:
    os.mkfifo(ws.images / "pipe.png")
    (ws.images / "null.png").symlink_to("/dev/null")
    return ws.explain()


def _case_empty_folder(ws: Workspace, _: Path) -> list[str]:
    for path in ws.images.iterdir():
        path.unlink()
    return ws.explain()


def _case_only_unreadable(ws: Workspace, _: Path) -> list[str]:
    for path in ws.images.iterdir():
        path.write_bytes(b"garbage")
    return ws.explain()


def _no_debris(ws: Workspace) -> None:
    assert not ws.out.exists(), sorted(str(p) for p in ws.out.rglob("*"))


def _case_images_is_a_file(ws: Workspace, _: Path) -> list[str]:
    args = ws.explain()
    args[args.index("--images") + 1] = str(ws.images / "0.png")
    return args


def _case_unknown_source(ws: Workspace, _: Path) -> list[str]:
    return ws.explain(model="nosuch:thing")


def _case_wrong_layer(ws: Workspace, _: Path) -> list[str]:
    args = ws.explain()
    args[args.index("--layer") + 1] = "featurs.1"
    return args


def _case_duplicate_option(ws: Workspace, _: Path) -> list[str]:
    return ws.explain(model=MODEL + "&size=32")


def _case_nameless_option(ws: Workspace, _: Path) -> list[str]:
    return ws.explain(model=MODEL + "&=3")


def _case_key_in_unknown_option(ws: Workspace, _: Path) -> list[str]:
    args = ws.explain()
    args[args.index("--scorer") + 1] = f"litellm:openai/gpt-4o?api_key={SPEC_SECRET}&bogus=1"
    return args


def _case_credentials_in_api_base(ws: Workspace, _: Path) -> list[str]:
    spec = f"litellm:openai/gpt-4o?api_base=http://me:{SPEC_SECRET}@127.0.0.1:9/v1&bogus=1"
    return ws.explain("--summarize", spec)


def _case_unknown_vocabulary(ws: Workspace, _: Path) -> list[str]:
    return ws.explain(vocab="colr")


def _case_megabyte_vocabulary_line(ws: Workspace, _: Path) -> list[str]:
    vocab = ws.root / "concepts.txt"
    vocab.write_text("red\n" + "x" * 1_000_000 + ",a,b\n")
    return ws.explain(vocab=f"file:{vocab}")


def _case_megabyte_concept(ws: Workspace, _: Path) -> list[str]:
    vocab = ws.root / "concepts.txt"
    vocab.write_text("red\n" + "x" * 1_000_000 + "\n")
    return ws.explain(vocab=f"file:{vocab}")


def _case_negative_workers(ws: Workspace, _: Path) -> list[str]:
    return ws.explain("--num-workers", "-1")


def _case_huge_top_k(ws: Workspace, _: Path) -> list[str]:
    args = ws.explain()
    args[args.index("--top-k") + 1] = "100000"
    return args


def _case_units_out_of_range(ws: Workspace, _: Path) -> list[str]:
    return ws.explain("--units", "5-9")


def _case_torchscript(ws: Workspace, _: Path) -> list[str]:
    import warnings

    import torch

    path = ws.root / "scripted.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(ColorDetector()).save(str(path))
    return ws.explain(model=f"file:{path}?resize=none&size=64")


def _case_untrusted_pickle(ws: Workspace, _: Path) -> list[str]:
    import torch

    path = ws.root / "pickled.pt"
    torch.save(ColorDetector(), path)
    return ws.explain(model=f"file:{path}?resize=none&size=64")


def _case_blind_scorer(ws: Workspace, _: Path) -> list[str]:
    vocab = ws.root / "objects.txt"
    vocab.write_text("dog\ncat\ncar\n")
    return ws.explain(vocab=f"file:{vocab}")


def _blind_recorded(ws: Workspace) -> None:
    """The warning is in the result, first in `report` and on the HTML report."""
    import contextlib
    import io

    settings = json.loads((ws.out / "result.json").read_text())["settings"]
    assert "cannot tell these concepts apart" in settings["warnings"][0]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert _call(["report", str(ws.out), "--html", str(ws.out / "report.html")]) == 0
        assert _call(["report", str(ws.out)]) == 0
    assert "Warning: The scorer 'color'" in " ".join(printed.getvalue().split())
    assert "cannot tell these concepts apart" in (ws.out / "report.html").read_text()


def _case_out_inside_images(ws: Workspace, _: Path) -> list[str]:
    ws.out = ws.images / "results"
    return ws.explain()


def _case_units_reversed(ws: Workspace, _: Path) -> list[str]:
    return ws.explain("--units", "2-0")


def _case_partly_unseen_vocabulary(ws: Workspace, _: Path) -> list[str]:
    vocab = ws.root / "objects.txt"
    vocab.write_text("house\ntree\nbicycle\n")
    args = ws.explain(vocab=f"colors+file:{vocab}", model="python:synthetic:SeededConvNet")
    args[args.index("--layer") + 1] = "block2"
    return args


def _no_unseen_labels(ws: Workspace) -> None:
    """Units whose seen concepts all score below average are not labeled with a concept
    the scorer never saw (it used to win them)."""
    data = json.loads((ws.out / "result.json").read_text())
    labels = {n["description"] for n in data["neurons"]["block2"]}
    assert labels and not labels & {"house", "tree", "bicycle"}, labels
    assert "saw nothing of in any patch" in data["settings"]["warnings"][0]


def _case_out_is_a_file(ws: Workspace, _: Path) -> list[str]:
    ws.out.write_text("keep me")
    return ws.explain()


def _file_untouched(ws: Workspace) -> None:
    assert ws.out.read_text() == "keep me"


def _case_out_under_a_file(ws: Workspace, _: Path) -> list[str]:
    (ws.root / "plain").write_text("")
    ws.out = ws.root / "plain" / "out"
    return ws.explain()


def _case_stale_temporaries(ws: Workspace, _: Path) -> list[str]:
    ws.out.mkdir()
    (ws.out / ".result.json.k1ll3d9x.tmp").write_text('{"half')
    (ws.out / "patches").mkdir()
    (ws.out / "patches" / ".unit00000_rank000.jpg.ab12cd34.tmp").write_bytes(b"\xff\xd8")
    return ws.explain()


def _case_injected_concepts(ws: Workspace, _: Path) -> list[str]:
    vocab = ws.root / "concepts.txt"
    vocab.write_text(
        "red\x1b]52;c;aGVsbG8=\x07\n[bold]blue[/bold]\n[/]\nblue\x1b[2J\nred\n",
        encoding="utf-8",
    )
    args = ws.explain(vocab=f"file:{vocab}")
    args.remove("--no-html")  # the report's plots draw the concepts too
    return args


def _case_injected_file_names(ws: Workspace, _: Path) -> list[str]:
    shutil.copyfile(ws.images / "1.png", ws.images / "[bold]x\x1b]0;pwned\x07.png")
    (ws.images / "bad[red]\x1b[31m.png").write_bytes(b"not an image")
    ws.out = ws.root / "res[/]\x1b[1m"
    return ws.explain()


def _reports_are_clean(ws: Workspace) -> None:
    """``report`` and ``report --neuron`` print the result's names without their controls."""
    import contextlib
    import io

    for extra in ([], ["--neuron", "features.1:0"], ["--neuron", "features.1:1"]):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
            assert _call(["report", str(ws.out), *extra]) == 0, printed.getvalue()
        assert "\x1b" not in printed.getvalue() and "\x07" not in printed.getvalue()
        assert "Traceback" not in printed.getvalue()


def _case_result_is_a_list(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    (folder / "result.json").write_text("[1, 2, 3]")
    return ["report", str(folder)]


def _case_truncated_result(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    text = (folder / "result.json").read_text()
    (folder / "result.json").write_text(text[: len(text) // 2])
    return ["report", str(folder)]


def _case_wrong_field_type(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)

    def edit(data: dict) -> None:
        data["neurons"]["features.1"][0]["unit"] = "zero"

    _edit_result(folder, edit)
    return ["report", str(folder)]


def _case_huge_integer(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    text = (folder / "result.json").read_text()
    huge, found = re.subn(r'"unit": ?0\b', '"unit": 1' + "0" * 5000, text, count=1)
    assert found
    (folder / "result.json").write_text(huge)
    return ["report", str(folder)]


def _case_deep_nesting(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    text = (folder / "result.json").read_text()
    deep = "[" * 100_000 + "]" * 100_000
    assert '"metrics": {}' in text
    (folder / "result.json").write_text(text.replace('"metrics": {}', f'"metrics": {deep}', 1))
    return ["evaluate", str(folder), "--metric", "accuracy"]


def _case_unknown_fields(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)

    def edit(data: dict) -> None:
        data["from_the_future"] = {"x": 1}
        data["neurons"]["features.1"][0]["new_field"] = [1, 2]

    _edit_result(folder, edit)
    return ["report", str(folder), "--neuron", "features.1:0"]


def _case_patch_outside_folder(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    secret = ws.root / "private.jpg"
    square_image((40, 40), (0, 0, 40, 40), (1, 2, 3)).save(secret)

    def edit(data: dict) -> None:
        exemplars = data["neurons"]["features.1"][0]["exemplars"]
        exemplars[0]["patch"] = "../private.jpg"
        exemplars[1]["patch"] = str(secret)
        exemplars[2]["image"] = "../../" + secret.name

    _edit_result(folder, edit)
    html = ws.out / "report.html"
    ws.writes.append(html)
    return ["report", str(folder), "--html", str(html)]


def _private_not_embedded(ws: Workspace) -> None:
    import base64

    secret = base64.b64encode((ws.root / "private.jpg").read_bytes()).decode()
    page = (ws.out / "report.html").read_text()
    assert secret[:200] not in page


def _case_patch_is_a_fifo(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    patch = folder / "patches" / "features.1"
    first = sorted(patch.iterdir())[0]
    first.unlink()
    os.mkfifo(first)
    html = ws.out / "report.html"
    ws.writes.append(html)
    return ["report", str(folder), "--html", str(html)]


def _case_html_is_a_folder(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    return ["report", str(folder), "--html", str(ws.root)]


def _case_evaluate_nan(ws: Workspace, good: Path) -> list[str]:
    folder = _copy_result(ws, good)
    truth = ws.root / "truth.csv"
    truth.write_text("layer,unit,label\nfeatures.1,0,red\nfeatures.1,1,blue\n")
    ws.writes.append(folder / "result.json")  # evaluate stores its figures in the result
    return ["evaluate", str(folder), "--metric", f"accuracy?ground_truth={truth}", "--json"]


def _strict_json(ws: Workspace) -> None:
    text = (ws.root / "copied" / "result.json").read_text()

    def refuse(value: str) -> None:
        raise AssertionError(f"non-standard JSON constant {value}")

    json.loads(text, parse_constant=refuse)


def _root_user() -> str | None:
    return "root ignores file permissions" if os.geteuid() == 0 else None


def _case_read_only_out(ws: Workspace, _: Path) -> list[str]:
    ws.out.mkdir()
    ws.out.chmod(0o555)
    return ws.explain()


CASES = [
    Case("truncated image", _case_truncated_png, 0, ("1 input(s) skipped",)),
    Case("text file named .jpg", _case_text_as_jpeg, 0, ("1 input(s) skipped",)),
    Case("file name not UTF-8", _case_non_utf8_name, 0),
    Case("decompression bomb", _case_decompression_bomb, 0, ("1 input(s) skipped",)),
    Case("broken link, loop, linked folder", _case_links, 0, ("input(s) skipped",)),
    Case("FIFO and device", _case_fifo_and_device, 0, ("2 input(s) skipped",)),
    Case("empty image folder", _case_empty_folder, 2, ("No image files",), check=_no_debris),
    Case("only unreadable images", _case_only_unreadable, 2, ("could be read",), check=_no_debris),
    Case("--images is a file", _case_images_is_a_file, 2, check=_no_debris),
    Case("unknown model source", _case_unknown_source, 2, ("nosuch",), check=_no_debris),
    Case("wrong layer", _case_wrong_layer, 2, ("features.1",), check=_no_debris),
    Case("option given twice", _case_duplicate_option, 2, ("twice",)),
    Case("option without a name", _case_nameless_option, 2, ("without a name",)),
    Case("key in an unknown option", _case_key_in_unknown_option, 2, ("api_key=***", "Allowed:")),
    Case("credentials in api_base", _case_credentials_in_api_base, 2, ("me:***@",)),
    Case("unknown vocabulary", _case_unknown_vocabulary, 2, ("vocabularies",), ("vocabularys",)),
    Case("1 MB vocabulary line", _case_megabyte_vocabulary_line, 2, ("short phrases",)),
    Case("1 MB concept", _case_megabyte_concept, 2, ("short phrases",)),
    Case("--num-workers -1", _case_negative_workers, 2, ("num_workers",)),
    Case("--top-k 100000", _case_huge_top_k, 0),
    Case("units out of range", _case_units_out_of_range, 2, ("out of range",)),
    Case("TorchScript model", _case_torchscript, 2, ("TorchScript",), check=_no_debris),
    Case("pickle without trust", _case_untrusted_pickle, 2, ("trust",)),
    Case(
        "scorer blind to the vocabulary",
        _case_blind_scorer,
        0,
        ("Warning:",),
        check=_blind_recorded,
    ),
    Case(
        "--out is a file",
        _case_out_is_a_file,
        2,
        ("is a file",),
        ("Finding exemplars",),
        check=_file_untouched,
    ),
    Case("--out under a file", _case_out_under_a_file, 2, ("Cannot write",)),
    Case("--out inside --images", _case_out_inside_images, 2, ("inside --images",)),
    Case("units reversed", _case_units_reversed, 2, ("reversed",), check=_no_debris),
    Case(
        "concepts the scorer cannot see",
        _case_partly_unseen_vocabulary,
        0,
        ("saw nothing of",),
        check=_no_unseen_labels,
    ),
    Case("--out read-only", _case_read_only_out, 2, ("Cannot write",), skip_if=_root_user),
    Case("stale temporary files", _case_stale_temporaries, 0),
    Case(
        "escapes and markup in concepts",
        _case_injected_concepts,
        0,
        ("Wrote",),
        check=_reports_are_clean,
    ),
    Case(
        "escapes and markup in file names",
        _case_injected_file_names,
        0,
        ("skipped",),
        check=_reports_are_clean,
    ),
    Case("result.json is a list", _case_result_is_a_list, 2),
    Case("result.json cut in half", _case_truncated_result, 2),
    Case("wrongly typed field", _case_wrong_field_type, 2, ("unit",)),
    Case("5000-digit integer", _case_huge_integer, 2),
    Case("100000-deep nesting", _case_deep_nesting, 2),
    Case("unknown fields", _case_unknown_fields, 0, ("features.1",)),
    Case(
        "patch paths outside the result",
        _case_patch_outside_folder,
        0,
        ("Wrote",),
        check=_private_not_embedded,
    ),
    Case("patch that is a FIFO", _case_patch_is_a_fifo, 0, ("Wrote",)),
    Case("--html names a folder", _case_html_is_a_folder, 2, ("is a folder",)),
    Case("evaluate stores strict JSON", _case_evaluate_nan, 0, check=_strict_json),
]


def _files(root: Path) -> dict[str, tuple[int, int]]:
    found = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            stat = os.lstat(path)
            found[os.fsdecode(path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def _run_in_thread(args: list[str]) -> int:
    """The CLI in-process, failing the test instead of hanging it (a FIFO read, a loop)."""
    outcome: dict[str, object] = {}

    def target() -> None:
        try:
            outcome["code"] = _call(args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_SECONDS)
    assert not thread.is_alive(), f"neurolabel {args[0]} hung for {HANG_SECONDS} s"
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return int(outcome["code"])  # type: ignore[call-overload]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case, tmp_path, good_result, capsys, monkeypatch):
    if case.skip_if is not None and (reason := case.skip_if()):
        pytest.skip(reason)
    monkeypatch.setenv("OPENAI_API_KEY", ENV_SECRET)
    ws = Workspace(tmp_path, _images(tmp_path / "imgs"), tmp_path / "out")
    args = case.build(ws, good_result)
    before = _files(tmp_path)

    code = _run_in_thread(args)
    captured = capsys.readouterr()
    text = captured.out + captured.err

    assert code == case.code, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    flowing = " ".join(text.split())  # rich wraps long lines
    for fragment in case.says:
        assert fragment in text or fragment in flowing, text[-3000:]
    for fragment in case.absent:
        assert fragment not in text, text[-3000:]
    assert len(text) < MESSAGE_LIMIT + 4000 or code == 0, f"{len(text)} characters printed"
    if code != 0:
        message = text[text.index("Error:") :].strip()
        assert "\n\n" not in message, message  # one paragraph
    # No control character of the inputs reaches the terminal (no styling here: not a tty).
    assert "\x1b" not in text and "\x07" not in text, repr(text[-500:])

    after = _files(tmp_path)
    out_prefix = os.fsdecode(os.path.join(os.fsencode(ws.out), b""))
    allowed = {os.fsdecode(p) for p in ws.writes}
    outside = {
        path
        for path, stamp in after.items()
        if before.get(path) != stamp and not path.startswith(out_prefix) and path not in allowed
    }
    assert not outside, f"written outside the output folder: {sorted(outside)}"
    leftovers = [p for p in after if TEMPORARY_NAME.match(os.path.basename(p))]
    assert not leftovers, f"half-written files left: {leftovers}"
    for secret in (SPEC_SECRET, ENV_SECRET):
        assert secret not in text
        for path in after:
            if path.startswith(out_prefix) or path in allowed:
                with open(os.fsencode(path), "rb") as handle:
                    assert secret.encode() not in handle.read(), path
    if case.check is not None:
        case.check(ws)


def test_a_second_writer_is_refused(tmp_path, capsys):
    from neurolabel.plugin_core.data.output_folder import claim_output_folder

    ws = Workspace(tmp_path, _images(tmp_path / "imgs"), tmp_path / "out")
    with claim_output_folder(ws.out):
        code = _run_in_thread(ws.explain())
    err = capsys.readouterr().err
    assert code == 2 and "Another neurolabel run is writing" in err
    assert "Finding exemplars" not in err  # refused before any work
    # Released: the next run goes ahead.
    assert _run_in_thread(ws.explain()) == 0


def test_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    from neurolabel.plugin_core.data import output_folder

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root ignores permission bits; a read-only mount refuses the same way, at create time.
    monkeypatch.setattr(output_folder.tempfile, "TemporaryFile", refuse)
    ws = Workspace(tmp_path, _images(tmp_path / "imgs"), tmp_path / "out")
    code = _run_in_thread(ws.explain())
    err = capsys.readouterr().err
    assert code == 2 and "Cannot write to --out" in err and "Permission denied" in err
    assert "Finding exemplars" not in err


# -- interruptions ---------------------------------------------------------------------------


def _start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OPENAI_API_KEY": ENV_SECRET,
    }
    command = [sys.executable, "-c", "from neurolabel.plugin_core.cli import main; main()", *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A shell's background job (CI scripts) starts with SIGINT ignored, and the child
        # would inherit that: give it the default, as a terminal's foreground job has.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def _wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _slow_run(ws: Workspace) -> list[str]:
    return ws.explain(
        "--batch-size", "1", "--checkpoint-every", "1", "--no-cache", model=SLOW_MODEL
    )


@pytest.mark.slow
def test_ctrl_c_exits_130_with_the_message_and_the_run_resumes(tmp_path):
    ws = Workspace(tmp_path, _images(tmp_path / "imgs", 30), tmp_path / "out")
    process = _start(_slow_run(ws), tmp_path)
    _wait_for(ws.out / ".checkpoint" / "exemplars.pt", process)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Interrupted" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    assert not [p for p in _files(tmp_path) if TEMPORARY_NAME.match(os.path.basename(p))]
    assert not (ws.out / "result.json").exists()

    resumed = _start([*_slow_run(ws), "--resume"], tmp_path)
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "Resuming from" in stderr and "images already streamed" in stderr
    assert (ws.out / "result.json").is_file()
    assert not (ws.out / ".checkpoint").exists()  # done: nothing to resume from


@pytest.mark.slow
def test_kill_9_then_a_rerun_leaves_no_stale_temporary_files(tmp_path):
    ws = Workspace(tmp_path, _images(tmp_path / "imgs", 30), tmp_path / "out")
    process = _start(_slow_run(ws), tmp_path)
    _wait_for(ws.out / ".checkpoint" / "exemplars.pt", process)
    process.kill()
    process.communicate(timeout=60)
    # What a kill in the middle of a save leaves (the timing of a real one is luck):
    (ws.out / ".result.json.x9k1ll3d.tmp").write_text('{"neurons": {"features.1": [')
    (ws.out / ".checkpoint" / ".exemplars.pt.abcd1234.tmp").write_bytes(b"PK\x03")

    rerun = _start(ws.explain("--no-cache"), tmp_path)
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert not [p for p in _files(tmp_path) if TEMPORARY_NAME.match(os.path.basename(p))]
    json.loads((ws.out / "result.json").read_text())  # whole


def test_credentials_in_a_working_spec_are_stored_redacted(tmp_path, capsys, monkeypatch):
    """A describer and a summarizer reached through ``http://user:KEY@host``: the run works
    and the key appears in no output, neither the terminal nor any file of the result."""
    from cli_runner import run
    from llm_server import ChatServer, request_image

    def answer(body: dict) -> str:
        if request_image(body) is None:
            return 'Summary: "Responds to colored squares."'
        return json.dumps({"labels": ["red square", "red"]})

    monkeypatch.setenv("OPENAI_API_KEY", ENV_SECRET)
    ws = Workspace(tmp_path, _images(tmp_path / "imgs"), tmp_path / "out")
    with ChatServer(answer) as server:
        base = server.url.replace("http://", f"http://me:{SPEC_SECRET}@")
        args = ws.explain(
            "--describer",
            f"litellm:openai/m?api_base={base}&retries=0&ask_above=0",
            "--summarize",
            f"openai/m?api_base={base}",
            "--yes",
        )
        args.remove("--no-html")
        code, stdout, stderr = run(args, capsys)
    assert code == 0, stderr
    assert "me:***@" in (ws.out / "result.json").read_text()
    for secret in (SPEC_SECRET, ENV_SECRET):
        assert secret not in stdout + stderr
        for path in ws.out.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), path


def test_a_rerun_into_a_result_folder_leaves_no_patches_of_the_earlier_run(tmp_path, capsys):
    ws = Workspace(tmp_path, _images(tmp_path / "imgs"), tmp_path / "out")
    both = ws.explain("--layer", "fc")
    assert _run_in_thread(both) == 0
    assert (ws.out / "patches" / "fc").is_dir()
    assert _run_in_thread(ws.explain("--units", "0")) == 0
    left = sorted(p.relative_to(ws.out).as_posix() for p in (ws.out / "patches").rglob("*"))
    result = json.loads((ws.out / "result.json").read_text())
    referenced = {
        e["patch"] for n in result["neurons"]["features.1"] for e in n["exemplars"] if e["patch"]
    }
    assert left == sorted({"patches/features.1", *referenced}), left
    capsys.readouterr()
