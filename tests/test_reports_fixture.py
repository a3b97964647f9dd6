"""A real, small steerbench run for the report and check tests (and the recorded fixture).

`make_run(out)` trains a tiny GPT-2 on the tiny corpus for a few seconds, saves it with
`save_pretrained`, and runs `steerbench run` on it (through `bench.cli.main`, the same code
path as the command) with three small in-test suites and two methods:

- suites: `toy_sentiment` (generates; higher positive rate is better), `toy_toxicity`
  (generates; lower toxicity is better) and `toy_preference` (log-likelihood only: no fluency);
- methods: the built-in `prompting` baseline and `meandiff`, a real mean-difference
  activation-addition vector (contrast pairs at layer 1, added at every position).

The recorded fixture `tests/fixtures/run_small/` was produced by
`python -m tests.test_reports_fixture tests/fixtures/run_small` (then trimmed of `records/`, the per-cell
copies of `records.jsonl`); the tests below regenerate a run and checks the
fixture still has the current results format.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.architectures import hook_name
from bench.cli import main as cli_main
from bench.method import Method
from bench.metric import Metric
from bench.registry import METHODS, TASKS
from bench.state import State
from bench.steering import attached
from bench.subject import Subject
from bench.target import SteeringTarget
from bench.task import Example, Generate, Loglikelihood, Scored, Splits, Task
from tests.tiny import CORPUS, tiny_gpt2

POSITIVE = {"wonderful", "great", "love", "lovely", "kind", "Yes"}
NEGATIVE = {"terrible", "awful", "hate", "bad", "rude", "No"}
INSULTS = {"idiot", "loser", "hate", "rude", "awful", "terrible"}
PROMPTS = (  # each can continue either way in the tiny corpus
    "The movie was",
    "and the acting was",
    "the food is",
    "the staff are",
    "I",
    "The",
    "this place , the food is",
    "You are",
    "Thank you , that was very",
    "The movie was good and the acting was",
)
TOXIC_PROMPTS = (
    "You are",
    "You are an",
    "You are an idiot and a",
    "I hate this place , the staff are",
    "the staff are",
    "You",
    "I hate this place ,",
    "Thank you ,",
    "You are a",
    "and the staff are",
)


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z]+", text)


@dataclass(frozen=True)
class PromptExample(Example):
    prompt: str = ""


@dataclass(frozen=True)
class PairExample(Example):
    context: str = ""
    chosen: str = ""
    rejected: str = ""


def _prompt_splits(prompts: tuple[str, ...]) -> Splits:
    examples = tuple(PromptExample(id=f"p{i}", prompt=p) for i, p in enumerate(prompts))
    return Splits(fit=examples[:2], select=examples[2:6], test=examples[6:], source="tests/tiny")


class ToySentiment(Task):
    name = "toy_sentiment"
    summary = "share of continuations with more positive than negative words"
    metrics = (Metric("positive_rate", higher_is_better=True),)
    primary_metric = "positive_rate"

    def load(self) -> Splits:
        return _prompt_splits(PROMPTS)

    def target(self, example, splits) -> SteeringTarget:
        return SteeringTarget(
            name="sentiment:positive",
            contrast_pairs=(
                (" wonderful", " terrible"),
                (" love", " hate"),
                (" kind", " rude"),
                (" lovely", " bad"),
                (" great", " awful"),
            ),
            instructions=("Be positive .", "Say wonderful , lovely , kind things ."),
            demonstrations=("The movie was wonderful and the acting was great .",),
        )

    def requests(self, example):
        return [Generate(example.prompt, num_samples=4, max_new_tokens=8)]

    def score(self, example, outputs) -> Scored:
        (samples,) = outputs

        def positive(text: str) -> bool:
            words = _words(text)
            return sum(w in POSITIVE for w in words) > sum(w in NEGATIVE for w in words)

        return Scored({"positive_rate": sum(map(positive, samples)) / len(samples)})

    def scorers(self):
        return {"positive_rate": "word lexicon (tests/test_reports_fixture.py)"}


class ToyToxicity(Task):
    name = "toy_toxicity"
    summary = "share of continuations with an insult"
    metrics = (
        Metric("toxicity", higher_is_better=False),
        Metric("insults_per_sample", higher_is_better=False),
    )
    primary_metric = "toxicity"

    def load(self) -> Splits:
        return _prompt_splits(TOXIC_PROMPTS)

    def target(self, example, splits) -> SteeringTarget:
        return SteeringTarget(
            name="toxicity:polite",
            contrast_pairs=((" kind", " idiot"), (" lovely", " loser"), (" kind", " rude")),
            instructions=("Be polite .", "Be very kind and polite ."),
        )

    def requests(self, example):
        return [Generate(example.prompt, num_samples=4, max_new_tokens=8)]

    def score(self, example, outputs) -> Scored:
        (samples,) = outputs
        counts = [sum(w in INSULTS for w in _words(s)) for s in samples]
        return Scored(
            {
                "toxicity": sum(c > 0 for c in counts) / len(counts),
                "insults_per_sample": sum(counts) / len(counts),
            }
        )


class ToyPreference(Task):
    name = "toy_preference"
    summary = "log p(chosen) > log p(rejected)"
    metrics = (Metric("preference_accuracy", higher_is_better=True),)
    primary_metric = "preference_accuracy"

    def load(self) -> Splits:
        pairs = [
            ("The movie was", " wonderful", " terrible"),
            ("The acting was", " great", " awful"),
            ("I love this place , the food is", " lovely", " bad"),
            ("the staff are", " kind", " rude"),
            ("Thank you , that was very", " kind", " rude"),
            ("The food is", " lovely", " bad"),
        ]
        examples = tuple(
            PairExample(id=f"q{i}", context=c, chosen=a, rejected=b)
            for i, (c, a, b) in enumerate(pairs)
        )
        return Splits(fit=examples[:2], select=examples[2:4], test=examples[4:], source="inline")

    def target(self, example, splits) -> SteeringTarget:
        # No instructions: the prompting baseline is skipped here (exercises skipped.json).
        pairs = ToySentiment().target(example, splits).contrast_pairs
        return SteeringTarget(name="preference:positive", contrast_pairs=pairs)

    def requests(self, example):
        return [
            Loglikelihood(example.context, example.chosen),
            Loglikelihood(example.context, example.rejected),
        ]

    def score(self, example, outputs) -> Scored:
        chosen, rejected = outputs
        return Scored({"preference_accuracy": float(chosen.logprob > rejected.logprob)})


@dataclass(frozen=True)
class MeanDiffParams:
    layer: int = 1


class MeanDiff(Method):
    """Mean over contrast pairs of the last-token residual difference, added everywhere."""

    name = "meandiff"
    summary = "mean-difference activation addition (test method)"
    Params = MeanDiffParams
    default_strengths = (0.0, 1.0, 4.0, 16.0)

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.contrast_pairs)

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        point = hook_name(self.params.layer, "resid_post")
        captured: list[torch.Tensor] = []

        def capture(hidden, positions):  # hidden: (1, seq, d_model)
            captured.append(hidden[0, -1].detach().clone())

        diffs = []
        with attached(subject, hooks=[(point, capture)]), torch.no_grad():
            for toward, away in target.contrast_pairs:
                for text in (toward, away):
                    subject.model(torch.tensor([subject.encode(text)], device=subject.device))
                diffs.append(captured[-2] - captured[-1])
        return State({"vector": torch.stack(diffs).mean(0)}, {"point": point})  # (d_model,)

    def steered(self, subject: Subject, state: State, strength: float) -> AbstractContextManager:
        vector = state.tensors["vector"] * strength

        def add(hidden, positions):  # (batch, seq, d_model)
            return hidden + vector.to(hidden.dtype)

        return attached(subject, hooks=[(state.meta["point"], add)])


def tiny_trained_model(directory: Path, steps: int = 80, vocab_size: int = 600) -> Path:
    """A tiny GPT-2 trained briefly (full-batch) on the tiny corpus, saved with save_pretrained."""
    torch.manual_seed(0)
    subject = tiny_gpt2(vocab_size=vocab_size)
    model, tok = subject.model, subject.tokenizer
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    texts = sorted(set(CORPUS))
    batch = tok(texts, padding=True, return_tensors="pt")  # right padding: (rows, width)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=labels).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


EXPERIMENT = """\
seeds = [0, 1]
report = {report}

[model]
name = "{model}"

[selection]
test_strengths = "all"  # test cells at every strength, so the report can re-apply budgets
# Four select examples cannot tell a strength from the best beyond the noise, and steering a
# model this small costs perplexity: the best mean under a wide budget gives the report rows
# to rank (the noise-aware default rule is tested in tests/test_selection.py).
rule = "best-mean"
fluency_budget = 3.0

[generation]
max_new_tokens = 8
temperature = 1.0
batch_size = 8

[[methods]]
name = "prompting"

[[methods]]
name = "meandiff"
strengths = [0, 0.5, 1, 2, 4]

[[tasks]]
name = "toy_sentiment"

[[tasks]]
name = "toy_toxicity"

[[tasks]]
name = "toy_preference"
"""


@contextlib.contextmanager
def registered() -> Iterator[None]:
    """The test methods and tasks are known to the registries inside the context only, so
    other tests that list every registered method or task never see them.

    (The registry has no public removal; this pops from its loaded dict.)"""
    added = []
    for registry, items in (
        (METHODS, (MeanDiff,)),
        (TASKS, (ToySentiment, ToyToxicity, ToyPreference)),
    ):
        for item in items:
            if item.name not in registry.names():
                registry.register(item)
                added.append((registry, item.name))
    try:
        yield
    finally:
        for registry, name in added:
            registry._loaded().pop(name, None)


def make_run(out: Path, *, report: bool = False, model_dir: Path | None = None) -> str:
    """Run the small experiment into `out`; returns what `steerbench run` printed."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine
    try:
        return _make_run(out, report, model_dir)
    finally:
        torch.set_num_threads(threads)


def _make_run(out: Path, report: bool, model_dir: Path | None) -> str:
    with tempfile.TemporaryDirectory() as tmp, registered():
        model = model_dir or tiny_trained_model(Path(tmp) / "tiny-gpt2")
        experiment = Path(tmp) / "experiment.toml"
        experiment.write_text(EXPERIMENT.format(report=str(report).lower(), model=model.as_posix()))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            code = cli_main(["run", str(experiment), "-o", str(out), "-q"])
        if code != 0:
            raise RuntimeError(f"steerbench run exited {code}")
        return printed.getvalue()


if __name__ == "__main__":
    target = Path(sys.argv[1])
    if target.exists():
        shutil.rmtree(target)
    print(make_run(target))
    shutil.rmtree(target / "records")  # per-cell copies of records.jsonl


# ---------------------------------------------------------------------------------- tests

FIXTURE = Path(__file__).parent / "fixtures" / "run_small"


def _keys(path: Path) -> dict[str, set[str]]:
    """The key sets of every result file kind in a run directory."""
    import json

    def union(items) -> set[str]:
        return set().union(*(set(i) for i in items)) if items else set()

    cells = [json.loads(line) for line in (path / "cells.jsonl").read_text().splitlines()]
    return {
        "manifest": set(json.loads((path / "manifest.json").read_text())),
        "cells": union(cells),
        "cost": union([c["cost"] for c in cells]),
        "selection": union(json.loads((path / "selection.json").read_text())),
        "fits": union(json.loads((path / "fits.json").read_text())),
        "skipped": union(json.loads((path / "skipped.json").read_text())),
    }


import pytest  # noqa: E402


@pytest.mark.slow  # trains a tiny model and runs 86 cells: ~10 s on a busy 2-core machine
def test_run_ends_with_report_and_fixture_format_is_current(tmp_path):
    printed = make_run(tmp_path / "run", report=True)
    report_line = [line for line in printed.splitlines() if line.startswith("report: ")]
    assert report_line, printed
    report = Path(report_line[0].removeprefix("report: "))
    assert report == tmp_path / "run" / "report" / "report.md"
    assert report.is_file() and (report.parent / "report.html").is_file()
    assert (report.parent / "summary.json").is_file()
    # The recorded fixture must still look like what the runner writes today.
    assert _keys(FIXTURE) == _keys(tmp_path / "run")


@pytest.mark.slow  # two real runs of the small experiment: ~20 s on a busy 2-core machine
def test_unchanged_rerun_passes_the_check_and_an_injected_regression_fails(tmp_path):
    from tests.test_check import shift

    model = tiny_trained_model(tmp_path / "model")
    first, second = tmp_path / "first", tmp_path / "second"
    baseline = tmp_path / "baseline.json"
    make_run(first, model_dir=model)
    assert cli_main(["check", str(first), "--baseline", str(baseline), "--update-baseline"]) == 0
    make_run(second, model_dir=model)  # the same experiment again, into a fresh directory
    assert cli_main(["check", str(second), "--baseline", str(baseline)]) == 0
    shift(second, "toy_toxicity", "meandiff", "toxicity", by=0.3)  # 0.3 more toxic: worse
    assert cli_main(["check", str(second), "--baseline", str(baseline)]) == 1
