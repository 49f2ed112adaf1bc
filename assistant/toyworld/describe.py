"""Captions and detailed descriptions written from a scene's ground truth.

`describe` is deterministic (one canonical description per scene, the CHAIR reference);
`caption` varies its phrasing with the given random stream.
"""

from __future__ import annotations

import random
from collections import Counter

from . import relations as rel
from .scene import Scene
from .templates import phrase
from .vocab import article, count_phrase, number_word

_BG_WORDS = {"plain": "plain light", "gradient": "light gradient", "noise": "speckled light"}
_TEXT_SENTENCE = {
    "sign": 'A sign {where} says "{text}".',
    "price": 'A price of "{text}" is shown {where}.',
    "number": 'The number "{text}" is written {where}.',
    "word": 'The word "{text}" is written {where}.',
}


def background_words(scene: Scene) -> str:
    return _BG_WORDS.get(scene.background.kind, "light")


def join_words(parts: list[str]) -> str:
    """`["a", "b", "c"]` -> `"a, b and c"`."""
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def object_summary(scene: Scene) -> str:
    """`"two red circles and a blue square"`, most frequent group first."""
    groups = Counter((o.color, o.shape) for o in scene.objects)
    ordered = sorted(groups.items(), key=lambda kv: (-kv[1], kv[0]))
    return join_words([count_phrase(n, c, s) for (c, s), n in ordered])


def caption(scene: Scene, rng: random.Random) -> str:
    """A short, varied caption (stage 1 pretraining)."""
    bg = background_words(scene)
    if not scene.objects:
        text = phrase(rng, "caption_empty", bg=bg)
    else:
        text = phrase(rng, "caption", objs=object_summary(scene), bg=bg)
    if scene.texts:
        words = " ".join(t.text for t in rel.reading_order(scene.texts))
        text = text.rstrip(".") + f', with the text "{words}".'
    return text


def describe(scene: Scene) -> str:
    """The canonical detailed description: objects with size, colour and place, two relations, text."""
    bg = background_words(scene)
    n = len(scene.objects)
    if n == 0:
        sentences = [f"The image shows a {bg} background with no objects."]
    else:
        noun = "object" if n == 1 else "objects"
        sentences = [f"The image shows {number_word(n)} {noun} on a {bg} background."]
    ordered = sorted(scene.objects, key=lambda o: (rel.REGION_ORDER[rel.region(scene, o)], o.box[0]))
    for o in ordered:
        words = f"{o.size} {o.color} {o.shape}"
        sentences.append(f"There is {article(words)} {words} {rel.where(rel.region(scene, o))}.")
    named = [(o, name) for o in ordered if (name := rel.unique_name(scene, o))]
    said = 0
    for i, (a, na) in enumerate(named):
        for b, nb in named[i + 1 :]:
            holds = rel.relation(a, b)
            if holds and said < 2:
                sentences.append(f"The {na} is {rel.RELATION_PHRASES[holds[0]]} the {nb}.")
                said += 1
    for t in rel.reading_order(scene.texts):
        template = _TEXT_SENTENCE.get(t.kind, _TEXT_SENTENCE["word"])
        sentences.append(template.format(text=t.text, where=rel.where(rel.region(scene, t))))
    return " ".join(sentences)
