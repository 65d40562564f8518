"""The ``open_clip`` scorer: image and text embeddings from an open_clip vision-language model.

Spec grammar: ``open_clip:MODEL[/TAG][?pretrained=...&templates=...&device=...&batch_size=...]``

* ``open_clip:ViT-B-32/laion2b_s34b_b79k``: a model config and one of its pretrained tags
  (downloaded by open_clip on first use, then read from its hub cache).
* ``open_clip:ViT-B-32?pretrained=/models/clip.pt``: the same architecture, weights from a
  local checkpoint file (the offline way).
* ``open_clip:ViT-S-32?pretrained=none``: random weights (tests, smoke runs).
* ``open_clip:hf-hub:timm/ViT-B-16-SigLIP`` and ``open_clip:local-dir:/models/clip``:
  open_clip's own schemas, passed through.

Text embeddings are averaged over a prompt-template ensemble and cached in memory and, for
real weights, on disk under ``<cache_dir>/text_embeddings``.

Examples:
    >>> from neurolabel import build_context
    >>> ctx = build_context("cpu")
    >>> scorer = ctx.registries.scorers.resolve("open_clip:ViT-S-32-alt?pretrained=none", ctx)
    >>> scorer.encode_texts(["dog", "cat"]).shape
    torch.Size([2, 256])
"""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurolabel.backends.hub_access import (
    cached_hub_file,
    hub_offline,
    hub_reachable,
    quiet_hub,
)
from neurolabel.plugin_core.errors import MissingExtraError, NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.contracts import EmbeddingScorer, iter_batches
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor

__all__ = [
    "CACHE_SUBDIR",
    "TEMPLATE_SETS",
    "OpenClipScorer",
    "register_scorers",
    "resolve_templates",
]

#: Folder under the context's cache directory that holds text-embedding caches.
CACHE_SUBDIR = "text_embeddings"

_RANDOM = {"none", "random"}
_SCHEMAS = ("hf-hub:", "local-dir:")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
_PRECISIONS = ("fp32", "fp16", "bf16")
_OPTIONS = frozenset({"pretrained", "device", "templates", "batch_size", "precision", "cache"})

# Generic prompts for cropped patches: "a photo of {}" also reads well for mass nouns and
# adjectives ("a photo of red"), where "a photo of a {}" does not.
_SIMPLE_TEMPLATES = (
    "a photo of a {}.",
    "a photo of {}.",
    "a close-up photo of a {}.",
    "a cropped photo of the {}.",
)


def _clip_templates(which: str) -> tuple[str, ...]:
    from open_clip.zero_shot_metadata import (
        OPENAI_IMAGENET_TEMPLATES,
        SIMPLE_IMAGENET_TEMPLATES,
    )

    # open_clip stores templates as lambdas; applying one to "{}" recovers its format string.
    chosen = SIMPLE_IMAGENET_TEMPLATES if which == "imagenet" else OPENAI_IMAGENET_TEMPLATES
    return tuple(template("{}") for template in chosen)


#: Named template ensembles for ``?templates=``.
TEMPLATE_SETS: dict[str, Callable[[], tuple[str, ...]]] = {
    "none": lambda: ("{}",),
    "simple": lambda: _SIMPLE_TEMPLATES,
    # The 7 templates the CLIP authors selected from their 80 for ImageNet zero-shot.
    "imagenet": lambda: _clip_templates("imagenet"),
    "imagenet80": lambda: _clip_templates("imagenet80"),
}


def resolve_templates(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """Turn a template-set name or custom templates into format strings with ``{}``.

    Args:
        value: ``"none"`` (the concept alone), ``"simple"`` (default: 4 generic photo
            prompts), ``"imagenet"`` (the 7 CLIP-selected ImageNet prompts),
            ``"imagenet80"`` (all 80 CLIP ImageNet prompts), custom templates separated by
            ``|`` (each containing ``{}``), or a sequence of such templates.

    Returns:
        The templates, each containing ``{}`` where the concept goes.

    Examples:
        >>> resolve_templates("none")
        ('{}',)
        >>> resolve_templates("a sketch of a {}.|a painting of a {}.")
        ('a sketch of a {}.', 'a painting of a {}.')
        >>> len(resolve_templates("imagenet"))
        7
    """
    if value is None:
        value = "simple"
    if isinstance(value, str):
        key = value.strip().lower()
        if key in TEMPLATE_SETS:
            return TEMPLATE_SETS[key]()
        templates = tuple(t.strip() for t in value.split("|") if t.strip())
    else:
        templates = tuple(value)
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise SpecError(
            f"Invalid templates {value!r}: use one of {', '.join(TEMPLATE_SETS)}, or custom "
            "templates separated by '|', each with {} where the concept goes "
            "(templates=a sketch of a {}.|a painting of a {}.)"
        )
    return templates


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise MissingExtraError(
            "The open_clip scorer needs the package 'open_clip_torch', which is not "
            "installed. Install it with: pip install open_clip_torch"
        ) from exc
    return open_clip


def _looks_like_path(value: str) -> bool:
    return (
        os.sep in value
        or "/" in value
        or value.startswith("~")
        or value.lower().endswith(_CHECKPOINT_SUFFIXES)
    )


def _file_fingerprint(path: Path) -> str:
    # Path, size and modification time identify a checkpoint without hashing gigabytes.
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _default_name(model_name: str, weights: str | None, weights_key: str | None) -> str:
    if weights_key is None:
        return f"open_clip:{model_name}?pretrained=none"
    if weights is None or weights_key == f"{model_name}/{weights}":
        return f"open_clip:{model_name}" + (f"/{weights}" if weights else "")
    return f"open_clip:{model_name}?pretrained={weights}"


def _check_model_name(open_clip: Any, model_name: str) -> None:
    if model_name.startswith(_SCHEMAS):
        return
    names = open_clip.list_models()
    if model_name in names:
        return
    lower = {n.lower(): n for n in names}
    close = difflib.get_close_matches(model_name.lower(), list(lower), n=6, cutoff=0.6)
    suggestion = ", ".join(lower[c] for c in close) if close else "none"
    raise SpecError(
        f"Unknown open_clip model '{model_name}'. Closest: {suggestion}. "
        f"open_clip {open_clip.__version__} knows {len(names)} models; list them with "
        "python -c 'import open_clip; print(open_clip.list_models())'"
    )


class OpenClipScorer:
    """An open_clip model as an :class:`~neurolabel.plugin_core.plugins.contracts.EmbeddingScorer`.

    Args:
        model_name: An open_clip config name (``"ViT-B-32"``) or a schema name
            (``"hf-hub:org/repo"``, ``"local-dir:/path"``).
        pretrained: A pretrained tag of that model (``"laion2b_s34b_b79k"``), a local
            checkpoint file, or None (or ``"none"``) for random weights. Must be None for
            schema names, which bring their own weights. Required, so that random weights
            are always asked for explicitly.
        device: Where the model runs (``"cpu"``, ``"cuda"``, a :class:`torch.device`).
        templates: Prompt templates, see :func:`resolve_templates`; each concept's embedding
            is the renormalized mean of its prompts' embeddings.
        batch_size: Images or prompts per forward pass.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` weights; outputs are float32 anyway.
        cache_dir: Folder for the on-disk text-embedding cache, or None for memory only.
            Never used with random weights, whose embeddings mean nothing across runs.
        trust_pickle: Let a local checkpoint run arbitrary pickled code (``torch.load``
            with ``weights_only=False``); only for files you trust.
        name: The spec shown in results; default the spec that rebuilds this scorer
            (``open_clip:MODEL/TAG``, ``open_clip:MODEL?pretrained=PATH``, ...).

    Examples:
        >>> scorer = OpenClipScorer("ViT-S-32-alt", None)  # random weights
        >>> scorer.name, scorer.random_weights
        ('open_clip:ViT-S-32-alt?pretrained=none', True)
        >>> from PIL import Image
        >>> img = scorer.encode_images([Image.new("RGB", (64, 64))])
        >>> txt = scorer.encode_texts(["a dog", "red"])
        >>> (img @ txt.T).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        model_name: str,
        pretrained: str | Path | None,
        *,
        device: str | torch.device = "cpu",
        templates: str | Sequence[str] | None = "simple",
        batch_size: int = 64,
        precision: str = "fp32",
        cache_dir: str | Path | None = None,
        trust_pickle: bool = False,
        name: str | None = None,
    ) -> None:
        import torch

        from neurolabel.plugin_core.plugins.context import resolve_device

        open_clip = _import_open_clip()
        if batch_size < 1:
            raise SpecError(f"batch_size must be at least 1, got {batch_size}")
        if precision not in _PRECISIONS:
            raise SpecError(f"precision must be one of {', '.join(_PRECISIONS)}, not {precision!r}")
        _check_model_name(open_clip, model_name)

        self.model_name = model_name
        self.device = resolve_device(device)
        self.templates = resolve_templates(templates)
        self.batch_size = int(batch_size)
        self.precision = precision
        weights, weights_key = self._resolve_weights(open_clip, model_name, pretrained)
        self.pretrained = weights
        self.random_weights = weights_key is None
        self.name = name or _default_name(model_name, weights, weights_key)
        # Identifies the image embeddings (patch-embedding cache); seeded random weights
        # are reproducible too.
        self.cache_id = "|".join(["open_clip", weights_key or self.name, precision])

        kwargs: dict[str, Any] = {"precision": precision, "device": self.device}
        if self.random_weights:
            # No tower may fetch pretrained parts behind our back (HF text towers default to
            # it), and a fixed seed makes two random-weight scorers agree run after run.
            kwargs.update(pretrained_image=False, pretrained_text=False)
        elif trust_pickle:
            kwargs["weights_only"] = False
        hub = _hub_weights(open_clip, model_name, weights)
        cached = hub is not None and cached_hub_file(*hub) is not None
        if hub is not None and not cached and not hub_reachable():
            # Found out in seconds, not after a minute of the hub's retries.
            raise NeurolabelError(
                f"'{self.name}' needs its weights from the Hugging Face hub ({hub[0]}), "
                "which cannot be reached from here, and they are not in the local hub cache. "
                f"{_OFFLINE_HELP}"
            )
        try:
            # Cached weights are read without asking the hub (offline, that takes a minute).
            with torch.random.fork_rng(devices=[]), quiet_hub():
                with hub_offline() if cached else nullcontext():
                    torch.manual_seed(0)
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        model_name, pretrained=weights, **kwargs
                    )
        except Exception as exc:
            if self.random_weights:
                raise
            raise NeurolabelError(
                f"Could not load open_clip weights for '{self.name}': {_first_line(exc)}. "
                f"{_OFFLINE_HELP}"
            ) from exc
        self.model = model.eval().requires_grad_(False)
        self.preprocess: Callable[[Image.Image], Tensor] = preprocess
        try:
            self.tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            raise NeurolabelError(
                f"Could not build the tokenizer of open_clip model '{model_name}': {exc}. "
                "Models with Hugging Face tokenizers (SigLIP, multilingual, ...) need the "
                "tokenizer files in the Hugging Face cache, which takes internet once."
            ) from exc

        from .open_clip_text import text_encoder

        self._encode_tokens = text_encoder(self.model, self.tokenizer)
        self._memory: dict[str, Tensor] = {}
        self._embed_dim: int | None = None
        self._cache_file: Path | None = None
        self._disk_loaded = False
        if cache_dir is not None and weights_key is not None:
            digest = hashlib.sha256(
                "\n".join([weights_key, precision, *self.templates]).encode()
            ).hexdigest()[:32]
            self._cache_file = Path(cache_dir).expanduser() / CACHE_SUBDIR / f"{digest}.pt"

    # -- construction helpers -----------------------------------------------------------

    @staticmethod
    def _resolve_weights(
        open_clip: Any, model_name: str, pretrained: str | Path | None
    ) -> tuple[str | None, str | None]:
        """Return ``(pretrained argument for open_clip, cache identity or None if random)``."""
        if model_name.startswith(_SCHEMAS) and pretrained is not None:
            raise SpecError(
                f"'{model_name}' brings its own weights (open_clip ignores pretrained= for "
                f"hf-hub: and local-dir: models): drop pretrained={pretrained}"
            )
        if model_name.startswith("local-dir:"):
            folder = Path(model_name.removeprefix("local-dir:")).expanduser()
            if not folder.is_dir():
                raise SpecError(f"open_clip local-dir folder {str(folder)!r} does not exist")
            files = sorted(p for p in folder.iterdir() if p.is_file())
            return None, "\n".join([model_name, *map(_file_fingerprint, files)])
        if model_name.startswith("hf-hub:"):
            return None, model_name
        if pretrained is None:
            return None, None
        text = str(pretrained).strip()
        if text.lower() in _RANDOM:
            return None, None
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        if text in tags:
            return text, f"{model_name}/{text}"
        path = Path(text).expanduser()
        if path.is_file():
            return str(path), f"{model_name}/{_file_fingerprint(path)}"
        if _looks_like_path(text):
            raise SpecError(
                f"Checkpoint file {text!r} for open_clip model '{model_name}' does not exist "
                f"(resolved to {path.resolve()})"
            )
        known = ", ".join(tags) if tags else "none (use a local checkpoint or pretrained=none)"
        raise SpecError(
            f"Unknown pretrained tag '{text}' for open_clip model '{model_name}'. "
            f"Known tags: {known}"
        )

    # -- properties ---------------------------------------------------------------------

    @property
    def embed_dim(self) -> int:
        """Dimension ``D`` of the shared embedding space."""
        if self._embed_dim is None:
            import torch

            with torch.inference_mode():
                tokens = self.tokenizer(["x"]).to(self.device)
                self._embed_dim = int(self.model.encode_text(tokens).shape[-1])
        return self._embed_dim

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature ``exp(logit_scale)``, for softmax over similarities."""
        return float(self.model.logit_scale.detach().float().exp().item())

    # -- images -------------------------------------------------------------------------

    @property
    def image_transform(self) -> Callable[[Image.Image], Tensor]:
        """The model's image preprocessing, as a picklable callable (PIL image of any mode to
        ``[3, H, W]``): neurolabel runs it in DataLoader workers on exemplar patches and
        hands the stacked result to :meth:`encode_pixels`."""
        return RGBTransform(self.preprocess)

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """Embed images, ``batch_size`` at a time.

        Args:
            images: PIL images of any size and mode (converted to RGB).

        Returns:
            ``[N, D]`` float32 CPU tensor, rows L2-normalized.

        Examples:
            >>> import torch
            >>> from PIL import Image
            >>> scorer = OpenClipScorer("ViT-S-32-alt", None)
            >>> patches = [Image.new("RGB", (40, 30), c) for c in ("red", "green", "blue")]
            >>> emb = scorer.encode_images(patches)
            >>> emb.shape, torch.allclose(emb.norm(dim=1), torch.ones(3))
            (torch.Size([3, 256]), True)
        """
        import torch

        transform = self.image_transform
        chunks = [
            self.encode_pixels(torch.stack([transform(im) for im in batch]))
            for batch in iter_batches(list(images), self.batch_size)
        ]
        if not chunks:
            return torch.zeros((0, self.embed_dim), dtype=torch.float32)
        return torch.cat(chunks)

    def encode_pixels(self, pixels: Tensor) -> Tensor:
        """Embed preprocessed images (:attr:`image_transform`'s output, stacked).

        Args:
            pixels: ``[N, 3, H, W]`` tensor on any device.

        Returns:
            ``[N, D]`` float32 CPU tensor, rows L2-normalized.

        Examples:
            >>> import torch
            >>> from PIL import Image
            >>> scorer = OpenClipScorer("ViT-S-32-alt", None)
            >>> patches = [Image.new("L", (40, 30)), Image.new("RGB", (64, 64), "red")]
            >>> pixels = torch.stack([scorer.image_transform(p) for p in patches])
            >>> pixels.shape  # any size and mode becomes the model's 224 x 224 RGB input
            torch.Size([2, 3, 224, 224])
            >>> scorer.encode_pixels(pixels).shape
            torch.Size([2, 256])
        """
        import torch

        dtype = next(self.model.parameters()).dtype
        chunks: list[Tensor] = []
        with torch.inference_mode():
            for start in range(0, pixels.shape[0], self.batch_size):
                batch = pixels[start : start + self.batch_size]
                features = self.model.encode_image(batch.to(self.device, dtype=dtype))
                chunks.append(_normalized(features))
        if not chunks:
            return torch.zeros((0, self.embed_dim), dtype=torch.float32)
        return torch.cat(chunks)

    # -- texts --------------------------------------------------------------------------

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Embed concepts, each as the mean of its prompt-template embeddings.

        Already-seen texts come from the in-memory cache, or for real weights from the
        on-disk cache, so a 20k-word vocabulary is encoded once per model and template set.

        Args:
            texts: Concepts (``"dog"``, ``"striped"``); templates put them into prompts.

        Returns:
            ``[V, D]`` float32 CPU tensor, rows L2-normalized, in the order of ``texts``.

        Examples:
            >>> scorer = OpenClipScorer("ViT-S-32-alt", None)
            >>> scorer.templates[:2]  # "simple": 4 prompts per concept, their mean embedded
            ('a photo of a {}.', 'a photo of {}.')
            >>> scorer.encode_texts(["dog", "cat", "dog"]).shape
            torch.Size([3, 256])
        """
        import torch

        self._load_disk_cache()
        keys = [self._key(t) for t in texts]
        pending = (t for t, k in zip(texts, keys, strict=True) if k not in self._memory)
        missing = list(dict.fromkeys(pending))
        if missing:
            self._memory.update(zip(map(self._key, missing), self._compute(missing), strict=True))
            self._save_disk_cache()
        if not keys:
            return torch.zeros((0, self.embed_dim), dtype=torch.float32)
        return torch.stack([self._memory[k] for k in keys])

    def encode_tokens(self, tokens: Tensor) -> Tensor:
        """The text tower on tokenized prompts, without their padding where that is exact
        (:mod:`neurolabel.backends.open_clip_text`).

        Args:
            tokens: ``[B, L]`` tokens from :attr:`tokenizer`, on :attr:`device`.

        Returns:
            ``[B, D]`` unnormalized text features.
        """
        return self._encode_tokens(tokens)

    def _compute(self, texts: list[str]) -> list[Tensor]:
        import torch

        n_templates = len(self.templates)
        # Whole concepts per forward pass, so each template mean is computed from one batch.
        per_batch = max(1, self.batch_size // n_templates)
        # Concepts of similar length share a batch: each batch runs only up to its longest
        # prompt, so a few long concepts do not lengthen every batch.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: list[Tensor] = [None] * len(texts)  # type: ignore[list-item]
        with torch.inference_mode():
            for batch in iter_batches(order, per_batch):
                prompts = [tpl.replace("{}", texts[i]) for i in batch for tpl in self.templates]
                tokens = self.tokenizer(prompts).to(self.device)
                features = _normalized(self.encode_tokens(tokens))
                means = features.view(len(batch), n_templates, -1).mean(dim=1)
                for i, row in zip(batch, _normalized(means).unbind(0), strict=True):
                    out[i] = row
        return out

    def _key(self, text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]

    # -- disk cache ---------------------------------------------------------------------

    def _load_disk_cache(self) -> None:
        if self._disk_loaded or self._cache_file is None:
            return
        self._disk_loaded = True
        self._memory.update(
            {k: v for k, v in _read_cache(self._cache_file).items() if k not in self._memory}
        )

    def _save_disk_cache(self) -> None:
        if self._cache_file is None:
            return
        # Merge with what another process may have written since we read the file.
        merged = {**_read_cache(self._cache_file), **self._memory}
        _write_cache(self._cache_file, merged, {"model": self.name, "templates": self.templates})


class RGBTransform:
    """Convert a PIL image to RGB, then apply ``transform`` (picklable for DataLoader workers).

    Args:
        transform: PIL image to tensor, e.g. open_clip's preprocessing.
    """

    def __init__(self, transform: Callable[[Image.Image], Tensor]) -> None:
        self.transform = transform

    def __call__(self, image: Image.Image) -> Tensor:
        return self.transform(image if image.mode == "RGB" else image.convert("RGB"))


def _normalized(features: Tensor) -> Tensor:
    # Normalize in float32: fp16/bf16 norms are too coarse for cosine similarities.
    features = features.float()
    return (features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu()


def _read_cache(path: Path) -> dict[str, Tensor]:
    import torch

    if not path.is_file():
        return {}
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
        keys, embeddings = data["keys"], data["embeddings"]
        return dict(zip(keys, embeddings.float().unbind(0), strict=True))
    except Exception:
        # A corrupt or foreign cache file only costs a recomputation; never fail on it.
        return {}


def _write_cache(path: Path, entries: dict[str, Tensor], meta: dict[str, Any]) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(entries)
    payload = {
        "keys": keys,
        "embeddings": torch.stack([entries[k] for k in keys]),
        "meta": {"model": str(meta["model"]), "templates": list(meta["templates"])},
    }
    # Temp file in the same folder + os.replace: readers never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------
# spec factory and hook
# ---------------------------------------------------------------------------------------


def _split_argument(spec: Spec) -> tuple[str, str | None]:
    argument = spec.require_argument("an open_clip model name, e.g. ViT-B-32/laion2b_s34b_b79k")
    if argument.startswith(_SCHEMAS):
        return argument, None
    model_name, sep, tag = argument.partition("/")
    return model_name, (tag if sep and tag else None)


#: How to get open_clip weights without internet (CLI and library words alike).
_OFFLINE_HELP = (
    "Download them once with internet (open_clip keeps them in the Hugging Face cache), or "
    "point ?pretrained= at a local checkpoint file (one holding pickled objects also needs "
    "--trust-pickle, or trust_pickle=True in build_context), or use an offline scorer such "
    "as composite:color+classifier:packaged:efficientnet_lite1 (docs/offline_scorers.md)."
)
#: The files open_clip looks for in a hub repository, safetensors first.
_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


def _hub_weights(
    open_clip: Any, model_name: str, weights: str | None
) -> tuple[str, list[str]] | None:
    """``(repo, candidate files)`` of weights open_clip fetches from the hub, else None."""
    if model_name.startswith("hf-hub:"):
        return model_name.removeprefix("hf-hub:"), list(_HUB_FILES)
    if weights is None or Path(weights).is_file():
        return None
    location = (open_clip.get_pretrained_cfg(model_name, weights) or {}).get("hf_hub") or ""
    if not location:
        return None  # a plain URL into open_clip's own cache: left to open_clip
    repo, _, filename = location.rpartition("/")
    if not filename:
        return repo, list(_HUB_FILES)
    if filename.endswith((".bin", ".pth")):
        return repo, [filename[:-4] + ".safetensors", filename]
    return repo, [filename]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].rstrip(".") if lines else type(exc).__name__


def _open_clip_factory(spec: Spec, ctx: Any) -> OpenClipScorer:
    spec.check_options(_OPTIONS)
    model_name, tag = _split_argument(spec)
    option = spec.option("pretrained")
    if tag is not None and option is not None:
        raise SpecError(
            f"'{spec}' names the weights twice (/{tag} and pretrained={option}): keep one"
        )
    pretrained = tag if tag is not None else option
    if pretrained is None and not model_name.startswith(_SCHEMAS):
        open_clip = _import_open_clip()
        _check_model_name(open_clip, model_name)
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        examples = " or ".join(f"open_clip:{model_name}/{t}" for t in tags[:2])
        raise SpecError(
            f"'{spec}' does not say which weights to use. Write "
            + (f"{examples}, " if examples else "")
            + f"open_clip:{model_name}?pretrained=/path/to/checkpoint.pt, or "
            f"open_clip:{model_name}?pretrained=none for random weights."
            + (f" Known tags: {', '.join(tags)}" if tags else "")
        )
    use_cache = spec.option_bool("cache", default=True)
    return OpenClipScorer(
        model_name,
        pretrained,
        device=spec.option("device") or getattr(ctx, "device", None) or "cpu",
        templates=spec.option("templates"),
        batch_size=spec.option_int("batch_size", 64),  # type: ignore[arg-type]
        precision=(spec.option("precision") or "fp32").lower(),
        cache_dir=getattr(ctx, "cache_dir", None) if use_cache else None,
        trust_pickle=bool(getattr(ctx, "extra", {}).get("trust_pickle", False)),
        name=str(spec),
    )


@hookimpl
def register_scorers(register: Register[EmbeddingScorer]) -> None:
    """Register the ``open_clip`` scorer."""
    register(
        "open_clip",
        _open_clip_factory,
        description=(
            "open_clip CLIP-style models: open_clip:ViT-B-32/laion2b_s34b_b79k, "
            "open_clip:ViT-B-32?pretrained=/path/ckpt.pt, ...?pretrained=none (random)"
        ),
    )
