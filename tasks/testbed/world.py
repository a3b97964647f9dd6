"""The testbed world and its seeded corpus generator.

``world()`` is the fixed part (grammar, lexicons, knowledge base); it depends only on
``GENERATOR_VERSION``. ``generate_corpus(seed, n_docs)`` samples documents from it with a
``random.Random`` seeded from a string (SHA-512 seeding: stable across Python versions and
``PYTHONHASHSEED``), so the same seed and size give a byte-identical corpus.

Bump ``GENERATOR_VERSION`` whenever the corpus, tokenizer or training recipe changes: it keys the
model cache directory.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

from . import formats
from .doc import Doc
from .genres import answers, comments, dialogues, facts, reviews
from .grammar import Grammar
from .kb import KnowledgeBase, knowledge_base

GENERATOR_VERSION = 2

# Genre mix of the corpus (share of documents). Facts get the largest share: 144 facts must be
# memorised by a small model in a few minutes of CPU training.
MIX = {"review": 0.21, "comment": 0.16, "fact": 0.40, "dialogue": 0.12, "qa": 0.11}
_GENRES = {"review": reviews, "comment": comments, "fact": facts, "dialogue": dialogues,
           "qa": answers}  # fmt: skip
_MODULES = (formats, reviews, comments, facts, dialogues, answers)


@dataclass(frozen=True)
class World:
    grammar: Grammar
    kb: KnowledgeBase


@cache
def world() -> World:
    """The grammar (every sentence the corpus can contain derives from ``SENTENCE``) and the KB."""
    rules: dict[str, list[str]] = {}
    for module in _MODULES:
        overlap = rules.keys() & module.RULES.keys()
        if overlap:
            raise ValueError(f"rules defined twice: {sorted(overlap)}")
        rules.update(module.RULES)
    rules["SENTENCE"] = [sym for module in _MODULES for sym in module.SENTENCES]
    return World(Grammar.from_text(rules), knowledge_base())


def corpus_rng(seed: int, purpose: str = "corpus") -> random.Random:
    """A generator stream for ``purpose`` ("corpus", "records-fact", ...) under ``seed``."""
    return random.Random(f"steerbench-testbed-v{GENERATOR_VERSION}-{purpose}-{seed}")


def generate_corpus(
    seed: int = 0, n_docs: int = 40_000, rng: random.Random | None = None
) -> list[Doc]:
    """``n_docs`` documents, genres drawn from ``MIX``; deterministic in (seed, n_docs).
    ``rng``: another stream than the training corpus's (held-out documents)."""
    w, rng = world(), rng or corpus_rng(seed)
    names, weights = list(MIX), list(MIX.values())
    return [_GENRES[rng.choices(names, weights)[0]].generate(w, rng) for _ in range(n_docs)]


def corpus_hash(docs: Iterable[Doc]) -> str:
    """SHA-256 over the document texts (NUL-separated)."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(doc.text.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()
