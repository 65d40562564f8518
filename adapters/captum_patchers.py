"""Attribution-guided exemplar patches with Captum: Grad-CAM, gradients, conductance.

The labeler's ``activation`` patches are cut from the neuron's low-resolution activation
map. The patchers registered here compute, for each exemplar image, a map at input
resolution with a Captum attribution of the neuron, from which the patch is cut:

- ``gradcam[:LAYER]`` — ``LayerGradCam`` with the neuron as target. At the neuron's own
  layer (the default) Grad-CAM reduces to the positive part of the neuron's activation
  map (the gradient of a channel's sum is one on that channel and zero elsewhere); give an
  earlier, finer ``LAYER`` for a sharper map, or for vector layers (logits), where it is
  the classic class activation map.
- ``gradient`` — ``NeuronGradient``: the saliency ``|d neuron / d pixel|``.
- ``integrated-gradients`` — ``NeuronIntegratedGradients`` from a zero baseline.
- ``conductance`` — ``NeuronConductance`` of the input through the neuron to the neuron's
  own activation. Through a neuron to itself, conductance is the neuron's integrated
  gradients (Dhamdhere et al., 2018); Captum computes it as a product of the neuron's
  input gradients and the output's gradient with respect to the neuron, so the map is
  the integrated-gradients map times the number of cells in the channel.

A unit is its whole channel, summed (Captum's slice selector), in the unit layout the
extractors use. Options: ``layer_input=true`` reads the neuron on the layer's input
(Captum's ``attribute_to_layer_input`` / ``attribute_to_neuron_input``, to pair with
``--extractor captum?layer_input=true``), ``steps=N`` (integration steps, default 20),
``smooth=F`` (box blur of side F times the input's shorter side before thresholding,
default 0.02 for pixel-level maps, 0 for Grad-CAM). The library function
:func:`neuron_attribution_maps` accepts any Captum neuron selector.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 2, 4, stride=4), nn.ReLU())
    >>> maps = neuron_attribution_maps(net, net[1], torch.rand(2, 3, 32, 32), 0, "gradient")
    >>> maps.shape
    torch.Size([2, 32, 32])
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from neurolabel.adapters.captum_common import (
    ChannelSelector,
    NeuronForward,
    NeuronSelector,
    captum_attr,
    resolve_module,
    unit_selector,
)
from neurolabel.adapters.hook_extractor import input_dtype
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import LoadedModel, Patcher
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.resolve import as_loaded
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    from torch import Tensor, nn

#: Attribution methods for patches, by the name the patcher is registered under.
METHODS = ("gradcam", "gradient", "integrated-gradients", "conductance")
DEFAULT_STEPS = 20
#: Box blur of pixel-level maps, as a fraction of the input's shorter side: thresholded
#: raw gradients are speckled, and the patch should be a region, not a few pixels.
DEFAULT_SMOOTH = 0.02


@hookimpl
def register_patchers(register: Register[Patcher]) -> None:
    """Register the Captum patchers ``gradcam``, ``gradient``, ``integrated-gradients``,
    ``conductance``."""
    register(
        "gradcam",
        gradcam_patcher,
        description="Captum LayerGradCam on the neuron: gradcam[:EARLIER_LAYER][?layer_input=true]",
    )
    register(
        "gradient",
        lambda spec, ctx: _neuron_patcher("gradient", spec),
        description="Captum NeuronGradient saliency of the neuron's channel",
    )
    register(
        "integrated-gradients",
        lambda spec, ctx: _neuron_patcher("integrated-gradients", spec),
        description="Captum NeuronIntegratedGradients of the neuron's channel (?steps=N)",
    )
    register(
        "conductance",
        lambda spec, ctx: _neuron_patcher("conductance", spec),
        description="Captum NeuronConductance of the input through the neuron (?steps=N)",
    )


def gradcam_patcher(spec: Spec, ctx: ResolveContext | None = None) -> CaptumPatcher:
    """Build the ``gradcam[:LAYER][?layer_input=true&smooth=F]`` patcher.

    Args:
        spec: The parsed spec; its argument is the layer Grad-CAM is computed at (default:
            the explained layer).
        ctx: Unused.

    Returns:
        A :class:`CaptumPatcher`.
    """
    spec.check_options({"layer_input", "smooth"})
    return CaptumPatcher(
        "gradcam",
        grad_cam_layer=spec.argument or None,
        layer_input=spec.option_bool("layer_input"),
        smooth=_smooth_option(spec, 0.0),
    )


def _neuron_patcher(method: str, spec: Spec) -> CaptumPatcher:
    integrated = method != "gradient"
    spec.check_options(
        {"layer_input", "smooth", "steps"} if integrated else {"layer_input", "smooth"}
    )
    if spec.argument:
        raise SpecError(f"'{spec.name}' takes no argument, got '{spec.argument}'")
    steps = spec.option_int("steps", DEFAULT_STEPS)
    if steps is None or steps < 1:
        raise SpecError(f"steps={steps} in '{spec}': give a positive number of steps")
    return CaptumPatcher(
        method,
        layer_input=spec.option_bool("layer_input"),
        n_steps=steps,
        smooth=_smooth_option(spec, DEFAULT_SMOOTH),
    )


def _smooth_option(spec: Spec, default: float) -> float:
    smooth = spec.option_float("smooth", default)
    if smooth is None or not 0.0 <= smooth < 1.0:
        raise SpecError(f"smooth={smooth} in '{spec}': give a fraction in [0, 1)")
    return smooth


class CaptumPatcher:
    """A :class:`~neurolabel.plugin_core.plugins.contracts.Patcher` computing Captum attributions.

    Args:
        method: ``gradcam``, ``gradient``, ``integrated-gradients`` or ``conductance``.
        grad_cam_layer: For ``gradcam``: the layer the map is computed at (default: the
            explained layer).
        layer_input: Take the neuron on the layer's input.
        n_steps: Integration steps (``integrated-gradients``, ``conductance``).
        smooth: Box-blur side as a fraction of the input's shorter side.
        internal_batch_size: Captum's ``internal_batch_size`` for the integrated methods.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from PIL import Image
        >>> from neurolabel import NeuronLabeler, Preprocessing
        >>> red = nn.Conv2d(3, 1, 1, bias=False)  # one unit: red minus blue
        >>> red.weight.data = torch.tensor([1.0, 0, -1]).view(1, 3, 1, 1)
        >>> net = nn.Sequential(red, nn.ReLU())
        >>> images = [Image.new("RGB", (64, 64), "gray") for _ in range(4)]
        >>> for image, x in zip(images, (0, 20, 40)):  # a red square in three of them
        ...     image.paste("red", (x, 16, x + 24, 40))
        >>> patcher = CaptumPatcher("gradcam", grad_cam_layer="0")  # Grad-CAM at the conv
        >>> labeler = NeuronLabeler(net, ["1"], patches=patcher, scorer="color",
        ...                         vocabulary="colors", top_k=3, device="cpu", progress=False,
        ...                         preprocessing=Preprocessing((32, 32), resize_size=None))
        >>> neuron = labeler.run(images).explanation("1", 0)
        >>> neuron.description, [e.box for e in neuron.exemplars]  # around the red squares
        ('red', [[0, 14, 26, 42], [18, 14, 46, 42], [38, 14, 64, 42]])
    """

    def __init__(
        self,
        method: str,
        *,
        grad_cam_layer: Any = None,
        layer_input: bool = False,
        n_steps: int = DEFAULT_STEPS,
        smooth: float = DEFAULT_SMOOTH,
        internal_batch_size: int | None = None,
    ) -> None:
        if method not in METHODS:
            raise NeurolabelError(f"Unknown attribution method {method!r}: use one of {METHODS}")
        self.name = method
        self.method = method
        self.grad_cam_layer = grad_cam_layer
        self.layer_input = layer_input
        self.n_steps = n_steps
        self.smooth = smooth
        self.internal_batch_size = internal_batch_size
        self.unit_map: Any = None

    def for_unit_map(self, unit_map: Any) -> CaptumPatcher:
        """This patcher, attributing ``unit_map``'s units (SAE latents, directions, heads)
        instead of channels: a unit is a differentiable function of the layer's output.

        Raises:
            NeurolabelError: For ``conductance``, whose flow through a neuron needs a
                neuron of the layer (use ``integrated-gradients``, equal to it for one).
        """
        import copy

        if self.method == "conductance":
            raise NeurolabelError(
                f"conductance flows through a neuron of the layer; '{unit_map.name}' units "
                "are functions of many: use patches=integrated-gradients (conductance of a "
                "channel to itself equals it) or gradient / gradcam"
            )
        mapped = copy.copy(self)
        mapped.unit_map = unit_map
        return mapped

    def locate(self, loaded: LoadedModel, layer: str, unit: int, images: Tensor) -> Tensor:
        """``[N, H, W]`` attribution maps of ``unit`` of ``layer`` on ``images``."""
        return neuron_attribution_maps(
            loaded,
            layer,
            images,
            int(unit),
            self.method,
            grad_cam_layer=self.grad_cam_layer,
            attribute_to_neuron_input=self.layer_input,
            n_steps=self.n_steps,
            internal_batch_size=self.internal_batch_size,
            smooth=self.smooth,
            unit_map=self.unit_map,
        )

    def __repr__(self) -> str:
        return f"CaptumPatcher({self.method!r})"


def neuron_attribution_maps(
    model: nn.Module | LoadedModel,
    layer: Any,
    inputs: Tensor,
    neuron_selector: NeuronSelector,
    method: str = "gradient",
    *,
    grad_cam_layer: Any = None,
    baselines: Tensor | float | None = None,
    n_steps: int = DEFAULT_STEPS,
    internal_batch_size: int | None = None,
    attribute_to_neuron_input: bool = False,
    smooth: float = 0.0,
    unit_map: Any = None,
) -> Tensor:
    """Where each input image drove a neuron: one non-negative map per image.

    Args:
        model: The model (``nn.Module`` or :class:`LoadedModel`).
        layer: The neuron's layer: dotted name, module, or Captum attribution object.
        inputs: ``[N, 3, H, W]`` preprocessed images.
        neuron_selector: As Captum accepts it: a tuple of indices and slices into the
            layer's output after the batch dimension (slices are summed), or a callable
            from the layer's output to ``[N]`` values. An ``int`` selects a unit as the
            labeler numbers them: a whole channel, summed, on spatial and token layers (a
            bare int indexes only 2-D outputs in Captum), the unit on vector layers.
        method: ``gradcam`` (``LayerGradCam``), ``gradient`` (``NeuronGradient``),
            ``integrated-gradients`` (``NeuronIntegratedGradients``) or ``conductance``
            (``NeuronConductance``).
        grad_cam_layer: For ``gradcam``, the layer the map is computed at (name, module or
            Captum object); default ``layer``.
        baselines: Integration baselines (Captum's convention); default zero.
        n_steps: Integration steps.
        internal_batch_size: Captum's ``internal_batch_size``.
        attribute_to_neuron_input: Take the neuron on the layer's input (Captum's
            ``attribute_to_neuron_input``; for ``gradcam`` at the neuron's own layer, its
            ``attribute_to_layer_input``).
        smooth: Box-blur side as a fraction of the shorter input side (0: none).
        unit_map: Attribute a unit of this
            :class:`~neurolabel.plugin_core.plugins.contracts.UnitMap` (an int selector
            indexes its units) instead of a channel; not with ``conductance``.

    Returns:
        ``[N, H, W]`` maps at input resolution, higher where the image drove the neuron
        more: Grad-CAM with ReLU, absolute gradients summed over color channels, or the
        positive part of the color-summed integrated gradients / conductance.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 2, 4, stride=4), nn.ReLU())
        >>> x = torch.rand(1, 3, 16, 16)
        >>> a = neuron_attribution_maps(net, "1", x, 1, "integrated-gradients")
        >>> b = neuron_attribution_maps(net, net[1], x, (1, slice(None), slice(None)),
        ...                             "integrated-gradients")
        >>> torch.allclose(a, b)
        True
    """
    import torch
    from torch import Tensor

    if method not in METHODS:
        raise NeurolabelError(f"Unknown attribution method {method!r}: use one of {METHODS}")
    if n_steps < 1:
        raise NeurolabelError(f"n_steps must be at least 1, got {n_steps}")
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        shape = tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__
        raise NeurolabelError(f"Expected a batch of images [N, 3, H, W], got {shape}")
    attr = captum_attr()
    loaded = as_loaded(model)
    net = loaded.model
    name, module = resolve_module(net, layer)
    height, width = int(inputs.shape[-2]), int(inputs.shape[-1])
    if unit_map is not None and method == "conductance":
        raise NeurolabelError(
            "conductance flows through a neuron of the layer, not a unit map's unit: use "
            "integrated-gradients"
        )
    selector = unit_selector(loaded, name, neuron_selector, (height, width), unit_map)
    forward = NeuronForward(net, module, selector, attribute_to_neuron_input, name)
    with torch.inference_mode(False), torch.enable_grad():
        # A fresh copy: the caller's batch may be an inference tensor. Requiring gradients
        # up front keeps Captum from warning that it had to.
        inputs = inputs.to(input_dtype(net)).clone().requires_grad_()
        if method == "gradcam":
            maps = _grad_cam(
                attr, net, forward, name, module, grad_cam_layer, inputs, attribute_to_neuron_input
            )
        elif method == "gradient":
            grads = attr.NeuronGradient(forward, module).attribute(
                inputs, selector, attribute_to_neuron_input=attribute_to_neuron_input
            )
            maps = grads.abs().sum(1)
        else:
            kwargs: dict[str, Any] = dict(
                baselines=baselines,
                # One quadrature for both, Captum's integrated-gradients default, so the two
                # integrated methods agree where theory says they should.
                method="gausslegendre",
                n_steps=n_steps,
                internal_batch_size=internal_batch_size,
                attribute_to_neuron_input=attribute_to_neuron_input,
            )
            if method == "integrated-gradients":
                algo = attr.NeuronIntegratedGradients(forward, module)
                result = algo.attribute(inputs, selector, **kwargs)
            else:
                algo = attr.NeuronConductance(forward, module)
                with warnings.catch_warnings():
                    if isinstance(selector, ChannelSelector):
                        # Captum warns that a callable selector might aggregate neurons,
                        # making conductance inexact; a channel sum toward that same sum is
                        # exact up to a constant (module docstring). A user's callable
                        # still gets Captum's warning.
                        warnings.filterwarnings("ignore", message="The neuron_selector provided")
                    result = algo.attribute(inputs, selector, target=0, **kwargs)
            maps = result.sum(1).clamp(min=0)
    maps = maps.detach().float()
    if smooth > 0:
        maps = _box_blur(maps, smooth)
    return maps


def _grad_cam(
    attr: Any,
    net: nn.Module,
    forward: NeuronForward,
    name: str,
    module: nn.Module,
    grad_cam_layer: Any,
    inputs: Tensor,
    layer_input: bool,
) -> Tensor:
    if grad_cam_layer is None:
        cam_name, cam_module, cam_input = name, module, layer_input
    else:
        cam_name, cam_module = resolve_module(net, grad_cam_layer)
        cam_input = False
    try:
        cam = attr.LayerGradCam(forward, cam_module).attribute(
            inputs, target=0, attribute_to_layer_input=cam_input, relu_attributions=True
        )
    except (AssertionError, KeyError) as exc:
        # Captum's hook never fired: the forward pass stops at the neuron's layer.
        raise NeurolabelError(
            f"Grad-CAM layer '{cam_name}' did not run before the neuron's layer '{name}' "
            f"({exc or 'no output captured'}); give a layer below it"
        ) from None
    if cam.dim() != 4:
        raise NeurolabelError(
            f"Grad-CAM needs a spatial [B, C, H, W] layer; '{cam_name}' gives "
            f"{tuple(cam.shape)} attributions. Give an earlier spatial layer "
            f"(gradcam:LAYER) or use the gradient or conductance patches"
        )
    size = (int(inputs.shape[-2]), int(inputs.shape[-1]))
    return attr.LayerAttribution.interpolate(cam, size, "bilinear").squeeze(1)


def _box_blur(maps: Tensor, fraction: float) -> Tensor:
    import torch.nn.functional as F

    side = int(round(fraction * min(maps.shape[-2:])))
    side += 1 - side % 2  # odd, so the blur is centered
    if side <= 1:
        return maps
    return F.avg_pool2d(
        maps.unsqueeze(1), side, stride=1, padding=side // 2, count_include_pad=False
    ).squeeze(1)
