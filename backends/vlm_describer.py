"""``litellm:MODEL``: a chat VLM that names what a neuron's exemplar patches share.

The describer variant of a scorer (see :mod:`neurolabel.plugin_core.pipeline.describe`): per neuron
it composes one grid image of the exemplar patches (strongest first), sends it as a data URL
and asks for a few short labels, best first. ``mode=free`` lets the model name anything;
``mode=constrained`` asks it to pick and rank from the scorer's top ``candidates`` concepts
for that neuron. The labeler fuses its ranking with the scorer's (``weight``).

Images leave the machine only for a remote model: a model on an ``api_base`` on localhost or
127.0.0.1, or an ``ollama/`` model, stays local (:attr:`LiteLLMDescriber.remote`).

Examples:
    >>> from PIL import Image
    >>> grid = compose_grid([Image.new("RGB", (50, 80), "red")] * 5, cell=64)
    >>> grid.size
    (204, 134)
"""

from __future__ import annotations

import base64
import io
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from neurolabel.plugin_core.data.vocabulary import normalize_concept
from neurolabel.plugin_core.errors import SpecError
from neurolabel.plugin_core.plugins.contracts import Describer, DescribeRequest
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

from .llm_client import CLIENT_OPTIONS, ChatRequest, LLMClient, LLMSettings
from .llm_parsing import labelled_items

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["LiteLLMDescriber", "compose_grid", "data_url", "register_scorers"]

log = logging.getLogger("neurolabel.llm")

MODES = ("free", "constrained")
_OPTIONS = CLIENT_OPTIONS | {
    "mode", "patches", "candidates", "labels", "weight", "cell", "verify", "propose", "vision",
    "budget",
}  # fmt: skip
_GAP = 6
_BACKGROUND = (128, 128, 128)
_MAX_LABEL_WORDS = 5
#: A proposed description is asked for in 1 to 4 words; longer text is prose, not one.
_MAX_PROPOSED_WORDS = 4
#: Prompt tokens one earlier candidate adds to a verification round (its line of scores).
FEEDBACK_TOKENS = 30


def compose_grid(patches: Sequence[Image.Image], cell: int = 192) -> Image.Image:
    """Tile patches into one image, row by row, each fitted into a ``cell`` square.

    Args:
        patches: The patches, strongest first (read left to right, top to bottom).
        cell: Side of a grid cell in pixels.

    Returns:
        An RGB image of ``ceil(sqrt(n))`` columns, patches separated by gray gaps.
    """
    from PIL import Image

    if not patches:
        raise ValueError("compose_grid needs at least one patch")
    columns = math.ceil(math.sqrt(len(patches)))
    rows = math.ceil(len(patches) / columns)
    grid = Image.new(
        "RGB", (columns * cell + (columns - 1) * _GAP, rows * cell + (rows - 1) * _GAP), _BACKGROUND
    )
    for i, patch in enumerate(patches):
        tile = patch.convert("RGB")
        scale = cell / max(tile.size)
        size = (max(1, round(tile.width * scale)), max(1, round(tile.height * scale)))
        tile = tile.resize(size, Image.Resampling.BICUBIC)
        x = (i % columns) * (cell + _GAP) + (cell - size[0]) // 2
        y = (i // columns) * (cell + _GAP) + (cell - size[1]) // 2
        grid.paste(tile, (x, y))
    return grid


def data_url(image: Image.Image, quality: int = 85) -> str:
    """A ``data:image/jpeg;base64,...`` URL of the image (deterministic bytes, so cacheable)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class LiteLLMDescriber:
    """Describes neurons from a grid of their exemplar patches, through litellm.

    Args:
        spec: ``litellm:MODEL?mode=free|constrained&patches=9&candidates=20&labels=5&
            weight=0.5&cell=192`` plus the client options (``api_base``, ``retries``...).
        ctx: The resolve context (cache folder, ``confirm`` callback).

    Examples:
        >>> from neurolabel import build_context
        >>> spec = Spec.parse("litellm:ollama/llava?mode=constrained&candidates=10")
        >>> d = LiteLLMDescriber(spec, build_context("cpu"))
        >>> d.num_candidates, d.remote
        (10, False)
    """

    def __init__(self, spec: Spec, ctx: Any) -> None:
        spec.check_options(_OPTIONS)
        self.name = str(spec)
        self.settings = LLMSettings.from_spec(spec, max_tokens=300)
        self.mode = (spec.option("mode") or "free").strip().lower()
        if self.mode not in MODES:
            raise SpecError(f"'{spec}': mode must be free or constrained, got {self.mode!r}")
        self.num_patches = spec.option_int("patches", 9) or 0
        self.num_labels = spec.option_int("labels", 5) or 0
        self.cell = spec.option_int("cell", 192) or 0
        self.num_candidates = spec.option_int("candidates", 20) or 0
        if self.mode == "free":
            self.num_candidates = 0
        self.weight = float(spec.option_float("weight", 0.5) or 0.0)
        # verify=ROUNDS: propose, test on the evidence, refine (pipeline/verification.py)
        self.propose_rounds = spec.option_int("verify", 0) or 0
        self.num_proposed = spec.option_int("propose", 5) or 0
        self.vision = spec.option_bool("vision", True)
        # dollars (upper-bound estimates of uncached requests) after which refining stops
        self.budget = float(spec.option_float("budget", 0.0) or 0.0)
        self.spent = 0.0
        problems = []
        if self.propose_rounds < 0:
            problems.append("verify must be a number of rounds (0 = off), e.g. verify=2")
        if self.propose_rounds and self.num_proposed < 1:
            problems.append(
                f"propose={self.num_proposed}: give the candidates asked for per unit and "
                "round, at least 1 (default 5)"
            )
        if self.num_patches < 1 or self.num_labels < 1:
            problems.append("patches and labels must be at least 1")
        if self.cell < 32:
            problems.append("cell must be at least 32 pixels")
        if self.mode == "constrained" and self.num_candidates < 2:
            problems.append("constrained mode needs candidates of at least 2")
        if not 0 <= self.weight <= 1:
            problems.append("weight must be between 0 and 1 (1 = the describer's labels only)")
        if problems:
            raise SpecError(f"'{spec}': " + "; ".join(problems))
        self.client = LLMClient(self.settings, ctx.cache_dir, confirm=ctx.extra.get("confirm"))

    @property
    def remote(self) -> bool:
        """True when images will be sent to a service off this machine."""
        return not self.settings.local

    def prompt(self, count: int, candidates: Sequence[str]) -> str:
        """The question asked about a grid of ``count`` patches."""
        intro = (
            f"The {count} image patches in this grid (strongest first, left to right, top "
            "to bottom) are the regions that most strongly activate one neuron of an "
            "image-recognition network. "
        )
        answer = 'Answer with JSON only: {"labels": ["best label", "next label"]}.'
        if self.mode == "constrained":
            listed = "\n".join(f"- {c}" for c in candidates)
            return (
                intro + f"Which of these concepts best describe what the patches have in common? "
                f"Choose up to {self.num_labels}, best first, copied exactly from the list:\n"
                f"{listed}\n" + answer
            )
        return (
            intro + f"What visual concept do they have in common (a color, texture, material, "
            f"shape, object part, object or scene)? Give up to {self.num_labels} short "
            f"labels of 1 to 3 words, best first. " + answer
        )

    def request(self, item: DescribeRequest) -> ChatRequest | None:
        """The chat request for one neuron, or None when it has no patch to show."""
        patches = item.load_patches()[: self.num_patches]
        if not patches:
            return None
        candidates = list(item.candidates[: self.num_candidates])
        content = [
            {"type": "text", "text": self.prompt(len(patches), candidates)},
            {"type": "image_url", "image_url": {"url": data_url(compose_grid(patches, self.cell))}},
        ]
        return ChatRequest([{"role": "user", "content": content}], json=True)

    def parse(self, text: str, candidates: Sequence[str]) -> list[tuple[str, float]]:
        """Ranked ``(label, confidence)`` from an answer; confidence falls linearly with rank.

        In constrained mode, labels that are not among ``candidates`` are dropped.
        """
        items, _ = labelled_items(text, keys=("labels", "concepts", "concept", "label"))
        allowed = {normalize_concept(c): c for c in candidates}
        labels: list[str] = []
        for raw, _tag in items:
            label = normalize_concept(str(raw)).strip(" .;:\"'")
            if not label or len(label.split()) > _MAX_LABEL_WORDS or label in labels:
                continue
            if self.mode == "constrained":
                if label not in allowed:
                    continue
                label = normalize_concept(allowed[label])
            labels.append(label)
        labels = labels[: self.num_labels]
        return [(label, 1 - rank / len(labels)) for rank, label in enumerate(labels)]

    def propose_prompt(self, item: Any, count: int) -> str:
        """The question of one verification round (the scores of earlier candidates, never
        an image's label)."""
        which = f"neuron {item.unit} of layer '{item.layer}'"
        seen = (
            f"The {count} image patches in this grid (strongest first) are the regions that "
            f"most strongly activate {which} of an image-recognition network. "
            if count
            else f"{which[0].upper()}{which[1:]} of an image-recognition network is being "
            "described (no image is shown). "
        )
        captions = list(getattr(item, "captions", ()))[: self.num_patches]
        if not count and captions:
            seen += (
                f"Its {len(captions)} most strongly activating image regions, strongest first, "
                f"each in the words that fit it best: {'; '.join(captions)}. "
            )
        concepts = ", ".join(item.concepts[:10])
        ask = (
            f"A concept scorer ranks these concepts first for it: {concepts}. "
            f"Propose {self.num_proposed} short descriptions (1 to 4 words) of what it "
            "responds to, best first."
        )
        if item.tested:

            def line(c: Any) -> str:
                source = " (the scorer's label)" if c.round == 0 else ""
                return (
                    f"- {c.text}{source}: score = {_shown(c.score)} (r = {_shown(c.heldout_r)}, "
                    f"z = {_shown(c.exemplar_z)})"
                )

            ranked = sorted(item.tested, key=lambda c: -(c.score or -1e9))
            lines = "\n".join(line(c) for c in ranked)
            ask = (
                f"A concept scorer ranks these concepts first for it: {concepts}. "
                "Descriptions tested so far, best first (r: correlation "
                "with the neuron on images it was not explained from; z: how much more its "
                "strongest patches match than those of other neurons; score: both "
                f"combined):\n{lines}\nPropose {self.num_proposed} "
                "new descriptions (1 to 4 words) that could score higher: more specific, more "
                "general, or another aspect of the best ones. Do not repeat any."
            )
        return seen + ask + ' Answer with JSON only: {"candidates": ["first", "second"]}.'

    def round_cost(self, fresh: Sequence[ChatRequest]) -> float:
        """Upper-bound dollars of sending ``fresh`` (0 for a local server or an unpriced
        model: then only the rounds bound the work)."""
        if not fresh or self.settings.local:
            return 0.0
        return self.client.cost_bound(fresh)[2] or 0.0

    def propose(self, requests: Sequence[Any]) -> list[list[str]] | None:
        """One round of candidates per unit (cached, concurrent, retried); None when the
        round would pass ``budget`` (refining stops there)."""
        chats = []
        for item in requests:
            patches = item.load_patches()[: self.num_patches] if self.vision else []
            content: list[dict[str, Any]] = [
                {"type": "text", "text": self.propose_prompt(item, len(patches))}
            ]
            if patches:
                url = data_url(compose_grid(patches, self.cell))
                content.append({"type": "image_url", "image_url": {"url": url}})
            chats.append(ChatRequest([{"role": "user", "content": content}], json=True))
        round_number = requests[0].round if requests else 1
        cost = self.round_cost([c for c in chats if self.client.cached(c) is None])
        if self.budget and round_number > 1 and self.spent + cost > self.budget:
            log.warning(
                "%s: round %d would pass the budget of $%.2f (spent at most $%.2f): "
                "refining stops", self.name, round_number, self.budget, self.spent,
            )  # fmt: skip
            return None
        self.spent += cost
        rounds_left = self.propose_rounds - round_number
        what = f"verified descriptions, round {round_number} of {self.propose_rounds}"
        # The estimate before round 1 counts every round: later prompts list the earlier
        # candidates with their scores (about FEEDBACK_TOKENS each) and, once, the scorer's
        # label and concepts (counted as two more candidates a round, an upper bound).
        answers = self.client.complete_many(
            chats,
            what,
            rounds=1 + rounds_left if round_number == 1 else 1,
            growth=FEEDBACK_TOKENS * (self.num_proposed + 2),
        )
        out = []
        for answer in answers:
            items, _ = labelled_items(answer.content, keys=("candidates", "labels", "concepts"))
            texts = []
            for raw, _tag in items:
                text = normalize_concept(str(raw)).strip(" .;:\"'")
                if text and len(text.split()) <= _MAX_PROPOSED_WORDS and text not in texts:
                    texts.append(text)
            out.append(texts[: self.num_proposed])
        return out

    def describe(self, requests: Sequence[DescribeRequest]) -> list[list[tuple[str, float]]]:
        """Ask the model about every neuron (cached, concurrent, retried).

        Args:
            requests: The neurons, with their patches and candidates.

        Returns:
            Per neuron, ranked ``(label, confidence)`` pairs (empty when the answer had no
            usable label, e.g. cut off before the first one).
        """
        chats = [self.request(item) for item in requests]
        sent = [c for c in chats if c is not None]
        answers = iter(self.client.complete_many(sent, "VLM neuron descriptions"))
        out: list[list[tuple[str, float]]] = []
        empty = 0
        for item, chat in zip(requests, chats, strict=True):
            labels = [] if chat is None else self.parse(next(answers).content, item.candidates)
            empty += not labels
            out.append(labels)
        if empty:
            log.warning("%s gave no usable label for %d of %d neurons", self.name, empty, len(out))
        return out


def _shown(value: float | None) -> str:
    return "untested" if value is None else f"{value:.2f}"


def _factory(spec: Spec, ctx: Any) -> LiteLLMDescriber:
    return LiteLLMDescriber(spec, ctx)


@hookimpl
def register_scorers(register: Register[Describer]) -> None:
    """Register the describer ``litellm:MODEL``."""
    register(
        "litellm",
        _factory,
        description=(
            "Describer: a chat VLM names each neuron from a grid of its patches, free or "
            "ranking the scorer's top concepts: litellm:openai/gpt-4o-mini?mode=constrained"
        ),
    )
