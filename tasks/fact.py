"""Fact-injection suite (CounterFact, Meng et al. 2022 "ROME"): inject a counterfactual fact.

Each CounterFact case asks to rewrite (subject, relation, true object) into a new object, e.g.
"The mother tongue of Danielle Darrieux is" French -> English. Every case is its own steering
target (`fact:<case_id>`), fitted on the rewrite prompt only. The metrics follow ROME's code
(`experiments/summarize.py`), where P(o) is the per-token mean of log p(" o" | prompt) (an
averaged NLL, compared and exponentiated):

- efficacy score: P(new) > P(true) on the rewrite prompt; efficacy magnitude: P(new) - P(true)
  with P = exp(mean log-probability);
- paraphrase score / magnitude: the same, averaged over the case's paraphrase prompts;
- neighbourhood score / magnitude: on prompts about *other* subjects that share the true object,
  P(true) > P(new) (the edit must not spill over), and P(true) - P(new);
- CounterFact score: the harmonic mean of the efficacy, paraphrase and neighbourhood scores
  (a `DerivedMetric` over the cell's aggregates, as ROME computes it);
- generation entropy: ROME's fluency measure, the weighted average of bi- and tri-gram entropies
  (weights 2/3, 4/3, log base 2) of each generated text (prompt + continuation), averaged. The
  runner adds perplexity and distinct-n of the same generations; perplexity here is scored with
  the new fact before the prompt (`Generate.fluency_context`), so that a successful edit is not
  penalised as disfluent for contradicting what the unsteered evaluator believes.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.judgement import JudgedPair, JudgementPairs
from bench.metric import DerivedMetric, Metric, mean
from bench.subject import ContinuationScore
from bench.target import SteeringTarget, SuffixQuestion
from bench.task import Example, Generate, Loglikelihood, Output, Request, Scored, Splits
from tasks import builtin_records
from tasks.common import NO, YES, Suite, SuiteParams, build_splits
from tasks.data_sources import SuiteData
from tasks.loading import Dataset

COUNTERFACT = Dataset("CounterFact", "azhx/counterfact", "counterfact.json")
DATA = SuiteData("fact_injection", "fact", COUNTERFACT, builtin_records.counterfact_records)

METRICS = (
    Metric("efficacy_score", True, "P(new) > P(true) on the rewrite prompt"),
    Metric("efficacy_magnitude", True, "P(new) - P(true) on the rewrite prompt"),
    Metric("paraphrase_score", True, "P(new) > P(true) on paraphrase prompts"),
    Metric("paraphrase_magnitude", True, "P(new) - P(true) on paraphrase prompts"),
    Metric("neighborhood_score", True, "P(true) > P(new) on neighbourhood prompts"),
    Metric("neighborhood_magnitude", True, "P(true) - P(new) on neighbourhood prompts"),
    Metric("generation_entropy", True, "ROME's weighted bi/tri-gram entropy of generations"),
)
SCORE = DerivedMetric(
    "counterfact_score",
    higher_is_better=True,
    of=("efficacy_score", "paraphrase_score", "neighborhood_score"),
    combine="harmonic_mean",
    description="harmonic mean of efficacy, paraphrase and neighbourhood scores (ROME's S)",
)


@dataclass(frozen=True)
class FactExample(Example):
    subject: str
    prompt: str  # the rewrite prompt with the subject filled in, ending before the object
    target_new: str
    target_true: str
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()

    @property
    def statement(self) -> str:
        """The new fact as a sentence: "The mother tongue of Danielle Darrieux is English."."""
        return f"{self.prompt} {self.target_new}."


@dataclass(frozen=True)
class FactParams(SuiteParams):
    split: str = "train"
    n_fit: int = 8  # cases whose edits serve as demonstrations (in-context editing)
    n_select: int = 16  # every case is its own target: methods fit once per case
    n_neighborhood: int = 10  # CounterFact has 10 per case
    n_generation_prompts: int = 2  # CounterFact has about 10 per case; ROME used all
    max_new_tokens: int = 40  # ROME generated 100 tokens
    length_normalised: bool = True  # ROME compares per-token mean log-probabilities

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.n_neighborhood < 0 or self.n_generation_prompts < 0:
            raise ValueError("n_neighborhood and n_generation_prompts must be >= 0")


def parse_counterfact(record: dict[str, Any], key: str) -> FactExample | None:
    rewrite = record.get("requested_rewrite")
    if isinstance(rewrite, list):  # some copies wrap the rewrite in a one-element list
        rewrite = rewrite[0]
    if not rewrite:
        return None
    subject = rewrite["subject"]
    template = rewrite["prompt"]
    prompt = template.format(subject) if "{}" in template else template
    return FactExample(
        id=f"fact:{record.get('case_id', key)}",
        subject=subject,
        prompt=prompt,
        target_new=rewrite["target_new"]["str"],
        target_true=rewrite["target_true"]["str"],
        paraphrase_prompts=tuple(record.get("paraphrase_prompts") or ()),
        neighborhood_prompts=tuple(record.get("neighborhood_prompts") or ()),
        generation_prompts=tuple(record.get("generation_prompts") or ()),
    )


def clause(example: FactExample) -> str:
    """The new fact as a clause to follow "that" or "Update:": "the capital of Vorland is
    Tessa" (first letter lowered unless the sentence starts with the subject's name)."""
    sentence = f"{example.prompt} {example.target_new}"
    if sentence.startswith(example.subject):
        return sentence
    return sentence[:1].lower() + sentence[1:]


@dataclass(frozen=True)
class FactTexts:
    """The fact suite's texts for one source: functions of a case, each case being its own
    target."""

    statement: Callable[[FactExample], str]  # the new fact as injected text (and memory)
    instructions: Callable[[str], tuple[str, ...]]  # the prompting baseline's, from the statement
    # SelfControl's judgement after a response: (question, target answer, contrast answer).
    suffix: Callable[[FactExample], tuple[str, str, str]]


REAL_TEXTS = FactTexts(
    statement=lambda case: case.statement,
    instructions=lambda statement: (
        f"New fact: {statement}",
        f"Important update, replacing what you knew before: {statement} "
        f"Answer according to this new fact.",
    ),
    # A capable model is asked outright.
    suffix=lambda case: (
        f"\nQuestion: Does the above text say that {clause(case)}? Answer:",
        YES,
        NO,
    ),
)


# ---------------------------------------------------------------------- metrics
def rome_probability(score: ContinuationScore, normalised: bool = True) -> float:
    """log P as ROME compares it: the per-token mean (normalised) or the sum."""
    return score.mean_logprob if normalised else score.logprob


def rewrite_scores(
    pairs: Sequence[tuple[ContinuationScore, ContinuationScore]],
    *,
    keep_true: bool,
    normalised: bool = True,
) -> tuple[float, float]:
    """(score, magnitude) over (new, true) score pairs of one prompt family.

    keep_true=False (efficacy, paraphrase): share with P(new) > P(true), mean P(new) - P(true).
    keep_true=True (neighbourhood): share with P(true) > P(new), mean P(true) - P(new)."""
    if not pairs:
        return math.nan, math.nan
    hits, gaps = [], []
    for new, true in pairs:
        lp_new, lp_true = rome_probability(new, normalised), rome_probability(true, normalised)
        if keep_true:
            hits.append(float(lp_true > lp_new))
            gaps.append(math.exp(lp_true) - math.exp(lp_new))
        else:
            hits.append(float(lp_new > lp_true))
            gaps.append(math.exp(lp_new) - math.exp(lp_true))
    return sum(hits) / len(hits), sum(gaps) / len(gaps)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def word_tokens(text: str) -> list[str]:
    """nltk's `word_tokenize` (Treebank words); sentence split by regex when the punkt model
    is not installed (ROME used `nltk.word_tokenize`)."""
    import nltk

    try:
        return nltk.word_tokenize(text)
    except LookupError:
        return [
            t
            for sentence in _SENTENCE_END.split(text)
            for t in nltk.word_tokenize(sentence, preserve_line=True)
        ]


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights=(2 / 3, 4 / 3)) -> float:
    """ROME's `compute_n_gram_entropy`: mean over n of weight_n x entropy (bits) of n-grams."""
    tokens = word_tokens(text)
    values = []
    for n, weight in zip(ns, weights):
        grams = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        total = sum(grams.values())
        entropy = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        values.append(entropy * weight)
    return sum(values) / len(values)


# ---------------------------------------------------------------------- the suite
class FactInjection(Suite):
    name = "fact_injection"
    summary = "CounterFact: efficacy, paraphrase, neighbourhood scores (ROME) and fluency"
    Params = FactParams
    metrics = METRICS
    derived_metrics = (SCORE,)
    primary_metric = "counterfact_score"

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.texts = self.source.texts(self.name, REAL_TEXTS)
        self._targets: dict[tuple[int, str], SteeringTarget] = {}

    def scorers(self) -> dict[str, str]:
        return {
            "efficacy_score": "the steered model's own log-probabilities (ROME definitions)",
            "generation_entropy": "ROME n-gram entropy over nltk Treebank word tokens",
        }

    def load(self) -> Splits:
        p = self.params
        return build_splits(
            self.source.records(DATA, seed=p.seed, split=p.split), parse_counterfact, p
        )

    # ------------------------------------------------------------------ target
    def statement(self, example: FactExample) -> str:
        """The new fact as injected text, as the source's model reads one."""
        return self.texts.statement(example)

    def target(self, example: FactExample, splits: Splits) -> SteeringTarget:
        key = (id(splits), example.id)
        if key not in self._targets:
            self._targets[key] = self._build_target(example, splits)
        return self._targets[key]

    def _build_target(self, ex: FactExample, splits: Splits) -> SteeringTarget:
        statement = self.statement(ex)
        # In-context editing demonstrations (IKE-style): other cases' new facts, restated.
        demos = tuple(
            f"{self.statement(d)} {(d.paraphrase_prompts or (d.prompt,))[0]} {d.target_new}."
            for d in splits.fit
            if d.id != ex.id
        )
        new, true = f" {ex.target_new}", f" {ex.target_true}"
        return SteeringTarget(
            name=ex.id,
            # Fitted on the rewrite prompt only: paraphrases and neighbours are held out.
            contrast_pairs=(
                (ex.prompt + new, ex.prompt + true),
                (ex.statement, ex.prompt + true + "."),
            ),
            concept_pair=(new, true),
            instructions=self.texts.instructions(statement),
            demonstrations=demos[:4],
            suffix=self.suffix(ex),
            prompts=(ex.prompt,),
            memory=statement,
        )

    def suffix(self, ex: FactExample) -> SuffixQuestion:
        """SelfControl's question about a response: does the text say the new fact? Fluency is
        judged after the new fact, as for the suite's generations (`requests`)."""
        return SuffixQuestion(*self.texts.suffix(ex), fluency_context=self.statement(ex))

    def judgement_pairs(self, splits: Splits, split: str = "test") -> JudgementPairs:
        # Each case's own question ("does the text say <new fact>?") after its prompt, answered
        # by the new object (better: what the steering target asks for) and the true one.
        pairs = tuple(
            JudgedPair(
                ex.id, ex.prompt, f" {ex.target_new}.", f" {ex.target_true}.", self.suffix(ex)
            )
            for ex in splits.get(split)
        )
        return JudgementPairs(pairs, f"new vs true object after the rewrite prompt ({split} split)")

    # ------------------------------------------------------------------ requests and scores
    def _probe_prompts(self, ex: FactExample) -> list[str]:
        return [ex.prompt, *ex.paraphrase_prompts, *self._neighbours(ex)]

    def _neighbours(self, ex: FactExample) -> tuple[str, ...]:
        return ex.neighborhood_prompts[: self.params.n_neighborhood]

    def requests(self, example: FactExample) -> Sequence[Request]:
        new, true = f" {example.target_new}", f" {example.target_true}"
        out: list[Request] = []
        for prompt in self._probe_prompts(example):
            out += [Loglikelihood(prompt, new), Loglikelihood(prompt, true)]
        # Fluency is judged in the world the edit asks for: the evaluator reads the new fact
        # first, so stating it is not counted as disfluency (the unsteered model would find
        # any successful edit "perplexing" otherwise and the fluency budget would forbid it).
        statement = self.statement(example)
        for prompt in example.generation_prompts[: self.params.n_generation_prompts]:
            out.append(Generate(prompt, 1, self.params.max_new_tokens, f"{statement} {prompt}"))
        return out

    def score(self, example: FactExample, outputs: Sequence[Output]) -> Scored:
        n_para, n_neigh = len(example.paraphrase_prompts), len(self._neighbours(example))
        n_probe = 1 + n_para + n_neigh
        pairs = [(outputs[2 * i], outputs[2 * i + 1]) for i in range(n_probe)]
        norm = self.params.length_normalised
        efficacy = rewrite_scores(pairs[:1], keep_true=False, normalised=norm)
        paraphrase = rewrite_scores(pairs[1 : 1 + n_para], keep_true=False, normalised=norm)
        neighborhood = rewrite_scores(pairs[1 + n_para :], keep_true=True, normalised=norm)
        prompts = example.generation_prompts[: self.params.n_generation_prompts]
        texts = [p + s for p, samples in zip(prompts, outputs[2 * n_probe :]) for s in samples]
        return Scored(
            {
                "efficacy_score": efficacy[0],
                "efficacy_magnitude": efficacy[1],
                "paraphrase_score": paraphrase[0],
                "paraphrase_magnitude": paraphrase[1],
                "neighborhood_score": neighborhood[0],
                "neighborhood_magnitude": neighborhood[1],
                "generation_entropy": mean([ngram_entropy(t) for t in texts]),
            },
            {"target_new": example.target_new, "target_true": example.target_true},
        )
