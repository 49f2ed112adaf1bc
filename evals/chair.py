"""CHAIR (Rohrbach et al. 2018): how many of the objects a description mentions are not in the image.

    CHAIR_i = hallucinated object mentions / all object mentions
    CHAIR_s = descriptions with at least one hallucinated mention / all descriptions

Convention: like the original `chair.py`, every mention counts (a description that says "a cat ...
the cat" mentions cat twice), so CHAIR_i is per mention, not per distinct object; some later
re-implementations deduplicate per description, which gives a lower CHAIR_i when a hallucinated
object is repeated. `ChairScores.chair_i_unique` reports that variant too. Coverage (the share
of ground-truth objects mentioned) is reported beside it, since an empty description has CHAIR 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from assistant.toyworld import chair_words
from assistant.toyworld.relations import sentences

from .vocab_coco import coco_chair_words

WordFinder = Callable[[str], list[tuple[str, str]]]
VOCABULARIES: dict[str, WordFinder] = {"toyworld": chair_words, "coco": coco_chair_words}


def get_vocabulary(name: str) -> WordFinder:
    if name not in VOCABULARIES:
        raise ValueError(f"unknown CHAIR vocabulary {name!r}; choose from {sorted(VOCABULARIES)}")
    return VOCABULARIES[name]


@dataclass(frozen=True)
class ChairScores:
    n: int
    chair_s: float
    chair_i: float
    chair_i_unique: float
    coverage: float
    mentions: int
    hallucinated_mentions: int
    mean_objects_mentioned: float
    empty: int  # descriptions that mention no object at all


def chair_item(text: str, truth: set[str], vocabulary: str = "toyworld") -> tuple[list[str], list[str]]:
    """(mentioned categories in order, with repeats; the hallucinated ones among them)."""
    mentioned = [category for _, category in get_vocabulary(vocabulary)(text)]
    return mentioned, [c for c in mentioned if c not in truth]


def score_chair(
    descriptions: Sequence[str], truths: Sequence[set[str] | Sequence[str]], vocabulary: str = "toyworld"
) -> ChairScores:
    """Score descriptions against the ground-truth object categories of their images."""
    if len(descriptions) != len(truths):
        raise ValueError(
            f"descriptions and truths differ in length: descriptions {len(descriptions)}, truths {len(truths)}"
        )
    mentions = hallucinated = unique = unique_hall = covered = total_truth = with_hall = empty = 0
    for text, truth in zip(descriptions, truths, strict=True):
        truth = set(truth)
        mentioned, hall = chair_item(text, truth, vocabulary)
        mentions += len(mentioned)
        hallucinated += len(hall)
        unique += len(set(mentioned))
        unique_hall += len(set(hall))
        covered += len(set(mentioned) & truth)
        total_truth += len(truth)
        with_hall += bool(hall)
        empty += not mentioned
    n = len(descriptions)
    return ChairScores(
        n=n,
        chair_s=with_hall / n if n else 0.0,
        chair_i=hallucinated / mentions if mentions else 0.0,
        chair_i_unique=unique_hall / unique if unique else 0.0,
        coverage=covered / total_truth if total_truth else 0.0,
        mentions=mentions,
        hallucinated_mentions=hallucinated,
        mean_objects_mentioned=unique / n if n else 0.0,
        empty=empty,
    )


def score_relations(descriptions: Sequence[str], layouts: Sequence[Sequence[dict]]) -> dict[str, float | int]:
    """The descriptions' relation sentences ("The star is to the left of the circle."), checked on each scene's
    layout (toy world: `assistant.toyworld.relations.relation_accuracy`): how many were stated, in how many
    descriptions, and the share that name two objects of the scene in a relation that holds."""
    from assistant.toyworld.relations import layout_objects, relation_accuracy

    right = stated = with_relations = 0
    for text, layout in zip(descriptions, layouts, strict=True):
        r, s = relation_accuracy(text, layout_objects(layout))
        right, stated, with_relations = right + r, stated + s, with_relations + (s > 0)
    return {
        "stated": stated,
        "right": right,
        "accuracy": right / stated if stated else 0.0,
        "per_description": stated / len(descriptions) if descriptions else 0.0,
        "descriptions_with_relations": with_relations,
    }


def score_texts(descriptions: Sequence[str], texts: Sequence[Sequence[str]]) -> dict[str, float | int]:
    """The text the descriptions say the images show (each quoted string is a claim), checked on each scene's
    texts (toy world: `assistant.toyworld.relations.text_accuracy`): how many were stated, and how many of them
    the scene does not have, per description. CHAIR counts objects only, so an invented 'The number "21" is
    written on the right.' shows here and nowhere else."""
    from assistant.toyworld.relations import text_accuracy

    right = stated = with_invented = 0
    for text, truth in zip(descriptions, texts, strict=True):
        r, s = text_accuracy(text, truth)
        right, stated, with_invented = right + r, stated + s, with_invented + (s > r)
    n = len(descriptions)
    return {
        "stated": stated,
        "right": right,
        "per_description": stated / n if n else 0.0,
        "invented_per_description": (stated - right) / n if n else 0.0,
        "descriptions_with_invented": with_invented,
    }


def score_repeats(descriptions: Sequence[str]) -> dict[str, float | int]:
    """Sentences that say again what an earlier sentence of the same description said, word for word (case, spacing
    and the closing mark ignored): "There is a small green heart at the top." twice. CHAIR counts a repeated object
    as one more mention of a present object, so a model that repeats itself loses coverage (the objects it never
    reached) and nothing else shows why: the one run without stage 2 repeats 0.65 sentences a description against
    the one run's 0.19, and covers 0.79 of the objects against 0.89 (docs/recipe.md, session 54)."""
    repeated = with_repeats = 0
    for text in descriptions:
        seen: set[str] = set()
        mine = 0
        for sentence in sentences(text):
            key = " ".join(sentence.lower().rstrip(".!?").split())
            if key:
                mine += key in seen
                seen.add(key)
        repeated, with_repeats = repeated + mine, with_repeats + (mine > 0)
    n = len(descriptions)
    return {
        "repeated_sentences": repeated,
        "per_description": repeated / n if n else 0.0,
        "descriptions_with_repeats": with_repeats,
    }
