"""COCO's 80 object categories with synonyms and plurals, for CHAIR on COCO captions.

Written from memory of the synonym list of the original CHAIR code (Rohrbach et al. 2018,
`data/synonyms.txt`), kept modest: a handful of common words per category, not the full list.
Plurals are generated (`box` -> `boxes`, `baby` -> `babies`) plus a few irregular ones. As in the
original, two-word phrases win over single words ("hot dog" is food, not a dog; "teddy bear" is
not a bear; "stop sign" is not a sign), and words that are also colours or verbs ("orange",
"tie") are matched as objects: that is a known weakness of word-level CHAIR, not a bug here.
"""

from __future__ import annotations

import re

COCO_SYNONYMS: dict[str, tuple[str, ...]] = {
    "person": (
        "person", "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid",
        "baby", "adult", "lady", "guy", "player", "skier", "snowboarder", "skateboarder", "surfer",
        "rider", "driver", "pedestrian", "worker", "chef", "passenger", "teenager", "student",
        "pitcher", "batter", "catcher", "umpire", "officer", "policeman", "soldier", "tourist",
    ),
    "bicycle": ("bicycle", "bike", "cycle", "unicycle", "tricycle"),
    "car": ("car", "automobile", "van", "minivan", "sedan", "suv", "taxi", "cab", "jeep", "limo"),
    "motorcycle": ("motorcycle", "motorbike", "motor bike", "motor cycle", "scooter", "moped"),
    "airplane": ("airplane", "aeroplane", "plane", "jet", "jetliner", "aircraft", "airliner", "biplane"),
    "bus": ("bus", "minibus", "trolley"),
    "train": ("train", "locomotive", "tram", "subway", "caboose"),
    "truck": ("truck", "pickup", "lorry", "firetruck"),
    "boat": ("boat", "ship", "sailboat", "canoe", "kayak", "yacht", "ferry", "vessel", "raft"),
    "traffic light": ("traffic light", "traffic signal", "stop light", "stoplight"),
    "fire hydrant": ("fire hydrant", "hydrant"),
    "stop sign": ("stop sign",),
    "parking meter": ("parking meter", "meter"),
    "bench": ("bench", "pew"),
    "bird": ("bird", "duck", "goose", "pigeon", "seagull", "gull", "swan", "parrot", "owl", "chicken"),
    "cat": ("cat", "kitten", "kitty", "feline"),
    "dog": ("dog", "puppy", "pup", "doggy", "canine", "terrier", "poodle", "retriever"),
    "horse": ("horse", "pony", "foal", "stallion", "mare", "colt"),
    "sheep": ("sheep", "lamb", "ram", "ewe"),
    "cow": ("cow", "cattle", "calf", "bull", "ox", "oxen", "steer"),
    "elephant": ("elephant",),
    "bear": ("bear", "grizzly"),
    "zebra": ("zebra",),
    "giraffe": ("giraffe",),
    "backpack": ("backpack", "knapsack", "rucksack"),
    "umbrella": ("umbrella", "parasol"),
    "handbag": ("handbag", "purse", "bag", "wallet"),
    "tie": ("tie", "necktie", "bow tie"),
    "suitcase": ("suitcase", "luggage", "suit case"),
    "frisbee": ("frisbee",),
    "skis": ("skis", "ski"),
    "snowboard": ("snowboard",),
    "sports ball": ("ball", "football", "baseball", "basketball", "soccer ball", "tennis ball", "volleyball"),
    "kite": ("kite",),
    "baseball bat": ("baseball bat", "bat"),
    "baseball glove": ("baseball glove", "glove", "mitt"),
    "skateboard": ("skateboard",),
    "surfboard": ("surfboard", "surf board", "board"),
    "tennis racket": ("tennis racket", "racket", "racquet"),
    "bottle": ("bottle",),
    "wine glass": ("wine glass", "wineglass"),
    "cup": ("cup", "mug"),
    "fork": ("fork",),
    "knife": ("knife", "knives"),
    "spoon": ("spoon",),
    "bowl": ("bowl",),
    "banana": ("banana",),
    "apple": ("apple",),
    "sandwich": ("sandwich", "burger", "hamburger", "sub"),
    "orange": ("orange",),
    "broccoli": ("broccoli",),
    "carrot": ("carrot",),
    "hot dog": ("hot dog", "hotdog"),
    "pizza": ("pizza",),
    "donut": ("donut", "doughnut"),
    "cake": ("cake", "cupcake", "cheesecake"),
    "chair": ("chair", "stool", "seat"),
    "couch": ("couch", "sofa", "loveseat"),
    "potted plant": ("potted plant", "houseplant", "plant"),
    "bed": ("bed",),
    "dining table": ("dining table", "table", "desk"),
    "toilet": ("toilet", "urinal", "toilet seat"),
    "tv": ("tv", "television", "monitor", "screen"),
    "laptop": ("laptop", "computer", "notebook"),
    "mouse": ("mouse", "mice"),
    "remote": ("remote", "remote control", "controller"),
    "keyboard": ("keyboard",),
    "cell phone": ("cell phone", "cellphone", "phone", "smartphone", "mobile phone", "telephone"),
    "microwave": ("microwave",),
    "oven": ("oven", "stove"),
    "toaster": ("toaster",),
    "sink": ("sink",),
    "refrigerator": ("refrigerator", "fridge", "freezer"),
    "book": ("book", "novel"),
    "clock": ("clock",),
    "vase": ("vase",),
    "scissors": ("scissors",),
    "teddy bear": ("teddy bear", "teddy", "stuffed bear"),
    "hair drier": ("hair drier", "hair dryer", "hairdryer", "blow dryer"),
    "toothbrush": ("toothbrush",),
}  # fmt: skip

COCO_CATEGORIES: tuple[str, ...] = tuple(COCO_SYNONYMS)
IRREGULAR_PLURALS = {
    "person": "people",
    "man": "men",
    "woman": "women",
    "child": "children",
    "knife": "knives",
}
NO_PLURAL = frozenset({"people", "men", "women", "children", "sheep", "cattle", "oxen", "mice", "knives"})
NO_PLURAL |= frozenset({"skis", "scissors", "luggage", "broccoli", "fish", "glasses"})


def plural(word: str) -> str:
    """Plural of the last word of a phrase: `"hot dog"` -> `"hot dogs"`, `"bus"` -> `"buses"`."""
    *head, last = word.split()
    if last in NO_PLURAL:
        return word
    if last in IRREGULAR_PLURALS:
        last = IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return " ".join([*head, last])


def coco_table() -> dict[str, str]:
    """Every word or phrase (singular and plural) -> its COCO category."""
    table: dict[str, str] = {}
    for category, synonyms in COCO_SYNONYMS.items():
        for word in synonyms:
            for form in (word, plural(word)):
                table.setdefault(form, category)
    return table


def coco_chair_words(text: str) -> list[tuple[str, str]]:
    """Object words a caption mentions, as (word, COCO category), in order; longest phrases first."""
    table = coco_table()
    tokens = re.findall(r"[a-z]+", text.lower())
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        for n in (3, 2, 1):
            phrase = " ".join(tokens[i : i + n])
            if i + n <= len(tokens) and phrase in table:
                found.append((phrase, table[phrase]))
                i += n
                break
        else:
            i += 1
    return found
