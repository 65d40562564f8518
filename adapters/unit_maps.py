"""Built-in unit maps: what a "unit" of a layer is (``register_unit_maps``).

* ``channels`` (default): the layer's channels themselves.
* ``directions:PATH``: a ``[U, C]`` matrix of directions (concept-activation vectors, probe
  weights, PCA or NMF components); a unit's activation at a position is the projection of
  the channel vector there onto its direction.
* ``sae:PATH[?activation=relu|jumprelu|topk&k=N]``: the latents of a sparse autoencoder
  trained on the layer's channel vectors, encoded at every position:
  ``act((x - b_dec) @ W_enc + b_enc)``.
* ``heads``: a unit per attention head of a timm vision transformer (layer
  ``blocks.N.attn.norm``) or a torchvision one (layer
  ``encoder.layers.encoder_layer_N.self_attention``), its activation the norm of the
  head's output at each token, before the output projection.

Files are read as safetensors (``.safetensors``), NumPy (``.npz``/``.npy``) or a
``torch.save`` file of tensors (``.pt``/``.pth``/``.bin``, loaded with
``weights_only=True``: no code runs). Key names of common releases are recognized (see
:data:`SAE_KEYS`); a map is applied per spatial position, batch by batch, so memory does
not grow with the number of images.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neurolabel.plugin_core.errors import NeurolabelError, SpecError
from neurolabel.plugin_core.plugins import Register, ResolveContext, Spec, UnitMap, hookimpl

if TYPE_CHECKING:  # the CLI loads this plugin at start-up, which must not import torch
    from torch import Tensor

#: Accepted key names per SAE part, first match wins. ``W_enc`` is ``[C, U]`` (SAELens,
#: Gemma Scope, dictionary_learning's ``encoder.weight`` is ``[U, C]`` and transposed).
SAE_KEYS: dict[str, tuple[str, ...]] = {
    "W_enc": ("W_enc", "encoder.weight", "enc.weight", "W_e", "encoder_weight"),
    "b_enc": ("b_enc", "encoder.bias", "enc.bias", "b_e", "encoder_bias"),
    "b_dec": ("b_dec", "decoder.bias", "dec.bias", "pre_bias", "b_pre", "decoder_bias"),
    "threshold": ("threshold", "jump_threshold", "log_threshold"),
    "W_dec": ("W_dec", "decoder.weight", "dec.weight", "W_d", "decoder_weight"),
}
#: Accepted key names of a directions matrix (or a file's only 2-D array).
DIRECTION_KEYS = ("directions", "components", "weight", "W", "vectors", "cavs")
ACTIVATIONS = ("relu", "jumprelu", "topk")


def read_tensors(path: Path) -> dict[str, Tensor]:
    """Every array of a safetensors, NumPy or ``torch.save`` file, as float32 tensors.

    Raises:
        NeurolabelError: The file is missing, of an unknown kind, or unreadable.
    """
    import torch

    if not path.is_file():
        raise NeurolabelError(f"{path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        elif suffix in (".npz", ".npy"):
            import numpy as np

            loaded = np.load(path, allow_pickle=False)
            arrays = {"array": loaded} if suffix == ".npy" else dict(loaded.items())
            tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()}
        elif suffix in (".pt", ".pth", ".bin", ".ckpt"):
            data = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(data, torch.Tensor):
                data = {"array": data}
            if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
                data = data["state_dict"]
            if not isinstance(data, dict):
                raise NeurolabelError(f"{path} holds a {type(data).__name__}, not tensors")
            tensors = {str(k): v for k, v in data.items() if isinstance(v, torch.Tensor)}
        else:
            raise NeurolabelError(
                f"{path}: unknown file kind '{suffix}'; use .safetensors, .npz/.npy or a "
                "torch.save file (.pt/.pth/.bin)"
            )
    except NeurolabelError:
        raise
    except Exception as exc:  # a damaged or foreign file: say which and why
        raise NeurolabelError(f"Could not read {path}: {exc}") from None
    return {k: v.detach().float() for k, v in tensors.items()}


def file_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256 (recorded with the result)."""
    hasher = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()[:16]


def _pick(tensors: dict[str, Tensor], names: tuple[str, ...]) -> tuple[str, Tensor] | None:
    for name in names:
        for key, value in tensors.items():
            if key == name or key.endswith("." + name):
                return key, value
    return None


def _apply_per_position(acts: Tensor, function: Any) -> Tensor:
    """``function`` on the channel vector of every position: ``[B, C, H, W] -> [B, U, H, W]``
    (``[B, C] -> [B, U]``)."""
    if acts.ndim == 2:
        return function(acts)
    if acts.ndim != 4:
        raise NeurolabelError(
            f"A unit map needs [B, C, H, W] or [B, C] activations, got {tuple(acts.shape)}"
        )
    batch, channels, height, width = acts.shape
    flat = acts.permute(0, 2, 3, 1).reshape(-1, channels)
    out = function(flat)
    return out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)


class Channels:
    """The identity: a unit is a channel (the default)."""

    name = "channels"

    def units(self, layer: str, channels: int) -> int:
        return channels

    def __call__(self, layer: str, acts: Tensor) -> Tensor:
        return acts

    def describe(self) -> dict[str, Any]:
        return {"spec": "channels", "kind": "channels"}


class Directions:
    """``directions:PATH``: unit ``u``'s activation is the projection on row ``u`` of a
    ``[U, C]`` matrix.

    Examples:
        >>> import torch
        >>> d = Directions(torch.tensor([[1.0, 0.0], [0.5, 0.5]]), "directions:x.npz", "0")
        >>> d("layer", torch.ones(1, 2, 3, 3)).shape, d.units("layer", 2)
        (torch.Size([1, 2, 3, 3]), 2)
    """

    def __init__(self, matrix: Tensor, spec: str, digest: str) -> None:
        if matrix.ndim != 2:
            raise NeurolabelError(
                f"'{spec}': directions must be a [units, channels] matrix, got shape "
                f"{tuple(matrix.shape)}"
            )
        self.matrix = matrix.float()
        self.name = spec
        self.digest = digest

    def units(self, layer: str, channels: int) -> int:
        if self.matrix.shape[1] != channels:
            hint = (
                " (it looks transposed: directions are [units, channels])"
                if self.matrix.shape[0] == channels
                else ""
            )
            raise NeurolabelError(
                f"'{self.name}' holds {self.matrix.shape[0]} directions of "
                f"{self.matrix.shape[1]} channels, but layer '{layer}' has {channels} "
                f"channels{hint}"
            )
        return int(self.matrix.shape[0])

    def __call__(self, layer: str, acts: Tensor) -> Tensor:
        matrix = self.matrix.to(acts.device, acts.dtype)
        return _apply_per_position(acts, lambda x: x @ matrix.T)

    def decoder(self, layer: str) -> Tensor:
        """``d / |d|^2`` per direction ``d``: taking ``u * decoder[u]`` out of a channel
        vector removes its component along ``d`` (directional ablation); for orthogonal
        directions it also splits the vector exactly."""
        norms = (self.matrix**2).sum(dim=1, keepdim=True).clamp(min=1e-12)
        return self.matrix / norms

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.name,
            "kind": "directions",
            "units": int(self.matrix.shape[0]),
            "channels": int(self.matrix.shape[1]),
            "file_sha256": self.digest,
        }


class SparseAutoencoder:
    """``sae:PATH``: the latents of a sparse autoencoder, encoded at every position.

    Examples:
        >>> import torch
        >>> sae = SparseAutoencoder(torch.eye(2), torch.zeros(2), torch.zeros(2), None,
        ...                         "relu", 0, "sae:x.npz", "0")
        >>> sae("layer", torch.tensor([[1.0, -1.0]])).tolist()
        [[1.0, 0.0]]
    """

    def __init__(
        self,
        w_enc: Tensor,
        b_enc: Tensor,
        b_dec: Tensor | None,
        threshold: Tensor | None,
        activation: str,
        k: int,
        spec: str,
        digest: str,
        w_dec: Tensor | None = None,
    ) -> None:
        self.w_enc, self.b_enc, self.b_dec, self.threshold = w_enc, b_enc, b_dec, threshold
        self.w_dec = w_dec  # [U, C], or None when the file holds no decoder
        self.activation, self.k = activation, k
        self.name, self.digest = spec, digest

    def units(self, layer: str, channels: int) -> int:
        if self.w_enc.shape[0] != channels:
            raise NeurolabelError(
                f"'{self.name}' encodes {self.w_enc.shape[0]}-channel vectors, but layer "
                f"'{layer}' has {channels} channels: it was trained on another layer"
            )
        return int(self.w_enc.shape[1])

    def _encode(self, x: Tensor) -> Tensor:
        device, dtype = x.device, x.dtype
        if self.b_dec is not None:
            x = x - self.b_dec.to(device, dtype)
        pre = x @ self.w_enc.to(device, dtype) + self.b_enc.to(device, dtype)
        if self.activation == "jumprelu":
            assert self.threshold is not None
            return pre * (pre > self.threshold.to(device, dtype))
        if self.activation == "topk":
            values, indices = pre.topk(min(self.k, pre.shape[-1]), dim=-1)
            return pre.new_zeros(pre.shape).scatter_(-1, indices, values.clamp(min=0))
        return pre.clamp(min=0)

    def __call__(self, layer: str, acts: Tensor) -> Tensor:
        return _apply_per_position(acts, self._encode)

    def decoder(self, layer: str) -> Tensor | None:
        """The decoder weight ``[U, C]``: a latent writes ``u * W_dec[u]`` into the layer."""
        return self.w_dec

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.name,
            "kind": "sae",
            "units": int(self.w_enc.shape[1]),
            "channels": int(self.w_enc.shape[0]),
            "decoder": self.w_dec is not None,
            "activation": self.activation,
            **({"k": self.k} if self.activation == "topk" else {}),
            "file_sha256": self.digest,
        }


class FittedDirections:
    """``directions:pca?k=N``: a layer's N principal directions, fitted on the probing set.

    The labeler streams the probing images once more before the exemplar pass to collect
    each layer's channel mean and covariance over every position (:meth:`fit`); a unit's
    activation is then the centered projection ``(x - mean) · v`` on a principal direction
    ``v``, its sign chosen so that the projection's largest magnitude over the fitting
    positions is positive (a unit fires high on what it is about). The fitted matrices are
    recorded in the result (``describe``), so evaluators rebuild the same units.

    Examples:
        >>> import torch
        >>> pca = FittedDirections(1, "directions:pca?k=1")
        >>> x = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 0.1]])
        >>> pca.fit("fc", x.mean(0), x.T @ x / 3 - torch.outer(x.mean(0), x.mean(0)), x)
        >>> pca.units("fc", 2), [round(v, 2) for v in pca("fc", x).flatten().tolist()]
        (1, [2.0, -2.0, 0.0])
    """

    needs_fit = True

    def __init__(self, k: int, spec: str) -> None:
        self.k = k
        self.name = spec
        self.fitted: dict[str, tuple[Tensor, Tensor]] = {}  # layer -> (mean [C], rows [k, C])
        self.variance: dict[str, list[float]] = {}

    def fit(self, layer: str, mean: Tensor, covariance: Tensor, sample: Tensor) -> None:
        """Keep the top ``k`` eigenvectors of ``covariance``; ``sample`` ``[n, C]`` (channel
        vectors of some positions) fixes each direction's sign."""
        import torch

        values, vectors = torch.linalg.eigh(covariance.double())
        order = values.argsort(descending=True)[: self.k]
        rows = vectors[:, order].T.float()  # [k, C]
        projections = (sample.float() - mean.float()) @ rows.T  # [n, k]
        peak = projections.gather(0, projections.abs().argmax(dim=0, keepdim=True))[0]
        rows = rows * torch.where(peak < 0, -1.0, 1.0).unsqueeze(1)
        self.fitted[layer] = (mean.float(), rows)
        total = float(values.clamp(min=0).sum()) or 1.0
        self.variance[layer] = [round(float(v) / total, 5) for v in values[order].clamp(min=0)]

    def units(self, layer: str, channels: int) -> int:
        if self.k > channels:
            raise NeurolabelError(
                f"'{self.name}': {self.k} directions asked of layer '{layer}', which has "
                f"{channels} channels"
            )
        return self.k

    def __call__(self, layer: str, acts: Tensor) -> Tensor:
        if layer not in self.fitted:
            raise NeurolabelError(
                f"'{self.name}' has not been fitted on layer '{layer}' (the labeler fits it on "
                "the probing images first)"
            )
        mean, rows = self.fitted[layer]
        mean, rows = mean.to(acts.device, acts.dtype), rows.to(acts.device, acts.dtype)
        return _apply_per_position(acts, lambda x: (x - mean) @ rows.T)

    def decoder(self, layer: str) -> Tensor:
        """The orthonormal directions: ``x - u * v`` moves a vector to the mean along ``v``."""
        if layer not in self.fitted:
            raise NeurolabelError(f"'{self.name}' has not been fitted on layer '{layer}'")
        return self.fitted[layer][1]

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.name,
            "kind": "pca",
            "units": self.k,
            "explained_variance": self.variance,
            # The fitted directions themselves: evaluators rebuild the units from them.
            "fitted": {
                layer: {"mean": mean.tolist(), "directions": rows.tolist()}
                for layer, (mean, rows) in self.fitted.items()
            },
        }

    def restore(self, record: dict[str, Any]) -> None:
        """Take the fitted directions a result recorded (``settings.unit_map``)."""
        import torch

        for layer, entry in (record.get("fitted") or {}).items():
            self.fitted[layer] = (
                torch.tensor(entry["mean"], dtype=torch.float32),
                torch.tensor(entry["directions"], dtype=torch.float32),
            )
        self.variance = dict(record.get("explained_variance") or {})


class Heads:
    """``heads``: a unit per attention head of a timm vision-transformer block.

    Its activation at a token is the L2 norm of that head's output there, before the
    output projection: read from the block's ``attn.norm`` layer (an identity in timm's
    ``Attention`` unless the model normalizes the heads' outputs, which would mix them),
    whose output is the heads' outputs side by side, reshaped to the patch grid like any
    token layer. torchvision's ``nn.MultiheadAttention`` (layer
    ``encoder.layers.encoder_layer_N.self_attention``) computes its heads inside one
    function and returns them already projected, ``out = z W_o^T + b``; the heads' outputs
    ``z`` are read back through the inverse of the square output projection, solved in
    double precision at every token. Other attention modules are refused.

    Examples:
        >>> import torch
        >>> heads = Heads("heads")
        >>> heads.layout["blocks.0.attn.norm"] = (2, 3)
        >>> heads("blocks.0.attn.norm", torch.ones(1, 6, 2, 2)).shape
        torch.Size([1, 2, 2, 2])
    """

    def __init__(self, spec: str) -> None:
        self.name = spec
        self.layout: dict[str, tuple[int, int]] = {}  # layer -> (heads, head_dim)
        # torchvision layers: (W_o, b) of the output projection the heads are read back from
        self.projected: dict[str, tuple[Tensor, Tensor | None]] = {}
        self.model: Any = None

    def bind(self, loaded: Any) -> None:
        """Read the attention modules' head counts from the model about to run."""
        self.model = loaded.model

    def units(self, layer: str, channels: int) -> int:
        if layer not in self.layout:
            self.layout[layer] = self._heads_of(layer, channels)
        return self.layout[layer][0]

    def _heads_of(self, layer: str, channels: int) -> tuple[int, int]:
        import torch.nn as nn

        modules = dict(self.model.named_modules()) if self.model is not None else {}
        if isinstance(modules.get(layer), nn.MultiheadAttention):
            return self._projected_heads(layer, modules[layer], channels)
        parent_name, _, leaf = layer.rpartition(".")
        parent = modules.get(parent_name)
        heads = getattr(parent, "num_heads", None)
        if leaf != "norm" or parent is None or heads is None:
            attention = layer if hasattr(modules.get(layer), "num_heads") else None
            hint = (
                f" (read the heads before the output projection: --layer {attention}.norm)"
                if attention and hasattr(modules[attention], "norm")
                else ""
            )
            raise NeurolabelError(
                f"'heads' reads a timm attention block's 'attn.norm' layer (e.g. "
                f"blocks.0.attn.norm) or a torchvision nn.MultiheadAttention (e.g. "
                f"encoder.layers.encoder_layer_0.self_attention); '{layer}' is neither{hint}"
            )
        if not isinstance(modules[layer], nn.Identity):
            raise NeurolabelError(
                f"'{layer}' normalizes the heads' outputs together "
                f"({type(modules[layer]).__name__}), which mixes the heads: per-head units "
                "cannot be read from it"
            )
        if channels % int(heads):
            raise NeurolabelError(
                f"'{layer}' has {channels} channels, not a multiple of its {heads} heads"
            )
        return int(heads), channels // int(heads)

    def _projected_heads(self, layer: str, attention: Any, channels: int) -> tuple[int, int]:
        weight = attention.out_proj.weight.detach().double().cpu()
        if tuple(weight.shape) != (channels, channels):
            raise NeurolabelError(
                f"'{layer}' gives {channels} channels but its output projection is "
                f"{tuple(weight.shape)}: the heads cannot be read back"
            )
        bias = attention.out_proj.bias
        self.projected[layer] = (weight, None if bias is None else bias.detach().double().cpu())
        return int(attention.num_heads), channels // int(attention.num_heads)

    def __call__(self, layer: str, acts: Tensor) -> Tensor:
        heads, dim = self.layout.get(layer) or self._heads_of(layer, int(acts.shape[1]))
        if layer in self.projected:
            acts = self._unproject(layer, acts)
        shape = acts.shape
        split = acts.reshape(shape[0], heads, dim, *shape[2:])
        return split.norm(dim=2)

    def _unproject(self, layer: str, acts: Tensor) -> Tensor:
        """The heads' outputs ``z`` from ``out = z W_o^T + b``, channels on dimension 1."""
        import torch

        weight, bias = self.projected[layer]
        x = acts.movedim(1, -1).double()
        if bias is not None:
            x = x - bias.to(x.device)
        flat = x.reshape(-1, x.shape[-1])
        z = torch.linalg.solve(weight.to(x.device), flat.T).T  # W_o z = out - b
        return z.reshape(x.shape).to(acts.dtype).movedim(-1, 1)

    def channel_groups(self, layer: str) -> Tensor:
        """``[heads, C]`` membership: head ``h`` owns channels ``h*dim .. (h+1)*dim - 1``
        (zeroing them removes the head's output; its attribution is theirs summed)."""
        import torch

        if layer in self.projected:
            raise NeurolabelError(
                f"The heads of '{layer}' (torchvision) are read back through the output "
                "projection, whose output mixes them: they are labeled and evaluated for "
                "faithfulness, but not ablated or attributed to (use a timm model for that)"
            )
        heads, dim = self.layout[layer]
        return torch.eye(heads).repeat_interleave(dim, dim=1)

    def describe(self) -> dict[str, Any]:
        return {
            "spec": self.name,
            "kind": "heads",
            "heads": {layer: heads for layer, (heads, _) in self.layout.items()},
        }


def _path(spec: Spec, kind: str) -> Path:
    if not spec.argument:
        raise SpecError(f"'{spec}': name the file, e.g. {kind}:weights.safetensors")
    return Path(spec.argument).expanduser()


def build_directions(spec: Spec, ctx: ResolveContext) -> Directions | FittedDirections:
    """``directions:PATH``: the file's ``directions`` (or ``components``, ``weight``, ...)
    matrix, or its only 2-D array; ``directions:pca?k=N``: the layer's N principal
    directions, fitted on the probing images."""
    if spec.argument == "pca":
        spec.check_options({"k"})
        k = spec.option_int("k", 16) or 0
        if k < 1:
            raise SpecError(f"'{spec}': k must be at least 1 (directions to keep)")
        return FittedDirections(k, str(spec))
    spec.check_options(set())
    path = _path(spec, "directions")
    tensors = read_tensors(path)
    found = _pick(tensors, DIRECTION_KEYS)
    if found is None:
        matrices = [v for v in tensors.values() if v.ndim == 2]
        if len(matrices) != 1:
            raise NeurolabelError(
                f"{path} holds {', '.join(tensors) or 'no arrays'}: name the [units, channels] "
                f"matrix one of {', '.join(DIRECTION_KEYS)}, or keep only that array"
            )
        matrix = matrices[0]
    else:
        matrix = found[1]
    return Directions(matrix, str(spec), file_digest(path))


def build_sae(spec: Spec, ctx: ResolveContext) -> SparseAutoencoder:
    """``sae:PATH[?activation=relu|jumprelu|topk&k=N]`` (default: jumprelu when the file has
    a threshold, else relu)."""
    spec.check_options({"activation", "k"})
    path = _path(spec, "sae")
    tensors = read_tensors(path)
    parts = {part: _pick(tensors, names) for part, names in SAE_KEYS.items()}
    if parts["W_enc"] is None:
        raise NeurolabelError(
            f"{path} has no encoder weight (looked for {', '.join(SAE_KEYS['W_enc'])}); "
            f"its arrays: {', '.join(tensors) or 'none'}"
        )
    key, w_enc = parts["W_enc"]
    if key.endswith("weight"):  # nn.Linear layout [U, C]
        w_enc = w_enc.T
    units = w_enc.shape[1]
    b_enc = parts["b_enc"][1] if parts["b_enc"] else w_enc.new_zeros(units)
    b_dec = parts["b_dec"][1] if parts["b_dec"] else None
    threshold = None
    if parts["threshold"]:
        name, threshold = parts["threshold"]
        if name.endswith("log_threshold"):
            threshold = threshold.exp()
    activation = spec.option("activation") or ("jumprelu" if threshold is not None else "relu")
    if activation not in ACTIVATIONS:
        raise SpecError(f"'{spec}': activation={activation!r}; use one of {', '.join(ACTIVATIONS)}")
    if activation == "jumprelu" and threshold is None:
        raise NeurolabelError(f"'{spec}': jumprelu needs a threshold array in {path}")
    k = spec.option_int("k", 0) or 0
    if activation == "topk" and k < 1:
        raise SpecError(f"'{spec}': activation=topk needs k=N (latents kept per position)")
    for name, tensor, size in (("encoder bias", b_enc, units), ("threshold", threshold, units)):
        if tensor is not None and tuple(tensor.shape) != (size,):
            raise NeurolabelError(
                f"{path}: the {name} has shape {tuple(tensor.shape)}, expected ({size},)"
            )
    if b_dec is not None and tuple(b_dec.shape) != (w_enc.shape[0],):
        raise NeurolabelError(
            f"{path}: the decoder bias has shape {tuple(b_dec.shape)}, expected ({w_enc.shape[0]},)"
        )
    w_dec = None
    if parts["W_dec"] is not None:
        key, w_dec = parts["W_dec"]
        if key.endswith("weight"):  # nn.Linear layout [C, U]
            w_dec = w_dec.T
        if tuple(w_dec.shape) != (units, w_enc.shape[0]):
            raise NeurolabelError(
                f"{path}: the decoder weight has shape {tuple(w_dec.shape)}, expected "
                f"({units}, {w_enc.shape[0]}) (or its transpose under an nn.Linear name)"
            )
    return SparseAutoencoder(
        w_enc, b_enc, b_dec, threshold, activation, k, str(spec), file_digest(path), w_dec
    )


def build_heads(spec: Spec, ctx: ResolveContext) -> Heads:
    """``heads``: a unit per attention head (no options)."""
    spec.check_options(set())
    return Heads(str(spec))


@hookimpl
def register_unit_maps(register: Register[UnitMap]) -> None:
    register("channels", lambda spec, ctx: Channels(), description="a unit is a channel (default)")
    register(
        "directions",
        build_directions,
        description="projections on a [units, channels] matrix: directions:FILE, or a "
        "layer's principal directions: directions:pca?k=N",
    )
    register(
        "heads",
        build_heads,
        description="a unit per attention head of a ViT block (timm: layer blocks.N.attn.norm; "
        "torchvision: encoder.layers.encoder_layer_N.self_attention)",
    )
    register(
        "sae",
        build_sae,
        description="sparse-autoencoder latents: sae:FILE[?activation=relu|jumprelu|topk&k=N]",
    )
