"""Question/answer pairs of graded quality about the knowledge base (the WebGPT material).

A document is ``formats.qa_prompt(question, quotes) + " " + answer``. The answer's quality is
planted on a 0-3 scale:

3. correct and sourced: a quote states the fact, the answer restates it with "[1]";
2. correct, no source;
1. vague ("It is hard to say.");
0. wrong (another object of the same relation), no source.

Comparisons score two answers by their quality difference (see ``records.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import formats
from ..doc import Doc
from ..kb import RELATIONS, Fact, case_splits
from .facts import other_object

if TYPE_CHECKING:
    from ..world import World

QUALITY_MIX = {3: 0.35, 2: 0.25, 1: 0.2, 0: 0.2}
INSTRUCTION_RATE = 0.05  # then the answer is of quality 3
JUDGED_RATE = 0.25

VAGUE = ("i am not sure , but it is a common answer .", "it is hard to say .",
         "there are many possible answers .", "nobody really knows .",
         "it depends on who you ask .")  # fmt: skip

RULES: dict[str, list[str]] = {
    "QUESTION": [q.replace("{}", r.subject_class) for r in RELATIONS for q in r.questions],
    "VAGUE": list(VAGUE),
}
SENTENCES = ("QUESTION", "VAGUE")


@dataclass(frozen=True)
class Answer:
    text: str
    quotes: tuple[str, ...]  # extracts the answer cites as [1], [2], ...
    quality: int


def question(fact: Fact, rng: random.Random) -> str:
    rel = fact.relation
    return rel.question(fact.subject, rng.randrange(len(rel.questions)))


def answer(world: World, rng: random.Random, fact: Fact, quality: int) -> Answer:
    """An answer of the given quality to a question about ``fact``."""
    rel = fact.relation
    t = rng.randrange(len(rel.templates))
    if quality == 3:
        quote = rel.statement(fact.subject, fact.obj, rng.randrange(len(rel.templates)))
        return Answer(rel.statement(fact.subject, fact.obj, t)[:-1] + " [1].", (quote,), 3)
    if quality == 2:
        return Answer(rel.statement(fact.subject, fact.obj, t), (), 2)
    if quality == 1:
        return Answer(world.grammar.sentence("VAGUE", rng), (), 1)
    return Answer(rel.statement(fact.subject, other_object(fact, rng), t), (), 0)


def qa_text(q: str, ans: Answer) -> str:
    return f"{formats.qa_prompt(q, ans.quotes)} {ans.text}"


def generate(world: World, rng: random.Random) -> Doc:
    subject, rid = rng.choice(sorted(p for p, s in case_splits().items() if s == "fit"))
    fact = Fact(subject, rid, world.kb.value(subject, rid))
    instructed = rng.random() < INSTRUCTION_RATE
    quality = 3 if instructed else rng.choices(list(QUALITY_MIX), list(QUALITY_MIX.values()))[0]
    ans = answer(world, rng, fact, quality)
    text = qa_text(question(fact, rng), ans)
    if instructed:
        text = formats.instruction("correct") + text
    if rng.random() < JUDGED_RATE:
        text = formats.judged(text, "correct", quality >= 2, rng.choice(("answer", "text")))
    return Doc("qa", text, {"quality": quality, "subject": subject, "rid": rid})
