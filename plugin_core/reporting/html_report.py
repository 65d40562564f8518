"""The self-contained HTML report: one file, no external asset, opens from disk.

The page holds a static part (run overview, per-layer summaries with plots, evaluation
tables) and one JSON payload from which a small inline script renders the neuron cards a
page at a time, with concept search and sorting. Images are small WebP/JPEG thumbnails
embedded once each as ``data:`` URIs; a Content-Security-Policy forbids any fetch, so the
report cannot reach the network even by mistake. docs/reports.md describes it.
"""

from __future__ import annotations

import functools
import html
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from ..data.atomic import atomic_write
from ..data.result import LabelingResult, NeuronExplanation
from ..errors import NeurolabelError
from . import plots as report_plots
from .comparison import comparison_html
from .heatmaps import encode_map, exemplar_map, map_region, percent_box
from .layer_summary import LayerSummary, summarize_layer
from .tables import (
    MAX_NEURON_ROWS,
    FigureTable,
    format_cell,
    format_value,
    neuron_keys,
    scoped_figures,
)
from .tables import tabulate as tabulate_figures
from .terminal import verified_phrase
from .thumbnails import THUMBNAIL_SIZE, ExemplarImages, ImageTable, SourceImages
from .unit_map_text import shown_settings, unit_map_line

#: Sent with the page: nothing may be fetched (images are data URIs, script and style inline).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
)
#: Exemplars shown per neuron card (the labeler saves 5 patches per neuron by default).
DEFAULT_EXEMPLARS = 5
#: Plots drawn for evaluation tables at most (each one is a PNG in the file).
MAX_METRIC_PLOTS = 24
#: A layer's evaluation figures start unfolded up to this many table rows.
EVALUATION_ROWS_OPEN = 12
#: Skipped inputs listed at most in the overview.
MAX_SKIPPED = 200
REPORT_FILE = "report.html"


def build_html_report(
    result: LabelingResult,
    folder: str | Path | None = None,
    *,
    images: SourceImages | None = None,
    exemplars: int = DEFAULT_EXEMPLARS,
    thumbnail_size: int = THUMBNAIL_SIZE,
    title: str | None = None,
    image_root: str | Path | None = None,
    query: dict[str, Any] | None = None,
    comparison: tuple[dict[str, Any], str] | None = None,
) -> str:
    """Build the HTML report of a result as one self-contained document.

    Args:
        result: The labeling result (in memory, or loaded with ``LabelingResult.load``).
        folder: The result folder: patch files (and the probing images, when the result
            recorded them inside it) are looked up there. None: in-memory patches only.
        images: The probing images, indexed like ``Exemplar.image_index`` (a list or a
            dict of PIL images), for runs whose exemplars name no file (``#17``).
        image_root: The probing folder, when it moved since the result recorded it.
        exemplars: Exemplars per neuron card.
        thumbnail_size: Longest side of embedded thumbnails, in pixels.
        title: Page title (default: from the model name).
        query: The word table of :func:`~neurolabel.plugin_core.reporting.query_table.query_table`:
            the page gains an "Ask" tab that ranks units by a free-text query, offline.
        comparison: ``(compare_results(result, other, ...), name of other)``: the page
            gains a "Compare" tab.

    Returns:
        The HTML text.

    Examples:
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> neuron = NeuronExplanation("fc", 0, [["<script>", 1.0]])
        >>> page = build_html_report(LabelingResult({"name": "m"}, {}, {"fc": [neuron]}))
        >>> "<script>" in page.split("id='nl-data'")[1].split("</script>")[0]
        False
    """
    builder = _Builder(result, folder, images, exemplars, thumbnail_size, image_root)
    builder.query, builder.comparison = query, comparison
    return builder.page(title)


def write_html_report(
    result: LabelingResult,
    path: str | Path,
    folder: str | Path | None = None,
    **options: Any,
) -> Path:
    """Write the HTML report atomically (a crash never leaves half a file).

    Args:
        result: The labeling result.
        path: The ``.html`` file to write (parent folders are created).
        folder: The result folder (patches, relative image paths); default: the folder
            of ``path``, right when the report sits beside ``result.json``.
        **options: More keyword arguments of :func:`build_html_report`.

    Returns:
        The path written.

    Examples:
        >>> import tempfile, pathlib
        >>> from neurolabel.plugin_core.data.result import NeuronExplanation
        >>> neuron = NeuronExplanation("fc", 0, [["dog", 1.0]])
        >>> r = LabelingResult({"name": "m"}, {}, {"fc": [neuron]})
        >>> out = write_html_report(r, pathlib.Path(tempfile.mkdtemp()) / "report.html")
        >>> out.read_text().startswith("<!doctype html>")
        True
    """
    target = Path(path)
    text = build_html_report(result, target.parent if folder is None else folder, **options)
    with atomic_write(target) as handle:
        handle.write(text)
    return target


def script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element.

    ``<``, ``>`` and ``&`` are written as ``\\u003c``-style escapes, so no string (a
    concept ``</script>``, a path with ``<!--``) can end the element or start markup;
    ``JSON.parse`` reads them back unchanged.

    Args:
        value: JSON-serializable data (non-finite floats must already be None).

    Returns:
        The JSON text.

    Examples:
        >>> script_json({"c": "</script><b>"})
        '{"c":"\\\\u003c/script\\\\u003e\\\\u003cb\\\\u003e"}'
    """
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class _Builder:
    """Collects the page's parts: payload, image table, summaries, figures."""

    def __init__(
        self,
        result: LabelingResult,
        folder: str | Path | None,
        images: SourceImages | None,
        exemplars: int,
        thumbnail_size: int,
        image_root: str | Path | None = None,
    ) -> None:
        self.result = result
        self.table = ImageTable()
        self.images = ExemplarImages(
            result, self.table, folder, images, thumbnail_size, image_root=image_root
        )
        self.exemplars = max(0, exemplars)
        self.layer_names = list(result.neurons)
        self.layer_index = {name: i for i, name in enumerate(self.layer_names)}
        self.per_layer, self.per_neuron = scoped_figures(result.metrics, self.layer_names)
        self.preprocessing = result.model.get("preprocessing")
        self.with_plots = report_plots.plots_available()
        self.plots_left = MAX_METRIC_PLOTS
        self.maps = 0  # heatmaps drawn
        self.carried_maps = 0  # exemplars whose result entry has a map
        self.query: dict[str, Any] | None = None
        self.comparison: tuple[dict[str, Any], str] | None = None

    # -- page -------------------------------------------------------------------------
    def page(self, title: str | None) -> str:
        result = self.result
        layers = [self._layer_payload(i, n) for i, n in enumerate(self.layer_names)]
        payload: dict[str, Any] = {"images": self.table.uris, "layers": layers}
        model = str(result.model.get("name") or "model")
        title = title or f"neurolabel report: {model}"
        default = "overview"  # what was run, on what, and how to read it: then the layers
        nav = [_tab_link("overview", "Overview", None, default)]
        sections = [self._overview(default)]
        if self.query is not None:
            payload["query"] = self.query
            nav.append(_tab_link("ask", "Ask", None, default))
            sections.append(_ask_section(default))
        if self.comparison is not None:
            nav.append(_tab_link("compare", "Compare", None, default))
            sections.append(
                f"<section id='compare'{_hidden('compare', default)}><div class='panel'>"
                f"<h2>Compared with another result</h2>{comparison_html(*self.comparison)}"
                "</div></section>"
            )
        nav += [
            _tab_link(f"layer-{i}", name, len(result.neurons[name]), default)
            for i, name in enumerate(self.layer_names)
        ]
        sections += [
            self._layer_section(i, name, default) for i, name in enumerate(self.layer_names)
        ]
        return "".join(
            [
                "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>",
                "<meta name='viewport' content='width=device-width, initial-scale=1'>",
                "<meta http-equiv='Content-Security-Policy' ",
                f'content="{CONTENT_SECURITY_POLICY}">',
                "<link rel='icon' href='data:,'>",
                f"<title>{_e(title)}</title><style>{asset('report.css')}</style></head><body>",
                f"<header><h1>{_e(title)}</h1><p class='meta'>{_e(self._meta_line())}</p>",
                f"<nav id='tabs'>{''.join(nav)}</nav></header><main>",
                *sections,
                "</main>\n<script type='application/json' id='nl-data'>",
                script_json(payload),
                f"</script>\n<script>{asset('report.js')}</script></body></html>\n",
            ]
        )

    def _meta_line(self) -> str:
        result = self.result
        settings, dataset = result.settings, result.dataset
        parts = [str(result.model.get("name") or "?")]
        if settings.get("scorer"):
            parts.append(f"scorer {settings['scorer']}")
        if settings.get("vocabulary"):
            size = settings.get("vocabulary_size")
            parts.append(f"vocabulary {settings['vocabulary']}" + (f" ({size})" if size else ""))
        if settings.get("aggregation"):
            parts.append(f"aggregation {settings['aggregation']}")
        units = unit_map_line(result)
        if units:
            parts.append(units)
        if dataset.get("num_used") is not None:
            parts.append(f"{dataset['num_used']} probing images")
        version = result.versions.get("neurolabel")
        if version:
            parts.append(f"neurolabel {version}")
        return " · ".join(parts)

    # -- overview ---------------------------------------------------------------------
    def _overview(self, default: str) -> str:
        result = self.result
        out = [f"<section id='overview'{_hidden('overview', default)}>"]
        cautions = [str(w) for w in result.settings.get("warnings") or []]
        if cautions:
            # First on the page: these say the labels below may mislead.
            items = "".join(f"<li>{_e(w)}</li>" for w in cautions)
            out.append(self._panel("Warnings", f"<ul class='warning'>{items}</ul>"))
        model = {k: v for k, v in result.model.items() if k not in ("class_names", "preprocessing")}
        out.append(self._panel("Model", _kv_table(model)))
        if result.settings:
            out.append(self._panel("Run settings", _kv_table(shown_settings(result.settings))))
        out.append(self._panel("Probing images", self._dataset_html()))
        evaluation = self._evaluation_html()
        if evaluation:
            out.append(self._panel("Evaluation", evaluation))
        notes = self._notes()
        if notes:
            items = "".join(f"<li>{_e(n)}</li>" for n in notes)
            out.append(self._panel("About this report", f"<ul class='note'>{items}</ul>"))
        if result.versions:
            out.append(self._panel("Versions", _kv_table(result.versions)))
        out.append("</section>")
        return "".join(out)

    def _dataset_html(self) -> str:
        dataset = self.result.dataset
        figures = [
            (dataset.get("num_images"), "images"),
            (dataset.get("num_used"), "used"),
            (dataset.get("num_skipped"), "skipped"),
        ]
        out = [_figures([(v, label) for v, label in figures if v is not None])]
        if dataset.get("fingerprint"):
            out.append(f"<p class='note'>fingerprint {_e(dataset['fingerprint'])}</p>")
        skipped = dataset.get("skipped") or []
        if skipped:
            rows = [
                [s.get("item"), s.get("reason")] if isinstance(s, dict) else [s, ""]
                for s in skipped[:MAX_SKIPPED]
            ]
            table = FigureTable("skipped inputs", ["input", "reason"], rows)
            table.more = max(0, len(skipped) - MAX_SKIPPED)
            out.append(
                f"<details><summary>{len(skipped)} skipped input(s) and why</summary>"
                f"{self._table_html(table)}</details>"
            )
        return "".join(out)

    def _evaluation_html(self) -> str:
        out = []
        for name, value in self.result.metrics.items():
            tables = [
                # Per-unit rows (thousands of them) are on the neuron cards; a sample is enough.
                t.head(MAX_NEURON_ROWS) if neuron_keys(t) is not None else t
                for t in tabulate_figures(value, str(name))
            ]
            if not tables:
                continue
            out.append(f"<h3>{_e(name)}</h3>")
            out.extend(self._tables_with_plots(tables))
        return "".join(out)

    def _notes(self) -> list[str]:
        notes = []
        if not self.with_plots:
            notes.append("Plots are missing: install matplotlib (the 'offline' extra) for them.")
        if self.images.missing_sources:
            root = self.images.files.root
            where = f" (looked for under {root})" if root else ""
            notes.append(
                f"{self.images.missing_sources} source image(s) could not be read{where}: "
                "those exemplars show their patch only, without box or heatmap. If the "
                "probing images moved, name their folder: neurolabel report RESULT --html "
                "FILE --images DIR."
            )
        if self.images.missing_patches:
            notes.append(f"{self.images.missing_patches} exemplar patch(es) were not found.")
        refused = self.images.files.refused
        if refused:
            notes.append(
                f"{len(refused)} path(s) in the result lead outside the result folder or the "
                "probing folder (or to something that is not a file) and were not read."
            )
        if not self.carried_maps:
            notes.append(
                "This result carries no activation maps: exemplars show the patch box "
                "without a heatmap."
            )
        size = sum(len(u) for u in self.table.uris)
        notes.append(f"{len(self.table.uris)} embedded images, {size / 1e6:.1f} MB.")
        return notes

    # -- layers -----------------------------------------------------------------------
    def _layer_section(self, index: int, name: str, default: str) -> str:
        summary = summarize_layer(self.result, name)
        tab = f"layer-{index}"
        toolbar = (
            "<div class='toolbar'>"
            "<input type='search' placeholder='Search concepts (e.g. dog) or #unit' "
            "aria-label='Search concepts' autocomplete='off'>"
            "<select aria-label='Sort neurons'>"
            "<option value='unit'>sort: unit</option>"
            "<option value='score'>sort: score, high first</option>"
            "<option value='low'>sort: score, low first</option>"
            "<option value='sim'>sort: similarity</option>"
            "<option value='act'>sort: max activation</option>"
            "<option value='clarity'>sort: clarity</option></select>"
            "<label><input type='checkbox' class='hide'> hide dead and unexplained</label>"
            + _character_filters()
            + "<span class='count'></span></div>"
        )
        return "".join(
            [
                f"<section id='{tab}' class='layer' data-layer='{index}'{_hidden(tab, default)}>",
                self._layer_summary_html(summary),
                toolbar,
                "<div class='grid'></div><p class='empty' hidden>No neuron matches.</p>",
                "<div class='sentinel'></div>",
                "<noscript><p>The neuron cards are drawn by the page's inline script: "
                "allow JavaScript to see them.</p></noscript></section>",
            ]
        )

    def _layer_summary_html(self, s: LayerSummary) -> str:
        kind = " · ".join(
            p for p in (s.kind or "", "×".join(map(str, s.shape)) if s.shape else "") if p
        )
        quantiles = s.score_quantiles()
        figures: list[tuple[float, str]] = [
            (s.explained, f"neurons explained (of {s.units})"),
            (s.labeled, "labeled"),
            (s.dead, "dead"),
            *([(s.unexplained, "unexplained (p above the level)")] if s.unexplained else []),
            (s.distinct, "distinct top concepts"),
        ]
        if quantiles:
            figures.append((quantiles["median"], "median top score"))
        if s.similarities:
            figures.append((sorted(s.similarities)[len(s.similarities) // 2], "median similarity"))
        if s.summaries:
            figures.append((s.summaries, "with a summary"))
        if s.measured:
            if s.clarities:
                figures.append((sorted(s.clarities)[len(s.clarities) // 2], "median clarity"))
            figures.append((s.polysemantic, "polysemantic (2+ exemplar groups)"))
            figures.append((s.redundant, "redundant (share a top concept)"))
        out = [
            f"<div class='panel'><h2>Layer <code>{_e(s.name)}</code> "
            f"<span class='note'>{_e(kind)}</span></h2><div class='layerhead'><div>",
            _figures(figures),
        ]
        if quantiles:
            spread = ", ".join(f"{k} {format_value(v)}" for k, v in quantiles.items())
            out.append(f"<p class='note'>top-concept scores: {_e(spread)}</p>")
        if s.top_concepts:
            chips = "".join(
                f"<button class='chip' data-q='{_e(c)}' title='show these neurons'>{_e(c)}"
                f"<span class='k'>{n}</span></button>"
                for c, n in s.top_concepts
            )
            out.append(f"<h3>Most frequent concepts</h3><div class='chips'>{chips}</div>")
        plots = []
        if self.with_plots:
            plots = [
                report_plots.concept_bars(s.top_concepts),
                report_plots.score_histogram(s.scores),
            ]
        out.append(f"</div>{_plots_html(plots, f'layer {s.name}')}</div>")
        tables = self.per_layer.get(s.name, [])
        if tables:
            # Open when short; a long one would push the neuron cards off the first screen.
            rows = sum(len(t.rows) for t in tables)
            sources = ", ".join(dict.fromkeys(t.title.split(" › ")[0] for t in tables))
            opened = " open" if rows <= EVALUATION_ROWS_OPEN else ""
            out.append(
                f"<details class='ev'{opened}><summary><b>Evaluation</b>: {_e(sources)} "
                f"<span class='note'>({len(tables)} tables)</span></summary>"
            )
            out.extend(self._tables_with_plots(tables))
            out.append("</details>")
        out.append("</div>")
        return "".join(out)

    def _layer_payload(self, index: int, name: str) -> dict[str, Any]:
        neurons = self.result.neurons[name]
        payload = [self._neuron_payload(name, n) for n in neurons]
        # A classifier's output units are its classes: the card names the class it should mean.
        classes = self.result.model.get("class_names") or []
        info = self.result.layers.get(name, {})
        if classes and info.get("kind") == "vector" and info.get("units") == len(classes):
            for item in payload:
                if 0 <= item["u"] < len(classes):
                    item["cls"] = str(classes[item["u"]])
        return {"i": index, "name": name, "neurons": payload}

    def _neuron_payload(self, layer: str, neuron: NeuronExplanation) -> dict[str, Any]:
        shown = neuron.exemplars[: self.exemplars]
        maps = [exemplar_map(e) for e in shown]
        present = [m for m in maps if m is not None]
        low = min(float(m.min()) for m in present) if present else 0.0
        high = max(float(m.max()) for m in present) if present else 1.0
        items = []
        for rank, (exemplar, activation_map) in enumerate(zip(shown, maps, strict=True)):
            item: dict[str, Any] = {
                "a": _num(exemplar.activation),
                "path": exemplar.image,
                "file": exemplar.patch,
                "p": self.images.patch(layer, neuron.unit, rank, exemplar),
            }
            self.carried_maps += activation_map is not None
            if exemplar.box is None and item["p"] is not None:
                item["whole"] = True  # the patch is the whole image: no second thumbnail
                items.append(item)
                continue
            source = self.images.source(exemplar)
            item["src"] = None if source is None else source[0]
            if source is not None:
                size = source[1]
                if exemplar.box is not None and len(exemplar.box) == 4:
                    item["box"] = percent_box(exemplar.box, size)
                if activation_map is not None:
                    item["reg"] = percent_box(map_region(self.preprocessing, size), size)
                    item["map"] = encode_map(activation_map, low, high)
                    self.maps += 1
            items.append(item)
        figures = self.per_neuron.get((layer, neuron.unit), [])
        return {
            "u": neuron.unit,
            "dead": bool(neuron.dead),
            "un": bool(neuron.unexplained and not neuron.dead),
            "p": _num(neuron.p_value),
            "c": [[str(c), _num(s)] for c, s in neuron.concepts],
            "s": neuron.summary or None,
            "vlm": [str(label) for label, _ in neuron.described] if neuron.described else None,
            "sim": _num(neuron.similarity),
            "cl": _num(neuron.clarity),
            "g": [[str(c), int(n)] for c, n, _ in neuron.groups] if neuron.groups else None,
            "r": neuron.redundancy,
            "ver": verified_phrase(neuron) or None,
            "max": _num(neuron.stats.get("max")) if neuron.stats else None,
            "ex": items,
            "ev": [
                {"t": t.title, "cols": t.columns, "rows": t.formatted(), "more": t.more}
                for t in figures
            ],
        }

    # -- tables and plots -------------------------------------------------------------
    def _tables_with_plots(self, tables: Sequence[FigureTable]) -> list[str]:
        out = []
        for table in tables:
            out.append(self._table_html(table))
            if self.with_plots and self.plots_left > 0:
                plot = report_plots.table_bars(self._plot_table(table))
                if plot:
                    self.plots_left -= 1
                    out.append(_plots_html([plot], table.title))
        return out

    def _plot_table(self, table: FigureTable) -> FigureTable:
        """Neuron tables are plotted with one ``layer:unit label`` row name each."""
        keys = neuron_keys(table)
        if keys is None:
            return table
        drop = {table.columns.index(c) for c in ("layer", "unit", "label") if c in table.columns}
        keep = [i for i in range(len(table.columns)) if i not in drop]
        rows = [
            [f"{key[0]}:{key[1]} {self._label(*key)}".strip() if key else "?"]
            + [row[i] for i in keep]
            for key, row in zip(keys, table.rows, strict=True)
        ]
        return FigureTable(table.title, ["neuron"] + [table.columns[i] for i in keep], rows)

    def _label(self, layer: Any, unit: Any) -> str:
        try:
            return self.result.explanation(str(layer), int(unit)).description
        except (ValueError, TypeError, NeurolabelError):  # a row naming no explained neuron
            return ""

    def _table_html(self, table: FigureTable) -> str:
        keys = neuron_keys(table)
        unit_at = table.columns.index("unit") if keys is not None else -1
        add_label = keys is not None and "label" not in table.columns
        columns = list(table.columns)
        if add_label:
            columns.insert(unit_at + 1, "label")
        head = "".join(f"<th>{_e(c)}</th>" for c in columns)
        body = []
        # A name/value column mixes numbers and text: one alignment reads better there.
        align = table.columns != ["name", "value"]
        for row_index, raw in enumerate(table.rows):
            key = keys[row_index] if keys is not None else None
            cells = []
            for index, value in enumerate(raw):
                text = _e(format_cell(value))
                css = " class='num'" if align and _is_number(value) else ""
                if index == unit_at and key is not None and key[0] in self.layer_index:
                    text = f"<a href='#n-{self.layer_index[key[0]]}-{key[1]}'>{text}</a>"
                cells.append(f"<td{css}>{text}</td>")
                if index == unit_at and add_label:
                    cells.append(f"<td>{_e(self._label(*key) if key else '')}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
        notes = []
        if table.more:
            where = " (each neuron's rows are on its card)" if keys is not None else ""
            notes.append(f"{table.more} more rows not shown{where}")
        if table.more_columns:
            notes.append(f"{table.more_columns} more columns not shown")
        note = f"<p class='note'>{_e('; '.join(notes))}</p>" if notes else ""
        return (
            f"<div class='tablewrap'><div class='note'>{_e(table.title)}</div>"
            f"<table><tr>{head}</tr>{''.join(body)}</table>{note}</div>"
        )

    def _panel(self, heading: str, body: str) -> str:
        return f"<div class='panel'><h2>{_e(heading)}</h2>{body}</div>"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _hidden(tab: str, default: str) -> str:
    # Server-side, so the first paint already shows the right tab before the script runs.
    return "" if tab == default else " hidden"


def _tab_link(tab: str, label: str, count: int | None, default: str) -> str:
    active = " class='active'" if tab == default else ""
    number = f"<span class='n'>{count}</span>" if count is not None else ""
    return f"<a href='#{tab}' data-tab='{tab}'{active}>{_e(label)}{number}</a>"


def _figures(items: list[tuple[Any, str]]) -> str:
    cells = "".join(
        f"<div><b>{_e(format_value(v))}</b><span>{_e(k)}</span></div>" for v, k in items
    )
    return f"<div class='figures'>{cells}</div>"


def _character_filters() -> str:
    """Filters by clarity and polysemanticity (a layer's toolbar and the Ask tab)."""
    return (
        "<label>clarity ≥ <input type='number' class='clarity' step='0.05' min='-1' max='1' "
        "placeholder='any' aria-label='Minimum clarity'></label>"
        "<select class='poly' aria-label='Exemplar groups'>"
        "<option value=''>any groups</option>"
        "<option value='mono'>one exemplar group</option>"
        "<option value='poly'>polysemantic (2+ groups)</option></select>"
    )


def _ask_section(default: str) -> str:
    return (
        f"<section id='ask'{_hidden('ask', default)}><div class='panel'><h2>Ask the labels</h2>"
        "<p class='note'>Ranks every live unit (an unexplained one by its candidates) by "
        "how well its explanation (ranked concepts and exemplar-group labels) matches your "
        "words, with the embeddings stored "
        "in this page (no network): words outside its table are ignored. Approximate; "
        '<code>neurolabel find RESULT "QUERY"</code> is exact.</p>'
        "<div class='toolbar'><input type='search' class='ask' placeholder='e.g. striped "
        "animal' aria-label='Query' autocomplete='off'>"
        + _character_filters()
        + "<span class='count'></span></div>"
        "<div class='tablewrap'><table class='answers'></table></div></div></section>"
    )


def _kv_table(values: dict[str, Any]) -> str:
    """Keys and values as a table; a value that is itself a mapping (the scoring plan,
    per-layer aggregation details) as a table of its own rather than JSON text."""
    rows = "".join(
        f"<tr><th>{_e(k)}</th><td>"
        + (_kv_table(v) if isinstance(v, dict) and v else _e(format_cell(v, width=160)))
        + "</td></tr>"
        for k, v in values.items()
    )
    return f"<div class='tablewrap'><table>{rows}</table></div>"


def _plots_html(uris: list[str | None], alt: str) -> str:
    images = "".join(f"<img src='{u}' alt='{_e(alt)}'>" for u in uris if u)
    return f"<div class='plots'>{images}</div>" if images else ""


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _num(value: Any) -> float | int | None:
    """4 significant digits keep the payload small; non-finite numbers become null."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number):
        return None
    if isinstance(value, int):
        return value
    return float(f"{number:.4g}")


@functools.cache
def asset(name: str) -> str:
    """The text of a file in ``reporting/assets`` (the style sheet and script inlined).

    The script renders neuron cards from the page's JSON payload a page at a time, as the
    reader scrolls, and sets every text with ``textContent`` (never ``innerHTML``), so
    concept strings stay text.

    Examples:
        >>> asset("report.css").lstrip().startswith(":root")
        True
    """
    return resources.files(__package__).joinpath("assets").joinpath(name).read_text("utf-8")
