"""Report plots drawn with matplotlib and embedded as PNG ``data:`` URIs.

matplotlib is an optional dependency (the ``offline`` and ``test`` extras): without it
every function returns None and reports show their tables alone.
"""

from __future__ import annotations

import base64
import io
import math
from typing import Any

from .tables import FigureTable, format_cell

_BLUE = "#4c72b0"
_PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


def plots_available() -> bool:
    """True when matplotlib can be imported.

    Examples:
        >>> isinstance(plots_available(), bool)
        True
    """
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def score_histogram(scores: list[float], label: str = "top-concept score") -> str | None:
    """Histogram of neurons' top-concept scores.

    Args:
        scores: One score per labeled neuron.
        label: x-axis label.

    Returns:
        A PNG data URI, or None (no scores, or no matplotlib).

    Examples:
        >>> score_histogram([]) is None
        True
    """
    if not scores:
        return None
    figure = _figure((3.9, 2.1))
    if figure is None:
        return None
    axes = figure.subplots()
    axes.hist(scores, bins=min(30, max(5, len(scores) // 4)), color=_BLUE)
    axes.set_xlabel(label)
    axes.set_ylabel("neurons")
    axes.set_title("distribution of top-concept scores", fontsize=9)
    return _png(figure)


def concept_bars(counts: list[tuple[str, int]]) -> str | None:
    """Horizontal bars of the most frequent top concepts.

    Args:
        counts: ``(concept, neurons)`` pairs, most frequent first.

    Returns:
        A PNG data URI, or None (no concepts, or no matplotlib).

    Examples:
        >>> concept_bars([]) is None
        True
    """
    if not counts:
        return None
    figure = _figure((3.9, 0.6 + 0.2 * len(counts)))
    if figure is None:
        return None
    axes = figure.subplots()
    names = [_short(c) for c, _ in counts][::-1]
    axes.barh(range(len(counts)), [n for _, n in counts][::-1], color=_BLUE)
    axes.set_yticks(range(len(counts)), names, fontsize=8)
    axes.set_xlabel("neurons")
    axes.set_title("most frequent top concepts", fontsize=9)
    return _png(figure)


def table_bars(table: FigureTable, max_series: int = 4) -> str | None:
    """Grouped horizontal bars of a table's numeric columns, one group per row.

    Suits ablation tables (drop for labeled vs random units per class), figures per
    layer, and the neurons behind a prediction.

    Args:
        table: A table whose :meth:`FigureTable.plottable` is true.
        max_series: Numeric columns drawn at most.

    Returns:
        A PNG data URI, or None (not plottable, or no matplotlib).

    Examples:
        >>> table_bars(FigureTable("t", ["name", "value"], [["a", 1.0]])) is None
        True
    """
    if not table.plottable():
        return None
    series = _same_scale(table, table.series_columns())[:max_series]
    figure = _figure((4.8, 0.7 + 0.2 * len(table.rows) * max(1, len(series) * 0.7)))
    if figure is None:
        return None
    axes = figure.subplots()
    count = len(table.rows)
    height = 0.8 / len(series)
    for offset, column in enumerate(series):
        values = [_number(row[column]) for row in table.rows][::-1]
        # The first series on top of its group, as in the legend.
        positions = [i + ((len(series) - 1) / 2 - offset) * height for i in range(count)]
        axes.barh(
            positions,
            values,
            height=height,
            color=_PALETTE[offset % len(_PALETTE)],
            label=_short(table.columns[column]),
        )
    label = table.label_column()
    labels = [_short(format_cell(row[label])) for row in table.rows][::-1]
    axes.set_yticks(range(count), labels, fontsize=8)
    axes.axvline(0, color="#888", linewidth=0.6)
    if len(series) > 1:
        axes.legend(fontsize=7, loc="best")
    else:
        axes.set_xlabel(_short(table.columns[series[0]], 60))
    return _png(figure)


def _figure(size: tuple[float, float]) -> Any:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return None
    # A bare Figure (no pyplot): no global state, no GUI backend, safe in any thread.
    figure = Figure(figsize=size, dpi=96, layout="constrained")
    return figure


def _png(figure: Any) -> str:
    import warnings

    buffer = io.BytesIO()
    # Labels are untrusted text: a control character in one has no glyph, and matplotlib's
    # warning about it would carry the raw byte to the terminal.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from font")
        figure.savefig(buffer, format="png", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _same_scale(table: FigureTable, columns: list[int]) -> list[int]:
    """The columns within 10x the magnitude of the first: a ratio beside drops would
    flatten them to nothing."""

    def magnitude(column: int) -> float:
        return max((abs(_number(row[column])) for row in table.rows), default=0.0)

    if not columns:
        return []
    first = magnitude(columns[0]) or 1.0
    rest = [c for c in columns[1:] if magnitude(c) <= 10 * first and magnitude(c) * 10 >= first]
    return [columns[0], *rest]


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _short(text: str, width: int = 28) -> str:
    text = text if len(text) <= width else text[: width - 1] + "…"
    # A '$' would start matplotlib's mathtext: concepts such as "$5 bill" must stay text.
    return text.replace("$", r"\$")
