"""bench.stats against scipy called directly and against hand-computed values (tests/cases/stats.json),
plus the properties an interval and a paired test must have."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from bench import stats
from bench.metric import harmonic_mean

CASES = json.loads((Path(__file__).parent / "cases" / "stats.json").read_text())
N = 999  # resamples: enough to exercise the code, few enough to keep the file fast


def data(name: str) -> np.ndarray:
    return np.array(CASES["datasets"][name], dtype=float)  # JSON null -> NaN


def cases(section: str) -> list:
    return [pytest.param(c, id=c["name"]) for c in CASES[section]]


def seed_means(scores: np.ndarray) -> np.ndarray:
    """Each example's seed-mean, the examples missing everywhere dropped (numpy's own nanmean)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of the all-missing row
        m = np.nanmean(scores, axis=1)
    return m[~np.isnan(m)]


def scipy_interval(samples: tuple, statistic, *, seed: int, level: float = 0.95, paired=False):
    return sps.bootstrap(
        samples,
        statistic,
        n_resamples=N,
        vectorized=True,
        paired=paired,
        confidence_level=level,
        method="BCa",
        rng=np.random.default_rng(seed),
    ).confidence_interval


def nan_equal(a, b) -> bool:
    return all((math.isnan(x) and math.isnan(y)) or x == pytest.approx(y) for x, y in zip(a, b))


# ---------------------------------------------------------------------- data-driven cases
@pytest.mark.parametrize("case", cases("bootstrap"))
def test_bootstrap_interval_matches_scipy(case):
    scores = data(case["data"])
    got = stats.bootstrap_interval(scores, n_resamples=N, seed=case["seed"])
    assert got.estimate == pytest.approx(case["estimate"])
    assert got.n == case["n"]
    if "method" in case:  # degenerate for BCa: the stored bounds are exact
        assert (got.low, got.high, got.method) == (case["low"], case["high"], case["method"])
        return
    want = scipy_interval((seed_means(scores),), np.mean, seed=case["seed"])
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-9)
    assert got.method == "bootstrap BCa"


@pytest.mark.parametrize("case", cases("combine"))
def test_derived_metric_is_resampled_whole_like_scipy_paired(case):
    arrays = {metric: data(name) for metric, name in case["metrics"].items()}
    combine = stats.harmonic_mean_of(list(arrays))
    got = stats.bootstrap_interval(arrays, n_resamples=N, seed=case["seed"], combine=combine)
    assert got.estimate == pytest.approx(case["estimate"])
    assert got.n == case["n"]

    # scipy's paired bootstrap resamples the same example indices for every sample
    def hm(*samples, axis):
        return sps.hmean(np.stack([np.nanmean(s, axis=axis) for s in samples]), axis=0)

    samples = tuple(a[:, 0] for a in arrays.values())
    want = scipy_interval(samples, hm, seed=case["seed"], paired=True)
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-9)


@pytest.mark.parametrize("case", cases("paired"))
def test_paired_difference_matches_scipy(case):
    treated, control = data(case["treated"]), data(case["control"])
    got = stats.paired_difference(treated, control, n_resamples=N, seed=case["seed"])
    assert got.estimate == pytest.approx(case["estimate"])
    assert got.n == case["n"]
    d = np.nanmean(treated, axis=1) - control[:, 0]
    want = scipy_interval((d,), np.mean, seed=case["seed"])
    assert (got.low, got.high) == pytest.approx((want.low, want.high), rel=1e-9)
    p = sps.permutation_test(
        (d,),
        np.mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=N,
        rng=np.random.default_rng(case["seed"]),
    ).pvalue
    assert got.p_value == pytest.approx(p)
    assert 0 < got.p_value < 1

    up = stats.share_worse(treated, control, higher_is_better=True)
    down = stats.share_worse(treated, control, higher_is_better=False)
    assert up.share_worse == pytest.approx(case["share_worse_higher_is_better"])
    assert down.share_worse == pytest.approx(case["share_worse_lower_is_better"])
    assert up.n == down.n == case["n"]
    assert up.differences == pytest.approx(tuple(d))


@pytest.mark.parametrize("case", cases("holm"))
def test_holm_by_hand(case):
    p = [math.nan if v is None else v for v in case["p"]]
    want = [math.nan if v is None else v for v in case["expected"]]
    got = stats.holm(p)
    assert len(got) == len(want) and nan_equal(got, want)


@pytest.mark.parametrize("case", cases("mde"))
def test_minimum_detectable_difference_by_hand(case):
    got = stats.minimum_detectable_difference(
        case["sd"], case["n"], alpha=case["alpha"], power=case["power"], paired=case["paired"]
    )
    assert got == pytest.approx(case["expected"], rel=1e-12)
    # and the power at that difference is the power asked for (the far tail adds ~1e-6)
    power = stats.power_of(got, case["sd"], case["n"], case["alpha"], case["paired"])
    assert power == pytest.approx(case["power"], abs=1e-4)


@pytest.mark.parametrize("case", cases("power"))
def test_power_by_hand(case):
    got = stats.power_of(
        case["difference"], case["sd"], case["n"], alpha=case["alpha"], paired=case["paired"]
    )
    assert got == pytest.approx(case["expected"], rel=1e-9)


# ---------------------------------------------------------------------- properties
VARIED = [
    "one seed",
    "three seeds, missing scores and a missing example",
    "a rate, one seed",
]


@pytest.mark.parametrize("name", VARIED)
def test_interval_contains_estimate_widens_with_level_and_is_seeded(name):
    scores = data(name)
    narrow, mid, wide = (
        stats.bootstrap_interval(scores, level=level, n_resamples=N, seed=1)
        for level in (0.8, 0.95, 0.99)
    )
    for i in (narrow, mid, wide):
        assert i.low <= i.estimate <= i.high
        assert i.half_width == pytest.approx((i.high - i.low) / 2)
    assert wide.low <= mid.low <= narrow.low and narrow.high <= mid.high <= wide.high
    assert wide.half_width > narrow.half_width
    assert stats.bootstrap_interval(scores, n_resamples=N, seed=1) == mid
    assert stats.bootstrap_interval(scores, n_resamples=N, seed=2) != mid


def test_fewer_than_two_examples_have_no_interval():
    one = stats.bootstrap_interval(np.array([[0.3, 0.5]]), n_resamples=N)
    assert one.estimate == pytest.approx(0.4) and one.n == 1
    assert math.isnan(one.low) and math.isnan(one.high) and math.isnan(one.half_width)
    none = stats.bootstrap_interval(np.full((3, 2), np.nan), n_resamples=N)
    assert none.n == 0 and math.isnan(none.estimate)
    diff = stats.paired_difference(np.array([[1.0]]), np.array([[0.0]]), n_resamples=N)
    assert diff.estimate == 1.0 and math.isnan(diff.p_value) and math.isnan(diff.low)


def test_paired_difference_of_identical_arrays_is_zero_with_p_one():
    scores = data("three seeds, missing scores and a missing example")
    d = stats.paired_difference(scores, scores.copy(), n_resamples=N, seed=4)
    assert (d.estimate, d.low, d.high, d.p_value, d.n) == (0.0, 0.0, 0.0, 1.0, 8)
    assert stats.share_worse(scores, scores, higher_is_better=True).share_worse == 0.0


def test_paired_difference_is_antisymmetric():
    treated, control = data("treated, two seeds"), data("control, one seed")
    ab = stats.paired_difference(treated, control, n_resamples=N, seed=3)
    ba = stats.paired_difference(control, treated, n_resamples=N, seed=3)
    assert ba.estimate == pytest.approx(-ab.estimate)
    assert ba.p_value == pytest.approx(ab.p_value)  # the same sign flips, mirrored


def test_vectorised_harmonic_mean_equals_the_scalar_one():
    rng = np.random.default_rng(0)
    names = ["efficacy", "paraphrase", "neighborhood"]
    arrays = {n: data(n)[:, 0] for n in names}
    # the means on a few resamples of the CounterFact data, plus the edge values by hand
    idx = rng.integers(0, 10, size=(5, 10))
    means = {n: a[idx].mean(axis=1) for n, a in arrays.items()}
    edges = [(0.0, 0.5, 0.5), (-0.2, 0.5, 0.5), (math.nan, 0.5, 0.5), (math.nan, 0.0, 1.0)]
    edges += [(math.inf, 0.5, 0.5), (1.0, 1.0, 1.0)]
    for k, n in enumerate(names):
        means[n] = np.concatenate([means[n], [e[k] for e in edges]])
    got = stats.harmonic_mean_of(names)(means)
    want = [harmonic_mean([float(means[n][j]) for n in names]) for j in range(len(got))]
    assert nan_equal(got.tolist(), want)
