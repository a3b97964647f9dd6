"""Choosing the operating strength on `select`: data-driven cases."""

from __future__ import annotations

import pytest

from bench.records import CellKey, CellRecord, CellResult, Cost
from bench.selection import choose_strength


def cells(*rows, degenerate=()):
    """Cells from (strength, primary metric, perplexity) rows."""
    return [
        CellRecord(
            id=f"c{i}",
            key=CellKey("m", "m", "t", "select", s, 0),
            result=CellResult(
                metrics={"score": m, "perplexity": p},
                higher_is_better={},
                primary_metric="score",
                n_examples=1,
                degenerate=s in degenerate,
                perplexity_capped=0,
                cost=Cost(0.0, 0),
            ),
        )
        for i, (s, m, p) in enumerate(rows)
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
]


@pytest.mark.parametrize("rows, higher, expected", CASES)
def test_choose_strength_cases(rows, higher, expected):
    assert choose_strength("m", "t", rows, 1.5, "score", higher).strength == expected


def test_nothing_within_budget_falls_back_to_unsteered():
    rows = cells((0.0, 0.4, 3.0), (1.0, 0.9, 9.0), degenerate=(0.0,))
    chosen = choose_strength("m", "t", rows, 1.5, "score", True)
    assert chosen.strength == 0.0 and chosen.reason == "no strength within the fluency budget"
