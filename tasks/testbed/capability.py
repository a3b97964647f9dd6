"""The testbed's capability tasks: records from its world, written as lm-eval tasks.

The world (grammar, knowledge base) is fixed, so these need no model: `ensure_lm_eval_tasks`
writes them once per generator version into the cache, where `--include_path` finds them.

- testbed_facts: every KB fact as a multiple-choice completion (true object against two objects
  reserved for evaluation); few-shot examples from the facts of the "fit" split, scored items
  from the others.
- testbed_grammar: a grammatical sentence of the corpus grammar against the same words shuffled
  into an order the grammar rejects.
- testbed_reading: a made-up fact about a story entity (never in the KB), then its prompt in
  another paraphrase; the answer is only in the context.
- testbed_text: documents from a held-out stream of the corpus generator (not the training
  documents of any seed), short enough for the testbed's 128-token window.
"""

from __future__ import annotations

import random
from pathlib import Path

from tasks.testbed.grammar import render, words
from tasks.testbed.kb import (
    OBJECT_POOLS,
    RELATIONS,
    STORY_COUNTRIES,
    STORY_PEOPLE,
    case_splits,
    knowledge_base,
    reserved_objects,
)
from tasks.testbed.lm_eval_tasks import write_tasks
from tasks.testbed.world import GENERATOR_VERSION, corpus_rng, generate_corpus, world

N_PER_TASK = 200  # scored items per task (few-shot pools are smaller)
N_TRAIN = 20
MAX_TEXT_WORDS = 50  # a testbed_text document stays within the model's 128 tokens


def fact_records() -> dict[str, list[dict]]:
    rng = random.Random("testbed-lm-eval-facts")
    splits = case_splits()
    out: dict[str, list[dict]] = {"train": [], "test": []}
    for fact in knowledge_base().facts:
        rel = fact.relation
        choices = [fact.obj, *reserved_objects()[(fact.subject, fact.rid)]]
        rng.shuffle(choices)
        record = {
            "question": rel.prompt(fact.subject, rng.randrange(len(rel.templates))),
            "choices": choices,
            "answer": choices.index(fact.obj),
        }
        out["train" if splits[(fact.subject, fact.rid)] == "fit" else "test"].append(record)
    return out


def grammar_records(n: int) -> list[dict]:
    grammar, rng = world().grammar, random.Random("testbed-lm-eval-grammar")
    out = []
    while len(out) < n:
        tokens = grammar.expand("SENTENCE", rng)
        if len(tokens) < 5:  # too short to have a clearly wrong order
            continue
        shuffled = list(tokens)
        for _ in range(10):
            rng.shuffle(shuffled)
            if not grammar.matches("SENTENCE", shuffled):
                out.append({"good": render(tokens), "bad": render(shuffled)})
                break
    return out


def reading_records(n: int) -> list[dict]:
    rng = random.Random("testbed-lm-eval-reading")
    subjects = {"COUNTRY": STORY_COUNTRIES, "PERSON": STORY_PEOPLE}
    out = []
    for _ in range(n):
        rel = rng.choice(RELATIONS)
        subject = rng.choice(subjects[rel.subject_class])
        obj = rng.choice(OBJECT_POOLS[rel.object_class])
        told, asked = rng.sample(range(len(rel.templates)), 2)
        passage = rel.statement(subject, obj, told)
        out.append({"passage": passage, "question": rel.prompt(subject, asked), "answer": obj})
    return out


def text_records(n: int) -> list[dict]:
    docs = generate_corpus(n_docs=20 * n, rng=corpus_rng(0, "lm-eval-text"))
    texts = [d.text.strip() for d in docs if len(words(d.text)) <= MAX_TEXT_WORDS]
    return [{"text": t} for t in texts[:n]]


def capability_records(n: int = N_PER_TASK) -> dict[str, dict[str, list[dict]]]:
    """{task: {"train": records, "test": records}} in `tasks.testbed.lm_eval_tasks`' format."""
    grammar, reading, text = (
        grammar_records(n + N_TRAIN),
        reading_records(n + N_TRAIN),
        text_records(n),
    )
    return {
        "testbed_facts": fact_records(),
        "testbed_grammar": {"train": grammar[:N_TRAIN], "test": grammar[N_TRAIN:]},
        "testbed_reading": {"train": reading[:N_TRAIN], "test": reading[N_TRAIN:]},
        "testbed_text": {"train": text[:N_TRAIN], "test": text},
    }


def lm_eval_tasks_dir(cache_dir: Path | str | None = None) -> Path:
    from tasks.testbed.build import cache_root

    return cache_root(cache_dir) / "testbed" / f"lm_eval-v{GENERATOR_VERSION}"


def ensure_lm_eval_tasks(cache_dir: Path | str | None = None) -> Path:
    """The include path of the testbed's lm-eval tasks, written on first use (seconds)."""
    directory = lm_eval_tasks_dir(cache_dir)
    if not (directory / "testbed_text.yaml").is_file():  # written last: the set is whole
        write_tasks(directory, capability_records())
    return directory
