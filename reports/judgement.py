"""The self-judgement report of `steerbench judge`: suites x models, from `judgement.json`.

A table (suite x model: pairwise accuracy [95% CI], n), in text for the terminal and markdown
for the report, and a figure of the same numbers with chance marked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from bench.judgement import CHANCE, at_chance, inverted
from bench.records import Judgement
from bench.rundir import read_json, to_json, write_atomic
from bench.stats import Interval
from reports.figures import COLOURS, save

FILE = "judgement.json"


def cell(interval: Interval | None, missing: str = "") -> str:
    """'0.81 [0.74, 0.87], n=120', with '(chance)' where the interval includes 0.5 and
    '(inverted)' where it lies below."""
    if interval is None:
        return f"- ({missing})" if missing else "-"
    text = f"{interval.estimate:.2f} [{interval.low:.2f}, {interval.high:.2f}], n={interval.n}"
    return text + (
        " (chance)" if at_chance(interval) else " (inverted)" if inverted(interval) else ""
    )


def _grid(records: Sequence[Judgement]) -> tuple[list[str], list[str], dict]:
    tasks = list(dict.fromkeys(r.task for r in records))
    models = list(dict.fromkeys(r.model for r in records))
    return tasks, models, {(r.task, r.model): r for r in records}


def table(records: Sequence[Judgement], kind: str = "pairwise") -> list[list[str]]:
    """Rows of [suite, one cell per model], the header first."""
    tasks, models, by = _grid(records)
    rows = [["suite", *models]]
    for task in tasks:
        row = [task]
        for model in models:
            r = by.get((task, model))
            row.append(cell(getattr(r, kind), r.missing) if r else "-")
        rows.append(row)
    return rows


def text_table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def figure(records: Sequence[Judgement]) -> Figure:
    """Pairwise accuracy per suite, one bar per model, 95% CIs; the dashed line is chance."""
    tasks, models, by = _grid(records)
    fig = Figure(figsize=(max(4.0, 1.2 * len(tasks) * max(1, len(models)) ** 0.5 + 2), 3.2))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(models))
    for m, model in enumerate(models):
        for t, task in enumerate(tasks):
            r = by.get((task, model))
            i = r.pairwise if r else None
            if i is None or not math.isfinite(i.estimate):
                continue
            x = t - 0.4 + width * (m + 0.5)
            low = i.estimate - i.low if math.isfinite(i.low) else 0.0
            high = i.high - i.estimate if math.isfinite(i.high) else 0.0
            ax.bar(
                x,
                i.estimate,
                width,
                color=COLOURS[m % len(COLOURS)],
                yerr=[[low], [high]],
                capsize=3,
                label=model if t == 0 else None,
            )
    ax.axhline(CHANCE, color="black", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(tasks)), tasks)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pairwise judgement accuracy\n(higher = judges better)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    fig.set_layout_engine("constrained")
    return fig


def markdown(records: Sequence[Judgement], figure_name: str) -> str:
    questions = {(r.task, r.question) for r in records if r.question}
    sources = {(r.task, r.source) for r in records if r.source}
    parts = [
        "# Self-judgement",
        "",
        "The subject's accuracy at preferring the better of two texts through each suite's own "
        "suffix question (the judgement SelfControl and the prefix controller climb), on the "
        "suite's test split; 95% cluster-bootstrap intervals over pairs; ties excluded. "
        "'(chance)': the interval includes 0.5, '(inverted)': it lies below, so a self-judging "
        "method cannot steer there.",
        "",
        "## Pairwise (P(yes | better) > P(yes | worse))",
        "",
        markdown_table(table(records, "pairwise")),
        "",
        "## Pointwise (the judgement's own yes/no against the label)",
        "",
        markdown_table(table(records, "pointwise")),
        "",
        f"![pairwise judgement accuracy]({figure_name})",
        "",
        "## Pairs and questions",
        "",
        *[f"- {task}: {source}" for task, source in sorted(sources)],
        *[f"- {task}: {question!r}" for task, question in sorted(questions)],
    ]
    return "\n".join(parts) + "\n"


def write(folder: Path, records: Sequence[Judgement]) -> Path:
    """judgement.json, judgement.md and the figure in `folder`; the markdown's path."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(
        folder / FILE,
        json.dumps(to_json([r.to_dict() for r in records]), indent=2, sort_keys=True) + "\n",
    )
    png, _ = save(figure(records), folder, "judgement")
    md = folder / "judgement.md"
    write_atomic(md, markdown(records, png.name))
    return md


def read(folder: Path) -> list[Judgement] | None:
    """The records of `folder/judgement.json`; None when there is none (an older run)."""
    path = folder / FILE
    if not path.exists():
        return None
    return [Judgement.from_dict(d, f"{path}[{i}]") for i, d in enumerate(read_json(path))]
