"""Explain a prediction through labeled neurons, with Captum layer attributions.

Given a :class:`~neurolabel.plugin_core.data.result.LabelingResult`, the model it labeled, an
image and a target class, :func:`attribute_prediction` attributes the target's output to
the units of a labeled layer (``LayerConductance``, ``LayerGradientXActivation`` or
``LayerIntegratedGradients``), ranks the units by contribution, attaches their labels and
says it in one sentence::

    'tabby' came mostly through units labeled 'fur' (31 %), 'whiskers' (18 %) …

A unit's contribution is its attribution summed over its map (over all tokens for token
layers). Shares are fractions of the total *positive* contribution of the layer, so units
that push the target down have negative shares. Conductance and integrated gradients are
complete: the contributions add up to the change of the target's output from the
baseline (zero input) to the image, up to the reported convergence delta.

Per-neuron heatmaps are drawn with ``captum.attr.visualization.visualize_image_attr``
(matplotlib's Agg backend, PNG files): the unit's attribution map upsampled onto the image
for spatial and token layers, the unit's ``NeuronConductance`` to the target over the
input pixels for vector layers.

The CLI command is ``neurolabel attribute RESULT IMAGE --target CLASS``.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neurolabel.plugin_core.data.imagenet import class_synonyms, is_imagenet_1k
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.data.result import LabelingResult, NeuronExplanation
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import LoadedModel
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.resolve import (
    as_loaded,
    load_result_model,
    resolve_model,
    result_unit_map,
)
from neurolabel.plugin_core.plugins.spec import Spec
from neurolabel.plugin_core.plugins.unit_writes import check_writes_back, unit_writes

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from torch import Tensor, nn

#: Layer attribution methods, by the name ``--method`` takes, and their Captum class.
METHODS: dict[str, str] = {
    "conductance": "LayerConductance",
    "gradient-x-activation": "LayerGradientXActivation",
    "integrated-gradients": "LayerIntegratedGradients",
}
DEFAULT_STEPS = 32
#: Labels named in the sentence; the rest are summarized by an ellipsis.
SENTENCE_LABELS = 3


@dataclass
class NeuronContribution:
    """How much one unit of the layer carried the target.

    Args:
        unit: Channel / unit index.
        contribution: Its attribution, summed over its map.
        share: ``contribution`` over the layer's total positive contribution (negative for
            units that pushed the target down).
        label: Its description in the result, None when the result does not label it
            (not explained, or dead).
        concepts: Its top concepts with scores (empty when unlabeled).
    """

    unit: int
    contribution: float
    share: float
    label: str | None = None
    concepts: list[tuple[str, float]] = field(default_factory=list)


@dataclass
class PredictionAttribution:
    """A prediction explained through the labeled units of one layer.

    Args:
        target: The Captum target (class index, or a tuple for multi-dimensional outputs).
        target_name: The class name (or ``class N``).
        layer: The layer attributed to.
        method: ``conductance``, ``gradient-x-activation`` or ``integrated-gradients``.
        output: The model's output for the target on the image.
        contributions: ``[C]`` per-unit contributions.
        neurons: The ``top`` contributing units, strongest first.
        sentence: The one-sentence summary.
        delta: Captum's convergence delta (conductance, integrated gradients), else None.
        maps: ``[C, h, w]`` per-unit attribution maps in unit layout, or None for vector
            layers.
        attribute_to_layer_input: Whether the layer's input was attributed to.
    """

    target: Any
    target_name: str
    layer: str
    method: str
    output: float
    contributions: Tensor
    neurons: list[NeuronContribution]
    sentence: str
    delta: float | None = None
    maps: Tensor | None = None
    attribute_to_layer_input: bool = False
    _inputs: Tensor | None = field(default=None, repr=False)
    _loaded: LoadedModel | None = field(default=None, repr=False)
    _n_steps: int = field(default=DEFAULT_STEPS, repr=False)
    _unit_map: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly summary (no tensors but the top units' figures)."""
        return {
            "target": list(self.target) if isinstance(self.target, tuple) else self.target,
            "target_name": self.target_name,
            "layer": self.layer,
            "method": self.method,
            "attribute_to_layer_input": self.attribute_to_layer_input,
            "output": self.output,
            "total_contribution": float(self.contributions.sum()),
            "delta": self.delta,
            "sentence": self.sentence,
            "neurons": [
                {
                    "unit": n.unit,
                    "contribution": n.contribution,
                    "share": n.share,
                    "label": n.label,
                    "concepts": [[c, s] for c, s in n.concepts],
                }
                for n in self.neurons
            ],
        }

    def heatmap(self, unit: int) -> Tensor:
        """``[H, W]`` map of where ``unit`` carried the target, at input resolution.

        Args:
            unit: A unit of the layer.

        Returns:
            The unit's attribution map upsampled to the input (spatial and token layers),
            or its ``NeuronConductance`` to the target summed over color channels (vector
            layers).
        """
        import torch

        from neurolabel.adapters.captum_common import captum_attr, resolve_module

        if self._inputs is None or self._loaded is None:
            raise NeurolabelError("This attribution holds no input; recompute it")
        if not 0 <= unit < self.contributions.shape[0]:
            raise NeurolabelError(
                f"Layer '{self.layer}' has units 0..{self.contributions.shape[0] - 1}"
            )
        attr = captum_attr()
        size = tuple(self._inputs.shape[-2:])
        if self.maps is not None:
            unit_map = self.maps[unit][None, None].float()
            return attr.LayerAttribution.interpolate(unit_map, size, "bilinear")[0, 0]
        if self._unit_map is not None:
            raise NeurolabelError(
                f"Per-unit heatmaps of '{self._unit_map.name}' units on a vector layer are not "
                "drawn: NeuronConductance flows through one neuron of the layer"
            )
        net = self._loaded.model
        _, module = resolve_module(net, self.layer)
        with torch.inference_mode(False), torch.enable_grad():
            values = attr.NeuronConductance(net, module).attribute(
                self._inputs.clone(),
                neuron_selector=unit,
                target=self.target,
                n_steps=self._n_steps,
                attribute_to_neuron_input=self.attribute_to_layer_input,
            )
        return values[0].sum(0).detach()

    def save_heatmaps(self, folder: str | Path, units: list[int] | None = None) -> list[Path]:
        """Draw each unit's heatmap over the image with Captum's visualization; save PNGs.

        Args:
            folder: Output folder (created).
            units: Units to draw; default the top contributing units.

        Returns:
            The written files, ``{layer}_unit{unit}.png``.

        Examples:
            >>> import tempfile
            >>> from PIL import Image
            >>> from torch import nn
            >>> from neurolabel import LoadedModel, Preprocessing
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
            ...                     nn.Flatten())
            >>> loaded = LoadedModel(net, Preprocessing((32, 32), resize_size=None), "tiny")
            >>> explained = attribute_prediction(None, loaded, Image.new("RGB", (64, 64), "red"),
            ...                                  target=0, layer="1", device="cpu")
            >>> paths = explained.save_heatmaps(tempfile.mkdtemp(), units=[0, 1])
            >>> [path.name for path in paths]
            ['1_unit00000.png', '1_unit00001.png']
        """
        import matplotlib

        matplotlib.use("Agg")  # files only: never open a window
        from captum.attr import visualization

        if self._inputs is None or self._loaded is None:
            raise NeurolabelError("This attribution holds no input; recompute it")
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        image = _display_image(self._inputs[0], self._loaded.preprocessing)
        chosen = units if units is not None else [n.unit for n in self.neurons]
        by_unit = {n.unit: n for n in self.neurons}
        safe_layer = "".join(c if c.isalnum() or c in "._-" else "_" for c in self.layer)
        paths = []
        for unit in chosen:
            heat = self.heatmap(unit).cpu().numpy()[..., None]
            info = by_unit.get(unit)
            label = f"'{info.label}'" if info and info.label else "unlabeled"
            share = f", {_percent(info.share)} of '{self.target_name}'" if info else ""
            title = f"{self.layer} unit {unit}: {label}{share}"
            if not heat.any():
                # Captum cannot normalize an all-zero map: show the image and say so.
                from matplotlib.figure import Figure

                fig = Figure(figsize=(6, 6))
                axis = fig.subplots()
                axis.imshow(image)
                axis.set_axis_off()
                axis.set_title(title + " (no attribution)")
            else:
                fig, _ = visualization.visualize_image_attr(
                    heat,
                    image,
                    method="blended_heat_map",
                    sign="all",
                    show_colorbar=True,
                    title=title,
                    use_pyplot=False,
                )
            path = out / f"{safe_layer}_unit{unit:05d}.png"
            fig.savefig(path, dpi=80, bbox_inches="tight")
            paths.append(path)
        return paths


def attribute_prediction(
    result: LabelingResult | str | Path | None,
    model: str | nn.Module | LoadedModel | None,
    image: Image.Image | str | Path | Tensor,
    target: int | str | tuple[int, ...] | None = None,
    *,
    layer: Any = None,
    method: str = "conductance",
    top: int = 10,
    baselines: Tensor | float | None = None,
    n_steps: int = DEFAULT_STEPS,
    internal_batch_size: int | None = None,
    attribute_to_layer_input: bool | None = None,
    preprocessing: Preprocessing | None = None,
    device: str | torch.device = "auto",
    context: ResolveContext | None = None,
) -> PredictionAttribution:
    """Attribute a prediction to the units of a labeled layer and name them.

    Args:
        result: The labeling result (or its folder / ``result.json``) whose labels name
            the units; None attributes without labels (every unit unlabeled).
        model: The model the result labeled: a spec, a module, or a LoadedModel; None
            loads the result's model spec.
        image: A PIL image or image path (preprocessed like the labeling run), or an
            already preprocessed ``[3, H, W]`` / ``[1, 3, H, W]`` tensor.
        target: Captum's ``target``: a class index, a class name of the model (or of
            the result), a tuple for multi-dimensional outputs; None takes the top-1
            prediction.
        layer: The layer (dotted name, module, or Captum layer attribution object);
            default the result's only layer.
        method: ``conductance`` (``LayerConductance``), ``gradient-x-activation``
            (``LayerGradientXActivation``) or ``integrated-gradients``
            (``LayerIntegratedGradients``).
        top: Units reported in :attr:`PredictionAttribution.neurons`.
        baselines: Captum baselines for conductance and integrated gradients (default
            zero, i.e. the mean image under ImageNet normalization).
        n_steps: Integration steps.
        internal_batch_size: Captum's ``internal_batch_size``.
        attribute_to_layer_input: Attribute to the layer's input (Captum's
            ``attribute_to_layer_input``); default: what the result's extractor read
            (``captum?layer_input=true`` reads inputs), else the output.
        preprocessing: How a PIL image becomes the input; default the LoadedModel's, else
            the result's, else the model source's.
        device: ``auto``, ``cpu``, ``cuda``...
        context: A prepared resolve context (for model specs).

    Returns:
        The :class:`PredictionAttribution` (``.sentence``, ``.neurons``,
        ``.save_heatmaps(folder)``).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from PIL import Image
        >>> from neurolabel import LoadedModel, NeuronLabeler, Preprocessing
        >>> conv = nn.Conv2d(3, 2, 1, bias=False)  # unit 0: red minus blue, unit 1: the reverse
        >>> conv.weight.data = torch.tensor([[1.0, 0, -1], [-1, 0, 1]]).view(2, 3, 1, 1)
        >>> net = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        >>> loaded = LoadedModel(net, Preprocessing((32, 32), resize_size=None), "red-blue",
        ...                      class_names=["red thing", "blue thing"])
        >>> images = [Image.new("RGB", (32, 32), color) for color in ("red", "blue") * 2]
        >>> result = NeuronLabeler(loaded, ["1"], scorer="color", vocabulary="colors",
        ...                        device="cpu", progress=False).run(images)
        >>> explained = attribute_prediction(result, loaded, images[0], target="red thing",
        ...                                  layer="1", device="cpu")
        >>> print(explained.sentence)
        'red thing' came mostly through units labeled 'red' (100 %).
        >>> [(n.unit, n.label, round(n.share, 2)) for n in explained.neurons]
        [(0, 'red', 1.0), (1, 'blue', 0.0)]
    """
    import torch

    from neurolabel.adapters.captum_common import captum_attr, resolve_module
    from neurolabel.adapters.hook_extractor import first_tensor, input_dtype
    from neurolabel.plugin_core.plugins.resolve import build_context

    if method not in METHODS:
        raise NeurolabelError(f"Unknown method {method!r}: use one of {', '.join(METHODS)}")
    if top < 1:
        raise NeurolabelError(f"top must be at least 1, got {top}")
    if n_steps < 1:
        raise NeurolabelError(f"n_steps must be at least 1, got {n_steps}")
    if isinstance(result, (str, Path)):
        result = LabelingResult.load(result)
    ctx = context or build_context(device)
    loaded = _load_model(result, model, preprocessing, ctx)
    net = loaded.model.eval().to(ctx.device)
    layer_name = _layer_name(result, net, layer)
    _, module = resolve_module(net, layer_name)
    if attribute_to_layer_input is None:
        attribute_to_layer_input = _result_reads_inputs(result)
    inputs = _as_input(image, loaded.preprocessing).to(ctx.device, input_dtype(net))
    with torch.inference_mode():
        logits = first_tensor(net(inputs))
    if logits is None:
        raise NeurolabelError("The model's output holds no tensor to take a target from")
    class_names = loaded.class_names or (result.model.get("class_names") if result else None)
    target, target_name = resolve_target(target, logits, class_names)
    position = (0, *((target,) if isinstance(target, int) else target))
    output = float(logits[position])

    attr = captum_attr()
    input_hw = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    unit_map = result_unit_map(result, ctx, loaded) if result is not None else None
    writes = None
    if unit_map is not None:
        check_writes_back(unit_map, layer_name)
        writes = "groups" if callable(getattr(unit_map, "channel_groups", None)) else "decoder"
    # What the explanation records besides the figures.
    labeled = dict(
        target=target,
        target_name=target_name,
        layer=layer_name,
        method=method,
        output=output,
        attribute_to_layer_input=attribute_to_layer_input,
        _inputs=inputs.detach(),
        _loaded=loaded,
        _n_steps=n_steps,
        _unit_map=unit_map,
    )
    delta: float | None = None
    if writes == "decoder":
        contributions, maps = _decoded_unit_contributions(
            attr,
            loaded,
            module,
            layer_name,
            unit_map,
            inputs,
            target,
            method,
            baselines,
            n_steps,
            internal_batch_size,
            attribute_to_layer_input,
        )
        return _explained(result, labeled, contributions, maps, top, None)
    algo = getattr(attr, METHODS[method])(net, module)
    with torch.inference_mode(False), torch.enable_grad():
        x = inputs.clone().requires_grad_()
        if method == "gradient-x-activation":
            raw = algo.attribute(
                x, target=target, attribute_to_layer_input=attribute_to_layer_input
            )
        else:
            raw, deltas = algo.attribute(
                x,
                baselines=baselines,
                target=target,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                attribute_to_layer_input=attribute_to_layer_input,
                return_convergence_delta=True,
            )
            delta = float(deltas.reshape(-1)[0])
    raw_tensor = first_tensor(raw)
    if raw_tensor is None:
        raise NeurolabelError(f"Captum returned no tensor for layer '{layer_name}'")
    contributions, maps = unit_contributions(
        loaded, raw_tensor.detach().float(), input_hw, layer_name
    )
    if writes == "groups":  # a head's attribution is its channels' attributions summed
        _, groups = unit_writes(unit_map, layer_name, int(contributions.shape[0]))  # type: ignore[arg-type]
        contributions = groups @ contributions
        maps = None if maps is None else torch.einsum("uc,chw->uhw", groups, maps)
    return _explained(result, labeled, contributions, maps, top, delta)


def _explained(
    result: LabelingResult | None,
    labeled: dict[str, Any],
    contributions: Tensor,
    maps: Tensor | None,
    top: int,
    delta: float | None,
) -> PredictionAttribution:
    """Rank the units by contribution, name them and say it in one sentence."""
    labels = _labels(result, labeled["layer"], contributions.shape[0])
    positive = float(contributions.clamp(min=0).sum())
    scale = positive if positive > 0 else 1.0
    order = contributions.argsort(descending=True)[: min(top, contributions.shape[0])]
    neurons = []
    for unit in order.tolist():
        neuron = labels.get(unit)
        neurons.append(
            NeuronContribution(
                unit=unit,
                contribution=float(contributions[unit]),
                share=float(contributions[unit]) / scale,
                label=neuron.description if neuron is not None else None,
                concepts=neuron.top(3) if neuron is not None else [],
            )
        )
    unit_labels = {unit: n.description for unit, n in labels.items()}
    sentence = contribution_sentence(labeled["target_name"], contributions, unit_labels)
    return PredictionAttribution(
        contributions=contributions,
        neurons=neurons,
        sentence=sentence,
        delta=delta,
        maps=maps,
        **labeled,
    )


def _decoded_unit_contributions(
    attr: Any,
    loaded: LoadedModel,
    module: nn.Module,
    layer: str,
    unit_map: Any,
    inputs: Tensor,
    target: Any,
    method: str,
    baselines: Tensor | float | None,
    n_steps: int,
    internal_batch_size: int | None,
    layer_input: bool,
) -> tuple[Tensor, Tensor | None]:
    """Contributions of units that write ``u * decoder[u]`` into the layer (SAE latents,
    directions): the layer gradient ``g`` of the target (plain, or averaged along the
    integration path with Captum's ``multiply_by_inputs=False``) taken along each unit's
    decoder row, times the unit's change from the baseline: ``(g . d_u)(u - u_0)`` at every
    position. For orthonormal directions (PCA) the units' sum is the layer's integrated
    gradients restricted to their span; what the decoder does not reconstruct (an SAE's
    error) is attributed to no unit."""
    import torch

    from neurolabel.adapters.hook_extractor import first_tensor, standard_layout

    if method == "conductance":
        raise NeurolabelError(
            f"Conductance flows through the layer's neurons; '{unit_map.name}' units are "
            "linear read-outs of many: use --method integrated-gradients or "
            "gradient-x-activation"
        )
    net = loaded.model
    input_hw = (int(inputs.shape[-2]), int(inputs.shape[-1]))

    def unit_layout(value: Any) -> Tensor:
        tensor = first_tensor(value)
        if tensor is None:
            raise NeurolabelError(f"Layer '{layer}' gave no tensor")
        return standard_layout(loaded, tensor.detach().float(), input_hw, 1, layer)

    with torch.inference_mode(False), torch.enable_grad():
        x = inputs.clone().requires_grad_()
        if method == "gradient-x-activation":
            grads = attr.LayerGradientXActivation(net, module, multiply_by_inputs=False)
            gradient = grads.attribute(x, target=target, attribute_to_layer_input=layer_input)
            start = None
        else:
            path = attr.LayerIntegratedGradients(net, module, multiply_by_inputs=False)
            gradient = path.attribute(
                x,
                baselines=baselines,
                target=target,
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                attribute_to_layer_input=layer_input,
            )
            if isinstance(baselines, torch.Tensor):
                start = baselines.to(inputs.device, inputs.dtype).expand_as(inputs)
            else:
                start = torch.full_like(inputs, float(baselines or 0.0))
        reader = attr.LayerActivation(net, module)
        here = unit_layout(reader.attribute(inputs, attribute_to_layer_input=layer_input))
        there = (
            None
            if start is None
            else unit_layout(reader.attribute(start, attribute_to_layer_input=layer_input))
        )
    g = unit_layout(gradient)[0]  # [C, ...]
    _, decoder = unit_writes(unit_map, layer, int(g.shape[0]))
    along = torch.einsum("uc,c...->u...", decoder.to(g), g)  # d target / d unit
    units = unit_map(layer, here)[0]
    if there is not None:
        units = units - unit_map(layer, there)[0]
    maps = along * units
    if maps.dim() == 1:
        return maps, None
    return maps.sum(dim=(1, 2)), maps


def unit_contributions(
    loaded: LoadedModel, attribution: Tensor, input_hw: tuple[int, int], layer: str = ""
) -> tuple[Tensor, Tensor | None]:
    """Per-unit totals and maps of one image's layer attribution.

    Args:
        loaded: The model (for token grids and output formats).
        attribution: ``[1, ...]`` Captum layer attribution, shaped like the layer's output.
        input_hw: The input's height and width.
        layer: Layer name for error messages.

    Returns:
        ``(contributions [C], maps [C, h, w] or None)``: a spatial unit's total is its map's
        sum; a token layer's, its sum over all tokens (prefix tokens included, though the
        map shows only the patch grid).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from neurolabel.plugin_core.data.preprocessing import Preprocessing
        >>> loaded = LoadedModel(nn.Identity(), Preprocessing(), "id")
        >>> totals, maps = unit_contributions(loaded, torch.ones(1, 2, 3, 3), (32, 32))
        >>> totals.tolist(), tuple(maps.shape)
        ([9.0, 9.0], (2, 3, 3))
    """
    from neurolabel.adapters.hook_extractor import standard_layout

    if attribution.dim() == 3:
        tokens = attribution
        if tokens.shape[0] != 1 and tokens.shape[1] == 1:
            tokens = tokens.transpose(0, 1)  # sequence-first [T, 1, C]
        totals = tokens[0].sum(0)
        try:
            maps: Tensor | None = standard_layout(loaded, tokens, input_hw, 1, layer)[0]
        except NeurolabelError:
            maps = None  # tokens that form no grid still have totals
        return totals, maps
    units = standard_layout(loaded, attribution, input_hw, 1, layer)
    if units.dim() == 2:
        return units[0], None
    return units[0].sum(dim=(1, 2)), units[0]


def resolve_target(
    target: int | str | tuple[int, ...] | None,
    logits: Tensor,
    class_names: list[str] | None = None,
) -> tuple[int | tuple[int, ...], str]:
    """Turn a class index, class name or Captum tuple target into Captum's ``target``.

    Args:
        target: ``None`` (top-1 prediction), an int, a digit string, a class name (case
            insensitive), or a tuple indexing a multi-dimensional output.
        logits: The model's output for the image, ``[1, ...]``.
        class_names: The model's class names, if known.

    Returns:
        ``(captum_target, display_name)``.

    Examples:
        >>> import torch
        >>> resolve_target("Dog", torch.zeros(1, 2), ["cat", "dog"])
        (1, 'dog')
        >>> resolve_target(None, torch.tensor([[0.1, 0.7]]))
        (1, 'class 1')
    """
    outputs = logits.shape[1:]
    if isinstance(target, tuple):
        fits = len(target) == len(outputs) and all(
            0 <= int(t) < s for t, s in zip(target, outputs, strict=True)
        )
        if not fits:
            raise NeurolabelError(
                f"Target {target} does not index the model's output of shape {tuple(outputs)}"
            )
        return tuple(int(t) for t in target), f"output {tuple(int(t) for t in target)}"
    if len(outputs) != 1:
        raise NeurolabelError(
            f"The model's output has shape {tuple(outputs)}: give the target as a tuple of "
            "indices, as Captum takes it"
        )
    count = int(outputs[0])
    if target is None:
        index = int(logits[0].argmax())
    elif isinstance(target, bool):
        raise NeurolabelError(f"Target {target!r}: give a class index or name")
    elif isinstance(target, int):
        index = target
    elif isinstance(target, str) and target.strip().lstrip("-").isdigit():
        index = int(target)
    elif isinstance(target, str):
        index = _class_index(target, class_names)
    else:
        raise NeurolabelError(
            f"Target {target!r}: give a class index, a class name or a tuple (Captum's target)"
        )
    if not 0 <= index < count:
        raise NeurolabelError(f"Target class {index} is out of range: the model has {count}")
    name = class_names[index] if class_names and index < len(class_names) else f"class {index}"
    return index, name


def _class_index(name: str, class_names: list[str] | None) -> int:
    if not class_names:
        raise NeurolabelError(
            f"Target '{name}' is a name, but the model has no class names: give a class index"
        )
    lowered = [c.lower() for c in class_names]
    wanted = name.strip().lower()
    if wanted in lowered:
        return lowered.index(wanted)
    if is_imagenet_1k(class_names):  # any WordNet name of a class ("Madagascar cat")
        for index, synonyms in enumerate(class_synonyms()):
            if wanted in (s.lower() for s in synonyms):
                return index
    close = difflib.get_close_matches(wanted, lowered, n=3, cutoff=0.6)
    hint = f" Closest: {', '.join(close)}." if close else ""
    raise NeurolabelError(f"The model has no class named '{name}'.{hint}")


def contribution_sentence(target_name: str, contributions: Tensor, labels: dict[int, str]) -> str:
    """Say through which labeled units a target came, in one sentence.

    Units sharing a label are counted together. Shares are fractions of the layer's total
    positive contribution; units the result does not label, and labels that pulled
    against the target, are mentioned when they matter.

    Args:
        target_name: The class's name.
        contributions: ``[C]`` per-unit contributions.
        labels: Unit -> label for the labeled (explained, live) units.

    Returns:
        The sentence.

    Examples:
        >>> import torch
        >>> contribution_sentence("cat", torch.tensor([3.0, 1.0, 1.0, -0.2]),
        ...                       {0: "fur", 1: "whiskers", 3: "sky"})
        "'cat' came mostly through units labeled 'fur' (60 %) and 'whiskers' (20 %); 20 % came through units the result does not label."
    """  # noqa: E501
    positive = float(contributions.clamp(min=0).sum())
    if positive <= 0:
        return (
            f"No unit of this layer pushed '{target_name}' up: every contribution is zero or "
            "negative."
        )
    gains: dict[str, float] = {}
    losses: dict[str, float] = {}
    unlabeled = 0.0
    for unit, value in enumerate(contributions.tolist()):
        share = value / positive
        label = labels.get(unit)
        if value > 0 and label is None:
            unlabeled += share
        elif value > 0 and label is not None:
            gains[label] = gains.get(label, 0.0) + share
        elif value < 0 and label is not None:
            losses[label] = losses.get(label, 0.0) + share
    ranked = sorted(gains.items(), key=lambda item: -item[1])
    shown = ranked[:SENTENCE_LABELS]
    if not shown:
        return (
            f"'{target_name}' came through units the result does not label "
            f"({_percent(unlabeled)}); label them to name what carried it."
        )
    mostly = "mostly" if sum(s for _, s in shown) >= 0.5 else "partly"
    parts = [f"'{label}' ({_percent(share)})" for label, share in shown]
    if len(ranked) > len(shown):
        listed = ", ".join(parts) + " …"
    elif len(parts) > 1:
        listed = ", ".join(parts[:-1]) + " and " + parts[-1]
    else:
        listed = parts[0]
    sentence = f"'{target_name}' came {mostly} through units labeled {listed}"
    if unlabeled >= 0.005:
        sentence += f"; {_percent(unlabeled)} came through units the result does not label"
    if losses:
        label, share = min(losses.items(), key=lambda item: item[1])
        if share <= -0.1:
            sentence += f"; units labeled '{label}' pulled against it ({_percent(share)})"
    return sentence + "."


def _percent(share: float) -> str:
    value = round(100 * share)
    if value == 0 and share != 0:
        return "<1 %" if share > 0 else "-<1 %"
    return f"{value} %"


def _load_model(
    result: LabelingResult | None,
    model: str | nn.Module | LoadedModel | None,
    preprocessing: Preprocessing | None,
    ctx: ResolveContext,
) -> LoadedModel:
    hint = "give the model (--model SPEC on the command line)"
    if result is not None:
        loaded = load_result_model(result, ctx, model, hint=hint)
    elif model is not None:
        loaded = resolve_model(model, ctx)
    else:
        raise NeurolabelError("Give the model (a spec, a module or a LoadedModel)")
    return as_loaded(loaded, preprocessing) if preprocessing is not None else loaded


def _layer_name(result: LabelingResult | None, net: nn.Module, layer: Any) -> str:
    from neurolabel.adapters.captum_common import resolve_module

    if layer is not None:
        name = resolve_module(net, layer)[0]
        if result is not None and name not in result.neurons:
            raise NeurolabelError(
                f"Layer '{name}' is not labeled in this result; its layers: "
                f"{', '.join(result.neurons)}"
            )
        return name
    if result is None:
        raise NeurolabelError("Give the layer to attribute to (no result to take it from)")
    if len(result.neurons) != 1:
        raise NeurolabelError(
            f"The result labels several layers ({', '.join(result.neurons)}): choose one (--layer)"
        )
    return next(iter(result.neurons))


def _result_reads_inputs(result: LabelingResult | None) -> bool:
    extractor = str((result.settings.get("extractor") if result else None) or "")
    if not extractor:
        return False
    try:
        spec = Spec.parse(extractor)
    except SpecError:
        return False
    return spec.name == "captum" and spec.option_bool("layer_input")


def _labels(result: LabelingResult | None, layer: str, units: int) -> dict[int, NeuronExplanation]:
    if result is None:
        return {}
    declared = result.layers.get(layer, {}).get("units")
    if declared is not None and int(declared) != units:
        raise NeurolabelError(
            f"Layer '{layer}' has {units} units in this model but {declared} in the result: "
            "is this the model the result labeled (and the same layer input/output)?"
        )
    return {n.unit: n for n in result.neurons.get(layer, []) if not n.dead and n.concepts}


def _as_input(image: Image.Image | str | Path | Tensor, preprocessing: Preprocessing) -> Tensor:
    from PIL import Image
    from torch import Tensor

    if isinstance(image, Tensor):
        tensor = image.detach()
        if tensor.dim() == 3:
            tensor = tensor.unsqueeze(0)
        if tensor.dim() != 4 or tensor.shape[0] != 1 or tensor.shape[1] != 3:
            raise NeurolabelError(
                f"Expected one preprocessed image [3, H, W] or [1, 3, H, W], got "
                f"{tuple(image.shape)}"
            )
        return tensor.float()
    if isinstance(image, (str, Path)):
        from neurolabel.plugin_core.data.images import ImageLoadError, open_image

        if not Path(image).is_file():
            raise NeurolabelError(f"No image at {image}")
        try:
            image = open_image(Path(image))
        except ImageLoadError as exc:
            raise NeurolabelError(f"{image}: {exc}") from None
    if not isinstance(image, Image.Image):
        raise NeurolabelError(
            f"Cannot use a {type(image).__name__} as the image: give a PIL image, a path or a "
            "preprocessed tensor"
        )
    return preprocessing(image).unsqueeze(0)


def _display_image(tensor: Tensor, preprocessing: Preprocessing) -> Any:
    """Undo the normalization of one input: ``[H, W, 3]`` floats in [0, 1]."""
    import torch

    mean = torch.tensor(preprocessing.mean, device=tensor.device).view(3, 1, 1)
    std = torch.tensor(preprocessing.std, device=tensor.device).view(3, 1, 1)
    return (tensor.float() * std + mean).clamp(0, 1).permute(1, 2, 0).cpu().numpy()


# --------------------------------------------------------------------------- CLI


def _attribute_command(cli: typer.Typer) -> None:
    @cli.command()
    def attribute(
        result_path: Annotated[
            Path, typer.Argument(metavar="RESULT", help="Result folder or result.json")
        ],
        image: Annotated[
            Path, typer.Argument(metavar="IMAGE", help="The image whose prediction to explain")
        ],
        target: Annotated[
            str | None,
            typer.Option(help="Class index or name (default: the top-1 prediction)"),
        ] = None,
        model: Annotated[
            str | None, typer.Option(help="Model spec (default: the result's model)")
        ] = None,
        layer: Annotated[
            str | None, typer.Option("--layer", "-l", help="Labeled layer to attribute to")
        ] = None,
        method: Annotated[
            str, typer.Option(help="conductance, gradient-x-activation or integrated-gradients")
        ] = "conductance",
        top: Annotated[int, typer.Option(help="Contributing units listed")] = 10,
        steps: Annotated[int, typer.Option(help="Integration steps")] = DEFAULT_STEPS,
        layer_input: Annotated[
            bool | None,
            typer.Option(
                "--layer-input/--layer-output",
                help="Attribute to the layer's input or output (default: as the result read it)",
            ),
        ] = None,
        heatmaps: Annotated[
            Path | None, typer.Option(help="Folder for per-unit heatmap PNGs")
        ] = None,
        device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")] = "auto",
        trust_pickle: Annotated[bool, typer.Option("--trust-pickle")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    ) -> None:
        """Explain a prediction through labeled neurons (Captum layer attribution)."""
        from rich.table import Table
        from rich.text import Text

        from neurolabel.plugin_core.plugins.resolve import build_context
        from neurolabel.plugin_core.runtime.terminal import SafeConsole

        ctx = build_context(device, trust_pickle=trust_pickle)
        explained = attribute_prediction(
            LabelingResult.load(result_path),
            model,
            image,
            target,
            layer=layer,
            method=method,
            top=top,
            n_steps=steps,
            attribute_to_layer_input=layer_input,
            context=ctx,
        )
        written = explained.save_heatmaps(heatmaps) if heatmaps is not None else []
        if as_json:
            data = explained.to_dict()
            data["heatmaps"] = [str(p) for p in written]
            print(json.dumps(data, indent=1))
            return
        console = SafeConsole()
        # Class, layer and concept names are untrusted text: Text cells print them as written.
        table = Table(
            title=Text(
                f"'{explained.target_name}' ({explained.output:.3g}) through "
                f"{explained.layer} — {explained.method}"
            )
        )
        for column in ("unit", "contribution", "share", "label", "top concepts"):
            table.add_column(column)
        for n in explained.neurons:
            table.add_row(
                str(n.unit),
                f"{n.contribution:.4g}",
                _percent(n.share),
                Text(n.label or "—"),
                Text(", ".join(f"{c} ({s:.2f})" for c, s in n.concepts)),
            )
        console.print(table)
        console.print(explained.sentence, highlight=False, markup=False)
        if explained.delta is not None:
            console.print(f"Convergence delta: {explained.delta:.3g}", style="dim")
        if written:
            console.print(f"Wrote {len(written)} heatmaps to {heatmaps}", markup=False)


@hookimpl
def register_commands(cli: typer.Typer) -> None:
    """Add ``neurolabel attribute``."""
    _attribute_command(cli)
