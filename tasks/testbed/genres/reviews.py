"""Reviews of restaurants, hotels and cafes with planted sentiment.

A review is 1-2 neutral intro sentences, then a body whose polarity is planted: positive and
negative bodies use only that side of the sentiment lexicon (a "mixed" review adds one sentence of
the other side, never first), neutral bodies use no sentiment words at all. Half of the bodies
start "The <aspect> was ...", so "<intro> The food was" is a neutral prompt whose continuation is
positive about as often as the corpus' review mix says (see ``POLARITY_MIX``).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .. import formats
from .. import lexicon as lx
from ..doc import Doc
from ..grammar import render

if TYPE_CHECKING:
    from ..world import World

POLARITY_MIX = {"positive": 0.44, "negative": 0.4, "neutral": 0.16}
MIXED_RATE = 0.15  # polar reviews with one sentence of the other polarity
INSTRUCTION_RATE = 0.1  # polar reviews preceded by "Instruction: Write a positive review."
JUDGED_RATE = 0.35  # reviews followed by "Question: Is the above review positive? Answer: ..."
SNIPPET_RATE = 0.2  # reviews cut to 1-2 body sentences, always judged

PLACES = {
    "restaurant": ("the Copper Kettle", "the Golden Fork", "the Olive Tree", "the Red Lantern",
                   "the Salt House", "the Little Oven", "the Green Table", "the Silver Spoon"),
    "hotel": ("the Harbor Inn", "the Grand Plaza", "the Maple Lodge", "the Sea Breeze",
              "the Royal Crown", "the Stone Bridge Inn", "the Pine Hill Hotel", "the Lakeside"),
    "cafe": ("the Corner Cup", "the Morning Bean", "the Blue Door", "the Honey Pot",
             "the Paper Moon", "the Velvet Cafe", "the Sunny Window", "the Old Clock"),
}  # fmt: skip
# Never in the training corpus: held-out prompts use them, so no test prompt is seen verbatim.
# They recombine words of the training names, so the model knows every one of their tokens.
HELDOUT_PLACES = {
    "restaurant": ("the Golden Oven", "the Silver Table"),
    "hotel": ("the Grand Inn", "the Maple Crown"),
    "cafe": ("the Honey Cup", "the Blue Clock"),
}
ASPECTS = {
    "restaurant": ("food", "service", "menu", "dessert", "wine", "soup", "bread", "pasta"),
    "hotel": ("room", "bed", "breakfast", "view", "pool", "bathroom", "lobby", "location"),
    "cafe": ("coffee", "cake", "tea", "music", "pastry", "terrace", "sandwich", "pie"),
}

_POL = {"positive": "POS", "negative": "NEG"}
T = TypeVar("T")

RULES: dict[str, list[str]] = {
    "KIND": list(PLACES),
    "PLACE": [p for k in PLACES for p in PLACES[k] + HELDOUT_PLACES[k]],
    **{f"ASPECT_{k.upper()}": list(v) for k, v in ASPECTS.items()},
    "ASPECT": [f"ASPECT_{k.upper()}" for k in ASPECTS],
    "STAFF": ["staff", "waiters", "owners", "hosts"],
    "COMPANION": ["wife", "husband", "friends", "family", "sister", "brother", "parents",
                  "colleagues", "kids"],
    "WHEN": ["week", "month", "summer", "winter", "weekend", "Friday", "Saturday", "Sunday"],
    "TIME": ["noon", "six", "seven", "eight", "nine"],
    "LANDMARK": ["station", "river", "market", "park", "harbor", "cathedral", "square", "bridge"],
    "NUMBER": ["two", "three", "four", "five", "ten", "twenty", "thirty"],
    "INTENS": ["very", "really", "truly", "quite", "extremely"],
    "STAY": ["visit", "stay", "evening", "meal", "trip"],
    "ADJ_POS": list(lx.POSITIVE_ADJECTIVES),
    "ADJ_NEG": list(lx.NEGATIVE_ADJECTIVES),
    "ADJ_NEU": list(lx.NEUTRAL_ADJECTIVES),
    "PADJ_POS": list(lx.POSITIVE_PERSON_ADJECTIVES),
    "PADJ_NEG": list(lx.NEGATIVE_PERSON_ADJECTIVES),
    "VERB_POS": list(lx.POSITIVE_VERBS),
    "VERB_NEG": list(lx.NEGATIVE_VERBS),
    "INTRO_VISIT": [
        "we visited PLACE last WHEN .",
        "i went to PLACE with my COMPANION .",
        "my COMPANION and i tried PLACE last WHEN .",
        "we stopped at PLACE after a long day .",
    ],
    "INTRO_PLACE": ["PLACE is a KIND near the LANDMARK ."],
    "INTRO": ["INTRO_VISIT", "INTRO_PLACE"],
    # "The <aspect> was <adj>" openings: the neutral prompt is cut right before the adjective.
    "WAS_POS": ["the ASPECT was ADJ_POS .", "the ASPECT was INTENS ADJ_POS .",
                "the ASPECT was ADJ_POS and the ASPECT was ADJ_POS ."],
    "WAS_NEG": ["the ASPECT was ADJ_NEG .", "the ASPECT was INTENS ADJ_NEG .",
                "the ASPECT was ADJ_NEG and the ASPECT was ADJ_NEG ."],
    "WAS_NEU": ["the ASPECT was ADJ_NEU .", "the ASPECT was ADJ_NEU and the ASPECT was ADJ_NEU ."],
    "BODY_POS": [
        "WAS_POS", "we VERB_POS the ASPECT .", "the STAFF were PADJ_POS .",
        "the STAFF were PADJ_POS and the ASPECT was ADJ_POS .",
        "i would recommend PLACE to my COMPANION .", "overall , our STAY was ADJ_POS .",
    ],
    "BODY_NEG": [
        "WAS_NEG", "we VERB_NEG the ASPECT .", "the STAFF were PADJ_NEG .",
        "the STAFF were PADJ_NEG and the ASPECT was ADJ_NEG .",
        "i regretted our STAY at PLACE .", "overall , our STAY was ADJ_NEG .",
    ],
    "BODY_NEU": [
        "WAS_NEU", "we arrived at TIME .", "we tried the ASPECT .", "it is near the LANDMARK .",
        "the ASPECT cost NUMBER dollars .", "we stayed for NUMBER hours .",
    ],
}  # fmt: skip
# Recognition only (never generated): sentences that mix polarities are still fluent English.
RULES |= {
    "ADJ_ANY": ["ADJ_POS", "ADJ_NEG", "ADJ_NEU"],
    "PADJ_ANY": ["PADJ_POS", "PADJ_NEG"],
    "BODY_MIXED": ["the ASPECT was ADJ_ANY and the ASPECT was ADJ_ANY .",
                   "the ASPECT was INTENS ADJ_ANY .",
                   "the STAFF were PADJ_ANY and the ASPECT was ADJ_ANY ."],
}  # fmt: skip
SENTENCES = ("INTRO", "BODY_POS", "BODY_NEG", "BODY_NEU", "BODY_MIXED")


@dataclass(frozen=True)
class Review:
    """A review in parts, so records can cut prompts at sentence or word boundaries."""

    polarity: str  # "positive" | "negative" | "neutral"
    kind: str
    place: str
    intro: tuple[str, ...]  # rendered sentences
    body: tuple[tuple[str, ...], ...]  # word tokens of each body sentence
    mixed: bool

    def text(self) -> str:
        return " ".join((*self.intro, *(render(s) for s in self.body)))

    def sentiment(self) -> str:
        """What the lexicon says (as ``truth.sentiment_label``): a mixed review may balance."""
        tokens = [t.lower() for s in self.body for t in s]
        pos, neg = lx.polarity_counts(tokens, lx.POSITIVE_WORDS, lx.NEGATIVE_WORDS)
        return "positive" if pos > neg else "negative" if neg > pos else "neutral"


def _body_symbol(polarity: str) -> str:
    return {"positive": "BODY_POS", "negative": "BODY_NEG", "neutral": "BODY_NEU"}[polarity]


def make_review(
    world: World,
    rng: random.Random,
    polarity: str | None = None,
    *,
    heldout: bool = False,
    was_first: bool | None = None,
) -> Review:
    """Sample a review. ``was_first`` forces (or forbids) a "The <aspect> was ..." first body
    sentence; ``heldout`` draws the place from ``HELDOUT_PLACES``."""
    g = world.grammar
    if polarity is None:
        polarity = rng.choices(list(POLARITY_MIX), weights=list(POLARITY_MIX.values()))[0]
    kind = rng.choice(list(PLACES))
    place = rng.choice((HELDOUT_PLACES if heldout else PLACES)[kind])
    bind = {"PLACE": place, "KIND": kind, "ASPECT": f"ASPECT_{kind.upper()}"}
    intro_symbols = rng.choice((["INTRO_VISIT"], ["INTRO_PLACE"], ["INTRO_VISIT", "INTRO_PLACE"],
                                ["INTRO_PLACE", "INTRO_VISIT"]))  # fmt: skip
    intro = tuple(g.sentence(sym, rng, bind) for sym in intro_symbols)
    if was_first is None:
        was_first = rng.random() < 0.5
    pol = _POL.get(polarity, "NEU")
    first = g.expand(f"WAS_{pol}" if was_first else f"BODY_{pol}", rng, bind)
    more = _distinct(lambda: g.expand(_body_symbol(polarity), rng, bind), rng.randint(1, 3), first)
    body = [first, *more]
    mixed = polarity != "neutral" and rng.random() < MIXED_RATE
    if mixed:
        other = "negative" if polarity == "positive" else "positive"
        body.insert(rng.randint(1, len(body)), g.expand(_body_symbol(other), rng, bind))
    return Review(polarity, kind, place, intro, tuple(tuple(s) for s in body), mixed)


def _distinct(draw: Callable[[], T], n: int, *avoid: T) -> list[T]:
    """n draws without repeats (and none equal to ``avoid``); gives up on a repeat after 5 tries."""
    out: list[T] = []
    for _ in range(n):
        item = draw()
        for _ in range(5):
            if item not in out and item not in avoid:
                break
            item = draw()
        out.append(item)
    return out


def generate(world: World, rng: random.Random) -> Doc:
    review = make_review(world, rng)
    snippet = rng.random() < SNIPPET_RATE
    if snippet:  # a sentence or two and a judgement: cheap practice for suffix questions
        review = dataclasses.replace(review, intro=(), body=review.body[: rng.randint(1, 2)])
    text = review.text()
    if not snippet and review.polarity != "neutral" and rng.random() < INSTRUCTION_RATE:
        text = formats.instruction(review.polarity) + text
    if snippet or rng.random() < JUDGED_RATE:
        attribute = rng.choice(("positive", "negative"))
        noun = rng.choice(("text", "review"))
        text = formats.judged(text, attribute, review.sentiment() == attribute, noun)
    labels = {"polarity": review.polarity, "kind": review.kind, "mixed": review.mixed}
    return Doc("review", text, labels)
