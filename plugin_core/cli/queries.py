"""Questions to saved results: ``neurolabel find`` (units by text or by image) and
``neurolabel compare`` (two results side by side)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from .console import AsJson, Device, console, err_console

Text = Annotated[
    str | None,
    typer.Option(
        "--text",
        metavar="SCORER",
        help="Text embedder: a scorer spec (default: the result's scorer when it embeds "
        "texts, else 'text', the packaged sentence embedder)",
    ),
]
Top = Annotated[int, typer.Option("--top", "-k", help="Units shown", metavar="N")]


def find(
    result_path: Annotated[
        Path, typer.Argument(metavar="RESULT", help="Result folder or result.json")
    ],
    query: Annotated[
        str | None,
        typer.Argument(metavar="QUERY", help="Free text, e.g. 'striped animal'"),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(
            "--image", metavar="PATH", help="Rank the units that fire most on this image instead"
        ),
    ] = None,
    layer: Annotated[
        str | None, typer.Option("--layer", "-l", help="Only this layer", metavar="LAYER")
    ] = None,
    top: Top = 10,
    text: Text = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            metavar="SPEC",
            help="With --image: the model, when the result's spec cannot be reloaded",
        ),
    ] = None,  # fmt: skip
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            metavar="DIR",
            help="With --image: save the patch each unit fired on (LAYER_unitN.png)",
        ),
    ] = None,
    device: Device = "auto",
    as_json: AsJson = False,
) -> None:
    """Find units by what they respond to: a free-text query, or an image (--image)."""
    from ..data.result import LabelingResult
    from ..errors import NeurolabelError
    from ..plugins.resolve import build_context

    if (query is None) == (image is None):
        raise NeurolabelError("Give a QUERY or --image PATH (one of them)")
    result = LabelingResult.load(result_path)
    ctx = build_context(device)
    started = time.perf_counter()
    if image is not None:
        from ..pipeline.image_query import units_on_image

        with err_console.status("Running the model on the image"):
            firing = units_on_image(result, image, ctx, model=model, layer=layer, top=top)
        rows = [unit.to_dict() for unit in firing]
        if save is not None:
            for row, path in zip(rows, _save_patches(image, firing, save), strict=True):
                row["patch"] = str(path)
        if as_json:
            print(json.dumps({"image": str(image), "units": rows}, indent=1))
            return
        _print_firing(rows, image)
        return
    assert query is not None
    with err_console.status("Embedding the query"):
        encode, spec = text_side_of(result, ctx, text)
        matches = result.find(query, encode, layer=layer, top=top)
    rows = [m.to_dict() for m in matches]
    seconds = round(time.perf_counter() - started, 3)
    if as_json:
        print(
            json.dumps({"query": query, "text": spec, "seconds": seconds, "units": rows}, indent=1)
        )
        return
    _print_matches(rows, query, spec)


def _save_patches(image: Path, firing: list[Any], folder: Path) -> list[Path]:
    """Each unit's patch of ``image`` (the whole image on vector layers), atomically."""
    from ..data.atomic import atomic_write
    from ..data.images import open_image
    from ..pipeline.patches import cut

    picture = open_image(image)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for unit in firing:
        # layer names come from the result file: keep them from leaving the folder
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in unit.layer)
        path = folder / f"{safe}_unit{unit.unit}.png"
        with atomic_write(path, "wb") as handle:
            cut(picture, tuple(unit.box) if unit.box else None).save(handle, format="PNG")
        paths.append(path)
    return paths


def text_side_of(result: Any, ctx: Any, text: str | None) -> tuple[Any, str]:
    """The text embedder (``encode_texts``) and the spec it came from."""
    from ..plugins.resolve import resolve_text_side

    scorer, spec = resolve_text_side(result, ctx, text)
    return scorer.encode_texts, spec


def _print_matches(rows: list[dict[str, Any]], query: str, spec: str) -> None:
    from rich.table import Table
    from rich.text import Text as RichText

    from ..reporting.terminal import format_p

    table = Table(title=RichText(f"units matching '{query}'  (text side: {spec})"))
    for column in ("layer", "unit", "label", "match", "via", "p"):
        table.add_column(column, justify="right" if column in ("unit", "match", "p") else "left")
    for row in rows:
        table.add_row(
            RichText(row["layer"]),
            str(row["unit"]),
            RichText(row["label"], style="dim" if row["unexplained"] else ""),
            f"{row['score']:.3f}",
            RichText(row["matched"]),
            format_p(row["p_value"]) if row["p_value"] is not None else "—",
        )
    console.print(table if rows else "No labeled unit in this result.")


def _print_firing(rows: list[dict[str, Any]], image: Path) -> None:
    from rich.table import Table
    from rich.text import Text as RichText

    table = Table(title=RichText(f"units firing on {image}"))
    for column in ("layer", "unit", "label", "z", "activation", "where (x0, y0, x1, y1)"):
        table.add_column(
            column, justify="right" if column in ("unit", "z", "activation") else "left"
        )
    for row in rows:
        box = row["box"]
        label = row["label"]
        if row.get("candidate") and label != row["candidate"]:  # unexplained: its candidate
            label = f"{label} {row['candidate']}?"
        table.add_row(
            RichText(row["layer"]),
            str(row["unit"]),
            RichText(label, style="dim" if label != row["label"] else ""),
            f"{row['z']:.2f}",
            f"{row['activation']:.4g}",
            "whole image" if box is None else ", ".join(map(str, box)),
        )
    console.print(table if rows else "No labeled unit in this result.")
    if rows and "patch" in rows[0]:
        console.print(f"Patches in {Path(rows[0]['patch']).parent}", highlight=False, markup=False)


def compare(
    result_a: Annotated[Path, typer.Argument(metavar="A", help="A result folder or result.json")],
    result_b: Annotated[Path, typer.Argument(metavar="B", help="Another result")],
    layer_a: Annotated[
        str | None, typer.Option("--layer-a", help="Only this layer of A", metavar="LAYER")
    ] = None,
    layer_b: Annotated[
        str | None, typer.Option("--layer-b", help="Only this layer of B", metavar="LAYER")
    ] = None,
    synonym: Annotated[
        float,
        typer.Option(help="Text cosine above which two labels count as one", metavar="COS"),
    ] = 0.85,
    unexplained: Annotated[
        bool,
        typer.Option(
            "--unexplained",
            help="Also count units whose label is not significant, by their best candidate",
            metavar="",
        ),
    ] = False,
    top: Top = 15,
    text: Text = None,
    device: Device = "auto",
    as_json: AsJson = False,
) -> None:
    """Compare two results: concepts in both and in one only, best unit pairs, coverage."""
    from ..data.result import LabelingResult
    from ..plugins.resolve import build_context

    a, b = LabelingResult.load(result_a), LabelingResult.load(result_b)
    ctx = build_context(device)
    with err_console.status("Comparing"):
        comparison = comparison_of(
            a,
            b,
            text_side_of(a, ctx, text),
            layer_a=layer_a,
            layer_b=layer_b,
            synonym=synonym,
            pairs=top,
            unexplained=unexplained,
        )
    show_comparison(comparison, result_a, result_b, as_json, rows=top)


def comparison_of(a: Any, b: Any, text_side: tuple[Any, str], **options: Any) -> dict[str, Any]:
    """``compare_results`` of two results with ``(encode_texts, spec)``, the spec recorded
    (``compare``, ``report --compare``)."""
    from ..data.unit_search import compare_results

    encode, spec = text_side
    comparison = compare_results(a, b, encode, **options)
    comparison["text"] = spec
    return comparison


def show_comparison(
    comparison: dict[str, Any], path_a: Path, path_b: Path, as_json: bool, rows: int = 15
) -> None:
    """Print a comparison: JSON, or the terminal tables."""
    if as_json:
        print(json.dumps(comparison, indent=1))
        return
    from ..reporting.comparison import comparison_tables

    for table in comparison_tables(comparison, str(path_a), str(path_b), rows=rows):
        console.print(table)
