"""Choosing a method's operating strength on the `select` split, never on `test`.

The candidates are the swept strengths whose cells are not degenerate and whose perplexity stays
within `budget` x the unsteered model's, judged on the geometric-mean perplexity ratio (the
`log_perplexity` metric; runs without it fall back to the ratio of mean perplexities). Tasks
that do not generate have no perplexity, and then every strength is fluent.

Then a rule picks one of them (`RULES`):
- "one-se" (the default): the best mean effect (over seeds), then the smallest strength (in
  magnitude) whose effect is within one standard error of the best's, the error of their
  difference paired by example on select (the one-standard-error rule of model selection,
  Hastie et al., ESL 7.10). The best of a noisy sweep is partly the luckiest (its effect shrinks
  on test); among strengths the select split cannot tell apart, the gentlest steer costs the
  least fluency and the least of everything else. Strength 0 is a candidate: where no strength
  beats the unsteered model by a standard error, the operating point is the unsteered model.
- "within-ci": the same with the 95 % interval (1.96 standard errors); on the testbed's 16
  select examples it gave up effects that held on test (toxicity -0.11 at CAA 0.5), so it suits
  large select splits.
- "best-mean": the best mean effect; ties go to the smaller strength.
Without per-example records the noise-aware rules fall back to the best mean, and say so.
Means that differ only by floating-point summation order (1e-9) are ties: a strength that merely
reproduces the unsteered score must not become the operating point.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from bench.intervals import LEVEL, ExampleSource, difference
from bench.metric import finite
from bench.records import CellRecord, Choice

TIE_DIGITS = 9  # effects equal to this many decimals are ties
BEST_WITHIN_BUDGET = "best effect within the fluency budget"  # the reason of a normal choice
WITHIN_NOISE = "a gentler strength within the noise of the best"  # a noise-aware rule's choice
NOTHING_WITHIN_BUDGET = "no strength within the fluency budget"
NO_RECORDS = "no per-example records to judge the noise: best effect within the fluency budget"
NORMAL_REASONS = frozenset({BEST_WITHIN_BUDGET, WITHIN_NOISE})


@dataclass(frozen=True)
class Rule:
    description: str
    # How many standard errors of the paired difference from the best a gentler strength may
    # fall short and still be chosen; None: the best mean itself.
    standard_errors: float | None


ONE_SE, WITHIN_CI, BEST_MEAN = "one-se", "within-ci", "best-mean"
RULES = {
    ONE_SE: Rule("the smallest strength within one standard error of the best effect", 1.0),
    WITHIN_CI: Rule(
        "the smallest strength within the 95% interval of the best effect",
        NormalDist().inv_cdf(0.975),
    ),
    BEST_MEAN: Rule("the best mean effect", None),
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
    rule: str = ONE_SE,
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
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r} (known: {', '.join(RULES)})")
    tolerance = RULES[rule].standard_errors
    if tolerance is not None:
        if records is None or not any(records.examples_of(c) for c in by_strength[best]):
            reason = NO_RECORDS
        else:
            gentlest_first = sorted(candidates, key=lambda s: (abs(s), -rank(s)[0]))
            chosen = _gentlest_within(
                best, gentlest_first, by_strength, records, primary_metric, sign, tolerance
            )
            reason = BEST_WITHIN_BUDGET if chosen == best else WITHIN_NOISE
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


def _gentlest_within(
    best: float,
    gentlest_first: Sequence[float],
    by_strength: dict[float, list[CellRecord]],
    records: ExampleSource,
    metric: str,
    sign: float,
    tolerance: float,
) -> float:
    """The gentlest candidate whose effect falls short of `best`'s by at most `tolerance`
    standard errors of their paired difference on select."""
    z = NormalDist().inv_cdf(0.5 + LEVEL / 2)
    for strength in gentlest_first:
        if strength == best or abs(strength) > abs(best):
            break
        gap = difference(records, by_strength[best], by_strength[strength], metric)
        if gap is None or not (math.isfinite(gap.low) and math.isfinite(gap.high)):
            continue
        # The bootstrap interval's width in standard errors (derived metrics have no other).
        standard_error = (gap.high - gap.low) / (2 * z)
        if sign * gap.estimate <= tolerance * standard_error:
            return strength
    return best


def _or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None
