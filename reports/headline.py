"""Seed aggregates, sweep curves and each method's operating point (the headline numbers).

The operating point of a method on a suite is the strength chosen on `select` under the fluency
budget. By default it is the runner's own choice (`selection.json`); with an explicit budget the
choice is re-made from the `select` cells with the runner's own rule (`bench.selection`), so the
report and the run can never disagree on what "chosen under budget B" means. Its `test` numbers
are then read from the test cells at that strength (absent when the run tested other strengths
only; the row says so instead of inventing a number).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from bench.fluency import OWN_FLUENCY
from bench.intervals import difference, intervals, seed_means, steerability
from bench.judgement import chance_note
from bench.metric import finite
from bench.records import UNSTEERED, CellRecord, Choice, Judgement
from bench.selection import NORMAL_REASONS, choose_strength, perplexity_ratio
from bench.stats import Difference, Interval, Steerability, holm
from reports.runs import Run

FLUENCY = tuple(m.name for m in OWN_FLUENCY)  # the fluency columns and panels shown


@dataclass(frozen=True)
class Stat:
    """A metric over seeds (each seed's cell is one observation)."""

    mean: float
    std: float  # sample standard deviation over seeds (0 for one seed)
    min: float
    max: float
    n: int  # seeds with a finite value

    @staticmethod
    def of(values: Iterable[float]) -> Stat:
        kept = finite(values)
        if not kept:
            return Stat(math.nan, math.nan, math.nan, math.nan, 0)
        std = statistics.stdev(kept) if len(kept) > 1 else 0.0
        return Stat(statistics.fmean(kept), std, min(kept), max(kept), len(kept))

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max, "n": self.n}


@dataclass(frozen=True)
class Point:
    """One (method, task, split, strength) over seeds."""

    strength: float
    metrics: Mapping[str, Stat]
    degenerate: bool
    seconds: Stat
    tokens_per_second: Stat
    n_examples: int
    seeds: int
    cells: tuple[CellRecord, ...]  # one per seed: where the per-example scores are

    def mean(self, metric: str) -> float:
        stat = self.metrics.get(metric)
        return stat.mean if stat else math.nan


def point(cells: Sequence[CellRecord]) -> Point:
    names = dict.fromkeys(name for c in cells for name in c.metrics)
    return Point(
        strength=cells[0].strength,
        metrics={n: Stat.of(c.metrics.get(n, math.nan) for c in cells) for n in names},
        degenerate=any(c.degenerate for c in cells),
        seconds=Stat.of(c.result.cost.seconds for c in cells),
        tokens_per_second=Stat.of(c.result.cost.tokens_per_second for c in cells),
        n_examples=max(c.result.n_examples for c in cells),
        seeds=len({c.seed for c in cells}),
        cells=tuple(cells),
    )


@dataclass(frozen=True)
class Curve:
    """A method's sweep on one split: points in increasing strength."""

    method: str
    points: tuple[Point, ...]

    def at(self, strength: float) -> Point | None:
        return next((p for p in self.points if p.strength == strength), None)


def curves(run: Run, task: str, split: str) -> dict[str, Curve]:
    """Per method label, its sweep on `split` (strength 0 included through the shared cells)."""
    groups: dict[str, dict[float, list[CellRecord]]] = defaultdict(lambda: defaultdict(list))
    for cell in run.cells:
        if cell.task == task and cell.split == split and cell.method != UNSTEERED:
            groups[cell.method][cell.strength].append(cell)
    return {
        method: Curve(method, tuple(point(cs) for _, cs in sorted(by_strength.items())))
        for method, by_strength in groups.items()
    }


def unsteered(run: Run, task: str, split: str) -> Point | None:
    """The unsteered model on `split`: strength-0 cells, each original counted once per seed."""
    originals: dict[str, CellRecord] = {}
    for cell in run.cells:
        if cell.task == task and cell.split == split and cell.strength == 0.0:
            originals.setdefault(cell.source_id, cell)
    return point(list(originals.values())) if originals else None


def task_info(run: Run, task: str) -> tuple[str, dict[str, bool]]:
    """The task's primary metric and metric directions, as its cells recorded them."""
    primary, directions = "", {}
    for cell in run.cells:
        if cell.task == task:
            primary = primary or cell.primary_metric
            directions.update(cell.higher_is_better)
    return primary, directions


@dataclass(frozen=True)
class Uncertainty:
    """The uncertainty around one headline row (a method's operating point on a suite)."""

    intervals: Mapping[str, Interval]  # each metric at the operating point, on test
    reference: Mapping[str, Interval]  # each metric of the unsteered model, on test
    vs_unsteered: Difference | None  # primary metric, paired by example
    vs_prompting: Difference | None  # primary metric, against the prompting baseline's point
    steerability: Steerability | None
    # Each example's seed-mean of every metric at the operating point (test), for a check that
    # compares two runs example by example: (example ids, {metric: values in that order}).
    per_example: tuple[tuple[str, ...], Mapping[str, tuple[float, ...]]] = ((), {})
    # Holm-adjusted p-values of the comparisons above, over the suite's table.
    adjusted: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Headline:
    """A method's operating point on one suite, with its test numbers."""

    run: str
    task: str
    method: str
    method_name: str
    primary_metric: str
    higher_is_better: Mapping[str, bool]
    strength: float
    select_effect: float
    select_unsteered: float  # the unsteered model's effect on select (NaN if not run)
    reason: str
    budget: float
    perplexity_limit: float  # on select; NaN when the task does not generate
    test: Point | None  # None: the run has no test cells at this strength
    reference: Point | None  # unsteered on test
    fit_seconds: float
    degenerate_strengths: tuple[float, ...]  # on select
    best: bool = False  # the best test effect, and it beats the runner-up (paired CI)
    tied: bool = False  # indistinguishable (paired CI) from the best test effect
    notes: tuple[str, ...] = field(default_factory=tuple)
    uncertainty: Uncertainty | None = None  # None: the run kept no per-example records
    # The capability suite's verdict at this operating point (steered / unsteered, the mean
    # over its lm-eval tasks) and its interval over lm-eval's items; NaN where it did not run
    # (or not at this strength).
    capability: tuple[float, Interval | None] = (math.nan, None)
    # A self-judging method's: the subject's judgement of the suite (None: not measured).
    judgement: Judgement | None = None

    @property
    def effect(self) -> float:
        return self.test.mean(self.primary_metric) if self.test else math.nan

    @property
    def capability_retained(self) -> float:
        return self.capability[0]

    @property
    def select_gain(self) -> float:
        """The effect's gain over the unsteered model on select, where it was chosen."""
        return self.select_effect - self.select_unsteered

    @property
    def test_gain(self) -> float:
        """The same gain on test: below the select gain by the selection's optimism."""
        base = self.reference.mean(self.primary_metric) if self.reference else math.nan
        return self.effect - base

    def ratio(self, metric: str) -> float:
        """Operating point / unsteered on test (e.g. perplexity x1.3)."""
        if not (self.test and self.reference):
            return math.nan
        base = self.reference.mean(metric)
        return self.test.mean(metric) / base if base else math.nan

    @property
    def perplexity_ratio(self) -> float:
        """Perplexity / unsteered on test as the budget judges it: the geometric mean of the
        sample ratios (`bench.selection.perplexity_ratio`)."""
        if not (self.test and self.reference):
            return math.nan
        return perplexity_ratio(self.test.cells, self.reference.cells)

    def cost_ratio(self, attribute: str) -> float:
        if not (self.test and self.reference):
            return math.nan
        base = getattr(self.reference, attribute).mean
        value = getattr(self.test, attribute).mean
        return value / base if base and math.isfinite(base) else math.nan


def choose(run: Run, task: str, method: str, budget: float | None) -> tuple[Choice, float]:
    """The operating point chosen on select: the run's choice, or re-made under `budget`."""
    if budget is None:
        for entry in run.selection:
            if entry.task == task and entry.method == method:
                return entry, run.budget
        budget = run.budget  # an interrupted run has no selection.json yet
    primary, directions = task_info(run, task)
    cells = [c for c in run.cells if c.task == task and c.method == method and c.split == "select"]
    if run.capability_budget is not None:  # as the runner did: strengths that cost more go
        cells = [
            c
            for c in cells
            if _capability(run, method, task, c.strength)[0] >= run.capability_budget
        ]
    choice = choose_strength(
        method,
        task,
        cells,
        budget,
        primary,
        directions.get(primary, True),
        rule=run.manifest.selection_rule,
        records=run,
    )
    return choice, budget


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _capability(run: Run, method: str, task: str, strength: float) -> tuple[float, Interval | None]:
    """Capability retained at this point and its interval (NaN, None: not measured)."""
    if strength == 0.0:  # the unsteered model retains everything, measured or not
        return (1.0 if run.capability else math.nan), None
    found = run.capability_at(method, task, strength)
    return (found.capability_retained, found.interval) if found else (math.nan, None)


def difference_text(
    found: Difference | None, adjusted: float | None = None, fallback: float = math.nan
) -> str:
    """A paired difference with its interval (and Holm-adjusted p where given): "+0.12 [+0.05,
    +0.20] p=0.02"; `fallback` (a difference of means) where there is none."""
    if found is None or not math.isfinite(found.estimate):
        return f"{fallback:+.3g}" if math.isfinite(fallback) else "–"
    text = f"{found.estimate:+.3g}"
    if math.isfinite(found.low) and math.isfinite(found.high):
        text += f" [{found.low:+.2g}, {found.high:+.2g}]"
    if adjusted is not None and math.isfinite(adjusted):
        text += f" p={adjusted:.2g}"
    return text


def retained_text(capability: tuple[float, Interval | None]) -> str:
    """Capability retained with its interval over lm-eval's items: "97% [94%, 99%]"."""
    value, found = capability
    if not math.isfinite(value):
        return "–"
    if found is None or not (math.isfinite(found.low) and math.isfinite(found.high)):
        return f"{value:.0%}"
    return f"{value:.0%} [{found.low:.0%}, {found.high:.0%}]"


def headlines(run: Run, task: str, budget: float | None = None) -> list[Headline]:
    """One row per method that ran on `task`, in run order; best-on-test marked."""
    primary, directions = task_info(run, task)
    select_curves = curves(run, task, "select")
    test_curves = curves(run, task, "test")
    reference = unsteered(run, task, "test")
    select_reference = unsteered(run, task, "select")
    select_unsteered = select_reference.mean(primary) if select_reference else math.nan
    rows = []
    for method in (m for m in run.methods if m in select_curves):
        chosen, used_budget = choose(run, task, method, budget)
        strength = chosen.strength
        test_curve = test_curves.get(method)
        test = test_curve.at(strength) if test_curve else None
        notes = []
        if test is None:
            notes.append(
                f"no test cells at strength {strength:g} (run with test_strengths = 'all' "
                "to re-apply another budget)"
            )
        elif test.degenerate:
            notes.append("degenerate on test")
        ratio = perplexity_ratio(test.cells, reference.cells) if test and reference else math.nan
        if math.isfinite(ratio) and ratio > used_budget:
            notes.append(f"test perplexity x{ratio:.2f} is over the budget x{used_budget:g}")
        if chosen.reason and chosen.reason not in NORMAL_REASONS:
            notes.append(chosen.reason)
        broken = [p.strength for p in select_curves[method].points if p.degenerate]
        if broken:
            notes.append(
                "degenerate (NaN/inf) on select at strength " + ", ".join(f"{s:g}" for s in broken)
            )
        judgement = run.judgement(task, method)
        if judgement is not None and chance_note(judgement):
            notes.append(chance_note(judgement))
        method_name = next(
            (c.method_name for c in run.cells if c.method == method and c.task == task), method
        )
        rows.append(
            Headline(
                run=run.label,
                task=task,
                method=method,
                method_name=method_name,
                primary_metric=primary,
                higher_is_better=directions,
                strength=strength,
                select_effect=chosen.effect,
                select_unsteered=select_unsteered,
                reason=chosen.reason,
                budget=used_budget,
                perplexity_limit=_nan(chosen.perplexity_limit),
                test=test,
                reference=reference,
                fit_seconds=sum(
                    f.seconds for f in run.fits if f.task == task and f.method == method
                ),
                degenerate_strengths=tuple(broken),
                notes=tuple(notes),
                capability=_capability(run, method, task, strength),
                judgement=judgement,
            )
        )
    return mark_best(run, assess(run, rows))


def assess(run: Run, rows: list[Headline]) -> list[Headline]:
    """Each row's intervals and paired comparisons, Holm-adjusted over the suite's table."""
    prompting = next((r for r in rows if r.method_name == "prompting" and r.test), None)
    reference = rows[0].reference if rows else None
    reference_intervals = intervals(run, reference.cells, reference.metrics) if reference else {}
    assessed = []
    for row in rows:
        if row.test is None or row.reference is None:
            assessed.append(row)
            continue
        higher = row.higher_is_better.get(row.primary_metric, True)
        control = row.reference.cells
        versus = prompting.test.cells if prompting and prompting is not row else None
        uncertainty = Uncertainty(
            intervals=intervals(run, row.test.cells, row.test.metrics),
            reference=reference_intervals,
            vs_unsteered=difference(run, row.test.cells, control, row.primary_metric),
            vs_prompting=difference(run, row.test.cells, versus, row.primary_metric)
            if versus
            else None,
            steerability=steerability(run, row.test.cells, control, row.primary_metric, higher),
            per_example=seed_means(run, row.test.cells, row.test.metrics),
        )
        assessed.append(replace(row, uncertainty=uncertainty))
    return adjust(assessed)


def adjust(rows: list[Headline]) -> list[Headline]:
    """Holm's correction over every comparison in the table (both columns, every method)."""
    slots = [
        (i, side, getattr(row.uncertainty, side).p_value)
        for i, row in enumerate(rows)
        if row.uncertainty is not None
        for side in ("vs_unsteered", "vs_prompting")
        if getattr(row.uncertainty, side) is not None
    ]
    adjusted = holm([p for _, _, p in slots])
    by_row: dict[int, dict[str, float]] = defaultdict(dict)
    for (i, side, _), p in zip(slots, adjusted):
        by_row[i][side] = p
    return [
        replace(row, uncertainty=replace(row.uncertainty, adjusted=by_row[i]))
        if row.uncertainty is not None
        else row
        for i, row in enumerate(rows)
    ]


def mark_best(run: Run, rows: list[Headline]) -> list[Headline]:
    """Mark the best test effect among rows that beat the unsteered model: "best" where the paired
    interval of its difference from every other such row excludes 0, else "tied" on it and on
    the rows it cannot be told from (exact ties always are). A run without per-example records
    cannot pair: there the best mean is "best".

    A method whose operating point does not improve on the unsteered model is never "best", so
    a suite where nothing helped has no mark rather than a meaningless winner.
    """
    if not rows:
        return rows
    primary = rows[0].primary_metric
    sign = 1.0 if rows[0].higher_is_better.get(primary, True) else -1.0
    reference = rows[0].reference.mean(primary) if rows[0].reference else math.nan

    def score(row: Headline) -> float:
        if row.test is None or row.test.degenerate or not math.isfinite(row.effect):
            return -math.inf
        if math.isfinite(reference) and sign * row.effect <= sign * reference:
            return -math.inf
        return sign * row.effect

    top = max(score(r) for r in rows)
    if top == -math.inf:
        return rows
    leader = next(r for r in rows if score(r) == top)

    def indistinguishable(row: Headline) -> bool:
        if row is leader or score(row) == top:
            return True
        if score(row) == -math.inf:
            return False
        found = difference(run, leader.test.cells, row.test.cells, primary)
        if found is None:  # no per-example records: the means decide, as they always did
            return False
        return found.low <= 0 <= found.high

    tied = [r for r in rows if indistinguishable(r)]
    if len(tied) == 1:
        return [replace(r, best=r is leader) for r in rows]
    return [replace(r, tied=any(r is t for t in tied)) for r in rows]
