"""The ``neurolabel`` command line (typer + rich). Heavy modules are imported per command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import NeurolabelError

app = typer.Typer(
    name="neurolabel",
    help="Explain in natural language what each neuron of a vision network responds to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N")]


def _parse_units(text: str | None) -> list[int] | None:
    """``0-9,17`` -> [0..9, 17]."""
    if not text:
        return None
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                low, high = part.split("-", 1)
                units.extend(range(int(low), int(high) + 1))
            elif part:
                units.append(int(part))
        except ValueError:
            raise NeurolabelError(f"--units {text!r}: write unit numbers like 0-9,17") from None
    return units


#: Where `explain` keeps the forward pass's streaming state for --resume (per rank).
CHECKPOINT_FILE = ".checkpoint/exemplars.pt"


def _confirmer(yes: bool):
    """The ``confirm(message) -> bool`` callback LLM backends call before a large run."""

    def confirm(message: str) -> bool:
        if yes:
            err_console.print(f"{message} Proceeding (--yes).", highlight=False)
            return True
        if sys.stdin.isatty():
            return typer.confirm(f"{message} Proceed?", default=False, err=True)
        raise NeurolabelError(
            f"{message} Not asking because the input is not a terminal: pass --yes to proceed."
        )

    return confirm


@app.command()
def explain(
    model: Annotated[
        str,
        typer.Argument(
            help="Model spec: torchvision:resnet18, timm:NAME, file:PATH, python:mod:fn, "
            "packaged:efficientnet_lite0"
        ),
    ],
    layer: Annotated[
        list[str],
        typer.Option(
            "--layer",
            "-l",
            help="Layer to explain (repeatable); a pattern names several: 'layer3.*.conv2', "
            "'type:Conv2d' (every convolution)",
        ),
    ],
    images: Annotated[Path, typer.Option("--images", "-i", help="Folder of probing images")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Result folder")] = Path(
        "neurolabel-out"
    ),
    scorer: Annotated[
        str, typer.Option(help="Scorer spec")
    ] = "open_clip:ViT-B-32/laion2b_s34b_b79k",
    vocab: Annotated[str, typer.Option("--vocab", help="Vocabulary spec, '+' joins")] = "imagenet",
    top_k: Annotated[int, typer.Option("--top-k", help="Exemplars per neuron")] = 10,
    aggregation: Annotated[
        str,
        typer.Option(
            help="default, contrast, mean, soft-wpmi, wpmi, cos-cubed; options after '?', "
            "e.g. 'contrast?correlation=1'"
        ),
    ] = "default",
    extractor: Annotated[str, typer.Option(help="Extractor spec")] = "hooks",
    units: Annotated[str | None, typer.Option(help="Units to explain, e.g. 0-63,100")] = None,
    threshold: Annotated[str, typer.Option(help="Patch threshold: quantile or otsu")] = "quantile",
    patches: Annotated[
        str,
        typer.Option(
            help="auto, activation (cut from the map), whole (images), or an attribution "
            "patcher: gradcam[:LAYER], gradient, integrated-gradients, conductance"
        ),
    ] = "auto",
    activation: Annotated[str, typer.Option(help="Rank images by map max or mean")] = "max",
    device: Device = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size")] = 32,
    num_workers: Annotated[int, typer.Option("--num-workers")] = 0,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow unpickling a whole module from file: (runs code from the file)",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or table")] = False,
    no_html: Annotated[
        bool, typer.Option("--no-html", help="Do not write the HTML report (OUT/report.html)")
    ] = False,
    describer: Annotated[
        str | None,
        typer.Option(
            help="Chat VLM naming each neuron from its patches, fused with the scorer's "
            "ranking: litellm:MODEL[?mode=constrained&candidates=20&weight=0.5]"
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
        typer.Option("--yes", "-y", help="Send large LLM/VLM runs without asking (cost estimate)"),
    ] = False,
    scoring: Annotated[
        str,
        typer.Option(
            help="auto (the cheaper to encode), patches (each exemplar's patch) or images "
            "(whole images, CLIP-Dissect's way)"
        ),
    ] = "auto",
    precision: Annotated[
        str, typer.Option(help="fp32, bf16 or fp16 (autocast for the target and the scorer)")
    ] = "fp32",
    channels_last: Annotated[
        bool, typer.Option("--channels-last", help="Channels-last batches (faster on GPUs)")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted run from OUT's checkpoint (same result as one run)",
        ),
    ] = False,
    checkpoint_every: Annotated[
        int, typer.Option("--checkpoint-every", help="Batches between checkpoints (0: never)")
    ] = 50,
    no_cache: Annotated[
        bool,
        typer.Option("--no-cache", help="Neither read nor write the exemplar (activation) cache"),
    ] = False,
    holdout: Annotated[
        float | None,
        typer.Option(
            help="Share of the images set aside (not used for labeling) and recorded in the "
            "result, for --metric faithfulness"
        ),
    ] = None,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            "-m",
            help="Evaluator spec run on the result before it is saved (repeatable), e.g. "
            "faithfulness (on the --holdout images) or accuracy",
        ),
    ] = None,
) -> None:
    """Label the neurons of one or more layers and write result.json, descriptions.csv,
    patches and the HTML report."""
    from . import distributed
    from .context import build_context
    from .labeler import NeuronLabeler
    from .report import result_table

    ctx = build_context(device, trust_pickle=trust_pickle, confirm=_confirmer(yes))
    # Under torchrun every rank runs this command on its own shard; rank 0 writes.
    ctx.device = distributed.local_device(ctx.device)
    distributed.init_from_environment(ctx.device)
    rank = distributed.rank_and_world()[0]
    quiet = quiet or rank != 0
    chosen_describer = None
    if describer is not None:
        from .describe import resolve_describer

        chosen_describer = resolve_describer(describer, ctx)
        if getattr(chosen_describer, "remote", False):
            err_console.print(
                f"[yellow]Note:[/yellow] the exemplar patches of every explained neuron will be "
                f"sent to the remote model of '{chosen_describer.name}'; a local model "
                "(api_base on localhost, or ollama/...) keeps them on this machine.",
                highlight=False,
            )
    labeler = NeuronLabeler(
        model,
        layers=layer,
        scorer=scorer,
        vocabulary=vocab,
        top_k=top_k,
        aggregation=aggregation,
        extractor=extractor,
        batch_size=batch_size,
        num_workers=num_workers,
        units=_parse_units(units),
        threshold=threshold,
        patches=patches,
        activation=activation,
        context=ctx,
        progress=not quiet,
        describer=chosen_describer,
        summarize=summarize,
        scoring=scoring,
        precision=precision,
        channels_last=channels_last,
        cache=not no_cache,
        checkpoint=out / CHECKPOINT_FILE,
        checkpoint_every=checkpoint_every,
        resume=resume,
        holdout=holdout,
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
    if not no_html:
        from contextlib import nullcontext

        from .html_report import REPORT_FILE, write_html_report

        # Seconds for thousands of neurons: say what is going on.
        status = nullcontext() if quiet else console.status("Writing the HTML report")
        with status:
            # From the in-memory result: its patches are still decoded, no need to re-read them.
            written.append(str(write_html_report(result, out / REPORT_FILE, folder=out)))
    if not quiet:
        console.print(result_table(result))
    skipped = result.dataset.get("num_skipped", 0)
    if skipped:
        err_console.print(f"[yellow]{skipped} input(s) skipped[/yellow] (reasons in {path})")
    console.print(f"Wrote {', '.join(written[:-1])} and {written[-1]}", highlight=False)


@app.command()
def layers(
    model: Annotated[str, typer.Argument(help="Model spec")],
    contains: Annotated[
        str | None, typer.Option("--contains", help="Only names containing this")
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option(
            "--match",
            "-m",
            help="Only the layers a --layer pattern names, e.g. 'layer3.*.conv2' or "
            "'type:Conv2d' (repeatable)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    extractor: Annotated[str, typer.Option(help="Extractor spec")] = "hooks",
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle")] = False,
) -> None:
    """List the hookable layers of MODEL with their output shapes."""
    from rich.table import Table

    from .context import build_context
    from .labeler import resolve_model
    from .layer_patterns import expand_layer_patterns

    ctx = build_context("cpu", trust_pickle=trust_pickle)
    loaded = resolve_model(model, ctx, None)
    infos = ctx.registries.extractors.resolve(extractor, ctx).list_layers(loaded)
    if contains:
        infos = [i for i in infos if contains in i.name]
    if match:
        wanted = set(expand_layer_patterns(loaded.model, match))
        infos = [i for i in infos if i.name in wanted]
    if as_json:
        print(
            json.dumps(
                [
                    {"name": i.name, "type": i.type, "shape": list(i.shape), "kind": i.kind}
                    for i in infos
                ],
                indent=1,
            )
        )
        return
    table = Table(title=f"Layers of {model}")
    for column in ("name", "type", "output shape", "kind"):
        table.add_column(column)
    for info in infos:
        table.add_row(info.name, info.type, "×".join(map(str, info.shape)), info.kind)
    console.print(table)
    units = sum(int(info.shape[0]) for info in infos if info.shape)
    console.print(f"{len(infos)} layers, {units} units", highlight=False)


@app.command()
def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Show the registered plugins and what each registers."""
    from rich.table import Table

    from .plugins import get_plugins

    facade = get_plugins()
    regs = facade.registries()
    kinds = {
        "model source": regs.model_sources,
        "extractor": regs.extractors,
        "patcher": regs.patchers,
        "vocabulary": regs.vocabularies,
        "scorer": regs.scorers,
        "summarizer": regs.summarizers,
        "evaluator": regs.evaluators,
    }
    rows = [(kind, e.name, e.plugin, e.description) for kind, reg in kinds.items() for e in reg]
    if as_json:
        print(
            json.dumps(
                {
                    "plugins": facade.plugin_names(),
                    "registered": [
                        dict(zip(("kind", "name", "plugin", "description"), row, strict=True))
                        for row in rows
                    ],
                },
                indent=1,
            )
        )
        return
    table = Table(title="neurolabel plugins")
    for column in ("kind", "name", "plugin", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


@app.command()
def report(
    result_path: Annotated[
        Path, typer.Argument(metavar="RESULT", help="Result folder or result.json")
    ],
    layer: Annotated[str | None, typer.Option("--layer", "-l", help="Only this layer")] = None,
    limit: Annotated[int, typer.Option(help="Rows per layer (0 = all)")] = 20,
    neuron: Annotated[
        str | None,
        typer.Option(
            "--neuron", "-n", metavar="LAYER:UNIT", help="One neuron in detail, e.g. layer4:17"
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Write the self-contained HTML report to this file"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the result, the layer or the neuron)")
    ] = False,
) -> None:
    """Show a saved result: per-layer tables, one neuron, JSON, or an HTML report."""
    from .report import layer_report, neuron_json, neuron_report, parse_neuron
    from .result import LabelingResult

    result = LabelingResult.load(result_path)
    folder = result_path if result_path.is_dir() else result_path.parent
    if layer is not None and layer not in result.neurons:
        from .errors import LayerNotFoundError

        raise LayerNotFoundError(
            f"Layer '{layer}' is not in {result_path}. Layers: {', '.join(result.neurons)}"
        )
    chosen = parse_neuron(neuron) if neuron is not None else None
    if chosen is not None:
        result.explanation(*chosen)  # a clear error before any output
    if html is not None:
        from .html_report import write_html_report

        written = write_html_report(result, html, folder=folder)
        # With --json, stdout carries only the JSON.
        (err_console if as_json else console).print(
            f"Wrote {written} ({written.stat().st_size / 1e6:.1f} MB)", highlight=False
        )
        if chosen is None and not as_json:
            return
    if chosen is not None:
        if as_json:
            print(json.dumps(neuron_json(result, *chosen, folder=folder), indent=1))
        else:
            console.print(neuron_report(result, *chosen, folder=folder))
        return
    if as_json:
        data = result.to_dict()
        if layer is not None:
            data["layers"] = {layer: data["layers"].get(layer, {})}
            data["neurons"] = {layer: data["neurons"][layer]}
        print(json.dumps(data, indent=1))
        return
    console.print(layer_report(result, layer=layer, limit=limit or None))


@app.command()
def evaluate(
    result_path: Annotated[
        Path, typer.Argument(metavar="RESULT", help="Result folder or result.json")
    ],
    metric: Annotated[
        list[str],
        typer.Option(
            "--metric", "-m", help="Evaluator spec (repeatable), e.g. accuracy?ground_truth=gt.csv"
        ),
    ],
    device: Device = "auto",
) -> None:
    """Run evaluators on a saved result and store their figures in it."""
    from .atomic import atomic_write
    from .context import build_context
    from .result import RESULT_FILE, LabelingResult

    ctx = build_context(device)
    result = LabelingResult.load(result_path)
    for spec in metric:
        evaluator = ctx.registries.evaluators.resolve(spec, ctx)
        figures = evaluator.evaluate(result, ctx)
        result.metrics[evaluator.name] = figures
        console.print(f"[bold]{evaluator.name}[/bold]: {json.dumps(figures)}")
    target = result_path / RESULT_FILE if result_path.is_dir() else result_path
    with atomic_write(target) as handle:
        json.dump(result.to_dict(), handle, indent=1)


_commands_registered = False


def _register_plugin_commands() -> None:
    global _commands_registered
    if not _commands_registered:
        _commands_registered = True
        from .plugins import get_plugins

        get_plugins().register_commands(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, printing user errors without a traceback."""
    _register_plugin_commands()
    try:
        app(args=argv, standalone_mode=False)
    except NeurolabelError as exc:
        # soft_wrap: a path or spec in the message stays on one line, whole, to copy or grep.
        err_console.print(f"[bold red]Error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]Interrupted[/yellow]: outputs are written atomically; "
            "nothing half-written was left."
        )
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # Usage errors (unknown option, missing argument) arrive here in standalone_mode=False.
        # Matched by shape: typer >= 0.29 raises its vendored copy of click's ClickException,
        # which is not click.ClickException.
        exit_code = getattr(exc, "exit_code", None)
        if callable(getattr(exc, "show", None)) and isinstance(exit_code, int):
            exc.show()
            sys.exit(exit_code)
        raise
