"""The side-effect matrix of one method: rows are the suites its state was fitted for (at each
suite's operating point), columns the suites scored; each entry is the scored suite's primary
metric on test minus the unsteered model's, paired by example, with its 95% interval. The
diagonal is the suite's own gain at its operating point, so a row reads "what steering for A
does to A, B, C ...".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from bench.side_effects import SideEffect
from bench.stats import Difference
from reports.headline import Headline, retained_text, task_info
from reports.render import Table
from reports.runs import Run


def _delta(value: float) -> str:
    return f"{value:+.3g}" if math.isfinite(value) else "–"


def _entry(effect: SideEffect | None) -> str:
    """The paired difference [CI]; without per-example records, the difference of means."""
    if effect is None:
        return "–"
    found: Difference | None = effect.difference
    if found is None or not (math.isfinite(found.low) and math.isfinite(found.high)):
        return _delta(effect.value - effect.unsteered)
    return f"{_delta(found.estimate)} [{found.low:+.2g}, {found.high:+.2g}]"


def _own(row: Headline) -> str:
    found = row.uncertainty.vs_unsteered if row.uncertainty else None
    if row.strength == 0 or found is None:
        return _delta(0.0 if row.strength == 0 else row.test_gain) + " (own)"
    return f"{_delta(found.estimate)} [{found.low:+.2g}, {found.high:+.2g}] (own)"


def side_effect_table(
    run: Run, method: str, rows: Mapping[str, Sequence[Headline]]
) -> Table | None:
    """`method`'s matrix in `run` (None when the run scored no side effects for it).
    `rows`: each suite's headline rows in this run (the diagonal and the strengths)."""
    found = {(e.fitted_for, e.scored_on): e for e in run.side_effects if e.method == method}
    if not found:
        return None
    suites = [t for t in run.tasks if t in rows]
    header = ["state fitted for (strength)"]
    for task in suites:
        primary, directions = task_info(run, task)
        header.append(f"{task}: {primary} {'↑' if directions.get(primary, True) else '↓'}")
    if run.capability:
        header.append("capability retained [95% CI]")
    table_rows = []
    for source in suites:
        own = next((r for r in rows[source] if r.method == method), None)
        if own is None:
            continue
        cells = [
            _own(own)
            if scored == source
            # Strength 0: the unsteered model, no side effect by construction.
            else ("+0 (unsteered)" if own.strength == 0 else _entry(found.get((source, scored))))
            for scored in suites
        ]
        capability = [retained_text(own.capability)] if run.capability else []
        table_rows.append((f"{source} ({own.strength:g})", *cells, *capability))
    numeric = frozenset(range(1, len(header)))
    return Table(tuple(header), tuple(table_rows), frozenset(), numeric)
