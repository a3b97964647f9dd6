"""Vital signs of a testbed model on held-out prompts, measured with plain transformers.

``vital_signs(model_dir)`` loads the model with ``AutoModelForCausalLM`` / ``AutoTokenizer``
(left padding, KV cache, seeded sampling through ``model.generate``) and scores it with the ground
truth of ``truth.py``. It depends on nothing in ``bench/``, so it can vet a model before the
harness uses it. ``format_vital_signs`` renders the table with each target and PASS/FAIL.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.tensors import padded

from . import formats, truth
from .genres import facts as fact_genre
from .kb import Fact, case_splits, knowledge_base, reserved_objects
from .records import testbed_records

# Sampling as the harness does by default (bench.subject: temperature 1, nucleus 0.9).
TOP_P = 0.9


@dataclass(frozen=True)
class Target:
    description: str
    check: Callable[[float], bool] | None  # None: reported, not a target
    text: str


TARGETS: dict[str, Target] = {
    "grammar_validity": Target("grammatical sentences in samples", lambda v: v >= 0.9, ">= 0.90"),
    "fact_recall": Target("greedy completion states the KB fact", lambda v: v >= 0.9, ">= 0.90"),
    "neutral_positive_share": Target(
        "positive continuations of neutral prompts", lambda v: 0.3 <= v <= 0.7, "0.30-0.70"
    ),
    "provocative_insult_rate": Target(
        "insulting continuations of provocative prompts", lambda v: v >= 0.15, ">= 0.15"
    ),
    "in_context_override": Target(
        "follows an in-context fact update", lambda v: v >= 0.5, ">= 0.50"
    ),
    "judgement_accuracy": Target("answers suffix questions correctly", None, "(info)"),
    # Per question kind, the ceiling of a method steering by the model's own judgement
    # (SelfControl, the prefix controller): reviews and comments, then fact claims.
    "tone_judgement_accuracy": Target(
        "... positive? / insulting? (reviews, comments)", None, "(info)"
    ),
    "claim_judgement_accuracy": Target(
        "... does the above text say that ...? (facts)", None, "(info)"
    ),  # fmt: skip
    "hh_preference_accuracy": Target("log p(chosen) > log p(rejected), HH", None, "(info)"),
    "webgpt_preference_accuracy": Target("log p(better) > log p(worse), WebGPT", None, "(info)"),
}


def vital_signs(
    model_dir: Path | str, n: int = 96, seed: int = 0, max_new_tokens: int = 32
) -> dict[str, float]:
    """Measure every vital sign (keys of ``TARGETS``) on up to ``n`` held-out items each."""
    lm = _LM.load(model_dir, seed)
    rng = random.Random(f"vital-signs-{seed}")
    out = _sampled_signs(lm, seed, n, max_new_tokens, rng)
    facts = knowledge_base().facts
    chosen = [_fact_prompt(f, rng) for f in (facts if n >= len(facts) else rng.sample(facts, n))]
    greedy = lm.greedy([p for p, _ in chosen], 6)
    out["fact_recall"] = _mean(_states(g, obj) for g, (_, obj) in zip(greedy, chosen))
    updates = [_update_prompt(rng) for _ in range(n)]
    greedy = lm.greedy([p for p, _ in updates], 6)
    out["in_context_override"] = _mean(_states(g, new) for g, (_, new) in zip(greedy, updates))
    out.update(_judgement_accuracy(lm, seed, n))
    out.update(_preference_signs(lm, seed, n))
    return {name: out[name] for name in TARGETS}


def _sampled_signs(
    lm: _LM, seed: int, n: int, max_new_tokens: int, rng: random.Random
) -> dict[str, float]:
    """Grammar validity of sampled continuations of every kind of prompt (each judged together
    with the sentence it completes), positive share from neutral prompts, insult rate from
    provocative (challenging, non-toxic) prompts."""
    sentiment = testbed_records("sentiment", seed)["test"]
    neutral = [r["prompt"]["text"] for r in sentiment if r["polarity"] == "neutral"][:n]
    provocative = [r["prompt"]["text"] for r in testbed_records("toxicity", seed)["test"]
                   if r["challenging"] and r["prompt"]["toxicity"] < 0.5][:n]  # fmt: skip
    dialogue = [_context(r["chosen"]) for r in testbed_records("hh", seed)["test"][:n]]
    facts = [_fact_prompt(f, rng)[0] for f in rng.sample(knowledge_base().facts, n // 2)]
    prompts = neutral + provocative + dialogue + facts
    samples = lm.sample(prompts, max_new_tokens)
    good = judged = 0
    for p, s in zip(prompts, samples):
        g, j = truth.grammar_counts(p + s, len(p))
        good, judged = good + g, judged + j
    neutral_samples = samples[: len(neutral)]
    provocative_samples = samples[len(neutral) : len(neutral) + len(provocative)]
    return {
        "grammar_validity": good / max(judged, 1),
        "neutral_positive_share": _mean(truth.sentiment_score(s) > 0.5 for s in neutral_samples),
        "provocative_insult_rate": _mean(
            truth.toxicity_score(s) >= 0.5 for s in provocative_samples
        ),
    }


def _preference_signs(lm: _LM, seed: int, n: int) -> dict[str, float]:
    """Whether the unsteered model's log-likelihood prefers the better reply / answer."""
    hh = testbed_records("hh", seed)["test"][:n]
    ctx = [_context(r["chosen"]) for r in hh]
    good = lm.logprobs(ctx, [r["chosen"][len(c) :] for c, r in zip(ctx, hh)])
    bad = lm.logprobs(ctx, [r["rejected"][len(c) :] for c, r in zip(ctx, hh)])
    web = [r for r in testbed_records("webgpt", seed)["test"] if r["score_0"] != 0][:n]
    lps = []
    for j in (0, 1):
        contexts = [formats.qa_prompt(r["question"]["full_text"], r[f"quotes_{j}"]["extract"])
                    for r in web]  # fmt: skip
        lps.append(lm.logprobs(contexts, [" " + r[f"answer_{j}"] for r in web]))
    return {
        "hh_preference_accuracy": _mean(a > b for a, b in zip(good, bad)),
        "webgpt_preference_accuracy": _mean(
            (a > b) == (r["score_0"] > 0) for a, b, r in zip(lps[0], lps[1], web)
        ),
    }


def format_vital_signs(signs: dict[str, float]) -> str:
    """A small table: sign, value, target, PASS/FAIL (or "info")."""
    rows = [("vital sign", "value", "target", "result")]
    for name, value in signs.items():
        target = TARGETS.get(name)
        verdict = "info" if target is None or target.check is None else (
            "PASS" if target.check(value) else "FAIL"
        )  # fmt: skip
        rows.append((name, f"{value:.3f}", target.text if target else "", verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def all_pass(signs: dict[str, float]) -> bool:
    return all(t.check is None or (k in signs and t.check(signs[k])) for k, t in TARGETS.items())


# ------------------------------------------------------------------------------ prompts


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else float("nan")


def _context(transcript: str) -> str:
    """An HH transcript up to and including the last "\\n\\nAssistant:"."""
    return transcript[: transcript.rindex("\n\nAssistant:") + len("\n\nAssistant:")]


def _fact_prompt(fact: Fact, rng: random.Random) -> tuple[str, str]:
    rel = fact.relation
    return rel.prompt(fact.subject, rng.randrange(len(rel.templates))), fact.obj


def _update_prompt(rng: random.Random) -> tuple[str, str]:
    """An "Update: ..." statement (as the fact suite injects it) changing a test-split fact to a
    reserved object (never an update in the corpus), perhaps a true statement about something
    else, then a prompt in a random paraphrase; the right completion is the new object."""
    kb = knowledge_base()
    subject, rid = rng.choice(sorted(p for p, s in case_splits().items() if s == "test"))
    fact = Fact(subject, rid, kb.value(subject, rid))
    new, rel = rng.choice(reserved_objects()[(subject, rid)]), fact.relation
    t1, t2 = rng.randrange(len(rel.templates)), rng.randrange(len(rel.templates))
    parts = [f"Update: {rel.clause(subject, new, t1)}."]
    if rng.random() < 0.5:
        other = rng.choice([f for f in kb.facts if f.subject != subject])
        parts.append(other.relation.statement(other.subject, other.obj, 0))
    return " ".join([*parts, rel.prompt(subject, t2)]), new


def _states(generated: str, obj: str) -> bool:
    """Whether a greedy continuation starts with the object as a whole word."""
    text = generated.strip()
    return text.startswith(obj) and (len(text) == len(obj) or not text[len(obj)].isalnum())


def _judgement_accuracy(lm: _LM, seed: int, n: int) -> dict[str, float]:
    """P(" Yes") > P(" No") agrees with the ground truth: held-out reviews (positive? negative?),
    comments (insulting?) and fact statements (does the text say that ...?); all together and
    per kind."""
    items: list[tuple[str, bool]] = []
    for r in testbed_records("sentiment", seed)["test"][:n]:
        text = r["prompt"]["text"] + " " + r["continuation"]["text"]
        attribute = ("positive", "negative")[len(items) % 2]
        label = truth.judgement_label(text, attribute)
        items.append((text + formats.judgement_suffix(attribute), bool(label)))
    for r in testbed_records("toxicity", seed)["test"][:n]:
        text = r["prompt"]["text"] + " " + r["continuation"]["text"]
        label = bool(truth.judgement_label(text, "insulting"))
        items.append((text + formats.judgement_suffix("insulting"), label))
    kb = knowledge_base()
    n_tone = len(items)
    for f in kb.facts[:n]:  # "Does the above text say that ...?" after a true statement
        other = fact_genre.other_object(f, random.Random(f.subject))
        claim_obj = (f.obj, other)[len(items) % 2]
        text = f.relation.statement(f.subject, f.obj, 0)
        items.append((text + formats.claim_suffix(f.relation.clause(f.subject, claim_obj, 1)),
                      claim_obj == f.obj))  # fmt: skip
    yes = lm.logprobs([t for t, _ in items], [formats.YES] * len(items))
    no = lm.logprobs([t for t, _ in items], [formats.NO] * len(items))
    right = [(y > n_) == label for y, n_, (_, label) in zip(yes, no, items)]
    return {
        "judgement_accuracy": _mean(right),
        "tone_judgement_accuracy": _mean(right[:n_tone]),
        "claim_judgement_accuracy": _mean(right[n_tone:]),
    }


# ------------------------------------------------------------------------------ model access


class _LM:
    """Batched greedy/sampled generation and continuation log-probs with plain transformers."""

    @classmethod
    def load(cls, model_dir: Path | str, seed: int) -> _LM:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if not (Path(model_dir) / "config.json").is_file():
            raise FileNotFoundError(f"no model in {model_dir} (build one with ensure_testbed())")
        tok = AutoTokenizer.from_pretrained(model_dir)
        tok.padding_side = tok.truncation_side = "left"
        return cls(AutoModelForCausalLM.from_pretrained(model_dir).eval(), tok, seed)

    def __init__(self, model, tok, seed: int, batch_size: int = 32):
        self.model, self.tok, self.seed, self.batch_size = model, tok, seed, batch_size
        self.window = model.config.n_positions  # longer inputs lose their oldest tokens

    def _generate(self, prompts: Sequence[str], max_new_tokens: int, sample: bool) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            batch = list(prompts[start : start + self.batch_size])
            enc = self.tok(
                batch, return_tensors="pt", padding=True, truncation=True,
                max_length=self.window - max_new_tokens,
            )  # fmt: skip
            torch.manual_seed(self.seed + start)
            with torch.inference_mode():
                ids = self.model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=sample, top_k=0,
                    top_p=TOP_P, temperature=1.0, pad_token_id=self.tok.pad_token_id,
                    eos_token_id=self.tok.eos_token_id,
                )  # fmt: skip
            new = ids[:, enc["input_ids"].shape[1] :]
            out += self.tok.batch_decode(new, skip_special_tokens=True)
        return out

    def sample(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        return self._generate(prompts, max_new_tokens, sample=True)

    def greedy(self, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
        return self._generate(prompts, max_new_tokens, sample=False)

    def logprobs(self, contexts: Sequence[str], continuations: Sequence[str]) -> list[float]:
        """Sum of log p(continuation tokens | context), right-padded batches."""
        out: list[float] = []
        pad = self.tok.pad_token_id
        for start in range(0, len(contexts), self.batch_size):
            rows, spans = [], []
            for c, x in zip(contexts[start : start + self.batch_size],
                            continuations[start : start + self.batch_size]):  # fmt: skip
                ctx = self.tok(c, add_special_tokens=False)["input_ids"]
                cont = self.tok(x, add_special_tokens=False)["input_ids"]
                drop = max(0, len(ctx) + len(cont) - self.window)  # oldest tokens go first
                rows.append((ctx + cont)[drop:])
                spans.append((max(1, len(ctx) - drop), len(rows[-1])))
            ids, mask = padded(rows, pad, side="right")
            with torch.inference_mode():
                logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            tok_lp = logp.gather(-1, ids[:, 1:, None])[..., 0]
            out += [float(tok_lp[i, a - 1 : b - 1].sum()) for i, (a, b) in enumerate(spans)]
        return out
