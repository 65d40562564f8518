"""Model sources: the ways a spec string becomes a target model ready to probe.

Registered names (each an ordinary plugin hook implementation):

- ``torchvision:NAME[?weights=DEFAULT|none|ENUM_NAME]``
- ``timm:NAME[?pretrained=true|false&checkpoint=PATH&num_classes=N]``
- ``file:PATH[?trust=true&size=224&resize=256&mean=..&std=..&interpolation=..&classes=..]``
- ``python:module.path:callable[?state_dict=PATH&size=..&resize=..&mean=..&std=..&classes=..]``

Examples:
    >>> from neurolabel import build_context
    >>> ctx = build_context("cpu")
    >>> loaded = ctx.registries.model_sources.resolve("torchvision:resnet18?weights=none", ctx)
    >>> loaded.preprocessing.crop_size
    (224, 224)
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
import pickle
import sys
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurolabel.plugin_core.data.imagenet import readable_class_names, readable_if_imagenet
from neurolabel.plugin_core.data.preprocessing import Preprocessing
from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import LoadedModel
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    from torch import Tensor, nn

#: Spellings of "none" accepted by ``weights=``, ``pretrained=``, ``resize=``, ``classes=``.
_NONE_WORDS = {"none", "null", "false", "no", "0", "off", "random"}

#: Keys under which training scripts commonly nest the weights of a checkpoint.
_CHECKPOINT_KEYS = ("state_dict", "model", "model_state_dict", "net", "module", "state_dict_ema")

#: Options shared by the sources whose preprocessing cannot be read from the weights.
_PREPROCESSING_OPTIONS = frozenset({"size", "resize", "mean", "std", "interpolation", "classes"})


@hookimpl
def register_model_sources(register: Register[LoadedModel]) -> None:
    """Register the ``torchvision``, ``timm``, ``file`` and ``python`` model sources."""
    register(
        "torchvision",
        torchvision_source,
        description="torchvision.models by name: torchvision:resnet18?weights=none",
    )
    register(
        "timm",
        timm_source,
        description="timm models by name: timm:vit_small_patch16_224?pretrained=false",
    )
    register(
        "file",
        file_source,
        description="a saved model: TorchScript archive or pickled module (?trust=true)",
    )
    register(
        "python",
        python_source,
        description="a model built by your code: python:mypkg.models:build?state_dict=w.pt",
    )


# --------------------------------------------------------------------------- helpers


def _close_matches(name: str, candidates: Iterable[str], n: int = 5) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.6)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def _finish(model: nn.Module, ctx: ResolveContext) -> nn.Module:
    # Probing never trains: dropout off and batch-norm running stats frozen.
    return model.eval().to(ctx.device)


def _is_tensor_dict(obj: object) -> bool:
    from torch import Tensor

    return (
        isinstance(obj, Mapping)
        and len(obj) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())
    )


def state_dict_from_checkpoint(obj: object, path: str | Path) -> dict[str, Tensor]:
    """Find the weights in a loaded checkpoint object.

    Accepts a plain state dict or a training checkpoint that nests one under a common
    key (``state_dict``, ``model``, ``model_state_dict``, ``net``, ``module``,
    ``state_dict_ema``); strips the ``module.`` prefix of DistributedDataParallel and the
    ``_orig_mod.`` prefix of ``torch.compile``.

    Args:
        obj: What ``torch.load`` returned.
        path: The file it came from, for the error message.

    Returns:
        A ``{name: tensor}`` state dict.

    Examples:
        >>> import torch
        >>> sd = state_dict_from_checkpoint({"state_dict": {"module.w": torch.ones(1)}}, "x.pt")
        >>> list(sd)
        ['w']
    """
    found: Mapping[str, Tensor] | None = None
    if _is_tensor_dict(obj):
        found = obj  # type: ignore[assignment]
    elif isinstance(obj, Mapping):
        for key in _CHECKPOINT_KEYS:
            if _is_tensor_dict(obj.get(key)):
                found = obj[key]
                break
    if found is None:
        keys = ", ".join(map(str, list(obj)[:10])) if isinstance(obj, Mapping) else ""
        detail = f" (top-level keys: {keys})" if keys else f" (found {type(obj).__name__})"
        raise NeurolabelError(
            f"{path} holds no state dict{detail}. Expected a dict of tensors, or a checkpoint "
            f"with one under one of the keys {', '.join(_CHECKPOINT_KEYS)}."
        )
    out = dict(found)
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in out):
            out = {k[len(prefix) :]: v for k, v in out.items()}
    return out


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Load a state dict safely (``weights_only=True``: no code from the file runs).

    Args:
        path: A ``torch.save`` file holding a state dict or a training checkpoint.

    Returns:
        The ``{name: tensor}`` state dict, on the CPU.

    Examples:
        >>> import tempfile, os
        >>> import torch
        >>> from torch import nn
        >>> f = os.path.join(tempfile.mkdtemp(), "w.pt")
        >>> torch.save(nn.Linear(2, 1).state_dict(), f)
        >>> sorted(load_state_dict_file(f))
        ['bias', 'weight']
    """
    import torch

    file = _existing_file(path, "state dict")
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise NeurolabelError(
            f"Cannot read {file} as a state dict with weights_only=True: it holds Python "
            f"objects besides tensors. Save only the weights: torch.save(model.state_dict(), "
            f"PATH). Details: {_first_line(exc)}"
        ) from exc
    except (RuntimeError, OSError, EOFError) as exc:
        raise NeurolabelError(
            f"Cannot read {file}: not a torch.save file ({_first_line(exc)})"
        ) from exc
    return state_dict_from_checkpoint(obj, file)


def load_weights_into(model: nn.Module, state_dict: Mapping[str, Tensor], source: str) -> None:
    """Load ``state_dict`` strictly, turning a mismatch into an actionable error.

    Args:
        model: The module to fill.
        state_dict: Its weights.
        source: Where they came from, for the message.
    """
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        wanted = set(model.state_dict())
        given = set(state_dict)
        missing = sorted(wanted - given)[:5]
        unexpected = sorted(given - wanted)[:5]
        parts = []
        if missing:
            parts.append(f"missing keys e.g. {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys e.g. {', '.join(unexpected)}")
        if not parts:  # same keys, so the shapes differ
            parts.append(_first_line(exc))
        raise NeurolabelError(
            f"The weights in {source} do not fit the model: {'; '.join(parts)}. "
            "Check that the model is built with the same architecture and number of classes."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _existing_file(path: str | Path, what: str) -> Path:
    file = Path(os.path.expanduser(str(path)))
    if not file.is_file():
        raise NeurolabelError(f"The {what} file {file} does not exist")
    return file


def preprocessing_from_transform(transform: object) -> Preprocessing:
    """Read the geometry and normalization of an evaluation transform.

    Understands :class:`Preprocessing` itself, torchvision's weight presets
    (``weights.transforms()``) and ``transforms.Compose`` of ``Resize``, ``CenterCrop``,
    ``ToTensor``/``PILToTensor``/``ConvertImageDtype`` and ``Normalize`` (timm's eval
    transforms are such a Compose).

    Args:
        transform: The transform a model expects.

    Returns:
        The equivalent :class:`Preprocessing`.

    Examples:
        >>> from torchvision import transforms as T
        >>> t = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
        ...                T.Normalize((0.5,) * 3, (0.5,) * 3)])
        >>> p = preprocessing_from_transform(t)
        >>> p.crop_size, p.resize_size, p.mean
        ((224, 224), 256, (0.5, 0.5, 0.5))
    """
    if isinstance(transform, Preprocessing):
        return transform
    if all(hasattr(transform, a) for a in ("crop_size", "resize_size", "mean", "std")):
        # torchvision.transforms._presets.ImageClassification (weights.transforms()).
        return Preprocessing(
            crop_size=_pair(transform.crop_size),  # type: ignore[attr-defined]
            resize_size=_single(transform.resize_size),  # type: ignore[attr-defined]
            mean=_triple(transform.mean),  # type: ignore[attr-defined]
            std=_triple(transform.std),  # type: ignore[attr-defined]
            interpolation=_interp_name(getattr(transform, "interpolation", "bilinear")),
        )
    steps = getattr(transform, "transforms", None)
    if steps is None:
        raise NeurolabelError(
            f"Cannot interpret the transform {transform!r}: return a "
            "neurolabel Preprocessing, or a Compose of Resize, CenterCrop, ToTensor, Normalize"
        )
    resize: int | None = None
    resize_hw: tuple[int, int] | None = None
    crop: tuple[int, int] | None = None
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    interpolation = "bilinear"
    for step in steps:
        kind = type(step).__name__
        if kind in {"Resize", "ResizeKeepRatio"}:
            size = step.size
            if isinstance(size, int) or (isinstance(size, (list, tuple)) and len(size) == 1):
                resize = _single(size)
            else:
                resize_hw = _pair(size)
            interpolation = _interp_name(getattr(step, "interpolation", interpolation))
        elif kind == "CenterCrop":
            crop = _pair(step.size)
        elif kind == "Normalize":
            mean, std = _triple(step.mean), _triple(step.std)
        elif kind in {"ToTensor", "PILToTensor", "ConvertImageDtype", "MaybeToTensor", "ToDtype"}:
            continue
        elif kind in {"ToImage", "MaybePILToTensor", "Lambda"}:
            continue
        else:
            raise NeurolabelError(
                f"Cannot interpret the transform step {step!r}: neurolabel needs a fixed "
                "resize + center crop + normalize recipe; return a Preprocessing instead"
            )
    if crop is None:
        if resize_hw is None:
            raise NeurolabelError(
                f"The transform {transform!r} has no CenterCrop or fixed (h, w) Resize, so "
                "the input size varies; return a Preprocessing with a crop_size instead"
            )
        # Resize straight to (h, w): the whole image, aspect ratio not kept.
        return Preprocessing(resize_hw, None, mean, std, interpolation)
    return Preprocessing(crop, resize, mean, std, interpolation)


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    values = list(size)
    if len(values) == 1:
        return int(values[0]), int(values[0])
    return int(values[0]), int(values[1])


def _single(size: Any) -> int | None:
    if size is None:
        return None
    if isinstance(size, int):
        return size
    values = list(size)
    return int(values[0]) if values else None


def _triple(values: Iterable[float]) -> tuple[float, float, float]:
    out = [float(v) for v in values]
    if len(out) == 1:
        out = out * 3
    if len(out) != 3:
        raise NeurolabelError(f"Expected 1 or 3 channel values, got {out}")
    return out[0], out[1], out[2]


def _interp_name(mode: object) -> str:
    # InterpolationMode enums carry the name in .value; PIL/timm may give ints or strings.
    name = str(getattr(mode, "value", mode)).lower()
    return name if name in {"nearest", "bilinear", "bicubic", "lanczos"} else "bilinear"


def _parse_channels(spec: Spec, key: str) -> tuple[float, float, float] | None:
    value = spec.option(key)
    if value is None:
        return None
    try:
        return _triple(float(v) for v in value.split(","))
    except ValueError as exc:
        raise SpecError(
            f"Option {key}={value!r} in '{spec}' must be 1 or 3 comma-separated numbers"
        ) from exc
    except NeurolabelError as exc:
        raise SpecError(f"Option {key}={value!r} in '{spec}': {exc}") from exc


def apply_preprocessing_options(spec: Spec, base: Preprocessing) -> Preprocessing:
    """Override ``base`` with the ``size``, ``resize``, ``mean``, ``std``, ``interpolation``
    options of ``spec``.

    ``size`` alone keeps the resize/crop ratio of ``base`` (256/224 for the ImageNet
    recipe); ``resize=none`` squashes the whole image to ``size``.

    Args:
        spec: The model spec.
        base: Preprocessing to start from.

    Returns:
        The adjusted :class:`Preprocessing`.

    Examples:
        >>> p = apply_preprocessing_options(Spec.parse("file:m.pt?size=448"), Preprocessing())
        >>> p.crop_size, p.resize_size
        ((448, 448), 512)
    """
    changes: dict[str, Any] = {}
    size = spec.option_int("size")
    if size is not None:
        if size <= 0:
            raise SpecError(f"Option size={size} in '{spec}' must be positive")
        changes["crop_size"] = (size, size)
        if base.resize_size is not None:
            changes["resize_size"] = int(round(size * base.resize_size / min(base.crop_size)))
    resize_text = spec.option("resize")
    if resize_text is not None:
        if resize_text.strip().lower() in _NONE_WORDS:
            changes["resize_size"] = None
        else:
            resize = spec.option_int("resize")
            if resize is None or resize <= 0:
                raise SpecError(f"Option resize={resize_text} in '{spec}' must be positive")
            changes["resize_size"] = resize
    for key in ("mean", "std"):
        channels = _parse_channels(spec, key)
        if channels is not None:
            changes[key] = channels
    interpolation = spec.option("interpolation")
    if interpolation is not None:
        if interpolation not in {"nearest", "bilinear", "bicubic", "lanczos"}:
            raise SpecError(
                f"Option interpolation={interpolation!r} in '{spec}' must be nearest, "
                "bilinear, bicubic or lanczos"
            )
        changes["interpolation"] = interpolation
    return dataclasses.replace(base, **changes) if changes else base


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard (wnid-sorted) index order.

    Returns:
        Readable names such as ``"tench"``, ``"goldfish"``, ``"ring-tailed lemur"`` (see
        :mod:`neurolabel.plugin_core.data.imagenet`).
    """
    return list(readable_class_names())


def class_names_option(spec: Spec) -> list[str] | None:
    """Read ``?classes=imagenet`` or ``?classes=PATH`` (one name per line).

    Args:
        spec: The model spec.

    Returns:
        The output-unit names, or None when the option is absent.
    """
    value = spec.option("classes")
    if value is None or value.strip().lower() in _NONE_WORDS:
        return None
    if value.strip().lower() == "imagenet":
        return imagenet_class_names()
    file = _existing_file(value, "class names")
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise NeurolabelError(f"The class names file {file} is empty")
    return names


#: ``ctx.extra`` key: build the architecture without its weights (``neurolabel layers``).
ARCHITECTURE_ONLY = "architecture_only"


def _architecture_only(ctx: ResolveContext) -> bool:
    return bool(getattr(ctx, "extra", {}).get(ARCHITECTURE_ONLY, False))


# --------------------------------------------------------------------------- torchvision


def torchvision_source(spec: Spec, ctx: ResolveContext) -> LoadedModel:
    """Load ``torchvision:NAME[?weights=...]`` through ``torchvision.models.get_model``.

    Args:
        spec: ``weights`` is ``DEFAULT`` (the default: best available, downloaded on first
            use), ``none`` (random init), or a weights enum member such as
            ``IMAGENET1K_V2`` / ``ResNet50_Weights.IMAGENET1K_V2``.
        ctx: Resolve context (device).

    Returns:
        The model with the preprocessing and class names of its weights (ImageNet
        256/224 recipe and no class names without weights).

    Examples:
        >>> from neurolabel import build_context
        >>> m = torchvision_source(Spec.parse("torchvision:resnet18?weights=none"),
        ...                        build_context("cpu"))
        >>> m.class_names is None
        True
    """
    import torch
    from torchvision import models

    name = spec.require_argument("a torchvision model name").strip()
    spec.check_options({"weights"})
    available = models.list_models()
    if name.lower() not in available:
        raise SpecError(
            f"torchvision has no model '{name}'.{_close_matches(name.lower(), available)} "
            f'List them with: python -c "import torchvision; '
            f'print(torchvision.models.list_models())"'
        )
    name = name.lower()
    weights = _torchvision_weights(name, spec)
    try:
        # Listing layers needs the architecture only: no weights to download.
        model = models.get_model(name, weights=None if _architecture_only(ctx) else weights)
    except OSError as exc:  # urllib's URLError is an OSError: no internet, proxy, ...
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        url = getattr(weights, "url", "download.pytorch.org")
        raise NeurolabelError(
            f"Could not get the torchvision weights {weights} for '{name}' "
            f"({_first_line(exc)}). They download on first use from {url} into "
            f"{cache}; offline, copy the file there, use ?weights=none for random weights, "
            "or load your own file with file:PATH / python:module:callable?state_dict=PATH"
        ) from exc
    preprocessing = Preprocessing()
    class_names = None
    if weights is not None:
        try:
            preprocessing = preprocessing_from_transform(weights.transforms())
        except NeurolabelError:
            # Detection / video presets have no fixed crop: keep the ImageNet recipe.
            preprocessing = Preprocessing()
        categories = weights.meta.get("categories")
        class_names = readable_if_imagenet(list(categories)) if categories else None
    prefix = 1 if isinstance(model, models.VisionTransformer) else None
    return LoadedModel(
        model=_finish(model, ctx),
        preprocessing=preprocessing,
        name=str(spec),
        class_names=class_names,
        prefix_tokens=prefix,
    )


def _torchvision_weights(name: str, spec: Spec) -> Any:
    from torchvision import models

    value = (spec.option("weights") or "DEFAULT").strip()
    if value.lower() in _NONE_WORDS:
        return None
    try:
        enum = models.get_model_weights(name)
    except (ValueError, KeyError):
        enum = None
    members = list(enum.__members__) if enum is not None else []
    if not members:
        raise SpecError(f"torchvision publishes no weights for '{name}': use {name}?weights=none")
    member = value.rsplit(".", 1)[-1]
    if value.upper() == "DEFAULT":
        member = "DEFAULT"
    if member not in members:
        raise SpecError(
            f"Unknown weights '{value}' for torchvision '{name}'. Available: "
            f"{', '.join(members)}, or none"
        )
    return enum[member]


# --------------------------------------------------------------------------- timm


def timm_source(spec: Spec, ctx: ResolveContext) -> LoadedModel:
    """Load ``timm:NAME[?pretrained=..&checkpoint=PATH&num_classes=N]`` via ``timm.create_model``.

    Args:
        spec: ``NAME`` may carry a pretrained tag (``vit_small_patch16_224.augreg_in1k``).
            ``pretrained`` defaults to true (hub download on first use) unless
            ``checkpoint`` is given; ``checkpoint`` loads a local weights file
            (``weights_only``, so no code from it runs); ``num_classes`` changes the head.
        ctx: Resolve context (device).

    Returns:
        The model with timm's evaluation preprocessing, ImageNet class names for
        pretrained ImageNet-1k classifiers, and its number of prefix tokens.

    Examples:
        >>> from neurolabel import build_context
        >>> m = timm_source(Spec.parse("timm:resnet18?pretrained=false"), build_context("cpu"))
        >>> m.preprocessing.crop_size
        (224, 224)
    """
    try:
        import timm
        from timm.data import resolve_data_config
    except ImportError as exc:  # pragma: no cover - timm is a core dependency
        raise NeurolabelError("The timm: model source needs timm: pip install timm") from exc

    name = spec.require_argument("a timm model name").strip()
    spec.check_options({"pretrained", "checkpoint", "num_classes"})
    if not timm.is_model(name):
        arch = name.split(".", 1)[0]
        raise SpecError(
            f"timm has no model '{name}'.{_close_matches(arch, timm.list_models())} "
            "List them with: python -c \"import timm; print(timm.list_models('*vit*'))\""
        )
    checkpoint = spec.option("checkpoint")
    pretrained_text = spec.option("pretrained")
    if pretrained_text is not None and pretrained_text.strip().lower() in _NONE_WORDS:
        pretrained = False
    else:
        pretrained = spec.option_bool("pretrained", default=checkpoint is None)
    kwargs: dict[str, Any] = {}
    num_classes = spec.option_int("num_classes")
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if checkpoint:
        # timm's loader uses weights_only=True and unwraps EMA / DDP checkpoints.
        kwargs["checkpoint_path"] = str(_existing_file(checkpoint, "checkpoint"))
    try:
        if _architecture_only(ctx):
            kwargs.pop("checkpoint_path", None)
        fetch = pretrained and not _architecture_only(ctx)
        model = timm.create_model(name, pretrained=fetch, **kwargs)
    except OSError as exc:  # huggingface_hub errors are OSErrors: offline, not cached
        raise NeurolabelError(
            f"Could not get the pretrained timm weights for '{name}' ({_first_line(exc)}). "
            "They download from the Hugging Face hub on first use; offline, pass a local "
            f"file with timm:{name}?checkpoint=PATH, or ?pretrained=false for random weights"
        ) from exc
    except RuntimeError as exc:
        message = _first_line(exc)
        if "No pretrained weights" in message:
            raise NeurolabelError(
                f"timm publishes no pretrained weights for '{name}': use "
                f"timm:{name}?pretrained=false or ?checkpoint=PATH"
            ) from exc
        if checkpoint:
            raise NeurolabelError(
                f"The checkpoint {checkpoint} does not fit timm '{name}': {message}. "
                "Check the architecture name and ?num_classes="
            ) from exc
        raise
    config = resolve_data_config(model=model)
    _, height, width = config["input_size"]
    preprocessing = Preprocessing.from_crop_pct(
        (height, width),
        config.get("crop_pct") or 0.875,
        mean=config["mean"],
        std=config["std"],
        interpolation=config.get("interpolation") or "bilinear",
    )
    class_names = _timm_class_names(model) if pretrained and not checkpoint else None
    prefix = getattr(model, "num_prefix_tokens", None)
    return LoadedModel(
        model=_finish(model, ctx),
        preprocessing=preprocessing,
        name=str(spec),
        class_names=class_names,
        prefix_tokens=int(prefix) if isinstance(prefix, int) else None,
    )


def _timm_class_names(model: nn.Module) -> list[str] | None:
    try:
        from timm.data import infer_imagenet_subset
    except ImportError:  # older timm: no label metadata
        return None
    if getattr(model, "num_classes", None) != 1000:
        return None
    if infer_imagenet_subset(model) != "imagenet-1k":
        return None
    return list(readable_class_names())


# --------------------------------------------------------------------------- file


def file_source(spec: Spec, ctx: ResolveContext) -> LoadedModel:
    """Load ``file:PATH``: a TorchScript archive or a ``torch.save``'d ``nn.Module``.

    A pickled module can only be rebuilt by running code stored in the file, so it is
    loaded only with an explicit ``?trust=true`` (or ``ctx.extra["trust_pickle"]``, which
    the CLI sets from ``--trust-pickle``). A file holding only weights needs the code of
    the model: use ``python:module:callable?state_dict=PATH`` or ``timm:NAME?checkpoint=PATH``.

    Args:
        spec: Options ``trust``, ``size``, ``resize``, ``mean``, ``std``,
            ``interpolation`` (preprocessing, default ImageNet 256/224) and ``classes``
            (``imagenet`` or a text file, one class name per line).
        ctx: Resolve context (device, ``extra["trust_pickle"]``).

    Returns:
        The loaded model.

    Examples:
        >>> import tempfile
        >>> from neurolabel import build_context
        >>> import torch
        >>> from torch import nn
        >>> path = Path(tempfile.mkdtemp()) / "model.pt"
        >>> torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), path)  # a whole module
        >>> ctx = build_context("cpu")
        >>> file_source(Spec.parse(f"file:{path}"), ctx)  # unpickling runs code: not by default
        Traceback (most recent call last):
            ...
        neurolabel.plugin_core.errors.NeurolabelError: ...model.pt holds a pickled Python object...
        >>> loaded = file_source(Spec.parse(f"file:{path}?trust=true&size=192"), ctx)
        >>> type(loaded.model).__name__, loaded.preprocessing.crop_size
        ('Sequential', (192, 192))
    """
    path = spec.require_argument("a path to a saved model")
    spec.check_options(_PREPROCESSING_OPTIONS | {"trust"})
    file = _existing_file(path, "model")
    trust = spec.option_bool("trust") or bool(ctx.extra.get("trust_pickle", False))
    if _is_torchscript(file):
        import warnings

        import torch

        try:
            # torch >= 2.9 deprecates TorchScript; the user chose the file, the warning
            # only adds noise to the run (layers and explain say what does not work).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                model: nn.Module = torch.jit.load(str(file), map_location="cpu")
        except RuntimeError as exc:
            raise NeurolabelError(
                f"{file} looks like a TorchScript archive but does not load: {_first_line(exc)}"
            ) from exc
    else:
        model = _load_pickled_module(file, trust)
    preprocessing = apply_preprocessing_options(spec, Preprocessing())
    return LoadedModel(
        model=_finish(model, ctx),
        preprocessing=preprocessing,
        name=str(spec),
        class_names=class_names_option(spec),
        prefix_tokens=_prefix_attr(model),
    )


def _is_torchscript(file: Path) -> bool:
    # Both torch.save and torch.jit.save write zip archives; only TorchScript has code/.
    if not zipfile.is_zipfile(file):
        return False
    with zipfile.ZipFile(file) as archive:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in archive.namelist())


def _load_pickled_module(file: Path, trust: bool) -> nn.Module:
    import torch

    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not _needs_code(file, exc):
            raise NeurolabelError(
                f"{file} is neither a TorchScript archive nor a torch.save file "
                f"({_first_line(exc)})"
            ) from exc
        if not trust:
            raise NeurolabelError(
                f"{file} holds a pickled Python object (a whole nn.Module). Loading it "
                "executes code stored in the file, so only load files you trust, then "
                f"pass the trust flag explicitly: file:{file}?trust=true (CLI: "
                "--trust-pickle). Safer: export TorchScript (torch.jit.script/trace + save) "
                "or save only the state dict and use python:module:callable?state_dict=PATH"
            ) from exc
        return _load_trusted(file)
    except (RuntimeError, OSError, EOFError) as exc:
        raise NeurolabelError(
            f"{file} is neither a TorchScript archive nor a torch.save file ({_first_line(exc)})"
        ) from exc
    if _holds_weights(obj):
        raise NeurolabelError(
            f"{file} holds only weights (a state dict / checkpoint), not a model: the "
            "architecture's code is needed to use them. Use "
            f"python:your.module:build_model?state_dict={file} or "
            f"timm:ARCH?checkpoint={file}"
        )
    raise NeurolabelError(
        f"{file} holds a {type(obj).__name__}, not a model. Save a TorchScript archive "
        "(torch.jit.save) or the whole module (torch.save(model, PATH))"
    )


def _needs_code(file: Path, exc: Exception) -> bool:
    # A torch.save zip (it has data.pkl) that the weights-only unpickler refuses, or an
    # old-format file whose pickle names a class: either way, objects beyond tensors.
    if zipfile.is_zipfile(file):
        with zipfile.ZipFile(file) as archive:
            if any(n.endswith("data.pkl") for n in archive.namelist()):
                return True
    return "Unsupported global" in str(exc)


def _holds_weights(obj: object) -> bool:
    if _is_tensor_dict(obj):
        return True
    return isinstance(obj, Mapping) and any(_is_tensor_dict(obj.get(k)) for k in _CHECKPOINT_KEYS)


def _load_trusted(file: Path) -> nn.Module:
    import torch
    from torch import nn

    try:
        obj = torch.load(file, map_location="cpu", weights_only=False)
    except (AttributeError, ModuleNotFoundError, ImportError) as exc:
        raise NeurolabelError(
            f"{file} is a pickled module whose class cannot be imported here "
            f"({_first_line(exc)}): install or put on PYTHONPATH the code that defined it"
        ) from exc
    if not isinstance(obj, nn.Module):
        if isinstance(obj, Mapping):
            return _module_from_mapping(file, obj)
        raise NeurolabelError(f"{file} holds a {type(obj).__name__}, not an nn.Module")
    return obj


def _module_from_mapping(file: Path, obj: Mapping[str, Any]) -> nn.Module:
    # Some trainers save {"model": <nn.Module>, "epoch": ...}.
    from torch import nn

    for key in _CHECKPOINT_KEYS:
        if isinstance(obj.get(key), nn.Module):
            return obj[key]
    raise NeurolabelError(
        f"{file} holds a dict without a model in it (keys: {', '.join(map(str, obj))}); "
        "for weights use python:module:callable?state_dict=PATH"
    )


def _prefix_attr(model: nn.Module) -> int | None:
    prefix = getattr(model, "num_prefix_tokens", None)
    return prefix if isinstance(prefix, int) else None


# --------------------------------------------------------------------------- python


def python_source(spec: Spec, ctx: ResolveContext) -> LoadedModel:
    """Load ``python:module.path:callable``: your code builds the model.

    ``callable()`` is called without arguments and returns an ``nn.Module``, a
    ``(model, transform)`` tuple (a :class:`Preprocessing` or a torchvision-style eval
    transform), or a :class:`LoadedModel`. The module is imported with the current
    folder on ``sys.path`` (like ``uvicorn``), so a local ``models.py`` works.

    Args:
        spec: Options ``state_dict`` (weights file, loaded ``weights_only``; nested
            ``state_dict``/``model`` checkpoints accepted), ``size``, ``resize``,
            ``mean``, ``std``, ``interpolation`` (override the preprocessing) and
            ``classes`` (``imagenet`` or a text file of names).
        ctx: Resolve context (device).

    Returns:
        The loaded model.

    Examples:
        >>> from neurolabel import build_context
        >>> m = python_source(Spec.parse("python:torchvision.models:resnet18"),
        ...                   build_context("cpu"))
        >>> type(m.model).__name__
        'ResNet'
    """
    target = spec.require_argument("module.path:callable")
    spec.check_options(_PREPROCESSING_OPTIONS | {"state_dict"})
    module_name, sep, attr_path = target.rpartition(":")
    if not sep or not module_name or not attr_path:
        raise SpecError(
            f"'{spec}': write python:module.path:callable, e.g. python:mypkg.models:build"
        )
    factory = _import_attribute(module_name, attr_path)
    if not callable(factory):
        raise NeurolabelError(
            f"{module_name}:{attr_path} is a {type(factory).__name__}, "
            "not a callable that returns a model"
        )
    built = factory()
    loaded = _as_loaded(built, target)
    state_dict = spec.option("state_dict")
    if state_dict:
        load_weights_into(loaded.model, load_state_dict_file(state_dict), state_dict)
    classes = class_names_option(spec)
    return dataclasses.replace(
        loaded,
        model=_finish(loaded.model, ctx),
        preprocessing=apply_preprocessing_options(spec, loaded.preprocessing),
        name=str(spec),
        class_names=classes if classes is not None else loaded.class_names,
        prefix_tokens=(
            loaded.prefix_tokens if loaded.prefix_tokens is not None else _prefix_attr(loaded.model)
        ),
    )


def _import_attribute(module_name: str, attr_path: str) -> Any:
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NeurolabelError(
                f"Cannot import module '{module_name}' ({exc}). Install it, run from the "
                "folder that contains it, or add its folder to PYTHONPATH"
            ) from exc
        raise  # the module exists but one of its own imports fails: show the real error
    finally:
        if added:
            sys.path.remove(cwd)
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            public = [n for n in dir(module) if not n.startswith("_")]
            raise NeurolabelError(
                f"Module '{module_name}' has no attribute '{attr_path}'."
                f"{_close_matches(attr_path, public)}"
            ) from None
    return obj


def _as_loaded(built: Any, target: str) -> LoadedModel:
    from torch import nn

    if isinstance(built, LoadedModel):
        return built
    if isinstance(built, nn.Module):
        return LoadedModel(model=built, preprocessing=Preprocessing(), name=target)
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module):
        return LoadedModel(
            model=built[0], preprocessing=preprocessing_from_transform(built[1]), name=target
        )
    raise NeurolabelError(
        f"{target}() returned a {type(built).__name__}; it must return an nn.Module, a "
        "(model, transform) tuple or a LoadedModel"
    )
