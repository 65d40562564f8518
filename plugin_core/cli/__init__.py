"""The command line (typer + rich): one module per command group, the application in
:mod:`.app`. ``neurolabel = neurolabel.plugin_core.cli:main``.

``explain`` (:mod:`.explain`), ``layers`` and ``plugins`` (:mod:`.discovery`), ``report`` and
``evaluate`` (:mod:`.results`), ``demo`` (:mod:`.demo`); plugins add theirs through
``register_commands``. Commands print rich tables, JSON with ``--json``.
"""

from .app import app, main

__all__ = ["app", "main"]
