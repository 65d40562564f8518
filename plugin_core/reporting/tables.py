"""Evaluation figures as tables: free-form ``result.metrics`` turned into rows and columns.

Evaluators store whatever JSON they like under ``result.metrics[NAME]``. The terminal and
HTML reports both render it through :func:`tabulate`, which never fails on an unexpected
shape: nested dicts become tables, lists of dicts become tables, everything else becomes a
formatted cell. :func:`scoped_figures` finds the parts that belong to one layer or one
neuron (by the conventions of docs/reports.md) so reports can show them in place.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: Rows shown per table; the rest are counted in :attr:`FigureTable.more`.
MAX_ROWS = 200
#: Columns shown per table; wider records are cut (counted in ``more_columns``).
MAX_COLUMNS = 20
#: Lists of at most this many scalars are shown in one cell instead of a table.
SHORT_LIST = 8
#: Rows of a table of neurons shown in a whole-result view; all rows are on each neuron.
MAX_NEURON_ROWS = 50
#: Keys that only group figures by scope; titles leave them out.
_SCOPE_KEYS = {"layers", "neurons", "units", "per_layer", "per_unit", "per_neuron"}


@dataclass
class FigureTable:
    """One table of evaluation figures.

    Args:
        title: Where the figures come from, e.g. ``ablation › classes``.
        columns: Column names.
        rows: Raw cell values (format them with :func:`format_cell`).
        more: Rows left out (beyond :data:`MAX_ROWS`).
        more_columns: Columns left out (beyond :data:`MAX_COLUMNS`).
        layer: The layer the rows' ``unit`` column refers to, when the table has no
            ``layer`` column (figures of a dict that names its layer).
    """

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    more: int = 0
    more_columns: int = 0
    layer: str | None = None

    def head(self, rows: int) -> FigureTable:
        """A copy with at most ``rows`` rows (the rest counted in :attr:`more`).

        Examples:
            >>> t = FigureTable("t", ["a"], [[1], [2], [3]]).head(2)
            >>> t.rows, t.more
            ([[1], [2]], 1)
        """
        kept = self.rows[:rows]
        more = self.more + len(self.rows) - len(kept)
        return FigureTable(self.title, self.columns, kept, more, self.more_columns, self.layer)

    def compact(self, max_columns: int = 10) -> FigureTable:
        """A copy for narrow displays: only columns of plain cells, at most ``max_columns``.

        Examples:
            >>> t = FigureTable("t", ["a", "b", "c"], [[1, {"x": [1] * 20}, 2]]).compact(1)
            >>> t.columns, t.rows, t.more_columns
            (['a'], [[1]], 2)
        """
        plain = [i for i in range(len(self.columns)) if all(_is_cell(row[i]) for row in self.rows)]
        keep = plain[:max_columns]
        return FigureTable(
            self.title,
            [self.columns[i] for i in keep],
            [[row[i] for i in keep] for row in self.rows],
            self.more,
            self.more_columns + len(self.columns) - len(keep),
            self.layer,
        )

    def formatted(self) -> list[list[str]]:
        """The rows with every cell formatted as text."""
        return [[format_cell(cell) for cell in row] for row in self.rows]

    def numeric_columns(self) -> list[int]:
        """Indices of the columns whose cells are mostly numbers."""
        found = []
        for index in range(len(self.columns)):
            cells = [row[index] for row in self.rows if row[index] is not None]
            numbers = [c for c in cells if _is_number(c)]
            if numbers and len(numbers) >= 0.8 * len(cells):
                found.append(index)
        return found

    def label_column(self) -> int:
        """The column that names the rows: the first one holding only text, else the first."""
        for index in range(len(self.columns)):
            cells = [row[index] for row in self.rows if row[index] is not None]
            if cells and all(isinstance(c, str) for c in cells):
                return index
        return 0

    def series_columns(self) -> list[int]:
        """Numeric columns worth plotting: measured values (with floats), not ids or counts."""
        label = self.label_column()
        return [
            index
            for index in self.numeric_columns()
            if index != label and any(isinstance(row[index], float) for row in self.rows)
        ]

    def plottable(self) -> bool:
        """True when a bar chart makes sense: 2–40 named rows with a measured column.

        A ``name, value`` table is plotted only when every value is a float: such tables
        often mix fractions with counts (``top1``, ``units``), which share no scale.

        Examples:
            >>> FigureTable("t", ["class", "n", "drop"], [["a", 3, 0.2], ["b", 4, 0.1]]).plottable()
            True
            >>> FigureTable("t", ["name", "value"], [["top1", 0.5], ["units", 10]]).plottable()
            False
        """
        if not 2 <= len(self.rows) <= 40 or not self.series_columns():
            return False
        if self.columns == ["name", "value"]:
            return all(isinstance(row[1], float) for row in self.rows)
        return True


def format_value(value: Any) -> str:
    """Format one number or scalar for a report.

    Args:
        value: Any JSON scalar (numbers get 4 significant digits, None a dash).

    Returns:
        The text.

    Examples:
        >>> [format_value(v) for v in (0.123456, 12, True, None, 1234567.0, float("nan"))]
        ['0.1235', '12', 'yes', '—', '1.235e+06', 'nan']
    """
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def format_cell(value: Any, width: int = 80) -> str:
    """Format a table cell: scalars as :func:`format_value`, short lists joined, the rest
    as compact JSON cut to ``width`` characters.

    Args:
        value: Cell value.
        width: Longest text for a nested value.

    Returns:
        The text.

    Examples:
        >>> format_cell([0.5, 1, "a"])
        '0.5, 1, a'
        >>> format_cell({"a": 1})
        '{"a": 1}'
    """
    value = _plain(value)
    if value == [] or value == {}:
        return "—"
    if isinstance(value, list) and all(_is_scalar(v) for v in value):
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, (list, dict)):
        text = json.dumps(value, default=str)
        return text if len(text) <= width else text[: width - 1] + "…"
    return format_value(value)


def tabulate(
    value: Any, title: str, max_rows: int = MAX_ROWS, layer: str | None = None
) -> list[FigureTable]:
    """Turn any JSON-like value into tables, whatever its shape.

    A dict's scalar items become a ``name, value`` table; two or more dict items whose
    values are all scalars become one wide table (a row per item); a list of dicts becomes
    a table with the union of their keys as columns; a list of short lists (``[concept,
    weight]`` pairs) a table of those rows; deeper values recurse with ``title › key``
    titles.

    Args:
        value: The figures (``result.metrics[NAME]`` or part of it).
        title: Title of the top table.
        max_rows: Rows kept per table.
        layer: The layer that ``unit`` columns refer to (a dict's own ``layer`` field
            takes over for what it holds).

    Returns:
        The tables, in document order (empty for an empty value).

    Examples:
        >>> [t.columns for t in tabulate({"top1": 0.8, "units": 10}, "accuracy")]
        [['name', 'value']]
        >>> t = tabulate({"layer4": {"r": 0.4}, "fc": {"r": 0.9}}, "faithfulness")[0]
        >>> t.columns, t.rows
        (['name', 'r'], [['layer4', 0.4], ['fc', 0.9]])
        >>> tabulate([{"class": "dog", "drop": 0.3}], "ablation")[0].rows
        [['dog', 0.3]]
        >>> tabulate([["dog", 0.5], ["cat", 0.25]], "weights")[0].columns
        ['name', 'value']
    """
    value = _plain(value)
    if value is None or value == {} or value == []:
        return []
    if _is_scalar(value):
        return [FigureTable(title, ["value"], [[value]], layer=layer)]
    if isinstance(value, dict):
        return _tabulate_dict(value, title, max_rows, layer)
    if _is_records(value):
        return [_records_table(value, title, max_rows, layer)]
    if all(_is_scalar(v) for v in value):
        rows = [[index, v] for index, v in enumerate(value)]
        return [_cut(FigureTable(title, ["#", "value"], rows, layer=layer), max_rows)]
    if all(_is_cell(v) and isinstance(_plain(v), list) for v in value):
        rows = [_plain(v) for v in value]
        width = max(len(r) for r in rows)
        columns = ["name", "value"] if width == 2 else [str(i + 1) for i in range(width)]
        padded = [r + [None] * (width - len(r)) for r in rows]
        return [_cut(FigureTable(title, columns, padded, layer=layer), max_rows)]
    tables: list[FigureTable] = []
    for index, item in enumerate(value[:max_rows]):
        tables.extend(tabulate(item, f"{title}[{index}]", max_rows, layer))
    return tables


def scoped_figures(
    metrics: Mapping[str, Any], layers: Sequence[str]
) -> tuple[dict[str, list[FigureTable]], dict[tuple[str, int], list[FigureTable]]]:
    """The figures that belong to one layer or to one neuron.

    Conventions (docs/reports.md): a key equal to a layer name (at any depth, e.g.
    ``metrics["faithfulness"]["layer4"]`` or ``metrics["faithfulness"]["layers"]["layer4"]``)
    scopes its value to that layer; under a layer, digit keys scope to units; a key
    ``"LAYER:UNIT"`` scopes to a neuron; a dict with a ``layer`` field (and a ``unit``
    field), such as the ablation evaluator's figures or a row of a list of dicts, is
    scoped by those fields.

    Args:
        metrics: ``result.metrics``.
        layers: The result's layer names.

    Returns:
        ``(per_layer, per_neuron)``: tables keyed by layer name and by ``(layer, unit)``.

    Examples:
        >>> metrics = {"faithfulness": {"layer4": {"r": 0.4}},
        ...            "ablation": [{"layer": "layer4", "unit": 3, "drop": 0.2}]}
        >>> per_layer, per_neuron = scoped_figures(metrics, ["layer4"])
        >>> per_layer["layer4"][0].rows, per_neuron[("layer4", 3)][0].rows
        ([['r', 0.4]], [['drop', 0.2]])
    """
    names = set(layers)
    layer_items: dict[str, list[tuple[str, Any]]] = {}
    neuron_items: dict[tuple[str, int], list[tuple[str, Any]]] = {}
    layer_rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    neuron_rows: dict[tuple[str, int, str], list[dict[str, Any]]] = {}

    def add_layer_value(layer: str, title: str, value: Any) -> None:
        if isinstance(value, dict) and value and all(_is_unit_key(k) for k in value):
            for unit, item in value.items():
                neuron_items.setdefault((layer, int(unit)), []).append((title, item))
        else:
            layer_items.setdefault(layer, []).append((title, value))

    def walk(path: list[str], value: Any, context: str | None = None) -> None:
        value = _plain(value)
        title = " › ".join(p for p in path if p not in _SCOPE_KEYS) or path[0]
        if isinstance(value, dict):
            scope, unit = value.get("layer"), value.get("unit")
            unit_value: Any = unit
            if isinstance(scope, str) and scope in names:
                # A figure that names its layer (and unit) belongs there as a whole...
                rest = {k: v for k, v in value.items() if k not in ("layer", "unit")}
                if _is_unit_key(unit) and not isinstance(unit, bool):
                    neuron_items.setdefault((scope, int(unit_value)), []).append((title, rest))
                    return
                if unit is not None:
                    return
                layer_items.setdefault(scope, []).append((title, rest))
                # ...and its rows that name only a unit belong to that layer's neurons.
                for key, item in rest.items():
                    if _is_records(_plain(item)):
                        walk([*path, str(key)], item, scope)
                return
            for key, item in value.items():
                key = str(key)
                layer, _, unit = key.rpartition(":")
                if key in names:
                    add_layer_value(key, title, item)
                elif layer in names and _is_unit_key(unit):
                    neuron_items.setdefault((layer, int(unit)), []).append((title, item))
                else:
                    walk([*path, key], item, context)
        elif _is_records(value):
            for row in value:
                layer = row.get("layer", context)
                if not isinstance(layer, str) or layer not in names:
                    continue
                unit = row.get("unit")
                rest = {k: v for k, v in row.items() if k not in ("layer", "unit")}
                if _is_unit_key(unit) and not isinstance(unit, bool):
                    neuron_rows.setdefault((layer, int(unit), title), []).append(rest)
                elif unit is None and "layer" in row:
                    layer_rows.setdefault((layer, title), []).append(rest)
        elif isinstance(value, list):
            for index, item in enumerate(value[:MAX_ROWS]):
                walk([*path, str(index)], item, context)

    for name, value in metrics.items():
        walk([str(name)], value)
    per_layer: dict[str, list[FigureTable]] = {}
    for layer, items in layer_items.items():
        for title, value in items:
            per_layer.setdefault(layer, []).extend(tabulate(value, title, layer=layer))
    for (layer, title), rows in layer_rows.items():
        per_layer.setdefault(layer, []).extend(tabulate(_single(rows), title))
    per_neuron: dict[tuple[str, int], list[FigureTable]] = {}
    for key, items in neuron_items.items():
        for title, value in items:
            per_neuron.setdefault(key, []).extend(tabulate(value, title, layer=key[0]))
    for (layer, unit, title), rows in neuron_rows.items():
        per_neuron.setdefault((layer, unit), []).extend(tabulate(_single(rows), title))
    return per_layer, per_neuron


def neuron_keys(table: FigureTable) -> list[tuple[str, int] | None] | None:
    """The neuron each row names, when a table lists neurons.

    A table lists neurons when it has a ``unit`` column and a ``layer`` column (or a
    :attr:`FigureTable.layer`). Reports use the keys to add each neuron's label and a link
    to its card (a prediction explained through labeled neurons, ablated units...).

    Args:
        table: A table from :func:`tabulate`.

    Returns:
        Per row ``(layer, unit)`` (None for a row without a valid unit), or None when the
        table does not list neurons.

    Examples:
        >>> neuron_keys(FigureTable("t", ["layer", "unit", "w"], [["fc", 3, 0.5]]))
        [('fc', 3)]
        >>> neuron_keys(FigureTable("t", ["unit", "w"], [[3, 0.5], ["x", 1.0]], layer="fc"))
        [('fc', 3), None]
    """
    if "unit" not in table.columns:
        return None
    unit_at = table.columns.index("unit")
    layer_at = table.columns.index("layer") if "layer" in table.columns else None
    if layer_at is None and table.layer is None:
        return None
    keys: list[tuple[str, int] | None] = []
    for row in table.rows:
        layer = row[layer_at] if layer_at is not None else table.layer
        unit = row[unit_at]
        valid = isinstance(layer, str) and _is_unit_key(unit) and not isinstance(unit, bool)
        keys.append((layer, int(unit)) if valid else None)  # type: ignore[arg-type]
    return keys


def _tabulate_dict(
    value: dict[str, Any], title: str, max_rows: int, layer: str | None
) -> list[FigureTable]:
    own = value.get("layer")
    layer = own if isinstance(own, str) else layer
    scalars = [[str(k), v] for k, v in value.items() if _is_cell(v)]
    flattened = {str(k): _flatten(v) for k, v in value.items() if isinstance(v, dict) and v}
    records = {k: v for k, v in flattened.items() if all(_is_cell(x) for x in v.values())}
    tables: list[FigureTable] = []
    if scalars:
        tables.append(_cut(FigureTable(title, ["name", "value"], scalars, layer=layer), max_rows))
    if len(records) >= 2:
        rows = [{"name": k, **v} for k, v in records.items()]
        tables.append(_records_table(rows, title, max_rows, layer))
    else:
        records = {}
    for key, item in value.items():
        if _is_cell(item) or str(key) in records:
            continue
        tables.extend(tabulate(item, f"{title} › {key}", max_rows, layer))
    return tables


def _records_table(
    records: list[dict[str, Any]], title: str, max_rows: int, layer: str | None
) -> FigureTable:
    records = [_flatten(record) for record in records]
    columns: dict[str, None] = {}
    for record in records:
        columns.update(dict.fromkeys(str(k) for k in record))
    names = list(columns)
    table = FigureTable(
        title, names[:MAX_COLUMNS], more_columns=max(0, len(names) - MAX_COLUMNS), layer=layer
    )
    table.rows = [[_plain(record.get(c)) for c in table.columns] for record in records[:max_rows]]
    table.more = max(0, len(records) - max_rows)
    return table


def _cut(table: FigureTable, max_rows: int) -> FigureTable:
    table.more = max(0, len(table.rows) - max_rows)
    table.rows = table.rows[:max_rows]
    return table


def _single(rows: list[dict[str, Any]]) -> Any:
    # One scoped row reads best as name/value pairs, several as a table.
    return rows[0] if len(rows) == 1 else rows


def _flatten(record: dict[str, Any]) -> dict[str, Any]:
    """One level of nesting as dotted keys: ``{"set": {"f1": 0.5}}`` -> ``{"set.f1": 0.5}``."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        value = _plain(value)
        if isinstance(value, dict) and value and all(_is_cell(v) for v in value.values()):
            for sub, item in value.items():
                flat[f"{key}.{sub}"] = _plain(item)
        else:
            flat[str(key)] = value
    return flat


def _plain(value: Any) -> Any:
    """numpy/torch values and tuples as plain Python (evaluators may store either)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, Mapping) and not isinstance(value, dict):
        return dict(value)
    return value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_cell(value: Any) -> bool:
    value = _plain(value)
    if _is_scalar(value):
        return True
    return (
        isinstance(value, list) and len(value) <= SHORT_LIST and all(_is_scalar(v) for v in value)
    )


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_unit_key(key: Any) -> bool:
    return isinstance(key, int) or (isinstance(key, str) and key.isdigit())
