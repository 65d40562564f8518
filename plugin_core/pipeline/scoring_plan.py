"""Choosing what the VLM scores: each exemplar's patch, or whole probing images.

The VLM's encoding is the expensive stage after the forward pass. Patch-level scoring
encodes about neurons x k exemplar patches; image-level scoring (CLIP-Dissect's way) at most
every probing image once. On a large probing set patches are far fewer; on a small one (or
for a whole network's thousands of neurons) images can be.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from ..errors import NeurolabelError


@dataclass(frozen=True)
class ScoringPlan:
    """The chosen scoring mode and the figures it was chosen on.

    Args:
        mode: ``patches`` or ``images``.
        exemplar_patches: Exemplar slots (neurons x k) patch-level scoring would encode.
        probing_images: Readable probing images image-level scoring would encode at most.
        reason: One sentence a user can read.
    """

    mode: str
    exemplar_patches: int
    probing_images: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_scoring(
    requested: str, patches: str, exemplar_patches: int, probing_images: int
) -> ScoringPlan:
    """Pick patch- or image-level scoring.

    Args:
        requested: ``auto``, ``patches`` or ``images``.
        patches: The labeler's patch mode; anything but ``auto`` is an explicit choice of
            where patches come from, which ``auto`` scoring respects.
        exemplar_patches: Exemplar slots over all explained neurons.
        probing_images: Readable probing images.

    Returns:
        The :class:`ScoringPlan`.

    Examples:
        >>> plan_scoring("auto", "auto", exemplar_patches=5000, probing_images=800).mode
        'images'
        >>> plan_scoring("auto", "auto", exemplar_patches=5000, probing_images=50000).mode
        'patches'
    """
    figures = f"{exemplar_patches:,} exemplar slots vs {probing_images:,} probing images"
    if requested == "images":
        if patches not in ("auto", "whole"):
            raise NeurolabelError(
                f"scoring='images' scores whole images, so patches={patches!r} would be "
                "ignored; use patches='auto' or scoring='patches'"
            )
        reason = f"asked for with scoring='images' ({figures})"
        return ScoringPlan("images", exemplar_patches, probing_images, reason)
    if requested == "patches" or patches != "auto":
        if requested != "patches" and patches == "whole":
            # Patch scoring where each exemplar's patch is its whole image: say so, or
            # "scoring patches" reads as a contradiction of patches='whole'.
            reason = f"each exemplar's patch is its whole image with patches='whole' ({figures})"
        else:
            why = "scoring='patches'" if requested == "patches" else f"patches={patches!r}"
            reason = f"asked for with {why} ({figures})"
        return ScoringPlan("patches", exemplar_patches, probing_images, reason)
    if probing_images < exemplar_patches:
        ratio = exemplar_patches / max(probing_images, 1)
        return ScoringPlan(
            "images",
            exemplar_patches,
            probing_images,
            f"whole images are {ratio:,.3g}x fewer to encode than exemplar patches ({figures}; "
            "scoring='patches' scores each exemplar's patch)",
        )
    return ScoringPlan(
        "patches",
        exemplar_patches,
        probing_images,
        f"exemplar patches are fewer to encode than whole images ({figures})",
    )
