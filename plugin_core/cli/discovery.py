"""Discovery commands: ``neurolabel layers`` (what a model offers) and ``neurolabel plugins``
(what is registered, by whom)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..pipeline.settings import LabelingSettings
from .console import AsJson, console

DEFAULT_EXTRACTOR = LabelingSettings().extractor


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
    as_json: AsJson = False,
    extractor: Annotated[str, typer.Option(help="Extractor spec")] = DEFAULT_EXTRACTOR,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle")] = False,
) -> None:
    """List the hookable layers of MODEL with their output shapes."""
    from rich.table import Table

    from ..data.layer_patterns import expand_layer_patterns
    from ..plugins.resolve import build_context, resolve_model

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


def plugins(
    as_json: AsJson = False,
) -> None:
    """Show the registered plugins and what each registers."""
    from rich.table import Table

    from ..plugins.manager import get_plugins

    facade = get_plugins()
    regs = facade.registries()
    rows = [
        (kind, e.name, e.plugin, e.description) for kind, reg in regs.kinds().items() for e in reg
    ]
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
