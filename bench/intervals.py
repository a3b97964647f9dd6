"""Uncertainty of a run's headline numbers, from its per-example records (`bench.stats`).

A cell's metric is the mean of its examples' scores (a derived metric combines such means), and a
headline number is that mean over the run's seeds. Every interval here resamples the examples
(each example with all its seeds), so that it says how much the number would move on another
draw of examples of the same kind; every comparison pairs the two sides by example, so that the
examples' own difficulty cancels out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from bench.records import CellRecord
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
from reports.runs import Run

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0  # resampling is seeded: the same run gives the same report
# `bench.metric.COMBINERS` by name, vectorised over bootstrap resamples.
VECTORISED = {"harmonic_mean": harmonic_mean_of}


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


def scores(run: Run, cells: Sequence[CellRecord], metric: str) -> Scores:
    """`metric`'s per-example scores in `cells` (one cell per seed of the same point)."""
    by_seed = {
        cell.seed: {r.example: r.scores.get(metric, math.nan) for r in run.examples_of(cell)}
        for cell in cells
    }
    seeds = tuple(sorted(by_seed))
    examples = tuple(sorted(set().union(*by_seed.values()))) if by_seed else ()
    values = np.array(
        [[by_seed[s].get(e, math.nan) for s in seeds] for e in examples], dtype=float
    ).reshape(len(examples), len(seeds))
    return Scores(examples, seeds, values)


def intervals(run: Run, cells: Sequence[CellRecord], metrics) -> dict[str, Interval]:
    """The intervals of `metrics` at this point (those the run kept examples for)."""
    return {name: found for name in metrics if (found := interval(run, cells, name)) is not None}


def interval(run: Run, cells: Sequence[CellRecord], metric: str) -> Interval | None:
    """The interval of `metric` at this point; None where the run kept no examples for it."""
    if not cells or not any(run.examples_of(c) for c in cells):
        return None
    derivation = cells[0].result.derived.get(metric)
    if derivation is None:
        data = scores(run, cells, metric).values
        if not np.isfinite(data).any():
            return None
        return bootstrap_interval(data, level=LEVEL, n_resamples=RESAMPLES, seed=SEED)
    if derivation.combine not in VECTORISED:
        return None  # a combiner with no vectorised twin: no interval rather than a wrong one
    parts = {name: scores(run, cells, name) for name in derivation.of}
    examples = sorted(set().union(*(p.examples for p in parts.values())))
    seeds = sorted({c.seed for c in cells})
    arrays = {name: p.aligned(examples, seeds) for name, p in parts.items()}
    combine = VECTORISED[derivation.combine](derivation.of)
    return bootstrap_interval(
        arrays, level=LEVEL, n_resamples=RESAMPLES, seed=SEED, combine=combine
    )


def paired(
    run: Run, treated: Sequence[CellRecord], control: Sequence[CellRecord], metric: str
) -> tuple[np.ndarray, np.ndarray] | None:
    """Both sides' scores of `metric` on the examples and seeds they share, row by row."""
    a, b = scores(run, treated, metric), scores(run, control, metric)
    examples = sorted(set(a.examples) & set(b.examples))
    seeds = sorted(set(a.seeds) & set(b.seeds))
    if not examples or not seeds:
        return None
    treated, control = a.aligned(examples, seeds), b.aligned(examples, seeds)
    if not (np.isfinite(treated) & np.isfinite(control)).any():
        return None  # e.g. a derived metric, which has no per-example scores
    return treated, control


def difference(
    run: Run, treated: Sequence[CellRecord], control: Sequence[CellRecord], metric: str
) -> Difference | None:
    """treated - control in `metric`, paired by example. A derived metric is computed whole on
    both sides of each resample (the same examples); its difference has an interval but no
    p-value (the sign-flip test is for a mean of per-example differences)."""
    derivation = treated[0].result.derived.get(metric) if treated else None
    if derivation is None:
        both = paired(run, treated, control, metric)
        if both is None:
            return None
        return paired_difference(*both, level=LEVEL, n_resamples=RESAMPLES, seed=SEED)
    if derivation.combine not in VECTORISED:
        return None  # a combiner with no vectorised twin: no interval rather than a wrong one
    # Every part on both sides aligned on one set of rows: the examples and seeds all share.
    sides = {
        (side, name): scores(run, cells, name)
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
    run: Run,
    treated: Sequence[CellRecord],
    control: Sequence[CellRecord],
    metric: str,
    higher_is_better: bool,
) -> Steerability | None:
    """How the operating point moved each example's `metric` from the control's."""
    both = paired(run, treated, control, metric)
    if both is None:
        return None
    return share_worse(*both, higher_is_better=higher_is_better)


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


def seed_means(run: Run, cells: Sequence[CellRecord], metrics) -> tuple[tuple[str, ...], dict]:
    """(example ids, {metric: each example's mean over its seeds}) at one point."""
    found = {name: scores(run, cells, name) for name in metrics}
    examples = tuple(sorted(set().union(*(s.examples for s in found.values()))))
    seeds = sorted({c.seed for c in cells})
    values = {}
    for name, s in found.items():
        means = example_means(s.aligned(examples, seeds))
        if np.isfinite(means).any():
            values[name] = tuple(float(v) for v in means)
    return examples, values
