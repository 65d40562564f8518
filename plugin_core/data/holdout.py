"""Split one image set into probing images and held-out images, disjoint by construction.

Faithfulness must be measured on images the labeler never saw. Keeping two folders apart
is easy to get wrong; ``NeuronLabeler(..., holdout=0.2)`` instead sets a seeded random
share of the images aside, labels with the rest, and records the held-out part in the
result (``result.dataset["holdout"]``) so the ``faithfulness`` evaluator can use it
without being given a folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from ..errors import EmptyInputError, NeurolabelError
from .images import ImageLoadError, ImageSource, SkippedInput, open_image, printable_path
from .result_files import ResultFiles


class SubsetSource(ImageSource):
    """Some images of another :class:`ImageSource`, by index, in the given order.

    Args:
        parent: The full image source.
        indices: Indices into ``parent``.
        part: A name for this part (``probe``, ``holdout``), part of the fingerprint.

    Examples:
        >>> from neurolabel.plugin_core.data.images import as_image_source
        >>> full = as_image_source([Image.new("RGB", (8, 8), c) for c in ("red", "blue")])
        >>> part = SubsetSource(full, [1])
        >>> len(part), part.load(0).getpixel((0, 0))
        (1, (0, 0, 255))
    """

    def __init__(self, parent: ImageSource, indices: Sequence[int], part: str = "subset") -> None:
        self.parent = parent
        self.indices = [int(i) for i in indices]
        self.part = part
        #: What :func:`split_holdout` recorded about the other part (probing parts only).
        self.holdout: dict[str, Any] | None = None
        #: What :func:`split_verification` recorded about the verification split.
        self.verification: dict[str, Any] | None = None
        # Files the parent rejected before reading belong to the probing side's report only.
        self.skipped_upfront = list(parent.skipped_upfront) if part == "probe" else []

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, index: int) -> Image.Image:
        return self.parent.load(self.indices[index])

    def describe(self, index: int) -> str:
        return self.parent.describe(self.indices[index])

    def name(self, index: int) -> str:
        return self.parent.name(self.indices[index])

    def size(self, index: int) -> tuple[int, int]:
        return self.parent.size(self.indices[index])

    def _digest(self, base: str) -> str:
        digest = hashlib.sha256(f"{base}:{self.part}:".encode())
        digest.update(",".join(map(str, self.indices)).encode())
        return digest.hexdigest()

    def fingerprint(self) -> str:
        return self._digest(self.parent.fingerprint())[:16]

    def cache_key(self) -> str | None:
        key = self.parent.cache_key()
        return None if key is None else self._digest(key)[:20]

    @property
    def root(self) -> Path | None:
        """The parent folder, when the parent is a folder."""
        return self.parent.root


class PathListSource(ImageSource):
    """Image files given as a list of paths (e.g. a result's recorded held-out images).

    Args:
        paths: Image files.
        name: What the list is, for messages (e.g. ``held-out images of result.json``).
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        name: str = "image list",
        skipped: Sequence[SkippedInput] = (),
    ) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise EmptyInputError(f"The {name} is empty")
        self.label = name
        self.skipped_upfront = list(skipped)

    def __str__(self) -> str:
        return self.label

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        path = self.paths[index]
        if not os.path.lexists(path):  # anything else (a broken link, a FIFO) open_image says
            raise ImageLoadError(f"file not found ({printable_path(path)})")
        return open_image(path)

    def describe(self, index: int) -> str:
        return printable_path(self.paths[index])

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in self.paths:
            digest.update(os.fsencode(path))  # the name's own bytes, also when not UTF-8
            digest.update(str(path.stat().st_size if path.is_file() else -1).encode())
        return digest.hexdigest()[:16]


def split_holdout(
    source: ImageSource, fraction: float, seed: int = 0, groups: Sequence[int] | None = None
) -> tuple[SubsetSource, SubsetSource]:
    """Set a random share of the images aside: ``(probing part, held-out part)``.

    The split is a seeded permutation, so the same images, fraction and seed always give
    the same parts; each part keeps the source's order.

    Args:
        source: All images.
        fraction: Share held out, in ``(0, 1)``; at least one image stays on each side.
        seed: Random seed of the split.
        groups: The source of each image (see
            :func:`~neurolabel.plugin_core.data.image_groups.source_groups`): whole sources
            are held out, so no crop of a held-out photo is probed (about ``fraction`` of
            the images).

    Returns:
        The probing part (its ``holdout`` attribute holds :func:`holdout_record` of the
        other part) and the held-out part.

    Examples:
        >>> from neurolabel.plugin_core.data.images import as_image_source
        >>> full = as_image_source([Image.new("RGB", (4, 4)) for _ in range(10)])
        >>> probe, held = split_holdout(full, 0.3)
        >>> len(probe), len(held), sorted(probe.indices + held.indices) == list(range(10))
        (7, 3, True)
        >>> probe.holdout["count"], probe.holdout["images"] == [f"#{i}" for i in held.indices]
        (3, True)
    """
    check_holdout(fraction)
    count = len(source)
    held_count = int(round(fraction * count))
    if held_count < 1 or held_count >= count:
        raise NeurolabelError(
            f"holdout={fraction} of {count} image(s) leaves one side empty: use more images "
            "or another fraction"
        )
    generator = torch.Generator().manual_seed(seed)
    if groups is None:
        order = torch.randperm(count, generator=generator)
        held = sorted(order[:held_count].tolist())
    else:
        members: dict[int, list[int]] = {}
        for index, group in enumerate(groups):
            members.setdefault(int(group), []).append(index)
        names = list(members)
        held = []
        for position in torch.randperm(len(names), generator=generator).tolist():
            if len(held) >= held_count:
                break
            held.extend(members[names[position]])
        held.sort()
        if len(held) >= count:
            raise NeurolabelError(
                f"holdout={fraction} would hold out every source (there are {len(names)}): "
                "use more images or another fraction"
            )
    kept = set(held)
    probe = [index for index in range(count) if index not in kept]
    probing, held_out = SubsetSource(source, probe, "probe"), SubsetSource(source, held, "holdout")
    probing.holdout = holdout_record(held_out, fraction, seed)
    return probing, held_out


def check_holdout(fraction: float) -> None:
    """Refuse a holdout share outside ``(0, 1)`` with a message saying what to give.

    Examples:
        >>> check_holdout(0.2)
    """
    if not 0 < fraction < 1:
        raise NeurolabelError(
            f"holdout={fraction}: give the share of images to set aside, between 0 and 1 (e.g. 0.2)"
        )


def holdout_entry(source: ImageSource) -> dict[str, Any]:
    """``{"holdout": record}`` for a probing part made by :func:`split_holdout`, else ``{}``
    (merged into ``result.dataset``); ``"verification"`` too after :func:`split_verification`."""
    out = {}
    for part in ("holdout", "verification"):
        record = getattr(source, part, None)
        if record:
            out[part] = record
    return out


def split_verification(
    source: ImageSource, fraction: float, seed: int = 0, groups: Sequence[int] | None = None
) -> tuple[SubsetSource, SubsetSource]:
    """Set the verification split of verified descriptions aside: ``(probing, verification)``.

    Called after :func:`split_holdout` (on its probing part), so the evaluation holdout and
    the verification split are disjoint: the candidates of a verified description are tested
    on images that neither the exemplar search nor the report's own figures use. The
    probing part keeps the evaluation holdout's record.

    Args:
        source: The probing images (after any evaluation holdout).
        fraction: Share set aside for verification, in ``(0, 1)``.
        seed: Random seed of the split.
        groups: The source of each image: whole sources go to one side.

    Returns:
        The probing part (``verification`` attribute: the split's record) and the split.

    Examples:
        >>> from neurolabel.plugin_core.data.images import as_image_source
        >>> full = as_image_source([Image.new("RGB", (4, 4)) for _ in range(10)])
        >>> probe, held = split_holdout(full, 0.2)
        >>> probe2, verify = split_verification(probe, 0.25)
        >>> len(probe2), len(verify), probe2.holdout["count"], probe2.verification["count"]
        (6, 2, 2, 2)
        >>> names = lambda part: {part.name(i) for i in range(len(part))}
        >>> names(verify) & names(held)
        set()
    """
    evaluation = getattr(source, "holdout", None)
    try:
        probing, verification = split_holdout(source, fraction, seed, groups)
    except NeurolabelError as exc:
        raise NeurolabelError(
            f"verify_split={fraction} of {len(source)} probing image(s): {exc}. Verified "
            "descriptions test their candidates on images set aside from the probing set"
        ) from exc
    probing.verification = probing.holdout
    probing.holdout = evaluation
    return probing, verification


def holdout_record(held: SubsetSource, fraction: float, seed: int) -> dict[str, Any]:
    """What a result stores about its held-out images (``result.dataset["holdout"]``).

    Args:
        held: The held-out part from :func:`split_holdout`.
        fraction: The share held out.
        seed: The split's seed.

    Returns:
        ``{"fraction", "seed", "count", "images"}``; ``images`` are paths for folder
        inputs and ``#index`` names (not re-readable later) for in-memory datasets.
    """
    return {
        "fraction": fraction,
        "seed": seed,
        "count": len(held),
        "images": [held.name(i) for i in range(len(held))],
    }


def held_out_source(dataset: dict[str, Any], root: str | Path | None = None) -> PathListSource:
    """The held-out images a result recorded, as a source the evaluators can read.

    Args:
        dataset: ``result.dataset``.
        root: The probing folder, when it is no longer where the result recorded it.

    Returns:
        A :class:`PathListSource` of the recorded paths.

    Raises:
        NeurolabelError: When the result has no held-out part, or recorded images that
            cannot be re-read (an in-memory dataset's ``#index`` names).
    """
    record = dataset.get("holdout")
    if not record or not record.get("images"):
        raise NeurolabelError(
            "The result has no held-out images: explain with holdout=FRACTION (CLI: "
            "--holdout 0.2), or pass images=DIR (a folder the labeler never saw)"
        )
    images = record["images"]
    if any(str(item).startswith("#") for item in images):
        raise NeurolabelError(
            "The result's held-out images came from an in-memory dataset and cannot be "
            "re-read from the result: pass images=DIR"
        )
    # Names under the recorded probing folder; one that leads out of it is not read.
    files = ResultFiles(dataset, images=root)
    paths, refused = [], []
    for name in images:
        path = files.image(str(name))
        if path is None and str(name) in files.refused:
            refused.append(SkippedInput(str(name), "refused: outside the probing folder"))
        else:
            paths.append(path or (files.root or Path()) / str(name))
    return PathListSource(paths, "held-out images recorded in the result", refused)
