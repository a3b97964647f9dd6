"""Side effects across suites: a method's state fitted for one suite, at that suite's operating
point, scored on every other suite's primary metric (does the sentiment vector move toxicity,
fact recall, preference accuracy?).

Each scored cell is the other suite's `test` split, evaluated like any cell (`evaluate_cell`),
with every example steered by the one state (the source suite's first test target's: for fact
injection, its first injected fact). Those cells live in the run folder's `side_effects/`
(cells and records, as the run's own), so a re-run resumes them. Each entry is the paired
difference from the unsteered model on the same examples and seeds (the same sampling streams),
with its interval, so it reads as "what steering for A does to B".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from bench.intervals import difference
from bench.records import CellRecord, ExampleRecord, Record
from bench.rundir import RunDir
from bench.stats import Difference
from bench.task import Task

SIDE_EFFECTS = "side_effects"  # the run folder's subfolder of side-effect cells


@dataclass(frozen=True)
class SideEffect(Record):
    method: str  # the method's label
    fitted_for: str  # the suite whose state steers
    scored_on: str  # the suite whose primary metric is measured
    strength: float  # the operating point chosen on `fitted_for`
    primary_metric: str  # `scored_on`'s
    value: float  # its aggregate on `scored_on`'s test split, steered, mean over seeds
    n_examples: int
    unsteered: float = math.nan  # the unsteered model's, the same examples and seeds
    # value - unsteered, paired by example (95% interval; p from a sign-flip test). None:
    # the cells kept no per-example records.
    difference: Difference | None = None
    seeds: tuple[int, ...] = ()
    cells: tuple[str, ...] = ()  # the steered cells' ids, in side_effects/cells/


class _Folders:
    """Per-example records from several run folders (the run's cells and its side effects)."""

    def __init__(self, folders: Sequence[RunDir]) -> None:
        self.folders = folders

    def examples_of(self, cell: CellRecord) -> Sequence[ExampleRecord]:
        return next((found for f in self.folders if (found := f.examples_of(cell))), [])


def _mean(cells: Sequence[CellRecord], metric: str) -> float:
    values = [c.metrics.get(metric, math.nan) for c in cells]
    finite = [v for v in values if math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def side_effect(
    method: str,
    fitted_for: str,
    scored: Task,
    strength: float,
    steered: Sequence[CellRecord],
    unsteered: Sequence[CellRecord],
    folders: Sequence[RunDir],
) -> SideEffect:
    """The record of `method`'s state for `fitted_for` on `scored`'s test split: the steered
    cells (one per seed) against the unsteered model's."""
    metric = scored.primary_metric
    return SideEffect(
        method=method,
        fitted_for=fitted_for,
        scored_on=scored.name,
        strength=strength,
        primary_metric=metric,
        value=_mean(steered, metric),
        n_examples=steered[0].result.n_examples if steered else 0,
        unsteered=_mean(unsteered, metric),
        difference=difference(_Folders(folders), steered, unsteered, metric),
        seeds=tuple(c.seed for c in steered),
        cells=tuple(c.id for c in steered),
    )
