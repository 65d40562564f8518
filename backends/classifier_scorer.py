"""Classifier-grounded scoring: ConSE (Norouzi et al., 2014) with an offline sentence embedder.

"Zero-Shot Learning by Convex Combination of Semantic Embeddings" maps an image into a text
embedding space without any vision-language training: the image's embedding is the
probability-weighted mean of the text embeddings of its classifier's top-T class names.
Any concept can then be compared with it by embedding the concept's text the same way.

Spec: ``classifier[:MODEL_SPEC][?top=T&temperature=X&tta=true&text=PATH&batch_size=B
&template=TEXT&...]`` — e.g. ``classifier:packaged:efficientnet_lite1?top=5&tta=true``. Options not
listed here are passed on to the model spec.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import EmbeddingScorer, LoadedModel, iter_batches
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

from .text_embedding import TextEmbedder, load_text_embedder

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor

#: The classifier used by a bare ``classifier`` spec: real ImageNet weights shipped by a package.
DEFAULT_MODEL_SPEC = "packaged:efficientnet_lite1"
# Tuned on the 500-image shared ImageNet sample with efficientnet_lite1 (docs/offline_scorers.md):
# a softer mix of more classes moves the embedding from the exact class name toward what its
# neighbours share ("dog" for a terrier), which is what neuron labels need.
DEFAULT_TOP = 10
DEFAULT_TEMPERATURE = 2.5
DEFAULT_TEMPLATE = "{}"
DEFAULT_BATCH_SIZE = 32
_OWN_OPTIONS = frozenset({"top", "text", "temperature", "tta", "batch_size", "template"})


def conse_embed(probs: Tensor, class_embeddings: Tensor, top: int) -> Tensor:
    """ConSE image embeddings: renormalized top-T class probabilities times class embeddings.

    ``f(x) = normalize(sum_t p_t * E(class_t))`` over the ``top`` most probable classes of
    each row, with ``p_t`` rescaled to sum to one.

    Args:
        probs: ``[N, K]`` class probabilities (rows need not sum to one).
        class_embeddings: ``[K, D]`` text embeddings of the ``K`` class names.
        top: ``T``, how many classes to mix; clipped to ``K``.

    Returns:
        ``[N, D]`` L2-normalized float32 embeddings.

    Examples:
        >>> import torch
        >>> probs = torch.tensor([[0.6, 0.3, 0.1]])
        >>> classes = torch.eye(3)
        >>> conse_embed(probs, classes, top=2)
        tensor([[0.8944, 0.4472, 0.0000]])
    """
    import torch
    import torch.nn.functional as F

    if probs.ndim != 2 or class_embeddings.ndim != 2:
        raise ValueError("conse_embed expects probs [N, K] and class_embeddings [K, D]")
    if probs.shape[1] != class_embeddings.shape[0]:
        raise ValueError(
            f"{probs.shape[1]} class probabilities but {class_embeddings.shape[0]} class embeddings"
        )
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    top = min(top, probs.shape[1])
    weights, index = probs.float().topk(top, dim=1)
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
    mixed = torch.einsum("nt,ntd->nd", weights, class_embeddings.float()[index])
    return F.normalize(mixed, dim=1)


class ClassifierScorer:
    """An :class:`~neurolabel.plugin_core.plugins.contracts.EmbeddingScorer` grounded in a
    classifier.

    Images are embedded by ConSE (see :func:`conse_embed`): the classifier's top-T class
    names, embedded by a sentence model and mixed by their probabilities. Texts are embedded
    by the same sentence model, so image-text cosine is meaningful.

    What it can see: only what its classifier's classes name. With an ImageNet classifier it
    sees objects, animals, foods, vehicles, tools and scenes named like ImageNet classes, and
    concepts whose text lies near those names (``dog`` near the dog breeds, ``boat`` near
    ``canoe``/``yawl``). What it cannot see: colors, textures, materials, shapes, parts
    (``wheel`` only through ``car wheel``-like classes), counts, positions, and any concept
    whose words are far from every class name — an image's embedding never leaves the span of
    its class-name embeddings. Use the ``composite`` scorer to add a color scorer.

    Args:
        loaded: The classifier with its preprocessing and ``class_names``.
        embedder: Text embedder for class names and concepts.
        name: Spec it was built from.
        top: ``T``, classes mixed per image.
        temperature: Softmax temperature on logits (>1 flattens, <1 sharpens).
        tta: Also classify the horizontal flip and average probabilities.
        batch_size: Images per forward pass.
        template: Format string with one ``{}`` applied to class names AND concept texts, so
            both sides are embedded the same way.
        device: Where the classifier runs.
        cache_dir: Folder for the class-name embedding cache; None keeps it in memory only.

    Examples:
        >>> from PIL import Image
        >>> from neurolabel import build_context
        >>> ctx = build_context("cpu")
        >>> scorer = ctx.registries.scorers.resolve("classifier", ctx)  # packaged weights
        >>> len(scorer.class_names), scorer.class_embeddings.shape
        (1000, torch.Size([1000, 384]))
        >>> images = scorer.encode_images([Image.new("RGB", (64, 64), "red")])
        >>> texts = scorer.encode_texts(["dog", "truck"])
        >>> images.shape, (images @ texts.T).shape
        (torch.Size([1, 384]), torch.Size([1, 2]))
    """

    def __init__(
        self,
        loaded: LoadedModel,
        embedder: TextEmbedder,
        *,
        name: str = "classifier",
        top: int = DEFAULT_TOP,
        temperature: float = DEFAULT_TEMPERATURE,
        tta: bool = False,
        batch_size: int = DEFAULT_BATCH_SIZE,
        template: str = DEFAULT_TEMPLATE,
        device: torch.device | str = "cpu",
        cache_dir: Path | None = None,
    ) -> None:
        import torch

        if not loaded.class_names:
            raise NeurolabelError(
                f"The classifier scorer needs a classifier with class names, but model "
                f"'{loaded.name}' has none. Use a model source that knows its classes, e.g. "
                f"classifier:{DEFAULT_MODEL_SPEC} or classifier:torchvision:resnet50."
            )
        if top < 1:
            raise SpecError(f"{name}: top must be at least 1, got {top}")
        if not temperature > 0:
            raise SpecError(f"{name}: temperature must be positive, got {temperature}")
        if batch_size < 1:
            raise SpecError(f"{name}: batch_size must be at least 1, got {batch_size}")
        if template.count("{}") != 1:
            raise SpecError(f"{name}: template must contain '{{}}' exactly once, got {template!r}")
        self.name = name
        self.loaded = loaded
        self.class_names = list(loaded.class_names)
        self.embedder = embedder
        self.top = top
        self.temperature = float(temperature)
        self.tta = tta
        self.batch_size = batch_size
        self.template = template
        self.device = torch.device(device)
        self.cache_dir = cache_dir
        # Channels-last convolutions: EfficientNet-Lite1 classifies a batch of 32 patches
        # 1.9x faster on 2 CPU cores (and GPUs prefer the layout too).
        model = loaded.model.to(self.device)
        self.model = model.to(memory_format=torch.channels_last).eval()
        self._class_embeddings: Tensor | None = None
        # Identifies the image embeddings (patch-embedding cache): the model and every
        # setting that changes an embedding.
        self.cache_id = "|".join(
            map(str, ["classifier", loaded.name, embedder.name, top, temperature, tta, template])
        )

    # -- text side ---------------------------------------------------------------------

    def _prompts(self, texts: Sequence[str]) -> list[str]:
        return [self.template.format(t) for t in texts]

    @property
    def class_embeddings(self) -> Tensor:
        """``[K, D]`` embeddings of the class names (computed once, cached on disk)."""
        if self._class_embeddings is None:
            self._class_embeddings = self._load_or_embed_classes()
        return self._class_embeddings

    def _embed_class_names(self) -> Tensor:
        import torch
        import torch.nn.functional as F

        # Names like "tabby, tabby cat" (WordNet lemmas) are averaged over their synonyms.
        synonyms = [[s.strip() for s in n.split(",") if s.strip()] or [n] for n in self.class_names]
        flat = [s for group in synonyms for s in group]
        table = self.embedder.encode(self._prompts(flat))
        rows, start = [], 0
        for group in synonyms:
            rows.append(table[start : start + len(group)].mean(dim=0))
            start += len(group)
        return F.normalize(torch.stack(rows), dim=1)

    def _cache_file(self) -> Path | None:
        if self.cache_dir is None:
            return None
        key = "\n".join([self.embedder.name, self.template, *self.class_names])
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.cache_dir / "class_embeddings" / f"{digest}.pt"

    def _load_or_embed_classes(self) -> Tensor:
        import torch
        from torch import Tensor

        path = self._cache_file()
        if path is not None and path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if isinstance(cached, Tensor) and cached.shape[0] == len(self.class_names):
                    return cached
            except Exception:  # noqa: BLE001 - a corrupt cache entry is simply recomputed
                pass
        table = self._embed_class_names()
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                torch.save(table, tmp)
                tmp.replace(path)  # atomic: concurrent processes never read half a file
            except OSError:
                pass  # a read-only cache folder only costs recomputation
        return table

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Embed concept texts with the sentence model (through the same template).

        Args:
            texts: Concepts.

        Returns:
            ``[V, D]`` L2-normalized float32 CPU tensor.
        """
        return self.embedder.encode(self._prompts(texts))

    def class_affinity(self, texts: Sequence[str]) -> Tensor:
        """How close each text is to its nearest class name: a rough "can it see this" gauge.

        A concept far from every class name (low affinity) cannot get a high score from any
        image, because image embeddings are mixtures of class-name embeddings.

        Args:
            texts: Concepts.

        Returns:
            ``[V]`` maximum cosine to any class-name embedding.
        """
        return (self.encode_texts(texts) @ self.class_embeddings.T).max(dim=1).values

    # -- image side --------------------------------------------------------------------

    def class_probabilities(self, images: Sequence[Image.Image]) -> Tensor:
        """Classifier probabilities (softmax at the temperature, averaged over TTA views).

        Args:
            images: RGB PIL images of any size.

        Returns:
            ``[N, K]`` float32 CPU tensor, rows sum to one.
        """
        import torch

        out = []
        with torch.inference_mode():
            for chunk in iter_batches(list(images), self.batch_size):
                batch = torch.stack([self.loaded.preprocessing(im) for im in chunk])
                batch = batch.to(self.device, memory_format=torch.channels_last)
                probs = self._probs(batch)
                if self.tta:
                    # The flip is label-preserving for ImageNet, so averaging smooths the
                    # prediction of small or off-center patches without new information.
                    probs = (probs + self._probs(batch.flip(-1))) / 2
                out.append(probs.float().cpu())
        if not out:
            return torch.zeros(0, len(self.class_names))
        return torch.cat(out)

    def _probs(self, batch: Tensor) -> Tensor:
        import torch

        logits = self.model(batch)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        if logits.shape[-1] != len(self.class_names):
            raise NeurolabelError(
                f"Model '{self.loaded.name}' gives {logits.shape[-1]} outputs but has "
                f"{len(self.class_names)} class names"
            )
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """ConSE embeddings of images.

        Args:
            images: RGB PIL images (patches) of any size.

        Returns:
            ``[N, D]`` L2-normalized float32 CPU tensor, in the text embedder's space.
        """
        import torch

        probs = self.class_probabilities(images)
        if probs.shape[0] == 0:
            return torch.zeros(0, self.class_embeddings.shape[1])
        return conse_embed(probs, self.class_embeddings, self.top)

    def __repr__(self) -> str:
        return (
            f"ClassifierScorer({self.name!r}, top={self.top}, temperature={self.temperature}, "
            f"tta={self.tta})"
        )


class ClassifierEnsembleScorer:
    """Several classifiers as one eye: the mean of their ConSE embeddings, renormalized.

    Classifiers err on different images, so averaging their embeddings (all in the same
    sentence-model space) lowers the eye's error rate.

    Args:
        members: Classifier scorers sharing one text embedder and template.
        name: Spec it was built from.

    Examples:
        >>> from PIL import Image
        >>> from neurolabel import build_context
        >>> ctx = build_context("cpu")
        >>> spec = "classifier:packaged:efficientnet_lite0,packaged:efficientnet_lite1"
        >>> eye = ctx.registries.scorers.resolve(spec, ctx)
        >>> [member.loaded.name for member in eye.members]
        ['packaged:efficientnet_lite0', 'packaged:efficientnet_lite1']
        >>> eye.encode_images([Image.new("RGB", (64, 64))]).shape
        torch.Size([1, 384])
    """

    def __init__(self, members: Sequence[ClassifierScorer], name: str) -> None:
        if len({(m.embedder.name, m.template) for m in members}) != 1:
            raise NeurolabelError(f"{name}: ensemble members must share text model and template")
        self.members = list(members)
        self.name = name
        self.cache_id = "+".join(m.cache_id for m in self.members)

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Concept embeddings (the members share the sentence model)."""
        return self.members[0].encode_texts(texts)

    def encode_images(self, images: Sequence[Image.Image]) -> Tensor:
        """Mean of the members' ConSE embeddings, L2-normalized."""
        import torch
        import torch.nn.functional as F

        stacked = torch.stack([m.encode_images(images) for m in self.members])
        return F.normalize(stacked.mean(dim=0), dim=1)

    def __repr__(self) -> str:
        return f"ClassifierEnsembleScorer({self.name!r}, members={len(self.members)})"


def build_classifier_scorer(
    spec: Spec, ctx: ResolveContext
) -> ClassifierScorer | ClassifierEnsembleScorer:
    """Factory for ``classifier[:MODEL_SPEC[,MODEL_SPEC...]][?options]``.

    Args:
        spec: Parsed spec; the argument is a model-source spec (default
            ``packaged:efficientnet_lite1``), or several separated by ``,`` for an ensemble
            of eyes. Options ``top``, ``temperature``, ``tta``, ``text``, ``batch_size``,
            ``template`` configure the scorer; any other option is passed on to the models.
        ctx: Resolve context: the classifier is resolved through its model-source registry.

    Returns:
        The scorer (an ensemble when several models are given).

    Examples:
        >>> from neurolabel import build_context
        >>> ctx = build_context("cpu")
        >>> build_classifier_scorer(Spec.parse("classifier?top=3&tta=true"), ctx)
        ClassifierScorer('classifier?top=3&tta=true', top=3, temperature=2.5, tta=True)
    """
    model_specs = [part for part in (spec.argument or DEFAULT_MODEL_SPEC).split(",") if part]
    passed_on = {k: v for k, v in spec.options.items() if k not in _OWN_OPTIONS}
    embedder = load_text_embedder(spec.option("text"), ctx.device, cache_dir=ctx.cache_dir)
    members = []
    for text in model_specs:
        model_spec = Spec.parse(text)
        if passed_on:
            model_spec = Spec(
                model_spec.name, model_spec.argument, {**model_spec.options, **passed_on}
            )
        loaded = ctx.registries.model_sources.resolve(model_spec, ctx)
        members.append(
            ClassifierScorer(
                loaded,
                embedder,
                name=str(spec) if len(model_specs) == 1 else f"classifier:{model_spec}",
                top=spec.option_int("top", DEFAULT_TOP) or 0,
                temperature=spec.option_float("temperature", DEFAULT_TEMPERATURE) or 0.0,
                tta=spec.option_bool("tta", False),
                batch_size=spec.option_int("batch_size", DEFAULT_BATCH_SIZE) or 0,
                template=spec.option("template", DEFAULT_TEMPLATE) or DEFAULT_TEMPLATE,
                device=ctx.device,
                cache_dir=ctx.cache_dir,
            )
        )
    return members[0] if len(members) == 1 else ClassifierEnsembleScorer(members, str(spec))


@hookimpl
def register_scorers(register: Register[EmbeddingScorer]) -> None:
    """Register the ``classifier`` scorer."""
    register(
        "classifier",
        build_classifier_scorer,
        description=(
            "ConSE: a classifier's top-T class names mixed in a sentence-embedding space "
            f"(offline; default {DEFAULT_MODEL_SPEC}; sees only concepts near its class names)"
        ),
    )
