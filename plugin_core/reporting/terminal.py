"""Terminal views of a result (rich): per-layer tables, one neuron's details, evaluation.

Every string that comes from a result (concepts, layer names, paths) is passed as
:class:`rich.text.Text` or escaped, so a concept such as ``[bold]`` prints as written.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..data.result import LabelingResult, NeuronExplanation
from ..data.result_files import ResultFiles
from ..errors import NeurolabelError
from .layer_summary import LayerSummary, histogram, quantiles, summarize_layer
from .tables import (
    MAX_NEURON_ROWS,
    FigureTable,
    format_cell,
    format_value,
    neuron_keys,
    scoped_figures,
)
from .tables import tabulate as tabulate_figures
from .unit_map_text import unit_map_line

_SPARKS = "▁▂▃▄▅▆▇█"
_BAR = 20


def result_table(
    result: LabelingResult,
    layer: str | None = None,
    limit: int | None = 20,
    concepts: int = 3,
    caption: bool = True,
) -> Table:
    """A rich table of neurons: layer, unit, top concepts with scores, top activation.

    Args:
        result: The labeling result.
        layer: Only this layer (default: all).
        limit: Rows per layer at most (None = all).
        concepts: Ranked concepts shown per neuron.
        caption: Explain the columns under the table (once is enough when several
            tables are printed in a row).

    Returns:
        A :class:`rich.table.Table` to print with a rich console.

    Examples:
        >>> from rich.console import Console
        >>> neuron = NeuronExplanation("fc", 0, [["[red]", 1.0], ["dog", 0.5]])
        >>> console = Console(width=100)
        >>> with console.capture() as capture:
        ...     console.print(result_table(LabelingResult({"name": "m"}, {}, {"fc": [neuron]})))
        >>> "[red]" in capture.get()
        True
    """
    title = Text(f"neurolabel: {result.model.get('name', '?')}")
    table = Table(title=title, show_lines=False)
    table.add_column("layer", style="cyan", no_wrap=True)
    table.add_column("unit", justify="right")
    table.add_column("description", style="bold")
    table.add_column("runners-up")
    table.add_column("score", justify="right")
    tested = any(n.p_value is not None for ns in result.neurons.values() for n in ns)
    if tested:
        table.add_column("p", justify="right")
    table.add_column("max act.", justify="right")
    for name, neurons in result.neurons.items():
        if layer is not None and name != layer:
            continue
        shown = neurons if limit is None else neurons[:limit]
        for neuron in shown:
            top = neuron.top(concepts)
            # An unexplained unit has no label: its best-ranked concepts are candidates.
            if neuron.unexplained:
                runners = "candidates: " + ", ".join(c for c, _ in top)
            else:  # a verified description may come from anywhere in the ranking, or outside
                others = [c for c, _ in top if c != neuron.description]
                runners = ", ".join(others[: max(len(top) - 1, 0)])
            # An unexplained unit has no label, so no label score: its candidates are listed.
            score = "" if neuron.score is None or neuron.unexplained else f"{neuron.score:.3g}"
            peak = neuron.stats.get("max")
            if neuron.dead or neuron.unexplained:
                description = Text(neuron.description, style="dim")
            else:
                description = Text(neuron.summary or neuron.description)
            table.add_row(
                Text(name),
                str(neuron.unit),
                description,
                Text(runners),
                score,
                *([format_p(neuron.p_value)] if tested else []),
                "" if peak is None else f"{peak:.3g}",
            )
        if limit is not None and len(neurons) > limit:
            more = Text(
                f"{len(neurons) - limit} more units (`neurolabel report RESULT --limit 0` "
                "shows all)",
                style="dim",
            )
            table.add_row(Text(name), "…", more, *[""] * (len(table.columns) - 3))
    if caption:
        table.caption = Text(_how_to_read(result, layer), style="dim")
        table.caption_justify = "left"
    return table


def _how_to_read(result: LabelingResult, layer: str | None) -> str:
    """What the score column means, and why it is not descriptions.csv's similarity."""
    aggregation = str(result.settings.get("aggregation") or "the aggregation")
    notes = [
        f"score: {aggregation}'s score of the description, comparable between the units of "
        "one layer (each layer has its own scale); descriptions.csv's similarity is the mean "
        "similarity of the description with the unit's exemplar patches"
    ]
    neurons = [n for name, ns in result.neurons.items() if layer in (None, name) for n in ns]
    if any(n.verified and not n.unexplained for n in neurons):
        notes.append(
            "a verified description's score is its test score instead (exemplar and held-out "
            "z combined; docs/verified_descriptions.md), and its p is the unit's label test "
            "(whether any concept of the vocabulary fits better than chance)"
        )
    if any(n.dead for n in neurons):
        notes.append("(dead): the unit's activation never varied over the probing images")
    if any(n.p_value is not None for n in neurons):
        notes.append(
            "p: the chance of a label this good if the unit's exemplars were random images "
            "(corrected across the vocabulary and the layer's units)"
        )
    if any(n.unexplained for n in neurons):
        level = (result.settings.get("significance_test") or {}).get("level", "the level")
        notes.append(
            f"(unexplained): p above {level}, no concept fits better than chance; the "
            "candidates are the best-ranked concepts, not labels"
        )
    return "; ".join(notes) + "."


def layer_summary_table(summary: LayerSummary) -> Table:
    """A two-column table of a layer's figures: counts, frequent concepts, score spread.

    Args:
        summary: From :func:`~neurolabel.plugin_core.reporting.layer_summary.summarize_layer`.

    Returns:
        A :class:`rich.table.Table`.

    Examples:
        >>> s = LayerSummary("fc", "vector", [10], 10, 10, 2, [("dog", 3)], 1, [1.0, 2.0])
        >>> layer_summary_table(s).row_count
        6
    """
    table = Table(title=Text(f"layer {summary.name}", style="bold cyan"), show_header=False)
    table.add_column("figure", style="dim")
    table.add_column("value")
    shape = "×".join(map(str, summary.shape)) if summary.shape else "?"
    table.add_row("kind, shape", Text(f"{summary.kind or '?'}, {shape}"))
    table.add_row(
        "neurons",
        f"{summary.explained} explained of {summary.units}: "
        f"{summary.labeled} labeled, {summary.dead} dead"
        + (f", {summary.unexplained} unexplained" if summary.unexplained else ""),
    )
    frequent = ", ".join(f"{c} ({n})" for c, n in summary.top_concepts)
    table.add_row("frequent concepts", Text(f"{frequent or '—'}  [{summary.distinct} distinct]"))
    quantiles = summary.score_quantiles()
    spread = ", ".join(f"{k} {format_value(v)}" for k, v in quantiles.items())
    table.add_row("top scores", spread or "—")
    table.add_row("distribution", sparkline(summary.scores) or "—")
    similarity = (
        format_value(sorted(summary.similarities)[len(summary.similarities) // 2])
        if summary.similarities
        else "—"
    )
    table.add_row("median similarity", similarity)
    if summary.measured:
        table.add_row("character", Text(character_line(summary)))
    return table


def verified_phrase(neuron: NeuronExplanation) -> str:
    """How a verified description was tested ('' when it was not).

    Examples:
        >>> n = NeuronExplanation("fc", 0, [["red", 0.3]], verified={
        ...     "description": "red", "score": 3.1, "heldout_r": 0.31, "exemplar_z": 1.2,
        ...     "images": 100, "rounds": 2, "rejected": [["blue", 1, 0.1, 0.2, 0.9]] * 7})
        >>> print(verified_phrase(n).replace("; ", ";\\n"))
        verified 'red': r = 0.31 on 100 held-out images, exemplar z = 1.2, score 3.1;
        beat 7 other candidates in 2 rounds
    """
    record = neuron.verified
    if not record:
        return ""

    def shown(key: str) -> str:
        value = record.get(key)
        return "—" if value is None else format_value(value)

    others = len(record.get("rejected") or [])
    rounds = record.get("rounds")
    if neuron.unexplained:
        return (
            f"{others + 1} candidate description{'s' if others else ''} tested in {rounds} "
            f"round{'s' if rounds != 1 else ''}; the best, '{record.get('description')}' "
            f"(score {shown('score')}), is not a label: no concept passed the label test"
        )
    text = (
        f"verified '{record.get('description')}': r = {shown('heldout_r')} on "
        f"{record.get('images')} held-out images, exemplar z = {shown('exemplar_z')}, "
        f"score {shown('score')}; beat {others} other candidate{'s' if others != 1 else ''} "
        f"in {rounds} round{'s' if rounds != 1 else ''}"
    )
    if record.get("kept") == "scorer":
        text += " (no proposed candidate tested better than the scorer's label)"
    if record.get("stopped"):
        text += f" (stopped: {record['stopped']})"
    if record.get("saw_images") is False:
        text += " (the model saw no image: candidates from the ranked concepts)"
    return text


def character_phrase(neuron: NeuronExplanation) -> str:
    """A unit's clarity, exemplar groups and redundancy in words ('' when not measured).

    Examples:
        >>> n = NeuronExplanation("fc", 0, [["red", 1.0]], clarity=0.2, redundancy=1,
        ...                       groups=[["red", 6, 0.9], ["green", 4, 0.8]])
        >>> print(character_phrase(n).replace(" · ", "\\n"))
        clarity 0.2
        polysemantic, 2 exemplar groups: 'red' (6), 'green' (4)
        1 other unit shares its label
    """
    parts = []
    if neuron.clarity is not None:
        parts.append(f"clarity {format_value(neuron.clarity)}")
    if neuron.groups:
        groups = ", ".join(f"'{concept}' ({size})" for concept, size, _ in neuron.groups)
        many = len(neuron.groups) > 1
        parts.append(
            ("polysemantic, " if many else "")
            + f"{len(neuron.groups)} exemplar group{'s' if many else ''}: {groups}"
        )
    if neuron.redundancy:
        other = "other unit shares" if neuron.redundancy == 1 else "other units share"
        parts.append(f"{neuron.redundancy} {other} its label")
    return " · ".join(parts)


def character_line(summary: LayerSummary) -> str:
    """Clarity spread, polysemantic and redundant units of a layer, in one line.

    Examples:
        >>> s = LayerSummary("fc", "vector", [3], 3, 3, 0, clarities=[0.1, 0.5, 0.9],
        ...                  polysemantic=1, redundant=2, measured=3)
        >>> character_line(s)
        'clarity median 0.5 (p25 0.3, p75 0.7) · 1 of 3 polysemantic · 2 redundant'
    """
    parts = []
    spread = quantiles(summary.clarities)
    if spread:
        parts.append(
            f"clarity median {format_value(spread['median'])} (p25 "
            f"{format_value(spread['p25'])}, p75 {format_value(spread['p75'])})"
        )
    parts.append(f"{summary.polysemantic} of {summary.measured} polysemantic")
    parts.append(f"{summary.redundant} redundant")
    return " · ".join(parts)


def sparkline(values: list[float], bins: int = 24) -> str:
    """A one-line histogram of ``values`` with block characters.

    Args:
        values: Numbers.
        bins: Characters in the line.

    Returns:
        ``low ▁▃█▅▂ high``, or an empty string for no values.

    Examples:
        >>> sparkline([0.0, 1.0, 1.0, 2.0], bins=3)
        '0 ▄█▄ 2'
    """
    counts, edges = histogram(values, bins)
    if not counts:
        return ""
    peak = max(counts)
    bars = "".join(
        " " if c == 0 else _SPARKS[min(len(_SPARKS) - 1, (c * len(_SPARKS) - 1) // peak)]
        for c in counts
    )
    return f"{format_value(edges[0])} {bars} {format_value(edges[-1])}"


def figure_table(table: FigureTable, result: LabelingResult | None = None) -> Table:
    """A rich table of evaluation figures; neuron rows get the neuron's label.

    Args:
        table: From :func:`~neurolabel.plugin_core.reporting.tables.tabulate`.
        result: The result, to label rows that name a ``layer`` and ``unit``.

    Returns:
        A :class:`rich.table.Table`.

    Examples:
        >>> figure_table(FigureTable("accuracy", ["name", "value"], [["top1", 0.5]])).row_count
        1
    """
    # A terminal is narrow: nested cells and columns past eight go (the HTML report has them).
    table = table.compact(8)
    keys = neuron_keys(table) if result is not None else None
    unit_at = table.columns.index("unit") if keys is not None else -1
    add_label = keys is not None and "label" not in table.columns
    columns = list(table.columns)
    if add_label:
        columns.insert(unit_at + 1, "label")
    notes = []
    if table.more:
        notes.append(f"{table.more} more rows")
    if table.more_columns:
        notes.append(f"{table.more_columns} more columns")
    rich_table = Table(
        title=Text(table.title, style="bold"),
        caption=Text("; ".join(notes), style="dim") if notes else None,
    )
    for column in columns:
        rich_table.add_column(Text(column), overflow="fold")
    for row_index, raw in enumerate(table.rows):
        cells = [Text(format_cell(value), justify=_justify(value)) for value in raw]
        if add_label:
            key = keys[row_index]  # type: ignore[index]
            label = _label(result, *key) if key and result is not None else ""
            cells.insert(unit_at + 1, Text(label, style="bold"))
        rich_table.add_row(*cells)
    return rich_table


def metrics_report(
    result: LabelingResult, layer: str | None = None, names: Sequence[str] | None = None
) -> list[Table]:
    """Rich tables of ``result.metrics`` (all of it, or the figures of one layer).

    Args:
        result: The labeling result.
        layer: Only the figures scoped to this layer (docs/reports.md's conventions).
        names: Only these metrics (e.g. the ones just evaluated).

    Returns:
        Tables, possibly none.

    Examples:
        >>> r = LabelingResult({}, {}, {}, metrics={"accuracy": {"top1": 0.5}})
        >>> [t.row_count for t in metrics_report(r)]
        [1]
    """
    if layer is None:
        tables = [
            # Per-unit rows can run to thousands: `--neuron` shows each neuron's own.
            t.head(MAX_NEURON_ROWS // 2) if neuron_keys(t) is not None else t
            for name, value in result.metrics.items()
            if names is None or name in names
            for t in tabulate_figures(value, name)
        ]
    else:
        tables = scoped_figures(result.metrics, list(result.neurons))[0].get(layer, [])
    return [figure_table(t, result) for t in tables]


def layer_report(
    result: LabelingResult, layer: str | None = None, limit: int | None = 20, concepts: int = 3
) -> Group:
    """The terminal report: run line, then per layer its summary and neuron table, then
    the evaluation figures.

    Args:
        result: The labeling result.
        layer: Only this layer (and only its evaluation figures).
        limit: Neuron rows per layer at most (None = all).
        concepts: Ranked concepts per neuron row.

    Returns:
        A :class:`rich.console.Group` to print.

    Examples:
        >>> from rich.console import Console
        >>> neuron = NeuronExplanation("fc", 0, [["dog", 1.0]])
        >>> r = LabelingResult({"name": "m"}, {}, {"fc": [neuron]})
        >>> console = Console(width=120)
        >>> with console.capture() as capture:
        ...     console.print(layer_report(r))
        >>> "dog" in capture.get()
        True
    """
    parts: list[RenderableType] = [Text(run_line(result), style="dim")]
    for caution in result.settings.get("warnings") or []:
        parts.append(Text(f"Warning: {caution}", style="yellow"))
    for name in result.neurons:
        if layer is not None and name != layer:
            continue
        parts.append(layer_summary_table(summarize_layer(result, name)))
        parts.append(result_table(result, layer=name, limit=limit, concepts=concepts))
        if layer is not None:
            parts.extend(metrics_report(result, layer=name))
    if layer is None and result.metrics:
        parts.append(Text("evaluation", style="bold underline"))
        parts.extend(metrics_report(result))
    return Group(*parts)


def run_line(result: LabelingResult) -> str:
    """One line about the run: model, scorer, vocabulary, aggregation, images.

    Args:
        result: The labeling result.

    Returns:
        The text (layer names are left out: a one-layer report names only its layer).

    Examples:
        >>> run_line(LabelingResult({"name": "m"}, {}, {}, settings={"scorer": "color"}))
        'm · scorer color'
    """
    settings, dataset = result.settings, result.dataset
    parts = [str(result.model.get("name") or "?")]
    for key in ("scorer", "vocabulary", "aggregation"):
        if settings.get(key):
            parts.append(f"{key} {settings[key]}")
    units = unit_map_line(result)
    if units:
        parts.append(units)
    if dataset.get("num_used") is not None:
        skipped = dataset.get("num_skipped") or 0
        parts.append(f"{dataset['num_used']} images" + (f" ({skipped} skipped)" if skipped else ""))
    return " · ".join(parts)


def parse_neuron(text: str) -> tuple[str, int]:
    """Read ``LAYER:UNIT`` (the last colon splits, so layer names may hold colons).

    Args:
        text: e.g. ``layer4:17``.

    Returns:
        ``(layer, unit)``.

    Examples:
        >>> parse_neuron("blocks.3:17")
        ('blocks.3', 17)
    """
    layer, _, unit = text.rpartition(":")
    if not layer or not unit.strip().isdigit():
        raise NeurolabelError(f"--neuron {text!r}: write LAYER:UNIT, e.g. layer4:17")
    return layer, int(unit)


def neuron_json(
    result: LabelingResult,
    layer: str,
    unit: int,
    folder: str | Path | None = None,
    image_root: str | Path | None = None,
) -> dict[str, Any]:
    """One neuron's explanation as JSON, with its exemplar files resolved.

    Args:
        result: The labeling result.
        layer: Layer name.
        unit: Unit index.
        folder: The result folder (patch paths are relative to it).
        image_root: The probing folder, when it moved since the result recorded it.

    Returns:
        ``NeuronExplanation.to_dict()`` plus ``patch_file`` and ``image_file`` (absolute
        paths of the patch and the source image, when found) per exemplar and ``metrics``
        (the figures scoped to the neuron).

    Examples:
        >>> r = LabelingResult({}, {}, {"fc": [NeuronExplanation("fc", 0, [["dog", 1.0]])]})
        >>> neuron_json(r, "fc", 0)["description"]
        'dog'
    """
    neuron = result.explanation(layer, unit)
    data = neuron.to_dict()
    files = ResultFiles.of(result, folder, image_root)
    for exemplar, item in zip(neuron.exemplars, data["exemplars"], strict=True):
        item["patch_file"] = _found(files.patch(exemplar.patch))
        item["image_file"] = _found(files.image(exemplar.image))
    figures = scoped_figures(result.metrics, list(result.neurons))[1].get((layer, unit), [])
    data["metrics"] = [{"title": t.title, "columns": t.columns, "rows": t.rows} for t in figures]
    return data


def neuron_report(
    result: LabelingResult,
    layer: str,
    unit: int,
    folder: str | Path | None = None,
    image_root: str | Path | None = None,
) -> Group:
    """One neuron in detail: concepts with score bars, summary, stats, exemplar files,
    evaluation figures.

    Args:
        result: The labeling result.
        layer: Layer name.
        unit: Unit index.
        folder: The result folder (patch paths are relative to it).
        image_root: The probing folder, when it moved since the result recorded it.

    Returns:
        A :class:`rich.console.Group` to print.

    Examples:
        >>> from rich.console import Console
        >>> r = LabelingResult({}, {}, {"fc": [NeuronExplanation("fc", 0, [["dog", 1.0]])]})
        >>> console = Console(width=100)
        >>> with console.capture() as capture:
        ...     console.print(neuron_report(r, "fc", 0))
        >>> "dog" in capture.get()
        True
    """
    neuron = result.explanation(layer, unit)
    heading = Text.assemble(
        (f"{layer}:{unit}  ", "bold cyan"),
        ("(dead: never varied, no label)" if neuron.dead else neuron.description, "bold"),
    )
    parts: list[RenderableType] = [heading]
    if neuron.p_value is not None:
        verdict = (
            "no concept fits better than chance: the ranking below is not a label"
            if neuron.unexplained
            else "the label is significant"
        )
        parts.append(
            Text(
                f"label p = {format_p(neuron.p_value)}, corrected across the vocabulary and the "
                f"layer's units ({verdict}); the p column below is corrected across the "
                "vocabulary only",
                style="dim",
            )
        )
    classes = result.model.get("class_names") or []
    info = result.layers.get(layer, {})
    if classes and info.get("kind") == "vector" and info.get("units") == len(classes):
        if 0 <= unit < len(classes):
            parts.append(Text(f"output unit of class: {classes[unit]}", style="dim"))
    if neuron.summary:
        parts.append(Text(neuron.summary, style="italic"))
    if neuron.described:
        labels = ", ".join(str(label) for label, _ in neuron.described)
        parts.append(Text(f"describer: {labels}", style="dim"))
    if neuron.concepts:
        parts.append(_concepts_table(neuron))
    if neuron.similarity is not None:
        similarity = format_value(neuron.similarity)
        parts.append(Text(f"similarity of the description with the exemplar patches: {similarity}"))
    character = character_phrase(neuron)
    if character:
        parts.append(Text(character))
    tested = verified_phrase(neuron)
    if tested:
        parts.append(Text(tested))
    facts = [f"{k} {format_value(v)}" for k, v in neuron.stats.items()]
    if facts:
        parts.append(Text("activation over the probing images: " + ", ".join(facts), style="dim"))
    if neuron.exemplars:
        parts.append(_exemplars_table(neuron, ResultFiles.of(result, folder, image_root)))
    figures = scoped_figures(result.metrics, list(result.neurons))[1].get((layer, unit), [])
    parts.extend(figure_table(t) for t in figures)
    return Group(*parts)


def _concepts_table(neuron: NeuronExplanation) -> Table:
    table = Table(title="concepts", title_justify="left")
    table.add_column("#", justify="right")
    table.add_column("concept", style="bold")
    table.add_column("score", justify="right")
    tested = neuron.p_values is not None
    if tested:
        table.add_column("p", justify="right")
    table.add_column("")
    scores = [float(s) for _, s in neuron.concepts if isinstance(s, (int, float))]
    low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
    span = high - low or 1.0
    for rank, (concept, score) in enumerate(neuron.concepts, start=1):
        filled = 0
        if isinstance(score, (int, float)):
            filled = max(1, round(_BAR * (float(score) - low) / span))
        p = neuron.p_values[rank - 1] if neuron.p_values and rank <= len(neuron.p_values) else None
        table.add_row(
            str(rank),
            Text(str(concept)),
            format_value(score),
            *([format_p(p)] if tested else []),
            Text("█" * filled + "░" * (_BAR - filled), style="blue"),
        )
    return table


def significance_summary(result: LabelingResult) -> str | None:
    """One sentence: how many live units got a significant label (None when untested).

    Examples:
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> units = [NeuronExplanation("fc", 0, [["dog", 1.0]], p_value=0.01),
        ...          NeuronExplanation("fc", 1, [["cat", 0.2]], p_value=0.4, unexplained=True)]
        >>> r = LabelingResult({}, {}, {"fc": units}, settings={"significance": 0.05})
        >>> significance_summary(r).split(";")[0].split(": ")[1]
        '1 of 2 live units'
    """
    live = [n for ns in result.neurons.values() for n in ns if not n.dead]
    tested = [n for n in live if n.p_value is not None]
    if not tested:
        return None
    significant = sum(1 for n in tested if not n.unexplained)
    level = result.settings.get("significance", 0.05)
    text = (
        f"Significant labels (p <= {level} after the vocabulary and false-discovery-rate "
        f"corrections): {significant} of {len(live)} live units"
    )
    if significant < len(tested):
        text += (
            "; the others are (unexplained), their best-ranked concepts kept as candidates. "
            "A few hundred probing images, several per concept, give the test evidence to "
            "work with (docs/significance.md)"
        )
    return text + "."


def format_p(p: float | None) -> str:
    """A p-value for a table: two significant digits, ``—`` when untested.

    Examples:
        >>> format_p(0.000499), format_p(0.31), format_p(None)
        ('0.0005', '0.31', '—')
    """
    return "—" if p is None else f"{p:.2g}"


def _exemplars_table(neuron: NeuronExplanation, files: ResultFiles) -> Table:
    # Every path relative to its folder, both folders named once under the table.
    where = []
    if files.root is not None:
        where.append(f"images in {files.root}")
    if files.folder is not None:
        where.append(f"patches in {files.folder}")
    table = Table(
        title="exemplars",
        title_justify="left",
        caption=Text("; ".join(where), style="dim") if where else None,
        caption_justify="left",
    )
    for column in ("rank", "activation", "image", "box", "patch"):
        table.add_column(column, overflow="fold", justify="right" if column == "rank" else "left")
    for rank, exemplar in enumerate(neuron.exemplars, start=1):
        missing = exemplar.patch and files.folder is not None and not files.patch(exemplar.patch)
        patch = (exemplar.patch or "—") + (" (missing)" if missing else "")
        table.add_row(
            str(rank),
            format_value(exemplar.activation),
            Text(exemplar.image),
            "whole image" if exemplar.box is None else ", ".join(map(str, exemplar.box)),
            Text(patch),
        )
    return table


def _found(path: Path | None) -> str | None:
    return None if path is None else str(path.resolve())


def _label(result: LabelingResult, layer: Any, unit: Any) -> str:
    try:
        return result.explanation(str(layer), int(unit)).description
    except (ValueError, TypeError, NeurolabelError):  # a row naming no explained neuron
        return ""


def _justify(value: Any) -> Literal["left", "right"]:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return "right" if number else "left"
