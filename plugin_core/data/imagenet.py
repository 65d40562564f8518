"""ImageNet-1k class names as people read them, and every name each class goes by.

A classifier's output units are often named by the first WordNet lemma of their synset,
which can mislead: class 383 is "Madagascar cat", a ring-tailed lemur. Labels and reports
use :func:`readable_class_names` (the curated names open_clip ships for zero-shot
ImageNet, e.g. "ring-tailed lemur"); :func:`class_synonyms` adds every WordNet lemma of the
class (as timm ships them) and torchvision's name, so a check of labels against classes
accepts any of them.

The lists are read from the installed packages' data files, without importing the
packages (so without torch); the functions cache their answer.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from ..errors import MissingExtraError

NUM_CLASSES = 1000


@functools.cache
def readable_class_names() -> tuple[str, ...]:
    """The 1000 class names, in class-index order, as people read them.

    Returns:
        open_clip's curated names (``open_clip/zero_shot_metadata.py``). Two pairs of
        classes share a name there ("missile", "sunglasses"), as they share a meaning.

    Examples:
        >>> names = readable_class_names()
        >>> len(names), names[0], names[383], names[264], names[474]
        (1000, 'tench', 'ring-tailed lemur', 'Cardigan Welsh Corgi', 'cardigan')
    """
    names = _literal("open_clip", "zero_shot_metadata.py", "IMAGENET_CLASSNAMES")
    return tuple(str(name) for name in names)


@functools.cache
def wordnet_class_names() -> tuple[str, ...]:
    """torchvision's names: the first WordNet lemma of each class (``"Madagascar cat"``).

    Examples:
        >>> wordnet_class_names()[383]
        'Madagascar cat'
    """
    names = _literal("torchvision", "models/_meta.py", "_IMAGENET_CATEGORIES")
    return tuple(str(name) for name in names)


@functools.cache
def class_synonyms() -> tuple[tuple[str, ...], ...]:
    """Every name of each class: the readable one first, then torchvision's and the WordNet
    lemmas, without repeats (case-insensitive).

    A lemma that names another class too is left out, so that no name counts for two
    classes: "Cardigan" (the corgi's lemma) is the sweater's name, "crane" is both the bird's
    and the machine's.

    Examples:
        >>> class_synonyms()[383]
        ('ring-tailed lemur', 'Madagascar cat', 'Lemur catta')
        >>> class_synonyms()[264], class_synonyms()[517]
        (('Cardigan Welsh Corgi',), ('construction crane',))
    """
    readable = readable_class_names()
    names = _every_name()
    owners: dict[str, set[int]] = {}
    for index, candidates in enumerate(names):
        for name in candidates:
            owners.setdefault(name.lower(), set()).add(index)
    out = []
    for index, candidates in enumerate(names):
        seen: dict[str, str] = {readable[index].lower(): readable[index]}
        for name in candidates[1:]:
            if owners[name.lower()] == {index}:
                seen.setdefault(name.lower(), name)
        out.append(tuple(seen.values()))
    return tuple(out)


def is_imagenet_1k(names: list[str] | tuple[str, ...] | None) -> bool:
    """Whether ``names`` are ImageNet-1k's classes (any of the spellings above), in order.

    Examples:
        >>> is_imagenet_1k(list(wordnet_class_names())), is_imagenet_1k(["cat", "dog"])
        (True, False)
    """
    if not names or len(names) != NUM_CLASSES:
        return False
    every = _every_name()
    return all(name.lower() in {s.lower() for s in every[i]} for i, name in enumerate(names))


def readable_if_imagenet(names: list[str] | None) -> list[str] | None:
    """``names`` as :func:`readable_class_names` when they are ImageNet-1k's, else unchanged.

    Examples:
        >>> readable_if_imagenet(list(wordnet_class_names()))[383]
        'ring-tailed lemur'
        >>> readable_if_imagenet(["cat", "dog"])
        ['cat', 'dog']
    """
    return list(readable_class_names()) if is_imagenet_1k(names) else names


@functools.cache
def _every_name() -> tuple[tuple[str, ...], ...]:
    """Per class: its readable name, torchvision's, and every WordNet lemma (may repeat)."""
    lemmas = _wordnet_lemmas()
    readable = readable_class_names()
    return tuple((readable[i], first, *lemmas[i]) for i, first in enumerate(wordnet_class_names()))


def _wordnet_lemmas() -> list[tuple[str, ...]]:
    """Per class, the lemmas of its WordNet synset (timm's ``imagenet_synset_to_lemma``)."""
    folder = _package_folder("timm") / "data" / "_info"
    synsets = (folder / "imagenet_synsets.txt").read_text(encoding="utf-8").split()
    lemmas: dict[str, tuple[str, ...]] = {}
    with (folder / "imagenet_synset_to_lemma.txt").open(encoding="utf-8") as handle:
        for line in handle:
            wnid, _, text = line.rstrip("\n").partition("\t")
            lemmas[wnid] = tuple(part.strip() for part in text.split(",") if part.strip())
    if len(synsets) != NUM_CLASSES:
        raise MissingExtraError(f"timm's ImageNet synset list has {len(synsets)} entries")
    return [lemmas.get(wnid, ()) for wnid in synsets]


def _package_folder(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            f"The ImageNet class names are read from the package '{package}', which is not "
            f"installed. Install it with: pip install {package.replace('_', '-')}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _literal(package: str, relative: str, name: str) -> list[str]:
    """The literal list or tuple assigned to ``name`` in a package's source file."""
    path = _package_folder(package) / relative
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            values = ast.literal_eval(value)
            if len(values) == NUM_CLASSES:
                return list(values)
    raise MissingExtraError(f"{path} no longer defines {name} with {NUM_CLASSES} class names")
