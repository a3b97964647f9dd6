"""Side effects across suites: a method's state fitted for one suite, at that suite's operating
point, scored on every other suite's primary metric (does the sentiment vector move toxicity,
fact recall, preference accuracy?).

Each scored cell is the other suite's `test` split, evaluated like any cell (`evaluate_cell`),
with every example steered by the one state (the source suite's first test target's: for fact
injection, its first injected fact). The report subtracts the other suite's unsteered test
effect, so each entry reads as "what steering for A does to B".
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.records import Record


@dataclass(frozen=True)
class SideEffect(Record):
    method: str  # the method's label
    fitted_for: str  # the suite whose state steers
    scored_on: str  # the suite whose primary metric is measured
    strength: float  # the operating point chosen on `fitted_for`
    seed: int
    primary_metric: str  # `scored_on`'s
    value: float  # its aggregate on `scored_on`'s test split, steered (NaN: degenerate)
    n_examples: int
