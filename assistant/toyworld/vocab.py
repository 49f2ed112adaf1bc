"""The toy world's vocabulary: shapes, colours, sizes, their words, and the printed words.

Everything here is constant data; the CHAIR helpers map free text back onto canonical shapes.
"""

from __future__ import annotations

import re

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon", "cross", "heart")

# Chosen far apart in RGB and hue, and all saturated, so none can be taken for a (light, greyish)
# background, for clutter (grey) or for text (near-black).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 35, 35),
    "orange": (245, 140, 20),
    "yellow": (240, 205, 20),
    "green": (40, 160, 60),
    "blue": (35, 80, 220),
    "purple": (135, 55, 190),
    "pink": (245, 120, 190),
    "brown": (125, 75, 35),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)

SIZES: tuple[str, ...] = ("small", "medium", "large")

PLURALS: dict[str, str] = {
    "circle": "circles",
    "square": "squares",
    "triangle": "triangles",
    "star": "stars",
    "diamond": "diamonds",
    "hexagon": "hexagons",
    "cross": "crosses",
    "heart": "hearts",
}

# Words (singular and plural) a description may use for each shape. No word belongs to two shapes.
SHAPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "circle": ("circle", "circles", "disc", "discs", "disk", "disks", "ball", "balls", "oval", "ovals"),
    "square": ("square", "squares", "box", "boxes", "block", "blocks", "rectangle", "rectangles"),
    "triangle": ("triangle", "triangles", "pyramid", "pyramids", "wedge", "wedges"),
    "star": ("star", "stars", "pentagram", "pentagrams"),
    "diamond": ("diamond", "diamonds", "rhombus", "rhombuses", "rhombi", "lozenge", "lozenges"),
    "hexagon": ("hexagon", "hexagons", "hex", "hexes"),
    "cross": ("cross", "crosses", "plus sign", "plus signs"),
    "heart": ("heart", "hearts"),
}

NUMBER_WORDS: tuple[str, ...] = (
    "no",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)

# Printed text: signs, words, numbers and prices.
SIGNS: tuple[str, ...] = (
    "STOP",
    "OPEN",
    "EXIT",
    "SALE",
    "CLOSED",
    "PUSH",
    "PULL",
    "ENTER",
    "WAIT",
    "SLOW",
    "DANGER",
    "PARKING",
    "NO ENTRY",
    "TAXI",
    "HOTEL",
    "WC",
)
WORDS: tuple[str, ...] = (
    "cafe",
    "book",
    "milk",
    "bread",
    "river",
    "garden",
    "music",
    "apple",
    "lemon",
    "train",
    "paper",
    "window",
    "summer",
    "pencil",
    "tiger",
    "cloud",
    "market",
    "island",
    "rocket",
    "puzzle",
    "Monday",
    "Friday",
    "North",
    "Station",
    "Library",
    "Bakery",
)
PRICES: tuple[str, ...] = (
    "$0.99",
    "$1.25",
    "$2.00",
    "$3.50",
    "$4.75",
    "$5.99",
    "$7.20",
    "$9.95",
    "$12.00",
    "$15.49",
    "$19.99",
    "$24.50",
    "$49.00",
    "$99.99",
)
NUMBERS: tuple[str, ...] = ("7", "12", "21", "42", "68", "105", "250", "404", "777", "1024", "2024", "31415")
TEXT_KINDS: dict[str, tuple[str, ...]] = {"sign": SIGNS, "word": WORDS, "price": PRICES, "number": NUMBERS}
SHORT_TEXTS: tuple[str, ...] = tuple(t for t in SIGNS + NUMBERS[:6] if len(t) <= 4)

# Dark inks for text, so that printed text is legible on the light backgrounds.
TEXT_COLORS: tuple[tuple[int, int, int], ...] = ((15, 15, 15), (40, 40, 45), (20, 30, 80), (70, 20, 20))


def plural(shape: str) -> str:
    """`"cross"` -> `"crosses"`."""
    return PLURALS[shape]


def count_phrase(n: int, color: str | None, shape: str | None) -> str:
    """`(2, "red", "circle")` -> `"two red circles"`; `(1, None, "star")` -> `"a star"`."""
    noun = shape if shape is not None else "object"
    if n != 1:
        noun = plural(noun) if shape is not None else "objects"
    words = [w for w in (color, noun) if w]
    head = article(words[0]) if n == 1 else number_word(n)
    return " ".join([head, *words])


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def number_word(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def _synonym_table() -> dict[str, str]:
    return {word: shape for shape, words in SHAPE_SYNONYMS.items() for word in words}


def chair_words(text: str) -> list[tuple[str, str]]:
    """Shape words a free-text description mentions, as (word, canonical shape), in order.

    Two-word synonyms ("plus sign") are matched before single words; matching is on whole words,
    case-insensitive, so "boxes" -> square but "boxer" matches nothing.
    """
    table = _synonym_table()
    tokens = re.findall(r"[a-z]+", text.lower())
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        pair = " ".join(tokens[i : i + 2])
        if i + 1 < len(tokens) and pair in table:
            found.append((pair, table[pair]))
            i += 2
            continue
        if tokens[i] in table:
            found.append((tokens[i], table[tokens[i]]))
        i += 1
    return found


def canonical_shapes(text: str) -> set[str]:
    """The set of canonical shapes a description mentions (CHAIR's mentioned-object set)."""
    return {shape for _, shape in chair_words(text)}
