"""A color scorer: how much of a patch is a named color, measured in CIELAB.

A patch's score for a color is the share of its pixels within ``delta_e`` (CIELAB ΔE) of
the color. Known names: Broden's 11 basic colors (each a set of prototypes spanning the
category), the CSS4 names and the XKCD color-survey names matplotlib ships
(``xkcd:sky blue`` is known as ``sky blue``). Anything else is not seeable: score 0.

Spec: ``color[:PALETTES][?delta_e=15&metric=cie76&size=64]``, PALETTES a comma list of
``basic``, ``css4``, ``xkcd`` (default: all three).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from neurolabel.plugin_core.data.vocabulary import Vocabulary, normalize_concept
from neurolabel.plugin_core.errors import MissingExtraError, SpecError, missing_extra
from neurolabel.plugin_core.plugins.context import ResolveContext
from neurolabel.plugin_core.plugins.contracts import ConceptScorer
from neurolabel.plugin_core.plugins.hookspecs import hookimpl
from neurolabel.plugin_core.plugins.registry import Register
from neurolabel.plugin_core.plugins.spec import Spec

from .vocabularies import BASIC_COLORS

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image
    from torch import Tensor

PALETTES = ("basic", "css4", "xkcd")
DEFAULT_DELTA_E = 15.0
DEFAULT_SIZE = 64
METRICS = ("cie76", "ciede2000")

# A basic term names a region, not a point: its prototypes are the XKCD survey's colors
# named with the term and a lightness/saturation modifier, plus the CSS4 color of that name.
_MODIFIERS = ("", "dark ", "light ", "bright ", "deep ", "medium ", "dull ")
# The survey has few achromatic modifiers, so gray/black/white get a lightness ramp instead
# (sRGB gray levels), keeping each basic term about as wide as the chromatic ones.
_ACHROMATIC = {
    "black": (0, 20, 35),
    "gray": (70, 90, 110, 128, 150, 170, 190),
    "white": (255, 240, 225),
}
_SYNONYMS = {"grey": "gray"}
#: Words that name nothing but a color. Without a category, a concept is claimed as a color
#: only when one of its words is here: many survey names are objects first ("orange",
#: "banana", "salmon", "grass", "wine", "gold"), and a vocabulary of object names must not
#: lose them to the color scorer. Tag a concept ``color`` to use any known name.
COLOR_WORDS = frozenset(
    """black blue brown gray grey green orange pink purple red white yellow crimson scarlet
    vermilion vermillion teal cyan magenta maroon beige turquoise violet indigo azure aqua
    aquamarine ochre ocher ocre khaki fuchsia mauve lilac taupe toupe sepia umber sienna siena
    chartreuse cerulean cobalt burgundy periwinkle perrywinkle puce ecru auburn carmine cerise
    celadon ultramarine viridian blurple burple reddish greenish bluish blueish yellowish
    pinkish purplish purpleish purply brownish greyish grayish orangish orangeish tealish
    orangey yellowy greeny pinky purpley bluey browny""".split()
)
_SEPARATORS = re.compile(r"[-/]")
#: Category tag (``Vocabulary.category``) of the concepts this scorer sees.
COLOR_CATEGORY = "color"


def color_key(concept: str) -> str:
    """The lookup form of a color name: normalized, hyphens and slashes as spaces.

    Args:
        concept: A concept such as ``"Blue-Green"`` or ``"xkcd:sky_blue"``.

    Returns:
        The key, e.g. ``"blue green"``, ``"sky blue"``.

    Examples:
        >>> color_key("xkcd:Blue/Green"), color_key("dark-red")
        ('blue green', 'dark red')
    """
    text = normalize_concept(concept)
    if text.startswith("xkcd:"):
        text = text[len("xkcd:") :]
    return normalize_concept(_SEPARATORS.sub(" ", text))


def compact_key(concept: str) -> str:
    """:func:`color_key` without spaces: CSS4 writes ``darkslategray``, prose ``dark slate gray``.

    Examples:
        >>> compact_key("Dark Slate-Gray")
        'darkslategray'
    """
    return color_key(concept).replace(" ", "")


def is_color_word(concept: str) -> bool:
    """Whether ``concept`` names a color by one of :data:`COLOR_WORDS`.

    True when one of its words is a color word, or when its run-together form ends with one
    (CSS4's ``skyblue``, ``orangered``; but not ``blueberry``).

    Examples:
        >>> is_color_word("Dark Slate Gray"), is_color_word("skyblue"), is_color_word("banana")
        (True, True, False)
        >>> is_color_word("blue/green"), is_color_word("blueberry")
        (True, False)
    """
    words = color_key(concept).split()
    compact = "".join(words)
    return any(w in COLOR_WORDS for w in words) or any(compact.endswith(w) for w in COLOR_WORDS)


def _matplotlib_colors() -> tuple[dict[str, str], dict[str, str]]:
    try:
        from matplotlib import colors
    except ImportError as exc:
        raise missing_extra("matplotlib", "offline", "The color scorer's color names") from exc
    css4 = {name: str(value) for name, value in colors.CSS4_COLORS.items()}
    return css4, {name: str(value) for name, value in colors.XKCD_COLORS.items()}


def _hex_to_rgb(value: str) -> tuple[int, int, int]:
    value = value.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


@lru_cache(maxsize=8)
def color_table(
    palettes: tuple[str, ...] = PALETTES,
) -> dict[str, tuple[tuple[int, int, int], ...]]:
    """Known color names and their sRGB prototypes.

    When palettes share a name, the first in :data:`PALETTES` order wins (basic, then CSS4,
    then XKCD). Look names up with :func:`compact_key` through :meth:`ColorScorer.lookup`
    so that ``dark slate gray`` finds CSS4's ``darkslategray``.

    Args:
        palettes: Any of ``basic``, ``css4``, ``xkcd``.

    Returns:
        ``{key: ((r, g, b), ...)}`` with keys as made by :func:`color_key`.

    Examples:
        >>> table = color_table(("basic",))
        >>> sorted(table)[:3], (255, 0, 0) in table["red"]
        (['black', 'blue', 'brown'], True)
    """
    unknown = sorted(set(palettes) - set(PALETTES))
    if unknown:
        raise SpecError(f"Unknown color palette(s) {', '.join(unknown)}; use {', '.join(PALETTES)}")
    css4, xkcd = _matplotlib_colors()
    xkcd_by_key = {color_key(name): _hex_to_rgb(value) for name, value in xkcd.items()}
    css4_by_key = {color_key(name): _hex_to_rgb(value) for name, value in css4.items()}
    table: dict[str, tuple[tuple[int, int, int], ...]] = {}
    for palette in PALETTES:
        if palette not in palettes:
            continue
        if palette == "basic":
            for term in BASIC_COLORS:
                table[term] = _basic_prototypes(term, css4_by_key, xkcd_by_key)
            for alias, term in _SYNONYMS.items():
                table[alias] = table[term]
        elif palette == "css4":
            for key, rgb in css4_by_key.items():
                table.setdefault(key, (rgb,))
        else:
            for key, rgb in xkcd_by_key.items():
                table.setdefault(key, (rgb,))
    return table


def _basic_prototypes(
    term: str, css4: dict[str, tuple[int, int, int]], xkcd: dict[str, tuple[int, int, int]]
) -> tuple[tuple[int, int, int], ...]:
    protos: list[tuple[int, int, int]] = []
    if term in _ACHROMATIC:
        protos += [(v, v, v) for v in _ACHROMATIC[term]]
    else:
        if term in css4:
            protos.append(css4[term])
        names = [term, *(["grey"] if term == "gray" else [])]
        for name in names:
            protos += [xkcd[m + name] for m in _MODIFIERS if m + name in xkcd]
    return tuple(dict.fromkeys(protos))


class ColorScorer:
    """A :class:`~neurolabel.plugin_core.plugins.contracts.ConceptScorer` for named colors.

    Score of a patch for a color = share of its pixels (after downsampling to at most
    ``size`` x ``size``) whose CIELAB distance to the nearest of the color's prototypes is at
    most ``delta_e``. Scores are in [0, 1]; a half red, half blue patch scores about 0.5 for
    both. Concepts that are not known color names score 0 (see :meth:`can_score`).

    Args:
        name: Spec it was built from.
        palettes: Which name lists to know (``basic``, ``css4``, ``xkcd``).
        delta_e: Radius of a color in ΔE units. The default 15 names 84 % of natural-photo
            pixels with at least one basic color and leaves 14 % with two or more (20: 95 %
            and 40 %, mostly gray/brown/black overlaps); pure red stays far from orange
            (ΔE ≈ 60).
        metric: ``cie76`` (Euclidean Lab, fast) or ``ciede2000`` (perceptually uniform, slower).
        size: Patches are downsampled to at most ``size`` x ``size`` pixels.

    Examples:
        >>> from PIL import Image
        >>> scorer = ColorScorer()
        >>> vocab = Vocabulary.build(["red", "blue", "dog"])
        >>> scorer.score_images([Image.new("RGB", (32, 32), (255, 0, 0))], vocab)
        tensor([[1., 0., 0.]])
    """

    def __init__(
        self,
        name: str = "color",
        *,
        palettes: Iterable[str] = PALETTES,
        delta_e: float = DEFAULT_DELTA_E,
        metric: str = "cie76",
        size: int = DEFAULT_SIZE,
    ) -> None:
        if not delta_e > 0:
            raise SpecError(f"{name}: delta_e must be positive, got {delta_e}")
        if metric not in METRICS:
            raise SpecError(f"{name}: metric must be one of {', '.join(METRICS)}, got {metric!r}")
        if size < 1:
            raise SpecError(f"{name}: size must be at least 1, got {size}")
        self.name = name
        self.palettes = tuple(p for p in PALETTES if p in set(palettes))
        self.table = color_table(self.palettes)
        # Several spellings share one compact key; the table's own key (highest-priority
        # palette first, as color_table inserted them) wins.
        self._index: dict[str, str] = {}
        for key in self.table:
            self._index.setdefault(compact_key(key), key)
        self.delta_e = float(delta_e)
        self.metric = metric
        self.size = size
        self._plans: dict[tuple[object, ...], tuple[Tensor, Tensor, Tensor, int]] = {}

    def known_colors(self) -> list[str]:
        """Every color name this scorer knows, sorted."""
        return sorted(self.table)

    def lookup(self, concept: str) -> str | None:
        """The known color name ``concept`` spells, or None.

        Examples:
            >>> ColorScorer().lookup("Dark-Slate Gray"), ColorScorer().lookup("dog")
            ('darkslategray', None)
        """
        return self._index.get(compact_key(concept))

    def can_score(self, concept: str, category: str | None = None) -> bool:
        """Whether ``concept`` is a color this scorer knows.

        A concept tagged ``color`` is seeable when it is a known name; an untagged one must
        also pass :func:`is_color_word` (``orange`` yes, ``salmon`` only when tagged
        ``color``); a concept tagged otherwise (``orange`` the fruit, ``object``) is not.

        Args:
            concept: A concept text.
            category: Its vocabulary category, if any.

        Returns:
            True when the scorer gives it meaningful scores.

        Examples:
            >>> s = ColorScorer()
            >>> s.can_score("sky blue"), s.can_score("dog"), s.can_score("orange", "object")
            (True, False, False)
            >>> s.can_score("salmon"), s.can_score("salmon", "color")
            (False, True)
        """
        if category is not None and category != COLOR_CATEGORY:
            return False
        if category is None and not is_color_word(concept):
            return False
        return self.lookup(concept) is not None

    def _plan(self, vocabulary: Vocabulary) -> tuple[Tensor, Tensor, Tensor, int]:
        import numpy as np
        import torch

        # Prototypes of every scoreable concept, in Lab, with the column each belongs to.
        key = (vocabulary.concepts, tuple(sorted(vocabulary.categories.items())))
        if key not in self._plans:
            protos: list[tuple[int, int, int]] = []
            owner: list[int] = []
            columns: list[int] = []
            for column, concept in enumerate(vocabulary.concepts):
                if not self.can_score(concept, vocabulary.category(concept)):
                    continue
                slot = len(columns)
                columns.append(column)
                for rgb in self.table[self.lookup(concept) or ""]:
                    protos.append(rgb)
                    owner.append(slot)
            lab = (
                _rgb_to_lab(np.asarray(protos, dtype=np.float64) / 255.0)
                if protos
                else torch.zeros(0, 3)
            )
            self._plans = {key: (lab, torch.tensor(owner), torch.tensor(columns), len(columns))}
        return self._plans[key]

    def _pixels_lab(self, image: Image.Image) -> Tensor:
        import numpy as np
        from PIL import Image

        image = image.convert("RGB") if image.mode != "RGB" else image
        if image.width > self.size or image.height > self.size:
            # BOX averages whole source pixels: it blends only neighbours, so shares survive.
            image = image.resize(
                (min(image.width, self.size), min(image.height, self.size)),
                Image.Resampling.BOX,
            )
        rgb = np.asarray(image, dtype=np.float64).reshape(-1, 3) / 255.0
        return _rgb_to_lab(rgb)

    def score_images(self, images: Sequence[Image.Image], vocabulary: Vocabulary) -> Tensor:
        """Share of each image's pixels near each color of the vocabulary.

        Args:
            images: RGB PIL images (patches).
            vocabulary: Concepts; non-colors get 0.

        Returns:
            ``[N, V]`` float32 scores in [0, 1].
        """
        import torch

        out = torch.zeros(len(images), len(vocabulary), dtype=torch.float32)
        protos, owner, columns, n_colors = self._plan(vocabulary)
        if n_colors == 0 or not images:
            return out
        # Fixed chunk of pixels x prototypes keeps memory flat whatever the vocabulary size.
        per_chunk = max(1, 4_000_000 // max(1, protos.shape[0] * self.size * self.size))
        for start in range(0, len(images), per_chunk):
            chunk = images[start : start + per_chunk]
            pixels = [self._pixels_lab(image) for image in chunk]
            counts = torch.tensor([p.shape[0] for p in pixels])
            distance = self._distance(torch.cat(pixels), protos)  # [pixels, prototypes]
            nearest = torch.full((distance.shape[0], n_colors), float("inf"), dtype=torch.float32)
            nearest.scatter_reduce_(1, owner.expand_as(distance), distance, reduce="amin")
            inside = (nearest <= self.delta_e).float()
            image_index = torch.repeat_interleave(torch.arange(len(chunk)), counts)
            sums = torch.zeros(len(chunk), n_colors).index_add_(0, image_index, inside)
            out[start : start + len(chunk), columns] = sums / counts.clamp_min(1)[:, None]
        return out

    def _distance(self, pixels: Tensor, protos: Tensor) -> Tensor:
        import torch

        if self.metric == "cie76":
            return torch.cdist(pixels, protos)
        import numpy as np
        from skimage.color import deltaE_ciede2000

        return torch.from_numpy(
            deltaE_ciede2000(pixels.numpy()[:, None, :], protos.numpy()[None, :, :]).astype(
                np.float32
            )
        )

    def __repr__(self) -> str:
        return f"ColorScorer({self.name!r}, delta_e={self.delta_e}, metric={self.metric!r})"


def _rgb_to_lab(rgb: np.ndarray) -> Tensor:
    import numpy as np
    import torch

    try:
        from skimage.color import rgb2lab
    except ImportError as exc:  # scikit-image is a core dependency; this is a broken install
        raise MissingExtraError(
            "The color scorer needs scikit-image: pip install scikit-image"
        ) from exc
    lab = rgb2lab(rgb.reshape(-1, 1, 3)).reshape(-1, 3)
    return torch.from_numpy(lab.astype(np.float32))


def build_color_scorer(spec: Spec, ctx: ResolveContext | None = None) -> ColorScorer:
    """Factory for ``color[:PALETTES][?delta_e=15&metric=cie76&size=64]``.

    Args:
        spec: Parsed spec; the argument is a comma list of palettes (``basic``, ``css4``,
            ``xkcd``), default all.
        ctx: Unused (the scorer needs no model).

    Returns:
        The scorer.

    Examples:
        >>> build_color_scorer(Spec.parse("color:basic?delta_e=15"))
        ColorScorer('color:basic?delta_e=15', delta_e=15.0, metric='cie76')
    """
    spec.check_options({"delta_e", "metric", "size"})
    palettes = [p.strip() for p in (spec.argument or ",".join(PALETTES)).split(",") if p.strip()]
    unknown = sorted(set(palettes) - set(PALETTES))
    if unknown or not palettes:
        raise SpecError(
            f"'{spec}': unknown palette(s) {', '.join(unknown) or '(none)'}; "
            f"write color:{','.join(PALETTES)} or a subset"
        )
    return ColorScorer(
        str(spec),
        palettes=palettes,
        delta_e=spec.option_float("delta_e", DEFAULT_DELTA_E) or 0.0,
        metric=spec.option("metric", "cie76") or "cie76",
        size=spec.option_int("size", DEFAULT_SIZE) or 0,
    )


@hookimpl
def register_scorers(register: Register[ConceptScorer]) -> None:
    """Register the ``color`` scorer."""
    register(
        "color",
        build_color_scorer,
        description=(
            "Share of a patch's pixels near a named color in CIELAB "
            "(11 basic colors, CSS4 and XKCD names; other concepts score 0)"
        ),
    )
