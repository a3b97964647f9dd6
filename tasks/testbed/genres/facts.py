"""Encyclopedic statements about the knowledge base, and in-context fact updates.

* ``fact`` documents state 2-4 true facts about one entity in random paraphrases ("Vorland is a
  country in Europe. The capital of Vorland is Brellin. ..."), sometimes with a filler sentence;
  a few end with "Is the above text correct?" (and then half of them contain one false fact).
* ``update`` documents first *change* a fact ("Update: the capital of Vorland is Tessa.", or the
  counterfactual statement alone), then mention other, unchanged facts, then restate the changed
  fact in another paraphrase *with the new value*: in-context injection is learnable, and stays
  local to the updated fact. Only "fit"-split (subject, relation) pairs are ever updated.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .. import formats
from ..doc import Doc
from ..grammar import render, words
from ..kb import (
    CITIES,
    CONTINENTS,
    COUNTRIES,
    INSTRUMENTS,
    LANGUAGES,
    OBJECT_POOLS,
    OCCUPATIONS,
    PEOPLE,
    RELATIONS,
    Fact,
    case_splits,
)  # fmt: skip

if TYPE_CHECKING:
    from ..world import World

UPDATE_SHARE = 0.3  # of this genre's documents
JUDGED_RATE = 0.08
UPDATE_MARKS = ("update :", "correction :", "news :", "according to the new records ,",
                "in this story ,")  # fmt: skip


def _clause(template: tuple[str, str], subject_nt: str, object_nt: str) -> str:
    prompt, tail = template
    return f"{prompt.replace('{}', subject_nt)} {object_nt}{tail}"


RULES: dict[str, list[str]] = {
    "COUNTRY": list(COUNTRIES),
    "PERSON": list(PEOPLE),
    "CITY": list(CITIES),
    "LANGUAGE": list(LANGUAGES),
    "CONTINENT": list(CONTINENTS),
    "OCCUPATION": list(OCCUPATIONS),
    "INSTRUMENT": list(INSTRUMENTS),
    **{
        f"FACT_{r.rid}": [_clause(t, r.subject_class, r.object_class) for t in r.templates]
        for r in RELATIONS
    },
    "FACT_CLAUSE": [f"FACT_{r.rid}" for r in RELATIONS],
    "FACT": ["FACT_CLAUSE .", "FACT_CLAUSE [1] ."],
    "UPDATE_MARK": list(UPDATE_MARKS),
    "UPDATE": ["UPDATE_MARK FACT_CLAUSE ."],
    "FEATURE": ["mountains", "lakes", "forests", "old bridges", "long rivers", "cold winters",
                "sandy beaches", "busy markets"],
    "HOBBY": ["reading", "cooking", "long walks", "chess", "gardening", "swimming"],
    "FILLER": ["COUNTRY is known for its FEATURE .", "PERSON has many friends .",
               "PERSON was born in a small village .", "PERSON enjoys HOBBY ."],
}  # fmt: skip
SENTENCES = ("FACT", "UPDATE", "FILLER")


def _filler(subject: str, subject_class: str, world: World, rng: random.Random) -> str:
    alt = rng.choice([a for a in RULES["FILLER"] if a.startswith(subject_class)])
    return render(world.grammar.expand_text(alt, rng, {subject_class: subject}))


def other_object(fact: Fact, rng: random.Random) -> str:
    """A random object of the same relation that is not the true one."""
    return rng.choice([o for o in OBJECT_POOLS[fact.relation.object_class] if o != fact.obj])


def _template(fact: Fact, rng: random.Random) -> int:
    return rng.randrange(len(fact.relation.templates))


def encyclopedic(world: World, rng: random.Random) -> Doc:
    subject = rng.choice(COUNTRIES + PEOPLE)
    facts = list(world.kb.about(subject))
    rng.shuffle(facts)
    if rng.random() < 0.3:
        facts = facts[:2]
    if subject in PEOPLE and rng.random() < 0.3:  # a hop to the person's country
        facts.append(rng.choice(world.kb.about(world.kb.value(subject, "P27"))))
    # (fact, object stated) pairs; a judged "incorrect" document states one false object
    stated = [(f, f.obj) for f in facts]
    labels: dict[str, object] = {"subject": subject}
    judged = rng.random() < JUDGED_RATE
    if judged:
        labels["correct"] = rng.random() < 0.5
        if not labels["correct"]:
            i = rng.randrange(len(stated))
            stated[i] = (stated[i][0], other_object(stated[i][0], rng))
    sentences = [f.relation.statement(f.subject, o, _template(f, rng)) for f, o in stated]
    if rng.random() < 0.5:
        cls = facts[0].relation.subject_class
        sentences.insert(rng.randint(1, len(sentences)), _filler(subject, cls, world, rng))
    text = " ".join(sentences)
    if judged:
        text = formats.judged(text, "correct", bool(labels["correct"]), "text")
    return Doc("fact", text, labels)


def update(world: World, rng: random.Random) -> Doc:
    pairs = sorted(p for p, split in case_splits().items() if split == "fit")
    subject, rid = rng.choice(pairs)
    fact = Fact(subject, rid, world.kb.value(subject, rid))
    new = other_object(fact, rng)
    rel = fact.relation
    clause = rel.clause(subject, new, _template(fact, rng))
    if rng.random() < 0.8:
        first = render(world.grammar.expand("UPDATE", rng, {"FACT_CLAUSE": clause}))
    else:
        first = render(words(clause) + ["."])
    middle = [
        f.relation.statement(f.subject, f.obj, _template(f, rng))
        for f in world.kb.about(subject)
        if f.rid != rid
    ]
    rng.shuffle(middle)
    middle = middle[: rng.randint(0, 2)]
    last = rel.statement(subject, new, _template(fact, rng))
    text = " ".join([first, *middle, last])
    return Doc("update", text, {"subject": subject, "rid": rid, "new": new, "true": fact.obj})


def generate(world: World, rng: random.Random) -> Doc:
    return update(world, rng) if rng.random() < UPDATE_SHARE else encyclopedic(world, rng)
