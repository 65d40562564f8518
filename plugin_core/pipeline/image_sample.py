"""Whole-image statistics over a uniform sample of the probing set, dense or factored.

Aggregations such as ``contrast`` and CLIP-Dissect's ``cos-cubed`` need, for each concept, its
score on every sampled image, ``[S, V]``. For an embedding scorer those scores are the product
of ``[S, D]`` image embeddings and ``[V, D]`` concept embeddings, and the statistics the
aggregations take from them (per-concept moments, correlations with the neurons'
activations, the scores of a few chosen concepts) are all linear or quadratic in the scores.
They are computed here in the ``D``-dimensional embedding space, through the images' Gram
matrix, so the ``[S, V]`` matrix is never formed: 2,000 sampled images against a
20,000-word vocabulary would take 160 MB per layer, and forming it ``S * V * D``
multiply-adds instead of ``(S + V) * D^2``. Concept scorers (no embeddings) give the dense
matrix, reduced in chunks of concepts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import NeurolabelError

#: Elements of each temporary block the statistics form (float64: 4 MB). A block's shape
#: follows the data (2,000 images x 256 concepts, 20,000 words x 512 embedding dimensions
#: split in 52 parts), so memory stays flat whatever the sample or vocabulary size: the
#: scores of 2,000 images against 20,000 words would take 320 MB in float64 at once, and
#: freed blocks of tens of megabytes stay in the process (the C heap keeps them).
BLOCK_ELEMENTS = 2**19


def block_rows(row_elements: int) -> int:
    """Rows of a block whose rows have ``row_elements`` elements each (at least one).

    Examples:
        >>> block_rows(512), block_rows(10**9)
        (1024, 1)
    """
    return max(1, BLOCK_ELEMENTS // max(row_elements, 1))


@dataclass(frozen=True)
class ImageSample:
    """Whole-image statistics over (a uniform sample of) the probing set.

    Give the scores either dense (``sims``) or factored (``image_embeddings`` and
    ``concept_embeddings``, scores = their dot products); the methods answer the same either
    way.

    Args:
        acts: ``[S, C]`` per-image activation of every neuron.
        sims: ``[S, V]`` whole-image score of every concept, or None when factored.
        exemplar_rows: Optional ``[C, k]``: the sample row of each neuron's j-th exemplar
            image, ``-1`` where that image is not in the sample (or the exemplar is missing).
            Lets a validation on held-out sampled images keep them out of the exemplar
            evidence too.
        image_embeddings: ``[S, D]`` embeddings of the sampled images (factored form).
        concept_embeddings: ``[V, D]`` embeddings of the concepts (factored form).

    Examples:
        >>> emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
        >>> text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> factored = ImageSample(torch.rand(3, 4), image_embeddings=emb, concept_embeddings=text)
        >>> dense = ImageSample(factored.acts, emb @ text.T)
        >>> factored.num_concepts, torch.allclose(factored.scores(), dense.scores())
        (2, True)
    """

    acts: Tensor
    sims: Tensor | None = None
    exemplar_rows: Tensor | None = None
    image_embeddings: Tensor | None = None
    concept_embeddings: Tensor | None = None

    def __post_init__(self) -> None:
        factored = self.image_embeddings is not None or self.concept_embeddings is not None
        if factored == (self.sims is not None):
            raise NeurolabelError(
                "ImageSample takes either sims [S, V] or image_embeddings [S, D] with "
                "concept_embeddings [V, D], not both and not neither"
            )
        if factored and (self.image_embeddings is None or self.concept_embeddings is None):
            raise NeurolabelError(
                "ImageSample's factored form needs both image_embeddings and concept_embeddings"
            )
        rows = self.sims if self.sims is not None else self.image_embeddings
        assert rows is not None
        if rows.shape[0] != self.acts.shape[0]:
            raise NeurolabelError(
                f"ImageSample: {self.acts.shape[0]} images of activations but "
                f"{rows.shape[0]} of scores"
            )
        if factored:
            assert self.image_embeddings is not None and self.concept_embeddings is not None
            if self.image_embeddings.shape[1] != self.concept_embeddings.shape[1]:
                raise NeurolabelError(
                    f"ImageSample: image embeddings of dimension "
                    f"{self.image_embeddings.shape[1]} but concept embeddings of "
                    f"{self.concept_embeddings.shape[1]}"
                )

    @property
    def factored(self) -> bool:
        """Whether the scores are kept as image and concept embeddings."""
        return self.sims is None

    @property
    def num_images(self) -> int:
        """``S``, the number of sampled images."""
        return int(self.acts.shape[0])

    @property
    def num_concepts(self) -> int:
        """``V``, the number of concepts."""
        if self.sims is not None:
            return int(self.sims.shape[1])
        assert self.concept_embeddings is not None
        return int(self.concept_embeddings.shape[0])

    def _embeddings(self, rows: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(float64 image embeddings of rows [S', D], concept embeddings [V, D])``; the
        concepts are cast to float64 a chunk at a time (:meth:`_concept_chunks`), as a
        float64 copy of a 20,000-word vocabulary's embeddings alone is 80 MB."""
        assert self.image_embeddings is not None and self.concept_embeddings is not None
        images = self.image_embeddings if rows is None else self.image_embeddings[rows]
        return images.double(), self.concept_embeddings

    @staticmethod
    def _concept_chunks(text: Tensor, block_height: int = 0) -> Iterator[tuple[slice, Tensor]]:
        """Float64 concept embeddings a block at a time; ``block_height``: rows of the blocks
        the caller forms from them (images, neurons), which bound the block too."""
        step = block_rows(max(text.shape[1], block_height))
        for start in range(0, len(text), step):
            columns = slice(start, start + step)
            yield columns, text[columns].double()

    def scores(self, concepts: Tensor | None = None, rows: Tensor | None = None) -> Tensor:
        """Scores of some concepts on some sampled images, as a dense block.

        Args:
            concepts: Concept indices ``[n]`` (repeats allowed), or None for all.
            rows: Sampled-image indices, or None for all.

        Returns:
            ``[S', n]`` float32 scores; column ``j`` is concept ``concepts[j]``.
        """
        if self.sims is not None:
            block = self.sims if concepts is None else self.sims.index_select(1, concepts)
            return (block if rows is None else block[rows]).float()
        assert self.image_embeddings is not None and self.concept_embeddings is not None
        images = self.image_embeddings if rows is None else self.image_embeddings[rows]
        text = self.concept_embeddings if concepts is None else self.concept_embeddings[concepts]
        return (images.float() @ text.float().T).float()

    def chunks(self, rows: Tensor | None = None) -> Iterator[tuple[slice, Tensor]]:
        """Dense float64 blocks of scores, a few concepts at a time (:data:`BLOCK_ELEMENTS`).

        For statistics that are not linear in the scores (CLIP-Dissect's cubes); the whole
        ``[S, V]`` matrix is never held at once.

        Args:
            rows: Sampled-image indices, or None for all.

        Yields:
            ``(concept slice, [S', concepts in the slice] scores)``.
        """
        if self.sims is None:
            images, text = self._embeddings(rows)
            for columns, part in self._concept_chunks(text, len(images)):
                yield columns, images @ part.T
            return
        step = block_rows(self.num_images)  # all rows: a bound for any subset of them
        for start in range(0, self.num_concepts, step):
            columns = slice(start, start + step)
            part = self.sims[:, columns] if rows is None else self.sims[rows, columns]
            yield columns, part.double()

    def moments(self, rows: Tensor | None = None) -> tuple[int, Tensor, Tensor]:
        """Each concept's mean score and sum of squared deviations over the sampled images.

        Args:
            rows: Sampled-image indices, or None for all.

        Returns:
            ``(count, mean [V], centered sum of squares [V])``, float64.
        """
        count = self.num_images if rows is None else len(rows)
        mean = torch.zeros(self.num_concepts, dtype=torch.float64)
        squares = torch.zeros_like(mean)
        if count == 0:
            return 0, mean, squares
        if self.sims is not None:
            for columns, part in self.chunks(rows):
                centered = part - part.mean(dim=0, keepdim=True)
                mean[columns] = part.mean(dim=0)
                squares[columns] = (centered * centered).sum(dim=0)
            return count, mean, squares
        images, text = self._embeddings(rows)
        center = images.mean(dim=0)
        centered = images - center
        del images  # a float64 copy of the embeddings: not kept beside the centered one
        gram = centered.T @ centered  # [D, D]: all second moments of the scores
        for columns, part in self._concept_chunks(text):
            mean[columns] = part @ center
            squares[columns] = ((part @ gram) * part).sum(dim=1)
        return count, mean, squares.clamp(min=0)

    def centered_products(self, weights: Tensor, rows: Tensor | None = None) -> Tensor:
        """``sum_s weights[s, c] * (score[s, v] - mean_v)`` for every column ``c`` and concept.

        With standardized activations as ``weights`` this is the numerator of each
        neuron-concept correlation.

        Args:
            weights: ``[S', C]`` per-image weights, one row per sampled image in ``rows``.
            rows: Sampled-image indices, or None for all.

        Returns:
            ``[C, V]`` float64.
        """
        weights = weights.double()
        if self.sims is not None:
            out = torch.empty(weights.shape[1], self.num_concepts, dtype=torch.float64)
            for columns, part in self.chunks(rows):
                out[:, columns] = weights.T @ (part - part.mean(dim=0, keepdim=True))
            return out
        images, text = self._embeddings(rows)
        projected = weights.T @ (images - images.mean(dim=0))  # [C, D]
        out = torch.empty(weights.shape[1], self.num_concepts, dtype=torch.float64)
        for columns, part in self._concept_chunks(text, weights.shape[1]):
            out[:, columns] = projected @ part.T
        return out
