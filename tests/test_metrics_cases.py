"""Data-driven metric cases: tests/cases/*.json hold inputs and the exact expected values.

Each case names a `kind`; the runner for that kind feeds the inputs through the suites' real
scoring code (`Task.score` with a stub scorer where a classifier would be, the metric's own
aggregate, the derived metrics) or through `bench.fluency`, and compares with the expected
values (null = NaN). The expected values were computed by hand from the literature's
definitions, not by running this code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import evaluate
from bench.fluency import (
    distinct_n,
    distinct_n_dexperts,
    fluency_scores,
    perplexity,
    perplexity_dexperts,
    repetition,
)
from bench.subject import ContinuationScore
from tasks.fact import FactExample, FactInjection, FactParams, ngram_entropy
from tasks.preference import HHRLHF, PreferenceExample
from tasks.sentiment import Sentiment, SentimentExample, SentimentParams
from tasks.toxicity import Toxicity, ToxicityExample

CASES = Path(__file__).parent / "cases"


def load_cases() -> list:
    params = []
    for path in sorted(CASES.glob("*.json")):
        for case in json.loads(path.read_text())["cases"]:
            params.append(pytest.param(case, id=f"{path.stem}: {case['name']}"))
    return params


# ---------------------------------------------------------------------- stub scorers
@dataclass(frozen=True)
class ScoreIsText:
    """A toxicity scorer whose 'texts' are their own scores."""

    name: str = "stub"

    def toxicity(self, texts: Sequence[str]) -> list[float]:
        return [float(t) for t in texts]


@dataclass(frozen=True)
class LabelIsText:
    name: str = "stub"

    def sentiment(self, texts: Sequence[str]) -> list[tuple[str, float]]:
        return [(t, 0.0) for t in texts]


@dataclass(frozen=True)
class NoReward:
    name: str = "stub"

    def reward(self, prompts: Sequence[str], replies: Sequence[str]) -> list[float]:
        return [0.0] * len(replies)


def score(pair: Sequence[float]) -> ContinuationScore:
    return ContinuationScore(float(pair[0]), int(pair[1]), False)


def aggregate(task, per_example: list[dict[str, float]]) -> dict[str, float]:
    """A cell's metrics from these per-example scores, as the runner computes them."""
    return evaluate.aggregate(task, per_example, generates=False)


# ---------------------------------------------------------------------- runners per kind
def run_toxicity(inp: dict) -> dict[str, float]:
    task = Toxicity(scorer=ScoreIsText())
    per = [
        task.score(ToxicityExample(id=str(i), prompt="p"), (tuple(map(str, s)),)).scores
        for i, s in enumerate(inp["samples"])
    ]
    return aggregate(task, per)


def run_sentiment(inp: dict) -> dict[str, float]:
    task = Sentiment(SentimentParams(direction=inp["direction"]), scorer=LabelIsText())
    per = [
        task.score(SentimentExample(id=str(i), prompt="p"), (tuple(labels),)).scores
        for i, labels in enumerate(inp["labels"])
    ]
    return aggregate(task, per)


def run_counterfact(inp: dict) -> dict[str, float]:
    task = FactInjection(
        FactParams(length_normalised=inp["length_normalised"], n_generation_prompts=0)
    )
    per = []
    for i, ex in enumerate(inp["examples"]):
        example = FactExample(
            id=f"fact:{i}",
            subject="S",
            prompt="S is",
            target_new="new",
            target_true="true",
            paraphrase_prompts=("S, really, is",) * len(ex["paraphrase"]),
            neighborhood_prompts=("T is",) * len(ex["neighborhood"]),
        )
        pairs = ex["rewrite"] + ex["paraphrase"] + ex["neighborhood"]
        outputs = [score(s) for new_true in pairs for s in new_true]
        assert len(outputs) == len(task.requests(example))
        per.append(task.score(example, outputs).scores)
    return aggregate(task, per)


def run_preference(inp: dict) -> dict[str, float]:
    task = HHRLHF(scorer=NoReward())
    per = []
    for i, ex in enumerate(inp["examples"]):
        example = PreferenceExample(
            id=str(i), prompt="Q", chosen=" a", rejected=" b", tie=ex.get("tie", False)
        )
        outputs = (
            score(ex["chosen"]),
            score(ex["rejected"]),
            score([ex["judge_chosen"][0], 1]),
            score([ex["judge_chosen"][1], 1]),
            score([ex["judge_rejected"][0], 1]),
            score([ex["judge_rejected"][1], 1]),
            (),
        )
        per.append(task.score(example, outputs).scores)
    return aggregate(task, per)


def run_fluency_scores(inp: dict) -> dict[str, float]:
    values, capped = fluency_scores(inp["texts"], [score(s) for s in inp["scores"]], inp["cap"])
    return {**values, "capped": capped}


def run_fluency_cell(inp: dict) -> dict[str, float]:
    """A generating cell's fluency metrics over several prompts, as the runner aggregates them."""
    per = [
        fluency_scores(p["texts"], [score(s) for s in p["scores"]], inp["cap"])[0]
        for p in inp["prompts"]
    ]
    return evaluate.aggregate(Toxicity(scorer=ScoreIsText()), per, generates=True)


def run_perplexity_dexperts(inp: dict) -> dict[str, float]:
    values = [math.nan if p is None else float(p) for p in inp["perplexities"]]  # "inf" too
    return {"perplexity_dexperts": perplexity_dexperts(values)}


RUNNERS: dict[str, Callable[[dict], dict[str, float]]] = {
    "toxicity": run_toxicity,
    "sentiment": run_sentiment,
    "counterfact": run_counterfact,
    "preference": run_preference,
    "distinct_n": lambda inp: {f"distinct_{n}": distinct_n(inp["texts"], n) for n in (1, 2, 3)},
    "repetition": lambda inp: {"repetition": repetition(inp["text"])},
    "perplexity": lambda inp: {"perplexity": perplexity(score([inp["logprob"], inp["n_tokens"]]))},
    "fluency_scores": run_fluency_scores,
    "fluency_cell": run_fluency_cell,
    "distinct_n_dexperts": lambda inp: {
        f"distinct_{n}_dexperts": distinct_n_dexperts(inp["texts"], n) for n in (1, 2, 3)
    },
    "perplexity_dexperts": run_perplexity_dexperts,
    "ngram_entropy": lambda inp: {"generation_entropy": ngram_entropy(inp["text"])},
}


@pytest.mark.parametrize("case", load_cases())
def test_metric_case(case):
    actual = RUNNERS[case["kind"]](case["input"])
    for name, expected in case["expected"].items():
        value = actual[name]
        if expected is None:
            assert math.isnan(value), f"{name}: expected NaN, got {value}"
        else:
            assert value == pytest.approx(expected, rel=1e-12, abs=1e-12), name


def test_every_case_kind_has_a_runner_and_cases_exist():
    kinds = {p.values[0]["kind"] for p in load_cases()}
    assert kinds == set(RUNNERS)
