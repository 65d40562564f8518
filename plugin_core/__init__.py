"""The core of neurolabel: hooks and contracts, data model, algorithms, reports, CLI.

It names no model zoo, VLM or LLM; built-in adapters and backends are ordinary plugins.
The core is split into rooms, one concern each:

=============  ===========================================================================
``errors``     errors whose message says what was wrong and how to fix it
``data``       results, vocabularies, probing images, preprocessing, holdout splits,
               layer names and patterns, atomic writes
``runtime``    torch.distributed, host memory, progress bars
``plugins``    hookspecs, plugin manager, registries, specs, contracts, context, resolution
``pipeline``   the labeler and its settings, exemplar pass, top-k, patches, scoring,
               aggregation, explanations, describers
``evaluation`` metrics, accuracy, layer profile, faithfulness, ablation, their plugin
``reporting``  terminal and HTML reports, plots, tables, thumbnails, heatmaps
``cli``        one module per command group, the demo
=============  ===========================================================================

The layering rule (``tests/test_layering.py`` walks every import, top-level,
``TYPE_CHECKING`` and inside functions, and fails on a breach):

1. A room imports only from rooms of a lower tier, and from itself. The tiers, lowest
   first: ``errors``; ``data`` and ``runtime``; ``plugins``; ``pipeline``; ``evaluation``
   and ``reporting``; ``cli``. Rooms of one tier do not import each other.
2. ``neurolabel.adapters`` and ``neurolabel.backends`` import from the core only
   ``errors``, ``data``, ``runtime`` and ``plugins``, never the pipeline, reports or CLI,
   and never each other: they meet through the registries.
3. The core imports nothing from ``neurolabel.adapters`` or ``neurolabel.backends``.

Modules moved here from the old flat layout still import from their old paths for one
release, with a ``FutureWarning`` naming the new one (:mod:`._moved`).
"""

from . import _moved

_moved.install()
