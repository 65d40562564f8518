"""Reading lists of labels out of model answers: JSON when it parses, tolerant lines when not.

Models asked for JSON still wrap it in code fences, add a sentence before it, or are cut off
at the token limit; models without a JSON mode answer with bullet lists. These functions
recover every complete item from all of those, and nothing from a half-written one.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["labelled_items", "parse_json_answer", "parse_lines"]

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.DOTALL)
# A complete flat JSON object (no nested braces), e.g. {"concept": "fur", "category": "texture"}.
_OBJECT = re.compile(r"\{[^{}]*\}")
# A complete JSON string inside an array, for truncated ["a", "b", "c...
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"\s*(?=[,\]])')
_BULLET = re.compile(r"^\s*(?:[-*•+]|\d+[.)]|[a-z][.)])\s+", re.IGNORECASE)
_PAREN_TAG = re.compile(r"^(.*?)\s*[\(\[]\s*([A-Za-z ]+?)\s*[\)\]]\s*$")


def parse_json_answer(text: str) -> Any | None:
    """The JSON value in a model's answer, or None when there is none.

    Accepts a bare value, one inside a Markdown code fence, or one after some prose.

    Args:
        text: The answer.

    Returns:
        The parsed value, or None.

    Examples:
        >>> parse_json_answer('Sure!\\n```json\\n{"labels": ["fur"]}\\n```')
        {'labels': ['fur']}
        >>> parse_json_answer('{"labels": ["fur", "whisk') is None
        True
    """
    candidates = [text.strip()]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    for candidate in candidates:
        for opener in "{[":
            start = candidate.find(opener)
            if start < 0:
                continue
            try:
                value, _ = json.JSONDecoder().raw_decode(candidate[start:])
                return value
            except json.JSONDecodeError:
                continue
    return None


def _strings_in(value: Any, keys: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """``(label, tag)`` pairs from a parsed JSON answer of any reasonable shape."""
    if isinstance(value, dict):
        for key in keys:
            if key in value:
                return _strings_in(value[key], keys)
        label = next((value[k] for k in ("concept", "label", "name") if k in value), None)
        if isinstance(label, str):
            tag = value.get("category") or value.get("type")
            return [(label, tag if isinstance(tag, str) else None)]
        # {"texture": ["striped", ...], "color": [...]}: categories as keys.
        out: list[tuple[str, str | None]] = []
        for tag, items in value.items():
            if isinstance(items, list):
                out.extend((s, str(tag)) for s in items if isinstance(s, str))
        return out
    if isinstance(value, list):
        out = []
        for item in value:
            if isinstance(item, str):
                out.append((item, None))
            elif isinstance(item, dict):
                out.extend(_strings_in(item, keys))
        return out
    if isinstance(value, str):
        return [(value, None)]
    return []


def parse_lines(text: str) -> list[tuple[str, str | None]]:
    """``(label, tag)`` pairs from a plain-text list, one item per line or comma.

    Understands bullets and numbering, ``label (tag)``, ``label - tag`` / ``label: tag``
    where the tag is one word, and ``Tag: a, b, c`` headings.

    Args:
        text: The answer.

    Returns:
        The items, in order (not yet normalized or filtered).

    Examples:
        >>> parse_lines("1. striped (texture)\\n- fur: texture\\nColors: red, blue")
        [('striped', 'texture'), ('fur', 'texture'), ('red', 'Colors'), ('blue', 'Colors')]
    """
    out: list[tuple[str, str | None]] = []
    for raw in text.splitlines():
        line = _BULLET.sub("", raw.strip().strip("`")).strip()
        line = line.strip("*_").strip()
        if not line or line.startswith(("{", "}", "[", "]")):
            continue
        tagged = _PAREN_TAG.match(line)
        if tagged:
            out.append((tagged.group(1), tagged.group(2)))
            continue
        head, sep, rest = line.partition(":")
        if sep and rest.strip():
            if " " not in rest.strip() and "," not in rest:
                out.append((head.strip(), rest.strip()))
            elif len(head.split()) <= 2:
                out.extend((item.strip(), head) for item in rest.split(",") if item.strip())
            else:  # a sentence with a colon: not a list item
                continue
            continue
        head, sep, rest = line.partition(" - ")
        if sep and len(rest.split()) == 1:
            out.append((head, rest))
            continue
        out.extend((item.strip(), None) for item in line.split(",") if item.strip())
    return out


def labelled_items(
    text: str, keys: tuple[str, ...] = ("concepts", "labels", "items")
) -> tuple[list[tuple[str, str | None]], str]:
    """Every ``(label, tag)`` item of an answer, and how it was read.

    Tries, in order: the answer's JSON; the complete objects or strings of a JSON answer cut
    off mid-way (a truncated answer keeps its finished items only); tolerant line parsing.

    Args:
        text: The answer.
        keys: Keys under which a JSON object keeps its list.

    Returns:
        ``(items, how)`` with ``how`` one of ``"json"``, ``"partial-json"``, ``"lines"``.

    Examples:
        >>> labelled_items('{"labels": ["fur", "whiskers"]}')
        ([('fur', None), ('whiskers', None)], 'json')
        >>> labelled_items('{"concepts": [{"concept": "fur", "category": "texture"}, {"conc')
        ([('fur', 'texture')], 'partial-json')
    """
    value = parse_json_answer(text)
    if value is not None:
        items = _strings_in(value, keys)
        if items:
            return items, "json"
    if "{" in text or "[" in text:
        body = text[text.find("[") if "[" in text else text.find("{") :]
        objects = []
        for match in _OBJECT.finditer(body):
            try:
                objects.append(json.loads(match.group(0)))
            except json.JSONDecodeError:
                continue
        items = _strings_in(objects, keys)
        if not items:
            items = [(json.loads(f'"{m.group(1)}"'), None) for m in _STRING.finditer(body)]
            items = [(s, t) for s, t in items if s not in keys]
        if items:
            return items, "partial-json"
    return parse_lines(text), "lines"
