"""A composite scorer: route each concept to the sub-scorer that can see it, then calibrate.

Spec: ``composite:SUB+SUB[+SUB...][?calibrate=zscore&std_floor=0.5&SUBNAME.KEY=VALUE]``,
e.g. ``composite:color+classifier:packaged:efficientnet_lite1``. ``+`` separates the
sub-scorer specs. The spec grammar gives everything after the first ``?`` to the composite,
so a sub-scorer's options are written ``NAME.KEY=VALUE`` (``color.delta_e=10``) or, when two
sub-scorers share a name, ``INDEX.KEY=VALUE`` with a 1-based index (``2.top=3``).

Routing. A sub-scorer with a ``can_score(concept, category)`` method is a specialist: it
takes the concepts it says it can see (the color scorer takes known color names, unless the
vocabulary tags them with a category other than ``color``). The other sub-scorer, at most
one, is the generalist and takes every concept no specialist claimed. An embedding scorer
scores a concept by the cosine of image and text embeddings.

Calibration. Sub-scorers speak different units (a pixel share in [0, 1], a cosine), so the
raw scores are not comparable across concepts of different sub-scorers. :meth:`calibrate`,
called once with the scores of every probing patch, turns each concept's column into a
z-score over the probing set: how unusual this patch is for this concept. A strongly red
patch (red share far above red's usual share) then outranks a patch that matches an object
only weakly. A column whose spread is tiny (a color almost never present) would give huge
z-scores to its rare hits, so each column's standard deviation is floored at ``std_floor``
times the median standard deviation of its sub-scorer's columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from neurolabel.plugin_core.data.vocabulary import Vocabulary
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import ConceptScorer
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

if TYPE_CHECKING:
    from PIL import Image
    from torch import Tensor

CALIBRATIONS = ("zscore", "block", "none")
DEFAULT_STD_FLOOR = 0.5
_OWN_OPTIONS = frozenset({"calibrate", "std_floor"})


@dataclass(frozen=True)
class Block:
    """The concepts one sub-scorer scores.

    Args:
        scorer: Index of the sub-scorer.
        columns: Column of each of its concepts in the full vocabulary.
        vocabulary: Its concepts, as a vocabulary of their own (categories kept).
    """

    scorer: int
    columns: Tensor
    vocabulary: Vocabulary


@dataclass(frozen=True)
class Plan:
    """Routing of a vocabulary: the blocks, and the columns no sub-scorer can see."""

    blocks: tuple[Block, ...]
    unseen: Tensor


def calibrate_columns(
    scores: Tensor,
    blocks: Sequence[Tensor],
    mode: str = "zscore",
    std_floor: float = DEFAULT_STD_FLOOR,
) -> Tensor:
    """Make the columns of different sub-scorers comparable, using probing-set statistics.

    Args:
        scores: ``[P, V]`` raw scores of all P probing patches.
        blocks: Column indices of each sub-scorer (disjoint).
        mode: ``zscore``: each column minus its mean, over its standard deviation floored at
            ``std_floor`` times the block's median column standard deviation; ``block``: one
            mean and standard deviation per block (keeps each sub-scorer's ranking of
            concepts, only aligns the scales); ``none``: unchanged.
        std_floor: See ``zscore``; 0 disables the floor.

    Returns:
        ``[P, V]`` calibrated scores (columns outside every block are unchanged).

    Examples:
        >>> import torch
        >>> s = torch.tensor([[0.0, 0.2], [1.0, 0.4]])
        >>> calibrate_columns(s, [torch.tensor([0]), torch.tensor([1])]).round(decimals=4).tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
    """
    import torch

    if mode not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {mode!r}")
    out = scores.float().clone()
    if mode == "none" or scores.shape[0] == 0:
        return out
    for columns in blocks:
        if columns.numel() == 0:
            continue
        block = out[:, columns]
        if mode == "block":
            mean, std = block.mean(), block.std(unbiased=False)
            out[:, columns] = (block - mean) / (std if std > 0 else 1.0)
            continue
        mean = block.mean(dim=0, keepdim=True)
        std = block.std(dim=0, unbiased=False, keepdim=True)
        # quantile, not median(): torch's median of an even count is the lower middle value.
        floor = std_floor * torch.quantile(std, 0.5)
        # A constant column has nothing to say: it becomes 0 whatever the floor.
        denominator = torch.where(std > 0, std.clamp_min(floor), torch.ones_like(std))
        out[:, columns] = (block - mean) / denominator
    return out


def _has(obj: object, method: str) -> bool:
    return callable(getattr(obj, method, None))


class CompositeScorer:
    """A :class:`~neurolabel.plugin_core.plugins.contracts.ConceptScorer` made of sub-scorers.

    Each concept goes to the first specialist (a sub-scorer with ``can_score``) that can see
    it, else to the generalist (the one sub-scorer without ``can_score``), else nowhere:
    unseen concepts score 0 raw and the lowest calibrated score after :meth:`calibrate`.

    Args:
        scorers: Sub-scorers (embedding or concept scorers), in priority order.
        name: Spec it was built from.
        calibration: ``zscore`` (default), ``block`` or ``none``; see :func:`calibrate_columns`.
        std_floor: Floor of a column's standard deviation, relative to its block's median.

    Examples:
        >>> from neurolabel.backends.color_scorer import ColorScorer
        >>> scorer = CompositeScorer([ColorScorer()])
        >>> vocab = Vocabulary.build(["red", "dog"])
        >>> [scorer.scorers[i].name if i is not None else None for i in scorer.route(vocab)]
        ['color', None]
    """

    def __init__(
        self,
        scorers: Sequence[object],
        *,
        name: str = "composite",
        calibration: str = "zscore",
        std_floor: float = DEFAULT_STD_FLOOR,
    ) -> None:
        if not scorers:
            raise SpecError(f"{name}: needs at least one sub-scorer")
        if calibration not in CALIBRATIONS:
            raise SpecError(
                f"{name}: calibrate must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}"
            )
        if std_floor < 0:
            raise SpecError(f"{name}: std_floor must be at least 0, got {std_floor}")
        for scorer in scorers:
            if not (_has(scorer, "score_images") or _has(scorer, "encode_images")):
                raise SpecError(
                    f"{name}: {getattr(scorer, 'name', scorer)!r} is neither a concept scorer "
                    "(score_images) nor an embedding scorer (encode_images/encode_texts)"
                )
        generalists = [getattr(s, "name", repr(s)) for s in scorers if not _has(s, "can_score")]
        if len(generalists) > 1:
            raise SpecError(
                f"{name}: at most one sub-scorer may score every concept, but "
                f"{', '.join(generalists)} all do; the second would never be used"
            )
        self.name = name
        # Any: sub-scorers are duck-typed (score_images | encode_*, optional can_score).
        self.scorers: list[Any] = list(scorers)
        self.calibration = calibration
        self.std_floor = float(std_floor)
        self._generalist = next(
            (i for i, s in enumerate(self.scorers) if not _has(s, "can_score")), None
        )
        self._plans: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], Plan] = {}
        self._texts: dict[tuple[int, tuple[str, ...]], Tensor] = {}

    def route(self, vocabulary: Vocabulary) -> list[int | None]:
        """Which sub-scorer scores each concept.

        Args:
            vocabulary: The concepts.

        Returns:
            For each concept, the index into :attr:`scorers`, or None when none can see it.
        """
        routes: list[int | None] = []
        for concept in vocabulary.concepts:
            category = vocabulary.category(concept)
            chosen = next(
                (
                    i
                    for i, s in enumerate(self.scorers)
                    if _has(s, "can_score") and s.can_score(concept, category)
                ),
                self._generalist,
            )
            routes.append(chosen)
        return routes

    def can_score(self, concept: str, category: str | None = None) -> bool:
        """Whether some sub-scorer can see ``concept``.

        Args:
            concept: A concept text.
            category: Its vocabulary category, if any.

        Returns:
            True when the concept is routed to a sub-scorer.
        """
        vocab = Vocabulary.build([concept], categories={concept: category} if category else None)
        return bool(vocab.concepts) and self.route(vocab)[0] is not None

    def plan(self, vocabulary: Vocabulary) -> Plan:
        """The routing of ``vocabulary`` as column blocks (cached per vocabulary)."""
        import torch

        key = (vocabulary.concepts, tuple(sorted(vocabulary.categories.items())))
        if key not in self._plans:
            routes = self.route(vocabulary)
            blocks = []
            for index in range(len(self.scorers)):
                columns = [c for c, r in enumerate(routes) if r == index]
                if not columns:
                    continue
                concepts = [vocabulary.concepts[c] for c in columns]
                categories = {
                    c: vocabulary.categories[c] for c in concepts if c in vocabulary.categories
                }
                sub = Vocabulary(tuple(concepts), categories, vocabulary.source)
                blocks.append(Block(index, torch.tensor(columns), sub))
            unseen = torch.tensor([c for c, r in enumerate(routes) if r is None], dtype=torch.long)
            self._plans = {key: Plan(tuple(blocks), unseen)}  # one vocabulary at a time
        return self._plans[key]

    def _text_embeddings(self, index: int, concepts: tuple[str, ...]) -> Tensor:
        key = (index, concepts)
        if key not in self._texts:
            self._texts = {key: self.scorers[index].encode_texts(list(concepts))}
        return self._texts[key]

    def score_images(self, images: Sequence[Image.Image], vocabulary: Vocabulary) -> Tensor:
        """Raw scores: each concept scored by its sub-scorer, in that sub-scorer's units.

        Call :meth:`calibrate` on the scores of the whole probing set before comparing
        concepts routed to different sub-scorers.

        Args:
            images: RGB PIL images (patches).
            vocabulary: Concepts.

        Returns:
            ``[N, V]`` float32 scores; unseen concepts 0.
        """
        import torch

        out = torch.zeros(len(images), len(vocabulary), dtype=torch.float32)
        if not images:
            return out
        for block in self.plan(vocabulary).blocks:
            scorer = self.scorers[block.scorer]
            if _has(scorer, "score_images"):
                scores = scorer.score_images(images, block.vocabulary)
            else:
                texts = self._text_embeddings(block.scorer, block.vocabulary.concepts)
                scores = scorer.encode_images(images).float().cpu() @ texts.float().cpu().T
            out[:, block.columns] = scores.float().cpu()
        return out

    def calibrate(self, scores: Tensor, vocabulary: Vocabulary) -> Tensor:
        """Calibrate the scores of all probing patches (see the module docstring).

        Sub-scorers that calibrate themselves do so first, on their own columns.

        Args:
            scores: ``[P, V]`` raw scores from :meth:`score_images` for every probing patch.
            vocabulary: The concepts of the columns.

        Returns:
            ``[P, V]`` scores comparable across sub-scorers; unseen concepts get the lowest
            score of the matrix so that they never win.
        """
        import torch

        plan = self.plan(vocabulary)
        out = scores.float().clone()
        for block in plan.blocks:
            scorer = self.scorers[block.scorer]
            if _has(scorer, "calibrate"):
                out[:, block.columns] = scorer.calibrate(
                    out[:, block.columns], block.vocabulary
                ).float()
        out = calibrate_columns(
            out, [b.columns for b in plan.blocks], self.calibration, self.std_floor
        )
        if plan.unseen.numel() and out.numel():
            seen = torch.ones(out.shape[1], dtype=torch.bool)
            seen[plan.unseen] = False
            floor = out[:, seen].min() if seen.any() else torch.tensor(0.0)
            out[:, plan.unseen] = floor
        return out

    def __repr__(self) -> str:
        subs = ", ".join(getattr(s, "name", type(s).__name__) for s in self.scorers)
        return f"CompositeScorer({self.name!r}, [{subs}], calibration={self.calibration!r})"


def split_sub_specs(spec: Spec) -> list[Spec]:
    """The sub-scorer specs of a composite spec, with their ``NAME.KEY`` options applied.

    Args:
        spec: ``composite:A+B?...``.

    Returns:
        One :class:`Spec` per sub-scorer.

    Examples:
        >>> spec = Spec.parse("composite:color+classifier:packaged:m?color.delta_e=9")
        >>> [str(s) for s in split_sub_specs(spec)]
        ['color?delta_e=9', 'classifier:packaged:m']
    """
    argument = spec.require_argument("sub-scorer specs joined by '+'")
    parts = [part.strip() for part in argument.split("+")]
    if any(not part for part in parts):
        raise SpecError(f"'{spec}': empty sub-scorer spec between '+' signs")
    subs = [Spec.parse(part) for part in parts]
    extra: list[dict[str, str]] = [dict(s.options) for s in subs]
    for key, value in spec.options.items():
        if key in _OWN_OPTIONS:
            continue
        target, dot, sub_key = key.partition(".")
        if not dot or not sub_key:
            raise SpecError(
                f"Unknown option {key!r} in '{spec}'. Allowed: calibrate, std_floor, and "
                "sub-scorer options written NAME.KEY or INDEX.KEY (e.g. color.delta_e=10)"
            )
        if target.isdigit():
            index = int(target) - 1
            if not 0 <= index < len(subs):
                raise SpecError(
                    f"'{spec}': option {key!r} names sub-scorer {target}, but there are {len(subs)}"
                )
            matches = [index]
        else:
            matches = [i for i, s in enumerate(subs) if s.name == target]
            if not matches:
                names = ", ".join(s.name for s in subs)
                raise SpecError(f"'{spec}': option {key!r} names no sub-scorer (they are {names})")
        for index in matches:
            extra[index][sub_key] = value
    return [Spec(s.name, s.argument, options) for s, options in zip(subs, extra, strict=True)]


def build_composite_scorer(spec: Spec, ctx: ResolveContext) -> CompositeScorer:
    """Factory for ``composite:SUB+SUB[?calibrate=zscore&std_floor=0.5&NAME.KEY=VALUE]``.

    Args:
        spec: Parsed spec.
        ctx: Resolve context: sub-scorers are resolved through its scorer registry.

    Returns:
        The scorer.

    Examples:
        >>> from neurolabel import build_context
        >>> ctx = build_context("cpu")
        >>> ctx.registries.scorers.resolve("composite:color+classifier", ctx)
        CompositeScorer('composite:color+classifier', [color, classifier], calibration='zscore')
    """
    subs = [ctx.registries.scorers.resolve(sub, ctx) for sub in split_sub_specs(spec)]
    return CompositeScorer(
        subs,
        name=str(spec),
        calibration=spec.option("calibrate", "zscore") or "zscore",
        std_floor=spec.option_float("std_floor", DEFAULT_STD_FLOOR) or 0.0,
    )


@hookimpl
def register_scorers(register: Register[ConceptScorer]) -> None:
    """Register the ``composite`` scorer."""
    register(
        "composite",
        build_composite_scorer,
        description=(
            "Routes each concept to the sub-scorer that can see it (e.g. color+classifier) "
            "and z-scores every concept over the probing set so scorers are comparable"
        ),
    )
