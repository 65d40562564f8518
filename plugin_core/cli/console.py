"""What every command shares: the consoles (results on stdout, messages on stderr) and the
option types several commands take."""

from __future__ import annotations

from typing import Annotated

import typer

from ..runtime.terminal import SafeConsole

# Safe consoles: untrusted text (concepts, file names, plugin descriptions) never carries a
# control character to the terminal.
console = SafeConsole()
err_console = SafeConsole(stderr=True)

Device = Annotated[
    str, typer.Option("--device", help="auto, cpu, cuda or cuda:N", metavar="DEVICE")
]
#: Flags take no value: an empty metavar keeps help from showing a type for them.
AsJson = Annotated[bool, typer.Option("--json", help="Machine-readable output", metavar="")]
