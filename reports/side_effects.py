"""The side-effect matrix of one method: rows are the suites its state was fitted for (at each
suite's operating point), columns the suites scored; each entry is the scored suite's primary
metric on test minus the unsteered model's (mean over seeds). The diagonal is the suite's own
gain at its operating point, so a row reads "what steering for A does to A, B, C ...".
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from reports.headline import Headline, task_info, unsteered
from reports.render import Table
from reports.runs import Run


def _delta(value: float) -> str:
    return f"{value:+.3g}" if math.isfinite(value) else "–"


def side_effect_table(
    run: Run, method: str, rows: Mapping[str, Sequence[Headline]]
) -> Table | None:
    """`method`'s matrix in `run` (None when the run scored no side effects for it).
    `rows`: each suite's headline rows in this run (the diagonal and the strengths)."""
    found = [e for e in run.side_effects if e.method == method]
    if not found:
        return None
    suites = [t for t in run.tasks if t in rows]
    base = {}
    for task in suites:
        primary, directions = task_info(run, task)
        ref = unsteered(run, task, "test")
        base[task] = (
            primary,
            directions.get(primary, True),
            ref.mean(primary) if ref else math.nan,
        )
    header = [
        "state fitted for (strength)",
        *(f"{t}: {base[t][0]} {'↑' if base[t][1] else '↓'}" for t in suites),
        *(["capability retained"] if run.capability else []),
    ]
    table_rows = []
    for source in suites:
        own = next((r for r in rows[source] if r.method == method), None)
        if own is None:
            continue
        cells = []
        for scored in suites:
            if scored == source:
                cells.append(_delta(own.test_gain) + " (own)")
                continue
            values = [
                e.value
                for e in found
                if e.fitted_for == source and e.scored_on == scored and math.isfinite(e.value)
            ]
            steered = statistics.fmean(values) if values else math.nan
            # Strength 0: the unsteered model, no side effect by construction.
            cells.append(_delta(0.0 if own.strength == 0 else steered - base[scored][2]))
        capability = (
            [f"{own.capability_retained:.0%}" if math.isfinite(own.capability_retained) else "–"]
            if run.capability
            else []
        )
        table_rows.append((f"{source} ({own.strength:g})", *cells, *capability))
    numeric = frozenset(range(1, len(header)))
    return Table(tuple(header), tuple(table_rows), frozenset(), numeric)
