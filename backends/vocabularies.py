"""Built-in concept vocabularies: ``imagenet``, ``words:N``, ``file:PATH`` and ``colors``.

Each provider is registered through the ordinary ``register_vocabularies`` hook, exactly as a
third-party plugin would be. A factory only parses and validates its spec; the returned
zero-argument provider does the (possibly slow) work when the pipeline asks for the concepts.

Examples:
    >>> from neurolabel import build_context
    >>> ctx = build_context("cpu")
    >>> vocab = ctx.registries.vocabularies.resolve("colors", ctx)()
    >>> vocab.concepts[:3], vocab.category("red")
    (('black', 'blue', 'brown'), 'color')
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from neurolabel.plugin_core.data.imagenet import readable_class_names
from neurolabel.plugin_core.data.vocabulary import Vocabulary
from neurolabel.plugin_core.errors import (
    MissingExtraError,
    NeurolabelError,
    SpecError,
    missing_extra,
)
from neurolabel.plugin_core.plugins.contracts import VocabularyProvider
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec
from neurolabel.plugin_core.runtime.terminal import shorten

__all__ = [
    "BASIC_COLORS",
    "DEFAULT_WORD_COUNT",
    "FUNCTION_WORDS",
    "POS_TAGS",
    "color_names",
    "imagenet_classes",
    "most_frequent_words",
    "read_concept_file",
    "register_vocabularies",
]

#: The 11 basic color terms of Berlin & Kay, as used by Broden / Network Dissection.
BASIC_COLORS: tuple[str, ...] = (
    "black",
    "blue",
    "brown",
    "gray",
    "green",
    "orange",
    "pink",
    "purple",
    "red",
    "white",
    "yellow",
)

#: ``words`` without an argument gives CLIP-Dissect's 20k most common English words.
DEFAULT_WORD_COUNT = 20000

#: ``?pos=`` values -> the universal POS tags of the lexicon (lemminflect / SPECIALIST).
POS_TAGS: dict[str, str] = {
    "noun": "NOUN",
    "adjective": "ADJ",
    "adj": "ADJ",
    "verb": "VERB",
    "adverb": "ADV",
    "adv": "ADV",
}

# Closed-class words (articles, pronouns, prepositions, conjunctions, auxiliaries, modals,
# quantifiers, discourse fillers, cardinal numbers), apostrophe-less contractions and the
# fragments tokenizers leave of contractions ("ll", "ve"), the function words of French,
# Spanish and Italian names that show up in English text ("de", "la"), and web-address
# tokens ("www", "http"). Hand-written rather than borrowed from an IR stop list: those
# (e.g. scikit-learn's) also drop content words such as "fire", "top", "side" or "bottom",
# which are visual concepts.
FUNCTION_WORDS: frozenset[str] = frozenset(
    """
    a an the this that these those there here
    i me my mine myself you your yours yourself yourselves he him his himself she her hers
    herself it its itself we us our ours ourselves they them their theirs themselves
    who whom whose which what whatever whoever whichever whenever wherever
    one ones oneself someone somebody something anyone anybody anything everyone everybody
    everything noone nobody nothing none
    and or but nor so yet if then than because though although unless whereas whether while
    since until till as
    of to in on at by for with from into onto upon about above across after against along
    amid among amongst around before behind below beneath beside besides between beyond
    despite down during except inside near off out outside over past per through throughout
    toward towards under underneath unlike up via within without
    be am is are was were been being have has had having do does did doing done
    can could may might must shall should will would ought
    not no yes nope yeah yep ok okay oh ah uh um eh ha hmm aw ya yo hey hi hello lol
    very too also just only even still already quite rather really perhaps maybe
    all any both each either neither every few many much more most less least several some
    such own same other another
    how when where why whenever however therefore thus hence
    etc ie eg vs via mr mrs ms dr st jr sr
    zero two three four five six seven eight nine ten eleven twelve thirteen fourteen
    fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy
    eighty ninety hundred thousand million billion trillion
    dont doesnt didnt isnt arent wasnt werent havent hasnt hadnt wont wouldnt cant couldnt
    shouldnt mustnt im ive youre youve theyre theyve thats whats lets gonna wanna gotta
    ll ve re nt didn doesn isn wasn aren couldn wouldn shouldn
    de del della di du da la le les el en et al und der die das von van
    http https www com org net html htm php asp pdf jpg jpeg gif png
    """.split()
)

_WORD = re.compile(r"[a-z]+")
# Roman numerals up to 39 ("ii", "xiv"): chapter and king numbers, i.e. numbers. Larger
# ones are left alone because they collide with words ("mix", "cd", "dim").
_ROMAN = re.compile(r"x{0,3}(ix|iv|v?i{0,3})")
_COMMENT = re.compile(r"(^|\s)#.*$")
_HEADER = ("concept", "category")


# ---------------------------------------------------------------------------------------
# imagenet
# ---------------------------------------------------------------------------------------


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet-1k class names, in class-index order, as people read them.

    The curated names of :func:`~neurolabel.plugin_core.data.imagenet.readable_class_names`
    ("ring-tailed lemur", not WordNet's first lemma "Madagascar cat"; "Cardigan Welsh
    Corgi" apart from the sweater "cardigan"). Two pairs of classes share a name
    ("missile", "sunglasses"), so the ``imagenet`` vocabulary has 998 concepts.

    Returns:
        A list of 1000 names; name ``i`` is class ``i``.

    Examples:
        >>> names = imagenet_classes()
        >>> len(names), names[0], names[264], names[383]
        (1000, 'tench', 'Cardigan Welsh Corgi', 'ring-tailed lemur')
    """
    return list(readable_class_names())


def _imagenet_factory(spec: Spec, ctx: Any) -> Callable[[], Vocabulary]:
    spec.check_options(set())
    if spec.argument:
        raise SpecError(f"'imagenet' takes no argument, got '{spec}': write just imagenet")
    source = str(spec)

    def provide() -> Vocabulary:
        names = imagenet_classes()
        return Vocabulary.build(names, categories=dict.fromkeys(names, "object"), source=source)

    return provide


# ---------------------------------------------------------------------------------------
# words:N
# ---------------------------------------------------------------------------------------


def _parse_pos(value: str | None, spec: Spec) -> frozenset[str] | None:
    if value is None:
        return None
    names = [v.strip().lower() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in POS_TAGS]
    if unknown or not names:
        allowed = "noun, adjective, verb, adverb (comma-separated, e.g. pos=noun,adjective)"
        raise SpecError(f"Unknown part of speech {value!r} in '{spec}'. Allowed: {allowed}")
    return frozenset(POS_TAGS[n] for n in names)


def _pos_lookup() -> Callable[[str], Iterable[str]]:
    """Return ``word -> universal POS tags`` from lemminflect's packaged lexicon."""
    try:
        import lemminflect
    except ImportError as exc:
        raise MissingExtraError(
            "Filtering words by part of speech (?pos=) needs the package 'lemminflect', "
            "which ships an English lexicon with parts of speech. Install it with: "
            "pip install lemminflect"
        ) from exc

    def tags(word: str) -> Iterable[str]:
        # Dictionary lookup only (no guessing for unknown words): a word the lexicon does
        # not list as a noun is not kept as one. The lexicon is case-sensitive, so
        # lower-case proper names ("paris") have no entry and are dropped.
        return lemminflect.getAllLemmas(word).keys()

    return tags


def _is_content_word(word: str) -> bool:
    # Single letters, digits, punctuation, contractions with apostrophes and non-Latin
    # scripts are not concepts; neither are function words.
    return (
        len(word) > 1
        and _WORD.fullmatch(word) is not None
        and word not in FUNCTION_WORDS
        and _ROMAN.fullmatch(word) is None
    )


def most_frequent_words(
    n: int,
    pos: Iterable[str] | None = None,
    *,
    words: Iterable[str] | None = None,
) -> list[str]:
    """The ``n`` most frequent English content words, most frequent first.

    Tokens are taken in frequency order from ``wordfreq``'s English list and kept when they
    are made of at least two ASCII letters and are not function words (:data:`FUNCTION_WORDS`:
    articles, pronouns, prepositions, auxiliaries, number words...). With ``pos``, a word is
    also kept only if the lemminflect lexicon lists it with one of those parts of speech
    (a word with several, like "light", is kept by each of them). Reading continues until
    ``n`` words survive or the list ends.

    Args:
        n: How many words to return (fewer only if the whole list has fewer survivors).
        pos: Universal POS tags to keep (``"NOUN"``, ``"ADJ"``, ``"VERB"``, ``"ADV"``), or
            None for no part-of-speech filter.
        words: Candidate tokens in frequency order; default ``wordfreq.iter_wordlist("en")``.

    Returns:
        Up to ``n`` distinct lower-case words.

    Examples:
        >>> most_frequent_words(5)
        ['like', 'time', 'get', 'new', 'people']
        >>> most_frequent_words(5, pos={"NOUN"})
        ['time', 'people', 'now', 'good', 'first']
    """
    if words is None:
        try:
            import wordfreq
        except ImportError as exc:
            raise MissingExtraError(
                "The 'words' vocabulary needs the package 'wordfreq', which is not "
                "installed. Install it with: pip install wordfreq"
            ) from exc
        words = wordfreq.iter_wordlist("en")
    wanted = frozenset(pos) if pos is not None else None
    tags_of = _pos_lookup() if wanted else None
    out: list[str] = []
    seen: set[str] = set()
    for raw in words:
        word = raw.strip().lower()
        if word in seen or not _is_content_word(word):
            continue
        if tags_of is not None and wanted is not None and wanted.isdisjoint(tags_of(word)):
            continue
        seen.add(word)
        out.append(word)
        if len(out) >= n:
            break
    return out


def _words_factory(spec: Spec, ctx: Any) -> Callable[[], Vocabulary]:
    spec.check_options({"pos"})
    if spec.argument is None or spec.argument.strip() == "":
        n = DEFAULT_WORD_COUNT
    else:
        try:
            n = int(spec.argument.replace("_", ""))
        except ValueError:
            raise SpecError(
                f"'{spec}': the argument of words must be a count, e.g. words:20000"
            ) from None
    if n < 1:
        raise SpecError(f"'{spec}': the word count must be at least 1, e.g. words:20000")
    pos = _parse_pos(spec.option("pos"), spec)
    source = str(spec)

    def provide() -> Vocabulary:
        return Vocabulary.build(most_frequent_words(n, pos), source=source).require_nonempty()

    return provide


# ---------------------------------------------------------------------------------------
# file:PATH
# ---------------------------------------------------------------------------------------


#: Longest concept a vocabulary file may hold: a text encoder reads 77 tokens at most, and
#: a longer line is a sign of a wrong file (a CSV export, a binary) rather than a concept.
MAX_CONCEPT_CHARACTERS = 300


def _too_long(path: Path, number: int, text: str) -> str:
    return (
        f"{path}:{number}: a line of {len(text):,} characters ({shorten(repr(text), 60)}); "
        f"concepts are words or short phrases of at most {MAX_CONCEPT_CHARACTERS} "
        "characters: is this the right file?"
    )


def _rows(lines: Iterable[str], path: Path) -> Iterator[tuple[int, list[str]]]:
    for number, line in enumerate(lines, start=1):
        text = _COMMENT.sub("", line).strip()
        if not text:
            continue
        if len(text) > 2 * MAX_CONCEPT_CHARACTERS:
            raise NeurolabelError(_too_long(path, number, text))
        delimiter = "\t" if "\t" in text else ","
        try:
            row = next(csv.reader([text], delimiter=delimiter, skipinitialspace=True))
        except csv.Error as exc:
            raise NeurolabelError(
                f"{path}:{number}: cannot parse {shorten(repr(line.strip()))}: {exc}"
            ) from exc
        yield number, [cell.strip() for cell in row]


def read_concept_file(
    path: str | Path, default_category: str | None = None
) -> tuple[list[str], dict[str, str]]:
    """Read concepts, and optional categories, from a UTF-8 text file.

    One concept per line. Blank lines are ignored, and so is everything after a ``#`` that
    starts a line or follows a space. A line may carry a category tag after a tab or a comma
    (``sky<TAB>scene``, ``striped,texture``); quote a concept that itself contains a comma
    (``"tench, Tinca tinca",object``). A first row ``concept,category`` is taken as a header.

    Args:
        path: The file.
        default_category: Category of concepts whose line has none.

    Returns:
        ``(concepts, categories)``: the concepts as written, in file order, and a mapping
        concept -> category for those that have one.

    Examples:
        >>> import tempfile, os
        >>> f = os.path.join(tempfile.mkdtemp(), "c.txt")
        >>> _ = open(f, "w").write("# my concepts\\ndog\\nstriped\\ttexture\\n\\nred,color\\n")
        >>> read_concept_file(f)
        (['dog', 'striped', 'red'], {'striped': 'texture', 'red': 'color'})
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise SpecError(
            f"Vocabulary file {str(path)!r} does not exist (resolved to {path.resolve()}). "
            "Give a UTF-8 text file with one concept per line: file:PATH"
        )
    if not path.is_file():
        raise SpecError(f"Vocabulary path {str(path)!r} is not a file: give a text file")
    try:
        # utf-8-sig: spreadsheet programs often save CSV files with a byte-order mark.
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NeurolabelError(
            f"Vocabulary file {str(path)!r} is not valid UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from exc
    concepts: list[str] = []
    categories: dict[str, str] = {}
    first = True
    for number, row in _rows(text.splitlines(), path):
        if first and tuple(c.lower() for c in row) == _HEADER:
            first = False
            continue
        first = False
        if len(row) > 2:
            raise NeurolabelError(
                f"{path}:{number}: expected 'concept' or 'concept,category' but found "
                f"{len(row)} columns in {shorten(repr(row))}; quote a concept that contains a "
                "comma"
            )
        concept = row[0]
        if len(concept) > MAX_CONCEPT_CHARACTERS:
            raise NeurolabelError(_too_long(path, number, concept))
        category = row[1] if len(row) == 2 and row[1] else default_category
        if not concept:
            continue
        concepts.append(concept)
        if category:
            # First occurrence wins, matching Vocabulary.build's deduplication.
            categories.setdefault(concept, category.strip().lower())
    return concepts, categories


def _file_factory(spec: Spec, ctx: Any) -> Callable[[], Vocabulary]:
    spec.check_options({"category"})
    path = spec.require_argument("a path to a text file")
    default_category = spec.option("category")
    source = str(spec)

    def provide() -> Vocabulary:
        concepts, categories = read_concept_file(path, default_category)
        vocab = Vocabulary.build(concepts, categories=categories, source=source)
        return vocab.require_nonempty()

    return provide


# ---------------------------------------------------------------------------------------
# colors
# ---------------------------------------------------------------------------------------

_COLOR_SETS = ("basic", "css4", "xkcd")


def color_names(sets: Iterable[str] = ("basic",)) -> list[str]:
    """Color names: the 11 basic colors first, then matplotlib's named colors if asked.

    Matplotlib names are given as matplotlib spells them, minus the ``xkcd:`` prefix, so a
    color scorer finds the RGB value of a concept ``c`` in
    ``matplotlib.colors.CSS4_COLORS[c]`` or ``matplotlib.colors.XKCD_COLORS["xkcd:" + c]``.

    Args:
        sets: Any of ``"basic"``, ``"css4"`` (148 CSS names) and ``"xkcd"`` (949 names of
            the xkcd color survey). The basic colors are always included.

    Returns:
        Distinct color names, basic colors first.

    Examples:
        >>> color_names()[:4]
        ['black', 'blue', 'brown', 'gray']
        >>> "darkslategray" in color_names(["css4"])
        True
    """
    wanted = list(dict.fromkeys(sets))
    unknown = [s for s in wanted if s not in _COLOR_SETS]
    if unknown:
        raise SpecError(
            f"Unknown color set(s) {', '.join(unknown)}: choose from {', '.join(_COLOR_SETS)}"
        )
    names = list(BASIC_COLORS)
    if "css4" in wanted or "xkcd" in wanted:
        try:
            from matplotlib import colors as mcolors
        except ImportError as exc:
            raise missing_extra("matplotlib", "offline", "The css4/xkcd color sets") from exc
        if "css4" in wanted:
            names.extend(mcolors.CSS4_COLORS)
        if "xkcd" in wanted:
            names.extend(name.removeprefix("xkcd:") for name in mcolors.XKCD_COLORS)
    return list(dict.fromkeys(names))


def _colors_factory(spec: Spec, ctx: Any) -> Callable[[], Vocabulary]:
    spec.check_options({"set"})
    if spec.argument:
        raise SpecError(f"'colors' takes no argument, got '{spec}': write colors?set=css4")
    sets = [s.strip().lower() for s in (spec.option("set") or "basic").split(",") if s.strip()]
    if not sets:
        raise SpecError(f"'{spec}': set= needs a value: basic, css4 or xkcd")
    unknown = [s for s in sets if s not in _COLOR_SETS]
    if unknown:
        raise SpecError(
            f"Unknown color set(s) {', '.join(unknown)} in '{spec}'. "
            f"Allowed: {', '.join(_COLOR_SETS)} (comma-separated)"
        )
    source = str(spec)

    def provide() -> Vocabulary:
        names = color_names(sets)
        return Vocabulary.build(names, categories=dict.fromkeys(names, "color"), source=source)

    return provide


# ---------------------------------------------------------------------------------------
# plugin hook
# ---------------------------------------------------------------------------------------


@hookimpl
def register_vocabularies(register: Register[VocabularyProvider]) -> None:
    """Register ``imagenet``, ``words``, ``file`` and ``colors``."""
    register(
        "imagenet",
        _imagenet_factory,
        description="The 1000 ImageNet-1k class names (category 'object'): imagenet",
    )
    register(
        "words",
        _words_factory,
        description=(
            "The N most frequent English content words (wordfreq), optionally only nouns/"
            "adjectives/verbs: words:20000?pos=noun,adjective"
        ),
    )
    register(
        "file",
        _file_factory,
        description=(
            "One concept per line of a UTF-8 file, optional category after a tab or comma: "
            "file:concepts.txt?category=texture"
        ),
    )
    register(
        "colors",
        _colors_factory,
        description="The 11 basic color names, plus matplotlib's: colors?set=css4,xkcd",
    )
