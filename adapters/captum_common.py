"""What the Captum adapters share: layers as names, modules or Captum objects; neurons
as Captum selectors; forward functions that stop at the layer they need.

Captum is a dependency of neurolabel, but it is imported only when a Captum adapter is
used, so ``neurolabel --help`` stays fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

from neurolabel.adapters.hook_extractor import (
    first_tensor,
    resolve_layer,
    standard_layout,
)
from neurolabel.plugin_core.data.layer_patterns import layer_names
from neurolabel.plugin_core.errors import MissingExtraError, NeurolabelError
from neurolabel.plugin_core.plugins.contracts import LoadedModel

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

#: What Captum accepts as a neuron selector: an index, a tuple of indices and slices
#: (slices are summed), or a callable from the layer's output to one value per example.
NeuronSelector = int | tuple[Any, ...] | Callable[[Any], "Tensor"]


def captum_attr() -> ModuleType:
    """Import ``captum.attr``, or fail saying how to install it.

    Returns:
        The ``captum.attr`` module.
    """
    try:
        return importlib.import_module("captum.attr")
    except ImportError as exc:  # captum is a dependency, so only a broken install lands here
        raise MissingExtraError(
            f"Captum attribution needs the package 'captum' ({exc}). Install it with: "
            "pip install 'captum>=0.9'"
        ) from exc


def resolve_module(model: nn.Module, layer: Any) -> tuple[str, nn.Module]:
    """Find a layer given by dotted name, as a module, or as a Captum attribution object.

    Args:
        model: The model.
        layer: ``"layer4"``, ``model.layer4``, or e.g. ``LayerGradCam(model, model.layer4)``.

    Returns:
        ``(dotted name, module)``.

    Examples:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
        >>> resolve_module(net, net[1])[0], resolve_module(net, "0")[1] is net[0]
        ('1', True)
    """
    names = layer_names(model, layer)
    if len(names) != 1:
        raise NeurolabelError(
            f"Expected one layer, got {len(names)} ({', '.join(names)}): pick one of them"
        )
    return names[0], resolve_layer(model, names[0])


class _StopForward(BaseException):
    """Raised from the hook of the last needed layer to skip the rest of the forward pass.

    A BaseException so model code catching ``Exception`` cannot swallow it.
    """


def select_neuron(layer_value: Any, selector: NeuronSelector) -> Tensor:
    """Apply a neuron selector to a layer's output the way Captum does.

    Args:
        layer_value: The layer's output (or input): a tensor or a tuple of tensors.
        selector: An int or a tuple indexes the (single) tensor after its batch dimension,
            slices being summed; a callable receives the tensor (or the tuple when the
            layer gives several) and returns one value per example.

    Returns:
        ``[B]`` values.

    Examples:
        >>> import torch
        >>> x = torch.arange(8.0).reshape(1, 2, 2, 2)
        >>> select_neuron(x, (1, slice(None), slice(None))), select_neuron(x, (0, 1, 1))
        (tensor([22.]), tensor([3.]))
    """
    values = tuple(layer_value) if isinstance(layer_value, (tuple, list)) else (layer_value,)
    if callable(selector):
        return selector(values if len(values) > 1 else values[0])
    if len(values) != 1:
        raise NeurolabelError(
            "The layer gives several tensors; select the neuron with a callable instead"
        )
    index = (selector,) if isinstance(selector, int) else tuple(selector)
    key = (slice(None), *index)
    picked = values[0][key]
    if any(isinstance(i, slice) for i in index):
        return picked.reshape(picked.shape[0], -1).sum(1)
    return picked


class ChannelSelector:
    """A Captum neuron selector for one unit as the labeler sees it: a whole channel.

    The layer's output is brought to the labeler's unit layout (tokens to their grid,
    channels-last maps permuted) and the unit's map is summed, the way Captum sums the
    slices of a tuple selector: ``(unit, slice(None), slice(None))`` on a plain
    ``[B, C, H, W]`` layer. On a vector layer it is the unit itself.

    Args:
        loaded: The model (for the token grid and output format).
        unit: The channel (or the unit of ``unit_map``).
        input_hw: Height and width of the model input.
        layer: Layer name for error messages.
        unit_map: A :class:`~neurolabel.plugin_core.plugins.contracts.UnitMap` applied to
            the layer in unit layout first (SAE latents, directions, heads); None: channels.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from neurolabel.plugin_core.data.preprocessing import Preprocessing
        >>> loaded = LoadedModel(nn.Identity(), Preprocessing(), "id")
        >>> ChannelSelector(loaded, 1, (8, 8))(torch.ones(2, 3, 4, 4))
        tensor([16., 16.])
    """

    def __init__(
        self,
        loaded: LoadedModel,
        unit: int,
        input_hw: tuple[int, int],
        layer: str = "",
        unit_map: Any = None,
    ) -> None:
        self.loaded = loaded
        self.unit = int(unit)
        self.input_hw = input_hw
        self.layer = layer
        self.unit_map = unit_map

    def __call__(self, layer_value: Any) -> Tensor:
        tensor = first_tensor(layer_value)
        if tensor is None:
            raise NeurolabelError(f"Layer '{self.layer}' gave no tensor to select unit from")
        units = standard_layout(self.loaded, tensor, self.input_hw, None, self.layer)
        if self.unit_map is not None:  # a unit map's units are differentiable in the layer
            units = self.unit_map(self.layer, units)
        if not 0 <= self.unit < units.shape[1]:
            raise NeurolabelError(
                f"Layer '{self.layer}' has units 0..{units.shape[1] - 1}; {self.unit} is out "
                "of range"
            )
        channel = units[:, self.unit]
        return channel.reshape(channel.shape[0], -1).sum(1)

    def __repr__(self) -> str:
        return f"ChannelSelector(unit={self.unit}, layer={self.layer!r})"


def unit_selector(
    loaded: LoadedModel,
    layer: str,
    selector: NeuronSelector,
    input_hw: tuple[int, int],
    unit_map: Any = None,
) -> NeuronSelector:
    """An int becomes a :class:`ChannelSelector` (of ``unit_map``'s units when given);
    tuples and callables pass as Captum has them."""
    if (
        isinstance(selector, bool)
        or not isinstance(selector, (int, tuple))
        and not callable(selector)
    ):
        raise NeurolabelError(
            f"neuron_selector {selector!r}: give an int (a unit), a tuple of indices/slices "
            "or a callable, as Captum accepts"
        )
    if isinstance(selector, int):
        return ChannelSelector(loaded, selector, input_hw, layer, unit_map)
    if unit_map is not None:
        raise NeurolabelError("With a unit map, select the unit by its index (an int)")
    return selector


class NeuronForward:
    """A forward function for Captum whose output is one neuron: ``[B, 1]``.

    It runs the model only up to ``module`` (a hook stops the forward pass there), so a
    neuron's attribution costs no more than the part of the network below it. Captum's own
    hooks on the same module are registered before each call and so run first, which keeps
    the captured tensor on Captum's gradient path.

    Args:
        model: The model.
        module: The layer holding the neuron.
        selector: The neuron (see :func:`select_neuron`).
        use_input: Read the layer's input instead of its output (``attribute_to_layer_input``).
        layer: Layer name for error messages.
    """

    def __init__(
        self,
        model: nn.Module,
        module: nn.Module,
        selector: NeuronSelector,
        use_input: bool = False,
        layer: str = "",
    ) -> None:
        self.model = model
        self.module = module
        self.selector = selector
        self.use_input = use_input
        self.layer = layer

    def __call__(self, inputs: Tensor) -> Tensor:
        captured: list[Any] = []

        def grab(module: nn.Module, args: Any, output: Any = None) -> None:
            captured.append(args if self.use_input else output)
            raise _StopForward

        handle = (
            self.module.register_forward_pre_hook(grab)
            if self.use_input
            else self.module.register_forward_hook(grab)
        )
        try:
            self.model(inputs)
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not captured:
            raise NeurolabelError(
                f"Layer '{self.layer}' did not run in the model's forward pass; pick a layer "
                "that `neurolabel layers` lists"
            )
        value = select_neuron(captured[0], self.selector)
        if value.dim() != 1 or value.shape[0] != inputs.shape[0]:
            raise NeurolabelError(
                f"The neuron selector gave {tuple(value.shape)} on layer '{self.layer}'; it must "
                f"select one value per example ([{inputs.shape[0]}]): give an int unit, a full "
                "index tuple, or a callable that reduces to one value per example"
            )
        return value.unsqueeze(1)


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU when it has none)."""
    import torch

    return next((p.device for p in model.parameters()), torch.device("cpu"))
