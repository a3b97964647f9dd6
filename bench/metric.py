"""A metric is one small object holding everything about itself (name, direction, aggregate)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass


def finite(values: Iterable[float | None]) -> list[float]:
    """The values that are numbers and finite (missing scores are None or NaN)."""
    return [v for v in values if v is not None and math.isfinite(v)]


def mean(values: Sequence[float]) -> float:
    """A metric's default aggregate: the mean of the values that are not missing (None or NaN);
    an infinite value (a perplexity overflow) is kept, so the mean says so."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    return sum(present) / len(present) if present else math.nan


@dataclass(frozen=True)
class Metric:
    """A per-example score aggregated over a cell (by default the mean)."""

    name: str
    higher_is_better: bool
    description: str = ""
    aggregate: Callable[[Sequence[float]], float] = mean


@dataclass(frozen=True)
class DerivedMetric:
    """A cell-level metric computed from other metrics' aggregates (e.g. a harmonic mean)."""

    name: str
    higher_is_better: bool
    compute: Callable[[Mapping[str, float]], float]
    description: str = ""


def harmonic_mean(values: Sequence[float]) -> float:
    if any(v is None or math.isnan(v) for v in values):
        return math.nan
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1.0 / v for v in values)
