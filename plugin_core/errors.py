"""Errors that carry a message a user can act on (the CLI prints them without a traceback)."""

from __future__ import annotations


class NeurolabelError(Exception):
    """Base class: a problem with the user's input or environment, explained in the message."""


class SpecError(NeurolabelError, ValueError):
    """A spec string (``NAME[:ARGUMENT][?key=value]``) could not be parsed or resolved."""


class InvalidSettingError(NeurolabelError, ValueError):
    """A setting has a value outside what it accepts; the message names what it accepts."""


class UnknownNameError(SpecError, KeyError):
    """A spec names something no plugin registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class LayerNotFoundError(NeurolabelError, KeyError):
    """A layer name does not exist in the model."""

    def __str__(self) -> str:
        return str(self.args[0])


class MissingExtraError(NeurolabelError, ImportError):
    """An optional dependency is missing; the message names the extra that installs it."""


class EmptyInputError(NeurolabelError):
    """An input that must not be empty is (no images, no concepts)."""


class NeurolabelWarning(UserWarning):
    """A run went on but its result may mislead: the message says why and what to change.

    The CLI prints these as one ``Warning:`` line; the result records them too
    (``settings["warnings"]``).
    """


def missing_extra(package: str, extra: str, purpose: str) -> MissingExtraError:
    """Build the error for a missing optional dependency.

    Args:
        package: Import name that failed.
        extra: Name of the neurolabel extra that installs it.
        purpose: What the user asked for that needs it.

    Returns:
        A :class:`MissingExtraError` whose message says how to fix the problem.
    """
    return MissingExtraError(
        f"{purpose} needs the package '{package}', which is not installed. "
        f"Install it with: pip install 'neurolabel[{extra}]'"
    )
