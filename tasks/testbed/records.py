"""Testbed data for each task suite, in the record schemas of the real data sets.

``testbed_records(suite, seed=0)`` returns ``{"fit": [...], "select": [...], "test": [...]}``
(lists of plain JSON-able dicts), deterministic in ``seed``. Held out from the training corpus:
select/test sentiment and toxicity prompts name places/topics the corpus never mentions; fact
cases inject only objects the corpus never updates their fact to (``kb.reserved_objects``), split
by (subject, relation) pair; select/test HH
transcripts use reserved task combinations; select/test WebGPT questions are never asked in it.

Schemas (one per suite, all three splits alike unless noted):

* ``"toxicity"`` (RealToxicityPrompts): ``{"filename", "begin", "end", "challenging": bool,
  "prompt": {"text", "toxicity", "insult"}, "continuation": {"text", "toxicity", "insult"}}``;
  scores from ``truth.toxicity_score``. Challenging = provocative opening (non-toxic prompt that
  invites an insult) or a prompt already containing one.
* ``"sentiment"``: fit = SST-2 ``{"label": 0|1, "sentence"}`` (lower-cased, space-tokenised,
  label 1 = positive); select/test = DExperts prompts ``{"md5_hash", "prompt": {"text"},
  "continuation": {"text"}, "num_positive": 0..25, "polarity": "neutral"|"positive"|"negative"}``
  (``polarity`` names the DExperts file the record would come from).
* ``"fact"`` (CounterFact): ``{"case_id", "requested_rewrite": {"prompt" (with "{}"), "subject",
  "relation_id", "target_new": {"str", "id"}, "target_true": {"str", "id"}},
  "paraphrase_prompts", "neighborhood_prompts", "attribute_prompts", "generation_prompts"}``.
* ``"hh"`` (Anthropic HH-RLHF): ``{"chosen", "rejected"}`` full transcripts sharing all but the
  last Assistant turn.
* ``"webgpt"`` (openai/webgpt_comparisons): ``{"question": {"dataset", "id", "full_text"},
  "quotes_0": {"title": [...], "extract": [...]}, "answer_0", "tokens_0": {"prefix": [...],
  "completion": [...]}, "score_0", ... "_1"}``; scores in [-1, 1] sum to 0 (0 = tie); tokens are
  word tokens (``grammar.words``), not GPT-2 BPE.
"""

from __future__ import annotations

import copy
import hashlib
import random
from collections.abc import Callable
from functools import cache

from . import truth
from .formats import qa_prompt
from .genres import answers, comments, dialogues, reviews
from .grammar import render, words
from .kb import RELATION_BY_ID, Fact, case_splits, knowledge_base, reserved_objects
from .world import World, corpus_rng, world

SPLITS = ("fit", "select", "test")
SIZES = {  # records per split
    "toxicity": (200, 100, 200),
    "sentiment": (400, 90, 300),
    "hh": (300, 100, 200),
    "webgpt": (300, 100, 200),
}
SUITES = ("toxicity", "sentiment", "fact", "hh", "webgpt")


def testbed_records(suite: str, seed: int = 0) -> dict[str, list[dict]]:
    """Records of ``suite`` ("toxicity", "sentiment", "fact", "hh", "webgpt") by split."""
    if suite not in _MAKERS:
        raise ValueError(f"unknown testbed suite {suite!r}; one of {', '.join(SUITES)}")
    return copy.deepcopy(_cached(suite, seed))  # callers may mutate their copy


@cache
def _cached(suite: str, seed: int) -> dict[str, list[dict]]:
    out = {}
    for i, split in enumerate(SPLITS):
        rng = corpus_rng(seed, f"records-{suite}-{split}")
        out[split] = _MAKERS[suite](world(), rng, split, SIZES.get(suite, (0, 0, 0))[i])
    return out


# ------------------------------------------------------------------------------ toxicity


def _cut_after(tokens: list[str], rng: random.Random) -> int:
    """A word boundary inside a sentence, leaving at least one word (and the end) to continue."""
    return rng.randint(1, max(1, len(tokens) - 2))


def _toxicity(world: World, rng: random.Random, split: str, n: int) -> list[dict]:
    out = []
    for i in range(n):
        kind = rng.choices(("provocative", "toxic", "polite"), (0.5, 0.15, 0.35))[0]
        prompt, cont = _comment_prompt(world, rng, kind, heldout=split != "fit")
        out.append({
            "filename": f"testbed-{split}-{i:05d}.txt", "begin": 0, "end": len(prompt),
            "challenging": kind != "polite",
            "prompt": _tox(prompt), "continuation": _tox(cont),
        })  # fmt: skip
    return out


def _comment_prompt(world: World, rng: random.Random, kind: str, heldout: bool) -> tuple[str, str]:
    """(prompt, continuation). provocative: the opening up to its tone-deciding ending;
    toxic: opening + a complete insulting sentence; polite: cut inside a polite comment."""
    while True:
        c = comments.make_comment(
            world, rng, provocative=kind == "provocative",
            insulting={"toxic": True, "polite": False}.get(kind), heldout=heldout,
        )  # fmt: skip
        if kind != "toxic" or len(c.body) >= 2:
            break
    full = c.text()
    if kind == "provocative":
        prompt = render(c.opening[: c.cut])
    elif kind == "toxic":
        prompt = " ".join([render(c.opening), c.body[0]])
    else:
        body = words(c.body[0])
        prompt = " ".join([render(c.opening), render(body[: _cut_after(body, rng)])])
    return prompt, full[len(prompt) :].strip()


def _tox(text: str) -> dict:
    score = round(truth.toxicity_score(text), 4)
    return {"text": text, "toxicity": score, "insult": score}


# ------------------------------------------------------------------------------ sentiment


def _sentiment(world: World, rng: random.Random, split: str, n: int) -> list[dict]:
    if split == "fit":
        return [_sst(world, rng, label=i % 2) for i in range(n)]
    polarities = ("neutral", "positive", "negative")
    return [_dexperts(world, rng, polarities[i % 3]) for i in range(n)]


def _sst(world: World, rng: random.Random, label: int) -> dict:
    """An SST-2-style sentence: 1-2 body sentences of a review, lower-cased, space-tokenised
    ("the food was delicious ."); of a mixed review only its first, planted-polarity one."""
    r = reviews.make_review(world, rng, "positive" if label else "negative")
    body = r.body[:1] if r.mixed else r.body[: rng.randint(1, 2)]
    return {"label": label, "sentence": " ".join(" ".join(s) for s in body).lower()}


def _review_prompt(world: World, rng: random.Random, polarity: str) -> tuple[str, str]:
    """(prompt, continuation) from a held-out review. Neutral: "<intro> The <aspect> was";
    positive/negative: "<intro> <first polar sentence> <start of the next sentence>"."""
    review_polarity = None if polarity == "neutral" else polarity
    r = reviews.make_review(world, rng, review_polarity, heldout=True, was_first=True)
    if polarity == "neutral":
        sentence, k, before = r.body[0], 3, []  # "the <aspect> was" | adjective ...
    else:
        sentence = r.body[1]
        k, before = _cut_after(list(sentence), rng), [render(r.body[0])]
    prompt = " ".join([*r.intro, *before, render(sentence[:k])])
    full = " ".join([*r.intro, *before, *(render(s) for s in r.body[len(before) :][:2])])
    return prompt, full[len(prompt) :].strip()


def _dexperts(world: World, rng: random.Random, polarity: str) -> dict:
    prompt, cont = _review_prompt(world, rng, polarity)
    # num_positive: like DExperts' 25 GPT-2 samples, 25 draws of the generator's own
    # continuation for a prompt of this kind, scored by the ground truth
    draws = [_review_prompt(world, rng, polarity)[1] for _ in range(25)]
    return {
        "md5_hash": hashlib.md5(prompt.encode()).hexdigest(),
        "prompt": {"text": prompt},
        "continuation": {"text": cont},
        "num_positive": sum(truth.sentiment_score(d) > 0.5 for d in draws),
        "polarity": polarity,
    }


# ------------------------------------------------------------------------------ facts


def _fact(world: World, rng: random.Random, split: str, n: int) -> list[dict]:
    kb = knowledge_base()
    pairs = sorted(p for p, s in case_splits().items() if s == split)
    out = []
    for subject, rid in pairs:
        rel = RELATION_BY_ID[rid]
        if rel.unique:  # capitals: no neighbourhood with the same object, not a CounterFact case
            continue
        true = kb.value(subject, rid)
        for new in reserved_objects()[(subject, rid)]:  # never an update in the corpus
            out.append(_counterfact(world, rng, Fact(subject, rid, true), new, len(out)))
    base = {"fit": 0, "select": 10_000, "test": 20_000}[split]
    for rec in out:
        rec["case_id"] += base
    return out


def _counterfact(world: World, rng: random.Random, fact: Fact, new: str, case_id: int) -> dict:
    rel, kb = fact.relation, knowledge_base()
    t_main = rng.randrange(len(rel.templates))
    others = [t for t in range(len(rel.templates)) if t != t_main]

    def filler() -> str:  # an unrelated true statement, as CounterFact's random prefixes
        other = rng.choice([f for f in kb.facts if f.subject != fact.subject])
        return other.relation.statement(other.subject, other.obj, 0)

    neighbours = [s for s in kb.sharing(fact.rid, fact.obj) if s != fact.subject]
    attribute = [s for s in kb.sharing(fact.rid, new) if s != fact.subject]

    def prompts(subjects: list[str]) -> list[str]:
        return [rel.prompt(s, rng.randrange(len(rel.templates))) for s in subjects[:10]]

    return {
        "case_id": case_id,
        "requested_rewrite": {
            "prompt": rel.prompt("{}", t_main),
            "subject": fact.subject,
            "relation_id": fact.rid,
            "target_new": {"str": new, "id": f"testbed:{new}"},
            "target_true": {"str": fact.obj, "id": f"testbed:{fact.obj}"},
        },
        "paraphrase_prompts": [f"{filler()} {rel.prompt(fact.subject, t)}" for t in others[:2]],
        "neighborhood_prompts": prompts(neighbours),
        "attribute_prompts": prompts(attribute),
        "generation_prompts": [rel.prompt(fact.subject, t) for t in others]
        + [f"{fact.subject} is"],
    }


# ------------------------------------------------------------------------------ preferences


def _hh(world: World, rng: random.Random, split: str, n: int) -> list[dict]:
    out = []
    for _ in range(n):
        harmful = rng.random() < 0.35
        good = "refusal" if harmful else "helpful"
        bad = "compliance" if harmful else rng.choice(("unhelpful", "unhelpful", "rude"))
        d = dialogues.make_dialogue(
            world, rng, request="harmful" if harmful else "benign", reply_kind=good,
            heldout=split != "fit",
        )  # fmt: skip
        worse = dialogues.reply(world, rng, bad, d.task)
        out.append({"chosen": d.text(), "rejected": d.text(worse)})
    return out


def _webgpt(world: World, rng: random.Random, split: str, n: int) -> list[dict]:
    pairs = sorted(p for p, s in case_splits().items() if s == split)
    kb, out = knowledge_base(), []
    for i in range(n):
        subject, rid = rng.choice(pairs)
        fact = Fact(subject, rid, kb.value(subject, rid))
        question = answers.question(fact, rng)
        qa = rng.randrange(4)  # planted qualities; 10 % ties
        qb = qa if rng.random() < 0.1 else rng.choice([q for q in range(4) if q != qa])
        a, b = answers.answer(world, rng, fact, qa), answers.answer(world, rng, fact, qb)
        rec: dict = {"question": {"dataset": "testbed", "id": f"testbed-{split}-{i:05d}",
                                  "full_text": question}}  # fmt: skip
        for j, ans, score in ((0, a, (qa - qb) / 3), (1, b, (qb - qa) / 3)):
            rec[f"quotes_{j}"] = {"title": [f"{subject} - Testbed Encyclopedia"] * len(ans.quotes),
                                  "extract": list(ans.quotes)}  # fmt: skip
            rec[f"answer_{j}"] = ans.text
            rec[f"tokens_{j}"] = {"prefix": words(qa_prompt(question, ans.quotes)),
                                  "completion": words(ans.text)}  # fmt: skip
            rec[f"score_{j}"] = round(score, 6) + 0.0  # + 0.0: no "-0.0"
        out.append(rec)
    return out


_MAKERS: dict[str, Callable[[World, random.Random, str, int], list[dict]]] = {
    "toxicity": _toxicity,
    "sentiment": _sentiment,
    "fact": _fact,
    "hh": _hh,
    "webgpt": _webgpt,
}
