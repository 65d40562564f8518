"""``python -m neurolabel`` runs the CLI."""

from neurolabel.plugin_core.cli import main

if __name__ == "__main__":
    main()
