"""The ``captum`` extractor: read layer activations with Captum's ``LayerActivation``.

Same layer names and the same unit layout as the ``hooks`` extractor (tokens reshaped to
their grid, channels-last maps permuted, the first tensor of tuple outputs), so results
of either are interchangeable. ``captum?layer_input=true`` reads each layer's *input*
instead (Captum's ``attribute_to_layer_input``), e.g. the pooled features entering ``fc``.

Examples:
    >>> import torch, torchvision
    >>> from neurolabel.plugin_core.plugins.contracts import LoadedModel
    >>> from neurolabel.plugin_core.data.preprocessing import Preprocessing
    >>> loaded = LoadedModel(torchvision.models.resnet18().eval(), Preprocessing(), "resnet18")
    >>> with CaptumExtractor(torch.device("cpu")).open(loaded, ["layer4", "fc"]) as read:
    ...     acts = read(torch.zeros(2, 3, 224, 224))
    >>> acts["layer4"].shape, acts["fc"].shape
    (torch.Size([2, 512, 7, 7]), torch.Size([2, 1000]))
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from neurolabel.adapters.captum_common import captum_attr
from neurolabel.adapters.hook_extractor import (
    OpenReader,
    attach_layers,
    first_tensor,
    list_layer_shapes,
    standard_layout,
)
from neurolabel.plugin_core.errors import NeurolabelError
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import (
    ActivationReader,
    Extractor,
    LayerInfo,
    LoadedModel,
)
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn


@hookimpl
def register_extractors(register: Register[Extractor]) -> None:
    """Register the ``captum`` extractor."""
    register(
        "captum",
        captum_extractor,
        description="Captum LayerActivation on modules by dotted name (?layer_input=true reads "
        "layer inputs)",
    )


def captum_extractor(spec: Spec, ctx: ResolveContext) -> CaptumExtractor:
    """Build the ``captum[?layer_input=true]`` extractor for ``ctx.device``.

    Args:
        spec: ``captum`` with the optional ``layer_input`` option.
        ctx: Resolve context; the extractor runs models on ``ctx.device``.

    Returns:
        A :class:`CaptumExtractor`.
    """
    spec.check_options({"layer_input"})
    return CaptumExtractor(ctx.device, layer_input=spec.option_bool("layer_input"))


class CaptumExtractor:
    """Reads activations of named modules with ``captum.attr.LayerActivation``.

    One ``LayerActivation`` over all requested layers runs each batch once. Unlike the
    ``hooks`` extractor, Captum runs the whole forward pass.

    Args:
        device: Where the model runs and the activations are returned.
        layer_input: Read each layer's input instead of its output.
    """

    name = "captum"

    def __init__(self, device: torch.device | str = "cpu", layer_input: bool = False) -> None:
        import torch

        self.device = torch.device(device)
        self.layer_input = layer_input

    @contextmanager
    def open(self, loaded: LoadedModel, layers: Sequence[str]) -> Iterator[ActivationReader]:
        """Prepare ``LayerActivation`` on ``layers``; yield a reader.

        Args:
            loaded: The model to probe.
            layers: Dotted module names; duplicates are read once.

        Returns:
            A context manager yielding ``reader(batch) -> {layer: activations}``.
        """
        modules = attach_layers(loaded, layers, self.device)
        activation = captum_attr().LayerActivation(loaded.model, list(modules.values()))
        reader = _Reader(self, loaded, list(modules), list(modules.values()), activation)
        try:
            yield reader
        finally:
            reader.closed = True

    def list_layers(self, loaded: LoadedModel) -> list[LayerInfo]:
        """Every module that produces (or, with ``layer_input``, receives) a tensor.

        Args:
            loaded: The model.

        Returns:
            One :class:`LayerInfo` per module, as the ``hooks`` extractor lists them.
        """
        return list_layer_shapes(loaded, self.device, read_input=self.layer_input)


class _Reader(OpenReader):
    """The callable a :meth:`CaptumExtractor.open` block yields."""

    def __init__(
        self,
        extractor: CaptumExtractor,
        loaded: LoadedModel,
        names: list[str],
        modules: list[nn.Module],
        activation: Any,
    ) -> None:
        super().__init__(loaded, extractor.device)
        self.extractor = extractor
        self.names = names
        self.modules = modules
        self.activation = activation

    def __call__(self, batch: Tensor) -> dict[str, Tensor]:
        import torch

        inputs = self.inputs(batch)
        try:
            values = self.activation.attribute(
                inputs, attribute_to_layer_input=self.extractor.layer_input
            )
        except (AssertionError, KeyError):
            # Captum's hooks captured nothing for some layer: it never ran.
            raise NeurolabelError(
                f"Layer(s) among {', '.join(self.names)} did not run in the model's forward "
                "pass (unused modules, or modules the forward bypasses); pick layers that "
                "`neurolabel layers` lists"
            ) from None
        size = int(batch.shape[0])
        hw = (int(batch.shape[-2]), int(batch.shape[-1]))
        out = {}
        for name, module, value in zip(self.names, self.modules, values, strict=True):
            tensor = first_tensor(value)
            if tensor is None:
                raise NeurolabelError(
                    f"Layer '{name}' ({type(module).__name__}) gave no tensor; pick another layer"
                )
            # A copy made outside inference mode, so callers may modify it freely.
            with torch.inference_mode(False):
                tensor = tensor.detach().to(torch.float32, copy=True)
            out[name] = standard_layout(self.loaded, tensor, hw, size, name)
        return out
