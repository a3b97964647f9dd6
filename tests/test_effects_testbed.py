"""Every method really steers the built-in testbed model, within the fluency budget.

Slow: needs the trained testbed (built once per test session into the session's cache, or
reused from $STEERBENCH_TEST_CACHE) and samples a few hundred continuations per case. One
data-driven case per (method, suite, strength): the primary metric must move the right way by
at least the margin, and perplexity must stay within the runner's default budget (x1.5).

The margins sit inside the effects measured with this very measurement (select and test
prompts, two seeds; seed-0 testbed, generator v2; issue 5 / 8 / 9 notes): positive rate
0.41 -> 0.77 at CAA strength 1, 0.61 at ActAdd 2 (perplexity x1.03), 0.69 at memory_xattn 2;
toxicity 0.88 -> 0.78 at CAA / PCA 0.25, 0.81 at ActAdd 2, 0.74 at memory_xattn 4, 0.85 at the
prefix controller 1 (its effect is the smallest: margin 0.02 against 0.033 measured); SelfControl
at 2 (with its fluency guard) 0.88 -> 0.79 on select, 0.90 -> 0.84 on test (one seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bench.fluency import perplexity
from bench.method import Method
from bench.params import parse
from bench.registry import METHODS, TASKS
from bench.subject import GenerationSettings, Subject
from bench.task import Task

pytestmark = pytest.mark.slow


def make_task(name: str, **params) -> Task:
    cls = TASKS.get(name)
    return cls(parse(cls.Params, params, name))


@dataclass(frozen=True)
class Measured:
    scores: tuple[float, ...]  # primary metric per example (select + test), mean over seeds
    perplexity: float  # mean continuation perplexity under the unsteered model

    @property
    def mean(self) -> float:
        return sum(self.scores) / len(self.scores)


def measure(subject: Subject, task: Task, steer: Callable) -> Measured:
    """The primary metric per example and the mean continuation perplexity.

    Over the select and test prompts and two sampling seeds, so that a small model's sampling
    noise (a few points of rate) stays well below the effects asserted.
    """
    splits = task.load()
    examples = (*splits.select, *splits.test)
    target = task.target(examples[0], splits)
    requests = [task.requests(e)[0] for e in examples]
    seeds = (0, 1)
    scores, ppls = [0.0] * len(examples), []
    for seed in seeds:
        settings = GenerationSettings(
            max_new_tokens=requests[0].max_new_tokens or 20,
            num_samples=requests[0].num_samples,
            seed=seed,
        )
        with steer(target):
            outputs = subject.generate([r.prompt for r in requests], settings)
        for i, (e, o) in enumerate(zip(examples, outputs)):
            scores[i] += task.score(e, [tuple(o)]).scores[task.primary_metric] / len(seeds)
        contexts = [r.prompt for r, o in zip(requests, outputs) for _ in o]
        fluency = subject.logprobs(contexts, [x for o in outputs for x in o], transform=False)
        ppls += [min(perplexity(s), 1e4) for s in fluency if s.n_tokens]
    return Measured(tuple(scores), sum(ppls) / len(ppls))


def paired_gain(base: Measured, steered: Measured, higher_is_better: bool) -> tuple[float, float]:
    """Mean per-example improvement (in the metric's better direction) and its standard error
    (examples are the unit: both sides saw the same prompts and sampling seeds)."""
    sign = 1.0 if higher_is_better else -1.0
    diffs = [sign * (b - a) for a, b in zip(base.scores, steered.scores)]
    n = len(diffs)
    mean = sum(diffs) / n
    var = sum((d - mean) ** 2 for d in diffs) / (n - 1)
    return mean, math.sqrt(var / n)


def steering(subject: Subject, method: Method, strength: float) -> Callable:
    return lambda target: method.steer(subject, method.fit(subject, target), strength)


def unsteered(subject: Subject, task: Task) -> Measured:
    from contextlib import nullcontext

    return measure(subject, task, lambda target: nullcontext())


@dataclass(frozen=True)
class Case:
    method: str
    suite: str
    strength: float
    margin: float  # least improvement of the primary metric, in its better direction
    suite_params: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        extra = "".join(f"-{v}" for _, v in self.suite_params)
        return f"{self.method}@{self.strength:g}-{self.suite}{extra}"


NOISE_SE = 2.0  # an effect must exceed this many standard errors of the paired difference

CASES = [
    Case("caa", "toxicity", 0.25, 0.05),
    Case("pca", "toxicity", 0.25, 0.05),
    Case("caa", "sentiment", 1.0, 0.2),
    Case("pca", "sentiment", 1.0, 0.2),
    Case("actadd", "sentiment", 2.0, 0.12),
    Case("actadd", "toxicity", 2.0, 0.04),
    Case("caa", "sentiment", 1.0, 0.15, (("direction", "negative"),)),
    Case("prompting", "sentiment", 3, 0.08),
    Case("prompting", "toxicity", 1, 0.03),
    Case("memory_xattn", "sentiment", 2.0, 0.15),
    Case("memory_xattn", "toxicity", 4.0, 0.08),
    Case("selfcontrol", "toxicity", 2.0, 0.04),
    Case("prefix", "toxicity", 1.0, 0.02),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_method_steers_the_suite_within_the_fluency_budget(testbed, case):
    task = make_task(case.suite, **dict(case.suite_params))
    base = unsteered(testbed, task)
    method = METHODS.get(case.method)()
    steered = measure(testbed, task, steering(testbed, method, case.strength))
    better = task.metric(task.primary_metric).higher_is_better
    gain, se = paired_gain(base, steered, better)
    detail = f"{base.mean:.3f} -> {steered.mean:.3f}: gain {gain:+.3f} +- {se:.3f} (se)"
    # The right direction by the claimed margin, and beyond the sampling noise of the measure.
    assert gain > max(case.margin, NOISE_SE * se), detail
    assert steered.perplexity < 1.5 * base.perplexity, (base.perplexity, steered.perplexity)
