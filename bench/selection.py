"""Choosing a method's operating strength on the `select` split, never on `test`.

Among the swept strengths whose cells are not degenerate and whose perplexity stays within
`budget` x the unsteered perplexity, take the one with the best mean (over seeds) primary
metric; ties go to the smaller strength (in magnitude). Means that differ only by floating-point
summation order (1e-9) are ties: a strength that merely reproduces the unsteered score must not
become the operating point. Tasks that do not generate have no perplexity, and then only the
primary metric counts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from bench.metric import finite
from bench.records import CellRecord, Choice

TIE_DIGITS = 9  # effects equal to this many decimals are ties
BEST_WITHIN_BUDGET = "best effect within the fluency budget"  # the reason of a normal choice
NOTHING_WITHIN_BUDGET = "no strength within the fluency budget"


def _mean(values: list[float | None]) -> float:
    kept = finite(values)
    return sum(kept) / len(kept) if kept else math.nan


def choose_strength(
    method: str,
    task: str,
    cells: Sequence[CellRecord],
    budget: float,
    primary_metric: str,
    higher_is_better: bool,
) -> Choice:
    """`method`'s operating point on `task` from its `select` cells (every strength and seed)."""
    by_strength: dict[float, list[CellRecord]] = defaultdict(list)
    for cell in cells:
        by_strength[cell.strength].append(cell)
    higher = higher_is_better

    def effect(group: list[CellRecord]) -> float:
        return _mean([c.metrics.get(primary_metric) for c in group])

    def ppl(group: list[CellRecord]) -> float:
        return _mean([c.metrics.get("perplexity") for c in group])

    reference = ppl(by_strength.get(0.0, []))
    limit = reference * budget if math.isfinite(reference) else math.inf
    candidates = []
    for strength, group in sorted(by_strength.items()):
        if any(c.degenerate for c in group) or not math.isfinite(effect(group)):
            continue
        fluent = not math.isfinite(ppl(group)) or ppl(group) <= limit
        if fluent:
            candidates.append((strength, effect(group)))
    if not candidates:
        return Choice(
            method,
            task,
            strength=0.0,
            effect=effect(by_strength.get(0.0, [])),
            reason=NOTHING_WITHIN_BUDGET,
        )
    best = max(candidates, key=lambda c: (round(c[1] if higher else -c[1], TIE_DIGITS), -abs(c[0])))
    return Choice(
        method,
        task,
        strength=best[0],
        effect=best[1],
        reason=BEST_WITHIN_BUDGET,
        reference_perplexity=reference,
        perplexity_limit=limit,
    )
