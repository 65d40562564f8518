"""Where and how a run executes: torch.distributed sharding and gathering, giving freed
host memory back to the operating system, and rich progress bars on stderr.

Imports only :mod:`neurolabel.plugin_core.errors` of the core."""
