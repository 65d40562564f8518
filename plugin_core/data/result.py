"""The labeling result: per-neuron explanations, saved as JSON, CSV and patch images."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import LayerNotFoundError, NeurolabelError
from .atomic import atomic_write
from .result_files import ROOT_KEY, loaded_root, stored_root

if TYPE_CHECKING:
    from PIL import Image

SCHEMA_VERSION = "1.5"
RESULT_FILE = "result.json"
CSV_FILE = "descriptions.csv"
#: The description of a unit whose best concept is not significant.
UNEXPLAINED = "(unexplained)"
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
        p_value: The label's p-value: is its concept more present on the unit's exemplar
            images than on the probing images at large, corrected across the vocabulary
            and (Benjamini–Hochberg) across the layer's units; None when untested.
        p_values: Each ranked concept's p-value, corrected across the vocabulary only
            (parallel to ``concepts``); None when untested.
        unexplained: True when ``p_value`` is above the run's significance level: no
            concept fits better than chance, and the unit gets no label.
        clarity: How alike its exemplars are in the scorer's space: the mean pairwise cosine
            of their centered concept profiles, -1 to 1 (None: fewer than two exemplars).
        groups: Its exemplars' groups, each with its own label: ``[[concept, exemplars,
            similarity], ...]``, largest first (see
            :mod:`~neurolabel.plugin_core.pipeline.unit_character`).
        redundancy: How many other labeled units of the layer share its top concept.
        verified: The verified description (``--describer 'litellm:MODEL?verify=N'``): the
            winner (then the :attr:`description`) with its score, held-out r, exemplar z
            and similarity, the verification split's size, the rounds and the rejected
            candidates ``[text, round, r, z, score]``; None when not verified.
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
    p_value: float | None = None
    p_values: list[float | None] | None = None
    unexplained: bool = False
    clarity: float | None = None
    groups: list[list[Any]] | None = None
    redundancy: int | None = None
    verified: dict[str, Any] | None = None

    @property
    def polysemanticity(self) -> int | None:
        """How many distinct exemplar groups the unit has (each with its own label); None
        when not measured."""
        return None if self.groups is None else len(self.groups)

    @property
    def description(self) -> str:
        """The verified description when there is one, else the top concept; ``(dead)`` for
        dead neurons, ``(unexplained)`` for neurons no concept fits better than chance."""
        if self.dead:
            return "(dead)"
        if self.unexplained:
            return UNEXPLAINED
        tested = (self.verified or {}).get("description")
        if tested:
            return str(tested)
        return str(self.concepts[0][0]) if self.concepts else ""

    @property
    def score(self) -> float | None:
        """Score of the description: a verified one's test score, else the top concept's
        (None when dead, unlabeled or stored as ``null``)."""
        if self.dead:
            return None
        if self.verified and self.verified.get("description") and not self.unexplained:
            value = self.verified.get("score")
            return None if value is None else float(value)
        if not self.concepts or self.concepts[0][1] is None:
            return None
        return float(self.concepts[0][1])

    def top(self, n: int = 5) -> list[tuple[str, float]]:
        """The ``n`` best concepts with scores (NaN for a score stored as ``null``)."""
        return [(str(c), math.nan if s is None else float(s)) for c, s in self.concepts[:n]]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["description"] = self.description
        return data

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "neuron") -> NeuronExplanation:
        """The neuron :meth:`to_dict` wrote, its fields checked; fields this version does
        not know (added by a later minor schema version) are ignored.

        Raises:
            NeurolabelError: A field is missing or of the wrong type (the message names it).
        """
        try:
            return _read_neuron(data, (), None)
        except _Malformed as exc:
            raise exc.error(source) from None


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

    def find(
        self,
        query: str,
        encode_texts: Any,
        *,
        layer: str | None = None,
        top: int = 10,
    ) -> list[Any]:
        """Units whose explanation best matches a free-text query
        (:func:`~neurolabel.plugin_core.data.unit_search.find_units`).

        Args:
            query: Free text, in the vocabulary or not ("striped animal").
            encode_texts: A text embedder, ``texts -> [N, D]`` L2-normalized (a scorer's
                ``encode_texts``).
            layer: Search one layer (default: all).
            top: Units returned.

        Returns:
            :class:`~neurolabel.plugin_core.data.unit_search.UnitMatch` rows, best first.
        """
        from .unit_search import find_units

        return find_units(self, query, encode_texts, layer=layer, top=top)

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
    def from_dict(cls, data: Any, *, source: str = "result") -> LabelingResult:
        """The result :meth:`to_dict` wrote, every field it knows checked.

        A result file is untrusted input: each field must have the type the schema gives
        it. Fields this version does not know (added by a later minor schema version) are
        ignored; a result of another major version is refused. Non-finite figures
        (``NaN``, ``Infinity``, ``1e400``) read as ``null``.

        Args:
            data: The parsed JSON document.
            source: What the messages name (:meth:`load` gives the file).

        Raises:
            NeurolabelError: The document is not a readable result; the message names the
                field and what is wrong with it.
        """
        try:
            return _read_result(cls, data, source)
        except _Malformed as exc:
            raise exc.error(source) from None

    def csv_text(self) -> str:
        """CLIP-Dissect's ``descriptions.csv`` (``layer,unit,description,similarity``) and
        each label's ``p_value`` (empty when untested)."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["layer", "unit", "description", "similarity", "p_value"])
        for neuron in self:
            sim = "" if neuron.similarity is None else f"{neuron.similarity:.6g}"
            p = "" if neuron.p_value is None else f"{neuron.p_value:.4g}"
            writer.writerow([neuron.layer, neuron.unit, neuron.description, sim, p])
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
        path = self.save_json(out / RESULT_FILE)
        self._remove_unreferenced_patches(out)
        return path

    def _remove_unreferenced_patches(self, out: Path) -> None:
        """Delete patches an earlier result saved here left (other layers, more units):
        the folder must hold this result, not a mix of two runs."""
        folder = out / PATCH_DIR
        if not folder.is_dir():
            return
        kept = {
            exemplar.patch
            for neurons in self.neurons.values()
            for neuron in neurons
            for exemplar in neuron.exemplars
            if exemplar.patch
        }
        # os.walk does not follow links: a link in the folder never leads a deletion elsewhere.
        for root, _dirs, files in os.walk(folder, topdown=False):
            for name in files:
                path = Path(root, name)
                if name.endswith(".jpg") and path.relative_to(out).as_posix() not in kept:
                    path.unlink(missing_ok=True)
            if Path(root) != folder and not os.listdir(root):
                os.rmdir(root)

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
                data = neuron.to_dict()
                try:
                    line = dumps(data, separators=(",", ":"))
                except ValueError:  # a NaN or infinity somewhere: null, as everywhere else
                    line = dumps(json_safe(data), separators=(",", ":"))
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
            # NaN and Infinity are not JSON (save() writes them as null): read them as null.
            data = json.loads(file.read_text(encoding="utf-8"), parse_constant=lambda _: None)
        except OSError as exc:
            raise NeurolabelError(f"{file} cannot be read ({exc.strerror or exc})") from None
        except RecursionError:
            raise NeurolabelError(
                f"{file} is not a readable result: its JSON is nested too deeply"
            ) from None
        except ValueError as exc:  # bad JSON, bad UTF-8, an integer of thousands of digits
            reason = str(exc).split(";")[0]
            raise NeurolabelError(f"{file} is not valid JSON ({_short(reason, 200)})") from None
        result = cls.from_dict(data, source=str(file))
        root = loaded_root(result.dataset, file.parent)
        if root is not None:
            result.dataset[ROOT_KEY] = root
        return result


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (strict JSON has neither).

    Arrays and scalars of numpy or torch (anything with ``tolist``) become lists and
    numbers first, so their non-finite values are replaced too.

    Examples:
        >>> json_safe({"a": [1.0, float("nan")], "b": {"c": float("inf")}, "d": "x"})
        {'a': [1.0, None], 'b': {'c': None}, 'd': 'x'}
        >>> import numpy as np
        >>> json_safe({"e": np.float32("inf"), "f": np.array([1.5, np.nan])})
        {'e': None, 'f': [1.5, None]}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return json_safe(value.tolist())
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


# -- reading an untrusted result.json ------------------------------------------------------
# A result file may be crafted, hand-edited, truncated or written by a later neurolabel:
# every field read is checked here, so the reports and evaluators get the types the schema
# promises, and a wrong one is named in one clear message instead of a traceback.

#: Deepest nesting read in a result's free-form parts (``metrics``, ``settings``, ...);
#: deeper, a crafted file would exhaust the stack of the code that walks them.
MAX_DEPTH = 64
#: Largest index or count read (the largest integer a JSON number holds exactly).
MAX_INDEX = 2**53 - 1
#: ``settings`` entries that name a part of the run (specs evaluators resolve again).
_SPEC_SETTINGS = (
    "scorer",
    "vocabulary",
    "aggregation",
    "extractor",
    "activation",
    "threshold",
    "describer",
    "summarizer",
    "source_pattern",
    "device",
    "precision",
)
_NUMBER_TYPES = (int, float)
_CELL_TYPES = {int, float, type(None)}
_NUMBERS, _FLOATS, _LISTS = {int, float}, {float}, {list}
_ABSENT: Any = object()
#: Where a field is: the keys and indexes leading to it.
_Where = tuple[str | int, ...]
#: A key shown as ``.key`` in a field's path (others as ``["key"]``).
_PLAIN_KEY = re.compile(r"[\w.:/-]+")


class _Malformed(Exception):
    """A field of the wrong shape: where it is and what is wrong, before the name of the
    file is added."""

    def __init__(self, where: _Where, problem: str) -> None:
        super().__init__(where, problem)
        self.where, self.problem = _path(where), problem

    def error(self, source: str) -> NeurolabelError:
        field = f"{self.where} " if self.where else ""
        return NeurolabelError(
            f"{source}: {field}{self.problem}. The file was changed or damaged, or is not a "
            "neurolabel result; run 'neurolabel explain' again to remake it"
        )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _at(where: _Where, key: str | int) -> _Where:
    """The field ``key`` of the one at ``where`` (a tuple: cheap to make, written out only
    in a message)."""
    return (*where, key)


def _path(where: _Where) -> str:
    """A field's path as messages write it: ``neurons.layer4[3].concepts``,
    ``layers["odd name"]``."""
    out = ""
    for key in where:
        if isinstance(key, int):
            out += f"[{key}]"
        elif _PLAIN_KEY.fullmatch(key):
            out += f".{_short(key)}" if out else _short(key)
        else:
            out += f"[{_short(json.dumps(key))}]"
    return out


def _kind(value: Any) -> str:
    """What a JSON value is, for a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return "an integer" if _finite(value) else "an integer too large to use"
    if isinstance(value, float):
        return "a number" if math.isfinite(value) else "a non-finite number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return f"a list of {len(value)}" if value else "an empty list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer beyond any float
        return False


def _is_number(value: Any) -> bool:
    """A finite JSON number (true and false are not numbers)."""
    return isinstance(value, _NUMBER_TYPES) and not isinstance(value, bool) and _finite(value)


def _wrong(where: _Where, expected: str, value: Any) -> _Malformed:
    return _Malformed(where, f"must be {expected}, found {_kind(value)}")


def _object(value: Any, where: _Where, expected: str = "an object") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong(where, expected, value)
    return value


def _list(value: Any, where: _Where, expected: str = "a list") -> list[Any]:
    if not isinstance(value, list):
        raise _wrong(where, expected, value)
    return value


def _text(value: Any, where: _Where) -> str:
    if not isinstance(value, str):
        raise _wrong(where, "a string", value)
    return value


def _optional_text(value: Any, where: _Where) -> str | None:
    if value is not None and not isinstance(value, str):
        raise _wrong(where, "a string or null", value)
    return value


def _index(value: Any, where: _Where, expected: str = "a non-negative integer") -> int:
    """A unit or image index: an integer from 0 to :data:`MAX_INDEX`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INDEX:
        raise _wrong(where, expected, value)
    return value


def _count(value: Any, where: _Where) -> int | None:
    """A count that may be missing: a non-negative integer or null."""
    return None if value is None else _index(value, where, "a non-negative integer or null")


def _number(value: Any, where: _Where) -> float | int | None:
    """A figure that may be missing: a number, or null (a non-finite number reads as null)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, _NUMBER_TYPES):
        raise _wrong(where, "a number or null", value)
    return value if _finite(value) else None


def _pairs(value: Any, where: _Where, what: str) -> list[list[Any]]:
    """Ranked ``[label, score]`` pairs: a string and a number or null each."""
    pairs = _list(value, where, f"a list of [{what}, score] pairs")
    out = []
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str)):
            expected = f"a [{what}, score] pair (a string and a number)"
            raise _wrong(_at(where, i), expected, pair)
        score = pair[1]
        if type(score) is not float or not math.isfinite(score):  # the path only when needed
            score = _number(score, _at(_at(where, i), 1))
        out.append([pair[0], score])
    return out


def _box(value: Any, where: _Where) -> list[Any] | None:
    if value is None:
        return None
    if type(value) is list and len(value) == 4 and set(map(type, value)) <= _NUMBERS:
        if _finite(sum(value)):  # all finite (the usual case, checked in one go)
            return value
    if not (isinstance(value, list) and len(value) == 4 and all(map(_is_number, value))):
        raise _wrong(where, "a list of 4 numbers [x0, y0, x1, y1] or null", value)
    return value


def _map(value: Any, where: _Where) -> list[list[Any]] | None:
    """An activation map: rows of numbers (a non-finite cell reads as null).

    Checked by the types in it, not cell by cell: a whole network's result has millions
    of cells.
    """
    if value is None:
        return None
    rows = _list(value, where, "a list of lists of numbers, or null")
    if set(map(type, rows)) <= _LISTS:
        kinds = set(map(type, chain.from_iterable(rows)))
        if kinds == _FLOATS and math.isfinite(sum(chain.from_iterable(rows))):
            return rows  # finite floats only (the usual case)
    out = rows
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise _wrong(_at(where, i), "a list of numbers", row)
        types = set(map(type, row))
        if not types <= _CELL_TYPES:
            bad = next(v for v in row if type(v) not in _CELL_TYPES)
            raise _wrong(_at(_at(where, i), row.index(bad)), "a number or null", bad)
        if types == _FLOATS and math.isfinite(sum(row)):
            continue
        cells = [v if v is None or _finite(v) else None for v in row]
        if cells != row:
            out = list(rows) if out is rows else out
            out[i] = cells
    return out


def _exemplar(value: Any, where: _Where) -> Exemplar:
    data = _object(value, where)
    for key in ("image_index", "image"):
        if key not in data:
            raise _Malformed(where, f"has no {key}")
    return Exemplar(
        image_index=_index(data["image_index"], _at(where, "image_index")),
        image=_text(data["image"], _at(where, "image")),
        activation=_number(data.get("activation"), _at(where, "activation")),
        box=_box(data.get("box"), _at(where, "box")),
        patch=_optional_text(data.get("patch"), _at(where, "patch")),
        map=_map(data.get("map"), _at(where, "map")),
    )


def _read_neuron(value: Any, where: _Where, layer: str | None) -> NeuronExplanation:
    """One neuron; ``layer`` is the key it is stored under (its layer when it names none).
    Fields this version does not know are left out."""
    data = _object(value, where)
    if "unit" not in data:
        raise _Malformed(where, "has no unit")
    dead = data.get("dead", False)
    if not isinstance(dead, bool):
        raise _wrong(_at(where, "dead"), "true or false", dead)
    stats = data.get("stats")
    stats = {} if stats is None else _object(stats, _at(where, "stats"), "an object or null")
    exemplars = _list(data.get("exemplars", []), _at(where, "exemplars"), "a list of objects")
    described = data.get("described")
    if described is not None:
        described = _pairs(described, _at(where, "described"), "label")
    unexplained = data.get("unexplained", False)
    if not isinstance(unexplained, bool):
        raise _wrong(_at(where, "unexplained"), "true or false", unexplained)
    p_values = data.get("p_values")
    if p_values is not None:
        listed = _list(p_values, _at(where, "p_values"), "a list of numbers or null")
        p_values = [_number(v, _at(_at(where, "p_values"), i)) for i, v in enumerate(listed)]
    groups = data.get("groups")
    if groups is not None:
        listed = _list(groups, _at(where, "groups"), "a list of [concept, size, score]")
        groups = [_group(g, _at(_at(where, "groups"), i)) for i, g in enumerate(listed)]
    redundant = data.get("redundancy")
    return NeuronExplanation(
        layer=_text(data.get("layer", layer), _at(where, "layer")),
        unit=_index(data["unit"], _at(where, "unit")),
        concepts=_pairs(data.get("concepts", []), _at(where, "concepts"), "concept"),
        exemplars=[_exemplar(e, _at(_at(where, "exemplars"), i)) for i, e in enumerate(exemplars)],
        dead=dead,
        summary=_optional_text(data.get("summary"), _at(where, "summary")),
        stats={k: _number(v, _at(_at(where, "stats"), k)) for k, v in stats.items()},
        similarity=_number(data.get("similarity"), _at(where, "similarity")),
        described=described,
        p_value=_number(data.get("p_value"), _at(where, "p_value")),
        p_values=p_values,
        unexplained=unexplained,
        clarity=_number(data.get("clarity"), _at(where, "clarity")),
        groups=groups,
        redundancy=None if redundant is None else _index(redundant, _at(where, "redundancy")),
        verified=_verified(data.get("verified"), _at(where, "verified")),
    )


def _verified(value: Any, where: _Where) -> dict[str, Any] | None:
    """A verified description's record: open content, its description a string."""
    if value is None:
        return None
    record = _free_form(value, where)
    if "description" in record:
        _text(record["description"], _at(where, "description"))
    return record


def _group(value: Any, where: _Where) -> list[Any]:
    """One exemplar group ``[concept, size, score]``."""
    if not isinstance(value, list) or len(value) != 3:
        raise _wrong(where, "[concept, size, score]", value)
    return [
        _text(value[0], _at(where, 0)),
        _index(value[1], _at(where, 1)),
        _number(value[2], _at(where, 2)),
    ]


def _free_form(value: Any, where: _Where) -> dict[str, Any]:
    """An object whose content is open (settings, metrics, ...): absent reads as empty;
    nested at most :data:`MAX_DEPTH` levels; non-finite numbers read as null."""
    if value is _ABSENT:
        return {}
    data = _object(value, where)
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth >= MAX_DEPTH:
            raise _Malformed(where, f"is nested more than {MAX_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in children)
    return json_safe(data)


def _check(data: dict[str, Any], where: _Where, checks: dict[str, Any]) -> None:
    """Check the fields of ``data`` that ``checks`` names (an absent one is fine)."""
    for key, check in checks.items():
        if key in data:
            check(data[key], _at(where, key))


def _strings(value: Any, where: _Where) -> None:
    if value is not None:
        for i, item in enumerate(_list(value, where, "a list of strings or null")):
            _text(item, _at(where, i))


def _shape(value: Any, where: _Where) -> None:
    if value is not None:
        for i, size in enumerate(_list(value, where, "a list of sizes or null")):
            _index(size, _at(where, i))


def _is_size(value: Any) -> bool:
    return type(value) is int and 1 <= value <= MAX_INDEX


def _read_model(value: Any) -> dict[str, Any]:
    model = _free_form(value, ("model",))
    _check(model, ("model",), {"name": _optional_text, "class_names": _strings})
    steps = model.get("preprocessing")
    if steps is None:
        return model
    where = ("model", "preprocessing")
    _object(steps, where, "an object or null")
    crop = steps.get("crop_size")
    if crop is not None and not (
        isinstance(crop, list) and len(crop) == 2 and all(map(_is_size, crop))
    ):
        raise _wrong(_at(where, "crop_size"), "[height, width] in pixels", crop)
    resize = steps.get("resize_size")
    if resize is not None and not _is_size(resize):
        raise _wrong(_at(where, "resize_size"), "a size in pixels or null", resize)
    for key in ("mean", "std"):
        values = steps.get(key)
        if values is not None and not (
            isinstance(values, list) and len(values) == 3 and all(map(_is_number, values))
        ):
            raise _wrong(_at(where, key), "a list of 3 numbers", values)
    _check(steps, where, {"interpolation": _optional_text})
    return model


def _read_layers(value: Any) -> dict[str, dict[str, Any]]:
    layers = _free_form(value, ("layers",))
    for name, info in layers.items():
        where = _at(("layers",), name)
        checks: dict[str, Any] = {"kind": _optional_text, "shape": _shape}
        checks.update(dict.fromkeys(("units", "explained_units", "dead_units"), _count))
        _check(_object(info, where), where, checks)
    return layers


def _read_dataset(value: Any) -> dict[str, Any]:
    dataset = _free_form(value, ("dataset",))
    checks: dict[str, Any] = {ROOT_KEY: _optional_text, "fingerprint": _optional_text}
    checks.update(dict.fromkeys(("num_images", "num_used", "num_skipped"), _count))
    checks["skipped"] = lambda v, w: v is None or _list(v, w, "a list or null")
    _check(dataset, ("dataset",), checks)
    holdout = dataset.get("holdout")
    if holdout is not None:
        where = ("dataset", "holdout")
        _check(_object(holdout, where, "an object or null"), where, {"images": _strings})
    return dataset


def _read_settings(value: Any) -> dict[str, Any]:
    settings = _free_form(value, ("settings",))
    checks: dict[str, Any] = dict.fromkeys(_SPEC_SETTINGS, _optional_text)
    checks["warnings"] = _strings
    _check(settings, ("settings",), checks)
    return settings


def _schema_version(data: dict[str, Any], source: str) -> str:
    """The document's schema version, refused when of another major version. A later minor
    version reads as this one: the fields it added are dropped on reading, so a result
    saved again (``evaluate``) must not claim them."""
    version = data.get("schema_version")
    if version is None:
        raise _Malformed((), "has no schema_version: it is not a neurolabel result")
    if not isinstance(version, str):
        raise _wrong(("schema_version",), 'a string such as "1.1"', version)
    major, _, minor = version.partition(".")
    ours, _, our_minor = SCHEMA_VERSION.partition(".")
    if major != ours:
        newer = major.isdigit() and len(major) < 6 and int(major) > int(ours)
        raise NeurolabelError(
            f"{source}: result schema {_short(version)} is not readable by this neurolabel "
            f"(schema {SCHEMA_VERSION}); "
            + ("upgrade neurolabel to read it" if newer else "run 'neurolabel explain' again")
        )
    if minor.isdigit() and len(minor) < 6 and int(minor) <= int(our_minor):
        return version
    return SCHEMA_VERSION


def _read_result(cls: type[LabelingResult], data: Any, source: str) -> LabelingResult:
    if not isinstance(data, dict):
        raise _Malformed((), f"must hold a JSON object (a neurolabel result), found {_kind(data)}")
    version = _schema_version(data, source)
    for key in ("model", "layers", "neurons"):
        if key not in data:
            raise _Malformed((), f"has no {key} (a result has model, layers and neurons)")
    neurons = _object(data["neurons"], ("neurons",), "an object of layer name -> list of neurons")
    read = {}
    for layer, units in neurons.items():
        where = _at(("neurons",), layer)
        items = _list(units, where, "a list of neurons")
        read[layer] = [_read_neuron(n, _at(where, i), layer) for i, n in enumerate(items)]
    return cls(
        model=_read_model(data["model"]),
        layers=_read_layers(data["layers"]),
        neurons=read,
        dataset=_read_dataset(data.get("dataset", _ABSENT)),
        settings=_read_settings(data.get("settings", _ABSENT)),
        versions=_free_form(data.get("versions", _ABSENT), ("versions",)),
        metrics=_free_form(data.get("metrics", _ABSENT), ("metrics",)),
        schema_version=version,
    )
