"""Everything that decides how a labeling run goes, as one frozen, validated value.

:class:`LabelingSettings` is the single home of the labeler's defaults: ``NeuronLabeler``
takes one, the CLI builds one from its options (its defaults are read from here, never
restated), and :meth:`LabelingSettings.to_dict` is what ``result.json`` records under
``settings``. Importing this module imports neither torch nor any model library.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.image_groups import compile_source_pattern
from ..errors import InvalidSettingError
from ..plugins.spec import redact_secrets

DEFAULT_SCORER = "open_clip:ViT-B-32/laion2b_s34b_b79k"
DEFAULT_VOCABULARY = "imagenet"
#: Patch modes built into the labeler; any other value names a registered patcher.
PATCH_MODES = ("auto", "activation", "whole")
#: What the scorer sees: ``auto`` picks the cheaper of exemplar patches and whole images.
SCORING_MODES = ("auto", "patches", "images")
#: Autocast precisions of the target's forward pass and the scorer's image encoding.
PRECISIONS = ("fp32", "bf16", "fp16")
#: How activation maps become patch regions: a per-neuron map-cell quantile, or Otsu per map.
THRESHOLD_METHODS = ("quantile", "otsu")
#: How an image's activation map becomes the one number images are ranked by.
ACTIVATIONS = ("max", "mean")

Units = tuple[int, ...]
#: Units to explain: for every layer, or per layer (None: all of a layer's units).
UnitSelection = Sequence[int] | Mapping[str, Sequence[int] | None] | None

#: Settings that do not change what a result says (how fast, where to keep state) or that
#: the result records elsewhere (units per layer, the holdout split): not in ``to_dict()``.
_NOT_RECORDED = frozenset(
    {
        "units",
        "num_concepts",
        "saved_patches",
        "progress",
        "channels_last",
        "cache",
        "checkpoint",
        "checkpoint_every",
        "resume",
        "holdout",
        "holdout_seed",
        "verify_split",
    }
)


@dataclass(frozen=True)
class LabelingSettings:
    """How :class:`~neurolabel.plugin_core.pipeline.labeler.NeuronLabeler` labels neurons.

    Spec strings name the parts the run resolves through the registries; the labeler also
    takes those parts as objects (a scorer, a patcher...), which then replace the spec.

    Args:
        scorer: Scorer spec (an embedding or concept scorer).
        vocabulary: Vocabulary spec (``imagenet``, ``words:20000``, ``file:PATH``,
            ``imagenet+words:5000``).
        aggregation: ``default``, ``contrast``, ``mean``, ``soft-wpmi``, ``wpmi``,
            ``cos-cubed``, with options after ``?`` (``contrast?correlation=1``).
        extractor: Extractor spec (``hooks``).
        patches: ``auto`` (cut from the activation map where the layer has one, whole images
            for vector layers), ``activation`` (cut from the map; an error for vector
            layers), ``whole`` (always whole images), or a registered patcher's spec
            (``gradcam``, ``gradient``, ``conductance``, ``integrated-gradients``), which
            computes a map per exemplar at input resolution for every layer.
        describer: A describer spec (a chat VLM, ``litellm:MODEL``) that looks at each
            neuron's exemplar patches; its ranking is fused with the scorer's.
        summarizer: A summarizer spec, or a bare litellm model name (``openai/gpt-4o-mini``
            means ``llm:openai/gpt-4o-mini``), writing each neuron's one-sentence ``summary``.
        source_pattern: A regular expression naming the source of each image (crops,
            frames or tiles of one photo or video): images whose names give the same first
            group are one source, and a neuron keeps at most one exemplar per source. E.g.
            ``(.+?)(_q\\d\\d)?\\.png$`` for ``cat.png`` and its crops ``cat_q00.png``... (see
            :func:`~neurolabel.plugin_core.data.image_groups.source_groups`).
        top_k: Exemplar images kept per neuron.
        activation: ``max`` or ``mean`` over a map, to rank images.
        threshold: Activation-map patch threshold, ``quantile`` or ``otsu`` (attribution
            maps of a patcher are always thresholded per map with Otsu's method).
        quantile: Map-cell quantile for ``quantile`` thresholds (0.995 = NetDissect).
        min_patch_size: Minimum patch side, as a fraction of the input's shorter side.
        batch_size: Images per forward pass (and per scorer call).
        num_workers: DataLoader workers (the forward pass, and reading and cutting the
            exemplar images for scoring).
        device: ``auto``, ``cpu``, ``cuda``... (used when the labeler builds its context).
        sample_size: Whole images sampled (uniformly) and scored for image-level statistics
            (the default aggregation's standardization, ``cos-cubed``).
        scoring: ``auto`` (default), ``patches`` or ``images``: whether the VLM scores each
            exemplar's patch, or whole images (every exemplar image once, as CLIP-Dissect
            scores every probing image). ``auto`` takes the cheaper one: whole images when
            a small probing set has fewer images than there are exemplar patches, as long as
            ``patches`` is ``auto``. The choice and its reason are stored in the result.
        precision: ``fp32`` (default), ``bf16`` or ``fp16``: autocast for the target's
            forward pass and the scorer's image encoding.
        units: Units to explain, for every layer or per layer (all by default).
        num_concepts: Ranked concepts stored per neuron.
        saved_patches: Exemplar patches per neuron kept for saving and reports.
        progress: Show rich progress bars.
        channels_last: Run the target on channels-last batches (faster convolutions on GPU).
        cache: Keep finished exemplar passes in the context's cache folder (folders of
            images only), so a rerun with another vocabulary, scorer or aggregation skips the
            forward pass.
        checkpoint: File where the forward pass's streaming state is saved every
            ``checkpoint_every`` batches and on interruption (one file per rank).
        checkpoint_every: Batches between checkpoint saves.
        resume: Continue from ``checkpoint`` when it exists; the result is exactly that of an
            uninterrupted run.
        holdout: Share of the images (0-1) set aside before labeling, chosen at random with
            ``holdout_seed``; the result records them (``dataset["holdout"]``) and the
            ``faithfulness`` evaluator uses them when given no folder.
        holdout_seed: Seed of the holdout split (and of the verification split).
        verify_split: Share of the probing images (after the holdout) set aside when the
            describer verifies its descriptions (``litellm:MODEL?verify=ROUNDS``): the
            candidates are tested on them, the exemplar search never sees them, and the
            result records them (``dataset["verification"]``).
        units_from: What a unit is: ``channels`` (default), ``sae:PATH`` (a sparse
            autoencoder's latents), ``directions:PATH`` (projections on a ``[U, C]``
            matrix), ``directions:pca?k=N`` (the layer's principal directions), ``heads``
            (attention heads), or another registered unit map (``register_unit_maps``).
        significance: Level of the label test: a unit whose best concept is not more
            present on its exemplar images than on the probing images at large (p-value
            corrected across the vocabulary and, by false discovery rate, across the
            layer's units) is reported as unexplained. None: no test (every unit labeled).
            See :mod:`~neurolabel.plugin_core.pipeline.significance`.

    Examples:
        >>> settings = LabelingSettings(top_k=5, units=range(4))
        >>> settings.top_k, settings.units, settings.to_dict()["scorer"]
        (5, (0, 1, 2, 3), 'open_clip:ViT-B-32/laion2b_s34b_b79k')
        >>> settings.replace(top_k=3).top_k
        3
        >>> LabelingSettings(top_k=0)
        Traceback (most recent call last):
        ...
        neurolabel.plugin_core.errors.InvalidSettingError: top_k must be at least 1, got 0
    """

    scorer: str = DEFAULT_SCORER
    vocabulary: str = DEFAULT_VOCABULARY
    aggregation: str = "default"
    extractor: str = "hooks"
    top_k: int = 10
    activation: str = "max"
    threshold: str = "quantile"
    quantile: float = 0.995
    min_patch_size: float = 0.25
    patches: str = "auto"
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"
    sample_size: int = 2000
    scoring: str = "auto"
    precision: str = "fp32"
    describer: str | None = None
    summarizer: str | None = None
    source_pattern: str | None = None
    units: UnitSelection = None
    num_concepts: int = 10
    saved_patches: int = 5
    progress: bool = True
    channels_last: bool = False
    cache: bool = True
    checkpoint: Path | None = None
    checkpoint_every: int = 50
    resume: bool = False
    holdout: float | None = None
    holdout_seed: int = 0
    verify_split: float = 0.2
    significance: float | None = 0.05
    units_from: str = "channels"

    def __post_init__(self) -> None:
        # Normalize first, so that every stored value is immutable and JSON-friendly.
        set_ = object.__setattr__
        set_(self, "device", str(self.device))
        if self.checkpoint is not None:
            set_(self, "checkpoint", Path(self.checkpoint))
        set_(self, "units", _units(self.units))
        if self.top_k < 1:
            raise InvalidSettingError(f"top_k must be at least 1, got {self.top_k}")
        if self.batch_size < 1:
            raise InvalidSettingError(f"batch_size must be at least 1, got {self.batch_size}")
        _choice("scoring", self.scoring, SCORING_MODES)
        _choice("precision", self.precision, PRECISIONS)
        _choice("threshold", self.threshold, THRESHOLD_METHODS)
        _choice("activation", self.activation, ACTIVATIONS)
        if not 0.0 < self.min_patch_size <= 1.0:
            raise InvalidSettingError(
                f"min_patch_size must be in (0, 1], got {self.min_patch_size}"
            )
        if not 0.0 <= self.quantile <= 1.0:
            raise InvalidSettingError(f"quantile must be in [0, 1], got {self.quantile}")
        for name in ("num_workers", "sample_size", "num_concepts", "saved_patches"):
            if getattr(self, name) < 0:
                raise InvalidSettingError(f"{name} must not be negative, got {getattr(self, name)}")
        if self.source_pattern is not None:
            compile_source_pattern(self.source_pattern)
        if self.significance is not None and not 0 < self.significance <= 1:
            raise InvalidSettingError(
                f"significance={self.significance}: give the level of the label test, above 0 "
                "and at most 1 (e.g. 0.05; 1 keeps every label with its p-value)"
            )
        if not 0 < self.verify_split < 1:
            raise InvalidSettingError(
                f"verify_split={self.verify_split}: give the share of the probing images on "
                "which verified descriptions are tested, between 0 and 1 (e.g. 0.2)"
            )
        if self.holdout is not None and not 0 < self.holdout < 1:
            raise InvalidSettingError(
                f"holdout={self.holdout}: give the share of images to set aside, between 0 "
                "and 1 (e.g. 0.2)"
            )

    @classmethod
    def names(cls) -> list[str]:
        """The setting names, in declaration order."""
        return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]

    def replace(self, **changes: Any) -> LabelingSettings:
        """A copy with ``changes`` applied (validated again).

        An unknown name fails with the closest valid one and the list of settings.
        """
        unknown = [name for name in changes if name not in self.names()]
        if unknown:
            raise TypeError(unknown_settings_message(unknown))
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings a result records (``result.json``'s ``settings``), JSON-friendly.

        Settings that only change how fast a run goes or where it keeps its state, and
        those a result records elsewhere (units per layer, the holdout split) are left
        out; the labeler adds what the run resolved (layers, vocabulary size, the scoring
        plan, the sample size used, the world size).
        """
        # Specs may carry secrets (an api_key option, a password in an api_base URL).
        return {
            name: redact_secrets(value) if isinstance(value, str) else value
            for name in self.names()
            if name not in _NOT_RECORDED
            for value in [getattr(self, name)]
        }

    def units_for(self, layer: str) -> Sequence[int] | None:
        """The units chosen for ``layer`` (None: all of them)."""
        if isinstance(self.units, Mapping):
            return self.units.get(layer)
        return self.units


def unknown_settings_message(unknown: Sequence[str]) -> str:
    """Say which setting names are unknown, with the closest valid name and every one."""
    names = LabelingSettings.names()
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"Unknown setting(s) {', '.join(hints)}. Settings: {', '.join(names)}"


def _choice(name: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise InvalidSettingError(f"{name}={value!r}: use one of {', '.join(choices)}")


def _units(selection: Any) -> Units | Mapping[str, Units | None] | None:
    if selection is None:
        return None
    if isinstance(selection, Mapping):
        return {
            str(layer): None if units is None else _unit_tuple(units)
            for layer, units in selection.items()
        }
    return _unit_tuple(selection)


def _unit_tuple(units: Any) -> Units:
    try:
        return tuple(int(u) for u in units)
    except (TypeError, ValueError):
        raise InvalidSettingError(
            f"units={units!r}: give unit numbers, for all layers or per layer"
        ) from None
