"""The end-to-end pipeline: exemplars -> patches -> scores -> explanations."""

from __future__ import annotations

import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import distributed
from .activation_cache import ActivationCache, restore
from .aggregation import Aggregation, get_aggregation
from .context import build_context
from .describe import (
    Describer,
    Summarizer,
    describe_neurons,
    resolve_describer,
    resolve_summarizer,
    summarize_neurons,
)
from .errors import LayerNotFoundError, NeurolabelError
from .exemplar_pass import (
    PRECISIONS,
    Checkpoint,
    PassOutput,
    StreamSettings,
    model_fingerprint,
    run_pass,
)
from .holdout import check_holdout, holdout_entry, split_holdout
from .image_sample import ImageSample
from .images import ImageLoadError, ImageSource, SkippedInput, as_image_source
from .layer_patterns import expand_layer_patterns
from .memory import release_freed_memory
from .patch_scoring import PatchScores, score_patches
from .patches import (
    Patcher,
    PatchSettings,
    attribution_boxes,
    flatten_maps,
    image_box,
    input_boxes,
)
from .preprocessing import Preprocessing
from .progress import Steps, progress_steps, stderr_console
from .protocols import (
    ConceptScorer,
    EmbeddingScorer,
    Extractor,
    LoadedModel,
    ResolveContext,
    iter_batches,
)
from .result import Exemplar, LabelingResult, NeuronExplanation
from .scoring_plan import ScoringPlan, plan_scoring
from .spec import Spec
from .topk import TopKState
from .vocabulary import Vocabulary

#: Patch modes built into the labeler; any other value names a registered patcher.
PATCH_MODES = ("auto", "activation", "whole")
#: What the scorer sees: ``auto`` picks the cheaper of exemplar patches and whole images.
SCORING_MODES = ("auto", "patches", "images")
#: Preprocessed exemplar images kept in memory while attribution maps are computed.
_IMAGE_CACHE = 256
DEFAULT_SCORER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
DEFAULT_VOCABULARY = "imagenet"
_VERSIONED = ("neurolabel", "torch", "torchvision", "timm", "open_clip_torch", "pillow", "numpy")

UnitSelection = Sequence[int] | Mapping[str, Sequence[int]] | None


def resolve_vocabulary(
    vocabulary: str | Vocabulary | Sequence[str], ctx: ResolveContext
) -> Vocabulary:
    """Build a vocabulary from a spec (``imagenet+words:5000``), a list, or a Vocabulary.

    ``+`` joins vocabularies; it only splits where the next part starts with a registered
    vocabulary name, so a file path containing ``+`` still works.

    Args:
        vocabulary: Spec string, list of concepts, or :class:`Vocabulary`.
        ctx: Resolve context (its vocabulary registry).

    Returns:
        The normalized, non-empty :class:`Vocabulary`.
    """
    if isinstance(vocabulary, Vocabulary):
        return vocabulary.require_nonempty()
    if not isinstance(vocabulary, str):
        return Vocabulary.build(list(vocabulary), source="list").require_nonempty()
    registry = ctx.registries.vocabularies
    parts: list[str] = []
    for piece in vocabulary.split("+"):
        name = Spec.parse(piece).name if piece.strip() else ""
        if parts and name not in registry:
            parts[-1] += "+" + piece
        else:
            parts.append(piece)
    merged: Vocabulary | None = None
    for part in parts:
        vocab = registry.resolve(part, ctx)()
        merged = vocab if merged is None else merged.union(vocab)
    assert merged is not None
    return merged.require_nonempty()


def layer_names(model: nn.Module, layers: Any) -> list[str]:
    """Dotted names of layers given by name, as modules, or as Captum attribution objects.

    Anything with a ``layer`` attribute holding a module (or a list of modules) counts as a
    layer attribution object: Captum's ``LayerActivation``, ``LayerGradCam``,
    ``LayerConductance``, ``NeuronGradient``... Modules are found by identity in
    ``model.named_modules()``.

    Args:
        model: The model the layers belong to.
        layers: One layer or a sequence of them: ``str``, ``nn.Module`` or an object with
            a ``layer`` attribute.

    Returns:
        The dotted names, in order, without duplicates.

    Examples:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> layer_names(net, [net[1], "0"])
        ['1', '0']
    """
    if isinstance(layers, (str, nn.Module)) or hasattr(layers, "layer"):
        layers = [layers]
    names_of: dict[int, str] | None = None
    out: list[str] = []
    for item in layers:
        if isinstance(item, str):
            out.append(item)
            continue
        # A module is itself, even when it has a `.layer` attribute of its own.
        held = item if isinstance(item, nn.Module) else getattr(item, "layer", item)
        modules = list(held) if isinstance(held, (list, tuple)) else [held]
        if not modules or not all(isinstance(m, nn.Module) for m in modules):
            raise NeurolabelError(
                f"Cannot use a {type(item).__name__} as a layer: give a dotted name, an "
                "nn.Module of the model, or a Captum layer attribution object (with .layer)"
            )
        if names_of is None:
            names_of = {id(m): name for name, m in model.named_modules()}
        for module in modules:
            name = names_of.get(id(module))
            if name is None:
                raise LayerNotFoundError(
                    f"The {type(module).__name__} given as a layer is not a submodule of the "
                    f"{type(model).__name__} being explained (a copy, or another model's?)"
                )
            if not name:
                raise NeurolabelError(
                    "The whole model was given as a layer; name one of its layers (its last "
                    "one for the outputs), e.g. with `neurolabel layers`"
                )
            out.append(name)
    return list(dict.fromkeys(out))


def resolve_model(
    model: str | nn.Module | LoadedModel, ctx: ResolveContext, preprocessing: Preprocessing | None
) -> LoadedModel:
    """A model spec, a module (with ``preprocessing`` or the ImageNet default) or a LoadedModel."""
    if isinstance(model, LoadedModel):
        loaded = model
    elif isinstance(model, str):
        loaded = ctx.registries.model_sources.resolve(model, ctx)
    elif isinstance(model, nn.Module):
        loaded = LoadedModel(model, preprocessing or Preprocessing(), type(model).__name__)
    else:
        raise NeurolabelError(
            f"Cannot use a {type(model).__name__} as the model: give a spec such as "
            "'torchvision:resnet18', an nn.Module, or a LoadedModel"
        )
    if preprocessing is not None:
        loaded.preprocessing = preprocessing
    loaded.model.eval().to(ctx.device)
    return loaded


@dataclass
class _Layer:
    name: str
    state: TopKState
    spatial: bool
    shape: tuple[int, ...]
    units: list[int]


class NeuronLabeler:
    """Explain what each neuron of some layers responds to.

    Args:
        model: A model spec (``torchvision:resnet18``, ``packaged:efficientnet_lite0``), an
            ``nn.Module`` or a :class:`LoadedModel`.
        layers: Dotted layer names (``neurolabel layers MODEL`` lists them) or patterns
            (``layer3.*.conv2``, ``type:Conv2d``: see
            :func:`~neurolabel.plugin_core.layer_patterns.expand_layer_patterns`), expanded
            when the model loads; when ``model`` is a module or LoadedModel, also submodules
            of it or Captum layer attribution objects (anything with a ``.layer``), see
            :func:`layer_names`.
        scorer: Scorer spec or object (embedding or concept scorer).
        vocabulary: Vocabulary spec (``imagenet``, ``words:20000``, ``file:PATH``,
            ``imagenet+words:5000``), a list of concepts, or a :class:`Vocabulary`.
        top_k: Exemplar images kept per neuron.
        aggregation: ``default``, ``contrast``, ``mean``, ``soft-wpmi``, ``wpmi``, ``cos-cubed``.
        extractor: Extractor spec (``hooks``).
        device: ``auto``, ``cpu``, ``cuda``...
        batch_size: Images per forward pass (and per scorer call).
        num_workers: DataLoader workers (the forward pass, and reading and cutting the
            exemplar images for scoring).
        activation: ``max`` or ``mean`` over a map, to rank images.
        threshold: Activation-map patch threshold, ``quantile`` or ``otsu`` (attribution
            maps of a patcher are always thresholded per map with Otsu's method).
        quantile: Map-cell quantile for ``quantile`` thresholds (0.995 = NetDissect).
        min_patch_size: Minimum patch side, as a fraction of the input's shorter side.
        patches: ``auto`` (cut from the activation map where the layer has one, whole images
            for vector layers), ``activation`` (cut from the map; an error for vector
            layers), ``whole`` (always whole images), or a registered patcher's spec or a
            :class:`~neurolabel.plugin_core.patches.Patcher` object, which computes a map
            per exemplar at input resolution (``gradcam``, ``gradient``, ``conductance``,
            ``integrated-gradients``; ``neurolabel plugins`` lists them) for every layer,
            vector layers included.
        units: Units to explain, for every layer or per layer (all by default).
        num_concepts: Ranked concepts stored per neuron.
        saved_patches: Exemplar patches per neuron kept for :meth:`LabelingResult.save`.
        sample_size: Whole images sampled (uniformly) and scored for image-level statistics
            (the default aggregation's standardization, ``cos-cubed``).
        preprocessing: Input preprocessing when ``model`` is a bare module.
        context: A prepared :class:`ResolveContext` (else one is built for ``device``).
        progress: Show rich progress bars.
        scoring: ``auto`` (default), ``patches`` or ``images``: whether the VLM scores each
            exemplar's patch, or whole images (every exemplar image once, as CLIP-Dissect
            scores every probing image). ``auto`` takes the cheaper one: whole images when
            a small probing set has fewer images than there are exemplar patches, as long as
            ``patches`` is ``auto``. The choice and its reason are stored in the settings.
        precision: ``fp32`` (default), ``bf16`` or ``fp16``: autocast for the target's
            forward pass and the scorer's image encoding.
        channels_last: Run the target on channels-last batches (faster convolutions on GPU).
        cache: Keep finished exemplar passes in the context's cache folder (folders of
            images only), so a rerun with another vocabulary, scorer or aggregation skips the
            forward pass.
        checkpoint: File where the forward pass's streaming state is saved every
            ``checkpoint_every`` batches and on interruption (one file per rank).
        checkpoint_every: Batches between checkpoint saves.
        resume: Continue from ``checkpoint`` when it exists; the result is exactly that of an
            uninterrupted run.
        describer: A describer (a chat VLM, ``litellm:MODEL``, see
            :mod:`~neurolabel.plugin_core.describe`) that looks at each neuron's exemplar
            patches; its ranking is fused with the scorer's.
        summarize: A summarizer spec, or a bare litellm model name (``openai/gpt-4o-mini``
            means ``llm:openai/gpt-4o-mini``), writing each neuron's one-sentence ``summary``.
        holdout: Share of the images (0-1) set aside before labeling, chosen at random with
            ``holdout_seed``; the result records them (``dataset["holdout"]``) and the
            ``faithfulness`` evaluator uses them when given no folder.
        holdout_seed: Seed of the holdout split.

    Examples:
        >>> labeler = NeuronLabeler("torchvision:resnet18", layers=["layer4"],
        ...                         vocabulary="imagenet")  # doctest: +SKIP
        >>> result = labeler.run("images/")  # doctest: +SKIP
        >>> result.explanation("layer4", 17).top(3)  # doctest: +SKIP
        [('tabby', 1.9), ('tiger cat', 1.7), ('egyptian cat', 1.5)]
    """

    def __init__(
        self,
        model: str | nn.Module | LoadedModel,
        layers: Sequence[Any] | str,
        scorer: str | EmbeddingScorer | ConceptScorer = DEFAULT_SCORER,
        vocabulary: str | Vocabulary | Sequence[str] = DEFAULT_VOCABULARY,
        *,
        top_k: int = 10,
        aggregation: str = "default",
        extractor: str | Extractor = "hooks",
        device: str | torch.device = "auto",
        batch_size: int = 32,
        num_workers: int = 0,
        activation: str = "max",
        threshold: str = "quantile",
        quantile: float = 0.995,
        min_patch_size: float = 0.25,
        patches: str | Patcher = "auto",
        units: UnitSelection = None,
        num_concepts: int = 10,
        saved_patches: int = 5,
        sample_size: int = 2000,
        preprocessing: Preprocessing | None = None,
        context: ResolveContext | None = None,
        progress: bool = True,
        scoring: str = "auto",
        precision: str = "fp32",
        channels_last: bool = False,
        cache: bool = True,
        checkpoint: str | Path | None = None,
        checkpoint_every: int = 50,
        resume: bool = False,
        describer: str | Describer | None = None,
        summarize: str | Summarizer | None = None,
        holdout: float | None = None,
        holdout_seed: int = 0,
    ) -> None:
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            layers = [layers]
        if not layers:
            raise NeurolabelError("Give at least one layer (neurolabel layers MODEL lists them)")
        if top_k < 1:
            raise NeurolabelError(f"top_k must be at least 1, got {top_k}")
        if batch_size < 1:
            raise NeurolabelError(f"batch_size must be at least 1, got {batch_size}")
        if scoring not in SCORING_MODES:
            raise NeurolabelError(f"scoring={scoring!r}: use one of {', '.join(SCORING_MODES)}")
        if precision not in PRECISIONS:
            raise NeurolabelError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
        self.ctx = context or build_context(device)
        self.aggregation = get_aggregation(aggregation)
        self.aggregation_name = aggregation
        self.patch_settings = PatchSettings(threshold=threshold, min_size=min_patch_size)
        self.patches = patches
        self._check_patches(patches)
        self.layers = self._layer_names(model, layers)
        self.model_spec = model
        self.scorer_spec = scorer
        self.vocabulary_spec = vocabulary
        self.extractor_spec = extractor
        self.top_k = top_k
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.activation = activation
        self.quantile = quantile
        self.units = units
        self.num_concepts = num_concepts
        self.saved_patches = saved_patches
        self.sample_size = sample_size
        self.preprocessing = preprocessing
        self.progress = progress
        self.scoring = scoring
        self.precision = precision
        self.channels_last = channels_last
        if holdout is not None:
            check_holdout(holdout)
        self.holdout = holdout
        self.holdout_seed = holdout_seed
        self.cache = cache
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.describer_spec = describer
        self.summarize_spec = summarize
        self._describer: Describer | None = None
        self._loaded: LoadedModel | None = None
        self._pass_checkpoint: Checkpoint | None = None
        self._fingerprint: str | None = None

    # -- resolution -------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel:
        """The target model, loaded on first use."""
        if self._loaded is None:
            self._loaded = resolve_model(self.model_spec, self.ctx, self.preprocessing)
            self.layers = expand_layer_patterns(self._loaded.model, self.layers)
        return self._loaded

    @staticmethod
    def _layer_names(model: str | nn.Module | LoadedModel, layers: Sequence[Any]) -> list[str]:
        if all(isinstance(layer, str) for layer in layers):
            return list(dict.fromkeys(layers))
        if isinstance(model, str):
            raise NeurolabelError(
                "Layers given as modules or Captum objects need the model itself: pass the "
                "nn.Module (or a LoadedModel) as model, or name the layers by their dotted "
                "names (`neurolabel layers MODEL`)"
            )
        return layer_names(model.model if isinstance(model, LoadedModel) else model, layers)

    def _check_patches(self, patches: str | Patcher) -> None:
        if not isinstance(patches, str):
            if not isinstance(patches, Patcher):
                raise NeurolabelError(
                    f"patches={patches!r}: give a mode name or an object with "
                    "locate(loaded, layer, unit, images)"
                )
            return
        if patches in PATCH_MODES:
            return
        registry = self.ctx.registries.patchers
        if not patches.strip() or Spec.parse(patches).name not in registry:
            choices = ", ".join([*PATCH_MODES, *registry.names()])
            raise NeurolabelError(f"patches={patches!r}: use one of {choices}")

    def _patcher(self) -> Patcher | None:
        """The patcher of an attribution patch mode, or None for the built-in modes."""
        spec = self.patches
        if isinstance(spec, str):
            if spec in PATCH_MODES:
                return None
            patcher = self.ctx.registries.patchers.resolve(spec, self.ctx)
        else:
            patcher = spec
        if not isinstance(patcher, Patcher):
            raise NeurolabelError(f"Patcher {patcher!r} has no locate(loaded, layer, unit, images)")
        return patcher

    def _extractor(self) -> Extractor:
        spec = self.extractor_spec
        return (
            spec
            if not isinstance(spec, str)
            else self.ctx.registries.extractors.resolve(spec, self.ctx)
        )

    def _scorer(self) -> EmbeddingScorer | ConceptScorer:
        spec = self.scorer_spec
        scorer = (
            spec
            if not isinstance(spec, str)
            else self.ctx.registries.scorers.resolve(spec, self.ctx)
        )
        if not isinstance(scorer, (EmbeddingScorer, ConceptScorer)):
            hint = ""
            if isinstance(scorer, Describer):
                hint = (
                    f"; '{scorer.name}' is a describer: pass it as describer= (--describer) "
                    "beside a scorer"
                )
            raise NeurolabelError(
                f"Scorer {scorer!r} has neither encode_images/encode_texts nor score_images{hint}"
            )
        return scorer

    def describer(self) -> Describer | None:
        """The describer, resolved on first use (None when none was given)."""
        if self._describer is None and self.describer_spec is not None:
            self._describer = resolve_describer(self.describer_spec, self.ctx)
        return self._describer

    def _units_for(self, layer: str, channels: int) -> list[int]:
        selection = self.units
        if isinstance(selection, Mapping):
            selection = selection.get(layer)
        if selection is None:
            return list(range(channels))
        chosen = sorted(set(int(u) for u in selection))
        bad = [u for u in chosen if not 0 <= u < channels]
        if bad:
            raise NeurolabelError(
                f"Layer '{layer}' has units 0..{channels - 1}; {bad[:5]} are out of range"
            )
        return chosen

    # -- stages -----------------------------------------------------------------------
    def collect_exemplars(
        self, source: ImageSource, steps: Steps, with_sample: bool = False
    ) -> tuple[dict[str, TopKState], list[SkippedInput], dict[str, Tensor], Tensor]:
        """Stream the probing set through the model; keep each neuron's top-k.

        Layers found in the activation cache are not streamed again; the others share one
        forward pass per batch. Under torch.distributed each rank streams its shard and the
        shards are merged exactly.

        Returns:
            Per-layer :class:`TopKState`, skipped inputs, per-layer ``[S, C]`` activations of
            the sampled images (only when the aggregation needs them) and their indices.
        """
        loaded = self.loaded
        self._fingerprint = None  # weights may have changed since the last run
        settings = StreamSettings(
            self.top_k, self.activation, self.quantile, self.sample_size if with_sample else 0
        )
        sample_ids = (
            _sample_indices(len(source), self.sample_size)
            if with_sample
            else torch.empty(0, dtype=torch.long)
        )
        cache = self._activation_cache(source, settings)
        entries = {}
        if cache is not None:
            entries = {layer: e for layer in self.layers if (e := cache.load(layer)) is not None}
        missing = [layer for layer in self.layers if layer not in entries]
        if distributed.is_active():
            self._check_ranks_agree(source)
        self._pass_checkpoint = self._checkpoint(source, settings, missing) if missing else None
        outputs: dict[str, PassOutput] = {}
        if entries:
            cached = restore(entries, source)
            outputs.update(dict.fromkeys(entries, cached))
        if missing:
            if self.channels_last:
                loaded.model.to(memory_format=torch.channels_last)
            streamed = run_pass(
                loaded,
                self._extractor(),
                source,
                missing,
                settings,
                sample_ids,
                device=self.ctx.device,
                batch_size=self.batch_size,
                num_workers=self.num_workers,
                steps=steps,
                check_batch=self._check_layer_output,
                checkpoint=self._pass_checkpoint,
                resume=self.resume,
                precision=self.precision,
                channels_last=self.channels_last,
            )
            if cache is not None and distributed.rank_and_world()[0] == 0:
                cache.store(streamed)
            outputs.update(dict.fromkeys(missing, streamed))
        first = outputs[self.layers[0]]
        states = {layer: outputs[layer].states[layer] for layer in self.layers}
        samples = {layer: outputs[layer].sample_acts[layer] for layer in self.layers}
        return states, first.skipped, samples, first.sample_ids

    def _model_fingerprint(self) -> str:
        """The weights' hash, computed once per pass (hashing a large model takes a while)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.loaded)
        return self._fingerprint

    def _check_ranks_agree(self, source: ImageSource) -> None:
        """Every rank must stream the same model over the same images, or merging is wrong."""
        mine = (self._model_fingerprint(), len(source), source.fingerprint())
        if len(set(distributed.all_gather(mine))) > 1:
            raise NeurolabelError(
                "The torch.distributed ranks loaded different models or probing sets; "
                "randomly initialized weights (e.g. ?weights=none) differ per process: load "
                "saved weights, or seed the model's construction"
            )

    def _check_layer_output(self, layer: str, acts: Tensor) -> None:
        if acts.ndim == 2 and self.patches == "activation":
            raise NeurolabelError(
                f"Layer '{layer}' gives one value per unit ({tuple(acts.shape)}), so no patch "
                "can be cut from an activation map; use patches='auto' or 'whole', or a "
                "spatial layer"
            )

    def _run_key(self, images: str, settings: StreamSettings) -> dict[str, Any]:
        """What decides the exemplars of a pass over the probing set identified by ``images``."""
        loaded = self.loaded
        extractor = self.extractor_spec
        return {
            "model": self._model_fingerprint(),
            "preprocessing": loaded.preprocessing.to_dict(),
            "images": images,
            "extractor": extractor if isinstance(extractor, str) else extractor.name,
            "stream": vars(settings),
        }

    def _activation_cache(
        self, source: ImageSource, settings: StreamSettings
    ) -> ActivationCache | None:
        if not self.cache:
            return None
        images = source.cache_key()
        if images is None:  # an in-memory dataset: no cheap way to tell it changed
            return None
        return ActivationCache(self.ctx.cache_dir, self._run_key(images, settings))

    def _checkpoint(
        self, source: ImageSource, settings: StreamSettings, layers: list[str]
    ) -> Checkpoint | None:
        if self.checkpoint is None:
            if self.resume:
                raise NeurolabelError("resume=True needs a checkpoint path (checkpoint=...)")
            return None
        rank, world = distributed.rank_and_world()
        key = self._run_key(source.cache_key() or source.fingerprint(), settings)
        key.update(layers=layers, rank=rank, world=world, images_count=len(source))
        path = Path(self.checkpoint)
        if world > 1:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        return Checkpoint(path, key, self.checkpoint_every)

    def run(self, images: Any) -> LabelingResult:
        """Label the neurons of every layer on the probing ``images``.

        Args:
            images: A folder path, a torch Dataset, or an iterable of PIL images.

        Returns:
            A :class:`LabelingResult` (``save`` it to write JSON, CSV and patches).
        """
        return self.explain(self.gather_evidence(images))

    def gather_evidence(self, images: Any, with_sample: bool | None = None) -> Evidence:
        """Run every stage up to the patch-concept scores (the expensive part).

        :meth:`explain` then aggregates the evidence, so several aggregations can be
        compared on one run without re-reading images or re-scoring patches.

        Args:
            images: A folder path, a torch Dataset, or an iterable of PIL images.
            with_sample: Also score a uniform sample of whole images (needed by aggregations
                such as ``cos-cubed``); default: when the labeler's aggregation needs it.

        Returns:
            An :class:`Evidence`.
        """
        started = time.perf_counter()
        source = as_image_source(images)
        if self.holdout is not None:  # label with the rest; the result records the held-out part
            source = split_holdout(source, self.holdout, self.holdout_seed)[0]
        scorer = self._scorer()
        if isinstance(self.vocabulary_spec, str):  # llm: vocabularies seed from the classes
            self.ctx.extra["class_names"] = self.loaded.class_names
        # Rank 0 builds the vocabulary and shares it: an llm: vocabulary asks its model once.
        first = distributed.rank_and_world()[0] == 0
        vocabulary = resolve_vocabulary(self.vocabulary_spec, self.ctx) if first else None
        vocabulary = distributed.all_gather(vocabulary)[0]
        if with_sample is None:
            with_sample = self.aggregation.sample != "no"
        with progress_steps(self.progress) as steps:
            states, skipped, sample_acts, sample_ids = self.collect_exemplars(
                source, steps, with_sample
            )
            # The pass's freed batch buffers would otherwise stay under the VLM's own peak.
            release_freed_memory()
            layers = [self._layer_info(name, state) for name, state in states.items()]
            slots = sum(int((layer.state.ids[layer.units] >= 0).sum()) for layer in layers)
            plan = plan_scoring(
                self.scoring,
                self.patches if isinstance(self.patches, str) else "patcher",
                slots,
                len(source) - len(skipped),
            )
            if self.progress and distributed.rank_and_world()[0] == 0:
                stderr_console.print(f"Scoring {plan.mode}: {plan.reason}", highlight=False)
            requests = self._patch_requests(layers, source, steps, whole=plan.mode == "images")
            for image_index in sample_ids.tolist():  # whole images for image-level statistics
                requests.unique[(int(image_index), None)] = None
            thumbnail_slots: dict[Any, list[tuple[str, int, int]]] = {}
            for slot in self._thumbnail_keys(layers):
                if slot in requests.key_of:
                    thumbnail_slots.setdefault(requests.key_of[slot], []).append(slot)
            sims = score_patches(
                requests.unique,
                source,
                scorer,
                vocabulary,
                batch_size=self.batch_size,
                steps=steps,
                thumbnail_slots=thumbnail_slots,
                device=self.ctx.device,
                precision=self.precision,
                cache_root=self.ctx.cache_dir if self.cache else None,
                num_workers=self.num_workers,
            )
            release_freed_memory()
        if self._pass_checkpoint is not None:  # all the costly work is done
            self._pass_checkpoint.remove()
        return Evidence(
            source=source,
            scorer_name=getattr(scorer, "name", type(scorer).__name__),
            vocabulary=vocabulary,
            layers=layers,
            requests=requests,
            scores=sims,
            sample_acts=sample_acts,
            sample_ids=sample_ids,
            skipped=[*source.skipped_upfront, *skipped],
            num_unreadable=len(skipped),
            seconds=time.perf_counter() - started,
            plan=plan,
        )

    def explain(self, evidence: Evidence, aggregation: str | None = None) -> LabelingResult:
        """Aggregate gathered evidence into explanations.

        Args:
            evidence: From :meth:`gather_evidence`.
            aggregation: Aggregation name; default: the labeler's.

        Returns:
            The :class:`LabelingResult`.
        """
        started = time.perf_counter()
        chosen = self.aggregation if aggregation is None else get_aggregation(aggregation)
        if chosen.sample == "required" and not len(evidence.sample_ids):
            raise NeurolabelError(
                f"Aggregation '{chosen.name}' needs whole-image statistics: gather the "
                "evidence with with_sample=True"
            )
        describer = self.describer()
        # A constrained describer picks from the scorer's top candidates: rank that deep.
        depth = max(self.num_concepts, describer.num_candidates) if describer else None
        details: dict[str, dict[str, Any]] = {}
        neurons = {}
        for layer in evidence.layers:
            neurons[layer.name] = self._explain_layer(layer, evidence, chosen, depth, details)
            release_freed_memory()  # one layer's temporaries must not add to the next one's
        # Paid model requests once per run, on the rank that writes the result.
        first = distributed.rank_and_world()[0] == 0
        if describer is not None and first:
            describe_neurons(neurons, evidence, describer, self.num_concepts)
        if self.summarize_spec is not None and first:
            summarize_neurons(neurons, resolve_summarizer(self.summarize_spec, self.ctx))
        source = evidence.source
        result = LabelingResult(
            model=self._model_info(),
            layers={
                layer.name: {
                    "shape": list(layer.shape),
                    "kind": "spatial" if layer.spatial else "vector",
                    "units": layer.state.num_neurons,
                    "explained_units": len(layer.units),
                    "dead_units": int(layer.state.dead()[layer.units].sum()),
                }
                for layer in evidence.layers
            },
            neurons=neurons,
            dataset={
                "fingerprint": source.fingerprint(),
                "num_images": len(source),
                "num_used": len(source) - evidence.num_unreadable,
                "num_skipped": len(evidence.skipped),
                "skipped": [vars(s) for s in evidence.skipped],
                **holdout_entry(source),
            },
            settings=self._settings(evidence, chosen),
            versions=_versions(),
        )
        if details:
            result.settings["aggregation_details"] = details
        result.patch_images = dict(evidence.scores.thumbnails)
        seconds = evidence.seconds + time.perf_counter() - started
        result.settings["seconds"] = round(seconds, 3)
        return result

    # -- helpers ----------------------------------------------------------------------
    def _layer_info(self, name: str, state: TopKState) -> _Layer:
        spatial = state.maps is not None
        shape = (state.num_neurons, *state.maps.shape[-2:]) if spatial else (state.num_neurons,)
        return _Layer(name, state, spatial, shape, self._units_for(name, state.num_neurons))

    def _patch_requests(
        self, layers: list[_Layer], source: ImageSource, steps: Steps, whole: bool = False
    ) -> _Requests:
        patcher = None if whole else self._patcher()
        if patcher is not None:
            return self._attribution_requests(patcher, layers, source, steps)
        requests = _Requests()
        preprocessing = self.loaded.preprocessing
        sizes: dict[int, tuple[int, int]] = {}
        for layer in layers:
            state = layer.state
            units = torch.tensor(layer.units, dtype=torch.long)
            ids = state.ids[units]
            if whole or not layer.spatial or self.patches == "whole":
                for row, unit in enumerate(layer.units):
                    for rank, image_index in enumerate(ids[row].tolist()):
                        if image_index >= 0:
                            requests.add(layer.name, unit, rank, image_index, None)
                continue
            assert state.maps is not None
            maps, rows, ranks = flatten_maps(state.maps[units], ids)
            task = steps.task(f"Cutting patches ({layer.name})", len(rows))
            boxes = input_boxes(
                maps, state.threshold[units][rows], preprocessing, self.patch_settings
            )
            for box, row, rank in zip(boxes, rows.tolist(), ranks.tolist(), strict=True):
                image_index = int(ids[row, rank])
                if image_index not in sizes:
                    sizes[image_index] = source.size(image_index)
                original = image_box(box, preprocessing, sizes[image_index])
                requests.add(layer.name, layer.units[row], rank, image_index, original)
                task.advance()
        return requests

    def _attribution_requests(
        self, patcher: Patcher, layers: list[_Layer], source: ImageSource, steps: Steps
    ) -> _Requests:
        """Cut every exemplar's patch from the patcher's map of it (any layer kind)."""
        requests = _Requests()
        loaded = self.loaded
        preprocessing = loaded.preprocessing
        images = _ImageCache(source, preprocessing)
        sizes: dict[int, tuple[int, int]] = {}
        height, width = preprocessing.crop_size
        for layer in layers:
            state = layer.state
            dead = state.dead()
            total = int((state.ids[torch.tensor(layer.units, dtype=torch.long)] >= 0).sum())
            task = steps.task(f"Locating patches with {patcher.name} ({layer.name})", total)
            for unit in layer.units:
                slots = [(r, i) for r, i in enumerate(state.ids[unit].tolist()) if i >= 0]
                if bool(dead[unit]):  # no label will be given: spare the backward passes
                    for rank, image_index in slots:
                        requests.add(layer.name, unit, rank, image_index, None)
                    task.advance(len(slots))
                    continue
                for chunk in iter_batches(slots, self.batch_size):
                    batch = torch.stack([images.get(i) for _, i in chunk]).to(self.ctx.device)
                    # Attribution needs gradients, whatever mode the caller runs in.
                    with torch.inference_mode(False), torch.enable_grad():
                        maps = patcher.locate(loaded, layer.name, unit, batch)
                    if not isinstance(maps, Tensor) or tuple(maps.shape) != (
                        len(chunk),
                        height,
                        width,
                    ):
                        shape = tuple(maps.shape) if isinstance(maps, Tensor) else type(maps)
                        raise NeurolabelError(
                            f"Patcher '{patcher.name}' returned {shape} for {len(chunk)} images;"
                            f" expected [{len(chunk)}, {height}, {width}] maps"
                        )
                    boxes = attribution_boxes(maps, preprocessing, self.patch_settings)
                    for (rank, image_index), box in zip(chunk, boxes, strict=True):
                        if image_index not in sizes:
                            sizes[image_index] = source.size(image_index)
                        original = image_box(box, preprocessing, sizes[image_index])
                        requests.add(layer.name, unit, rank, image_index, original)
                    task.advance(len(chunk))
        return requests

    def _thumbnail_keys(self, layers: list[_Layer]) -> set[tuple[str, int, int]]:
        keys = set()
        for layer in layers:
            for unit in layer.units:
                for rank in range(min(self.saved_patches, self.top_k)):
                    keys.add((layer.name, unit, rank))
        return keys

    def _explain_layer(
        self,
        layer: _Layer,
        evidence: Evidence,
        aggregation: Aggregation,
        num_concepts: int | None = None,
        details: dict[str, dict[str, Any]] | None = None,
    ) -> list[NeuronExplanation]:
        state = layer.state
        requests, source, vocabulary = evidence.requests, evidence.source, evidence.vocabulary
        units = torch.tensor(layer.units, dtype=torch.long)
        with_sample = aggregation.sample != "no" and len(evidence.sample_ids) > 0
        exemplar_sims, values, sample = evidence.layer_tensors(layer.name, with_sample)
        options: dict[str, Any] = {}
        if aggregation.uses_groups:
            names = [vocabulary.category(c) or "" for c in vocabulary.concepts]
            index = {name: i for i, name in enumerate(dict.fromkeys(names))}
            options["groups"] = torch.tensor([index[n] for n in names])
        if aggregation.reports_details:
            options["details"] = {}
        scores = aggregation.function(exemplar_sims, values, sample, **options)
        if options.get("details") and details is not None:
            details[layer.name] = options["details"]
        dead = state.dead()[units]
        order = scores.argsort(dim=1, descending=True)[:, : num_concepts or self.num_concepts]
        neurons = []
        for row, unit in enumerate(layer.units):
            exemplars = [
                Exemplar(
                    image_index=int(state.ids[unit, rank]),
                    image=source.describe(int(state.ids[unit, rank])),
                    activation=_finite(state.values[unit, rank]),
                    box=list(requests.box_of[(layer.name, unit, rank)] or []) or None,
                    map=_report_map(state, unit, rank) if rank < self.saved_patches else None,
                )
                for rank in range(self.top_k)
                if (layer.name, unit, rank) in requests.key_of
            ]
            stats = {
                "mean": _finite(state.mean[unit]),
                "std": _finite(state.std[unit]),
                "min": _finite(state.min[unit]),
                "max": _finite(state.max[unit]),
                "threshold": _finite(state.threshold[unit]),
            }
            if bool(dead[row]):
                neurons.append(
                    NeuronExplanation(layer.name, unit, [], exemplars, True, stats=stats)
                )
                continue
            ranked = [[vocabulary.concepts[int(c)], _finite(scores[row, c])] for c in order[row]]
            best = int(order[row, 0])
            valid = torch.isfinite(values[row])
            similarity = (
                _finite(torch.nanmean(exemplar_sims[row, valid, best])) if valid.any() else None
            )
            neurons.append(
                NeuronExplanation(
                    layer.name, unit, ranked, exemplars, False, stats=stats, similarity=similarity
                )
            )
        return neurons

    def _model_info(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "name": loaded.name,
            "class": type(loaded.model).__name__,
            "num_parameters": sum(p.numel() for p in loaded.model.parameters()),
            "num_classes": len(loaded.class_names) if loaded.class_names else None,
            "class_names": loaded.class_names,
            "preprocessing": loaded.preprocessing.to_dict(),
        }

    def _settings(self, evidence: Evidence, aggregation: Aggregation) -> dict[str, Any]:
        vocabulary = evidence.vocabulary
        return {
            "layers": self.layers,
            "scorer": self.scorer_spec
            if isinstance(self.scorer_spec, str)
            else evidence.scorer_name,
            "vocabulary": vocabulary.source or "list",
            "vocabulary_size": len(vocabulary),
            "aggregation": aggregation.name,
            "extractor": self.extractor_spec
            if isinstance(self.extractor_spec, str)
            else self.extractor_spec.name,
            "top_k": self.top_k,
            "activation": self.activation,
            "threshold": self.patch_settings.threshold,
            "quantile": self.quantile,
            "min_patch_size": self.patch_settings.min_size,
            "patches": self.patches
            if isinstance(self.patches, str)
            else getattr(self.patches, "name", type(self.patches).__name__),
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "device": str(self.ctx.device),
            "sample_size": len(evidence.sample_ids) or None,
            "scoring": evidence.plan.to_dict() if evidence.plan else None,
            "precision": self.precision,
            "world_size": distributed.rank_and_world()[1],
            "describer": self._describer.name if self._describer else None,
            "summarizer": _spec_name(self.summarize_spec),
        }


@dataclass
class Evidence:
    """Everything gathered before aggregation: exemplars, patch-concept scores, samples.

    Returned by :meth:`NeuronLabeler.gather_evidence`; :meth:`NeuronLabeler.explain` turns it
    into a result with any aggregation, and :meth:`layer_tensors` exposes the raw tensors.
    """

    source: ImageSource
    scorer_name: str
    vocabulary: Vocabulary
    layers: list[_Layer]
    requests: _Requests
    scores: PatchScores
    sample_acts: dict[str, Tensor]
    sample_ids: Tensor
    skipped: list[SkippedInput]
    num_unreadable: int
    seconds: float
    plan: ScoringPlan | None = None

    def layer(self, name: str) -> _Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise NeurolabelError(f"No layer '{name}' in this evidence")

    def layer_tensors(
        self, name: str, with_sample: bool = False
    ) -> tuple[Tensor, Tensor, ImageSample | None]:
        """``(sims [U, k, V], activations [U, k], sample)`` of the explained units of a layer.

        Missing exemplars have ``-inf`` activation and NaN similarities.
        """
        layer = self.layer(name)
        k = layer.state.values.shape[1]
        units = torch.tensor(layer.units, dtype=torch.long)
        values = layer.state.values[units].clone()
        sims = torch.full((len(layer.units), k, len(self.vocabulary)), float("nan"))
        slots: list[tuple[int, int]] = []
        keys = []
        for row, unit in enumerate(layer.units):
            for rank in range(k):
                key = self.requests.key_of.get((name, unit, rank))
                if key is None:
                    values[row, rank] = float("-inf")
                else:
                    slots.append((row, rank))
                    keys.append(key)
        if keys:  # one product for the whole layer
            rows, ranks = zip(*slots, strict=True)
            sims[list(rows), list(ranks)] = self.scores.rows_for(keys)
        sample = None
        if with_sample:
            whole_images = [(int(i), None) for i in self.sample_ids.tolist()]
            # An embedding scorer's sample stays factored: no [S, V] scores are formed.
            embeddings = self.scores.embeddings_for(whole_images)
            scores = (
                {"sims": self.scores.rows_for(whole_images)}
                if embeddings is None
                else {"image_embeddings": embeddings, "concept_embeddings": self.scores.text}
            )
            # Where each exemplar's image sits in the sample, so that a validation on held-out
            # sampled images can keep those images out of the exemplar evidence too.
            ids = layer.state.ids[units]
            size = max([int(ids.max()) if ids.numel() else -1, *self.sample_ids.tolist()]) + 1
            row_of = torch.full((max(size, 1),), -1, dtype=torch.long)
            row_of[self.sample_ids.long()] = torch.arange(len(self.sample_ids))
            rows = torch.where(ids >= 0, row_of[ids.clamp(min=0)], -1)
            rows[~torch.isfinite(values)] = -1
            sample = ImageSample(
                acts=self.sample_acts[name][:, units], exemplar_rows=rows, **scores
            )
        return sims, values, sample


class _Requests:
    """Unique (image, box) patches needed, and which exemplar slot each one fills."""

    def __init__(self) -> None:
        self.unique: dict[tuple[int, tuple[int, int, int, int] | None], None] = {}
        self.key_of: dict[tuple[str, int, int], tuple[int, tuple[int, int, int, int] | None]] = {}
        self.box_of: dict[tuple[str, int, int], tuple[int, int, int, int] | None] = {}

    def add(self, layer: str, unit: int, rank: int, image_index: int, box) -> None:
        key = (image_index, tuple(box) if box is not None else None)
        self.unique[key] = None
        self.key_of[(layer, unit, rank)] = key
        self.box_of[(layer, unit, rank)] = key[1]


class _ImageCache:
    """Preprocessed exemplar images, re-read from the source at most once while they fit."""

    def __init__(
        self, source: ImageSource, preprocessing: Preprocessing, limit: int = _IMAGE_CACHE
    ) -> None:
        self.source = source
        self.preprocessing = preprocessing
        self.limit = limit
        self.tensors: dict[int, Tensor] = {}

    def get(self, index: int) -> Tensor:
        if index in self.tensors:
            return self.tensors[index]
        try:
            tensor = self.preprocessing(self.source.load(index))
        except ImageLoadError as exc:  # the file changed since the first pass
            where = self.source.describe(index)
            raise NeurolabelError(f"{where} became unreadable: {exc}") from None
        if len(self.tensors) >= self.limit:
            self.tensors.pop(next(iter(self.tensors)))  # oldest first
        self.tensors[index] = tensor
        return tensor


def _sample_indices(count: int, size: int) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    if count <= size:
        return torch.arange(count)
    return torch.randperm(count, generator=generator)[:size].sort().values


#: Report heatmaps need only the coarse shape of the map; this bounds result.json's size.
REPORT_MAP_SIDE = 16


def _report_map(state: TopKState, unit: int, rank: int) -> list[list[float]] | None:
    """The exemplar's low-resolution activation map, shrunk and rounded for the result."""
    if state.maps is None:
        return None
    cells = state.maps[unit, rank].float()
    if max(cells.shape) > REPORT_MAP_SIDE:
        scale = REPORT_MAP_SIDE / max(cells.shape)
        size = (max(1, round(cells.shape[0] * scale)), max(1, round(cells.shape[1] * scale)))
        cells = torch.nn.functional.adaptive_avg_pool2d(cells[None, None], size)[0, 0]
    return [[float(f"{v:.4g}") for v in row] for row in cells.tolist()]


def _spec_name(spec: Any) -> str | None:
    return spec if spec is None or isinstance(spec, str) else getattr(spec, "name", repr(spec))


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if number == number and abs(number) != float("inf") else None


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
