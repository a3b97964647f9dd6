"""Choosing the operating strength on `select`: data-driven cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.config import SelectionConfig
from bench.errors import UserError
from bench.params import parse
from bench.records import CellKey, CellRecord, CellResult, Cost, ExampleRecord
from bench.selection import (
    BEST_MEAN,
    NO_RECORDS,
    ONE_SE,
    WITHIN_CI,
    WITHIN_NOISE,
    choose_strength,
    perplexity_ratio,
)


def cells(*rows, degenerate=()):
    """Cells from (strength, primary metric, perplexity[, log perplexity]) rows."""
    return [
        CellRecord(
            id=f"c{i}",
            key=CellKey("m", "m", "t", "select", row[0], 0),
            result=CellResult(
                metrics={
                    "score": row[1],
                    "perplexity": row[2],
                    **({"log_perplexity": row[3]} if len(row) > 3 else {}),
                },
                higher_is_better={},
                primary_metric="score",
                n_examples=1,
                degenerate=row[0] in degenerate,
                perplexity_capped=0,
                cost=Cost(0.0, 0),
            ),
        )
        for i, row in enumerate(rows)
    ]


CASES = [
    # (cells, higher is better, chosen strength)
    (cells((0.0, 0.4, 3.0), (1.0, 0.6, 3.3), (2.0, 0.9, 9.0)), True, 1.0),  # 2 is over budget
    (cells((0.0, 0.4, 3.0), (1.0, 0.6, 3.3), (2.0, 0.8, 4.4)), True, 2.0),
    (cells((0.0, 0.9, 2.0), (0.5, 0.7, 2.2), (1.0, 0.5, 3.1)), False, 0.5),  # lower is better
    (cells((0.0, 0.4, 3.0), (1.0, 0.6, 3.1), (2.0, 0.6, 3.2)), True, 1.0),  # tie: the smaller
    # A floating-point tie with the unsteered score is no effect: stay at 0.
    (cells((0.0, -0.3541666666666667, 1.5), (0.5, -0.3541666666666666, 1.56)), True, 0.0),
    (cells((0.0, 0.4, 3.0), (-1.0, 0.6, 3.1), (-2.0, 0.6, 3.1)), True, -1.0),  # by magnitude
    (cells((0.0, 0.4, 3.0), (1.0, 0.9, 3.1), degenerate=(1.0,)), True, 0.0),
    # The budget judges the geometric mean of the sample ratios: one runaway sample drove the
    # mean perplexity of strength 2 to x3, its typical sample moved x1.2 (log 1.2 = 0.18).
    (cells((0.0, 0.4, 3.0, 1.0), (1.0, 0.6, 3.3, 1.05), (2.0, 0.9, 9.0, 1.18)), True, 2.0),
    (cells((0.0, 0.4, 3.0, 1.0), (1.0, 0.6, 3.3, 1.05), (2.0, 0.9, 4.0, 1.5)), True, 1.0),
]


@pytest.mark.parametrize("rows, higher, expected", CASES)
def test_choose_strength_cases(rows, higher, expected):
    assert choose_strength("m", "t", rows, 1.5, "score", higher).strength == expected


def test_nothing_within_budget_falls_back_to_unsteered():
    rows = cells((0.0, 0.4, 3.0), (1.0, 0.9, 9.0), degenerate=(0.0,))
    chosen = choose_strength("m", "t", rows, 1.5, "score", True)
    assert chosen.strength == 0.0 and chosen.reason == "no strength within the fluency budget"


def test_perplexity_ratio_is_geometric_where_cells_have_log_perplexity():
    base, steered = cells((0.0, 0.0, 10.0, math.log(8.0)), (1.0, 0.0, 40.0, math.log(12.0)))
    assert perplexity_ratio([steered], [base]) == pytest.approx(1.5)
    old_base, old_steered = cells((0.0, 0.0, 10.0), (1.0, 0.0, 40.0))
    assert perplexity_ratio([old_steered], [old_base]) == pytest.approx(4.0)  # older runs


# ---------------------------------------------------------------- the noise-aware rule
class Records:
    """Per-example scores by cell id: an `ExampleSource`."""

    def __init__(self, by_cell: dict[str, np.ndarray]):
        self.by_cell = by_cell

    def examples_of(self, cell):
        values = self.by_cell.get(cell.id, ())
        return [
            ExampleRecord(cell.id, f"e{i}", {"score": float(v)}, {}, ())
            for i, v in enumerate(values)
        ]


def sweep(per_strength: dict[float, np.ndarray]):
    """Select cells and their per-example scores (one seed), perplexity flat."""
    rows = cells(*((s, float(np.mean(v)), 3.0) for s, v in per_strength.items()))
    return rows, Records({c.id: per_strength[c.strength] for c in rows})


RNG = np.random.default_rng(0)
BASE = RNG.normal(0.0, 1.0, 40)  # each example's own difficulty, shared by every strength
# Per-example noise of each strength, centred so that the shifts below are the exact mean
# effects; a paired difference's standard error is then about 0.011 (0.0103 to 0.0116).
NOISE = [noise - noise.mean() for noise in (RNG.normal(0.0, 0.05, 40) for _ in range(4))]
RULE_CASES = [
    # (per-example scores by strength, higher is better, rule, chosen, reason)
    # Strength 1 is within one standard error of 2 (paired): the gentler one.
    ({0.0: BASE, 1.0: BASE + 0.5 + NOISE[0], 2.0: BASE + 0.505 + NOISE[1]}, True, ONE_SE, 1.0, WITHIN_NOISE),
    # Strength 1 is clearly worse than 2 on every example: the best.
    ({0.0: BASE, 1.0: BASE + 0.2 + NOISE[0], 2.0: BASE + 0.5 + NOISE[1]}, True, ONE_SE, 2.0, None),
    # Nothing beats the unsteered model by a standard error: stay at 0.
    ({0.0: BASE + NOISE[3], 1.0: BASE + 0.002 + NOISE[0], 2.0: BASE + 0.005 + NOISE[1]}, True, ONE_SE, 0.0, WITHIN_NOISE),
    # Lower is better; -1 cannot be told from -2.
    ({0.0: BASE, -1.0: BASE - 0.4 + NOISE[0], -2.0: BASE - 0.405 + NOISE[1]}, False, ONE_SE, -1.0, WITHIN_NOISE),
    # Equal magnitudes: the better of the two gentlest, if within the noise of the best.
    ({0.0: BASE, -1.0: BASE + 0.3 + NOISE[0], 1.0: BASE + 0.5 + NOISE[1], 2.0: BASE + 0.505 + NOISE[2]}, True, ONE_SE, 1.0, WITHIN_NOISE),
    # About 1.6 standard errors short of the best: too far for one-se, within the 95% interval.
    ({0.0: BASE, 1.0: BASE + 0.482 + NOISE[0], 2.0: BASE + 0.5 + NOISE[1]}, True, ONE_SE, 2.0, None),
    ({0.0: BASE, 1.0: BASE + 0.482 + NOISE[0], 2.0: BASE + 0.5 + NOISE[1]}, True, WITHIN_CI, 1.0, WITHIN_NOISE),
]  # fmt: skip


@pytest.mark.parametrize("per_strength, higher, rule, expected, reason", RULE_CASES)
def test_noise_aware_rule_cases(per_strength, higher, rule, expected, reason):
    rows, records = sweep(per_strength)
    chosen = choose_strength("m", "t", rows, 1.5, "score", higher, rule=rule, records=records)
    assert chosen.strength == expected
    best = max(per_strength, key=lambda s: np.mean(per_strength[s]) * (1 if higher else -1))
    assert chosen.best_strength == best and chosen.rule == rule
    assert chosen.best_effect == pytest.approx(np.mean(per_strength[best]))
    assert chosen.reason == (reason or "best effect within the fluency budget")


def test_best_mean_rule_and_the_fallback_without_records():
    rows, records = sweep(RULE_CASES[0][0])
    best = choose_strength("m", "t", rows, 1.5, "score", True, rule=BEST_MEAN, records=records)
    assert best.strength == 2.0 and best.rule == BEST_MEAN
    blind = choose_strength("m", "t", rows, 1.5, "score", True)
    assert blind.strength == 2.0 and blind.reason == NO_RECORDS
    with pytest.raises(ValueError, match="unknown selection rule"):
        choose_strength("m", "t", rows, 1.5, "score", True, rule="luckiest")


def test_the_rule_is_an_experiment_setting():
    assert parse(SelectionConfig, {"rule": "best-mean"}).rule == "best-mean"
    with pytest.raises(UserError, match="rule must be one of"):
        parse(SelectionConfig, {"rule": "luckiest"})
