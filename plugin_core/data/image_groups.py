"""Which probing images are views of one source: crops or tiles of one photo, frames of one
video. A neuron keeps at most one exemplar per source when the run is given a source
pattern, so its exemplars show different things rather than five crops of one picture.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ..errors import InvalidSettingError

if TYPE_CHECKING:
    from .images import ImageSource


def compile_source_pattern(pattern: str) -> re.Pattern[str]:
    """The compiled pattern, or a clear error saying what is wrong with it.

    Examples:
        >>> compile_source_pattern(r"(.+)_crop\\d+").pattern
        '(.+)_crop\\\\d+'
        >>> compile_source_pattern("(")
        Traceback (most recent call last):
        ...
        neurolabel.plugin_core.errors.InvalidSettingError: source_pattern '(' is not a ...
    """
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InvalidSettingError(
            f"source_pattern {pattern!r} is not a regular expression ({exc})"
        ) from None


def source_groups(source: ImageSource, pattern: str) -> list[int]:
    """The source of every image: images whose names give the same key are one source.

    The key of an image is the first group of ``pattern`` searched in its name (its path
    for a folder, ``#index`` otherwise), or the whole match when the pattern has no group;
    an image the pattern does not match is a source of its own.

    Args:
        source: The probing images.
        pattern: A regular expression, e.g. ``(.+?)(_q\\d\\d)?\\.png$`` for ``cat.png``
            and its quadrants ``cat_q00.png`` ... ``cat_q11.png``.

    Returns:
        A source number per image, numbered in order of first appearance.

    Examples:
        >>> from PIL import Image
        >>> from neurolabel.plugin_core.data.images import SequenceSource
        >>> names = ["cat.png", "cat_q00.png", "dog.png", "cat_q11.png", "other"]
        >>> class Named(SequenceSource):
        ...     def describe(self, index): return names[index]
        >>> source_groups(Named([Image.new("RGB", (4, 4))] * 5), r"(.+?)(_q\\d\\d)?\\.png$")
        [0, 0, 1, 0, 2]
    """
    compiled = compile_source_pattern(pattern)
    numbers: dict[str, int] = {}
    out = []
    for index in range(len(source)):
        name = source.describe(index)
        match = compiled.search(name)
        if match is None:
            key = f"\0{index}"  # unmatched: a source of its own
        else:
            key = (match.group(1) if compiled.groups else None) or match.group(0)
        out.append(numbers.setdefault(key, len(numbers)))
    return out
