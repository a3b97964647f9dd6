"""Encyclopedic statements about the knowledge base, and in-context fact updates.

* ``fact`` documents state 2-4 true facts about one entity in random paraphrases ("Vorland is a
  country in Europe. The capital of Vorland is Brellin. ..."), sometimes with a filler sentence;
  a few end with "Is the above text correct?" (and then half of them contain one false fact).
* ``story`` documents do the same for made-up entities whose facts differ in every document,
  so copying from the context is the only way to predict them (pressure to learn it).
* ``claim`` documents: a statement or two, then "Does the above text say that ...?".
* ``update`` documents first *change* a fact ("Update: the capital of Vorland is Tessa.", or the
  counterfactual statement alone), then mention other, unchanged facts, then restate the changed
  fact in another paraphrase *with the new value*: in-context injection is learnable, and stays
  local to the updated fact. Facts are never updated to their ``kb.reserved_objects`` (those
  are kept for evaluation).
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
    STORY_COUNTRIES,
    STORY_PEOPLE,
    Fact,
    reserved_objects,
)  # fmt: skip

if TYPE_CHECKING:
    from ..world import World

UPDATE_SHARE = 0.33  # of this genre's documents: KB facts changed in context
STORY_SHARE = 0.17  # made-up facts about story entities (only the context can tell them)
RESTATE_TWICE_RATE = 0.3  # updates restated once more at the end
SAME_TEMPLATE_RATE = 0.5  # updates restated in the same words (else another paraphrase)
MARKED_RATE = 0.8  # updates opening with a marker ("Update:", "In this story,", ...)
CLAIM_RATE = 0.3  # updates followed by "Does the above text say that ...?"
CLAIM_SNIPPET_SHARE = 0.08  # short statements + such a question
JUDGED_RATE = 0.08
UPDATE_MARKS = ("update :", "correction :", "news :", "according to the new records ,",
                "in this story ,")  # fmt: skip


def _clause(template: tuple[str, str], subject_nt: str, object_nt: str) -> str:
    prompt, tail = template
    return f"{prompt.replace('{}', subject_nt)} {object_nt}{tail}"


RULES: dict[str, list[str]] = {
    "COUNTRY": list(COUNTRIES + STORY_COUNTRIES),
    "PERSON": list(PEOPLE + STORY_PEOPLE),
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
               "PERSON grew up in a small village .", "PERSON enjoys HOBBY ."],
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


def _story_facts(subject: str, rng: random.Random) -> list[Fact]:
    """Random facts about a story entity (a fresh, made-up world in every document)."""
    cls = "COUNTRY" if subject in STORY_COUNTRIES else "PERSON"
    return [Fact(subject, r.rid, rng.choice(OBJECT_POOLS[r.object_class]))
            for r in RELATIONS if r.subject_class == cls]  # fmt: skip


def update(world: World, rng: random.Random, story: bool = False) -> Doc:
    """A changed KB fact (never to one of its ``reserved_objects``) or, with ``story``, a
    made-up fact about a story entity, restated later: the later statement follows the context."""
    if story:
        subject = rng.choice(STORY_COUNTRIES + STORY_PEOPLE)
        known = _story_facts(subject, rng)  # what this document says about the subject
        fact = rng.choice(known)
        new, true = fact.obj, None
    else:
        fact = rng.choice(world.kb.facts)
        subject, true = fact.subject, fact.obj
        reserved = reserved_objects()[(subject, fact.rid)]
        new = rng.choice([o for o in OBJECT_POOLS[fact.relation.object_class]
                          if o != true and o not in reserved])  # fmt: skip
        known = [f for f in world.kb.about(subject) if f.rid != fact.rid]
    rel = fact.relation
    t_first = _template(fact, rng)
    clause = rel.clause(subject, new, t_first)
    if rng.random() < MARKED_RATE:
        first = render(world.grammar.expand("UPDATE", rng, {"FACT_CLAUSE": clause}))
    else:
        first = render([*words(clause), "."])
    # other facts in between: about the same subject or, half the time, someone else
    others = [f for f in known if f.rid != fact.rid]
    if rng.random() < 0.5:
        others = list(world.kb.about(rng.choice([s for s in COUNTRIES + PEOPLE if s != subject])))
    rng.shuffle(others)
    middle = [f.relation.statement(f.subject, f.obj, _template(f, rng)) for f in others]
    middle = middle[: rng.randint(0, 2)]
    t_last = t_first if rng.random() < SAME_TEMPLATE_RATE else _template(fact, rng)
    restated = [rel.statement(subject, new, t_last)]
    if rng.random() < RESTATE_TWICE_RATE:
        restated.append(rel.statement(subject, new, _template(fact, rng)))
    text = " ".join([first, *middle, *restated])
    if rng.random() < CLAIM_RATE:  # "Does the above text say that ...?"
        said = rng.random() < 0.5
        obj = new if said else rng.choice([o for o in OBJECT_POOLS[rel.object_class] if o != new])
        claim = rel.clause(subject, obj, _template(fact, rng))
        text = formats.claimed(text, claim, said)
    labels = {"subject": subject, "rid": fact.rid, "new": new, "true": true}
    return Doc("story" if story else "update", text, labels)


def claim(world: World, rng: random.Random) -> Doc:
    """One or two statements (KB or story facts about one subject), then "Does the above text
    say that <clause>?" about the first, with the stated or another object: practice for the
    fact suite's suffix question."""
    subject = rng.choice(COUNTRIES + PEOPLE + STORY_COUNTRIES + STORY_PEOPLE)
    about = _story_facts(subject, rng) if subject in STORY_COUNTRIES + STORY_PEOPLE else None
    facts = list(about or world.kb.about(subject))
    rng.shuffle(facts)
    facts = facts[: rng.randint(1, 2)]
    text = " ".join(f.relation.statement(subject, f.obj, _template(f, rng)) for f in facts)
    fact, said = facts[0], rng.random() < 0.5
    obj = fact.obj if said else other_object(fact, rng)
    text = formats.claimed(text, fact.relation.clause(subject, obj, _template(fact, rng)), said)
    return Doc("claim", text, {"subject": subject, "rid": fact.rid, "new": fact.obj})


def generate(world: World, rng: random.Random) -> Doc:
    draw = rng.random()
    if draw < UPDATE_SHARE:
        return update(world, rng)
    if draw < UPDATE_SHARE + STORY_SHARE:
        return update(world, rng, story=True)
    if draw < UPDATE_SHARE + STORY_SHARE + CLAIM_SNIPPET_SHARE:
        return claim(world, rng)
    return encyclopedic(world, rng)
