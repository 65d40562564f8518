"""Consoles whose text never carries a control character to the terminal.

Concept names, file names, plugin descriptions, model answers and result files are
untrusted: a string holding ``ESC ] 52`` (OSC 52) sets the clipboard of the terminal that
prints it, others change the window title or move the cursor over earlier output. A
:class:`SafeConsole` shows every control character of the text it prints as a visible
escape (``\\x1b``); its own styling and the progress bars' cursor movements, which rich
emits separately from the text, are unaffected.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rich.console import Console
from rich.segment import Segment

# C0 controls but newline and tab, DEL, and the C1 controls (CSI, OSC... as single bytes).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def visible_controls(text: str) -> str:
    """``text`` with each control character written out (``\\x1b``), newlines and tabs kept.

    Examples:
        >>> visible_controls("tabby\\x1b]52;c;aGk=\\x07cat")
        'tabby\\\\x1b]52;c;aGk=\\\\x07cat'
    """
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def shorten(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters, saying how much was cut: a message that
    quotes a user's input (a 1 MB line of a file) stays readable.

    Examples:
        >>> shorten("x" * 500, 20)
        'xxxxxxxxxxxxxxxxxxxx… (480 more characters)'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class SafeConsole(Console):
    """A rich :class:`~rich.console.Console` that prints text with its control characters
    made visible (:func:`visible_controls`).

    Examples:
        >>> console = SafeConsole(width=40, force_terminal=False)
        >>> with console.capture() as captured:
        ...     console.print("evil\\x1b]0;title\\x07", highlight=False)
        >>> "\\x1b" in captured.get(), captured.get().strip()
        (False, 'evil\\\\x1b]0;title')
    """

    def _render_buffer(self, buffer: Iterable[Segment]) -> str:
        safe = (
            Segment(visible_controls(text), style, control) if control is None else segment
            for segment in buffer
            for text, style, control in [segment]
        )
        return super()._render_buffer(safe)
