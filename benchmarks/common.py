"""What several benchmarks share: a labeler with the ImageNet vocabulary, and the JSON they
print and keep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def emit(report: dict[str, Any], path: Path | None) -> None:
    """Print ``report`` as indented JSON; also write it to ``path`` when given."""
    text = json.dumps(report, indent=1)
    print(text)
    if path:
        path.write_text(text + "\n", encoding="utf-8")


def imagenet_labeler(target: str, layer: str, args: Any, ctx: Any, **options: Any) -> Any:
    """A labeler of ``layer`` with ``args.eye``, the ImageNet class names as vocabulary,
    ``args.top_k``, ``args.batch_size`` and a progress bar unless ``args.quiet``."""
    from neurolabel import NeuronLabeler

    return NeuronLabeler(
        target,
        layers=[layer],
        scorer=args.eye,
        vocabulary="imagenet",
        top_k=args.top_k,
        context=ctx,
        batch_size=args.batch_size,
        progress=not args.quiet,
        **options,
    )
