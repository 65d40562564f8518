"""One exemplar per source: crops (or frames, tiles) of one photograph count once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from synthetic import ColorDetector, square_image

from neurolabel import InvalidSettingError, NeuronLabeler, Preprocessing
from neurolabel.plugin_core.data.bundled_images import QUADRANT_SOURCE_PATTERN
from neurolabel.plugin_core.data.image_groups import source_groups
from neurolabel.plugin_core.data.images import FolderSource


def photos_with_crops(folder: Path) -> Path:
    """Six photographs of red squares (each a shade redder), each with four crops that stay
    just as red as the photograph."""
    folder.mkdir()
    for photo in range(6):
        red = (130 + 20 * photo, 20, 20)
        image = square_image((200, 200), (20, 20, 180, 180), red, seed=photo)
        image.save(folder / f"photo{photo}.png")
        for crop in range(4):
            x = 10 * crop
            name = f"photo{photo}_q{crop // 2}{crop % 2}.png"
            image.crop((x, x, x + 120, x + 120)).save(folder / name)
    return folder


def labeler(**options):
    return NeuronLabeler(
        ColorDetector(),
        ["features.1"],
        scorer="color",
        vocabulary=["red", "blue"],
        top_k=5,
        units=[0],
        device="cpu",
        progress=False,
        scoring="patches",
        min_patch_size=0.1,
        preprocessing=Preprocessing((224, 224), 224, (0, 0, 0), (1, 1, 1)),
        **options,
    )


def photo_of(exemplar) -> str:
    return re.search(QUADRANT_SOURCE_PATTERN, exemplar.image).group(1)


def test_a_neuron_keeps_one_exemplar_per_photograph(tmp_path):
    folder = photos_with_crops(tmp_path / "images")
    groups = source_groups(FolderSource(folder), QUADRANT_SOURCE_PATTERN)
    assert len(set(groups)) == 6 and len(groups) == 30
    plain = labeler(cache=False).run(folder).explanation("features.1", 0)
    assert len({photo_of(e) for e in plain.exemplars}) < 5  # crops of a photo crowd in
    distinct = labeler(source_pattern=QUADRANT_SOURCE_PATTERN).run(folder)
    red = distinct.explanation("features.1", 0)
    assert len(red.exemplars) == 5 and len({photo_of(e) for e in red.exemplars}) == 5
    assert red.concepts[0][0] == "red"
    # Every photograph is red: red is not more present on the unit's exemplars than on the
    # probing images at large, so the label test calls the unit unexplained.
    assert red.unexplained and red.description == "(unexplained)"
    assert distinct.settings["source_pattern"] == QUADRANT_SOURCE_PATTERN


def test_holdout_keeps_a_photographs_crops_together(tmp_path):
    folder = photos_with_crops(tmp_path / "images")
    result = labeler(source_pattern=QUADRANT_SOURCE_PATTERN, holdout=0.3).run(folder)
    held_images = result.dataset["holdout"]["images"]
    held = {re.search(QUADRANT_SOURCE_PATTERN, path).group(1) for path in held_images}
    probed = {photo_of(e) for n in result for e in n.exemplars}
    assert held and not held & probed
    assert len(held_images) == 5 * len(held)


def test_a_pattern_that_is_not_a_regex_fails_before_any_work():
    with pytest.raises(InvalidSettingError, match="is not a regular expression"):
        labeler(source_pattern="(unclosed")
