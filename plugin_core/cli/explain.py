"""``neurolabel explain``: label the neurons of some layers and write the result folder."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from ..errors import NeurolabelError
from ..pipeline.settings import LabelingSettings
from ..runtime.terminal import shorten
from .console import Device, console, err_console

#: The option defaults of ``explain`` are the labeler's, read from one place.
DEFAULTS = LabelingSettings()


def _parse_units(text: str | None) -> list[int] | None:
    """``0-9,17`` -> [0..9, 17]."""
    if not text:
        return None
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise NeurolabelError(
                        f"--units {shorten(text)}: the range {low}-{high} is reversed; write "
                        f"{high}-{low}"
                    )
                units.extend(range(low, high + 1))
            elif part:
                units.append(int(part))
        except ValueError:
            raise NeurolabelError(
                f"--units {shorten(repr(text))}: write unit numbers like 0-9,17"
            ) from None
    return units


#: Where `explain` keeps the forward pass's streaming state for --resume (per rank).
CHECKPOINT_FILE = ".checkpoint/exemplars.pt"


def _confirmer(yes: bool) -> Callable[[str], bool]:
    """The ``confirm(message) -> bool`` callback LLM backends call before a large run."""

    def confirm(message: str) -> bool:
        if yes:
            err_console.print(f"{message} Proceeding (--yes).", highlight=False, markup=False)
            return True
        if sys.stdin.isatty():
            return typer.confirm(f"{message} Proceed?", default=False, err=True)
        raise NeurolabelError(
            f"{message} Not asking because the input is not a terminal: pass --yes to proceed."
        )

    return confirm


def _refuse_output_among_images(out: Path, images: Path) -> None:
    """The next run over the images would read this run's patches as probing images."""
    if not images.is_dir():
        return  # the labeler says what is wrong with it
    folder, target = images.resolve(), out.resolve()
    if target == folder or folder in target.parents:
        raise NeurolabelError(
            f"--out {out} is inside --images {images}: the result's patches would be read as "
            "probing images by the next run over that folder; choose an output folder "
            "outside it"
        )


def explain(
    model: Annotated[
        str,
        typer.Argument(
            help="Model spec: torchvision:resnet18, timm:NAME, file:PATH, python:mod:fn, "
            "packaged:efficientnet_lite0",
            metavar="MODEL",
        ),
    ],
    layer: Annotated[
        list[str],
        typer.Option(
            "--layer",
            "-l",
            help="Layer to explain (repeatable); a pattern names several: 'layer3.*.conv2', "
            "'type:Conv2d' (every convolution)",
            metavar="LAYER",
        ),
    ],
    images: Annotated[
        Path, typer.Option("--images", "-i", help="Folder of probing images", metavar="DIR")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Result folder", metavar="DIR")] = Path(
        "neurolabel-out"
    ),
    scorer: Annotated[str, typer.Option(help="Scorer spec", metavar="SPEC")] = DEFAULTS.scorer,
    vocab: Annotated[
        str, typer.Option("--vocab", help="Vocabulary spec, '+' joins", metavar="SPEC")
    ] = DEFAULTS.vocabulary,
    top_k: Annotated[
        int, typer.Option("--top-k", help="Exemplars per neuron", metavar="K")
    ] = DEFAULTS.top_k,
    aggregation: Annotated[
        str,
        typer.Option(
            help="default (= contrast), mean, soft-wpmi, wpmi, cos-cubed (CLIP-Dissect's "
            "formulas on our exemplars), with options after '?', e.g. "
            "'contrast?correlation=1'; or clip-dissect, clip-dissect:wpmi, "
            "clip-dissect:cos-cubed for CLIP-Dissect as published (every image whole, spatial "
            "mean)",
            metavar="SPEC",
        ),
    ] = DEFAULTS.aggregation,
    extractor: Annotated[
        str, typer.Option(help="Extractor spec", metavar="SPEC")
    ] = DEFAULTS.extractor,
    units: Annotated[
        str | None, typer.Option(help="Units to explain, e.g. 0-63,100", metavar="UNITS")
    ] = None,
    threshold: Annotated[
        str, typer.Option(help="Patch threshold: quantile or otsu", metavar="METHOD")
    ] = DEFAULTS.threshold,
    patches: Annotated[
        str,
        typer.Option(
            help="auto, activation (cut from the map), whole (images), or an attribution "
            "patcher: gradcam[:LAYER], gradient, integrated-gradients, conductance",
            metavar="MODE",
        ),
    ] = DEFAULTS.patches,
    activation: Annotated[
        str, typer.Option(help="Rank images by map max or mean", metavar="max|mean")
    ] = DEFAULTS.activation,
    device: Device = DEFAULTS.device,
    batch_size: Annotated[int, typer.Option("--batch-size", metavar="N")] = DEFAULTS.batch_size,
    num_workers: Annotated[int, typer.Option("--num-workers", metavar="N")] = DEFAULTS.num_workers,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow unpickling a whole module from file: (runs code from the file)",
            metavar="",
        ),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress bars or table", metavar="")
    ] = False,
    no_html: Annotated[
        bool,
        typer.Option(
            "--no-html", help="Do not write the HTML report (OUT/report.html)", metavar=""
        ),
    ] = False,
    describer: Annotated[
        str | None,
        typer.Option(
            help="Chat VLM naming each neuron from its patches, fused with the scorer's "
            "ranking: litellm:MODEL[?mode=constrained&candidates=20&weight=0.5]; with "
            "?verify=ROUNDS[&propose=5&budget=USD&vision=false] it proposes descriptions that "
            "are tested on held-out images and refined (docs/verified_descriptions.md)",
            metavar="SPEC",
        ),
    ] = None,
    summarize: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="LLM writing one sentence per neuron (litellm name, e.g. openai/gpt-4o-mini)",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="Send large LLM/VLM runs without asking (cost estimate)", metavar=""
        ),
    ] = False,
    scoring: Annotated[
        str,
        typer.Option(
            help="auto (the cheaper to encode), patches (each exemplar's patch) or images "
            "(whole images, CLIP-Dissect's way)",
            metavar="MODE",
        ),
    ] = DEFAULTS.scoring,
    precision: Annotated[
        str,
        typer.Option(
            help="fp32, bf16 or fp16 (autocast for the target and the scorer)",
            metavar="fp32|bf16|fp16",
        ),
    ] = DEFAULTS.precision,
    channels_last: Annotated[
        bool,
        typer.Option("--channels-last", help="Channels-last batches (faster on GPUs)", metavar=""),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run from OUT's checkpoint (same result as one run)",
            metavar="",
        ),
    ] = False,
    checkpoint_every: Annotated[
        int,
        typer.Option(
            "--checkpoint-every", help="Batches between checkpoints (0: never)", metavar="N"
        ),
    ] = DEFAULTS.checkpoint_every,
    no_cache: Annotated[
        bool,
        typer.Option(
            "--no-cache", help="Neither read nor write the exemplar (activation) cache", metavar=""
        ),
    ] = False,
    holdout: Annotated[
        float | None,
        typer.Option(
            help="Share of the images set aside (not used for labeling) and recorded in the "
            "result, for --metric faithfulness",
            metavar="SHARE",
        ),
    ] = None,
    verify_split: Annotated[
        float | None,
        typer.Option(
            help="With a verifying describer (litellm:MODEL?verify=ROUNDS): share of the "
            "probing images set aside to test its candidate descriptions on (the exemplars "
            "never come from them)",
            metavar="SHARE",
        ),
    ] = None,
    significance: Annotated[
        float,
        typer.Option(
            help="Level of the label test: a unit whose best concept is not more present on "
            "its exemplars than on the probing images at large (p-value corrected across the "
            "vocabulary and the layer's units) is reported as (unexplained); 1 labels every unit",
            metavar="LEVEL",
        ),
    ] = DEFAULTS.significance or 1.0,
    units_from: Annotated[
        str,
        typer.Option(
            "--units-from",
            help="What a unit is: channels, sae:FILE (a sparse autoencoder's latents), "
            "directions:FILE (projections on a [units, channels] matrix) or "
            "directions:pca?k=N (the layer's N principal directions) or heads (a ViT's "
            "attention heads: timm layer blocks.N.attn.norm, torchvision "
            "encoder.layers.encoder_layer_N.self_attention); see docs/unit_maps.md",
            metavar="SPEC",
        ),
    ] = DEFAULTS.units_from,
    source_pattern: Annotated[
        str | None,
        typer.Option(
            "--source-pattern",
            metavar="REGEX",
            help="Images whose paths give the same first group of REGEX are views of one "
            "source (crops, frames, tiles): a neuron keeps one exemplar per source, e.g. "
            "'(.+)_crop[0-9]+[.]png$'",
        ),
    ] = DEFAULTS.source_pattern,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="Evaluator spec run on the result before it is saved (repeatable), e.g. "
            "faithfulness (on the --holdout images) or accuracy",
            metavar="SPEC",
        ),
    ] = None,
) -> None:
    """Label the neurons of layers: write result.json, descriptions.csv, patches, report.html."""
    from contextlib import ExitStack, nullcontext

    from rich.markup import escape

    from ..data.output_folder import check_output_folder, claim_output_folder
    from ..data.result import PATCH_DIR
    from ..pipeline.labeler import NeuronLabeler
    from ..plugins.resolve import build_context
    from ..reporting.terminal import metrics_report, result_table, significance_summary
    from ..runtime import distributed

    ctx = build_context(device, trust_pickle=trust_pickle, confirm=_confirmer(yes))
    # Under torchrun every rank runs this command on its own shard; rank 0 writes.
    ctx.device = distributed.local_device(ctx.device)
    distributed.init_from_environment(ctx.device)
    rank = distributed.rank_and_world()[0]
    _refuse_output_among_images(out, images)
    # The result folder is checked (and locked by the rank that writes it) before any work:
    # a read-only --out must not cost a forward pass.
    with ExitStack() as claimed:
        if rank == 0:
            claimed.enter_context(claim_output_folder(out))
        else:
            check_output_folder(out)
        quiet = quiet or rank != 0
        chosen_describer = None
        if describer is not None:
            from ..plugins.resolve import resolve_describer

            chosen_describer = resolve_describer(describer, ctx)
        if verify_split is not None and not getattr(chosen_describer, "propose_rounds", 0):
            raise NeurolabelError(
                f"--verify-split {verify_split} sets images aside for verified descriptions "
                "only: add a verifying describer (--describer 'litellm:MODEL?verify=2') or "
                "drop the option"
            )
        if chosen_describer is not None and getattr(chosen_describer, "remote", False):
            err_console.print(
                "[yellow]Note:[/yellow] the exemplar patches of every explained neuron will "
                f"be sent to the remote model of '{escape(chosen_describer.name)}'; a local "
                "model (api_base on localhost, or ollama/...) keeps them on this machine.",
                highlight=False,
            )
        settings = LabelingSettings(
            scorer=scorer,
            vocabulary=vocab,
            aggregation=aggregation,
            extractor=extractor,
            top_k=top_k,
            activation=activation,
            threshold=threshold,
            patches=patches,
            batch_size=batch_size,
            num_workers=num_workers,
            device=device,
            scoring=scoring,
            precision=precision,
            summarizer=summarize,
            units=_parse_units(units),
            progress=not quiet,
            channels_last=channels_last,
            cache=not no_cache,
            checkpoint=out / CHECKPOINT_FILE,
            checkpoint_every=checkpoint_every,
            resume=resume,
            holdout=holdout,
            verify_split=DEFAULTS.verify_split if verify_split is None else verify_split,
            source_pattern=source_pattern,
            significance=significance,
            units_from=units_from,
        )
        labeler = NeuronLabeler(
            model, layers=layer, settings=settings, describer=chosen_describer, context=ctx
        )
        # Resolve evaluators before the long run, so a typo in a spec fails at once.
        evaluators = [ctx.registries.evaluators.resolve(spec, ctx) for spec in metric or []]
        result = labeler.run(images)
        if rank != 0:
            return
        for evaluator in evaluators:
            result.metrics[evaluator.name] = evaluator.evaluate(result, ctx)
        path = result.save(out)
        written = [str(path), str(out / "descriptions.csv")]
        if (out / PATCH_DIR).is_dir():
            written.append(f"{out / PATCH_DIR}/")
        if not no_html:
            from ..reporting.html_report import REPORT_FILE, write_html_report
            from ..reporting.query_table import ask_table

            # Seconds for thousands of neurons: say what is going on.
            status = nullcontext() if quiet else console.status("Writing the HTML report")
            with status:
                # From the in-memory result: its patches are still decoded, no need to re-read them.
                page = write_html_report(
                    result, out / REPORT_FILE, folder=out, query=ask_table(result, ctx)
                )
                written.append(str(page))
        if not quiet:
            console.print(result_table(result))
            summary = significance_summary(result)
            if summary:
                console.print(summary, highlight=False, markup=False)
            for table in metrics_report(result, names=[e.name for e in evaluators]):
                console.print(table)
        skipped = result.dataset.get("num_skipped", 0)
        if skipped:
            err_console.print(
                f"[yellow]{skipped} input(s) skipped[/yellow] (reasons in {escape(str(path))})",
                highlight=False,
            )
        console.print(
            f"Wrote {', '.join(written[:-1])} and {written[-1]}", highlight=False, markup=False
        )
