"""The capability suite: what steering costs a model on lm-eval tasks.

A configured list of lm-eval tasks (names, `limit`, few-shot) runs through lm-eval's own
evaluator with steerbench's lm-eval model (`bench.lm_eval_model`): once unsteered, and at the
operating point of each method x suite, steered with that method's state for that suite. Each
lm-eval task is scored on its first configured metric (at its filter); capability retained is
the steered score relative to the unsteered one (unsteered / steered for a metric where lower is
better, so that below 1 is always a loss), and the suite's capability retained is the mean over
the tasks. lm-eval's per-item scores are kept.

    [capability]
    tasks = ["testbed_facts", "testbed_grammar"]
    include_path = "..."        # where lm-eval finds task configs (`steerbench testbed lm-eval-tasks`)
    limit = 100                 # items per task (None: all)
    num_fewshot = 0
    budget = 0.9                # optional: operating points must retain this much
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.config import CapabilityConfig
from bench.errors import UserError
from bench.records import Record
from bench.subject import Subject


@dataclass(frozen=True)
class TaskScore:
    """One lm-eval task's score on its first metric."""

    metric: str  # "acc,none": lm-eval's metric and filter
    value: float
    higher_is_better: bool


@dataclass(frozen=True)
class CapabilityRun:
    """lm-eval's verdict on the (steered) model: per task its score and its items' scores."""

    scores: Mapping[str, TaskScore]
    items: Mapping[str, tuple[Mapping[str, Any], ...]]  # task -> per-item {doc_id, metric: value}


@dataclass(frozen=True)
class Capability(Record):
    """Capability retained at one method x suite operating point (or unsteered: strength 0)."""

    method: str
    task: str  # the suite whose fitted state steers
    strength: float
    scores: Mapping[str, float] = field(default_factory=dict)  # lm-eval task -> its score
    unsteered: Mapping[str, float] = field(default_factory=dict)
    retained: Mapping[str, float] = field(default_factory=dict)  # lm-eval task -> ratio
    capability_retained: float = math.nan  # the mean of `retained`
    metrics: Mapping[str, str] = field(default_factory=dict)  # lm-eval task -> metric,filter

    def to_dict(self) -> dict:
        return {k: dict(v) if isinstance(v, Mapping) else v for k, v in vars(self).items()}


def evaluate_capability(subject: Subject, steering, config: CapabilityConfig) -> CapabilityRun:
    """Run the configured lm-eval tasks on `subject` under `steering` (`bench.lm_eval_model.
    Steering`) through lm-eval's evaluator."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from bench.lm_eval_model import SteerbenchLM

    manager = TaskManager(
        include_path=config.include_path, include_defaults=config.include_defaults
    )
    unknown = [t for t in config.tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"capability: lm-eval knows no task {unknown[0]!r}"
            + (f" (include_path {config.include_path})" if config.include_path else "")
        )
    lm = SteerbenchLM(subject=subject, steering=steering, batch_size=config.batch_size)
    out = simple_evaluate(
        model=lm,
        tasks=list(config.tasks),
        num_fewshot=config.num_fewshot,
        limit=config.limit,
        task_manager=manager,
        log_samples=True,
        bootstrap_iters=0,
        random_seed=config.seed,
        numpy_random_seed=config.seed,
        torch_random_seed=config.seed,
        fewshot_random_seed=config.seed,
    )
    scores, items = {}, {}
    for task in config.tasks:
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        metric, where = samples[0]["metrics"][0], samples[0]["filter"]
        scores[task] = TaskScore(
            f"{metric},{where}",
            float(out["results"][task][f"{metric},{where}"]),
            bool(out["higher_is_better"][task][metric]),
        )
        items[task] = tuple(
            {"doc_id": s["doc_id"], **{m: _plain(s[m]) for m in s["metrics"]}} for s in samples
        )
    return CapabilityRun(scores, items)


def _plain(value: Any) -> Any:
    """A per-item metric value as JSON: a number, or a list (perplexity's (loglik, count))."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return float(value)


def retained(steered: TaskScore, unsteered: TaskScore) -> float:
    """Steered relative to unsteered, oriented so that below 1 is a loss."""
    num, den = (
        (steered.value, unsteered.value)
        if steered.higher_is_better
        else (unsteered.value, steered.value)
    )
    if den == 0:
        return 1.0 if num == 0 else math.inf
    return num / den


def capability_record(
    method: str, task: str, strength: float, steered: CapabilityRun, unsteered: CapabilityRun
) -> Capability:
    ratios = {t: retained(s, unsteered.scores[t]) for t, s in steered.scores.items()}
    finite = [r for r in ratios.values() if math.isfinite(r)]
    return Capability(
        method=method,
        task=task,
        strength=strength,
        scores={t: s.value for t, s in steered.scores.items()},
        unsteered={t: s.value for t, s in unsteered.scores.items()},
        retained=ratios,
        capability_retained=sum(finite) / len(finite) if finite else math.nan,
        metrics={t: s.metric for t, s in steered.scores.items()},
    )
