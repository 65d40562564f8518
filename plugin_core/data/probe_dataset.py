"""The probing images as a torch ``Dataset`` for the DataLoader of the exemplar pass.

It lives apart from :mod:`.images` because it subclasses a torch type: importing
:mod:`.images` (as the report does) does not import torch, importing this module does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .images import ImageLoadError, ImageSource

if TYPE_CHECKING:
    from .preprocessing import Preprocessing


class ProbeDataset(torch.utils.data.Dataset):
    """Preprocessed images for the DataLoader; unreadable ones come back flagged, not raised,
    so one bad file never stops a run (and workers can report it)."""

    def __init__(self, source: ImageSource, preprocessing: Preprocessing) -> None:
        self.source = source
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, str]:
        try:
            return self.preprocessing(self.source.load(index)), index, ""
        except ImageLoadError as exc:
            height, width = self.preprocessing.crop_size
            return torch.zeros(3, height, width), index, str(exc) or "unreadable"
