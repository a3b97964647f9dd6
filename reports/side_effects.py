"""The side-effect matrix of one method: rows are the suites its state was fitted for (at each
suite's operating point), columns the suites scored; each entry is the scored suite's primary
metric on test minus the unsteered model's, paired by example, with its 95% interval. The
diagonal is the suite's own gain at its operating point, so a row reads "what steering for A
does to A, B, C ...".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bench.side_effects import SideEffect
from reports.headline import Headline, difference_text, retained_text, task_info
from reports.render import Block, Heading, Para, Table
from reports.runs import Run


def _entry(effect: SideEffect | None) -> str:
    """The paired difference [CI]; without per-example records, the difference of means."""
    if effect is None:
        return "–"
    return difference_text(effect.difference, fallback=effect.value - effect.unsteered)


def _own(row: Headline) -> str:
    if row.strength == 0:
        return "+0 (own)"
    found = row.uncertainty.vs_unsteered if row.uncertainty else None
    return difference_text(found, fallback=row.test_gain) + " (own)"


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


def side_effect_blocks(runs: Sequence[Run], tables: Mapping[str, list]) -> list[Block]:
    """Per run and method, its side-effect matrix (runs that scored side effects only)."""
    blocks: list[Block] = []
    for i, run in enumerate(runs):
        if not run.side_effects:
            continue
        blocks.append(Heading(2, f"Side effects across suites ({run.label})"))
        blocks.append(
            Para(
                "Each method's state fitted for one suite (rows), at that suite's operating "
                "strength, scored on every suite's primary metric on test (columns): the steered "
                "mean minus the unsteered model's, paired by example, with its 95% interval (↑: "
                "higher is better, ↓: lower). The diagonal is the suite's own effect; strength 0 "
                "is the unsteered model."
            )
        )
        rows = {task: per_run[i] for task, per_run in tables.items()}
        for method in run.methods:
            table = side_effect_table(run, method, rows)
            if table is not None:
                blocks.append(Heading(3, method))
                blocks.append(table)
    return blocks
