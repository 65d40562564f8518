"""A folder of probing images with hostile entries: each bad one is a reported skip.

File names that are not UTF-8, images over PIL's pixel limit, symbolic links (to folders,
broken, looping) and entries that are not regular files (FIFOs, devices) must neither stop
the run nor vanish: they are read, or left out with a reason, and the good images go on.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import zlib
from pathlib import Path

import pytest
from PIL import Image
from synthetic import ColorDetector, square_image

from neurolabel import LabelingResult, NeuronLabeler
from neurolabel.plugin_core.data.holdout import PathListSource
from neurolabel.plugin_core.data.images import (
    FolderSource,
    ImageLoadError,
    open_image,
    printable_path,
)
from neurolabel.plugin_core.data.preprocessing import Preprocessing

RED, BLUE = (230, 20, 20), (20, 20, 230)
BAD_NAME = b"bad\xff.png"  # not valid UTF-8

posix_only = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file system features")


def red(seed: int = 0) -> Image.Image:
    return square_image((64, 64), (16, 16, 48, 48), RED, seed=seed)


def blue(seed: int = 0) -> Image.Image:
    return square_image((64, 64), (8, 8, 40, 40), BLUE, seed=seed)


def write_bad_name(folder: Path, image: Image.Image) -> Path:
    """Save ``image`` under a name that is not UTF-8, or skip where the OS refuses one."""
    try:
        with open(os.path.join(os.fsencode(folder), BAD_NAME), "wb") as handle:
            image.save(handle, "PNG")
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses file names that are not UTF-8")
    return folder / os.fsdecode(BAD_NAME)


def symlink(target: Path | str, link: Path) -> None:
    try:
        os.symlink(target, link)
    except (OSError, NotImplementedError):
        pytest.skip("symbolic links cannot be made here")


def png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (no pixel data): PIL's pixel limit
    is checked on the header, so this is a decompression bomb as far as opening goes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def reasons(source) -> dict[str, str]:
    """Skipped entries by their path relative to the folder."""
    root = printable_path(source.folder)
    return {s.item[len(root) + 1 :]: s.reason for s in source.skipped_upfront}


def returns_quickly(call, seconds: float = 5.0):
    """``call()``'s outcome; fails (instead of hanging the suite) if it blocks."""
    outcome: list = []

    def target():
        try:
            outcome.append(("value", call()))
        except Exception as exc:  # handed to the test
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"blocked for more than {seconds} s"
    return outcome[0]


# --- 1. a file name that is not UTF-8 ---------------------------------------------------


@posix_only
def test_a_file_name_that_is_not_utf8_is_read_hashed_and_printable(tmp_path):
    red().save(tmp_path / "a.png")
    plain = FolderSource(tmp_path)
    odd = write_bad_name(tmp_path, blue())
    source = FolderSource(tmp_path)
    assert len(source) == 2 and source.skipped_upfront == []
    index = source.paths.index(odd)
    assert source.load(index).size == (64, 64) and source.size(index) == (64, 64)
    # The record keeps the exact name (it finds the file again); messages escape the byte.
    assert source.name(index) == os.fsdecode(BAD_NAME)
    assert source.describe(index).endswith("bad\\xff.png")
    source.describe(index).encode("utf-8")  # printable: no lone surrogate
    for digest in (source.fingerprint(), source.cache_key()):
        assert isinstance(digest, str) and digest
    assert source.fingerprint() != plain.fingerprint()
    assert PathListSource([odd]).fingerprint()  # held-out lists hash such names too
    # The name survives a JSON document (escaped) and comes back as the same file.
    text = json.dumps({"image": source.name(index)})
    assert text.isascii()
    assert (tmp_path / json.loads(text)["image"]).is_file()


# --- 2. images over PIL's pixel limit ------------------------------------------------------


def test_images_over_the_pixel_limit_are_refused_by_open_and_size(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    Image.new("RGB", (20, 20), RED).save(tmp_path / "small.png")  # 400 pixels: fine
    Image.new("RGB", (40, 30), RED).save(tmp_path / "warned.png")  # > limit: PIL warns
    Image.new("RGB", (50, 50), RED).save(tmp_path / "refused.png")  # > 2x limit: PIL raises
    source = FolderSource(tmp_path)
    names = [path.name for path in source.paths]
    assert names == ["refused.png", "small.png", "warned.png"]
    assert source.load(names.index("small.png")).size == (20, 20)
    for name in ("warned.png", "refused.png"):
        index = names.index(name)
        for read in (source.load, source.size, lambda i: open_image(source.paths[i])):
            with pytest.raises(ImageLoadError, match="larger than PIL's safety limit of 1,000"):
                read(index)


def test_a_real_size_decompression_bomb_is_refused_from_its_header(tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header(14000, 13000))  # 182 megapixels
    red().save(tmp_path / "ok.png")
    source = FolderSource(tmp_path)
    assert [p.name for p in source.paths] == ["huge.png", "ok.png"]
    for read in (source.load, source.size):
        with pytest.raises(ImageLoadError, match="larger than PIL's safety limit") as caught:
            read(0)
        assert "182,000,000" in str(caught.value)
    assert source.load(1).size == (64, 64)


# --- 3. symbolic links ---------------------------------------------------------------------


@posix_only
def test_symbolic_links_are_followed_once_or_reported(tmp_path):
    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    red().save(root / "a.png")
    blue().save(root / "sub" / "b.png")
    for i in range(3):
        red(i).save(elsewhere / f"e{i}.png")
    (root / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    red().save(root / ".hidden" / "h.png")
    symlink(elsewhere, root / "linked")  # a linked folder: its images are read
    symlink(root / "a.png", root / "file_link.png")  # a linked file: read
    symlink(root / "gone.png", root / "broken.png")
    symlink(root / "loop2.png", root / "loop1.png")
    symlink(root / "loop1.png", root / "loop2.png")
    symlink(root, root / "sub" / "up")  # back to the top: a loop
    symlink(root / "sub", root / "again")  # a folder already read under its own name
    symlink(elsewhere, root / "sub" / "twice")  # the same linked folder by a second link
    symlink(root / ".hidden", root / ".hidden_link")  # hidden: ignored like any dot entry

    source = FolderSource(root)
    relative = [path.relative_to(root).as_posix() for path in source.paths]
    assert relative == [
        "a.png",
        "file_link.png",
        "linked/e0.png",
        "linked/e1.png",
        "linked/e2.png",
        "sub/b.png",
    ]
    assert relative == sorted(relative, key=lambda name: Path(name).parts)
    assert source.load(relative.index("file_link.png")).size == (64, 64)
    assert source.load(relative.index("linked/e2.png")).size == (64, 64)
    why = reasons(source)
    assert list(why) == sorted(why, key=lambda name: Path(name).parts)  # path order
    assert why.keys() == {
        "again",
        "broken.png",
        "loop1.png",
        "loop2.png",
        "notes.txt",
        "sub/twice",
        "sub/up",
    }
    assert why["broken.png"].startswith("broken symbolic link")
    assert "gone.png" in why["broken.png"]
    assert why["loop1.png"].startswith("symbolic link loop")
    assert why["sub/up"].startswith("symbolic link loop")
    assert why["again"].startswith("folder already read")
    assert why["sub/twice"].startswith("folder already read")
    assert why["notes.txt"] == "not an image file (extension '.txt')"
    assert source.fingerprint() and source.cache_key()
    with pytest.raises(ImageLoadError, match="broken symbolic link"):
        open_image(root / "broken.png")
    with pytest.raises(ImageLoadError, match="symbolic link loop"):
        open_image(root / "loop1.png")


@posix_only
def test_a_folder_of_nothing_but_bad_links_says_so(tmp_path):
    symlink(tmp_path / "gone.png", tmp_path / "broken.png")
    with pytest.raises(Exception, match="No image files found.*1 entries skipped"):
        FolderSource(tmp_path)


# --- 4. entries that are not regular files -------------------------------------------------


@posix_only
def test_fifos_and_devices_are_reported_and_never_opened(tmp_path):
    red().save(tmp_path / "a.png")
    fifo = tmp_path / "pipe.png"
    try:
        os.mkfifo(fifo)
    except (OSError, AttributeError):
        pytest.skip("FIFOs cannot be made here")
    device = Path(os.devnull)
    if device.exists():
        symlink(device, tmp_path / "null.png")
    source = returns_quickly(lambda: FolderSource(tmp_path))[1]
    assert [p.name for p in source.paths] == ["a.png"]
    why = reasons(source)
    assert why["pipe.png"] == "not a regular file (a FIFO)"
    if device.exists():
        assert why["null.png"] == "not a regular file (a character device)"
    for path in (fifo, device, tmp_path):
        kind, outcome = returns_quickly(lambda p=path: open_image(p))
        assert kind == "error" and isinstance(outcome, ImageLoadError), outcome
        assert "not a regular file" in str(outcome)
    kind, outcome = returns_quickly(lambda: PathListSource([fifo]).load(0))
    assert kind == "error" and "not a regular file" in str(outcome)


# --- the whole run -------------------------------------------------------------------------


def labeler() -> NeuronLabeler:
    return NeuronLabeler(
        ColorDetector(),
        layers=["features.1"],
        scorer="color",
        vocabulary=["red", "blue", "green"],
        top_k=3,
        device="cpu",
        batch_size=4,
        progress=False,
        min_patch_size=0.05,
        preprocessing=Preprocessing((64, 64), 64, (0, 0, 0), (1, 1, 1)),
        scoring="patches",
    )


@posix_only
def test_a_run_over_a_hostile_folder_goes_on_and_reports_every_bad_entry(
    tmp_path, monkeypatch, capfd
):
    root, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    red(0).save(root / "r0.png")
    red(1).save(root / "r1.png")
    blue(2).save(root / "b0.png")
    blue(3).save(root / "b1.png")
    blue(4).save(elsewhere / "b2.png")
    symlink(elsewhere, root / "linked")
    odd = write_bad_name(root, red(5))  # one of the three red exemplars
    # 4,096 pixels pass; 5,000 set off PIL's warning, 10,000 its error.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4096)
    Image.new("RGB", (100, 50), RED).save(root / "warned.png")
    Image.new("RGB", (100, 100), RED).save(root / "refused.png")
    symlink(root / "gone.png", root / "broken.png")
    symlink(root / "loop.png", root / "loop.png")
    os.mkfifo(root / "pipe.png")
    (root / "notes.txt").write_text("not an image")

    result = labeler().run(root)

    skipped = {Path(s["item"]).name: s["reason"] for s in result.dataset["skipped"]}
    assert skipped.keys() == {
        "broken.png",
        "loop.png",
        "notes.txt",
        "pipe.png",
        "refused.png",
        "warned.png",
    }
    assert all(reason for reason in skipped.values())
    assert skipped["refused.png"].startswith("larger than PIL's safety limit")
    assert skipped["warned.png"].startswith("larger than PIL's safety limit")
    assert skipped["pipe.png"] == "not a regular file (a FIFO)"
    assert skipped["broken.png"].startswith("broken symbolic link")
    assert skipped["loop.png"].startswith("symbolic link loop")
    assert result.dataset["num_skipped"] == 6
    assert result.dataset["num_used"] == 6  # r0, r1, b0, b1, linked/b2 and the odd name
    red_unit = result.explanation("features.1", 0)
    assert red_unit.description == "red"
    exemplars = {e.image for e in red_unit.exemplars}
    assert exemplars == {"r0.png", "r1.png", os.fsdecode(BAD_NAME)}
    assert "linked/b2.png" in {e.image for e in result.explanation("features.1", 1).exemplars}

    saved = result.save(tmp_path / "out")
    saved.read_bytes().decode("utf-8")  # strict UTF-8 (the odd name is escaped)
    again = LabelingResult.load(saved)
    assert {e.image for e in again.explanation("features.1", 0).exemplars} == exemplars
    assert (root / os.fsdecode(BAD_NAME)).resolve() == odd.resolve()
    assert again.dataset["skipped"] == result.dataset["skipped"]
    assert "Traceback" not in "".join(capfd.readouterr())
