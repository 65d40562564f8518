"""Discovery commands: ``neurolabel layers`` (what a model offers) and ``neurolabel plugins``
(what is registered, by whom)."""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import LayerNotFoundError
from ..pipeline.settings import LabelingSettings
from .console import AsJson, console

if TYPE_CHECKING:
    from ..plugins.registry import Entry

DEFAULT_EXTRACTOR = LabelingSettings().extractor


def layers(
    model: Annotated[str, typer.Argument(help="Model spec", metavar="MODEL")],
    contains: Annotated[
        str | None, typer.Option("--contains", help="Only names containing this", metavar="TEXT")
    ] = None,
    match: Annotated[
        list[str] | None,
        typer.Option(
            "--match",
            "-m",
            help="Only the layers a --layer pattern names, e.g. 'layer3.*.conv2' or "
            "'type:Conv2d' (repeatable)",
            metavar="PATTERN",
        ),
    ] = None,
    as_json: AsJson = False,
    extractor: Annotated[
        str, typer.Option(help="Extractor spec", metavar="SPEC")
    ] = DEFAULT_EXTRACTOR,
    trust_pickle: Annotated[
        bool,
        typer.Option(
            "--trust-pickle",
            help="Allow unpickling a whole module from file: (runs code from the file)",
            metavar="",
        ),
    ] = False,
) -> None:
    """List the hookable layers of MODEL with their output shapes."""
    from rich.table import Table
    from rich.text import Text

    from ..data.layer_patterns import expand_layer_patterns
    from ..plugins.resolve import build_context, resolve_model

    # Layer names and shapes need the architecture only: sources that download weights
    # skip them (``architecture_only``), so this works offline.
    ctx = build_context("cpu", trust_pickle=trust_pickle, architecture_only=True)
    loaded = resolve_model(model, ctx, None)
    infos = ctx.registries.extractors.resolve(extractor, ctx).list_layers(loaded)
    every = [i.name for i in infos]
    if contains:
        infos = [i for i in infos if contains in i.name]
    if match:
        wanted = set(expand_layer_patterns(loaded.model, match))
        infos = [i for i in infos if i.name in wanted]
    if not infos:
        asked = " and ".join(
            [*([f"--contains {contains!r}"] if contains else []), *(repr(m) for m in match or [])]
        )
        close = difflib.get_close_matches((contains or (match or [""])[0]), every, n=3)
        hint = f" Closest: {', '.join(close)}." if close else ""
        raise LayerNotFoundError(
            f"No layer of {model} matches {asked}.{hint} The model has {len(every)} layers: "
            f"list them all with `neurolabel layers {model}`"
        )
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
    # Text, not markup: layer names come from the user's model code.
    table = Table(title=Text(f"Layers of {model}"))
    for column in ("name", "type", "output shape", "kind"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            Text(info.name), Text(info.type), "×".join(map(str, info.shape)), Text(info.kind)
        )
    console.print(table)
    units = sum(int(info.shape[0]) for info in infos if info.shape)
    console.print(f"{len(infos)} layers, {units} units", highlight=False)


def _kind(kind: str, entry: Entry[Any]) -> str:
    """A scorer entry whose factory builds a describer (a chat VLM) is listed as one."""
    built = entry.builds()
    is_describer = built is not None and hasattr(built, "describe")
    if kind == "scorer" and is_describer and not hasattr(built, "encode_images"):
        return "describer"
    return kind


def plugins(
    as_json: AsJson = False,
) -> None:
    """Show the registered plugins and what each registers."""
    from rich.table import Table
    from rich.text import Text

    from ..plugins.manager import get_plugins

    facade = get_plugins()
    regs = facade.registries()
    rows = [
        (_kind(kind, e), e.name, e.plugin, e.description)
        for kind, reg in regs.kinds().items()
        for e in reg
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
    table = Table(
        title="neurolabel plugins",
        caption="--json names each plugin's module (built in: neurolabel.adapters.*, "
        "neurolabel.backends.*)",
    )
    table.add_column("kind", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("from", overflow="fold")
    table.add_column("description", overflow="fold", ratio=1)
    distributions = facade.distributions()
    for kind, name, plugin, description in rows:
        # Text, not markup: names and descriptions come from third-party packages.
        where = (
            "built in"
            if plugin.startswith("neurolabel.")
            else f"{plugin} ({distributions[plugin]})"
            if plugin in distributions
            else plugin
        )
        table.add_row(Text(kind), Text(name), Text(where), Text(description))
    console.print(table)
