"""The sweep: for each task x method, fit once, sweep strengths on `select`, report on `test`.

Cells are the unit of work and of caching: (method, task, split, strength, seed). A cell's id
hashes everything its numbers depend on, so re-running an experiment into the same directory
skips finished cells and recomputes only what changed. Strength 0 is the unsteered model for
every method (the Method base guarantees it), so it is evaluated and stored once per task,
split and seed; every method's sweep refers to it. What a cell measures is
`bench.evaluate.evaluate_cell`; this module plans, fits, caches and records around it.

Launched in several processes (`bench.distributed`), every rank walks the same plan: each cell's
examples are sharded across the ranks (`evaluate_shard`), rank 0 gathers the parts, combines
them (`combine_shards`) and alone reads and writes the run folder; it tells the others which
cells are finished already (resume), which fits apply and which strength it chose. Fitted states
are fitted once, by rank 0, into the content-addressed cache that the others then read.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace

import torch
from tqdm.auto import tqdm

from bench.capability import resolve
from bench.capability_suite import CapabilitySuite
from bench.config import Experiment
from bench.distributed import SINGLE, Group
from bench.evaluate import Evaluation, combine_shards, evaluate_shard, steering
from bench.judgement import measure
from bench.method import NotApplicable
from bench.plan import PlannedMethod, build_methods, build_tasks
from bench.progress import progress_bars
from bench.records import (
    SCHEMA_VERSION,
    UNSTEERED,
    CellKey,
    CellRecord,
    Choice,
    Fit,
    Judgement,
    Skip,
    TaskEntry,
)
from bench.rundir import RunDir
from bench.selection import choose_strength
from bench.side_effects import SIDE_EFFECTS, side_effect
from bench.state import State, StateCache, content_key, share_states
from bench.subject import Subject
from bench.target import SteeringTarget
from bench.task import Splits, Task
from bench.threads import torch_threads


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
        data: Sequence[Splits] | None = None,
        group: Group = SINGLE,
    ) -> None:
        """`data`: each task's splits in the experiment's order, when the caller read them
        already (the CLI does, to find a bad data file before the model loads). `group`: the
        processes sharing the run (rank 0 alone touches `run_dir`)."""
        self.exp = experiment
        self.subject = subject
        self.evaluation = Evaluation(
            subject, experiment.generation, experiment.perplexity_cap, evaluator
        )
        self.run_dir = run_dir
        self.states = state_cache or StateCache()
        self.progress = progress and group.main
        self.group = group
        self.methods = build_methods(experiment.methods)
        self.tasks = build_tasks(experiment.tasks)
        self._data: list[Splits | None] = (
            list(data) if data is not None else [None] * len(self.tasks)
        )
        if len(self._data) != len(self.tasks):
            raise ValueError(
                f"data for {len(self._data)} tasks, the experiment has {len(self.tasks)}"
            )
        self.cell_ids: list[str] = []  # in run order; the shared unsteered cells repeat
        self.selection: list[Choice] = []
        self.skipped: list[Skip] = []
        self.fits: list[Fit] = []
        self.judgements: list[Judgement] = []  # per task with a self-judging method
        self.data: dict[str, TaskEntry] = {}  # per task: its scorers, data source, split sizes
        # The capability suite (None: off, or no lm-eval task named for this model).
        capability = resolve(experiment.capability, subject.capability_tasks)
        self.capability = (
            CapabilitySuite(capability, subject, run_dir, group) if capability else None
        )
        # Side effects across suites: each method x suite operating point (its state, the
        # target it was fitted for, its strength) and each suite's test examples and targets.
        self._operating: list[tuple[PlannedMethod, str, SteeringTarget, State, float]] = []
        self._suites: dict[str, tuple[Task, Splits, list[SteeringTarget]]] = {}
        self.side_effects: list = []  # `bench.side_effects.SideEffect`, on rank 0
        self._side_store = RunDir(run_dir.root / SIDE_EFFECTS)
        self._bar: tqdm | None = None

    # ------------------------------------------------------------------ the sweep
    def run(self) -> None:
        seeds = self.exp.seeds
        total = sum(len(self.tasks) * len(m.strengths) * len(seeds) * 2 for m in self.methods)
        main = self.group.main
        if main:
            self.run_dir.begin()
            self._side_store.begin()
        with (
            progress_bars(self.progress),
            torch_threads(self.exp.threads),
            tqdm(total=total, desc="cells", unit="cell", disable=not self.progress) as bar,
        ):
            self._bar = bar
            for task, splits in zip(self.tasks, self._data):
                self._run_task(task, splits or task.load())
            if self.exp.side_effects:  # every suite's operating points are known now
                self._side_effects()
        if not main:
            return
        self.run_dir.write_records("selection.json", self.selection)
        self.run_dir.write_records("skipped.json", self.skipped)
        self.run_dir.write_records("fits.json", self.fits)
        if self.exp.side_effects:
            self.run_dir.write_records("side_effects.json", self.side_effects)
            self._side_store.consolidate(c for e in self.side_effects for c in e.cells)
        if self.capability is not None:
            self.capability.write()
        self.run_dir.write_records("judgement.json", self.judgements)
        self.run_dir.consolidate(self.cell_ids)

    def _run_task(self, task: Task, splits: Splits) -> None:
        sizes = {split: len(splits.get(split)) for split in ("fit", "select", "test")}
        self.data[task.name] = TaskEntry(task.name, dict(task.scorers()), splits.source, sizes)
        targets = {
            split: [task.target(ex, splits) for ex in splits.get(split)]
            for split in ("select", "test")
        }
        self._suites[task.name] = (task, splits, targets["test"])
        self._judge(task, splits)
        for planned in self.methods:
            missing = {
                t.name for ts in targets.values() for t in ts if not planned.method.applies_to(t)
            }
            reason = None
            if missing:
                reason = f"{planned.method.name} needs what the task's target lacks ({sorted(missing)[0]})"
            else:
                fit_targets = [t for ts in targets.values() for t in ts]
                # Rank 0 fits into the cache (or finds a fit not applicable); once the others
                # hear the outcome, they take its states (`share_states`).
                states: dict[str, State] = {}
                if self.group.main:
                    try:
                        states = self._fit(planned, task, fit_targets)
                    except NotApplicable as error:
                        reason = str(error)
                reason = self.group.broadcast(reason)
                if reason is None and self.group.distributed:
                    keys = {t.name: self._state_key(planned, t) for t in fit_targets}
                    shared = share_states(self.group, self.states, keys, states)
                    states = {n: state.to(self.subject.device) for n, state in shared.items()}
            if reason is not None:
                self.skipped.append(Skip(planned.label, task.name, reason))
                self._bar.update(len(planned.strengths) * len(self.exp.seeds) * 2)
                continue
            select = self._sweep(
                planned, task, splits, "select", targets["select"], states, planned.strengths
            )
            budget = self.capability.config.budget if self.capability else None
            if budget is not None:  # strengths that cost more capability are no candidates
                kept = {
                    s
                    for s in planned.strengths
                    if self._capability(
                        planned, task, states, targets["test"], s
                    ).capability_retained
                    >= budget
                }
                select = [c for c in select if c.key.strength in kept]
            primary = task.primary_metric
            chosen = None
            if self.group.main:  # the cells and their records are rank 0's
                chosen = choose_strength(
                    planned.label,
                    task.name,
                    select,
                    self.exp.selection.fluency_budget,
                    primary,
                    task.metric(primary).higher_is_better,
                    rule=self.exp.selection.rule,
                    records=self.run_dir,
                )
            chosen = self.group.broadcast(chosen)
            self.selection.append(chosen)
            test_strengths = (
                planned.strengths
                if self.exp.selection.test_strengths == "all"
                else (0.0, chosen.strength)
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
            if self.capability is not None and targets["test"]:
                self._capability(planned, task, states, targets["test"], chosen.strength)
            if targets["test"]:
                first = targets["test"][0]
                self._operating.append(
                    (planned, task.name, first, states[first.name], chosen.strength)
                )

    # ------------------------------------------------------------------ side effects
    def _side_effects(self) -> None:
        """Each operating point's state scored on every other suite's test split, as cells of
        their own (`side_effects/`: resumed, sharded and healed like any cell). The unsteered
        model, strength 0, has no side effect by construction: not evaluated."""
        points = [p for p in self._operating if p[4] != 0.0]
        self._bar.total += len(points) * (len(self._suites) - 1) * len(self.exp.seeds)
        for planned, source, target, state, strength in points:
            for name, (task, splits, targets) in self._suites.items():
                if name == source:
                    continue
                # Every example steered by the one state, whatever its own target.
                states = {t.name: state for t in targets}
                origin = {"fitted_for": source, "target": target.to_dict()}
                steered = [
                    self._cell(
                        planned,
                        task,
                        splits,
                        "test",
                        targets,
                        states,
                        strength,
                        seed,
                        store=self._side_store,
                        origin=origin,
                    )
                    for seed in self.exp.seeds
                ]
                self._bar.update(len(self.exp.seeds))
                unsteered = [  # finished already: the suite's own sweep ran them
                    self._cell(planned, task, splits, "test", targets, states, 0.0, seed)
                    for seed in self.exp.seeds
                ]
                if self.group.main:
                    self.side_effects.append(
                        side_effect(
                            planned.label,
                            source,
                            task,
                            strength,
                            steered,
                            unsteered,
                            (self.run_dir, self._side_store),
                        )
                    )

    # ------------------------------------------------------------------ capability
    def _capability(self, planned, task, states, targets, strength: float):
        """The capability suite with `planned`'s state for `task` at `strength`: the state of
        the suite's first test target (a suite with one target per example, such as fact
        injection, is represented by its first injection)."""
        first = targets[0]
        return self.capability.at(
            planned.label, planned.method, task.name, first.to_dict(), states[first.name], strength
        )

    def _judge(self, task: Task, splits: Splits) -> None:
        """The subject's own judgement of the task, once, where a self-judging method runs:
        whether it can judge the suite at all is what such a method's result hinges on."""
        labels = tuple(p.label for p in self.methods if p.method.self_judging)
        if not labels:
            return
        with torch.no_grad():
            record = measure(self.subject, task.name, task.judgement_pairs(splits, "test"))
        self.judgements.append(replace(record, methods=labels))

    def _fit(
        self, planned: PlannedMethod, task: Task, targets: list[SteeringTarget]
    ) -> dict[str, State]:
        states = {}
        for target in {t.name: t for t in targets}.values():
            key = self._state_key(planned, target)
            start = time.perf_counter()
            state, cached = self.states.get_or_fit(
                key, lambda t=target: planned.method.fit(self.subject, t)
            )
            seconds = time.perf_counter() - start
            self.fits.append(Fit(planned.label, task.name, target.name, key, cached, seconds))
            states[target.name] = state.to(self.subject.device)
        return states

    def _state_key(self, planned: PlannedMethod, target: SteeringTarget) -> str:
        return content_key(
            planned.method.fit_key_parts(), target.to_dict(), self.subject.fingerprint()
        )

    def _sweep(
        self, planned, task, splits, split, targets, states, strengths
    ) -> list[CellRecord | None]:
        cells = []
        for strength in strengths:
            for seed in self.exp.seeds:
                cells.append(
                    self._cell(planned, task, splits, split, targets, states, strength, seed)
                )
                self._bar.update(1)
        return cells

    # ------------------------------------------------------------------ one cell
    def _cell_id(self, key: CellKey, method_part: dict, task: Task) -> str:
        return content_key(
            SCHEMA_VERSION,
            self.subject.fingerprint(),
            method_part,
            key.task,
            asdict(task.params),
            key.split,
            key.strength,
            key.seed,
            asdict(self.exp.generation),
            self.exp.perplexity_cap,
            self.exp.evaluator,
        )

    def _cell(
        self,
        planned,
        task,
        splits,
        split,
        targets,
        states,
        strength,
        seed,
        *,
        store: RunDir | None = None,
        origin: dict | None = None,
    ) -> CellRecord | None:
        """The cell's record, evaluated unless `store` (the run folder) already has it (None
        on ranks other than 0, which hold no records). Strength 0 is the unsteered model for
        every method: one cell per (task, split, seed), shared. A side-effect cell lives in
        its own store and says which suite's state steers it (`origin`); it is not one of the
        run's cells (cells.jsonl)."""
        self._bar.set_postfix_str(
            f"{task.name}/{planned.label}/{split}/s={strength:g}", refresh=False
        )
        if strength == 0.0:
            key = CellKey(UNSTEERED, UNSTEERED, task.name, split, strength, seed)
            method_part: dict = {UNSTEERED: True}
            steer = None
        else:
            key = CellKey(planned.label, planned.method.name, task.name, split, strength, seed)
            method_part = {**planned.method.fit_key_parts(), "label": planned.label}
            method_part |= {"side_effect_of": origin} if origin else {}
            steer = steering(planned.method, self.subject, states, strength)

        cell_id = self._cell_id(key, method_part, task)
        main, store = self.group.main, store or self.run_dir
        # None: not there, or damaged and moved aside
        cell = store.finished_cell(cell_id) if main else None
        if not self.group.broadcast(cell is not None):
            examples = splits.get(split)
            mine = self.group.shard(len(examples), self.exp.generation.batch_size)
            shards = self.group.gather_checked(
                lambda: evaluate_shard(
                    self.evaluation,
                    task,
                    examples[mine.start : mine.stop],
                    targets[mine.start : mine.stop],
                    steer,
                    seed,
                    cell_id,
                )
            )
            if main:
                evaluated = combine_shards(task, shards, len(examples))
                record = CellRecord(cell_id, key, evaluated.result)
                store.write_cell(record, evaluated.examples)
                cell = store.read_cell(cell_id)  # as stored (non-finite read as NaN)
        if store is self.run_dir:
            self.cell_ids.append(cell_id)
        return cell
