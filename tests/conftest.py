"""Shared fixtures: small generated images, the shared-data marker, an offline environment."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEUROLABEL_SHARED_DATA", REPO.parent / "shared" / "data"))
IMAGENET_SAMPLE = SHARED_DATA / "imagenet-sample"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IMAGENET_SAMPLE.is_dir():
        return
    skip = pytest.mark.skip(reason=f"needs the shared data folder {IMAGENET_SAMPLE} (absent)")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEUROLABEL_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def ctx():
    from neurolabel.plugin_core.plugins.resolve import build_context

    return build_context("cpu")


def make_image(seed: int, size: tuple[int, int] = (96, 80)) -> Image.Image:
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(array, "RGB")


@pytest.fixture
def images() -> list[Image.Image]:
    return [make_image(i) for i in range(12)]


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(10):
        make_image(i).save(folder / f"img_{i:02d}.png")
    return folder
