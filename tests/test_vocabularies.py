"""Built-in vocabularies: imagenet, words:N, file:PATH, colors."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurolabel.backends import vocabularies as vocab_module
from neurolabel.backends.vocabularies import (
    BASIC_COLORS,
    FUNCTION_WORDS,
    imagenet_classes,
    most_frequent_words,
    read_concept_file,
)
from neurolabel.plugin_core.data.vocabulary import Vocabulary
from neurolabel.plugin_core.errors import EmptyInputError, NeurolabelError, SpecError


def resolve(ctx, text: str) -> Vocabulary:
    provider = ctx.registries.vocabularies.resolve(text, ctx)
    return provider()


def test_all_registered(ctx):
    names = ctx.registries.vocabularies.names()
    for name in ("imagenet", "words", "file", "colors"):
        assert name in names
        entry = ctx.registries.vocabularies.get(name)
        assert entry.description
        assert entry.plugin == "neurolabel.backends.vocabularies"


# -- imagenet ---------------------------------------------------------------------------


def test_imagenet_has_1000_concepts_in_class_order(ctx):
    vocab = resolve(ctx, "imagenet")
    # Readable names: two pairs of classes share one ("missile", "sunglasses").
    assert len(vocab) == 998
    assert vocab.concepts[:2] == ("tench", "goldfish")
    assert vocab.concepts[-1] == "toilet paper"
    # The corgi and the sweater stay apart; the lemur is not "madagascar cat".
    assert {"cardigan welsh corgi", "cardigan", "ring-tailed lemur"} <= set(vocab.concepts)
    assert "madagascar cat" not in vocab.concepts
    assert set(vocab.categories.values()) == {"object"}
    assert len(vocab.categories) == 998
    assert vocab.source == "imagenet"


def test_imagenet_names_are_readable_and_keep_every_other_name():
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    from neurolabel.plugin_core.data.imagenet import class_synonyms, is_imagenet_1k

    names = imagenet_classes()
    assert len(names) == 1000 and names[383] == "ring-tailed lemur"
    assert names[282] == "tiger cat" and names[285] == "Egyptian Mau"
    synonyms = class_synonyms()
    for index, theirs in enumerate(_IMAGENET_CATEGORIES):  # torchvision's name is kept...
        assert synonyms[index][0] == names[index]
        # ...unless it names another class too (the corgi's "Cardigan", the machine's "crane")
        kept = theirs.lower() in {s.lower() for s in synonyms[index]}
        assert kept or index in (264, 358, 517, 638, 876), (index, theirs)
    assert "Lemur catta" in synonyms[383]
    assert is_imagenet_1k(names) and is_imagenet_1k(list(_IMAGENET_CATEGORIES))


def test_imagenet_rejects_argument_and_options(ctx):
    with pytest.raises(SpecError, match="takes no argument"):
        resolve(ctx, "imagenet:x")
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, "imagenet?foo=1")


# -- words:N ----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 37, 500])
def test_words_returns_exactly_n(ctx, n):
    vocab = resolve(ctx, f"words:{n}")
    assert len(vocab) == n
    assert vocab.source == f"words:{n}"


def test_words_are_filtered_content_words_in_frequency_order(ctx):
    import wordfreq

    vocab = resolve(ctx, "words:300")
    for word in vocab.concepts:
        assert word.isascii() and word.isalpha(), word
        assert len(word) > 1
        assert word not in FUNCTION_WORDS
    # Frequency order is kept: the survivors are a subsequence of wordfreq's list.
    ranks = {w: i for i, w in enumerate(wordfreq.top_n_list("en", 5000))}
    positions = [ranks[w] for w in vocab.concepts]
    assert positions == sorted(positions)
    for dropped in ("the", "and", "of", "you", "1", "2020", "s", "don't", "three"):
        assert dropped not in vocab.concepts


def test_words_filter_unit():
    raw = ["the", "Dog", "x", "42", "dog", "don't", "café", "two", "red", "rouge-gorge", "sky"]
    raw += ["ll", "www", "de", "xiv", "ii", "uh"]
    assert most_frequent_words(10, words=raw) == ["dog", "red", "sky"]
    assert most_frequent_words(2, words=raw) == ["dog", "red"]


def test_words_without_count_gives_the_default(ctx):
    assert vocab_module.DEFAULT_WORD_COUNT == 20000
    assert len(resolve(ctx, "words")) == 20000


def test_words_pos_filters(ctx):
    nouns = resolve(ctx, "words:200?pos=noun")
    adjectives = resolve(ctx, "words:200?pos=adjective")
    both = resolve(ctx, "words:200?pos=noun,adjective")
    assert len(nouns) == len(adjectives) == len(both) == 200
    # Words with no noun reading in the lexicon never appear as nouns.
    for word in ("new", "different", "important", "said", "really"):
        assert word not in nouns.concepts
    for word in ("time", "people", "house", "water"):
        assert word in resolve(ctx, "words:1000?pos=noun").concepts
    for word in ("new", "different", "important"):
        assert word in adjectives.concepts
    for word in ("people", "year", "money"):
        assert word not in adjectives.concepts
    # The union keeps each word that is a noun or an adjective, in frequency order.
    assert set(nouns.concepts[:50]) <= set(both.concepts)
    assert set(adjectives.concepts[:50]) <= set(both.concepts)


def test_words_pos_drops_lowercased_proper_names():
    assert most_frequent_words(5, {"NOUN"}, words=["paris", "john", "dog"]) == ["dog"]


def test_words_bad_specs(ctx):
    with pytest.raises(SpecError, match="must be a count"):
        resolve(ctx, "words:lots")
    with pytest.raises(SpecError, match="at least 1"):
        resolve(ctx, "words:0")
    with pytest.raises(SpecError, match="Unknown part of speech"):
        resolve(ctx, "words:10?pos=pronoun")
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, "words:10?lang=fr")


# -- file:PATH --------------------------------------------------------------------------


def test_file_parsing(ctx, tmp_path: Path):
    path = tmp_path / "concepts.txt"
    path.write_text(
        "# my concepts\n"
        "Dog\n"
        "\n"
        "   \n"
        "striped\ttexture\n"
        "red,color\n"
        "dog   # duplicate, dropped\n"
        "Tabby_Cat\n"
        '"tench, Tinca tinca",Object\n'
        "sky  ,  scene\n",
        encoding="utf-8",
    )
    vocab = resolve(ctx, f"file:{path}")
    assert vocab.concepts == ("dog", "striped", "red", "tabby cat", "tench, tinca tinca", "sky")
    assert vocab.category("striped") == "texture"
    assert vocab.category("red") == "color"
    assert vocab.category("tench, tinca tinca") == "object"
    assert vocab.category("sky") == "scene"
    assert vocab.category("dog") is None


def test_file_header_bom_and_default_category(ctx, tmp_path: Path):
    path = tmp_path / "concepts.csv"
    path.write_bytes("\ufeffconcept,category\nfur,\nsky,scene\n".encode())
    vocab = resolve(ctx, f"file:{path}?category=texture")
    assert vocab.concepts == ("fur", "sky")
    assert vocab.category("fur") == "texture"
    assert vocab.category("sky") == "scene"


def test_read_concept_file_returns_raw_concepts(tmp_path: Path):
    path = tmp_path / "c.txt"
    path.write_text("a b\n#x\nc\td\n", encoding="utf-8")
    assert read_concept_file(path) == (["a b", "c"], {"c": "d"})


def test_file_missing(ctx, tmp_path: Path):
    with pytest.raises(SpecError, match="does not exist"):
        resolve(ctx, f"file:{tmp_path / 'nope.txt'}")
    with pytest.raises(SpecError, match="not a file"):
        resolve(ctx, f"file:{tmp_path}")
    with pytest.raises(SpecError, match="needs a path"):
        resolve(ctx, "file")


def test_file_empty(ctx, tmp_path: Path):
    path = tmp_path / "empty.txt"
    path.write_text("# only comments\n\n   \n", encoding="utf-8")
    with pytest.raises(EmptyInputError, match="no concepts"):
        resolve(ctx, f"file:{path}")


def test_file_errors_name_the_line(ctx, tmp_path: Path):
    path = tmp_path / "bad.txt"
    path.write_text("dog\na,b,c\n", encoding="utf-8")
    with pytest.raises(NeurolabelError, match=r"bad.txt:2: .*3 columns"):
        resolve(ctx, f"file:{path}")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(NeurolabelError, match="not valid UTF-8"):
        resolve(ctx, f"file:{latin}")


def test_file_is_read_when_provided_not_when_resolved(ctx, tmp_path: Path):
    path = tmp_path / "later.txt"
    provider = ctx.registries.vocabularies.resolve(f"file:{path}", ctx)
    path.write_text("sun\n", encoding="utf-8")
    assert provider().concepts == ("sun",)


# -- colors -----------------------------------------------------------------------------


def test_colors_basic(ctx):
    vocab = resolve(ctx, "colors")
    assert vocab.concepts == BASIC_COLORS
    assert len(vocab) == 11
    assert all(vocab.category(c) == "color" for c in vocab.concepts)


def test_colors_css4_and_xkcd(ctx):
    from matplotlib import colors as mcolors

    css4 = resolve(ctx, "colors?set=css4")
    assert css4.concepts[:11] == BASIC_COLORS
    assert set(css4.concepts) == set(BASIC_COLORS) | set(mcolors.CSS4_COLORS)
    assert css4.category("darkslategray") == "color"

    xkcd = resolve(ctx, "colors?set=xkcd")
    assert "cloudy blue" in xkcd.concepts
    assert not any(c.startswith("xkcd:") for c in xkcd.concepts)
    # Each name maps back to matplotlib's table, which a color scorer relies on.
    for concept in xkcd.concepts[11:]:
        assert "xkcd:" + concept in mcolors.XKCD_COLORS

    both = resolve(ctx, "colors?set=basic,css4,xkcd")
    assert len(both) == len(set(css4.concepts) | set(xkcd.concepts))


def test_colors_bad_set(ctx):
    with pytest.raises(SpecError, match="Unknown color set"):
        resolve(ctx, "colors?set=pantone")
    with pytest.raises(SpecError, match="Unknown option"):
        resolve(ctx, "colors?sets=css4")
