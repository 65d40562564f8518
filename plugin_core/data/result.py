"""The labeling result: per-neuron explanations, saved as JSON, CSV and patch images."""

from __future__ import annotations

import csv
import io
import json
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LayerNotFoundError, NeurolabelError
from .atomic import atomic_write
from .result_files import ROOT_KEY, loaded_root, stored_root

if TYPE_CHECKING:
    from PIL import Image

SCHEMA_VERSION = "1.1"
RESULT_FILE = "result.json"
CSV_FILE = "descriptions.csv"
PATCH_DIR = "patches"
#: Threads writing exemplar patches in :meth:`LabelingResult.save`.
SAVE_THREADS = 8


@dataclass
class Exemplar:
    """One top-activating image of a neuron.

    Args:
        image_index: Index in the probing set.
        image: Path (folder input) or ``#index``.
        activation: The neuron's activation on it (spatial max or mean).
        box: ``[x0, y0, x1, y1]`` of the patch in original-image pixels; None = whole image.
        patch: Path of the saved patch image, relative to the result folder.
        map: The unit's low-resolution activation map on this image (``[h][w]`` over the
            model input, i.e. the resized, center-cropped image), for the report's heatmap;
            None for vector layers and for exemplars past ``saved_patches``.
    """

    image_index: int
    image: str
    activation: float | None
    box: list[int] | None = None
    patch: str | None = None
    map: list[list[float]] | None = None


@dataclass
class NeuronExplanation:
    """What one neuron responds to.

    Args:
        layer: Layer name.
        unit: Channel / unit index.
        concepts: Ranked ``[concept, score]`` pairs, best first (empty for dead neurons).
        exemplars: Top-activating images, strongest first.
        dead: True when the neuron never varied over the probing set (no label given).
        summary: Optional one-sentence summary (e.g. by an LLM).
        stats: Activation statistics over the probing set (mean, std, min, max, threshold).
        similarity: Mean similarity of the top concept to the exemplar patches (the
            scorer's own scale, CLIP-Dissect's ``similarity`` column).
        described: A describer's own ranked ``[label, confidence]`` pairs (a chat VLM
            looking at the exemplar patches), before fusion with the scorer's ranking;
            None when no describer ran.
    """

    layer: str
    unit: int
    concepts: list[list[Any]] = field(default_factory=list)
    exemplars: list[Exemplar] = field(default_factory=list)
    dead: bool = False
    summary: str | None = None
    stats: dict[str, float | None] = field(default_factory=dict)
    similarity: float | None = None
    described: list[list[Any]] | None = None

    @property
    def description(self) -> str:
        """The top concept, ``(dead)`` for dead neurons."""
        if self.dead:
            return "(dead)"
        return str(self.concepts[0][0]) if self.concepts else ""

    @property
    def score(self) -> float | None:
        """Score of the top concept."""
        return float(self.concepts[0][1]) if self.concepts and not self.dead else None

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` best concepts with scores."""
        return [(str(c), float(s)) for c, s in self.concepts[:n]]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["description"] = self.description
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuronExplanation:
        data = dict(data)
        data.pop("description", None)
        data["exemplars"] = [Exemplar(**e) for e in data.get("exemplars", [])]
        return cls(**data)


@dataclass
class LabelingResult:
    """Explanations of the neurons of one or more layers, with everything needed to
    reproduce them.

    Args:
        model: What was explained (spec, class count...).
        layers: Per layer: shape, kind, number of units.
        neurons: Per layer, the explanations in unit order.
        dataset: Probing-set fingerprint, counts and skipped inputs with reasons.
        settings: Every setting of the run.
        versions: Package versions.
        metrics: Evaluation figures, filled by evaluators.

    Examples:
        >>> r = LabelingResult(model={"name": "m"}, layers={"fc": {"units": 1}},
        ...                    neurons={"fc": [NeuronExplanation("fc", 0, [["dog", 0.9]])]})
        >>> r.explanation("fc", 0).description
        'dog'
    """

    model: dict[str, Any]
    layers: dict[str, dict[str, Any]]
    neurons: dict[str, list[NeuronExplanation]]
    dataset: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    schema_version: str = SCHEMA_VERSION
    #: Patch images kept in memory until :meth:`save` writes them (not serialized).
    patch_images: dict[tuple[str, int, int], Image.Image] = field(
        default_factory=dict, repr=False, compare=False
    )

    def explanation(self, layer: str, unit: int) -> NeuronExplanation:
        """The explanation of ``unit`` in ``layer``.

        Args:
            layer: Layer name as given to the labeler.
            unit: Channel / unit index.

        Returns:
            The :class:`NeuronExplanation`.
        """
        if layer not in self.neurons:
            raise LayerNotFoundError(
                f"Layer '{layer}' is not in this result. Layers: {', '.join(self.neurons)}"
            )
        for neuron in self.neurons[layer]:
            if neuron.unit == unit:
                return neuron
        units = [n.unit for n in self.neurons[layer]]
        span = f"{min(units)}..{max(units)}" if units else "none"
        raise NeurolabelError(
            f"Unit {unit} of layer '{layer}' is not in this result (units explained: {span}, "
            f"{len(units)} in all)"
        )

    def __iter__(self):
        for layer_neurons in self.neurons.values():
            yield from layer_neurons

    def to_dict(self, neurons: bool = True) -> dict[str, Any]:
        """The JSON document (schema :data:`SCHEMA_VERSION`).

        Args:
            neurons: Include the neurons (False: everything else, e.g. to inspect the
                settings of a large result cheaply).
        """
        data = {
            "schema_version": self.schema_version,
            "model": self.model,
            "layers": self.layers,
            "dataset": self.dataset,
            "settings": self.settings,
            "versions": self.versions,
            "metrics": self.metrics,
        }
        if neurons:
            data["neurons"] = {
                layer: [n.to_dict() for n in units] for layer, units in self.neurons.items()
            }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelingResult:
        version = str(data.get("schema_version", ""))
        if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise NeurolabelError(
                f"Result schema {version or '?'} is not readable by this neurolabel "
                f"(schema {SCHEMA_VERSION}); re-run 'neurolabel explain' or upgrade"
            )
        return cls(
            model=data["model"],
            layers=data["layers"],
            neurons={
                layer: [NeuronExplanation.from_dict(n) for n in units]
                for layer, units in data["neurons"].items()
            },
            dataset=data.get("dataset", {}),
            settings=data.get("settings", {}),
            versions=data.get("versions", {}),
            metrics=data.get("metrics", {}),
            schema_version=version,
        )

    def csv_text(self) -> str:
        """CLIP-Dissect's ``descriptions.csv``: ``layer,unit,description,similarity``."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["layer", "unit", "description", "similarity"])
        for neuron in self:
            sim = "" if neuron.similarity is None else f"{neuron.similarity:.6g}"
            writer.writerow([neuron.layer, neuron.unit, neuron.description, sim])
        return buffer.getvalue()

    def save(self, folder: str | Path) -> Path:
        """Write ``result.json``, ``descriptions.csv`` and the exemplar patches to ``folder``.

        Every file is written to a temporary name and renamed, so an interrupted save
        never leaves a half-written file.

        Args:
            folder: Output folder (created).

        Returns:
            The path of ``result.json``.
        """
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        patches = {}
        for (layer, unit, rank), image in self.patch_images.items():
            relative = Path(PATCH_DIR) / _safe(layer) / f"unit{unit:05d}_rank{rank:03d}.jpg"
            patches[relative] = image
            self.explanation(layer, unit).exemplars[rank].patch = relative.as_posix()
        for relative in {relative.parent for relative in patches}:
            (out / relative).mkdir(parents=True, exist_ok=True)
        # A whole network has ~100k patches: JPEG encoding and fsync release the GIL, so
        # threads overlap them.
        with ThreadPoolExecutor(max_workers=SAVE_THREADS) as pool:
            futures = [pool.submit(_save_jpeg, out / r, im) for r, im in patches.items()]
            try:
                for future in futures:
                    future.result()
            except BaseException:  # a full disk or Ctrl-C: stop writing, keep what is whole
                pool.shutdown(cancel_futures=True)
                raise
        with atomic_write(out / CSV_FILE) as handle:
            handle.write(self.csv_text())
        return self.save_json(out / RESULT_FILE)

    def save_json(self, path: str | Path) -> Path:
        """Write ``result.json`` only (atomically), e.g. after new metrics were added.

        Non-finite figures (NaN, infinity) are written as ``null``: the file is strict JSON.

        Args:
            path: The file (usually ``FOLDER/result.json``).

        Returns:
            The path.
        """
        target = Path(path)
        with atomic_write(target) as handle:
            self._write_json(handle, target.parent)
        return target

    def _write_json(self, handle: Any, folder: Path) -> None:
        """The document of :meth:`to_dict`, one neuron per line, written neuron by neuron.

        A whole network's result (ResNet-50: 26,560 neurons with their exemplars' maps) is
        hundreds of megabytes: built as one nested dict first it would take gigabytes, and
        indented it would put every map value on a line of its own.
        """

        def dumps(value: Any, **options: Any) -> str:
            return json.dumps(value, allow_nan=False, default=_json_default, **options)

        document = self.to_dict(neurons=False)
        if document["dataset"].get(ROOT_KEY):
            # Relative to the result folder when inside it: the folder can then be moved.
            root = stored_root(document["dataset"][ROOT_KEY], folder)
            document["dataset"] = {**document["dataset"], ROOT_KEY: root}
        text = dumps(json_safe(document), indent=1)
        handle.write(text[: -len("\n}")] + ',\n "neurons": {')
        for i, (layer, units) in enumerate(self.neurons.items()):
            handle.write(("," if i else "") + f"\n  {dumps(layer)}: [")
            for j, neuron in enumerate(units):
                line = dumps(neuron.to_dict(), separators=(",", ":"))
                handle.write(("," if j else "") + "\n   " + line)
            handle.write("\n  ]")
        handle.write("\n }\n}\n")

    @classmethod
    def load(cls, path: str | Path) -> LabelingResult:
        """Read a result folder or ``result.json`` written by :meth:`save`.

        Args:
            path: The folder or the JSON file.

        Returns:
            The :class:`LabelingResult`.
        """
        file = Path(path)
        if file.is_dir():
            file = file / RESULT_FILE
        if not file.is_file():
            raise NeurolabelError(f"No result at {file}: give a result folder or its result.json")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise NeurolabelError(f"{file} is not valid JSON ({exc})") from None
        result = cls.from_dict(data)
        root = loaded_root(result.dataset, file.parent)
        if root is not None:
            result.dataset[ROOT_KEY] = root
        return result


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON has neither).

    Examples:
        >>> json_safe({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": "x"})
        {'a': [1.0, None], 'b': {'c': None}, 'd': 'x'}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _save_jpeg(path: Path, image: Image.Image) -> None:
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="JPEG", quality=90)


def _safe(layer: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in layer) or "layer"


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
