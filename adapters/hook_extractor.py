"""The ``hooks`` extractor: read layer activations with PyTorch forward hooks.

Layers are named by their dotted module path (``layer4``, ``blocks.3``,
``encoder.layers.encoder_layer_5``), the names of ``model.named_modules()``. Outputs
come back detached, in float32, on the extractor's device:

- ``[B, C, H, W]`` (convolutions) and ``[B, C]`` (linear layers, logits) as they are;
- transformer tokens ``[B, T, C]`` without their prefix tokens (CLS, registers),
  reshaped to the patch grid ``[B, C, h, w]``;
- tuples, lists and dicts: their first tensor.

Examples:
    >>> import torch, torchvision
    >>> from neurolabel.plugin_core.plugins.contracts import LoadedModel
    >>> from neurolabel.plugin_core.data.preprocessing import Preprocessing
    >>> loaded = LoadedModel(torchvision.models.resnet18().eval(), Preprocessing(), "resnet18")
    >>> extractor = HookExtractor(torch.device("cpu"))
    >>> with extractor.open(loaded, ["layer3", "fc"]) as read:
    ...     acts = read(torch.zeros(2, 3, 224, 224))
    >>> acts["layer3"].shape, acts["fc"].shape
    (torch.Size([2, 256, 14, 14]), torch.Size([2, 1000]))
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from neurolabel.plugin_core.errors import LayerNotFoundError, NeurolabelError
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
    """Register the ``hooks`` extractor."""
    register(
        "hooks",
        hooks_extractor,
        description="PyTorch forward hooks on modules by dotted name (any nn.Module, ViT tokens "
        "reshaped to their grid)",
    )


def hooks_extractor(spec: Spec, ctx: ResolveContext) -> HookExtractor:
    """Build the ``hooks`` extractor for ``ctx.device``.

    Args:
        spec: ``hooks`` (no argument, no options).
        ctx: Resolve context; the extractor runs models on ``ctx.device``.

    Returns:
        A :class:`HookExtractor`.
    """
    spec.check_options(set())
    return HookExtractor(ctx.device)


class _StopForward(BaseException):
    """Raised from the last needed hook to skip the rest of the forward pass.

    A BaseException, like ``GeneratorExit``, so model code that catches ``Exception``
    cannot swallow it.
    """


def first_tensor(output: Any) -> Tensor | None:
    """Return ``output`` if it is a tensor, else the first tensor inside it (depth first).

    Args:
        output: A module's return value (tensor, tuple, list, dict, or anything else).

    Returns:
        The tensor, or None when there is none.

    Examples:
        >>> import torch
        >>> first_tensor((None, torch.ones(2)))
        tensor([1., 1.])
    """
    from torch import Tensor

    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        values: Any = output.values()
    elif isinstance(output, (tuple, list)):
        values = output
    else:
        return None
    for value in values:
        found = first_tensor(value)
        if found is not None:
            return found
    return None


class HookExtractor:
    """Reads activations of named modules through forward hooks.

    The first batch read through an :meth:`open` reader runs the whole model and counts
    how often each requested module runs; later batches stop the forward pass as soon as
    every requested module has produced its last output (much faster for early layers).
    A module called several times in one forward pass (a shared ``ReLU``) reports its
    last call.

    Args:
        device: Where the model runs and the activations are returned.

    Examples:
        >>> import torch, timm
        >>> from neurolabel.plugin_core.plugins.contracts import LoadedModel
        >>> from neurolabel.plugin_core.data.preprocessing import Preprocessing
        >>> vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
        >>> loaded = LoadedModel(vit, Preprocessing(), "vit")
        >>> with HookExtractor(torch.device("cpu")).open(loaded, ["blocks.5"]) as read:
        ...     read(torch.zeros(1, 3, 224, 224))["blocks.5"].shape  # CLS dropped, 14x14 grid
        torch.Size([1, 192, 14, 14])
    """

    name = "hooks"

    def __init__(self, device: torch.device | str = "cpu") -> None:
        import torch

        self.device = torch.device(device)

    # ------------------------------------------------------------------ public API

    @contextmanager
    def open(self, loaded: LoadedModel, layers: Sequence[str]) -> Iterator[ActivationReader]:
        """Attach hooks to ``layers``; yield a reader; remove the hooks on exit.

        Args:
            loaded: The model to probe.
            layers: Dotted module names; duplicates are read once.

        Returns:
            A context manager yielding ``reader(batch) -> {layer: activations}``.

        Examples:
            >>> import torch
            >>> from torch import nn
            >>> from neurolabel import LoadedModel, Preprocessing
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3600, 5))
            >>> loaded = LoadedModel(net, Preprocessing((32, 32), resize_size=None), "tiny")
            >>> with HookExtractor().open(loaded, ["1", "3"]) as read:
            ...     for batch in torch.zeros(3, 2, 3, 32, 32):  # three batches of two images
            ...         acts = read(batch)
            >>> acts["1"].shape, acts["3"].shape
            (torch.Size([2, 4, 30, 30]), torch.Size([2, 5]))
        """
        modules = attach_layers(loaded, layers, self.device)
        reader = _Reader(self, loaded, modules)
        handles = [
            module.register_forward_hook(reader.make_hook(name)) for name, module in modules.items()
        ]
        try:
            yield reader
        finally:  # also on exceptions and KeyboardInterrupt in the caller's loop
            for handle in handles:
                handle.remove()
            reader.closed = True

    def list_layers(self, loaded: LoadedModel) -> list[LayerInfo]:
        """List every module that produces a tensor, with its output shape for one image.

        Runs two zero images of the model's preprocessing crop size through the model.

        Args:
            loaded: The model.

        Returns:
            One :class:`LayerInfo` per module in definition order: shape without the batch
            dimension (tokens layers as ``[T, C]``) and kind ``spatial``, ``tokens``,
            ``vector`` or ``other`` (also for outputs whose first dimension is not the
            batch). Containers that never run (``ModuleList``) are left out.

        Examples:
            >>> from torch import nn
            >>> from neurolabel import LoadedModel, Preprocessing
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3600, 5))
            >>> loaded = LoadedModel(net, Preprocessing((32, 32), resize_size=None), "tiny")
            >>> for info in HookExtractor().list_layers(loaded):
            ...     print(info.name, info.type, info.shape, info.kind)
            0 Conv2d (4, 30, 30) spatial
            1 ReLU (4, 30, 30) spatial
            2 Flatten (3600,) vector
            3 Linear (5,) vector
        """
        return list_layer_shapes(loaded, self.device)


def attach_layers(
    loaded: LoadedModel, layers: Sequence[str], device: torch.device
) -> dict[str, nn.Module]:
    """The modules an extractor reads, by dotted name (duplicates once), the model on ``device``.

    Both extractors open a block this way: at least one layer, every name a module of the
    model (:func:`resolve_layer` lists the valid ones otherwise), a model that runs Python
    hooks (not TorchScript).

    Args:
        loaded: The model to probe.
        layers: Dotted module names.
        device: Where the model will run.

    Returns:
        ``{name: module}`` in the order given.
    """
    names = list(dict.fromkeys(layers))
    if not names:
        raise NeurolabelError("No layers given: name at least one (see `neurolabel layers`)")
    model = loaded.model
    _require_hookable(model)  # before resolving: ScriptModules have no get_submodule
    modules = {name: resolve_layer(model, name) for name in names}
    model.to(device)
    return modules


def input_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's parameters (float32 when it has none): a
    half-precision model needs half inputs."""
    import torch

    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


class OpenReader:
    """What both extractors' readers check of each batch: their block is still open, and the
    batch is images ``[B, 3, H, W]``, moved to the model's device and dtype."""

    def __init__(self, loaded: LoadedModel, device: torch.device) -> None:
        self.loaded = loaded
        self.device = device
        self.closed = False

    def inputs(self, batch: Tensor) -> Tensor:
        """``batch`` as the model's input, after the checks."""
        if self.closed:
            raise NeurolabelError("This reader's extractor block has ended; open a new one")
        if batch.dim() != 4:
            raise NeurolabelError(
                f"Expected a batch of images [B, 3, H, W], got {tuple(batch.shape)}"
            )
        return batch.to(device=self.device, dtype=input_dtype(self.loaded.model))


class _Reader(OpenReader):
    """The callable an :meth:`HookExtractor.open` block yields.

    ``reader(batch)`` returns every layer's output. ``reader(batch, consume=fn)`` instead
    calls ``fn(layer, activations)`` inside the forward pass, as each layer runs, for the
    layers that run once per pass (known from the first batch, which is returned whole):
    the output is used before the model's next operation can overwrite it, so it needs no
    copy, and no batch ever holds every layer's output at once (a whole network's are
    gigabytes). ``fn`` must not keep views of what it is given. The other layers come back
    in the returned dict.
    """

    supports_consume = True

    def __init__(
        self, extractor: HookExtractor, loaded: LoadedModel, modules: dict[str, nn.Module]
    ) -> None:
        super().__init__(loaded, extractor.device)
        self.extractor = extractor
        self.modules = modules
        self.captured: dict[str, Tensor] = {}
        self.calls: dict[str, int] = {}
        # Calls per module in one forward pass; None until the first full pass counted them.
        self.expected: dict[str, int] | None = None
        self.input_hw: tuple[int, int] = (0, 0)
        self.consume: Callable[[str, Tensor], None] | None = None
        self.batch_size = 0
        self.consumed: set[str] = set()

    def make_hook(self, name: str) -> Callable[..., None]:
        import torch

        def hook(module: nn.Module, args: Any, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is None:
                raise NeurolabelError(
                    f"Layer '{name}' ({type(module).__name__}) returned "
                    f"{type(output).__name__} with no tensor in it; pick another layer"
                )
            consume, expected = self.consume, self.expected
            if consume is not None and expected is not None and expected.get(name) == 1:
                # Outside inference mode and autocast, like the copies below: the consumer's
                # state must stay an ordinary float32 tensor.
                with torch.inference_mode(False), torch.autocast(tensor.device.type, enabled=False):
                    acts = tensor.detach().to(torch.float32)
                    consume(name, self._convert(name, acts, self.batch_size))
                self.consumed.add(name)
            else:
                # Copy now: a later in-place op (ReLU(inplace=True)) would overwrite the
                # output. Made outside inference mode so callers may modify it freely.
                with torch.inference_mode(False):
                    self.captured[name] = tensor.detach().to(torch.float32, copy=True)
            self.calls[name] = self.calls.get(name, 0) + 1
            expected = self.expected
            if expected is not None and all(
                self.calls.get(n, 0) >= count for n, count in expected.items()
            ):
                raise _StopForward

        return hook

    def __call__(
        self, batch: Tensor, consume: Callable[[str, Tensor], None] | None = None
    ) -> dict[str, Tensor]:
        import torch

        inputs = self.inputs(batch)
        model = self.loaded.model
        self.input_hw = (int(batch.shape[-2]), int(batch.shape[-1]))
        self.batch_size = int(batch.shape[0])
        self.captured, self.calls, self.consumed = {}, {}, set()
        self.consume = consume
        try:
            with torch.inference_mode():
                model(inputs)
        except _StopForward:
            pass
        finally:
            self.consume = None
        if self.expected is None:
            missing = [n for n in self.modules if n not in self.calls]
            if missing:
                raise NeurolabelError(
                    f"Layer(s) {', '.join(missing)} did not run in the model's forward pass "
                    "(unused modules, or modules the forward bypasses); pick layers that "
                    "`neurolabel layers` lists"
                )
            self.expected = dict(self.calls)
        size = int(batch.shape[0])
        return {
            name: self._convert(name, self.captured[name], size)
            for name in self.modules
            if name not in self.consumed
        }

    def _convert(self, name: str, tensor: Tensor, batch_size: int) -> Tensor:
        return standard_layout(self.loaded, tensor, self.input_hw, batch_size, name)


def standard_layout(
    loaded: LoadedModel,
    tensor: Tensor,
    input_hw: tuple[int, int],
    batch_size: int | None = None,
    name: str = "",
) -> Tensor:
    """Bring one layer output to ``[B, C, H, W]`` or ``[B, C]``, the layout units index.

    Channels-last maps are permuted, transformer tokens lose their prefix tokens and are
    reshaped to the patch grid. Differentiable, so attribution code indexes units exactly
    as the extractors do.

    Args:
        loaded: The model (for its prefix-token count, patch size and output format).
        tensor: The layer's output (or input), batch first or sequence first.
        input_hw: Height and width of the model input that produced it.
        batch_size: The batch size, to recognize sequence-first ``[T, B, C]`` tokens and to
            check the first dimension; None takes the first dimension as the batch.
        name: Layer name for error messages.

    Returns:
        The tensor in unit layout (a view or a reshaped copy, in its own dtype).

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> from neurolabel.plugin_core.data.preprocessing import Preprocessing
        >>> loaded = LoadedModel(nn.Identity(), Preprocessing(), "id")
        >>> standard_layout(loaded, torch.zeros(2, 1 + 4, 8), (32, 32)).shape
        torch.Size([2, 8, 2, 2])
    """
    model = loaded.model
    if tensor.dim() == 4 and is_channels_last_output(model, tuple(tensor.shape), input_hw):
        out = tensor.permute(0, 3, 1, 2).contiguous()
    elif tensor.dim() in (2, 4):
        out = tensor
    elif tensor.dim() == 3:
        if (
            batch_size is not None
            and tensor.shape[0] != batch_size
            and tensor.shape[1] == batch_size
        ):
            # Sequence-first transformers (nn.MultiheadAttention default) give [T, B, C].
            tensor = tensor.transpose(0, 1)
        prefix = loaded.prefix_tokens
        if prefix is None:
            prefix = model_prefix_tokens(model)
        patch = model_patch_size(model)
        grid = None if patch is None else (input_hw[0] // patch[0], input_hw[1] // patch[1])
        out = tokens_to_grid(tensor, prefix, grid, name)
    else:
        raise NeurolabelError(
            f"Layer '{name}' outputs a {tensor.dim()}-D tensor {tuple(tensor.shape)}; "
            "neurolabel reads [B,C,H,W], [B,T,C] tokens or [B,C]: pick another layer"
        )
    if batch_size is not None and out.shape[0] != batch_size:
        raise NeurolabelError(
            f"Layer '{name}' outputs {tuple(tensor.shape)}, whose first dimension is not the "
            f"batch size {batch_size} (e.g. windowed attention that folds windows into the "
            "batch); pick the enclosing block or stage"
        )
    return out


def list_layer_shapes(
    loaded: LoadedModel, device: torch.device | str = "cpu", read_input: bool = False
) -> list[LayerInfo]:
    """Every module that sees a tensor, with its output (or input) shape for one image.

    Runs two zero images of the model's preprocessing crop size through the model.

    Args:
        loaded: The model.
        device: Where to run it.
        read_input: Report each module's first input tensor instead of its output (Captum's
            ``attribute_to_layer_input``).

    Returns:
        One :class:`LayerInfo` per module in definition order: shape without the batch
        dimension (tokens layers as ``[T, C]``) and kind ``spatial``, ``tokens``,
        ``vector`` or ``other`` (also for tensors whose first dimension is not the
        batch). Containers that never run (``ModuleList``) are left out.
    """
    import torch

    model = loaded.model
    _require_hookable(model)
    device = torch.device(device)
    model.to(device)
    shapes: dict[str, tuple[int, ...]] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, output: Any = None) -> None:
            tensor = first_tensor(args if read_input else output)
            if tensor is not None:
                shapes[name] = tuple(tensor.shape)

        return hook

    named = [(n, m) for n, m in model.named_modules() if n]
    handles = [
        m.register_forward_pre_hook(make_hook(n))
        if read_input
        else m.register_forward_hook(make_hook(n))
        for n, m in named
    ]
    height, width = loaded.preprocessing.crop_size
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    try:
        with torch.inference_mode():
            # Two images, so outputs that fold something into the batch stand out.
            model(torch.zeros(2, 3, height, width, device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
    infos = []
    crop = loaded.preprocessing.crop_size
    for name, module in named:
        if name not in shapes:
            continue
        full = shapes[name]
        if len(full) == 3 and full[0] != 2 and full[1] == 2:
            full = (full[1], full[0], full[2])  # sequence-first tokens [T, B, C]
        shape = full[1:]
        kind = _kind(shape) if full and full[0] == 2 else "other"
        if is_channels_last_output(model, full, crop):
            shape = (shape[2], shape[0], shape[1])
        infos.append(LayerInfo(name, type(module).__name__, shape, kind))
    return infos


#: Layer names an unknown-layer message lists before pointing to `neurolabel layers`.
LISTED_LAYERS = 40


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the submodule called ``name`` or fail listing the valid layer names.

    Args:
        model: The model.
        name: Dotted module path, as in ``model.named_modules()``.

    Returns:
        The submodule.

    Examples:
        >>> import torchvision
        >>> type(resolve_layer(torchvision.models.resnet18(), "layer4.1.conv2")).__name__
        'Conv2d'
    """
    if name:
        try:
            return model.get_submodule(name)
        except AttributeError:
            pass
    valid = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    hint = f" Closest: {', '.join(close)}." if close else ""
    # A deep model has hundreds of layers: a sample, and where to see them all.
    listed = ", ".join(valid[:LISTED_LAYERS])
    if len(valid) > LISTED_LAYERS:
        listed += f" ... ({len(valid)} in all; list them with `neurolabel layers MODEL`)"
    raise LayerNotFoundError(
        f"The model has no layer '{name}'.{hint} Valid layers ({len(valid)}): {listed}"
    )


def model_prefix_tokens(model: nn.Module) -> int | None:
    """How many leading tokens of a transformer are not patches, if the model says.

    Reads timm's ``num_prefix_tokens`` (CLS, distillation and register tokens) and
    torchvision's ``VisionTransformer.class_token``.

    Args:
        model: The model.

    Returns:
        The count, or None when the model does not say.
    """
    from torch import Tensor

    prefix = getattr(model, "num_prefix_tokens", None)
    if isinstance(prefix, int):
        return prefix
    if isinstance(getattr(model, "class_token", None), Tensor):
        return 1
    return None


def model_patch_size(model: nn.Module) -> tuple[int, int] | None:
    """The patch size of a vision transformer (timm ``patch_embed.patch_size`` or
    torchvision ``patch_size``), or None.

    Args:
        model: The model.

    Returns:
        ``(patch_h, patch_w)`` or None.
    """
    embed = getattr(model, "patch_embed", None)
    size = getattr(embed, "patch_size", None) if embed is not None else None
    if size is None:
        size = getattr(model, "patch_size", None)
    if isinstance(size, int):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def tokens_to_grid(
    tokens: Tensor,
    prefix_tokens: int | None = None,
    grid: tuple[int, int] | None = None,
    layer: str = "",
) -> Tensor:
    """Drop prefix tokens from ``[B, T, C]`` and reshape the patches to ``[B, C, h, w]``.

    A layer before the prefix tokens are prepended (a ViT's ``patch_embed``) has exactly
    ``h*w`` tokens; it is read with no prefix even when the model has one.

    Args:
        tokens: Token activations, batch first.
        prefix_tokens: Leading non-patch tokens (CLS, registers); None infers ``T - h*w``
            from ``grid``, or ``T - floor(sqrt(T))**2`` (a square grid) without one.
        grid: The ``(h, w)`` patch grid (input size // patch size) when known; needed for
            non-square grids.
        layer: Layer name for error messages.

    Returns:
        ``[B, C, h, w]`` patch activations.

    Examples:
        >>> import torch
        >>> tokens_to_grid(torch.zeros(2, 1 + 14 * 14, 192)).shape
        torch.Size([2, 192, 14, 14])
        >>> tokens_to_grid(torch.zeros(2, 5 + 4 * 6, 8), grid=(4, 6)).shape
        torch.Size([2, 8, 4, 6])
    """
    batch, num_tokens, channels = tokens.shape
    if prefix_tokens is None:
        if grid is not None and 0 < grid[0] * grid[1] <= num_tokens:
            prefix_tokens = num_tokens - grid[0] * grid[1]
        else:
            prefix_tokens = num_tokens - math.isqrt(num_tokens) ** 2
    # Exact matches with the input's patch grid first, then square grids; in each case
    # also the count without prefix (tokens before the prefix is prepended).
    shape: tuple[int, int] | None = None
    for grid_ok in (_exact_grid(grid), _square_grid):
        if (found := grid_ok(num_tokens - prefix_tokens)) is not None:
            shape = found
        elif prefix_tokens and (found := grid_ok(num_tokens)) is not None:
            shape, prefix_tokens = found, 0
        if shape is not None:
            break
    if shape is None:
        where = f"Layer '{layer}'" if layer else "The layer"
        raise NeurolabelError(
            f"{where} outputs a 3-D tensor {tuple(tokens.shape)} that is not a grid of patch "
            f"tokens ({num_tokens} tokens - {prefix_tokens} prefix tokens is neither a square "
            "nor the input's patch grid). Set LoadedModel.prefix_tokens if the prefix count "
            "is wrong, or pick a layer with [B,C,H,W] or [B,C] output"
        )
    patch_tokens = tokens[:, prefix_tokens:, :]
    return patch_tokens.transpose(1, 2).reshape(batch, channels, shape[0], shape[1]).contiguous()


def _exact_grid(grid: tuple[int, int] | None) -> Callable[[int], tuple[int, int] | None]:
    def match(patches: int) -> tuple[int, int] | None:
        return grid if grid is not None and patches > 0 and grid[0] * grid[1] == patches else None

    return match


def _square_grid(patches: int) -> tuple[int, int] | None:
    side = math.isqrt(max(patches, 0))
    return (side, side) if patches > 0 and side * side == patches else None


def is_channels_last_output(
    model: nn.Module, shape: tuple[int, ...], input_hw: tuple[int, int]
) -> bool:
    """Whether a 4-D output of ``model`` is laid out ``[B, H, W, C]`` rather than ``[B, C, H, W]``.

    Only models that declare timm's ``output_fmt = "NHWC"`` (Swin and relatives) are
    considered; in them, stages and norms are channels-last while convolutions are not.
    An output is taken as channels-last when its dims 1-2 have the input's aspect ratio
    and its dims 2-3 do not.

    Args:
        model: The model.
        shape: The output's shape, batch first.
        input_hw: Height and width of the model input.

    Returns:
        True for a channels-last output.

    Examples:
        >>> from torch import nn
        >>> m = nn.Identity(); m.output_fmt = "NHWC"
        >>> is_channels_last_output(m, (1, 56, 56, 96), (224, 224))
        True
        >>> is_channels_last_output(m, (1, 96, 56, 56), (224, 224))
        False
    """
    if str(getattr(model, "output_fmt", "")).upper() != "NHWC" or len(shape) != 4:
        return False
    height, width = input_hw

    def aspect_fits(rows: int, cols: int) -> bool:
        # rows/cols == height/width, within one cell (strided maps round sizes).
        return abs(rows * width - cols * height) < max(height, width)

    return aspect_fits(shape[1], shape[2]) and not aspect_fits(shape[2], shape[3])


def _require_hookable(model: nn.Module) -> None:
    import torch

    if isinstance(model, torch.jit.ScriptModule):
        raise NeurolabelError(
            "TorchScript models do not run Python forward hooks, so their layers cannot be "
            "read. Load the model from code instead (python:module:callable?state_dict=PATH, "
            "timm:, torchvision:) or as a pickled module (file:PATH?trust=true)"
        )


def _kind(shape: tuple[int, ...]) -> str:
    return {3: "spatial", 2: "tokens", 1: "vector"}.get(len(shape), "other")
