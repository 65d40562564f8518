"""Showing a result: the terminal report (:mod:`.terminal`), the self-contained HTML
report (:mod:`.html_report`, its style sheet and script in ``assets/``), and what both
draw on: layer summaries, metric tables, plots, thumbnails and heatmaps.

Imports errors, data, runtime, plugins and pipeline of the core."""
