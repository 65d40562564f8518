"""Commands on a saved result: ``neurolabel report`` (terminal, JSON or HTML views) and
``neurolabel evaluate`` (metrics stored back into the result)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import AsJson, Device, console, err_console
from .queries import comparison_of, show_comparison, text_side_of


def report(
    result_path: Annotated[
        Path, typer.Argument(metavar="RESULT", help="Result folder or result.json")
    ],
    layer: Annotated[
        str | None, typer.Option("--layer", "-l", help="Only this layer", metavar="LAYER")
    ] = None,
    limit: Annotated[int, typer.Option(help="Rows per layer (0 = all)", metavar="N")] = 20,
    neuron: Annotated[
        str | None,
        typer.Option(
            "--neuron", "-n", metavar="LAYER:UNIT", help="One neuron in detail, e.g. layer4:17"
        ),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option(
            "--html", help="Write the self-contained HTML report to this file", metavar="FILE"
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (the result, the layer or the neuron)")
    ] = False,
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            "-i",
            metavar="DIR",
            help="The probing images' folder, when it moved since the result was made",
        ),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option(
            "--compare",
            metavar="OTHER",
            help="Compare with another result (a Compare tab with --html, tables without)",
        ),
    ] = None,
    ask: Annotated[
        bool,
        typer.Option(
            "--ask",
            help="With --html: an Ask tab ranking units by a free-text query (loads the "
            "result's text embedder: seconds; explain and demo add it themselves)",
            metavar="",
        ),
    ] = False,
    device: Device = "auto",
) -> None:
    """Show a saved result: per-layer tables, one neuron, JSON, or an HTML report."""
    from ..data.result import LabelingResult
    from ..reporting.terminal import layer_report, neuron_json, neuron_report, parse_neuron

    result = LabelingResult.load(result_path)
    folder = result_path if result_path.is_dir() else result_path.parent
    if layer is not None and layer not in result.neurons:
        from ..errors import LayerNotFoundError

        raise LayerNotFoundError(
            f"Layer '{layer}' is not in {result_path}. Layers: {', '.join(result.neurons)}"
        )
    chosen = parse_neuron(neuron) if neuron is not None else None
    if chosen is not None:
        result.explanation(*chosen)  # a clear error before any output
    other = LabelingResult.load(compare) if compare is not None else None
    if other is not None and html is None:
        _print_comparison(result, other, result_path, compare, device, as_json)  # type: ignore[arg-type]
        return
    if html is not None:
        from ..errors import NeurolabelError
        from ..reporting.html_report import write_html_report

        if images is not None and not images.is_dir():
            raise NeurolabelError(f"--images {images}: no such folder")
        if html.is_dir():
            raise NeurolabelError(
                f"--html {html} is a folder: name the file to write, e.g. {html / 'report.html'}"
            )
        extras = _html_extras(result, other, compare, ask, device)
        written = write_html_report(result, html, folder=folder, image_root=images, **extras)
        # With --json, stdout carries only the JSON.
        (err_console if as_json else console).print(
            f"Wrote {written} ({written.stat().st_size / 1e6:.1f} MB)",
            highlight=False,
            markup=False,
        )
        if chosen is None and not as_json:
            return
    if chosen is not None:
        if as_json:
            print(json.dumps(neuron_json(result, *chosen, folder, images), indent=1))
        else:
            console.print(neuron_report(result, *chosen, folder, images))
        return
    if as_json:
        data = result.to_dict()
        if layer is not None:
            data["layers"] = {layer: data["layers"].get(layer, {})}
            data["neurons"] = {layer: data["neurons"][layer]}
        print(json.dumps(data, indent=1))
        return
    console.print(layer_report(result, layer=layer, limit=limit or None))


def _html_extras(
    result: Any, other: Any, other_path: Path | None, ask: bool, device: str
) -> dict[str, Any]:
    """The Ask tab's word table and the Compare tab, for write_html_report (the text side
    resolved once for both)."""
    if other is None and not ask:
        return {}
    from ..plugins.resolve import build_context, resolve_text_side
    from ..reporting.query_table import query_table

    ctx = build_context(device)
    extras: dict[str, Any] = {}
    with err_console.status("Embedding the concepts for the report"):
        scorer, spec = resolve_text_side(result, ctx)
        if ask:
            extras["query"] = query_table(result, scorer)
        if other is not None:
            comparison = _comparison(result, other, (scorer.encode_texts, spec))
            extras["comparison"] = (comparison, str(other_path))
    return extras


def _comparison(result: Any, other: Any, text_side: tuple[Any, str]) -> dict[str, Any]:
    """``report --compare``: every live unit counts when a result has no significant label
    (as ``compare --unexplained``), and the summary says so."""
    unlabeled = any(
        not any(
            not n.dead and not n.unexplained and n.concepts for ns in r.neurons.values() for n in ns
        )
        for r in (result, other)
    )
    return comparison_of(result, other, text_side, unexplained=unlabeled)


def _print_comparison(
    result: Any, other: Any, path: Path, other_path: Path, device: str, as_json: bool
) -> None:
    from ..plugins.resolve import build_context

    ctx = build_context(device)
    with err_console.status("Comparing"):
        comparison = _comparison(result, other, text_side_of(result, ctx, None))
    show_comparison(comparison, path, other_path, as_json)


def evaluate(
    result_path: Annotated[
        Path, typer.Argument(metavar="RESULT", help="Result folder or result.json")
    ],
    metric: Annotated[
        list[str],
        typer.Option(
            "--metric",
            "-m",
            help="Evaluator spec (repeatable), e.g. accuracy?ground_truth=gt.csv",
            metavar="SPEC",
        ),
    ],
    device: Device = "auto",
    as_json: AsJson = False,
) -> None:
    """Run evaluators on a saved result, store their figures in it and show them as tables."""
    from rich.markup import escape

    from ..data.output_folder import claim_output_folder
    from ..data.result import RESULT_FILE, LabelingResult, json_safe
    from ..plugins.resolve import build_context
    from ..reporting.terminal import metrics_report

    ctx = build_context(device)
    result = LabelingResult.load(result_path)
    target = result_path / RESULT_FILE if result_path.is_dir() else result_path
    # Every spec resolved first: a typo in the last one fails before any long evaluation.
    evaluators = [ctx.registries.evaluators.resolve(spec, ctx) for spec in metric]
    # Held from the start: a run writing this result meanwhile would be overwritten.
    with claim_output_folder(target.parent, option="RESULT"):
        figures = {}
        for evaluator in evaluators:
            with err_console.status(f"Evaluating {escape(evaluator.name)}"):
                figures[evaluator.name] = evaluator.evaluate(result, ctx)
            result.metrics[evaluator.name] = figures[evaluator.name]
        result.save_json(target)
    if as_json:
        print(json.dumps(json_safe(figures), indent=1))
        return
    for table in metrics_report(result, names=list(figures)):
        console.print(table)
    console.print(f"Stored in {target}", highlight=False, markup=False)
