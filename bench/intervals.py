"""Intervals and paired differences of a run's numbers, from its per-example records.

`bench.stats` does the statistics on arrays; this module gathers those arrays from cells and
their example records (anything with `examples_of(cell)`: a report's run, a run folder being
written), aligned by example and seed, for the report and for choosing operating points.

A cell's metric is the mean of its examples' scores (a derived metric combines such means), and a
headline number is that mean over the run's seeds. Every interval here resamples the examples
(each example with all its seeds), so that it says how much the number would move on another
draw of examples of the same kind; every comparison pairs the two sides by example, so that the
examples' own difficulty cancels out.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from bench.records import CellRecord, ExampleRecord
from bench.stats import (
    Difference,
    Interval,
    Steerability,
    bootstrap_interval,
    example_means,
    harmonic_mean_of,
    paired_difference,
    share_worse,
)

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0  # resampling is seeded: the same run gives the same report
# `bench.metric.COMBINERS` by name, vectorised over bootstrap resamples.
VECTORISED = {"harmonic_mean": harmonic_mean_of}


class ExampleSource(Protocol):
    """Where a cell's per-example records are found."""

    def examples_of(self, cell: CellRecord) -> Sequence[ExampleRecord]: ...


@dataclass(frozen=True)
class Scores:
    """One metric's per-example scores over the seeds of a set of cells."""

    examples: tuple[str, ...]
    seeds: tuple[int, ...]
    values: np.ndarray  # (len(examples), len(seeds)); NaN where an example has no score

    def aligned(self, examples: Sequence[str], seeds: Sequence[int]) -> np.ndarray:
        """These scores on the given examples and seeds (NaN where absent)."""
        row = {e: i for i, e in enumerate(self.examples)}
        col = {s: j for j, s in enumerate(self.seeds)}
        out = np.full((len(examples), len(seeds)), math.nan)
        for i, example in enumerate(examples):
            for j, seed in enumerate(seeds):
                if example in row and seed in col:
                    out[i, j] = self.values[row[example], col[seed]]
        return out


def scores(records: ExampleSource, cells: Sequence[CellRecord], metric: str) -> Scores:
    """`metric`'s per-example scores in `cells` (one cell per seed of the same point)."""
    by_seed = {
        cell.seed: {r.example: r.scores.get(metric, math.nan) for r in records.examples_of(cell)}
        for cell in cells
    }
    seeds = tuple(sorted(by_seed))
    examples = tuple(sorted(set().union(*by_seed.values()))) if by_seed else ()
    values = np.array(
        [[by_seed[s].get(e, math.nan) for s in seeds] for e in examples], dtype=float
    ).reshape(len(examples), len(seeds))
    return Scores(examples, seeds, values)


def intervals(records: ExampleSource, cells: Sequence[CellRecord], metrics) -> dict[str, Interval]:
    """The intervals of `metrics` at this point (those the run kept examples for)."""
    return {
        name: found for name in metrics if (found := interval(records, cells, name)) is not None
    }


def interval(records: ExampleSource, cells: Sequence[CellRecord], metric: str) -> Interval | None:
    """The interval of `metric` at this point; None where the run kept no examples for it."""
    if not cells or not any(records.examples_of(c) for c in cells):
        return None
    derivation = cells[0].result.derived.get(metric)
    if derivation is None:
        data = scores(records, cells, metric).values
        if not np.isfinite(data).any():
            return None
        return bootstrap_interval(data, level=LEVEL, n_resamples=RESAMPLES, seed=SEED)
    if derivation.combine not in VECTORISED:
        return None  # a combiner with no vectorised twin: no interval rather than a wrong one
    parts = {name: scores(records, cells, name) for name in derivation.of}
    examples = sorted(set().union(*(p.examples for p in parts.values())))
    seeds = sorted({c.seed for c in cells})
    arrays = {name: p.aligned(examples, seeds) for name, p in parts.items()}
    combine = VECTORISED[derivation.combine](derivation.of)
    return bootstrap_interval(
        arrays, level=LEVEL, n_resamples=RESAMPLES, seed=SEED, combine=combine
    )


def paired(
    records: ExampleSource,
    treated: Sequence[CellRecord],
    control: Sequence[CellRecord],
    metric: str,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both sides' scores of `metric` on the examples and seeds they share, row by row."""
    a, b = scores(records, treated, metric), scores(records, control, metric)
    examples = sorted(set(a.examples) & set(b.examples))
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not examples or not seeds:
        return None
    treated, control = a.aligned(examples, seeds), b.aligned(examples, seeds)
    if not (np.isfinite(treated) & np.isfinite(control)).any():
        return None  # e.g. a derived metric, which has no per-example scores
    return treated, control


def difference(
    records: ExampleSource,
    treated: Sequence[CellRecord],
    control: Sequence[CellRecord],
    metric: str,
) -> Difference | None:
    """treated - control in `metric`, paired by example. A derived metric is computed whole on
    both sides of each resample (the same examples); its difference has an interval but no
    p-value (the sign-flip test is for a mean of per-example differences)."""
    derivation = treated[0].result.derived.get(metric) if treated else None
    if derivation is None:
        both = paired(records, treated, control, metric)
        if both is None:
            return None
        return paired_difference(*both, level=LEVEL, n_resamples=RESAMPLES, seed=SEED)
    if derivation.combine not in VECTORISED:
        return None  # a combiner with no vectorised twin: no interval rather than a wrong one
    # Every part on both sides aligned on one set of rows: the examples and seeds all share.
    sides = {
        (side, name): scores(records, cells, name)
        for side, cells in (("treated", treated), ("control", control))
        for name in derivation.of
    }
    examples = sorted(set.intersection(*(set(s.examples) for s in sides.values())))
    seeds = sorted(set.intersection(*(set(s.seeds) for s in sides.values())))
    if not examples or not seeds:
        return None
    arrays = {f"{side}:{name}": s.aligned(examples, seeds) for (side, name), s in sides.items()}
    combine = VECTORISED[derivation.combine](derivation.of)

    def gap(means: Mapping[str, np.ndarray]) -> np.ndarray:
        treated_means = {name: means[f"treated:{name}"] for name in derivation.of}
        control_means = {name: means[f"control:{name}"] for name in derivation.of}
        return combine(treated_means) - combine(control_means)

    found = bootstrap_interval(arrays, level=LEVEL, n_resamples=RESAMPLES, seed=SEED, combine=gap)
    return Difference(found.estimate, found.low, found.high, math.nan, found.n, found.level)


def steerability(
    records: ExampleSource,
    treated: Sequence[CellRecord],
    control: Sequence[CellRecord],
    metric: str,
    higher_is_better: bool,
) -> Steerability | None:
    """How the operating point moved each example's `metric` from the control's.

    A derived metric (the CounterFact score: a harmonic mean of means) has no value per
    example; an example then counts by the mean of its parts' scores (efficacy, paraphrase,
    neighbourhood), which move in the derived metric's direction."""
    derivation = treated[0].result.derived.get(metric) if treated else None
    if derivation is None:
        both = paired(records, treated, control, metric)
        return None if both is None else share_worse(*both, higher_is_better=higher_is_better)
    sides = [
        [scores(records, cells, name) for name in derivation.of] for cells in (treated, control)
    ]
    found = [s for side in sides for s in side]
    examples = sorted(set.intersection(*(set(s.examples) for s in found)))
    seeds = sorted(set.intersection(*(set(s.seeds) for s in found)))
    if not examples or not seeds:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an example missing every part
        means = [np.nanmean([s.aligned(examples, seeds) for s in side], axis=0) for side in sides]
    if not (np.isfinite(means[0]) & np.isfinite(means[1])).any():
        return None
    return share_worse(*means, higher_is_better=higher_is_better)


def seed_means(
    records: ExampleSource, cells: Sequence[CellRecord], metrics
) -> tuple[tuple[str, ...], dict]:
    """(example ids, {metric: each example's mean over its seeds}) at one point."""
    found = {name: scores(records, cells, name) for name in metrics}
    examples = tuple(sorted(set().union(*(s.examples for s in found.values()))))
    seeds = sorted({c.seed for c in cells})
    values = {}
    for name, s in found.items():
        means = example_means(s.aligned(examples, seeds))
        if np.isfinite(means).any():
            values[name] = tuple(float(v) for v in means)
    return examples, values
