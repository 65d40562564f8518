"""The ``neurolabel`` application: its commands, plugin commands, and how errors end a run.

Each command group lives in its own module and imports what is heavy inside the command,
so ``neurolabel --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from ..errors import NeurolabelError
from . import demo, discovery, explain, results
from .console import err_console

app = typer.Typer(
    name="neurolabel",
    help="Explain in natural language what each neuron of a vision network responds to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(explain.explain)
app.command()(discovery.layers)
app.command()(discovery.plugins)
app.command()(results.report)
app.command()(results.evaluate)
app.command()(demo.demo)


def _print_version(value: bool) -> None:
    if not value:
        return
    # What `neurolabel.__version__` says, read the same way: the core does not import the
    # public facade (tests/test_layering.py).
    from importlib import metadata

    try:
        version = metadata.version("neurolabel")
    except metadata.PackageNotFoundError:  # running from a source tree
        version = "0.0.0"
    print(f"neurolabel {version}")
    raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    # No docstring: the application's help is Typer(help=...) above.
    pass


_commands_registered = False


def _register_plugin_commands() -> None:
    global _commands_registered
    if not _commands_registered:
        _commands_registered = True
        from ..plugins.manager import get_plugins

        get_plugins().register_commands(app)


#: OpenMP threads that wait for work sleep instead of spinning: on a machine whose cores
#: are busy with other jobs, spinning threads burnt twice the CPU time of the work itself
#: (the demo beside two busy processes on 2 cores: 136 s spinning, 87 s passive; 44 s
#: either way when idle). Read once, when torch loads, so it is set before.
OPENMP_WAIT_POLICY = ("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, printing user errors without a traceback."""
    os.environ.setdefault(*OPENMP_WAIT_POLICY)
    try:
        _register_plugin_commands()
        app(args=argv, standalone_mode=False)
    except NeurolabelError as exc:
        # soft_wrap: a path or spec in the message stays on one line, whole, to copy or grep.
        err_console.print(f"[bold red]Error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]Interrupted[/yellow]: outputs are written atomically; "
            "nothing half-written was left."
        )
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        # Usage errors (unknown option, missing argument) arrive here in standalone_mode=False.
        # Matched by shape: typer >= 0.29 raises its vendored copy of click's ClickException,
        # which is not click.ClickException.
        exit_code, show = getattr(exc, "exit_code", None), getattr(exc, "show", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        raise
