"""The ``neurolabel`` application: its commands, plugin commands, and how errors end a run.

Each command group lives in its own module and imports what is heavy inside the command,
so ``neurolabel --help`` starts fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated, Any, TextIO

import typer
from typer.core import TyperCommand, TyperGroup

from ..errors import NeurolabelError, NeurolabelWarning
from . import demo, discovery, explain, queries, results
from .console import err_console


class _HelpWithoutType:
    """Flags (``--help``, ``--json``...) take no value: show no ``<bool>`` type beside them
    (typer shows one unless each option says ``metavar=""``)."""

    def get_params(self, ctx: Any) -> Any:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Group(_HelpWithoutType, TyperGroup):
    pass


class _Command(_HelpWithoutType, TyperCommand):
    pass


app = typer.Typer(
    name="neurolabel",
    cls=_Group,
    help="Explain in natural language what each neuron of a vision network responds to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command(cls=_Command)(explain.explain)
app.command(cls=_Command)(discovery.layers)
app.command(cls=_Command)(discovery.plugins)
app.command(cls=_Command)(results.report)
app.command(cls=_Command)(results.evaluate)
app.command(cls=_Command)(queries.find)
app.command(cls=_Command)(queries.compare)
app.command(cls=_Command)(demo.demo)


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
            metavar="",
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


#: Longest error message printed whole; a message quoting a huge input is cut (its start
#: says what was wrong).
MESSAGE_LIMIT = 4000


def _print_error(message: str) -> None:
    from rich.markup import escape

    from ..plugins.spec import redact_secrets
    from ..runtime.terminal import shorten

    # Messages quote user input (paths, specs, file lines) and library errors: no secret,
    # no markup of theirs, no control character, bounded length.
    text = escape(shorten(redact_secrets(message), MESSAGE_LIMIT))
    # soft_wrap: a path or spec in the message stays on one line, whole, to copy or grep.
    err_console.print(f"[bold red]Error:[/bold red] {text}", highlight=False, soft_wrap=True)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Our warnings as one readable line; other libraries' warnings as Python prints them."""
    if issubclass(category, NeurolabelWarning):
        from rich.markup import escape

        err_console.print(f"[yellow]Warning:[/yellow] {escape(str(message))}", highlight=False)
    else:
        from ..runtime.terminal import visible_controls

        # A library's warning may quote untrusted text (a label with no glyph in a font).
        _python_showwarning(visible_controls(str(message)), category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def _interrupted() -> None:
    err_console.print(
        "[yellow]Interrupted[/yellow]: no output file was left half-written; an "
        "interrupted `explain` resumes from its checkpoint with --resume."
    )
    sys.exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, printing user errors without a traceback.

    Exit status: 0 on success, 1 for a command that failed (the machine refused a file
    operation), 2 for bad input (a usage error or a
    :class:`~neurolabel.plugin_core.errors.NeurolabelError`), 130 on Ctrl-C.
    """
    os.environ.setdefault(*OPENMP_WAIT_POLICY)
    previous, warnings.showwarning = warnings.showwarning, _show_warning
    try:
        _run(argv)
    finally:
        warnings.showwarning = previous  # main() also runs in-process (tests, notebooks)


def _run(argv: list[str] | None) -> None:
    try:
        _register_plugin_commands()
        # standalone_mode=False returns typer.Exit's code (130 for Ctrl-C) instead of raising.
        code = app(args=argv, standalone_mode=False)
    except NeurolabelError as exc:
        _print_error(str(exc))
        sys.exit(2)
    except KeyboardInterrupt:
        _interrupted()
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except OSError as exc:
        # The machine refused (disk full, permissions changed, a file vanished): say what
        # and where; finished outputs stay whole (they are written atomically).
        where = f": {exc.filename}" if exc.filename else ""
        _print_error(f"{exc.strerror or type(exc).__name__}{where}")
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
    if code == 130:
        _interrupted()
    if isinstance(code, int) and code:
        sys.exit(code)
