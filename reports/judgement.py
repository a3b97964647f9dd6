"""The self-judgement report of `steerbench judge`: suites x models, from `judgement.json`.

A table (suite x model: pairwise accuracy [95% CI], n), in text for the terminal and markdown
for the report, and a figure of the same numbers with chance marked. For the main report,
`effect_figure` relates a run's judgement accuracies to its self-judging methods' effects.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.transforms import ScaledTranslation

from bench.judgement import CHANCE, at_chance, inverted
from bench.records import Judgement
from bench.rundir import read_json, to_json, write_atomic
from bench.stats import Interval
from reports.figures import COLOURS, DPI, MARKERS, save, vs_unsteered
from reports.headline import Headline
from reports.render import FigureBlock

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


# ------------------------------------------------------------------ judgement vs effect (report)
NUDGE = 7.0  # points between the markers of the methods that share a suite's accuracy


@dataclass(frozen=True)
class JudgedEffect:
    """A self-judging method on one suite: the subject's judgement of the suite against the
    method's effect at its operating point."""

    run: str
    method: str
    task: str
    accuracy: Interval  # pairwise judgement accuracy
    effect: tuple[float, float, float]  # Δ vs unsteered on test: estimate, low, high; up = desired
    strength: float

    @property
    def unsteered(self) -> bool:
        """Strength 0 was chosen: the method is the unsteered model there, Δ = 0 by construction."""
        return self.strength == 0.0


def desired(row: Headline) -> tuple[float, float, float]:
    """The row's paired Δ vs unsteered (estimate, low, high), signed so that positive is the
    suite's desired direction: a lower-is-better metric's drop counts upwards."""
    estimate, low, high = vs_unsteered(row)
    if row.higher_is_better.get(row.primary_metric, True):
        return estimate, low, high
    return -estimate, -high, -low


def judged_effects(tables: Mapping[str, Sequence[Sequence[Headline]]]) -> list[JudgedEffect]:
    """Every row whose suite judgement was measured (a self-judging method's, in a run that
    wrote judgement.json) and whose effect is known; suites without labelled pairs have none."""
    found = []
    for per_run in tables.values():
        for row in (r for rows in per_run for r in rows):
            accuracy = row.judgement.pairwise if row.judgement else None
            effect = desired(row)
            if accuracy is None or not (
                math.isfinite(accuracy.estimate) and math.isfinite(effect[0])
            ):
                continue
            found.append(
                JudgedEffect(row.run, row.method, row.task, accuracy, effect, row.strength)
            )
    return found


def _marker(ax, point: JudgedEffect, colour: str, marker: str, transform) -> None:
    """The point with its two intervals: judgement accuracy across, the effect's Δ upwards."""
    x, (y, low, high) = point.accuracy, point.effect
    if math.isfinite(x.low) and math.isfinite(x.high):
        ax.plot([x.low, x.high], [y, y], color=colour, lw=1.4, transform=transform)
    if math.isfinite(low) and math.isfinite(high):
        ax.plot([x.estimate] * 2, [low, high], color=colour, lw=1.4, transform=transform)
    face = "white" if point.unsteered else colour
    ax.plot(x.estimate, y, ls="none", marker=marker, ms=9, mfc=face, mec=colour, mew=1.8,
            transform=transform, zorder=5)  # fmt: skip


def _label_suites(ax, points: Sequence[JudgedEffect]) -> None:
    """Each suite's name once per run, beside its highest marker; suites that land on the same
    spot (say, two suites judged alike where nothing steered) share one label."""
    tops: dict[tuple[str, str], JudgedEffect] = {}
    for p in points:
        top = tops.get((p.run, p.task))
        if top is None or p.effect[0] > top.effect[0]:
            tops[(p.run, p.task)] = p
    spots: dict[tuple[float, float], list[str]] = {}
    for p in tops.values():
        names = spots.setdefault((round(p.accuracy.estimate, 2), p.effect[0]), [])
        if p.task not in names:
            names.append(p.task)
    for (x, y), names in spots.items():
        right = x > 0.75  # near the right edge the label runs leftwards, inside the axes
        ax.annotate(", ".join(names), (x, y), xytext=(-9 if right else 9, 7),
                    textcoords="offset points", ha="right" if right else "left", va="bottom",
                    fontsize=9)  # fmt: skip


def _legend(fig: Figure, points: Sequence[JudgedEffect], colours: Mapping[str, str]) -> None:
    methods = list(dict.fromkeys(p.method for p in points))
    runs = list(dict.fromkeys(p.run for p in points))
    handles = [Line2D([], [], color=colours[m], marker="o", ls="none", label=m) for m in methods]
    handles += [
        Line2D([], [], color="0.4", marker="o", ls="none", label="operating strength > 0"),
        Line2D(
            [],
            [],
            color="0.4",
            marker="o",
            mfc="white",
            ls="none",
            label="operating strength 0 (Δ = 0 by construction)",
        ),
        Line2D([], [], color="0.3", ls="--", lw=1, label=f"chance ({CHANCE:g})"),
        Line2D([], [], color="0.2", lw=1, label="no change (Δ = 0)"),
    ]
    if len(runs) > 1:
        handles += [
            Line2D(
                [],
                [],
                color="0.4",
                marker=MARKERS[k % len(MARKERS)],
                ls="none",
                label=f"run: {run}",
            )
            for k, run in enumerate(runs)
        ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=9)


def _effect_limits(points: Sequence[JudgedEffect]) -> tuple[float, float]:
    """The y range: every effect with its interval and 0, padded (more on top, for the labels)."""
    values = [0.0, *(v for p in points for v in p.effect if math.isfinite(v))]
    low, high = min(values), max(values)
    pad = 0.1 * (high - low) if high > low else 0.05
    return low - pad, high + 2 * pad


def effect_figure(points: Sequence[JudgedEffect], colours: Mapping[str, str]) -> Figure | None:
    """Judgement accuracy (x, 95% CI) against each self-judging method's Δ vs unsteered on test
    at its operating point (y, 95% CI, up = the suite's desired direction): one marker per
    method and suite (colour = method, shape = run), chance and no change drawn; None without
    points."""
    if not points:
        return None
    series = list(dict.fromkeys((p.run, p.method) for p in points))
    runs = list(dict.fromkeys(p.run for p in points))
    fig = Figure(figsize=(7.5, 5.2), layout="constrained", dpi=DPI)
    ax = fig.add_subplot()
    for p in points:
        # The methods judged on one suite share its x: each series is nudged a few points
        # sideways so that no marker hides another.
        k = series.index((p.run, p.method))
        dx = (k - (len(series) - 1) / 2) * NUDGE / 72
        nudged = ax.transData + ScaledTranslation(dx, 0, fig.dpi_scale_trans)
        _marker(ax, p, colours[p.method], MARKERS[runs.index(p.run) % len(MARKERS)], nudged)
    _label_suites(ax, points)
    ax.axvline(CHANCE, color="0.3", ls="--", lw=1, zorder=1)  # under the intervals
    ax.axhline(0, color="0.2", lw=1, zorder=1)
    # Limits set here: matplotlib's autoscaling counts the nudge as if it were data.
    ax.set_xlim(-0.06, 1.06)
    ax.set_ylim(*_effect_limits(points))
    ax.set_xlabel("pairwise self-judgement accuracy of the suite (95% CI; 0.5 = chance)")
    ax.set_ylabel(
        "Δ primary metric vs unsteered, on test (95% CI)\n"
        "each suite's own metric; up = steered the desired way"
    )
    ax.grid(alpha=0.3)
    _legend(fig, points, colours)
    fig.suptitle("Self-judgement vs the self-judging methods' effect", fontsize=12)
    return fig


def effect_blocks(
    tables: Mapping[str, Sequence[Sequence[Headline]]], colours: Mapping[str, str], fig_dir: Path
) -> list[FigureBlock]:
    """The main report's figure of judgement accuracy vs the self-judging methods' effects;
    nothing where no run measured a judgement (no self-judging method ran, or the runs predate
    judgement.json, or no suite had labelled pairs)."""
    fig = effect_figure(judged_effects(tables), colours)
    if fig is None:
        return []
    png, svg = save(fig, fig_dir, "judgement_effect")
    caption = (
        "Each self-judging method's Δ vs unsteered on test at its operating point (paired by "
        "example, 95% CI; up = the suite's desired direction, in the suite's own primary "
        "metric) against how well the subject judges that suite through its suffix question "
        "(pairwise accuracy, 95% CI; dashed line = chance). One marker per method and suite "
        "(colour = method, shape = run; runs without judgement.json have none, nor do suites "
        "without labelled pairs); hollow = operating strength 0, where Δ is 0 by construction. "
        "A right judgement is necessary, not sufficient: at chance a self-judging method has "
        "nothing to climb and below it climbs backwards, while above it the climb may still "
        "not pay within the fluency budget."
    )
    return [FigureBlock(png, svg, "Self-judgement vs effect", caption)]
