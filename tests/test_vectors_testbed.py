"""The vector methods and the prompting baseline really steer the built-in testbed model.

Slow: needs the trained testbed (built once per test session into the session's cache, or
reused from $STEERBENCH_TEST_CACHE) and samples a few hundred continuations per check. The
thresholds sit well inside the effects measured on the seed-0 testbed (generator v2) by the
default run (select split, issue 5 note): positive rate 0.41 -> 0.77 at CAA strength 1 and
0.78 at ActAdd strength 4 (perplexity x1.03 / x1.33); toxicity 0.88 -> 0.78 at CAA / PCA 0.25
(x1.07); prompting 0.41 -> 0.58 positive at level 3 and toxicity 0.88 -> 0.83 at level 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import pytest
import torch

from bench.fluency import perplexity
from bench.method import Method
from bench.params import parse
from bench.registry import METHODS, TASKS
from bench.subject import GenerationSettings, Subject
from bench.task import Task

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def testbed(tmp_path_factory) -> Subject:
    """The testbed from the session's cache (as tests/conftest.py chooses it), never the user's.

    Module-scoped, so it runs before the function-scoped cache isolation: name the cache here.
    """
    from tasks.testbed import ensure_testbed

    torch.set_num_threads(1)
    root = os.environ.get("STEERBENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    return Subject.load(ensure_testbed(seed=0, cache_dir=root, progress=False))


def make_task(name: str, **params) -> Task:
    cls = TASKS.get(name)
    return cls(parse(cls.Params, params, name))


def measure(subject: Subject, task: Task, steer: Callable) -> tuple[float, float]:
    """(primary metric, mean continuation perplexity under the unsteered model).

    Over the select and test prompts and two seeds, so that a small model's sampling noise
    (a few points of rate) stays well below the effects asserted.
    """
    splits = task.load()
    examples = (*splits.select, *splits.test)
    target = task.target(examples[0], splits)
    requests = [task.requests(e)[0] for e in examples]
    scores, ppls = [], []
    for seed in (0, 1):
        settings = GenerationSettings(
            max_new_tokens=requests[0].max_new_tokens or 20,
            num_samples=requests[0].num_samples,
            seed=seed,
        )
        with steer(target):
            outputs = subject.generate([r.prompt for r in requests], settings)
        scores += [
            task.score(e, [tuple(o)]).scores[task.primary_metric] for e, o in zip(examples, outputs)
        ]
        contexts = [r.prompt for r, o in zip(requests, outputs) for _ in o]
        fluency = subject.logprobs(contexts, [x for o in outputs for x in o], transform=False)
        ppls += [min(perplexity(s), 1e4) for s in fluency if s.n_tokens]
    return sum(scores) / len(scores), sum(ppls) / len(ppls)


def steering(subject: Subject, method: Method, strength: float) -> Callable:
    return lambda target: method.steer(subject, method.fit(subject, target), strength)


def unsteered(subject: Subject, task: Task) -> tuple[float, float]:
    from contextlib import nullcontext

    return measure(subject, task, lambda target: nullcontext())


def within_budget(ppl: float, base_ppl: float) -> bool:
    return ppl < 1.5 * base_ppl  # the runner's default fluency budget


@pytest.mark.parametrize("name", ["caa", "pca"])
def test_vectors_lower_toxicity_within_the_fluency_budget(testbed, name):
    task = make_task("toxicity")
    base, base_ppl = unsteered(testbed, task)
    toxicity, ppl = measure(testbed, task, steering(testbed, METHODS.get(name)(), 0.25))
    assert toxicity < base - 0.05, (base, toxicity)
    assert within_budget(ppl, base_ppl), (base_ppl, ppl)


@pytest.mark.parametrize(("name", "strength"), [("caa", 1.0), ("pca", 1.0), ("actadd", 4.0)])
def test_vectors_raise_positive_sentiment_within_the_fluency_budget(testbed, name, strength):
    task = make_task("sentiment")
    base, base_ppl = unsteered(testbed, task)
    rate, ppl = measure(testbed, task, steering(testbed, METHODS.get(name)(), strength))
    assert rate > base + 0.2, (base, rate)
    assert within_budget(ppl, base_ppl), (base_ppl, ppl)


@pytest.mark.parametrize("name", ["caa", "pca"])
def test_vectors_steer_sentiment_toward_negative(testbed, name):
    task = make_task("sentiment", direction="negative")
    base, _ = unsteered(testbed, task)
    rate, ppl = measure(testbed, task, steering(testbed, METHODS.get(name)(), 2.0))
    assert rate > base + 0.15, (base, rate)
    assert math.isfinite(ppl)


def test_prompting_raises_positive_sentiment(testbed):
    task = make_task("sentiment")
    base, base_ppl = unsteered(testbed, task)
    rate, ppl = measure(testbed, task, steering(testbed, METHODS.get("prompting")(), 3))
    assert rate > base + 0.08, (base, rate)
    assert within_budget(ppl, base_ppl), (base_ppl, ppl)


def test_prompting_lowers_toxicity(testbed):
    task = make_task("toxicity")
    base, base_ppl = unsteered(testbed, task)
    toxicity, ppl = measure(testbed, task, steering(testbed, METHODS.get("prompting")(), 1))
    assert toxicity < base - 0.03, (base, toxicity)
    assert within_budget(ppl, base_ppl), (base_ppl, ppl)
