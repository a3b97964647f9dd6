"""The knowledge base of the testbed world: fictional countries and people, six relations.

The KB is fixed for a ``GENERATOR_VERSION`` (built from a constant seed, independent of the
corpus seed), so every seed's model learns the *same* facts and the ground truth needs no seed.

Relations carry CounterFact's Wikidata ids. Each relation has paraphrase templates written as a
*prompt* (with ``{}`` for the subject, ending right before the object) and a *tail* after the
object; the statement is ``prompt.format(s) + " " + object + tail``. Object pools are shared
(except capitals), so CounterFact-style neighbourhood prompts (other subjects with the same true
object) exist for every rewritable relation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache, cached_property

KB_SEED = 20240601  # fixed: the world's facts do not depend on the corpus seed

COUNTRIES = (
    "Vorland", "Estmark", "Kaldoria", "Brivania", "Olmesia", "Tarvos", "Quellan", "Zephora",
    "Dunmarra", "Ostrelia", "Marvonia", "Velstad", "Grenwald", "Surevia", "Pallidor",
    "Ketheria", "Norvath", "Ambrosa", "Lunaris", "Corvenna", "Halvoria", "Istrana", "Belmora",
    "Rondavia",
)  # fmt: skip
CITIES = (
    "Brellin", "Tessa", "Korvik", "Almara", "Dresk", "Vantor", "Pelloq", "Simbra", "Orvane",
    "Keldt", "Marrow", "Fennick", "Tolvay", "Gasparre", "Ulmin", "Redcastle", "Quorra",
    "Hallowmere", "Istvik", "Bramble", "Cordane", "Yslin", "Westerby", "Noxhall",
)  # fmt: skip
PEOPLE = (
    "Mira Solvane", "Tomas Velde", "Anika Brandt", "Joren Halst", "Lysa Moreau",
    "Pavel Dunning", "Edda Karsk", "Oskar Lindqvist", "Rhea Tallis", "Bram Okonjo",
    "Selma Varga", "Nico Arden", "Ilse Fairholm", "Dario Kwenn", "Freya Osterholt",
    "Caspar Wyld", "Tove Marlin", "Ruben Ashgrove", "Greta Solheim", "Milo Castellane",
    "Vera Ondrik", "Hugo Pemberley", "Nadia Ferrow", "Elias Thorne",
)  # fmt: skip
# Story entities: never in the KB; each story document makes up their facts afresh.
STORY_COUNTRIES = ("Zarnia", "Feldmark", "Oskovia", "Trelland", "Varnhold", "Sondria", "Ulvenia",
                   "Drossa", "Perimont", "Castellia", "Olvera", "Quintar")  # fmt: skip
STORY_PEOPLE = ("Ada Finch", "Boris Kell", "Clara Venn", "Dmitri Hale", "Elena Moss",
                "Felix Grady", "Gwen Arlo", "Henrik Sato", "Iris Quill", "Jonas Reiter",
                "Kira Lund", "Leon Brask")  # fmt: skip
LANGUAGES = ("French", "Spanish", "German", "Dutch", "Greek", "Polish")
CONTINENTS = ("Europe", "Asia", "Africa", "Oceania", "America")
OCCUPATIONS = ("painter", "farmer", "doctor", "sailor", "baker", "poet", "lawyer", "chemist")
INSTRUMENTS = ("piano", "violin", "guitar", "drums", "flute", "cello")


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


@dataclass(frozen=True)
class Relation:
    """One relation: CounterFact-style id, subject and object classes, phrasings."""

    rid: str  # Wikidata id as in CounterFact, e.g. "P36"
    name: str
    subject_class: str  # "COUNTRY" or "PERSON" (a grammar nonterminal)
    object_class: str  # grammar nonterminal of the object pool
    templates: tuple[tuple[str, str], ...]  # (prompt with "{}", tail after the object, no ".")
    questions: tuple[str, ...]  # WebGPT-style questions, "{}" for the subject
    unique: bool = False  # objects not shared between subjects (no neighbourhood)

    def clause(self, subject: str, obj: str, template: int = 0) -> str:
        """'the capital of Vorland is Brellin' (no capital letter, no full stop)."""
        prompt, tail = self.templates[template]
        return f"{prompt.format(subject)} {obj}{tail}"

    def statement(self, subject: str, obj: str, template: int = 0) -> str:
        """'The capital of Vorland is Brellin.'"""
        return _capitalize(self.clause(subject, obj, template)) + "."

    def question(self, subject: str, which: int = 0) -> str:
        return _capitalize(self.questions[which].format(subject))

    def prompt(self, subject: str, template: int = 0) -> str:
        """'The capital of Vorland is' — the object follows after a space."""
        return _capitalize(self.templates[template][0].format(subject))


RELATIONS = (
    Relation(
        "P36", "capital", "COUNTRY", "CITY",
        (("the capital of {} is", ""), ("{}'s capital is", ""),
         ("the capital city of {} is", ""), ("the government of {} sits in", "")),
        ("what is the capital of {}?", "which city is the capital of {}?"),
        unique=True,
    ),
    Relation(
        "P37", "official language", "COUNTRY", "LANGUAGE",
        (("the official language of {} is", ""), ("in {}, people speak", ""),
         ("{}'s official language is", ""), ("most people in {} speak", "")),
        ("what language do people speak in {}?", "what is the official language of {}?"),
    ),
    Relation(
        "P30", "continent", "COUNTRY", "CONTINENT",
        (("{} is a country in", ""), ("{} is located in", ""), ("{} lies in", "")),
        ("where is {} located?", "on which continent is {}?"),
    ),
    Relation(
        "P106", "occupation", "PERSON", "OCCUPATION",
        (("{} works as a", ""), ("{} is a", " by profession"), ("{} earns a living as a", "")),
        ("what does {} do for a living?", "what is the profession of {}?"),
    ),
    Relation(
        "P27", "citizenship", "PERSON", "COUNTRY",
        (("{} is a citizen of", ""), ("{} holds a passport from", ""),
         ("{} has the citizenship of", "")),
        ("which country is {} a citizen of?", "where does {} hold citizenship?"),
    ),
    Relation(
        "P1303", "instrument", "PERSON", "INSTRUMENT",
        (("{} plays the", ""), ("the instrument of {} is the", ""),
         ("{} is known for playing the", "")),
        ("which instrument does {} play?", "what instrument is {} known for?"),
    ),
)  # fmt: skip
RELATION_BY_ID = {r.rid: r for r in RELATIONS}
OBJECT_POOLS = {
    "CITY": CITIES,
    "LANGUAGE": LANGUAGES,
    "CONTINENT": CONTINENTS,
    "OCCUPATION": OCCUPATIONS,
    "COUNTRY": COUNTRIES,
    "INSTRUMENT": INSTRUMENTS,
}
SUBJECTS = {"COUNTRY": COUNTRIES, "PERSON": PEOPLE}


@dataclass(frozen=True)
class Fact:
    subject: str
    rid: str
    obj: str

    @property
    def relation(self) -> Relation:
        return RELATION_BY_ID[self.rid]


@dataclass(frozen=True)
class KnowledgeBase:
    facts: tuple[Fact, ...]

    def value(self, subject: str, rid: str) -> str | None:
        return self._index.get((subject, rid))

    @cached_property
    def _index(self) -> dict[tuple[str, str], str]:
        return {(f.subject, f.rid): f.obj for f in self.facts}

    def about(self, subject: str) -> tuple[Fact, ...]:
        return tuple(f for f in self.facts if f.subject == subject)

    def sharing(self, rid: str, obj: str) -> tuple[str, ...]:
        """Subjects whose true object for ``rid`` is ``obj``."""
        return tuple(f.subject for f in self.facts if f.rid == rid and f.obj == obj)


def _spread(pool: tuple[str, ...], n: int, rng: random.Random) -> list[str]:
    """n objects from pool, every object used at least twice when n allows (shuffled)."""
    reps = -(-n // len(pool))
    out = (list(pool) * reps)[:n]
    rng.shuffle(out)
    return out


SPLITS = (("fit", 0.6), ("select", 0.2), ("test", 0.2))


@cache
def case_splits() -> dict[tuple[str, str], str]:
    """(subject, relation id) -> "fit" | "select" | "test": which split a pair's CounterFact
    cases and WebGPT questions belong to (the corpus asks QA questions about "fit" pairs only)."""
    pairs = sorted((f.subject, f.rid) for f in knowledge_base().facts)
    random.Random(KB_SEED + 1).shuffle(pairs)
    out: dict[tuple[str, str], str] = {}
    start = 0
    for name, share in SPLITS:
        stop = len(pairs) if name == SPLITS[-1][0] else start + round(share * len(pairs))
        out.update((p, name) for p in pairs[start:stop])
        start = stop
    return out


@cache
def reserved_objects() -> dict[tuple[str, str], tuple[str, str]]:
    """(subject, relation id) -> two false objects reserved for evaluation: the CounterFact
    records and the in-context vital sign inject only these, and the corpus never updates a
    fact to them, so no evaluated injection occurs verbatim in training."""
    rng = random.Random(KB_SEED + 2)
    out = {}
    for f in knowledge_base().facts:
        pool = sorted(o for o in OBJECT_POOLS[f.relation.object_class] if o != f.obj)
        out[(f.subject, f.rid)] = tuple(rng.sample(pool, 2))
    return out


@cache
def knowledge_base() -> KnowledgeBase:
    rng = random.Random(KB_SEED)
    facts: list[Fact] = []
    capitals = list(CITIES)
    rng.shuffle(capitals)
    for rel in RELATIONS:
        subjects = SUBJECTS[rel.subject_class]
        if rel.unique:
            objects = capitals[: len(subjects)]
        elif rel.rid == "P27":  # citizenship: a person's country, countries repeat
            objects = _spread(COUNTRIES[:8], len(subjects), rng)
        else:
            objects = _spread(OBJECT_POOLS[rel.object_class], len(subjects), rng)
        facts += [Fact(s, rel.rid, o) for s, o in zip(subjects, objects, strict=True)]
    return KnowledgeBase(tuple(facts))
