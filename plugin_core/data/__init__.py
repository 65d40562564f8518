"""The data model and the data that flows through a run: labeling results (JSON, CSV,
patches), concept vocabularies, probing images read robustly, preprocessing, holdout
splits, layer names and patterns, bundled photographs, and atomic file writes.

Imports only :mod:`neurolabel.plugin_core.errors` of the core."""
