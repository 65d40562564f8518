"""The labeler: runs the pipeline's stages in order and assembles the result.

exemplars (:mod:`.exemplar_pass`) -> patches (:mod:`.patch_requests`) -> scores
(:mod:`.patch_scoring`) -> explanations (:mod:`.explanations`, :mod:`.aggregation`,
:mod:`.describe`). What a run does is decided by one
:class:`~neurolabel.plugin_core.pipeline.settings.LabelingSettings`; this module only
orchestrates.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any
from warnings import warn

import torch
from torch import Tensor, nn

from ..data.holdout import holdout_entry, split_holdout, split_verification
from ..data.image_groups import source_groups
from ..data.images import ImageSource, SkippedInput, as_image_source
from ..data.layer_patterns import expand_layer_patterns, layer_names
from ..data.preprocessing import Preprocessing
from ..data.result import LabelingResult
from ..data.vocabulary import Vocabulary
from ..errors import NeurolabelError, NeurolabelWarning
from ..plugins.context import ResolveContext
from ..plugins.contracts import (
    ConceptScorer,
    Describer,
    EmbeddingScorer,
    Extractor,
    LoadedModel,
    Patcher,
    Summarizer,
)
from ..plugins.resolve import (
    build_context,
    resolve_describer,
    resolve_model,
    resolve_summarizer,
    resolve_vocabulary,
)
from ..plugins.spec import Spec
from ..runtime import distributed
from ..runtime.memory import release_freed_memory
from ..runtime.progress import Steps, progress_steps, stderr_console
from ..runtime.terminal import shorten
from . import clip_dissect
from .activation_cache import ActivationCache, restore
from .aggregation import Aggregation, get_aggregation
from .describe import describe_neurons, summarize_neurons
from .evidence import Evidence, ExplainedLayer, PatchRequests
from .exemplar_pass import Checkpoint, PassOutput, StreamSettings, run_pass
from .explanations import exemplar_images, explain_layer
from .patch_requests import activation_requests, attribution_requests
from .patch_scoring import score_patches
from .patches import PatchSettings
from .scoring_plan import plan_scoring
from .settings import PATCH_MODES, LabelingSettings, unknown_settings_message
from .significance import MIN_SAMPLE, SignificanceSettings
from .topk import TopKState
from .unit_character import mark_redundancy
from .unit_mapping import MappedExtractor, fit_unit_map, mapped_extractor
from .verification import (
    apply_verified,
    patch_loader,
    read_verification_images,
    verify_neurons,
)

_VERSIONED = ("neurolabel", "torch", "torchvision", "timm", "open_clip_torch", "pillow", "numpy")


class NeuronLabeler:
    """Explain what each neuron of some layers responds to.

    Args:
        model: A model spec (``torchvision:resnet18``, ``packaged:efficientnet_lite0``), an
            ``nn.Module`` or a :class:`LoadedModel`.
        layers: Dotted layer names (``neurolabel layers MODEL`` lists them) or patterns
            (``layer3.*.conv2``, ``type:Conv2d``: see
            :func:`~neurolabel.plugin_core.data.layer_patterns.expand_layer_patterns`),
            expanded when the model loads; when ``model`` is a module or LoadedModel, also
            submodules of it or Captum layer attribution objects (anything with a
            ``.layer``), see :func:`~neurolabel.plugin_core.data.layer_patterns.layer_names`.
        scorer: Scorer spec or object (embedding or concept scorer); default the settings'.
        vocabulary: Vocabulary spec, a list of concepts, or a :class:`Vocabulary`; default
            the settings'.
        settings: A :class:`~neurolabel.plugin_core.pipeline.settings.LabelingSettings`
            (every option of the run, validated; its defaults otherwise).
        extractor: Extractor spec or object; default the settings' (``hooks``).
        patches: A patch mode, a registered patcher's spec, or a
            :class:`~neurolabel.plugin_core.plugins.contracts.Patcher` object.
        describer: A describer spec or object (a chat VLM looking at each neuron's patches).
        summarize: A summarizer spec or object, or a bare litellm model name.
        preprocessing: Input preprocessing when ``model`` is a bare module (or to replace
            the model source's).
        context: A prepared :class:`ResolveContext` (else one is built for the settings'
            device).
        **options: Any setting of :class:`LabelingSettings` by name (``top_k=5``,
            ``units=range(16)``, ``progress=False``...), applied over ``settings``.

    Examples:
        >>> labeler = NeuronLabeler("torchvision:resnet18?weights=none", ["layer4"],
        ...                         scorer="color", vocabulary="colors", top_k=3,
        ...                         units=range(2), device="cpu", progress=False)
        >>> labeler.settings.top_k, labeler.layers
        (3, ['layer4'])
        >>> from PIL import Image
        >>> images = [Image.new("RGB", (64, 64), color) for color in ("red", "blue") * 3]
        >>> result = labeler.run(images)
        >>> [n.unit for n in result.neurons["layer4"]], len(result.explanation("layer4", 0).top(2))
        ([0, 1], 2)
    """

    def __init__(
        self,
        model: str | nn.Module | LoadedModel,
        layers: Sequence[Any] | str,
        scorer: str | EmbeddingScorer | ConceptScorer | None = None,
        vocabulary: str | Vocabulary | Sequence[str] | None = None,
        *,
        settings: LabelingSettings | None = None,
        extractor: str | Extractor | None = None,
        patches: str | Patcher | None = None,
        describer: str | Describer | None = None,
        summarize: str | Summarizer | None = None,
        preprocessing: Preprocessing | None = None,
        context: ResolveContext | None = None,
        **options: Any,
    ) -> None:
        if isinstance(layers, str) or not isinstance(layers, Sequence):
            layers = [layers]
        if not layers:
            raise NeurolabelError("Give at least one layer (neurolabel layers MODEL lists them)")
        unknown = [name for name in options if name not in LabelingSettings.names()]
        if unknown:
            raise TypeError(unknown_settings_message(unknown))
        # A spec string is a setting (recorded as such); an object is used as given.
        parts = {
            "scorer": scorer,
            "vocabulary": vocabulary,
            "extractor": extractor,
            "patches": patches,
            "describer": describer,
            "summarizer": summarize,
        }
        specs = {name: value for name, value in parts.items() if isinstance(value, str)}
        self.settings = (settings or LabelingSettings()).replace(**specs, **options)
        chosen = self.settings
        self.ctx = context or build_context(chosen.device)
        self.aggregation = get_aggregation(chosen.aggregation)
        if self.aggregation.whole_layer:  # CLIP-Dissect as published sees every image whole
            self.settings = chosen = chosen.replace(**clip_dissect.LABELER_SETTINGS)
            patches = None
        self.patch_settings = PatchSettings(
            threshold=chosen.threshold, min_size=chosen.min_patch_size
        )
        self.scorer_spec: str | EmbeddingScorer | ConceptScorer = _part(scorer, chosen.scorer)
        self.vocabulary_spec: str | Vocabulary | Sequence[str] = _part(
            vocabulary, chosen.vocabulary
        )
        self.extractor_spec: str | Extractor = _part(extractor, chosen.extractor)
        self.patches: str | Patcher = _part(patches, chosen.patches)
        self.describer_spec: str | Describer | None = _part(describer, chosen.describer)
        self.summarize_spec: str | Summarizer | None = _part(summarize, chosen.summarizer)
        self._check_patches(self.patches)
        self.layers = self._layer_names(model, layers)
        self.model_spec = model
        self.preprocessing = preprocessing
        self._describer: Describer | None = None
        self._summarizer: Summarizer | None = None
        self._loaded: LoadedModel | None = None
        self._pass_checkpoint: Checkpoint | None = None
        self._fingerprint: str | None = None
        self._extractor_built: Extractor | None = None
        if self.settings.units_from != "channels":
            self._patcher()  # a patcher that cannot attribute the units is refused now

    # -- resolution -------------------------------------------------------------------
    @property
    def loaded(self) -> LoadedModel:
        """The target model, loaded on first use."""
        if self._loaded is None:
            self._loaded = resolve_model(self.model_spec, self.ctx, self.preprocessing)
            self.layers = expand_layer_patterns(self._loaded.model, self.layers)
            # Evaluators run in this process find the very network it labels (a spec with
            # random weights would load another one); the last few per name are kept.
            known = self.ctx.extra.setdefault("loaded_models", {})
            known[self._loaded.name] = [*known.get(self._loaded.name, [])[-3:], self._loaded]
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
        unit_map = getattr(self._extractor(), "unit_map", None)
        if unit_map is not None:
            for_unit_map = getattr(patcher, "for_unit_map", None)
            if not callable(for_unit_map):
                # A patcher attributes a channel unless it says how to attribute a unit.
                raise NeurolabelError(
                    f"The patcher '{patcher.name}' attributes channels; with units_from="
                    f"'{self.settings.units_from}' use a patcher with for_unit_map (gradcam, "
                    f"gradient, integrated-gradients) or patches={', '.join(PATCH_MODES)}"
                )
            patcher = for_unit_map(unit_map)
        return patcher

    def _extractor(self) -> Extractor:
        # Built once: a unit map fitted on the probing images keeps its fit.
        if self._extractor_built is None:
            spec = self.extractor_spec
            extractor = (
                spec
                if not isinstance(spec, str)
                else self.ctx.registries.extractors.resolve(spec, self.ctx)
            )
            self._extractor_built = mapped_extractor(extractor, self.settings.units_from, self.ctx)
        return self._extractor_built

    def _unit_map_record(self) -> dict[str, Any] | None:
        """What the result records of the unit map (None for channels)."""
        extractor = self._extractor()
        unit_map = getattr(extractor, "unit_map", None)
        return None if unit_map is None else unit_map.describe()

    def scorer(self) -> EmbeddingScorer | ConceptScorer:
        """The scorer, resolved from its spec (or the object given)."""
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
        if getattr(scorer, "texts_only", False):
            raise NeurolabelError(
                f"'{scorer.name}' embeds texts only (for find, compare and ablation's text=): "
                "label with an image scorer such as classifier or open_clip:MODEL"
            )
        if isinstance(spec, str):  # reports and queries in this process reuse it
            self.ctx.extra.setdefault("scorers", {})[spec] = scorer
        return scorer

    def _text_side(self) -> Any:
        """The scorer's ``encode_texts`` (verification embeds candidates with it)."""
        scorer = self.scorer()
        encode = getattr(scorer, "encode_texts", None)
        if not callable(encode):
            name = shorten(str(getattr(scorer, "name", type(scorer).__name__)))
            raise NeurolabelError(
                f"Verifying descriptions needs a scorer that embeds texts, and '{name}' does "
                "not: the candidates are tested as concepts of the scorer. Use open_clip:MODEL, "
                "or offline --scorer classifier:packaged:efficientnet_lite1 (ConSE)"
            )
        return encode

    def describer(self) -> Describer | None:
        """The describer, resolved on first use (None when none was given)."""
        if self._describer is None and self.describer_spec is not None:
            self._describer = resolve_describer(self.describer_spec, self.ctx)
        return self._describer

    def summarizer(self) -> Summarizer | None:
        """The summarizer, resolved on first use (None when none was given)."""
        if self._summarizer is None and self.summarize_spec is not None:
            self._summarizer = resolve_summarizer(self.summarize_spec, self.ctx)
        return self._summarizer

    def _units_for(self, layer: str, channels: int) -> list[int]:
        selection = self.settings.units_for(layer)
        if selection is None:
            return list(range(channels))
        chosen = sorted(set(selection))
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
        chosen = self.settings
        sampled = chosen.sample_size if with_sample else 0
        groups, sources = self._source_groups(source)
        # More exemplar slots than images would only be empty: the streaming state is sized
        # by what can fill it (--top-k 100000 on 300 images must not reserve 100000 slots).
        top_k = min(chosen.top_k, len(source))
        settings = StreamSettings(
            top_k, chosen.activation, chosen.quantile, sampled, sources=sources
        )
        sample_ids = (
            _sample_indices(len(source), self.settings.sample_size)
            if with_sample
            else torch.empty(0, dtype=torch.long)
        )
        extractor = self._extractor()
        if isinstance(extractor, MappedExtractor) and getattr(
            extractor.unit_map, "needs_fit", False
        ):
            # Fitted on these images before the pass (and before the cache key, which
            # records the fitted map).
            fit_unit_map(
                extractor,
                loaded,
                source,
                self.layers,
                device=self.ctx.device,
                batch_size=self.settings.batch_size,
                steps=steps,
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
            if self.settings.channels_last:
                loaded.model.to(memory_format=torch.channels_last)
            streamed = run_pass(
                loaded,
                self._extractor(),
                source,
                missing,
                settings,
                sample_ids,
                device=self.ctx.device,
                batch_size=self.settings.batch_size,
                num_workers=self.settings.num_workers,
                steps=steps,
                check_batch=self._check_layer_output,
                checkpoint=self._pass_checkpoint,
                resume=self.settings.resume,
                precision=self.settings.precision,
                channels_last=self.settings.channels_last,
                groups=groups,
            )
            if cache is not None and distributed.rank_and_world()[0] == 0:
                cache.store(streamed)
            outputs.update(dict.fromkeys(missing, streamed))
        first = outputs[self.layers[0]]
        states = {layer: outputs[layer].states[layer] for layer in self.layers}
        samples = {layer: outputs[layer].sample_acts[layer] for layer in self.layers}
        return states, first.skipped, samples, first.sample_ids

    def _split_groups(self, source: ImageSource) -> list[int] | None:
        """The source of every image, so a split keeps a photo's crops on one side (None
        without a source pattern)."""
        pattern = self.settings.source_pattern
        return source_groups(source, pattern) if pattern else None

    def _source_groups(self, source: ImageSource) -> tuple[Tensor | None, str]:
        """The source of every image and a digest of the grouping, when a source pattern
        asks for one exemplar per source (else ``(None, "")``)."""
        pattern = self.settings.source_pattern
        if pattern is None:
            return None, ""
        groups = torch.tensor(source_groups(source, pattern), dtype=torch.long)
        if int(groups.max()) + 1 == len(source):  # every image its own source
            return None, ""
        digest = hashlib.sha256(pattern.encode() + groups.numpy().tobytes()).hexdigest()[:16]
        return groups, digest

    def _model_fingerprint(self) -> str:
        """The weights' hash, computed once per pass (hashing a large model takes a while)."""
        if self._fingerprint is None:
            self._fingerprint = self.loaded.fingerprint()
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
            "units_from": self._unit_map_record(),
            "stream": vars(settings),
        }

    def _activation_cache(
        self, source: ImageSource, settings: StreamSettings
    ) -> ActivationCache | None:
        if not self.settings.cache:
            return None
        images = source.cache_key()
        if images is None:  # an in-memory dataset: no cheap way to tell it changed
            return None
        return ActivationCache(self.ctx.cache_dir, self._run_key(images, settings))

    def _checkpoint(
        self, source: ImageSource, settings: StreamSettings, layers: list[str]
    ) -> Checkpoint | None:
        if self.settings.checkpoint is None:
            if self.settings.resume:
                raise NeurolabelError("resume=True needs a checkpoint path (checkpoint=...)")
            return None
        rank, world = distributed.rank_and_world()
        key = self._run_key(source.cache_key() or source.fingerprint(), settings)
        key.update(layers=layers, rank=rank, world=world, images_count=len(source))
        path = Path(self.settings.checkpoint)
        if world > 1:
            path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
        return Checkpoint(path, key, self.settings.checkpoint_every)

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
        holdout = self.settings.holdout
        if holdout is not None:  # label with the rest; the result records the held-out part
            groups = self._split_groups(source)
            source = split_holdout(source, holdout, self.settings.holdout_seed, groups)[0]
        scorer = self.scorer()
        # Resolved now, so a mistake in a describer or summarizer spec fails before the pass.
        verifying = bool(getattr(self.describer(), "propose_rounds", None))
        self.summarizer()
        verification = None
        if verifying:  # its candidates are tested on images the exemplar search never sees
            self._text_side()
            source, verification = split_verification(
                source,
                self.settings.verify_split,
                self.settings.holdout_seed,
                self._split_groups(source),
            )
        if isinstance(self.vocabulary_spec, str):  # llm: vocabularies seed from the classes
            self.ctx.extra["class_names"] = self.loaded.class_names
        # Rank 0 builds the vocabulary and shares it: an llm: vocabulary asks its model once.
        first = distributed.rank_and_world()[0] == 0
        vocabulary = resolve_vocabulary(self.vocabulary_spec, self.ctx) if first else None
        vocabulary = distributed.all_gather(vocabulary)[0]
        if with_sample is None:  # the label test compares exemplars with sampled images
            with_sample = self.aggregation.sample != "no" or self.settings.significance is not None
        stages = {"setup": time.perf_counter() - started}
        cautions: list[str] = []  # what makes this run's labels doubtful, for the result
        with progress_steps(self.settings.progress) as steps:
            clock = time.perf_counter()
            states, skipped, sample_acts, sample_ids = self.collect_exemplars(
                source, steps, with_sample
            )
            stages["exemplar_pass"] = time.perf_counter() - clock
            clock = time.perf_counter()
            # The pass's freed batch buffers would otherwise stay under the VLM's own peak.
            release_freed_memory()
            layers = [self._layer_info(name, state) for name, state in states.items()]
            slots = sum(int((layer.state.ids[layer.units] >= 0).sum()) for layer in layers)
            plan = plan_scoring(
                self.settings.scoring,
                self.patches if isinstance(self.patches, str) else "patcher",
                slots,
                len(source) - len(skipped),
            )
            if self.aggregation.whole_layer:
                plan = dataclasses.replace(
                    plan,
                    reason="CLIP-Dissect as published scores every probing image whole "
                    f"({plan.probing_images:,} images; top_k only sets the exemplars shown)",
                )
            if self.settings.progress and distributed.rank_and_world()[0] == 0:
                stderr_console.print(f"Scoring {plan.mode}: {plan.reason}", highlight=False)
            requests = self._patch_requests(layers, source, steps, whole=plan.mode == "images")
            slots = len(requests.key_of)
            for image_index in sample_ids.tolist():  # whole images for image-level statistics
                requests.unique[(int(image_index), None)] = None
            if self.settings.significance is not None and len(sample_ids) >= MIN_SAMPLE:
                # The label test compares the exemplars' images with the sampled ones, whole.
                for image_index in exemplar_images(layers, requests):
                    requests.unique[(image_index, None)] = None
            if self.settings.progress and distributed.rank_and_world()[0] == 0:
                # The bar below counts these: slots that share an image region share it.
                extra = f" + {len(sample_ids):,} sampled whole images" if len(sample_ids) else ""
                stderr_console.print(
                    f"{slots:,} exemplar slots{extra} need {len(requests.unique):,} distinct "
                    "crops encoded",
                    highlight=False,
                )
            stages["patches"] = time.perf_counter() - clock
            clock = time.perf_counter()
            thumbnail_slots: dict[Any, list[tuple[str, int, int]]] = {}
            for slot in self._thumbnail_keys(layers):
                if slot in requests.key_of:
                    thumbnail_slots.setdefault(requests.key_of[slot], []).append(slot)
            sims = score_patches(
                requests.unique,
                source,
                scorer,
                vocabulary,
                batch_size=self.settings.batch_size,
                steps=steps,
                thumbnail_slots=thumbnail_slots,
                device=self.ctx.device,
                precision=self.settings.precision,
                cache_root=self.ctx.cache_dir if self.settings.cache else None,
                num_workers=self.settings.num_workers,
            )
            release_freed_memory()
            stages["scoring"] = time.perf_counter() - clock
            held = None
            if verification is not None:
                clock = time.perf_counter()
                held = read_verification_images(
                    verification,
                    self.loaded,
                    self._extractor(),
                    {layer.name: list(layer.units) for layer in layers},
                    scorer,
                    device=self.ctx.device,
                    reduce=self.settings.activation,
                    batch_size=self.settings.batch_size,
                )
                stages["verification_images"] = time.perf_counter() - clock
                record = getattr(source, "verification", None)
                if held.skipped and record is not None:
                    # reported with the split, as the probing part's are in dataset.skipped
                    record["skipped"] = [vars(s) for s in held.skipped]
            if sims.sees_no_difference():
                cautions.append(
                    f"The scorer '{getattr(scorer, 'name', type(scorer).__name__)}' gave every "
                    f"concept of the vocabulary '{shorten(vocabulary.source or '?')}' the same "
                    "score on every patch: it cannot tell these concepts apart, and each label "
                    "is only the vocabulary's first word. Choose a vocabulary this scorer "
                    "knows (the color scorer: --vocab colors) or a scorer that reads any "
                    "concept (open_clip:MODEL, or classifier:MODEL for ImageNet classes)."
                )
                warn(cautions[-1], NeurolabelWarning, stacklevel=3)
            unseen = sims.unseen_concepts()
        if self._pass_checkpoint is not None:  # all the costly work is done
            self._pass_checkpoint.remove()
        return Evidence(
            source=source,
            scorer_name=getattr(scorer, "name", type(scorer).__name__),
            scorer_embeds_texts=callable(getattr(scorer, "encode_texts", None)),
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
            stage_seconds=stages,
            warnings=cautions,
            unseen_concepts=unseen,
            activation=self.settings.activation,
            verification=held,
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
        if chosen.whole_layer:
            usable = len(evidence.source) - evidence.num_unreadable
            problem = clip_dissect.published_mode_problem(
                evidence.activation, len(evidence.sample_ids), usable
            )
            if problem:
                raise NeurolabelError(
                    f"Aggregation '{chosen.name}' reproduces CLIP-Dissect as published, which "
                    f"this evidence cannot give: {problem}. Gather it with a labeler built "
                    f"with aggregation='{chosen.name}' (it sets the published settings)."
                )
        describer = self.describer()
        # A constrained describer picks from the scorer's top candidates: rank that deep.
        depth = self.settings.num_concepts
        if describer is not None:
            depth = max(depth, describer.num_candidates)
        details: dict[str, dict[str, Any]] = {}
        cautions = list(evidence.warnings)
        level = self.settings.significance
        test = None if level is None else SignificanceSettings(level=level)
        neurons = {}
        for layer in evidence.layers:
            found = len(cautions)
            neurons[layer.name] = explain_layer(
                layer,
                evidence,
                chosen,
                depth,
                self.settings.saved_patches,
                details,
                cautions,
                significance=test,
            )
            for message in cautions[found:]:
                warn(message, NeurolabelWarning, stacklevel=2)
            release_freed_memory()  # one layer's temporaries must not add to the next one's
        # Paid model requests once per run, on the rank that writes the result.
        first = distributed.rank_and_world()[0] == 0
        verifying = bool(getattr(describer, "propose_rounds", None))
        if describer is not None and first and verifying:
            verify_neurons(
                neurons,
                evidence,
                describer,
                self._text_side(),
                patch_loader(evidence, describer.num_patches),
                evidence.verification,
            )
            for layer_neurons in neurons.values():
                apply_verified(layer_neurons)
        elif describer is not None and first:
            describe_neurons(neurons, evidence, describer, self.settings.num_concepts)
            for layer_neurons in neurons.values():  # the describer may change top labels
                mark_redundancy(layer_neurons)
        summarizer = self.summarizer()
        if summarizer is not None and first:
            summarize_neurons(neurons, summarizer)
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
                **({"root": str(source.root.resolve())} if source.root is not None else {}),
                **holdout_entry(source),
            },
            settings=self._settings_record(evidence, chosen),
            versions=_versions(),
        )
        if details:
            result.settings["aggregation_details"] = details
        if test is not None:
            result.settings["significance_test"] = test.to_dict()
        unit_map = self._unit_map_record()
        if unit_map is not None:
            result.settings["unit_map"] = unit_map
        # The categories of the concepts the units were given (compare's coverage).
        vocabulary = evidence.vocabulary
        categories = {
            str(concept): category
            for neurons in result.neurons.values()
            for neuron in neurons
            for concept, _ in neuron.concepts
            if (category := vocabulary.category(str(concept)))
        }
        if categories:
            result.settings["concept_categories"] = dict(sorted(categories.items()))
        if chosen.whole_layer:
            result.settings["clip_dissect"] = {
                **clip_dissect.published_settings(chosen.name.split(":", 1)[1]),
                # soft-WPMI's 100 (WPMI's 28) top images, of these
                "probing_images": len(evidence.sample_ids),
            }
        if cautions:
            result.settings["warnings"] = cautions
        result.patch_images = dict(evidence.scores.thumbnails)
        explaining = time.perf_counter() - started
        result.settings["seconds"] = round(evidence.seconds + explaining, 3)
        stages = {**evidence.stage_seconds, "explain": explaining}
        result.settings["stage_seconds"] = {k: round(v, 3) for k, v in stages.items()}
        return result

    # -- helpers ----------------------------------------------------------------------
    def _layer_info(self, name: str, state: TopKState) -> ExplainedLayer:
        units = self._units_for(name, state.num_neurons)
        if state.maps is None:
            return ExplainedLayer(name, state, False, (state.num_neurons,), units)
        shape = (state.num_neurons, *state.maps.shape[-2:])
        return ExplainedLayer(name, state, True, shape, units)

    def _patch_requests(
        self, layers: list[ExplainedLayer], source: ImageSource, steps: Steps, whole: bool
    ) -> PatchRequests:
        patcher = None if whole else self._patcher()
        if patcher is not None:
            return attribution_requests(
                patcher,
                self.loaded,
                layers,
                source,
                self.patch_settings,
                steps,
                self.settings.batch_size,
                self.ctx.device,
            )
        return activation_requests(
            layers,
            source,
            self.loaded.preprocessing,
            self.patch_settings,
            steps,
            whole=whole or self.patches == "whole",
        )

    def _thumbnail_keys(self, layers: list[ExplainedLayer]) -> set[tuple[str, int, int]]:
        keys = set()
        for layer in layers:
            for unit in layer.units:
                for rank in range(min(self.settings.saved_patches, self.settings.top_k)):
                    keys.add((layer.name, unit, rank))
        return keys

    def _model_info(self) -> dict[str, Any]:
        loaded = self.loaded
        return {
            "name": loaded.name,
            "class": type(loaded.model).__name__,
            "num_parameters": sum(p.numel() for p in loaded.model.parameters()),
            "num_classes": len(loaded.class_names) if loaded.class_names else None,
            "class_names": loaded.class_names,
            "preprocessing": loaded.preprocessing.to_dict(),
            # So that an evaluator reloading the model can tell it got the same network.
            "weights": self._model_fingerprint(),
        }

    def _settings_record(self, evidence: Evidence, aggregation: Aggregation) -> dict[str, Any]:
        """``settings.to_dict()`` with what the run resolved: names of the objects it was
        given, the expanded layers, the vocabulary's size, the scoring plan, the sample."""
        resolved = self.settings.replace(
            scorer=_name(self.scorer_spec, evidence.scorer_name),
            vocabulary=evidence.vocabulary.source or "list",
            aggregation=aggregation.name,
            extractor=_name(self.extractor_spec),
            patches=_name(self.patches),
            device=str(self.ctx.device),
            describer=self._describer.name if self._describer else None,
            summarizer=_name(self.summarize_spec),
        ).to_dict()
        resolved["sample_size"] = len(evidence.sample_ids) or None
        resolved["scorer_embeds_texts"] = evidence.scorer_embeds_texts
        resolved["scoring"] = evidence.plan.to_dict() if evidence.plan else None
        record: dict[str, Any] = {"layers": self.layers}
        for key, value in resolved.items():
            record[key] = value
            if key == "vocabulary":
                record["vocabulary_size"] = len(evidence.vocabulary)
            elif key == "precision":
                record["world_size"] = distributed.rank_and_world()[1]
        return record


def _part(given: Any, spec: Any) -> Any:
    """An object given for a part of the run, else the settings' spec of it."""
    return spec if given is None or isinstance(given, str) else given


def _name(part: Any, fallback: str | None = None) -> Any:
    """A part's spec string, or the name of the object given for it."""
    if part is None or isinstance(part, str):
        return part
    return fallback or getattr(part, "name", type(part).__name__)


def _sample_indices(count: int, size: int) -> Tensor:
    generator = torch.Generator().manual_seed(0)
    if count <= size:
        return torch.arange(count)
    return torch.randperm(count, generator=generator)[:size].sort().values


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for package in _VERSIONED:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions
