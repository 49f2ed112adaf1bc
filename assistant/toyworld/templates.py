"""Phrasings for every question and caption: several per kind, so models learn tasks, not templates."""

from __future__ import annotations

import random
from itertools import product

TEMPLATES: dict[str, tuple[str, ...]] = {
    # stage 1 captions
    "caption_prompt": (
        "Describe the image briefly.",
        "Write a short caption for this image.",
        "What is in this picture? Answer in one sentence.",
        "Summarize the image in a few words.",
        "Give a brief description of the picture.",
    ),
    "caption": (
        "{objs} on a {bg} background.",
        "A picture of {objs}.",
        "{objs}.",
        "An image showing {objs}.",
    ),
    "caption_empty": (
        "An empty {bg} background.",
        "A {bg} background with no objects.",
        "Nothing but a {bg} background.",
    ),
    # counting
    "count_all": (
        "How many objects are there in the image?",
        "How many shapes can you see?",
        "Count the objects in the picture.",
        "What is the number of shapes in this image?",
    ),
    "count": (
        "How many {what} are there?",
        "How many {what} can you see in the image?",
        "Count the {what} in the picture.",
        "What is the number of {what} in this image?",
    ),
    # attributes
    "color": (
        "What colour is the {name}?",
        "What color is the {name} in the image?",
        "Which colour does the {name} have?",
        "Tell me the color of the {name}.",
    ),
    "shape": (
        "What shape is the {name}?",
        "Which shape is the {name} in the image?",
        "What kind of shape is the {name}?",
        "Name the shape of the {name}.",
    ),
    "size": (
        "Is the {name} small, medium or large?",
        "What size is the {name}?",
        "How big is the {name}: small, medium or large?",
    ),
    # two objects of one shape compared by size, answered with a colour
    "compare_size": (
        "What colour is the {which} {shape}?",
        "What color is the {which} of the two {shapes}?",
        "Of the {shapes}, which colour is the {which} one?",
    ),
    "extreme": (
        "Which object is the {which}?",
        "What is the {which} object in the image?",
        "Name the {which} shape in the picture.",
    ),
    # every object by one attribute, keyed by nothing
    "inventory_shape": (
        "What shapes are in the image?",
        "Which shapes can you see in the picture?",
        "List the shapes in this image.",
        "Name every shape you see, from left to right.",
    ),
    "inventory_color": (
        "Which colours are in the image?",
        "What colors do the objects in the picture have?",
        "List the colours of the shapes in this image.",
        "Name every colour you see, from left to right.",
    ),
    # position
    "rel_yes_no": (
        "Is the {a} {rel} the {b}?",
        "Is the {a} located {rel} the {b}?",
        "Looking at the image, is the {a} {rel} the {b}?",
    ),
    "rel_choice_h": (
        "Is the {a} to the left or to the right of the {b}?",
        "Is the {a} left or right of the {b}?",
        "On which side of the {b} is the {a}, left or right?",
    ),
    "rel_choice_v": (
        "Is the {a} above or below the {b}?",
        "Is the {a} higher or lower than the {b}? Answer above or below.",
        "Relative to the {b}, is the {a} above or below it?",
    ),
    "region": (
        "Where in the image is the {name}?",
        "In which part of the picture is the {name}?",
        "Where is the {name} located in the image?",
    ),
    # existence
    "exists": (
        "Is there {a_what} in the image?",
        "Does the image contain {a_what}?",
        "Can you see {a_what} in this picture?",
        "Is {a_what} present in the image?",
    ),
    # reading text
    "read_sign": ("What does the sign say?", "What is written on the sign?", "Read the sign."),
    "read_price": (
        "What is the price shown?",
        "How much does it cost?",
        "Which price is written in the image?",
    ),
    "read_number": (
        "What number is written in the image?",
        "Which number can you read?",
        "Read the number in the picture.",
    ),
    "read_word": (
        "Which word is written in the image?",
        "What word can you read in the picture?",
        "Read the word shown in the image.",
    ),
    "read_all": (
        "Read all the text in the image.",
        "What text is written in the image?",
        "Transcribe the text in this picture.",
    ),
    "has_text": (
        "Is there any text in the image?",
        "Does the image contain any writing?",
        "Is anything written in this picture?",
    ),
    "has_word": (
        'Does the image contain the text "{text}"?',
        'Is "{text}" written in the image?',
        'Can you read "{text}" anywhere in the picture?',
    ),
    # detailed description
    "detail": (
        "Describe the image in detail.",
        "Give a detailed description of this picture.",
        "What do you see in the image? Describe every object.",
        "Describe everything in this image.",
    ),
    # `detail` and more ways of asking (instruct_varied): after the focus stages the model answered "Yes" to the
    # CHAIR eval's held-out "Please describe this image in detail." (docs/recipe.md, session 15); that prompt stays
    # held out, so it is not among these
    "detail_varied": (
        "Describe the image in detail.",
        "Give a detailed description of this picture.",
        "What do you see in the image? Describe every object.",
        "Describe everything in this image.",
        "Please describe the picture.",
        "Can you describe this image for me?",
        "Could you give me a detailed description of the image?",
        "Tell me about this picture in detail.",
        "Please tell me what this image shows.",
        "Write a detailed description of the image.",
        "Describe this picture, please.",
        "What is in this image? Please be thorough.",
    ),
}


# The description request put together from four parts (opening, verb, object, ending): 1,000-odd phrasings. After a
# position focus stage (a third of its answers "Yes"/"No") `detail_varied`'s 12 were not enough: the model answered
# the held-out CHAIR prompt with a bare "Yes" or "No" 7 times in 10 (docs/recipe.md, session 21). The CHAIR prompt
# and every phrasing that differs from it in one part are held out (HELD_OUT_DETAIL), so it is asked, as before, in
# words the model never trained on.
DETAIL_PARTS: tuple[tuple[tuple[str, str], ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]] = (
    (
        ("", "."),
        ("Please ", "."),
        ("Can you ", "?"),
        ("Could you ", "?"),
        ("Would you ", "?"),
        ("Now ", "."),
        ("I'd like you to ", "."),
    ),
    (
        "describe",
        "give a detailed description of",
        "tell me about",
        "write a description of",
        "explain what is in",
        "go over what you see in",
    ),
    ("the image", "this image", "the picture", "this picture", "the scene", "this scene"),
    ("", " in detail", " thoroughly", " for me", " carefully"),
)
HELD_OUT_DETAIL = ("Please ", "describe", "this image", " in detail")  # evals.config.CHAIR_PROMPT


def _detail_many() -> tuple[str, ...]:
    openings, verbs, objects, endings = DETAIL_PARTS
    made = []
    for (opening, stop), verb, obj, ending in product(openings, verbs, objects, endings):
        near = sum(a != b for a, b in zip((opening, verb, obj, ending), HELD_OUT_DETAIL, strict=True)) < 2
        if not near:
            text = f"{opening}{verb} {obj}{ending}{stop}"
            made.append(text[:1].upper() + text[1:])
    return tuple(dict.fromkeys([*made, *TEMPLATES["detail_varied"]]))  # and the 12 of detail_varied


TEMPLATES["detail_many"] = _detail_many()


def phrase(rng: random.Random, key: str, **kw: object) -> str:
    """A random phrasing of `key`, filled in, with its first letter upper-cased."""
    text = rng.choice(TEMPLATES[key]).format(**kw)
    return text[:1].upper() + text[1:]
