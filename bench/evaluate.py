"""Evaluating one cell: a task's requests -> steered answers -> task scores -> fluency -> aggregates.

This is the one definition of what a cell's numbers mean. The runner plans, caches and records
around it; the steering-cost benchmark and the tests call it too.

The subject answers under steering (one steering context per steering target, so examples that
share a target share a context); the evaluator scores fluency outside any steering context (it
is the unsteered subject unless the experiment names another model).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass

from bench.config import GenerationConfig
from bench.errors import UserError
from bench.fluency import FLUENCY_METRICS, fluency_scores
from bench.method import Method
from bench.records import CellResult, Cost, Derivation, ExampleRecord
from bench.sampling import stream_key
from bench.state import State
from bench.subject import GenerationSettings, Subject
from bench.target import SteeringTarget
from bench.task import Example, Generate, Output, Request, Task

# target -> the steering context for its examples; None evaluates the unsteered model.
Steer = Callable[[SteeringTarget], AbstractContextManager[None]]


def steering(
    method: Method, subject: Subject, states: Mapping[str, State], strength: float
) -> Steer:
    """Steer with `method` at `strength`, with the state fitted for each target's name."""
    return lambda target: method.steer(subject, states[target.name], strength)


@dataclass(frozen=True)
class Evaluation:
    """What every cell of a run shares: who answers, who judges fluency, how to generate."""

    subject: Subject
    generation: GenerationConfig
    perplexity_cap: float
    evaluator: Subject | None = None  # None: the subject, outside any steering context
    # Every generation exactly this many tokens, whatever the task asks (the steering-cost
    # benchmark: steered and unsteered answers then do the same work); None: as asked.
    exact_length: int | None = None

    @property
    def judge(self) -> Subject:
        return self.evaluator or self.subject


@dataclass(frozen=True)
class CellEvaluation:
    result: CellResult
    examples: tuple[ExampleRecord, ...]


def derivations(task: Task) -> dict[str, Derivation]:
    return {d.name: Derivation(d.of, d.combine) for d in task.derived_metrics}


def metric_directions(task: Task) -> dict[str, bool]:
    """Every metric name a cell of `task` may report, with its direction."""
    return {
        m.name: m.higher_is_better for m in (*task.metrics, *task.derived_metrics, *FLUENCY_METRICS)
    }


@dataclass(frozen=True)
class Answers:
    """A cell's requests and the outputs the steered subject gave them, with what it cost."""

    requests: tuple[tuple[Request, ...], ...]  # per example
    outputs: tuple[tuple[Output | None, ...], ...]  # per example, per request
    cost: Cost
    error: str | None  # why generation failed (inf/nan probabilities), if it did


def answer_cell(
    evaluation: Evaluation,
    task: Task,
    examples: Sequence[Example],
    targets: Sequence[SteeringTarget],
    steer: Steer | None,
    seed: int,
) -> Answers:
    """Answer `examples` (whose steering targets are `targets`, in order) under `steer` with
    sampling seed `seed`: the part of a cell that steering costs (`steerbench bench` times it).
    Generation that fails on inf/nan probabilities (extreme strengths) is an error in the
    answers, not an exception."""
    subject = evaluation.subject
    requests = tuple(tuple(task.requests(ex)) for ex in examples)
    ids = [ex.id for ex in examples]
    outputs: list[list[Output | None]] = [[None] * len(r) for r in requests]
    by_target: dict[str, list[int]] = defaultdict(list)
    target_of: dict[str, SteeringTarget] = {}
    for i, target in enumerate(targets):
        by_target[target.name].append(i)
        target_of[target.name] = target
    tokens_before = subject.generated_tokens
    start = time.perf_counter()
    error = None
    try:
        for name, indices in by_target.items():
            context = steer(target_of[name]) if steer else contextlib.nullcontext()
            with context:
                _answer(evaluation, requests, outputs, indices, seed, ids)
    except RuntimeError as exc:  # inf/nan probabilities at extreme strengths
        if not any(word in str(exc).lower() for word in ("inf", "nan")):
            raise
        error = str(exc).splitlines()[0]
    cost = Cost(time.perf_counter() - start, subject.generated_tokens - tokens_before)
    return Answers(requests, tuple(tuple(o) for o in outputs), cost, error)


def evaluate_cell(
    evaluation: Evaluation,
    task: Task,
    examples: Sequence[Example],
    targets: Sequence[SteeringTarget],
    steer: Steer | None,
    seed: int,
    cell_id: str = "",
) -> CellEvaluation:
    """Answer the examples (`answer_cell`), score them and aggregate; a generation failure
    gives a degenerate cell. (One process's cell is one shard holding every example.)"""
    shard = evaluate_shard(evaluation, task, examples, targets, steer, seed, cell_id)
    return combine_shards(task, [shard], len(examples))


@dataclass(frozen=True)
class ShardEvaluation:
    """Some of a cell's examples answered and scored (by one rank of a sharded run): the
    per-example part of a `CellEvaluation`, before the cell's aggregates."""

    examples: tuple[ExampleRecord, ...]
    cost: Cost
    error: str | None  # why generation failed; no example records then
    generates: bool  # some request generated (the cell reports fluency)
    perplexity_capped: int


def evaluate_shard(
    evaluation: Evaluation,
    task: Task,
    examples: Sequence[Example],
    targets: Sequence[SteeringTarget],
    steer: Steer | None,
    seed: int,
    cell_id: str = "",
) -> ShardEvaluation:
    """Answer and score `examples`, each on its own: what a rank computes of a cell. Every
    per-example number depends on the example (and its sample streams) only, so the shards of
    a cell give the records one process would."""
    answers = answer_cell(evaluation, task, examples, targets, steer, seed)
    if answers.error is not None:
        return ShardEvaluation((), answers.cost, answers.error, False, 0)
    return _score(
        evaluation, task, examples, answers.requests, answers.outputs, answers.cost, cell_id
    )


def combine_shards(
    task: Task, shards: Sequence[ShardEvaluation], n_examples: int
) -> CellEvaluation:
    """The cell of these shards (in example order): their records, the cell's aggregates over
    all of them; a generation failure in any shard makes the cell degenerate. Cost adds up
    (seconds are process-seconds: comparable with a one-process run's)."""
    cost = Cost(sum(s.cost.seconds for s in shards), sum(s.cost.generated_tokens for s in shards))
    error = next((s.error for s in shards if s.error is not None), None)
    if error is not None:
        result = CellResult(
            metrics={},
            higher_is_better=metric_directions(task),
            primary_metric=task.primary_metric,
            n_examples=n_examples,
            degenerate=True,
            perplexity_capped=0,
            cost=cost,
            derived=derivations(task),
            error=error,
        )
        return CellEvaluation(result, ())
    records = tuple(r for s in shards for r in s.examples)
    generates = any(s.generates for s in shards)
    metrics = aggregate(task, [r.scores for r in records], generates)
    primary = metrics.get(task.primary_metric, math.nan)
    degenerate = not math.isfinite(primary) or (
        generates and not math.isfinite(metrics.get("perplexity", math.nan))
    )
    result = CellResult(
        metrics=metrics,
        higher_is_better=metric_directions(task),
        primary_metric=task.primary_metric,
        n_examples=n_examples,
        degenerate=degenerate,
        perplexity_capped=sum(s.perplexity_capped for s in shards),
        cost=cost,
        derived=derivations(task),
    )
    return CellEvaluation(result, records)


def _answer(
    evaluation: Evaluation,
    requests: Sequence[Sequence[Request]],
    outputs: list[list[Output | None]],
    indices: list[int],
    seed: int,
    ids: Sequence[str],
) -> None:
    """Fill `outputs[i][j]` for the examples `indices` (whose ids are `ids[i]`): generations
    batched by (samples, length), each sample drawn from its own stream (example, request,
    sample; `bench.sampling`) so that it is the same whatever the batch, method or strength;
    log-likelihoods in one batch."""
    gen = evaluation.generation
    generate_groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    loglik: list[tuple[int, int]] = []
    for i in indices:
        for j, request in enumerate(requests[i]):
            if isinstance(request, Generate):
                length = evaluation.exact_length or request.max_new_tokens or gen.max_new_tokens
                key = (request.num_samples, length)
                generate_groups[key].append((i, j))
            else:
                loglik.append((i, j))
    for (n, max_new), slots in generate_groups.items():
        fixed = evaluation.exact_length is not None
        settings = GenerationSettings(
            max_new, gen.temperature, gen.top_p, n, seed, gen.batch_size, fixed
        )
        texts = evaluation.subject.generate(
            [requests[i][j].prompt for i, j in slots],
            settings,
            streams=[stream_key(ids[i], j) for i, j in slots],
        )
        for (i, j), samples in zip(slots, texts):
            outputs[i][j] = tuple(samples)
    if loglik:
        pairs = [requests[i][j] for i, j in loglik]
        scores = evaluation.subject.logprobs(
            [p.context for p in pairs], [p.continuation for p in pairs], batch_size=gen.batch_size
        )
        for (i, j), score in zip(loglik, scores):
            outputs[i][j] = score


def _fluency_scores(
    evaluation: Evaluation, requests: Sequence[Sequence[Request]], outputs
) -> dict[int, list[tuple[tuple[str, ...], list]]]:
    """Per example index: (samples, the evaluator's continuation scores) of each generation."""
    inputs = [  # (example index, evaluator context, samples)
        (i, request.evaluator_context, outputs[i][j])
        for i, reqs in enumerate(requests)
        for j, request in enumerate(reqs)
        if isinstance(request, Generate)
    ]
    fluency: dict[int, list[tuple[tuple[str, ...], list]]] = defaultdict(list)
    if not inputs:
        return fluency
    scores = iter(
        evaluation.judge.logprobs(
            [context for _, context, samples in inputs for _ in samples],
            [s for _, _, samples in inputs for s in samples],
            batch_size=evaluation.generation.batch_size,
            transform=False,
        )
    )
    for i, _, samples in inputs:
        fluency[i].append((samples, [next(scores) for _ in samples]))
    return fluency


def _score(
    evaluation: Evaluation, task: Task, examples, requests, outputs, cost: Cost, cell_id: str
) -> ShardEvaluation:
    fluency = _fluency_scores(evaluation, requests, outputs)
    scored_names = {m.name for m in task.metrics}  # what `score` may return
    records, capped_total = [], 0
    for i, example in enumerate(examples):
        scored = task.score(example, outputs[i])
        values = dict(scored.scores)
        unknown = sorted(set(values) - scored_names)
        if unknown:
            raise UserError(
                f"task '{task.name}' scored '{unknown[0]}', which is none of its per-example "
                f"metrics ({', '.join(sorted(scored_names))})"
            )
        if fluency.get(i):
            texts = [t for samples, _ in fluency[i] for t in samples]
            sample_scores = [s for _, ss in fluency[i] for s in ss]
            fl, capped = fluency_scores(texts, sample_scores, evaluation.perplexity_cap)
            values.update(fl)
            capped_total += capped
        records.append(
            ExampleRecord(
                cell=cell_id,
                example=example.id,
                scores=values,
                details=dict(scored.details),
                outputs=tuple(o if isinstance(o, tuple) else asdict(o) for o in outputs[i]),
            )
        )
    return ShardEvaluation(tuple(records), cost, None, bool(fluency), capped_total)


def aggregate(
    task: Task, scores: Sequence[Mapping[str, float]], generates: bool
) -> dict[str, float]:
    """A cell's metrics from its examples' scores: each metric aggregates its values (missing
    ones are NaN), fluency metrics too when the task generates, then the derived metrics."""
    metrics = {
        metric.name: metric.aggregate([s.get(metric.name, math.nan) for s in scores])
        for metric in (*task.metrics, *(FLUENCY_METRICS if generates else ()))
    }
    for derived in task.derived_metrics:
        metrics[derived.name] = derived.compute(metrics)
    return metrics
