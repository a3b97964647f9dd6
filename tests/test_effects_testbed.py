"""Every method really steers the built-in testbed model, within the fluency budget.

Slow: needs the trained testbed (built once per test session into the session's cache, or
reused from $STEERBENCH_TEST_CACHE). One data-driven case per (method, suite), run through the
harness's own path (`Runner`): the method's strengths are swept on `select` with two sampling
seeds, the operating point is chosen there under the default fluency budget (x1.5 perplexity),
and the claim is checked on `test`, paired by example against the unsteered model:

- the primary metric moves the right way by more than the case's margin and by more than
  `NOISE_SE` standard errors of the paired difference (a paired bootstrap over the 32 test
  examples, each the mean of two sampling seeds; derived metrics such as the CounterFact score
  are computed whole on each resample);
- the test perplexity stays within the budget.

Claims are about methods, not about one build: they must hold on testbeds of seeds 0, 1 and 2
(`pytest -m slow --testbed-seed N`, or `tox -e slow -- --testbed-seed N`) and on CPUs with and
without AVX512. A fixed strength is not portable across builds (a vector that moves one build by
+0.2 sends another over the fluency budget), so the cases fix the sweep, not the strength.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench import evaluate
from bench.config import Experiment, MethodSpec, TaskSpec
from bench.rundir import RunDir
from bench.runner import Runner
from bench.subject import Subject

pytestmark = pytest.mark.slow

SEEDS = (0, 1)  # sampling seeds: each example's score is the mean over both
NOISE_SE = 2.0  # an effect must exceed this many standard errors of the paired difference
BOOTSTRAP = 1000  # paired resamples of the test examples for that standard error
BUDGET = Experiment().selection.fluency_budget


@dataclass(frozen=True)
class Case:
    method: str
    suite: str
    margin: float  # least improvement of the primary metric on test, in its better direction
    strengths: tuple[float, ...] | None = None  # the sweep; None: the method's default
    suite_params: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        extra = "".join(f"-{v}" for _, v in self.suite_params)
        return f"{self.method}-{self.suite}{extra}"


@dataclass(frozen=True)
class Verdict:
    strength: float  # the operating point chosen on select
    base: float  # unsteered test mean of the primary metric
    value: float  # steered test mean
    gain: float  # mean paired improvement, in the metric's better direction
    se: float  # its standard error over examples
    perplexity_ratio: float  # steered / unsteered mean test perplexity

    def __str__(self) -> str:
        return (
            f"s={self.strength:g}: {self.base:.3f} -> {self.value:.3f}, gain {self.gain:+.3f} "
            f"+- {self.se:.3f} (se), perplexity x{self.perplexity_ratio:.2f}"
        )


def operating_point(subject: Subject, case: Case, run_dir: Path) -> Verdict:
    """Run the case's sweep with the harness and judge the chosen strength on `test`."""
    experiment = Experiment(
        output_dir=str(run_dir),
        seeds=SEEDS,
        methods=(MethodSpec(case.method, strengths=case.strengths),),
        tasks=(TaskSpec(case.suite, dict(case.suite_params)),),
        report=False,
    )
    runner = Runner(experiment, subject, RunDir(run_dir), progress=False)
    runner.run()
    (chosen,) = runner.selection
    strength = chosen.strength
    test = [c for c in map(runner.run_dir.read_cell, runner.cell_ids) if c.split == "test"]
    task = runner.tasks[0]
    primary = task.primary_metric
    sign = 1.0 if task.metric(primary).higher_is_better else -1.0

    def per_example(at: float) -> dict[str, dict[str, list[float]]]:
        """Each test example's scores over the sampling seeds (a score can be missing: NaN)."""
        seen: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for cell in (c for c in test if c.strength == at):
            for record in runner.run_dir.read_examples(cell.id):
                for name, score in record.scores.items():
                    if math.isfinite(score):
                        seen[record.example][name].append(score)
        return seen

    def value(rows: list[dict[str, list[float]]]) -> float:
        """The primary metric of a set of examples as a cell computes it, each example
        weighing its seeds' mean."""
        means = [{name: sum(v) / len(v) for name, v in row.items() if v} for row in rows]
        return evaluate.aggregate(task, means, generates=False)[primary]

    def perplexity(at: float) -> float:
        values = [c.metrics["perplexity"] for c in test if c.strength == at]
        return sum(values) / len(values)

    base, steered = per_example(0.0), per_example(strength)
    ids = sorted(base)
    base_value, steered_value = value([base[k] for k in ids]), value([steered[k] for k in ids])
    gain = sign * (steered_value - base_value)
    # Paired bootstrap over examples: both sides resampled with the same examples.
    rng = random.Random(0)
    resampled = []
    for _ in range(BOOTSTRAP):
        pick = rng.choices(ids, k=len(ids))
        resampled.append(
            sign * (value([steered[k] for k in pick]) - value([base[k] for k in pick]))
        )
    mean = sum(resampled) / BOOTSTRAP
    se = math.sqrt(sum((d - mean) ** 2 for d in resampled) / (BOOTSTRAP - 1))
    return Verdict(
        strength,
        base_value,
        steered_value,
        gain,
        se,
        perplexity(strength) / perplexity(0.0),
    )


# Margins sit at about half the smallest gain measured on the testbeds of seeds 0, 1 and 2 (the
# figures are in the README). ActAdd on sentiment is not claimed: with paired sampling its test
# gain on the seed-0 AVX512 build was +0.00 to +0.02 at strengths 1-4 (and -0.11 at 8), where
# independent draws had let a lucky select pick pass. Methods whose effect held on some builds
# only are claimed in their own tests instead: memory_add and SelfControl on the parts of the fact belief
# (tests/test_memory_testbed.py, tests/test_selfcontrol_testbed.py), memory_xattn on learning
# and moving that belief, the prefix controller on reproducing SelfControl's state change
# (tests/test_prefix.py).
CASES = [
    Case("caa", "sentiment", 0.04),
    Case("caa", "toxicity", 0.05),
    Case("pca", "toxicity", 0.05),
    Case("caa", "fact_injection", 0.12),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_method_steers_the_suite_within_the_fluency_budget(testbed, case, tmp_path):
    verdict = operating_point(testbed, case, tmp_path / "run")
    assert verdict.strength != 0, f"no strength improved select within the budget: {verdict}"
    assert verdict.gain > max(case.margin, NOISE_SE * verdict.se), str(verdict)
    assert verdict.perplexity_ratio < BUDGET, str(verdict)
