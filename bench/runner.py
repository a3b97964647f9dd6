"""The sweep: for each task x method, fit once, sweep strengths on `select`, report on `test`.

Cells are the unit of work and of caching: (method, task, split, strength, seed). A cell's id
hashes everything its numbers depend on, so re-running an experiment into the same directory
skips finished cells and recomputes only what changed. Strength 0 is the unsteered model for
every method (the method contract guarantees it), so it is computed once per task and shared.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

from tqdm.auto import tqdm

from bench.config import Experiment, MethodSpec, TaskSpec
from bench.errors import UserError
from bench.fluency import FLUENCY_METRICS, fluency_scores
from bench.method import Method, iter_strengths
from bench.params import parse
from bench.progress import progress_bars
from bench.registry import METHODS, TASKS
from bench.results import SCHEMA_VERSION, RunDir
from bench.selection import choose_strength
from bench.state import State, StateCache, content_key
from bench.subject import GenerationSettings, Subject
from bench.target import SteeringTarget
from bench.task import Generate, Output, Task
from bench.threads import torch_threads

UNSTEERED = "unsteered"


@dataclass(frozen=True)
class PlannedMethod:
    label: str
    method: Method
    strengths: tuple[float, ...]


def build_methods(specs: Sequence[MethodSpec]) -> list[PlannedMethod]:
    if not specs:
        specs = [MethodSpec(name=name) for name in METHODS.names()]
    planned, labels = [], set()
    for i, spec in enumerate(specs):
        cls = METHODS.get(spec.name)
        params = parse(cls.Params, spec.params, f"methods[{i}] ({spec.name}).params")
        if spec.display in labels:
            raise UserError(
                f"methods[{i}]: '{spec.display}' appears twice; give one a distinct 'label'"
            )
        labels.add(spec.display)
        strengths = tuple(iter_strengths(spec.strengths or cls.default_strengths))
        planned.append(PlannedMethod(spec.display, cls(params), strengths))
    return planned


def build_tasks(specs: Sequence[TaskSpec]) -> list[Task]:
    if not specs:
        specs = [TaskSpec(name=name) for name in TASKS.names()]
    tasks = []
    for i, spec in enumerate(specs):
        cls = TASKS.get(spec.name)
        tasks.append(cls(parse(cls.Params, spec.params, f"tasks[{i}] ({spec.name}).params")))
    return tasks


class Runner:
    def __init__(
        self,
        experiment: Experiment,
        subject: Subject,
        run_dir: RunDir,
        *,
        evaluator: Subject | None = None,
        state_cache: StateCache | None = None,
        progress: bool = True,
    ) -> None:
        self.exp = experiment
        self.subject = subject
        self.evaluator = evaluator or subject  # scored outside any steering context
        self.run_dir = run_dir
        self.states = state_cache or StateCache()
        self.progress = progress
        self.methods = build_methods(experiment.methods)
        self.tasks = build_tasks(experiment.tasks)
        self.cell_ids: list[str] = []
        self.selection: list[dict] = []
        self.skipped: list[dict] = []
        self.fits: list[dict] = []
        self.data: dict[str, dict] = {}  # per task: where its data came from and split sizes
        self._bar: tqdm | None = None

    # ------------------------------------------------------------------ the sweep
    def run(self) -> None:
        seeds = self.exp.seeds
        total = sum(len(self.tasks) * len(m.strengths) * len(seeds) * 2 for m in self.methods)
        with (
            progress_bars(self.progress),
            torch_threads(self.exp.threads),
            tqdm(total=total, desc="cells", unit="cell", disable=not self.progress) as bar,
        ):
            self._bar = bar
            for task in self.tasks:
                self._run_task(task)
        self.run_dir.write_json("selection.json", self.selection)
        self.run_dir.write_json("skipped.json", self.skipped)
        self.run_dir.write_json("fits.json", self.fits)
        self.run_dir.consolidate(self.cell_ids)

    def _run_task(self, task: Task) -> None:
        splits = task.load()
        sizes = {split: len(splits.get(split)) for split in ("fit", "select", "test")}
        self.data[task.name] = {"source": splits.source, "sizes": sizes}
        targets = {
            split: [task.target(ex, splits) for ex in splits.get(split)]
            for split in ("select", "test")
        }
        for planned in self.methods:
            missing = {
                t.name for ts in targets.values() for t in ts if not planned.method.applies_to(t)
            }
            if missing:
                reason = f"{planned.method.name} needs what the task's target lacks ({sorted(missing)[0]})"
                self.skipped.append({"method": planned.label, "task": task.name, "reason": reason})
                self._bar.update(len(planned.strengths) * len(self.exp.seeds) * 2)
                continue
            states = self._fit(planned, task, [t for ts in targets.values() for t in ts])
            select = self._sweep(
                planned, task, splits, "select", targets["select"], states, planned.strengths
            )
            primary = task.primary_metric
            chosen = choose_strength(
                select,
                self.exp.selection.fluency_budget,
                primary,
                task.metric(primary).higher_is_better,
            )
            self.selection.append({"method": planned.label, "task": task.name, **chosen})
            test_strengths = (
                planned.strengths
                if self.exp.selection.test_strengths == "all"
                else (0.0, chosen["strength"])
            )
            self._sweep(
                planned,
                task,
                splits,
                "test",
                targets["test"],
                states,
                tuple(dict.fromkeys(test_strengths)),
            )
            self._bar.update(
                (len(planned.strengths) - len(set(test_strengths))) * len(self.exp.seeds)
            )

    def _fit(
        self, planned: PlannedMethod, task: Task, targets: list[SteeringTarget]
    ) -> dict[str, State]:
        states = {}
        for target in {t.name: t for t in targets}.values():
            key = content_key(
                planned.method.fit_key_parts(), target.to_dict(), self.subject.fingerprint()
            )
            start = time.perf_counter()
            state, cached = self.states.get_or_fit(
                key, lambda t=target: planned.method.fit(self.subject, t)
            )
            seconds = time.perf_counter() - start
            self.fits.append(
                {
                    "method": planned.label,
                    "task": task.name,
                    "target": target.name,
                    "state": key,
                    "cached": cached,
                    "seconds": seconds,
                }
            )
            states[target.name] = state.to(self.subject.device)
        return states

    def _sweep(self, planned, task, splits, split, targets, states, strengths) -> list[dict]:
        cells = []
        for strength in strengths:
            for seed in self.exp.seeds:
                cells.append(
                    self._cell(planned, task, splits, split, targets, states, strength, seed)
                )
                self._bar.update(1)
        return cells

    # ------------------------------------------------------------------ one cell
    def _cell_id(
        self, method_part: dict, task: Task, split: str, strength: float, seed: int
    ) -> str:
        return content_key(
            SCHEMA_VERSION,
            self.subject.fingerprint(),
            method_part,
            task.name,
            asdict(task.params),
            split,
            strength,
            seed,
            asdict(self.exp.generation),
            self.exp.perplexity_cap,
            self.exp.evaluator,
        )

    def _cell(self, planned, task, splits, split, targets, states, strength, seed) -> dict:
        self._bar.set_postfix_str(
            f"{task.name}/{planned.label}/{split}/s={strength:g}", refresh=False
        )
        unsteered = strength == 0.0
        method_part = (
            {UNSTEERED: True}
            if unsteered
            else {**planned.method.fit_key_parts(), "label": planned.label}
        )
        cell_id = self._cell_id(method_part, task, split, strength, seed)
        if not self.run_dir.has_cell(cell_id):
            examples = splits.get(split)
            if unsteered:
                steer = None
            else:
                steer = lambda target: planned.method.steer(
                    self.subject, states[target.name], strength
                )
            cell, records = self._execute(task, examples, targets, steer, seed)
            cell.update(cell=cell_id, task=task.name, split=split, strength=strength, seed=seed)
            cell["method"] = UNSTEERED if unsteered else planned.label
            cell["method_name"] = UNSTEERED if unsteered else planned.method.name
            self.run_dir.write_cell(cell, [{**r, "cell": cell_id} for r in records])
        cell = self.run_dir.read_cell(cell_id)
        if unsteered:  # the shared unsteered cell, viewed as this method's strength-0 point
            shared_id = content_key(cell_id, planned.label)
            if not self.run_dir.has_cell(shared_id):
                shared = {
                    **cell,
                    "cell": shared_id,
                    "method": planned.label,
                    "method_name": planned.method.name,
                    "shared_from": cell_id,
                }
                records = [{**r, "cell": shared_id} for r in self.run_dir.read_records(cell_id)]
                self.run_dir.write_cell(shared, records)
            cell_id = shared_id
            cell = self.run_dir.read_cell(cell_id)
        self.cell_ids.append(cell_id)
        return cell

    def _execute(self, task: Task, examples, targets, steer, seed) -> tuple[dict, list[dict]]:
        requests = [list(task.requests(ex)) for ex in examples]
        outputs: list[list[Output | None]] = [[None] * len(r) for r in requests]
        by_target: dict[str, list[int]] = defaultdict(list)
        target_of = {}
        for i, target in enumerate(targets):
            by_target[target.name].append(i)
            target_of[target.name] = target
        tokens_before = self.subject.generated_tokens
        start = time.perf_counter()
        error = None
        try:
            for name, indices in by_target.items():
                context = steer(target_of[name]) if steer else contextlib.nullcontext()
                with context:
                    self._answer(requests, outputs, indices, seed)
        except RuntimeError as exc:  # inf/nan probabilities at extreme strengths
            if not any(word in str(exc).lower() for word in ("inf", "nan")):
                raise
            error = str(exc).splitlines()[0]
        seconds = time.perf_counter() - start
        generated = self.subject.generated_tokens - tokens_before
        cost = {
            "seconds": seconds,
            "generated_tokens": generated,
            "tokens_per_second": generated / seconds if seconds else None,
        }
        if error is not None:
            return {
                "degenerate": True,
                "error": error,
                "metrics": {},
                "n_examples": len(examples),
                "cost": cost,
                **self._cell_meta(task),
            }, []
        return self._score(task, examples, requests, outputs, cost)

    def _answer(self, requests, outputs, indices: list[int], seed: int) -> None:
        gen = self.exp.generation
        generate_groups: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
        loglik: list[tuple[int, int]] = []
        for i in indices:
            for j, request in enumerate(requests[i]):
                if isinstance(request, Generate):
                    key = (request.num_samples, request.max_new_tokens or gen.max_new_tokens)
                    generate_groups[key].append((i, j))
                else:
                    loglik.append((i, j))
        for (n, max_new), slots in generate_groups.items():
            settings = GenerationSettings(
                max_new, gen.temperature, gen.top_p, n, seed, gen.batch_size
            )
            texts = self.subject.generate([requests[i][j].prompt for i, j in slots], settings)
            for (i, j), samples in zip(slots, texts):
                outputs[i][j] = tuple(samples)
        if loglik:
            pairs = [requests[i][j] for i, j in loglik]
            scores = self.subject.logprobs(
                [p.context for p in pairs],
                [p.continuation for p in pairs],
                batch_size=gen.batch_size,
            )
            for (i, j), score in zip(loglik, scores):
                outputs[i][j] = score

    def _score(self, task: Task, examples, requests, outputs, cost) -> tuple[dict, list[dict]]:
        records, capped_total, generates = [], 0, False
        fluency_inputs = []  # (example index, evaluator context, samples)
        for i, reqs in enumerate(requests):
            for j, request in enumerate(reqs):
                if isinstance(request, Generate):
                    fluency_inputs.append((i, request.evaluator_context, outputs[i][j]))
        fluency: dict[int, list[tuple[tuple[str, ...], list]]] = defaultdict(list)
        if fluency_inputs:
            generates = True
            contexts = [p for _, p, samples in fluency_inputs for _ in samples]
            continuations = [s for _, _, samples in fluency_inputs for s in samples]
            scores = iter(
                self.evaluator.logprobs(
                    contexts,
                    continuations,
                    batch_size=self.exp.generation.batch_size,
                    transform=False,
                )
            )
            for i, _, samples in fluency_inputs:
                fluency[i].append((samples, [next(scores) for _ in samples]))
        for i, example in enumerate(examples):
            scored = task.score(example, outputs[i])
            values = dict(scored.scores)
            if fluency.get(i):
                texts = [t for samples, _ in fluency[i] for t in samples]
                sample_scores = [s for _, ss in fluency[i] for s in ss]
                fl, capped = fluency_scores(texts, sample_scores, self.exp.perplexity_cap)
                values.update(fl)
                capped_total += capped
            records.append(
                {
                    "example": example.id,
                    "scores": values,
                    "details": dict(scored.details),
                    "outputs": [o if isinstance(o, tuple) else asdict(o) for o in outputs[i]],
                }
            )
        metrics = {}
        for metric in (*task.metrics, *(FLUENCY_METRICS if generates else ())):
            metrics[metric.name] = metric.aggregate(
                [r["scores"].get(metric.name, math.nan) for r in records]
            )
        for derived in task.derived_metrics:
            metrics[derived.name] = derived.compute(metrics)
        primary = metrics.get(task.primary_metric, math.nan)
        degenerate = not math.isfinite(primary) or (
            generates and not math.isfinite(metrics.get("perplexity", math.nan))
        )
        cell = {
            "metrics": metrics,
            "n_examples": len(examples),
            "degenerate": degenerate,
            "perplexity_capped": capped_total,
            "cost": cost,
            **self._cell_meta(task),
        }
        return cell, records

    def _cell_meta(self, task: Task) -> dict:
        directions = {
            m.name: m.higher_is_better
            for m in (*task.metrics, *task.derived_metrics, *FLUENCY_METRICS)
        }
        return {
            "schema": SCHEMA_VERSION,
            "primary_metric": task.primary_metric,
            "higher_is_better": directions,
        }


def replace_output_dir(experiment: Experiment, output_dir: str | None) -> Experiment:
    return experiment if output_dir is None else replace(experiment, output_dir=output_dir)
