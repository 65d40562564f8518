"""Two results side by side (``neurolabel compare``, ``report A --compare B``): terminal
tables and the HTML report's section, from
:func:`~neurolabel.plugin_core.data.unit_search.compare_results`."""

from __future__ import annotations

from html import escape
from typing import Any

from rich.table import Table
from rich.text import Text


def _summary_line(comparison: dict[str, Any]) -> str:
    f = comparison["figures"]

    def share(value: float | None) -> str:
        return "—" if value is None else f"{round(100 * value)} %"

    counted = "live units" if f.get("unexplained_counted") else "units with a significant label"
    return (
        f"A: {f['concepts_a']} concepts on {f['labeled_units_a']} {counted}, "
        f"{share(f['shared_share_a'])} shared · B: {f['concepts_b']} concepts on "
        f"{f['labeled_units_b']} {counted}, {share(f['shared_share_b'])} shared · "
        f"synonyms: text cosine ≥ {f['synonym']} ({comparison.get('text', '?')})"
    )


def empty_hint(comparison: dict[str, Any]) -> str | None:
    """What to do when a side has nothing to compare (no significant label), or None."""
    f = comparison["figures"]
    if f.get("unexplained_counted") or (f["labeled_units_a"] and f["labeled_units_b"]):
        return None
    sides = [s for s, key in (("A", "labeled_units_a"), ("B", "labeled_units_b")) if not f[key]]
    return (
        f"No unit of {' nor '.join(sides)} has a significant label (all are unexplained or "
        "dead): add --unexplained to compare every live unit by its best-ranked concept."
    )


def comparison_tables(
    comparison: dict[str, Any], name_a: str, name_b: str, rows: int = 15
) -> list[Table | Text]:
    """Terminal tables of a comparison: summary, shared, only A, only B, pairs, coverage.

    Args:
        comparison: From ``compare_results``.
        name_a: What A is (its path).
        name_b: What B is.
        rows: Rows per table.

    Returns:
        Renderables to print in order.
    """
    out: list[Table | Text] = [
        Text(f"A = {name_a}\nB = {name_b}", style="bold"),
        Text(_summary_line(comparison), style="dim"),
    ]
    hint = empty_hint(comparison)
    if hint:
        return [*out, Text(hint, style="yellow")]
    shared = Table(title="concepts in both")
    for column in ("concept in A", "in B", "units A", "units B", "cosine"):
        shared.add_column(
            column, justify="right" if column.startswith(("units", "cos")) else "left"
        )
    for row in comparison["shared"][:rows]:
        same = row["in_b"] == row["concept"]
        shared.add_row(
            Text(row["concept"]),
            Text("=" if same else row["in_b"]),
            str(row["units_a"]),
            str(row["units_b"]),
            f"{row['similarity']:.2f}",
        )
    out.append(shared)
    for key, title in (("only_a", "concepts in A only"), ("only_b", "concepts in B only")):
        table = Table(title=title)
        table.add_column("concept")
        table.add_column("units", justify="right")
        for row in comparison[key][:rows]:
            table.add_row(Text(row["concept"]), str(row["units"]))
        more = len(comparison[key]) - rows
        if more > 0:
            table.caption = f"{more} more"
        elif not comparison[key]:
            table.caption = "none"
        out.append(table)
    pairs = Table(title="best-matching unit pairs")
    for column in ("A unit", "B unit", "concept", "cosine"):
        pairs.add_column(column, justify="right" if column == "cosine" else "left")
    for row in comparison["pairs"][:rows]:
        pairs.add_row(
            Text(f"{row['a'][0]}:{row['a'][1]}"),
            Text(f"{row['b'][0]}:{row['b'][1]}"),
            Text(row["concept"]),
            f"{row['similarity']:.2f}",
        )
    out.append(pairs)
    coverage = Table(title="labeled units per concept category")
    for column in ("category", "A", "B"):
        coverage.add_column(column, justify="left" if column == "category" else "right")
    for category, counts in comparison["coverage"].items():
        coverage.add_row(Text(category), str(counts["a"]), str(counts["b"]))
    out.append(coverage)
    return out


def comparison_html(comparison: dict[str, Any], name_b: str, rows: int = 50) -> str:
    """The HTML report's comparison section (every text escaped).

    Args:
        comparison: From ``compare_results`` (this report's result as A).
        name_b: What B is.
        rows: Rows per table.

    Returns:
        An HTML fragment.
    """

    def table(head: list[str], body: list[list[Any]]) -> str:
        cells = "".join(f"<th>{escape(h)}</th>" for h in head)
        lines = "".join(
            "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in line) + "</tr>" for line in body
        )
        return f"<div class='tablewrap'><table><tr>{cells}</tr>{lines}</table></div>"

    hint = empty_hint(comparison)
    parts = [
        f"<p class='note'>B = {escape(name_b)}</p>",
        f"<p class='note'>{escape(_summary_line(comparison))}</p>",
        f"<p class='warning'>{escape(hint)}</p>" if hint else "",
        "<h3>Concepts in both</h3>",
        table(
            ["concept in A", "in B", "units A", "units B", "cosine"],
            [
                [
                    r["concept"],
                    "=" if r["in_b"] == r["concept"] else r["in_b"],
                    r["units_a"],
                    r["units_b"],
                    f"{r['similarity']:.2f}",
                ]
                for r in comparison["shared"][:rows]
            ],
        ),  # fmt: skip
        "<h3>In this result only</h3>",
        table(
            ["concept", "units"], [[r["concept"], r["units"]] for r in comparison["only_a"][:rows]]
        ),
        "<h3>In B only</h3>",
        table(
            ["concept", "units"], [[r["concept"], r["units"]] for r in comparison["only_b"][:rows]]
        ),
        "<h3>Best-matching unit pairs</h3>",
        table(
            ["unit here", "unit in B", "concept", "cosine"],
            [
                [
                    f"{r['a'][0]}:{r['a'][1]}",
                    f"{r['b'][0]}:{r['b'][1]}",
                    r["concept"],
                    f"{r['similarity']:.2f}",
                ]
                for r in comparison["pairs"][:rows]
            ],
        ),  # fmt: skip
        "<h3>Labeled units per concept category</h3>",
        table(
            ["category", "here", "B"],
            [[c, n["a"], n["b"]] for c, n in comparison["coverage"].items()],
        ),
    ]
    return "".join(parts)
