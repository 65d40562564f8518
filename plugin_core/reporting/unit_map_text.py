"""What a result's units are, in words for the reports (``settings.unit_map``)."""

from __future__ import annotations

from typing import Any

from ..data.result import LabelingResult


def unit_map_line(result: LabelingResult) -> str | None:
    """One phrase naming the result's units, or None when they are channels.

    Args:
        result: The labeling result.

    Returns:
        E.g. ``units sae:sae.npz (6 units of 8 channels, with decoder, file sha256 …)``.

    Examples:
        >>> record = {"spec": "directions:pca?k=2", "kind": "pca", "units": 2,
        ...           "explained_variance": {"fc": [0.6, 0.3]}}
        >>> unit_map_line(LabelingResult({}, {}, {}, settings={"unit_map": record}))
        'units directions:pca?k=2 (2 principal directions; 90 % of the variance of fc)'
    """
    record = result.settings.get("unit_map")
    if not isinstance(record, dict):
        return None
    kind = record.get("kind")
    details: list[str] = []
    if kind == "pca":
        details.append(f"{record.get('units')} principal directions")
        variance = record.get("explained_variance") or {}
        shares = [
            f"{round(100 * sum(values))} % of the variance of {layer}"
            for layer, values in variance.items()
        ]
        if shares:
            return f"units {record.get('spec')} ({details[0]}; {', '.join(shares)})"
    elif kind == "heads":
        heads = record.get("heads") or {}
        details.extend(f"{count} heads in {layer}" for layer, count in heads.items())
    elif record.get("units") is not None:
        of = f" of {record['channels']} channels" if record.get("channels") else ""
        details.append(f"{record['units']} units{of}")
    if kind == "sae":
        details.append("with decoder" if record.get("decoder") else "no decoder")
    if record.get("file_sha256"):
        details.append(f"file sha256 {record['file_sha256']}")
    return f"units {record.get('spec')}" + (f" ({', '.join(details)})" if details else "")


def shown_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings as a report shows them: a fitted unit map's matrices left out (they
    are in result.json for the evaluators, not for reading)."""
    record = settings.get("unit_map")
    if not isinstance(record, dict) or "fitted" not in record:
        return settings
    return {**settings, "unit_map": {k: v for k, v in record.items() if k != "fitted"}}
