"""``llm:MODEL`` summarizer: one sentence per neuron from its ranked concepts and scores.

Used by ``neurolabel explain --summarize MODEL`` and ``NeuronLabeler(summarize=...)``; the
sentence goes into each neuron's ``summary``. The prompt holds only the concepts, their
scores and (when a describer ran) its labels, so neurons with the same evidence share one
cached answer.

Examples:
    >>> first_sentence('"Responds to striped fur. Also to grass."')
    'Responds to striped fur.'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from neurolabel.plugin_core.data.result import NeuronExplanation
from neurolabel.plugin_core.plugins.contracts import Summarizer
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

from .llm_client import CLIENT_OPTIONS, ChatRequest, LLMClient, LLMSettings

__all__ = ["LLMSummarizer", "first_sentence", "register_summarizers"]

_OPTIONS = CLIENT_OPTIONS | {"concepts"}
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)]*\s")
MAX_WORDS = 40


def first_sentence(text: str) -> str | None:
    """The first sentence of an answer, without quotes or a label such as ``Summary:``.

    An answer cut off before its first sentence ended is kept, marked with ``…``; an empty
    one gives None.
    """
    text = " ".join(text.strip().split())
    text = re.sub(r"^(?:summary|sentence|answer)\s*:\s*", "", text, flags=re.IGNORECASE)
    text = text.strip("\"'` ")
    if not text:
        return None
    sentence = _SENTENCE_END.split(text, maxsplit=1)[0].strip("\"'` ")
    words = sentence.split()
    if len(words) > MAX_WORDS:
        return " ".join(words[:MAX_WORDS]) + "…"
    if sentence[-1] not in ".!?…":
        sentence += "…"
    return sentence


class LLMSummarizer:
    """Writes one sentence per neuron through litellm.

    Args:
        spec: ``llm:MODEL?concepts=5`` plus the client options (``api_base``, ``retries``...).
        ctx: The resolve context (cache folder, ``confirm`` callback).

    Examples:
        >>> from neurolabel import build_context
        >>> s = LLMSummarizer(Spec.parse("llm:openai/gpt-4o-mini"), build_context("cpu"))
        >>> prompt = s.prompt(NeuronExplanation("fc", 3, [["stripes", 2.5], ["zebra", 2.1]]))
        >>> prompt[prompt.index("with scores"):prompt.index(" In one")]
        'with scores (higher is better): stripes (2.5), zebra (2.1).'
    """

    def __init__(self, spec: Spec, ctx: Any) -> None:
        spec.check_options(_OPTIONS)
        self.name = str(spec)
        self.settings = LLMSettings.from_spec(spec, max_tokens=120, temperature=0.0)
        self.num_concepts = max(1, spec.option_int("concepts", 5) or 5)
        self.client = LLMClient(self.settings, ctx.cache_dir, confirm=ctx.extra.get("confirm"))

    def prompt(self, neuron: NeuronExplanation) -> str:
        """The question about one neuron."""
        listed = ", ".join(f"{c} ({float(s):.3g})" for c, s in neuron.concepts[: self.num_concepts])
        described = ""
        if neuron.described:
            labels = ", ".join(str(label) for label, _ in neuron.described)
            described = f" A vision-language model looking at its top image patches said: {labels}."
        return (
            "Concepts that best match the images a neuron of an image-recognition network "
            f"responds to, best first, with scores (higher is better): {listed}.{described} "
            "In one plain sentence of at most 25 words, say what the neuron responds to. "
            "Do not mention the scores."
        )

    def summarize(self, neurons: Sequence[NeuronExplanation]) -> list[str | None]:
        """One sentence per neuron (None when the answer was empty).

        Args:
            neurons: Live neurons with ranked concepts.

        Returns:
            The sentences, in order.
        """
        requests = [ChatRequest([{"role": "user", "content": self.prompt(n)}]) for n in neurons]
        answers = self.client.complete_many(requests, "LLM summaries")
        return [first_sentence(a.content) for a in answers]


def _factory(spec: Spec, ctx: Any) -> LLMSummarizer:
    return LLMSummarizer(spec, ctx)


@hookimpl
def register_summarizers(register: Register[Summarizer]) -> None:
    """Register the summarizer ``llm:MODEL``."""
    register(
        "llm",
        _factory,
        description="One sentence per neuron from its concepts (litellm): llm:openai/gpt-4o-mini",
    )
