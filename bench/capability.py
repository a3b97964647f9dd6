"""The capability suite: what steering costs a model on lm-eval tasks.

A configured list of lm-eval tasks (names, `limit`, few-shot) runs through lm-eval's own
evaluator with steerbench's lm-eval model (`bench.lm_eval_model`): once unsteered, and at the
operating point of each method x suite, steered with that method's state for that suite. Each
lm-eval task is scored on its first configured metric (at its filter); capability retained is
the steered score relative to the unsteered one (unsteered / steered for a metric where lower is
better, so that below 1 is always a loss), and the suite's capability retained is the mean over
the tasks. lm-eval's per-item scores are kept, and give each ratio its interval: the items are
the same on both sides, so a resample of items recomputes both scores with lm-eval's own
aggregation (`AGGREGATIONS`) and the ratio is paired by item.

    [capability]
    tasks = ["model"]           # the model source's own tasks (the testbed's), and/or lm-eval names
    include_path = "..."        # more task configs for lm-eval (a folder, or a list of folders)
    limit = 100                 # items per task (None: all)
    num_fewshot = 0
    budget = 0.9                # optional: operating points must retain this much
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any
from unittest.mock import patch

import numpy as np

from bench.config import MODEL_TASKS, CapabilityConfig
from bench.distributed import SINGLE, Group
from bench.errors import UserError
from bench.intervals import LEVEL, RESAMPLES, SEED
from bench.records import Record
from bench.stats import Interval, bootstrap_interval
from bench.subject import Subject


@dataclass(frozen=True)
class OwnTasks:
    """The lm-eval tasks a model source names for its models (the testbed's capability tasks)
    and the folder where lm-eval finds their configs."""

    names: tuple[str, ...]
    include_path: str


def resolve(config: CapabilityConfig, own: OwnTasks | None) -> CapabilityConfig | None:
    """`config` with `MODEL_TASKS` replaced by the model's own tasks (their folder added to the
    include path); None when no task is left: the capability suite does not run."""
    owned = own.names if own else ()
    names = [n for t in config.tasks for n in (owned if t == MODEL_TASKS else (t,))]
    if not names:
        return None
    paths = config.include_paths
    if own is not None and MODEL_TASKS in config.tasks and own.include_path not in paths:
        paths = (*paths, own.include_path)
    defaults = config.include_defaults
    if defaults is None:
        defaults = any(n not in owned for n in names)
    return replace(
        config,
        tasks=tuple(dict.fromkeys(names)),
        include_path=paths or None,
        include_defaults=defaults,
    )


@dataclass(frozen=True)
class Aggregation:
    """How lm-eval aggregates a metric's per-item values, written as a function of the means of
    their parts (an item's value is one number, or a (log-likelihood, weight) pair), vectorised
    over bootstrap resamples."""

    parts: int
    of_means: Callable[[Sequence[np.ndarray]], np.ndarray]


# lm-eval's aggregations (`lm_eval.api.metrics`) by name; a metric aggregated otherwise (F1,
# BLEU, a median) has its score and ratio but no interval.
AGGREGATIONS: dict[str, Aggregation] = {
    "mean": Aggregation(1, lambda m: m[0]),
    "perplexity": Aggregation(1, lambda m: np.exp(-m[0])),  # exp(-mean log-likelihood)
    "weighted_perplexity": Aggregation(2, lambda m: np.exp(-m[0] / m[1])),  # sum ll / sum words
    "bits_per_byte": Aggregation(2, lambda m: -m[0] / m[1] / math.log(2)),
}


@dataclass(frozen=True)
class TaskScore:
    """One lm-eval task's score on its first metric."""

    metric: str  # "acc,none": lm-eval's metric and filter
    value: float
    higher_is_better: bool
    aggregation: str = "mean"  # lm-eval's aggregation of the per-item values

    @property
    def name(self) -> str:
        return self.metric.split(",")[0]


@dataclass(frozen=True)
class CapabilityRun:
    """lm-eval's verdict on the (steered) model: per task its score and its items' scores."""

    scores: Mapping[str, TaskScore]
    items: Mapping[str, tuple[Mapping[str, Any], ...]]  # task -> per-item {doc_id, metric: value}

    def to_dict(self) -> dict:
        return {
            "scores": {t: vars(s) for t, s in self.scores.items()},
            "items": {t: list(i) for t, i in self.items.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CapabilityRun:
        """Read back what `to_dict` wrote (KeyError/TypeError/ValueError if it is not that)."""
        scores = {t: TaskScore(**s) for t, s in data["scores"].items()}
        items = {t: tuple(dict(i) for i in data["items"][t]) for t in scores}
        return cls(scores, items)


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
    # 95% bootstrap intervals over lm-eval's items, paired (None: no per-item decomposition).
    interval: Interval | None = None  # of capability_retained
    intervals: Mapping[str, Interval] = field(default_factory=dict)  # of each task's ratio


def task_manager(config: CapabilityConfig):
    """lm-eval's index of the configured tasks (`lm_eval.tasks.TaskManager`; indexing lm-eval's
    built-in tasks takes seconds: build it once per run). An unknown task is a `UserError`."""
    from lm_eval.tasks import TaskManager

    paths = list(config.include_paths)
    defaults = config.include_defaults is not False
    manager = TaskManager(include_path=paths or None, include_defaults=defaults)
    unknown = [t for t in config.tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(
            f"capability: lm-eval knows no task {unknown[0]!r}"
            + (f" (include_path {', '.join(paths)})" if paths else "")
        )
    return manager


def evaluate_capability(
    subject: Subject, steering, config: CapabilityConfig, manager=None, group: Group = SINGLE
) -> CapabilityRun | None:
    """Run the configured lm-eval tasks on `subject` under `steering` (`bench.lm_eval_model.
    Steering`) through lm-eval's evaluator (`manager`: the `task_manager` of `config`, built
    here when not given). Every rank of `group` takes part, each answering its share of the
    documents; the run is rank 0's (None on the others)."""
    from lm_eval import simple_evaluate
    from lm_eval.api.registry import get_metric_aggregation

    from bench.lm_eval_model import SteerbenchLM

    manager = manager if manager is not None else task_manager(config)
    lm = SteerbenchLM(subject=subject, steering=steering, batch_size=config.batch_size, group=group)
    with _no_git_probe():
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
    if out is None:  # not rank 0: lm-eval gathered this rank's documents there
        return None
    scores, items = {}, {}
    for task in config.tasks:
        samples = sorted(out["samples"][task], key=lambda s: s["doc_id"])
        metric, where = samples[0]["metrics"][0], samples[0]["filter"]
        scores[task] = TaskScore(
            f"{metric},{where}",
            float(out["results"][task][f"{metric},{where}"]),
            bool(out["higher_is_better"][task][metric]),
            _aggregation(out["configs"][task], metric, get_metric_aggregation),
        )
        items[task] = tuple(
            {"doc_id": s["doc_id"], **{m: _plain(s[m]) for m in s["metrics"]}} for s in samples
        )
    return CapabilityRun(scores, items)


@contextmanager
def _no_git_probe() -> Iterator[None]:
    """lm-eval's results name the git commit of the working folder, asked of `git` with its
    error output left on the terminal: outside a repository every evaluation would print
    "fatal: not a git repository". steerbench keeps none of lm-eval's run description, so the
    probe is skipped (where this lm-eval version has it)."""
    import lm_eval.evaluator

    if not hasattr(lm_eval.evaluator, "get_git_commit_hash"):
        yield
        return
    with patch.object(lm_eval.evaluator, "get_git_commit_hash", lambda: None):
        yield


def _aggregation(config: Mapping[str, Any], metric: str, default: Callable) -> str:
    """The name of lm-eval's aggregation of `metric`: the task config's, else the metric's
    registered default."""
    for entry in config.get("metric_list") or ():
        if entry.get("metric") == metric and isinstance(entry.get("aggregation"), str):
            return entry["aggregation"]
    try:
        return default(metric).__name__
    except Exception:  # lm-eval raises its own KeyError/ValueError variants for unknown metrics
        return "unknown"


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
    tasks = tuple(steered.scores)
    per_task = {t: found for t in tasks if (found := retained_interval(steered, unsteered, (t,)))}
    return Capability(
        method=method,
        task=task,
        strength=strength,
        scores={t: s.value for t, s in steered.scores.items()},
        unsteered={t: s.value for t, s in unsteered.scores.items()},
        retained=ratios,
        capability_retained=sum(finite) / len(finite) if finite else math.nan,
        metrics={t: s.metric for t, s in steered.scores.items()},
        interval=retained_interval(steered, unsteered, tasks)
        if len(per_task) == len(tasks)
        else None,
        intervals=per_task,
    )


# ------------------------------------------------------------------ intervals over items
def _paired_parts(
    steered: CapabilityRun, unsteered: CapabilityRun, task: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both sides' per-item values of `task`'s metric on the items they share, split into the
    aggregation's parts: two (n_items, parts) arrays; None where lm-eval's aggregation has no
    per-item form here."""
    score = steered.scores[task]
    found = AGGREGATIONS.get(score.aggregation)
    if found is None:
        return None
    sides = [
        {i["doc_id"]: i.get(score.name) for i in run.items[task]} for run in (steered, unsteered)
    ]
    docs = sorted(set(sides[0]) & set(sides[1]))
    try:
        arrays = [
            np.array([np.reshape(np.asarray(side[d], dtype=float), found.parts) for d in docs])
            for side in sides
        ]
    except (TypeError, ValueError):  # an item value of another shape than the aggregation's
        return None
    return (arrays[0], arrays[1]) if docs else None


def retained_interval(
    steered: CapabilityRun, unsteered: CapabilityRun, tasks: Sequence[str]
) -> Interval | None:
    """The 95% interval of the mean capability retained over `tasks`: items resampled (a
    cluster bootstrap over all the tasks' items, each task's score recomputed from its own
    items in the resample with lm-eval's aggregation), both sides on the same items."""
    blocks = {t: _paired_parts(steered, unsteered, t) for t in tasks}
    if not blocks or any(b is None for b in blocks.values()):
        return None
    n = sum(len(b[0]) for b in blocks.values())
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for task, (steered_parts, unsteered_parts) in blocks.items():
        for side, parts in (("steered", steered_parts), ("unsteered", unsteered_parts)):
            for k in range(parts.shape[1]):
                column = np.full((n, 1), math.nan)
                column[offset : offset + len(parts), 0] = parts[:, k]
                arrays[f"{task}|{side}|{k}"] = column
        offset += len(steered_parts)

    def mean_retained(means: Mapping[str, np.ndarray]) -> np.ndarray:
        ratios = []
        for task in tasks:
            score = steered.scores[task]
            of_means = AGGREGATIONS[score.aggregation]
            a, b = (
                of_means.of_means([means[f"{task}|{side}|{k}"] for k in range(of_means.parts)])
                for side in ("steered", "unsteered")
            )
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = a / b if score.higher_is_better else b / a
            ratios.append(np.where(np.isfinite(ratio), ratio, math.nan))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no finite ratio
            return np.nanmean(np.stack(ratios), axis=0)

    return bootstrap_interval(
        arrays, level=LEVEL, n_resamples=RESAMPLES, seed=SEED, combine=mean_retained
    )
