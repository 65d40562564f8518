"""A third-party plugin: a color-share scorer registered as ``mycorp-vlm``."""

from __future__ import annotations

import numpy as np
import torch

from neurolabel import hookimpl

PRIMARIES = {"red": 0, "green": 1, "blue": 2}


class MyCorpScorer:
    """Scores 'red', 'green', 'blue' by the share of pixels where that channel dominates."""

    def __init__(self, margin: int) -> None:
        self.name = f"mycorp-vlm:{margin}"
        self.margin = margin

    def score_images(self, images, vocabulary):
        out = torch.zeros(len(images), len(vocabulary))
        for i, image in enumerate(images):
            array = np.asarray(image.convert("RGB"), dtype=np.int32)
            for j, concept in enumerate(vocabulary.concepts):
                channel = PRIMARIES.get(concept)
                if channel is None:
                    continue
                others = np.delete(array, channel, axis=2).max(axis=2)
                out[i, j] = float((array[..., channel] > others + self.margin).mean())
        return out


@hookimpl
def register_scorers(register):
    register(
        "mycorp-vlm",
        lambda spec, ctx: MyCorpScorer(int(spec.argument or 40)),
        description="MyCorp's color VLM",
    )
