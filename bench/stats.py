"""Uncertainty for the numbers a run reports: bootstrap intervals, paired tests, Holm, power.

Everything here works on one shape: a metric's per-example scores for one (method, task, split,
strength) across sampling seeds, a float array `scores` of shape (n_examples, n_seeds), NaN
where an example's score is missing in a seed. Each entry is already the mean over that
example's samples, so samples are nested in their example and seeds are a second level; an
example missing in every seed is dropped.

The unit of resampling is the example: the examples are what a benchmark draws from a larger
population, while its seeds and samples are repeated measurements of the same example, so they
stay together in a resample (a cluster bootstrap). Resampling works on example indices, so
several metrics resampled together see the same examples on every resample, and the same seed
draws the same indices for every metric and method of the same size, as common random numbers.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

# A combine maps each metric's resampled means (arrays of one shape, one entry per resample) to
# the derived metric on each resample; it must be vectorised over that shape.
Combine = Callable[[Mapping[str, np.ndarray]], np.ndarray]

# Resamples are drawn in batches of at most this many indices, so a large split cannot ask for
# n_resamples x n_examples (or the jackknife's n_examples^2) values at once.
_BATCH_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class Interval:
    """A point estimate with a confidence interval over examples."""

    estimate: float
    low: float
    high: float
    level: float = 0.95
    n: int = 0  # examples used
    method: str = "bootstrap BCa"

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    """treated minus control, paired by example: the mean difference, its interval, a p-value."""

    estimate: float
    low: float
    high: float
    p_value: float
    n: int
    level: float = 0.95


@dataclass(frozen=True)
class Steerability:
    """Per-example effects (treated minus control seed-means, in the metric's own units) and the
    share of examples that moved the wrong way (the "anti-steerable" share, Tan et al. 2024)."""

    share_worse: float
    n: int
    differences: tuple[float, ...]

    @property
    def mde(self) -> float:
        """The smallest paired mean difference these examples detect (80% power, 5% level)."""
        finite = np.array([d for d in self.differences if math.isfinite(d)])
        if len(finite) < 2:
            return math.nan
        return minimum_detectable_difference(float(np.std(finite, ddof=1)), len(finite))


def example_means(scores: np.ndarray) -> np.ndarray:
    """Each example's mean over the seeds it has (NaN for an example missing in every seed)."""
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (n_examples, n_seeds), got shape {scores.shape}")
    present = ~np.isnan(scores)
    counts = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, scores, 0.0).sum(axis=1) / counts


def _means_at(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The mean of `values` over the last axis of the index array `idx`, NaN entries left out:
    one mean per resample (NaN where a resample holds no present value)."""
    present = ~np.isnan(values)
    sums = np.where(present, values, 0.0)[idx].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / present[idx].sum(axis=-1)


def _single(means: Mapping[str, np.ndarray]) -> np.ndarray:
    return means[""]


def bootstrap_interval(
    scores: np.ndarray | Mapping[str, np.ndarray],
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
    combine: Combine | None = None,
) -> Interval:
    """A seeded cluster-bootstrap interval (BCa, percentile where BCa is degenerate).

    Without `combine`, `scores` is one (n_examples, n_seeds) array and the statistic is the mean
    over examples of each example's seed-mean. With no missing values that equals the harness's
    aggregate (each seed's cell mean, averaged over seeds). With missing values it weighs every
    example equally, however many seeds it has, where the harness weighs every present score
    within its seed; the two then differ slightly, and the example weighting is the one that
    matches resampling examples.

    With `combine`, `scores` maps metric names to arrays with the same example rows; every
    resample takes the same examples for all of them, each metric's mean is taken over its own
    present examples (as the harness aggregates each metric before deriving), and
    `combine(dict_of_mean_arrays)` gives the derived metric computed whole on each resample.

    With fewer than two examples the bounds are NaN: one example says nothing about how much
    the examples vary, and [estimate, estimate] would claim a certainty there is none of.
    """
    if combine is None:
        per_example = {"": example_means(scores)}
        combine = _single
    else:
        per_example = {name: example_means(s) for name, s in scores.items()}
        rows = {len(v) for v in per_example.values()}
        if len(rows) != 1:
            raise ValueError(f"combined metrics must share their example rows, got {rows}")
    return _interval(per_example, combine, level, n_resamples, seed)


def _interval(
    per_example: Mapping[str, np.ndarray],
    combine: Combine,
    level: float,
    n_resamples: int,
    seed: int,
) -> Interval:
    # An example missing from every metric is dropped; one missing from some is kept, and the
    # metrics it lacks leave it out of their means.
    kept = ~np.logical_and.reduce([np.isnan(v) for v in per_example.values()])
    values = {name: v[kept] for name, v in per_example.items()}
    n = int(kept.sum())

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(idx, axis, -1)
        return np.asarray(combine({name: _means_at(v, idx) for name, v in values.items()}))

    estimate = float(statistic(np.arange(n))) if n else math.nan
    if n < 2:
        return Interval(estimate, math.nan, math.nan, level, n, "none (fewer than 2 examples)")
    common = dict(
        confidence_level=level,
        vectorized=True,
        batch=max(1, _BATCH_ELEMENTS // n),
        rng=np.random.default_rng(seed),
    )
    # BCa corrects the percentile interval's bias and skew, but its jackknife acceleration is
    # 0/0 when the resampled statistic cannot vary (all examples equal) or the estimate sits
    # outside the bootstrap distribution; scipy then warns and returns NaN, and the percentile
    # interval of the same resamples is the honest answer ([estimate, estimate] for constants).
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        result = stats.bootstrap(
            (np.arange(n),), statistic, n_resamples=n_resamples, method="BCa", **common
        )
        method = "bootstrap BCa"
        low, high = result.confidence_interval
        if not (np.isfinite(low) and np.isfinite(high)):
            # (A resample whose statistic is undefined, such as a ratio over a zero mean, is
            # NaN; the percentile interval is NaN too then, and says so without a warning.)
            result = stats.bootstrap(
                (np.arange(n),),
                statistic,
                n_resamples=0,
                method="percentile",
                bootstrap_result=result,
                **common,
            )
            method = "bootstrap percentile"
            low, high = result.confidence_interval
    return Interval(estimate, float(low), float(high), level, n, method)


def harmonic_mean_of(names: Sequence[str]) -> Combine:
    """The harmonic mean of the named metrics' means, vectorised, with `bench.metric.
    harmonic_mean`'s semantics: NaN if any is NaN, else 0 if any is <= 0."""
    names = tuple(names)

    def combine(means: Mapping[str, np.ndarray]) -> np.ndarray:
        v = np.stack([np.asarray(means[name], dtype=float) for name in names])
        with np.errstate(invalid="ignore", divide="ignore"):
            h = len(names) / (1.0 / v).sum(axis=0)
        return np.where(np.isnan(v).any(axis=0), np.nan, np.where((v <= 0).any(axis=0), 0.0, h))

    return combine


def _differences(treated: np.ndarray, control: np.ndarray) -> np.ndarray:
    """Per-example treated minus control seed-means, for the examples present on both sides."""
    t, c = example_means(treated), example_means(control)
    if t.shape != c.shape:
        raise ValueError(f"treated and control differ in examples: {t.shape} vs {c.shape}")
    d = t - c
    return d[~np.isnan(d)]


def paired_difference(
    treated: np.ndarray,
    control: np.ndarray,
    *,
    level: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> Difference:
    """treated minus control, paired by example (row i is the same example on both sides; the
    seed counts may differ): the mean per-example difference of seed-means, its cluster-bootstrap
    interval, and a two-sided sign-flip permutation p-value for a mean difference of zero.

    Pairing removes the example-to-example spread both sides share, which on small splits is
    most of the noise. Fewer than two paired examples give NaN bounds and a NaN p-value."""
    d = _differences(treated, control)
    interval = _interval({"": d}, _single, level, n_resamples, seed)
    p_value = math.nan
    if len(d) >= 2:
        # permutation_type="samples" on one sample flips the sign of each difference at random:
        # under the null of no effect a difference is as likely to be -d as d. scipy enumerates
        # all 2^n flips when that is no more than n_resamples, so small splits get exact p.
        with np.errstate(invalid="ignore", divide="ignore"):
            p_value = float(
                stats.permutation_test(
                    (d,),
                    np.mean,
                    permutation_type="samples",
                    vectorized=True,
                    n_resamples=n_resamples,
                    alternative="two-sided",
                    rng=np.random.default_rng(seed),
                ).pvalue
            )
    return Difference(interval.estimate, interval.low, interval.high, p_value, interval.n, level)


def share_worse(treated: np.ndarray, control: np.ndarray, higher_is_better: bool) -> Steerability:
    """The share of examples whose seed-mean moved strictly the wrong way under treatment (a tie
    is not worse), with the per-example differences for a distribution figure."""
    d = _differences(treated, control)
    worse = d < 0 if higher_is_better else d > 0
    share = float(worse.mean()) if len(d) else math.nan
    return Steerability(share, len(d), tuple(float(x) for x in d))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input's order (monotone in the raw p, capped at
    1). A NaN is a comparison that could not be made: it stays NaN and does not count in m."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    m = len(order)
    # The k-th smallest p (k from 0) is multiplied by the m - k hypotheses still standing, and
    # the running maximum keeps a larger raw p from getting a smaller adjusted one.
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted.tolist()


def _standard_error(sd: float, n: float, paired: bool) -> float:
    # Paired: sd is the sd of the per-example differences. Two independent groups of n each:
    # the variance of a difference of means is twice one mean's.
    factor = 1.0 if paired else math.sqrt(2.0)
    return factor * sd / math.sqrt(n) if n > 0 else math.nan


def minimum_detectable_difference(
    sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8, paired: bool = True
) -> float:
    """The smallest true mean difference a two-sided test at `alpha` detects with `power`
    (normal approximation): (z_{1-alpha/2} + z_power) x the standard error of the difference."""
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return float(z * _standard_error(sd, n, paired))


def power_of(
    difference: float, sd: float, n: int, alpha: float = 0.05, paired: bool = True
) -> float:
    """The power a two-sided test at `alpha` had to detect `difference` (normal approximation,
    both rejection tails counted, so it is alpha at a difference of 0)."""
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = abs(difference) / np.float64(_standard_error(sd, n, paired))
    return float(stats.norm.cdf(shift - z) + stats.norm.cdf(-shift - z))
