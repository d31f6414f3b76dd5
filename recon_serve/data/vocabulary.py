"""One vocabulary for every labelled source: class names turned into words, synonyms merged.

Each source spells its classes its own way (ModelNet `night_stand`, SHREC `NonWheelChair`, PSB's
fine names such as `multi_fuselage` that only mean something under their parent class, ShapeNet's
`aeroplane`, household assets with colours and brands in the name). `words()` turns a name into
lower-case words; `ALIASES` maps those words to the merged class; `Vocabulary` keeps, for every
merged class, the source names it came from, so prompts can use any of them and nothing is lost.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# words of a source name -> the merged class's words. Only names whose words are not already a
# good class name are listed; everything else maps to its own words.
ALIASES = {
    # plain synonyms and spelling variants across sources
    "aeroplane": "airplane", "monoplane": "airplane", "couch": "sofa", "tv": "television",
    "cellphone": "cell phone", "classic piano": "piano", "non wheel chair": "chair",
    "wheel chair": "wheelchair", "dining chair": "chair", "plant indoors": "potted plant", "plant": "potted plant", "rectangle table": "rectangular table",
    "computer keyboard": "keyboard", "piano board": "electronic keyboard", "human head": "head",
    "bookset": "books", "book": "books", "chess": "chess piece", "gun": "handgun", "military tank": "tank",
    "truck non container": "truck", "shelf": "shelves",
    # PSB's fine names, read under their parent class (PSB v1 class hierarchy)
    "f117": "stealth fighter jet", "rectangular": "rectangular table", "round": "round table",
    "barren": "bare tree", "commercial": "airliner", "multi fuselage": "multi fuselage aircraft",
    "enterprise like": "starship", "x wing": "x-wing starfighter", "trex": "tyrannosaurus", "feline": "cat", "human arms out": "human with arms out",
    "multiple peak tent": "tent", "two story home": "house", "palm": "palm tree", "phone handle": "telephone handset",
    "sailboat with oars": "rowing boat",
    "flower with stem": "flower",
    # household assets (colour, size and brand words are dropped first, see _HOUSEHOLD_DROP)
    "porcelain mug": "mug", "coffee mug": "mug", "chefmate 8 frypan": "frying pan", "frypan": "frying pan",
    "glazed rim porcelain ramekin": "ramekin", "flat stove": "stove", "basin faucet": "faucet",
    "basin faucet base": "faucet", "basin faucet movable": "faucet", "short fridge": "fridge",
    "short cabinet": "cabinet", "wooden cabinet": "cabinet", "wooden cabinet base": "cabinet",
    "short coffee table": "coffee table", "living room table": "table", "office book shelf": "bookshelf",
    "wooden shelf": "shelves", "wooden two layer shelf": "shelves", "simple rack": "rack", "brown rack": "rack",
    "wine rack stand": "wine rack", "wooden tray": "tray", "desk caddy": "desk organiser", "bowl drainer": "dish rack", "alphabet soup": "soup can",
    "tomato sauce": "sauce jar", "bbq sauce": "sauce bottle", "salad dressing": "sauce bottle",
    "new salad dressing": "sauce bottle", "ketchup": "sauce bottle", "milk": "milk carton",
    "orange juice": "juice carton", "butter": "butter box", "cream cheese": "cream cheese box",
    "chocolate pudding": "pudding box", "macaroni and cheese": "food box", "popcorn": "food box", "coffee table seats": "coffee table", "dining set group": "table and chairs",
    "study wall painting": "painting", "kitchen background": "kitchen",
    "kitchen background hot pot": "kitchen", "kitchen background pot": "kitchen", "kitchen background stove": "kitchen",
    "study background": "study room",
}

_HOUSEHOLD_DROP = {"red", "yellow", "white", "black", "green", "blue", "brown", "bigger", "libero", "akita"}


def words(name: str) -> str:
    """A source class name as lower-case words: 'NonWheelChair' -> 'non wheel chair',
    'multiple__peak_tent' -> 'multiple peak tent', 'F117' -> 'f117'."""
    s = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", str(name))
    return " ".join(re.split(r"[\s_\-]+", s.lower())).strip()


def canonical(name: str, source: str = "") -> str:
    """The merged class a source name belongs to."""
    w = words(name)
    if source == "libero":
        w = " ".join(t for t in w.split() if t not in _HOUSEHOLD_DROP) or w
    return ALIASES.get(w, w)


@dataclass
class Vocabulary:
    """Merged classes in a stable order; each keeps its (source, source name) pairs."""

    classes: list[str] = field(default_factory=list)
    sources: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def add(self, source: str, name: str) -> int:
        c = canonical(name, source)
        if c not in self.sources:
            self.classes.append(c)
            self.sources[c] = []
        if (source, str(name)) not in self.sources[c]:
            self.sources[c].append((source, str(name)))
        return self.classes.index(c)

    def index(self, source: str, name: str) -> int:
        return self.classes.index(canonical(name, source))

    def names(self, cls: str) -> list[str]:
        """Every way of saying a class: its merged words first, then each source name's words."""
        out = [cls]
        for _, n in self.sources[cls]:
            w = words(n)
            if w not in out:
                out.append(w)
        return out

    def to_dict(self) -> dict:
        return {"classes": self.classes, "sources": {c: [list(p) for p in v] for c, v in self.sources.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Vocabulary":
        return cls(list(d["classes"]), {c: [tuple(p) for p in v] for c, v in d["sources"].items()})
