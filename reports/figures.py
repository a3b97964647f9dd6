"""The report's figures, drawn with matplotlib's object API (Agg canvas, no pyplot state).

Readable at a glance: one colour per method in every figure (`palette`), one line style and
marker per run when runs are compared, axes labelled with what is measured and which way is
better, legends outside the plotting area, constrained layout so no text overlaps.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from bench.selection import typical_perplexity
from reports.headline import FLUENCY, Curve, Headline, Point

COLOURS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5",
)  # fmt: skip
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
HATCHES = ("", "//", "..", "xx")
UNSTEERED_COLOUR = "black"
DPI = 110

AXIS_LABELS = {
    "perplexity": "perplexity of the continuation, geometric mean\n(evaluator LM, log scale; lower = more fluent)",
    "distinct_1": "distinct-1 (unique / total unigrams, 0-1)",
    "distinct_2": "distinct-2 (unique / total bigrams, 0-1)",
    "distinct_3": "distinct-3 (unique / total trigrams, 0-1)",
    "repetition": "repetition (share of repeated trigrams, 0-1)",
}


def palette(methods: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method label, in first-seen order across all compared runs."""
    return {m: COLOURS[i % len(COLOURS)] for i, m in enumerate(dict.fromkeys(methods))}


def direction(higher: bool) -> str:
    return "higher is better" if higher else "lower is better"


@dataclass(frozen=True)
class TaskView:
    """What the figures of one suite need from one run."""

    run: str
    primary: str
    higher: Mapping[str, bool]  # metric -> higher is better
    select: Mapping[str, Curve]  # method -> sweep on select
    unsteered: Point | None  # on select
    rows: Sequence[Headline]

    def row(self, method: str) -> Headline | None:
        return next((r for r in self.rows if r.method == method), None)


def _wrap(text: str, width: int = 30) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _along(point, metric: str) -> float:
    """A point's value on a fluency axis; perplexity as the budget judges it (geometric mean
    over samples, `bench.selection.typical_perplexity`), so the budget line is exact."""
    return typical_perplexity(point.cells) if metric == "perplexity" else point.mean(metric)


def _finite(*values: float) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _log_axis(ax) -> None:
    """Log x axis with plain-number labels, fewer per decade as the range grows."""
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    subs = (1.0, 2.0, 5.0) if decades < 1.5 else (1.0, 3.0) if decades < 3 else (1.0,)
    ax.xaxis.set_major_locator(LogLocator(subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _grid(n: int, ncols: int, width: float, height: float, sharey: bool) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    # At least 7.5 in wide, so a one-panel figure still fits its legend below the plot.
    size = (max(width * ncols, 7.5), height * nrows + 1.0)
    fig = Figure(figsize=size, layout="constrained", dpi=DPI)
    axes = fig.subplots(nrows, ncols, sharey=sharey, squeeze=False).ravel().tolist()
    return fig, axes


def strength_figure(task: str, views: Sequence[TaskView], colours: Mapping[str, str]) -> Figure:
    """Effect vs strength on select: a panel per method (strengths are in each method's own
    units), the seed spread as a min-max band, the chosen operating point and its test effect."""
    methods = list(dict.fromkeys(m for v in views for m in v.select))
    fig, axes = _grid(len(methods), 3, 4.2, 3.2, sharey=True)
    primary, higher = views[0].primary, views[0].higher.get(views[0].primary, True)
    multi = len(views) > 1
    for ax, method in zip(axes, methods):
        for k, view in enumerate(views):
            curve = view.select.get(method)
            if curve is None:
                continue
            pts = [p for p in curve.points if _finite(p.mean(primary))]
            xs = [p.strength for p in pts]
            colour, style = colours[method], LINESTYLES[k % len(LINESTYLES)]
            ax.plot(xs, [p.mean(primary) for p in pts], color=colour, ls=style, marker="o", ms=4)
            ax.fill_between(
                xs, [p.metrics[primary].min for p in pts], [p.metrics[primary].max for p in pts],
                color=colour, alpha=0.18, lw=0,
            )  # fmt: skip
            if view.unsteered and _finite(view.unsteered.mean(primary)):
                ax.axhline(view.unsteered.mean(primary), color="0.45", ls=style, lw=0.8)
            row = view.row(method)
            chosen = curve.at(row.strength) if row else None
            if chosen and _finite(chosen.mean(primary)):
                ax.plot(row.strength, chosen.mean(primary), marker="*", ms=15, color=colour,
                        mec="black", ls="none", zorder=5)  # fmt: skip
            if row and _finite(row.effect):
                ax.plot(row.strength, row.effect, marker="D", ms=7, mfc="none", mec=colour,
                        mew=1.8, ls="none", zorder=6)  # fmt: skip
        ax.set_title(_wrap(method), fontsize=10)
        ax.set_xlabel("strength (the method's own units)")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
        ax.grid(alpha=0.3)
    for ax in axes[len(methods) :]:
        ax.set_axis_off()
    for ax in axes[:: min(3, len(methods))]:
        ax.set_ylabel(f"{primary} on select\n({direction(higher)})")
    handles = [
        Line2D([], [], color="0.3", marker="o", ms=4, label="mean over seeds"),
        Patch(color="0.3", alpha=0.25, label="min-max over seeds"),
        Line2D([], [], color="0.45", lw=0.8, label="unsteered"),
        Line2D(
            [],
            [],
            marker="*",
            ms=13,
            color="0.5",
            mec="black",
            ls="none",
            label="operating point (chosen on select)",
        ),  # fmt: skip
        Line2D(
            [],
            [],
            marker="D",
            ms=7,
            mfc="none",
            mec="0.3",
            mew=1.8,
            ls="none",
            label="its test effect",
        ),  # fmt: skip
    ]
    if multi:
        handles += [
            Line2D([], [], color="0.3", ls=LINESTYLES[k % len(LINESTYLES)], label=f"run: {v.run}")
            for k, v in enumerate(views)
        ]
    columns = 4 if len(methods) >= 3 else 2  # a legend row must fit the figure's width
    fig.legend(handles=handles, loc="outside lower center", ncols=columns, fontsize=9)
    fig.suptitle(f"{task}: effect vs strength", fontsize=12)
    return fig


def pareto(points: Sequence[tuple[float, float]], x_higher: bool, y_higher: bool) -> list:
    """Non-dominated (x, y) points, sorted by x."""
    sx, sy = (1 if x_higher else -1), (1 if y_higher else -1)
    front = [
        (x, y)
        for x, y in points
        if not any(sx * a >= sx * x and sy * b >= sy * y and (a, b) != (x, y) for a, b in points)
    ]
    return sorted(set(front))


def fluency_figure(
    task: str, views: Sequence[TaskView], colours: Mapping[str, str]
) -> Figure | None:
    """Effect vs each fluency measure on select, every swept strength a point, each method's
    Pareto frontier drawn through its non-dominated points; None when the task does not generate."""
    present = [
        m for m in FLUENCY
        if any(_finite(p.mean(m)) for v in views for c in v.select.values() for p in c.points)
    ]  # fmt: skip
    if not present:
        return None
    fig, axes = _grid(len(present) + 1, 3, 4.2, 3.3, sharey=True)
    primary, y_higher = views[0].primary, views[0].higher.get(views[0].primary, True)
    methods = list(dict.fromkeys(m for v in views for m in v.select))
    for ax, metric in zip(axes, present):
        x_higher = views[0].higher.get(metric, metric.startswith("distinct"))
        for k, view in enumerate(views):
            marker = MARKERS[k % len(MARKERS)]
            for method in methods:
                curve = view.select.get(method)
                if curve is None:
                    continue
                pts = [
                    (_along(p, metric), p.mean(primary))
                    for p in curve.points
                    if not p.degenerate and _finite(_along(p, metric), p.mean(primary))
                ]
                if not pts:
                    continue
                ax.scatter(*zip(*pts), color=colours[method], marker=marker, s=26, alpha=0.85,
                           zorder=3)  # fmt: skip
                front = pareto(pts, x_higher, y_higher)
                ax.step(*zip(*front), where="pre" if x_higher else "post",
                        color=colours[method], lw=1.6, ls=LINESTYLES[k % len(LINESTYLES)])  # fmt: skip
            ref = view.unsteered
            if ref and _finite(_along(ref, metric), ref.mean(primary)):
                ax.plot(_along(ref, metric), ref.mean(primary), marker="*", ms=16,
                        color=UNSTEERED_COLOUR, mec="white", ls="none", zorder=6)  # fmt: skip
            limit = next(
                (r.perplexity_limit for r in view.rows if _finite(r.perplexity_limit)), None
            )
            if metric == "perplexity" and limit:
                ax.axvline(limit, color="0.35", ls=LINESTYLES[k % len(LINESTYLES)], lw=1)
        if metric == "perplexity":
            _log_axis(ax)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.set_xlabel(AXIS_LABELS.get(metric, metric))
        ax.grid(alpha=0.3)
    for ax in axes[:: min(3, len(axes))]:
        ax.set_ylabel(f"{primary} on select\n({direction(y_higher)})")
    budget = views[0].rows[0].budget if views[0].rows else None
    handles = [
        Line2D([], [], color=colours[m], marker="o", lw=1.6, label=_wrap(m)) for m in methods
    ]
    handles += [
        Line2D([], [], marker="*", ms=13, color=UNSTEERED_COLOUR, ls="none", label="unsteered"),
        Line2D(
            [],
            [],
            color="0.35",
            lw=1,
            label=f"fluency budget\n(perplexity x{budget:g} unsteered)"
            if budget
            else "fluency budget",
        ),  # fmt: skip
        Line2D([], [], color="0.3", lw=1.6, label="Pareto frontier\n(lines; points: strengths)"),
    ]
    if len(views) > 1:
        handles += [
            Line2D(
                [],
                [],
                color="0.3",
                marker=MARKERS[k % len(MARKERS)],
                ls=LINESTYLES[k % 4],
                label=f"run: {_wrap(v.run)}",
            )  # fmt: skip
            for k, v in enumerate(views)
        ]
    legend_ax = axes[len(present)]
    legend_ax.set_axis_off()
    legend_ax.legend(handles=handles, loc="center", fontsize=9, frameon=False)
    for ax in axes[len(present) + 1 :]:
        ax.set_axis_off()
    fig.suptitle(f"{task}: effect vs fluency (select split, mean over seeds)", fontsize=12)
    return fig


def vs_unsteered(row: Headline) -> tuple[float, float, float]:
    """(estimate, low, high) of the row's paired difference from unsteered; without per-example
    records, the difference of means with no interval."""
    found = row.uncertainty.vs_unsteered if row.uncertainty else None
    if found is not None:
        return found.estimate, found.low, found.high
    base = row.reference.mean(row.primary_metric) if row.reference else math.nan
    return row.effect - base, math.nan, math.nan


def overview_figure(
    tables: Mapping[str, Sequence[Sequence[Headline]]], colours: Mapping[str, str]
) -> Figure | None:
    """A forest plot: per suite, each method's test effect minus the unsteered model's, paired
    by example, with its 95% interval; 0 (no change) as a vertical line, the better direction
    to the right, the best per suite filled black, ties hollow."""
    tasks = [t for t, per_run in tables.items() if any(per_run)]
    if not tasks:
        return None
    points = max(sum(len(rows) for rows in tables[t]) for t in tasks)
    fig, axes = _grid(len(tasks), 3, 4.4, 0.45 * points + 1.2, sharey=False)
    multi = max(len(per_run) for per_run in tables.values()) > 1
    runs = list(
        dict.fromkeys(r.run for per_run in tables.values() for rows in per_run for r in rows)
    )
    markers = "osD^v"
    for ax, task in zip(axes, tasks):
        rows = [r for per_run in tables[task] for r in per_run]
        rows.sort(key=lambda r: list(colours).index(r.method))  # stable: runs stay in order
        labels = [f"{r.method} · {r.run}" if multi else r.method for r in rows]
        higher = rows[0].higher_is_better.get(rows[0].primary_metric, True)
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows):
            estimate, low, high = vs_unsteered(r)
            if not _finite(estimate):
                continue
            if _finite(low) and _finite(high):
                ax.plot([min(low, high), max(low, high)], [y, y], color=colours[r.method], lw=3)
            face = "black" if r.best else "white" if r.tied else colours[r.method]
            ax.plot(estimate, y, ls="none", marker=markers[runs.index(r.run) % len(markers)],
                    ms=10, mfc=face, mec="black" if (r.best or r.tied) else colours[r.method],
                    mew=1.5, zorder=5)  # fmt: skip
        ax.axvline(0, color="0.2", lw=1)
        if not higher:
            ax.invert_xaxis()  # real differences, better always to the right
        ax.set_yticks(ys, [_wrap(text, 24) for text in labels], fontsize=9)
        ax.set_ylim(-0.7, len(rows) - 0.3)
        better = "higher" if higher else "lower"
        ax.set_xlabel(f"Δ {rows[0].primary_metric} ({better} is better: →)")
        ax.set_title(task, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.grid(axis="x", alpha=0.3)
    for ax in axes[len(tasks) :]:
        ax.set_axis_off()
    handles = [
        Line2D([], [], color="0.2", lw=1, label="no change (unsteered)"),
        Line2D([], [], ls="none", marker="o", mfc="black", mec="black", label="best on suite"),
        Line2D([], [], ls="none", marker="o", mfc="white", mec="black", label="tied for best"),
    ]
    if multi:
        handles += [
            Line2D(
                [],
                [],
                ls="none",
                marker=markers[k % len(markers)],
                color="0.4",
                label=f"run: {run}",
            )  # fmt: skip
            for k, run in enumerate(runs)
        ]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=9)
    fig.suptitle("Δ vs unsteered on test, paired by example (95% CI)", fontsize=12)
    return fig


def save(fig: Figure, folder: Path, stem: str) -> tuple[Path, Path]:
    """Write `stem`.png and `stem`.svg (text kept as text, so the SVG is searchable and small).

    The layout is computed once for the PNG and then frozen, so the SVG has the same geometry
    and costs no second layout pass; metadata are fixed so reruns diff cleanly.
    """
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
    fig.savefig(png, format="png", dpi=DPI, metadata={"Software": None})
    fig.set_layout_engine("none")
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": stem}):
        fig.savefig(svg, format="svg", metadata={"Date": None, "Creator": None})
    return png, svg
