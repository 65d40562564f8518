from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neurolabel.plugin_core.data.images import (
    FolderSource,
    ImageLoadError,
    as_image_source,
    to_rgb,
)
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.probe_dataset import ProbeDataset
from neurolabel.plugin_core.errors import EmptyInputError, NeurolabelError


def test_odd_modes_become_rgb():
    assert to_rgb(Image.new("L", (4, 4), 7)).getpixel((0, 0)) == (7, 7, 7)
    assert to_rgb(Image.new("RGBA", (4, 4), (255, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).mode == "RGB"
    sixteen = Image.fromarray(np.array([[0, 65535]], dtype=np.uint16))
    assert to_rgb(sixteen).getpixel((1, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("P", (2, 2))).mode == "RGB"


def test_folder_skips_and_reports_bad_files(tmp_path):
    Image.new("RGB", (10, 10), "red").save(tmp_path / "good.png")
    Image.new("I;16", (10, 10)).save(tmp_path / "deep.png")
    Image.new("CMYK", (10, 10)).save(tmp_path / "cmyk.jpg")
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.jpg").write_bytes(b"not a jpeg")
    data = (tmp_path / "good.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    (tmp_path / ".hidden.png").write_bytes(data)
    source = FolderSource(tmp_path)
    assert [p.name for p in source.paths] == [
        "cmyk.jpg",
        "deep.png",
        "fake.jpg",
        "good.png",
        "truncated.png",
    ]
    assert [s.item.endswith("notes.txt") for s in source.skipped_upfront] == [True]
    dataset = ProbeDataset(source, Preprocessing(crop_size=(8, 8), resize_size=8))
    flags = {source.paths[i].name: dataset[i][2] for i in range(len(dataset))}
    assert flags["good.png"] == flags["deep.png"] == flags["cmyk.jpg"] == ""
    assert "not a readable image" in flags["fake.jpg"]
    assert flags["truncated.png"]
    with pytest.raises(ImageLoadError):
        source.load(source.paths.index(tmp_path / "fake.jpg"))


def test_empty_and_wrong_inputs(tmp_path):
    with pytest.raises(EmptyInputError, match="No image files"):
        FolderSource(tmp_path)
    with pytest.raises(NeurolabelError, match="does not exist"):
        as_image_source(tmp_path / "missing")
    with pytest.raises(EmptyInputError):
        as_image_source([])
    with pytest.raises(NeurolabelError, match="Cannot read images"):
        as_image_source(42)


def test_sequence_sources_accept_pairs_tensors_arrays_and_generators():
    items = [(Image.new("RGB", (5, 5)), 3), torch.rand(3, 6, 6), np.zeros((4, 4, 3), np.uint8)]
    source = as_image_source(items)
    assert [source.load(i).size for i in range(3)] == [(5, 5), (6, 6), (4, 4)]
    generated = as_image_source(Image.new("RGB", (3, 3)) for _ in range(2))
    assert len(generated) == 2 and generated.describe(1) == "#1"
    bad = as_image_source([object()])
    with pytest.raises(ImageLoadError, match="unsupported item type"):
        bad.load(0)
