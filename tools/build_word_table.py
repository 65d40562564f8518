"""Build the word table shipped with the packaged sentence embedder (the HTML report's Ask
tab reads it instead of embedding 20,000 words at every first report).

    python tools/build_word_table.py

Writes ``backends/data/minilm_words.npz``: the ``TABLE_WORDS`` most frequent English words
of ``wordfreq``, their all-MiniLM-L6-v2 embeddings projected on their first ``DIMENSIONS``
principal components (``basis``, ``mean``) as int8 rows. Run it again when the packaged
model or those constants change; ``tests/test_html_report.py`` checks that the shipped
table matches the model.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "backends" / "data" / "minilm_words.npz"


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from neurolabel.backends.text_embedding import load_text_embedder
    from neurolabel.plugin_core.reporting.query_table import (
        DIMENSIONS,
        TABLE_WORDS,
        english_words,
        principal_projection,
        quantize,
    )

    words = english_words(TABLE_WORDS)
    embedded = load_text_embedder(None, "cpu").encode(words).float()
    basis, mean = principal_projection(embedded, DIMENSIONS)
    vectors = quantize(embedded, basis, mean)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        OUT,
        words=np.array(words),
        vectors=vectors.numpy(),
        basis=basis.numpy().astype(np.float32),
        mean=mean.numpy().astype(np.float32),
    )
    print(f"{OUT}: {len(words)} words, {basis.shape[1]} dimensions, {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
