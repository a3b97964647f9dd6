"""A metric is one small object holding everything about itself (name, direction, aggregate)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are numbers and finite (missing scores are None or NaN)."""
    return [v for v in values if v is not None and math.isfinite(v)]


def mean(values: Sequence[float]) -> float:
    """A metric's aggregate over a cell: the mean of the values that are not missing (None or
    NaN); an infinite value (a perplexity overflow) is kept, so the mean says so."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


@dataclass(frozen=True)
class Metric:
    """A per-example score; a cell reports its mean over the examples (`mean`). Always the
    mean, so that the reports can resample examples for a confidence interval; a metric of
    another shape is a `DerivedMetric` of per-example means."""

    name: str
    higher_is_better: bool
    description: str = ""

    def aggregate(self, values: Sequence[float]) -> float:
        return mean(values)


def harmonic_mean(values: Sequence[float]) -> float:
    if any(v is None or math.isnan(v) for v in values):
        return math.nan
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)


# How a derived metric combines its parts' aggregates, by name: a cell records the name, so that
# the reports can recompute the metric whole on each bootstrap resample of the examples.
COMBINERS: dict[str, Callable[[Sequence[float]], float]] = {"harmonic_mean": harmonic_mean}


@dataclass(frozen=True)
class DerivedMetric:
    """A cell-level metric computed from other metrics' aggregates (e.g. a harmonic mean)."""

    name: str
    higher_is_better: bool
    of: tuple[str, ...]  # the metrics it is computed from
    combine: str  # a name in COMBINERS
    description: str = ""

    def __post_init__(self) -> None:
        if self.combine not in COMBINERS:
            raise ValueError(f"{self.name}: unknown combine '{self.combine}'")

    def compute(self, metrics: Mapping[str, float]) -> float:
        return COMBINERS[self.combine]([metrics.get(name, math.nan) for name in self.of])
