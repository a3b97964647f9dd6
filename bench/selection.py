"""Choosing a method's operating strength on the `select` split, never on `test`.

The candidates are the swept strengths whose cells are not degenerate and whose perplexity stays
within `budget` x the unsteered model's, judged on the geometric-mean perplexity ratio (the
`log_perplexity` metric; runs without it fall back to the ratio of mean perplexities). Tasks
that do not generate have no perplexity, and then every strength is fluent.

Then a rule picks one of them (`RULES`):
- "smallest-within-noise" (the default): the best mean effect (over seeds), then the smallest
  strength (in magnitude) whose effect the select split cannot tell from the best's: the 95 %
  interval of best minus it, paired by example, includes 0. The best of a noisy sweep is partly
  the luckiest (its effect shrinks on test); among equals the gentlest steer costs the least
  fluency and the least of everything else. Strength 0 is a candidate: where no strength beats
  the unsteered model beyond the noise, the operating point is the unsteered model. Without
  per-example records the rule falls back to the best mean, and says so.
- "best-mean": the best mean effect; ties go to the smaller strength.
Means that differ only by floating-point summation order (1e-9) are ties: a strength that merely
reproduces the unsteered score must not become the operating point.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

from bench.intervals import ExampleSource, difference
from bench.metric import finite
from bench.records import CellRecord, Choice

TIE_DIGITS = 9  # effects equal to this many decimals are ties
BEST_WITHIN_BUDGET = "best effect within the fluency budget"  # the reason of a normal choice
WITHIN_NOISE = "smallest strength within the noise of the best"  # the default rule's choice
NOTHING_WITHIN_BUDGET = "no strength within the fluency budget"
NO_RECORDS = "no per-example records to judge the noise: best effect within the fluency budget"
NORMAL_REASONS = frozenset({BEST_WITHIN_BUDGET, WITHIN_NOISE})

SMALLEST_WITHIN_NOISE = "smallest-within-noise"
BEST_MEAN = "best-mean"
RULES = {
    SMALLEST_WITHIN_NOISE: "the smallest strength whose effect is within the noise of the best",
    BEST_MEAN: "the best mean effect",
}


def _mean(values: list[float | None]) -> float:
    kept = finite(values)
    return sum(kept) / len(kept) if kept else math.nan


def perplexity_ratio(group: Sequence[CellRecord], reference: Sequence[CellRecord]) -> float:
    """`group`'s perplexity over `reference`'s: the geometric mean of the sample ratios where
    both cells have `log_perplexity`, else the ratio of mean perplexities; NaN without either."""
    logs = [_mean([c.metrics.get("log_perplexity") for c in cells]) for cells in (group, reference)]
    if all(math.isfinite(v) for v in logs):
        return math.exp(logs[0] - logs[1])
    means = [_mean([c.metrics.get("perplexity") for c in cells]) for cells in (group, reference)]
    return means[0] / means[1] if means[1] and all(math.isfinite(v) for v in means) else math.nan


def typical_perplexity(cells: Sequence[CellRecord]) -> float:
    """The perplexity the budget scales: the geometric mean over samples where the cells have
    `log_perplexity`, else the mean perplexity; NaN without either."""
    log = _mean([c.metrics.get("log_perplexity") for c in cells])
    return (
        math.exp(log) if math.isfinite(log) else _mean([c.metrics.get("perplexity") for c in cells])
    )


def choose_strength(
    method: str,
    task: str,
    cells: Sequence[CellRecord],
    budget: float,
    primary_metric: str,
    higher_is_better: bool,
    *,
    rule: str = SMALLEST_WITHIN_NOISE,
    records: ExampleSource | None = None,
) -> Choice:
    """`method`'s operating point on `task` from its `select` cells (every strength and seed);
    `records` gives the cells' per-example records for the noise-aware rule."""
    by_strength: dict[float, list[CellRecord]] = defaultdict(list)
    for cell in cells:
        by_strength[cell.strength].append(cell)
    sign = 1.0 if higher_is_better else -1.0

    def effect(group: list[CellRecord]) -> float:
        return _mean([c.metrics.get(primary_metric) for c in group])

    reference = by_strength.get(0.0, [])
    reference_ppl = typical_perplexity(reference)
    candidates: dict[float, float] = {}  # strength -> its perplexity ratio (NaN: no text)
    for strength, group in sorted(by_strength.items()):
        if any(c.degenerate for c in group) or not math.isfinite(effect(group)):
            continue
        ratio = perplexity_ratio(group, reference)
        if not math.isfinite(ratio) or ratio <= budget:
            candidates[strength] = ratio
    common = dict(reference_perplexity=reference_ppl, unsteered_effect=effect(reference))
    if not candidates:
        return Choice(
            method,
            task,
            strength=0.0,
            effect=effect(reference),
            reason=NOTHING_WITHIN_BUDGET,
            rule=rule,
            **common,
        )

    def rank(strength: float) -> tuple[float, float]:  # better effect first, then gentler
        return (round(sign * effect(by_strength[strength]), TIE_DIGITS), -abs(strength))

    best = max(candidates, key=rank)
    chosen, reason = best, BEST_WITHIN_BUDGET
    if rule == SMALLEST_WITHIN_NOISE:
        if records is None or not any(records.examples_of(c) for c in by_strength[best]):
            reason = NO_RECORDS
        else:
            gentlest_first = sorted(candidates, key=lambda s: (abs(s), -rank(s)[0]))
            chosen = _smallest_within_noise(
                best, gentlest_first, by_strength, records, primary_metric, sign
            )
            reason = BEST_WITHIN_BUDGET if chosen == best else WITHIN_NOISE
    elif rule != BEST_MEAN:
        raise ValueError(f"unknown selection rule {rule!r} (known: {', '.join(RULES)})")
    return Choice(
        method,
        task,
        strength=chosen,
        effect=effect(by_strength[chosen]),
        reason=reason,
        perplexity_limit=_or_none(reference_ppl * budget),
        perplexity_ratio=_or_none(candidates[chosen]),
        rule=rule,
        best_strength=best,
        best_effect=effect(by_strength[best]),
        **common,
    )


def _smallest_within_noise(
    best: float,
    gentlest_first: Sequence[float],
    by_strength: dict[float, list[CellRecord]],
    records: ExampleSource,
    metric: str,
    sign: float,
) -> float:
    """The gentlest candidate the select split cannot tell from `best` (paired by example)."""
    for strength in gentlest_first:
        if strength == best or abs(strength) > abs(best):
            break
        gap = difference(records, by_strength[best], by_strength[strength], metric)
        if gap is None or not (math.isfinite(gap.low) and math.isfinite(gap.high)):
            continue
        # best minus this strength, in the "better" direction: 0 inside its interval = a tie.
        if min(sign * gap.low, sign * gap.high) <= 0:
            return strength
    return best


def _or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
