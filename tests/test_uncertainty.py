"""The report's uncertainty: intervals and paired comparisons assembled from per-example records."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np
import pytest

from bench.intervals import LEVEL, RESAMPLES, SEED, difference, interval, steerability
from bench.metric import harmonic_mean
from bench.records import (
    CellKey,
    CellRecord,
    CellResult,
    Cost,
    Derivation,
    ExampleRecord,
    Manifest,
)
from bench.stats import bootstrap_interval, holm
from reports.headline import headlines
from reports.runs import Run, load_run
from reports.summary import run_summary

FIXTURE = Path(__file__).parent / "fixtures" / "run_small"


@pytest.fixture(scope="module")
def run() -> Run:
    return load_run(FIXTURE)


def per_example(path: Path, cell_ids: set[str], metric: str) -> dict[str, dict[int, float]]:
    """example -> seed -> score, read straight from records.jsonl (not through the reports)."""
    seeds = {
        c["id"]: c["seed"] for c in map(json.loads, (path / "cells.jsonl").read_text().splitlines())
    }
    out: dict[str, dict[int, float]] = {}
    for line in (path / "records.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["cell"] in cell_ids and record["scores"].get(metric) is not None:
            out.setdefault(record["example"], {})[seeds[record["cell"]]] = record["scores"][metric]
    return out


def test_headline_intervals_are_the_bootstrap_of_the_records(run):
    summary, _ = run_summary(run)
    row = next(
        r for r in summary["rows"] if (r["task"], r["method"]) == ("toy_sentiment", "meandiff")
    )
    table = headlines(run, "toy_sentiment")
    test_cells = next(h for h in table if h.method == "meandiff").test.cells
    scores = per_example(FIXTURE, {c.id for c in test_cells}, "positive_rate")
    seeds = sorted({c.seed for c in test_cells})
    matrix = np.array([[scores[e].get(s, math.nan) for s in seeds] for e in sorted(scores)])
    expected = bootstrap_interval(matrix, level=LEVEL, n_resamples=RESAMPLES, seed=SEED)
    found = row["metrics"]["positive_rate"]
    assert (found["ci_low"], found["ci_high"]) == pytest.approx((expected.low, expected.high))
    assert found["ci_low"] <= found["mean"] <= found["ci_high"]


def test_paired_difference_is_the_mean_of_per_example_differences(run):
    table = headlines(run, "toy_sentiment")
    row = next(h for h in table if h.method == "meandiff")
    treated = per_example(FIXTURE, {c.id for c in row.test.cells}, "positive_rate")
    control = per_example(FIXTURE, {c.source_id for c in row.reference.cells}, "positive_rate")
    diffs = [
        statistics.fmean(treated[e].values()) - statistics.fmean(control[e].values())
        for e in sorted(treated)
    ]
    found = row.uncertainty.vs_unsteered
    assert found.estimate == pytest.approx(statistics.fmean(diffs))
    assert found.low <= found.estimate <= found.high and 0 <= found.p_value <= 1
    worse = sum(d < 0 for d in diffs) / len(diffs)  # positive rate: higher is better
    assert row.uncertainty.steerability.share_worse == pytest.approx(worse)


def test_p_values_are_holm_adjusted_over_the_suites_table(run):
    table = headlines(run, "toy_toxicity")
    raw = [
        getattr(h.uncertainty, side).p_value
        for h in table
        for side in ("vs_unsteered", "vs_prompting")
        if h.uncertainty and getattr(h.uncertainty, side)
    ]
    adjusted = [
        h.uncertainty.adjusted[side]
        for h in table
        for side in ("vs_unsteered", "vs_prompting")
        if h.uncertainty and getattr(h.uncertainty, side)
    ]
    assert raw and adjusted == pytest.approx(holm(raw), nan_ok=True)


# ------------------------------------------------------------ a derived effect, by hand
def _cell(cell_id: str, method: str, strength: float) -> CellRecord:
    result = CellResult(
        metrics={},
        higher_is_better={"a": True, "b": True, "score": True},
        primary_metric="score",
        n_examples=6,
        degenerate=False,
        perplexity_capped=0,
        cost=Cost(1.0, 0),
        derived={"score": Derivation(("a", "b"), "harmonic_mean")},
    )
    return CellRecord(cell_id, CellKey(method, method, "t", "test", strength, 0), result)


def test_a_derived_effect_is_computed_whole_on_each_resample():
    rng = np.random.default_rng(3)
    a_t, b_t = rng.uniform(0.3, 0.9, 6), rng.uniform(0.3, 0.9, 6)
    a_c, b_c = rng.uniform(0.1, 0.5, 6), rng.uniform(0.1, 0.5, 6)

    def examples(cell: str, a, b) -> tuple[ExampleRecord, ...]:
        return tuple(
            ExampleRecord(cell, f"e{i}", {"a": float(x), "b": float(y)}, {}, ())
            for i, (x, y) in enumerate(zip(a, b))
        )

    treated, control = _cell("t", "m", 1.0), _cell("c", "unsteered", 0.0)
    run = Run(
        root=Path("."), label="hand", manifest=Manifest(), cells=(treated, control), selection=(),
        skipped=(), fits=(), warnings=(), digest="",
        examples={"t": examples("t", a_t, b_t), "c": examples("c", a_c, b_c)},
    )  # fmt: skip
    found = difference(run, [treated], [control], "score")
    expected = harmonic_mean([a_t.mean(), b_t.mean()]) - harmonic_mean([a_c.mean(), b_c.mean()])
    assert found.estimate == pytest.approx(expected)
    assert found.low <= found.estimate <= found.high and math.isnan(found.p_value)
    whole = interval(run, [treated], "score")
    assert whole.estimate == pytest.approx(harmonic_mean([a_t.mean(), b_t.mean()]))
    # No example has a score of its own: one counts as worse where the mean of its parts fell.
    moved = steerability(run, [treated], [control], "score", higher_is_better=True)
    parts = (a_t + b_t) / 2 - (a_c + b_c) / 2
    assert moved.n == 6 and moved.differences == pytest.approx(tuple(parts))
    assert moved.share_worse == pytest.approx(float((parts < 0).mean()))
