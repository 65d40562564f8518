"""Core of neurolabel: hooks, plugin manager, data model, algorithms, CLI."""
