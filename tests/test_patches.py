from __future__ import annotations

import numpy as np
import pytest
import torch
from synthetic import ColorDetector, square_image

from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.pipeline.patches import (
    PatchSettings,
    box_iou,
    grow_box,
    image_box,
    input_boxes,
    region_mask,
)
from neurolabel.plugin_core.pipeline.topk import StreamingTopK

CASES = [  # image size, red square
    ((320, 240), (200, 40, 260, 100)),
    ((240, 320), (30, 180, 110, 260)),
    ((256, 256), (100, 100, 160, 160)),
    ((400, 260), (150, 90, 230, 170)),
]


@pytest.mark.parametrize("method", ["quantile", "otsu"])
def test_patch_box_covers_the_known_square(method):
    pre = Preprocessing(crop_size=(224, 224), resize_size=224, mean=(0, 0, 0), std=(1, 1, 1))
    model = ColorDetector().eval()
    images = [square_image(size, box, (230, 20, 20), seed=i) for i, (size, box) in enumerate(CASES)]
    # distractors without red
    images += [
        square_image((300, 300), (10, 10, 50, 50), (20, 20, 230), seed=9 + i) for i in range(6)
    ]
    batch = torch.stack([pre(im) for im in images])
    with torch.no_grad():
        acts = model.features(batch)
    topk = StreamingTopK(k=4, quantile=0.99)
    topk.update(acts, torch.arange(len(images)))
    state = topk.finalize()
    assert sorted(state.ids[0].tolist()) == [0, 1, 2, 3]
    boxes = input_boxes(
        state.maps[0], state.threshold[[0] * 4], pre, PatchSettings(threshold=method, min_size=0.05)
    )
    for box, image_index in zip(boxes, state.ids[0].tolist(), strict=True):
        size, truth = CASES[image_index]
        got = image_box(box, pre, size)
        assert box_iou(got, truth) >= 0.7, (image_index, got, truth)


def test_region_mask_fallback_and_grow_box():
    up = np.zeros((10, 10))
    up[2:4, 2:4] = 1.0
    assert region_mask(up, 5.0, "quantile").sum() == 4  # nothing above 5: upper half of range
    assert region_mask(np.zeros((4, 4)), None, "otsu").all()  # a flat map: everything
    assert grow_box((4, 4, 6, 6), 6, (10, 10)) == (2, 2, 8, 8)
    assert grow_box((0, 0, 2, 2), 6, (10, 10)) == (0, 0, 6, 6)
    assert grow_box((0, 0, 2, 2), 20, (10, 10)) == (0, 0, 10, 10)
    with pytest.raises(ValueError):
        PatchSettings(threshold="bogus")


def test_preprocessing_geometry_round_trip():
    pre = Preprocessing(crop_size=(224, 224), resize_size=256)
    # the shorter side is already 256, so only the center crop at (144, 16) is undone
    assert pre.input_box_to_image((0, 0, 224, 224), (512, 256)) == (144.0, 16.0, 368.0, 240.0)
    squash = Preprocessing(crop_size=(100, 200), resize_size=None)
    assert squash.input_box_to_image((0, 0, 200, 100), (400, 50)) == (0.0, 0.0, 400.0, 50.0)
    assert pre(square_image((50, 30), (0, 0, 5, 5), (255, 0, 0))).shape == (3, 224, 224)
