"""Terminal views of a result (rich tables)."""

from __future__ import annotations

from rich.table import Table

from .result import LabelingResult


def result_table(
    result: LabelingResult, layer: str | None = None, limit: int | None = 20, concepts: int = 3
) -> Table:
    """A rich table of neurons: layer, unit, top concepts with scores, top activation.

    Args:
        result: The labeling result.
        layer: Only this layer (default: all).
        limit: Rows per layer at most (None = all).
        concepts: Ranked concepts shown per neuron.

    Returns:
        A :class:`rich.table.Table` to print with a rich console.
    """
    table = Table(title=f"neurolabel: {result.model.get('name', '?')}", show_lines=False)
    table.add_column("layer", style="cyan", no_wrap=True)
    table.add_column("unit", justify="right")
    table.add_column("description", style="bold")
    table.add_column("runners-up")
    table.add_column("score", justify="right")
    table.add_column("max act.", justify="right")
    for name, neurons in result.neurons.items():
        if layer is not None and name != layer:
            continue
        shown = neurons if limit is None else neurons[:limit]
        for neuron in shown:
            top = neuron.top(concepts)
            runners = ", ".join(c for c, _ in top[1:])
            score = "" if neuron.score is None else f"{neuron.score:.3g}"
            peak = neuron.stats.get("max")
            table.add_row(
                name,
                str(neuron.unit),
                neuron.summary or neuron.description if not neuron.dead else "[dim](dead)[/dim]",
                runners,
                score,
                "" if peak is None else f"{peak:.3g}",
            )
        if limit is not None and len(neurons) > limit:
            table.add_row(name, "…", f"[dim]{len(neurons) - limit} more units[/dim]", "", "", "")
    return table
