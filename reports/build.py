"""`build_report`: result files in, report.md + report.html + figures + summary.json out."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.fluency import definitions_note
from bench.records import Judgement
from bench.rundir import write_atomic
from bench.selection import RULES
from bench.stats import Interval
from reports import figures
from reports.headline import Headline, curves, difference_text, retained_text, unsteered
from reports.judgement import cell, effect_blocks
from reports.render import Block, Bullets, FigureBlock, Heading, Para, Table, html_page, markdown
from reports.runs import Run, load_runs
from reports.side_effects import side_effect_blocks
from reports.summary import run_summary, summary, write_summary


def fmt(value: float | None, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def times(value: float) -> str:
    return f"x{value:.2f}" if math.isfinite(value) else "–"


def _tokens(value: float, ratio: float | None = None) -> str:
    """Tokens per second; "–" for cells that generate nothing (log-likelihood suites)."""
    if not math.isfinite(value) or value == 0:
        return "–"
    return fmt(value) if ratio is None else f"{fmt(value)} ({times(ratio)})"


def _stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "task"


def _ci(value: float, found: Interval | None) -> str:
    """A value with its bootstrap interval over examples: "0.54 [0.41, 0.67]"."""
    if not math.isfinite(value):
        return "–"
    if found is None or not (math.isfinite(found.low) and math.isfinite(found.high)):
        return fmt(value)
    return f"{fmt(value)} [{fmt(found.low, 2)}, {fmt(found.high, 2)}]"


def _mark(row: Headline) -> str:
    return "★ " if row.best else "= " if row.tied else ""


def _perplexity(row: Headline) -> str:
    value = row.test.mean("perplexity") if row.test else math.nan
    if not math.isfinite(value):
        return "–"
    return f"{fmt(value)} ({times(row.perplexity_ratio)})"


def _rules_text(runs: Sequence[Run]) -> str:
    """How the runs chose their operating points, in words."""
    rules = dict.fromkeys(run.manifest.selection_rule for run in runs)
    text = " / ".join(RULES[r].description if r in RULES else r for r in rules)
    if any(RULES[r].standard_errors is not None for r in rules if r in RULES):
        text += (
            " (the standard error of its difference from the best, paired by example on "
            "select; strength 0, the unsteered model, where nothing beats it beyond the noise)"
        )
    return text


def _shrinkage(row: Headline) -> str:
    """The gain over unsteered where the strength was chosen, then on test: "+0.31 → +0.22"."""
    gains = [row.select_gain, row.test_gain]
    return " → ".join(f"{g:+.3g}" if math.isfinite(g) else "–" for g in gains)


def _judgement(judgement: Judgement | None) -> str:
    """Pairwise self-judgement accuracy [CI] (n), or why it is missing; "–" for other methods."""
    if judgement is None:
        return "–"
    return cell(judgement.pairwise, judgement.missing)


def headline_table(task: str, per_run: Sequence[Sequence[Headline]], runs: Sequence[Run]) -> Table:
    """Rows: per run, the unsteered reference, each method's operating point, skipped pairs."""
    multi = len(runs) > 1
    cap = any(run.capability for run in runs)  # the capability suite ran
    first = {r.method: r for r in per_run[0]} if per_run else {}
    # The self-judging methods' judgement of the suite: a column only where a run measured it.
    judged = any(row.judgement is not None for table in per_run for row in table)
    header = [
        "method",
        *(["run"] if multi else []),
        "strength",
        "gain select → test",
        "effect (test) [95% CI]",
        "Δ vs unsteered [CI] p",
        "Δ vs prompting [CI] p",
        "worse",
        *(["Δ vs " + runs[0].label] if multi else []),
        "perplexity (x unst.)",
        "distinct-2",
        "repetition",
        "s / cell (x unst. cell)",
        "tokens/s (x unst. cell)",
        *(["capability retained [95% CI]"] if cap else []),
        "fit s",
        *(["self-judgement [95% CI]"] if judged else []),
        "notes",
    ]
    rows, strong = [], set()
    for run, table in zip(runs, per_run):
        if not table:
            continue
        ref, primary = table[0].reference, table[0].primary_metric
        if ref is not None:
            known = table[0].uncertainty.reference if table[0].uncertainty else {}
            rows.append(
                (
                    "unsteered (reference)",
                    *([run.label] if multi else []),
                    "0",
                    "–",
                    _ci(ref.mean(primary), known.get(primary)),
                    "–",
                    "–",
                    "–",
                    *(["–"] if multi else []),
                    fmt(ref.mean("perplexity")),
                    fmt(ref.mean("distinct_2")),
                    fmt(ref.mean("repetition")),
                    fmt(ref.seconds.mean),
                    _tokens(ref.tokens_per_second.mean),
                    *(["100%"] if cap else []),
                    "–",
                    *(["–"] if judged else []),
                    "",
                )
            )
        for row in table:
            test, u = row.test, row.uncertainty
            delta = row.effect - (ref.mean(primary) if ref else math.nan)
            versus = row.effect - first[row.method].effect if row.method in first else math.nan
            steer = u.steerability if u else None
            if row.best or row.tied:
                strong.add(len(rows))
            rows.append(
                (
                    _mark(row) + row.method,
                    *([run.label] if multi else []),
                    fmt(row.strength),
                    _shrinkage(row),
                    _ci(row.effect, u.intervals.get(primary) if u else None)
                    if test
                    else "not measured",
                    difference_text(
                        u.vs_unsteered if u else None, u and u.adjusted.get("vs_unsteered"), delta
                    ),
                    difference_text(u.vs_prompting, u.adjusted.get("vs_prompting"), math.nan)
                    if u and u.vs_prompting
                    else "–",
                    f"{steer.share_worse:.0%}"
                    if steer and math.isfinite(steer.share_worse)
                    else "–",
                    *([f"{versus:+.3g}" if math.isfinite(versus) else "–"] if multi else []),
                    _perplexity(row),
                    fmt(test.mean("distinct_2")) if test else "–",
                    fmt(test.mean("repetition")) if test else "–",
                    f"{fmt(test.seconds.mean)} ({times(row.cost_ratio('seconds'))})"
                    if test
                    else "–",
                    _tokens(test.tokens_per_second.mean, row.cost_ratio("tokens_per_second"))
                    if test
                    else "–",
                    *([retained_text(row.capability)] if cap else []),
                    fmt(row.fit_seconds),
                    *([_judgement(row.judgement)] if judged else []),
                    "; ".join(row.notes),
                )
            )
    for run in runs:  # a method that could not run on the suite is still a visible row
        for entry in run.skipped:
            if entry.task == task:
                blanks = ["–"] * (len(header) - 2 - multi)
                rows.append(
                    (
                        entry.method,
                        *([run.label] if multi else []),
                        *blanks,
                        f"skipped: {entry.reason}",
                    )  # fmt: skip
                )
    numeric = frozenset(i for i, h in enumerate(header) if h not in ("method", "run", "notes"))
    return Table(tuple(header), tuple(rows), frozenset(strong), numeric)


def _when(epoch: Any) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "–"


def _power_note(per_run: Sequence[Sequence[Headline]]) -> str:
    """What differences the suite's test split can detect (paired vs unsteered, 80 % power)."""
    found = [
        (row.uncertainty.steerability.mde, row.uncertainty.vs_unsteered.n)
        for rows in per_run
        for row in rows
        if row.uncertainty
        and row.uncertainty.steerability
        and row.uncertainty.vs_unsteered
        and math.isfinite(row.uncertainty.steerability.mde)
        and row.uncertainty.steerability.mde > 0
    ]
    if not found:
        return ""
    mdes = sorted(m for m, _ in found)
    n = max(k for _, k in found)
    widths = sorted(
        row.uncertainty.intervals[row.primary_metric].half_width
        for rows in per_run
        for row in rows
        if row.uncertainty
        and row.primary_metric in row.uncertainty.intervals
        and math.isfinite(row.uncertainty.intervals[row.primary_metric].half_width)
    )
    width = (
        f" The effect's 95% intervals are ±{fmt(widths[len(widths) // 2], 2)} wide (median "
        f"half-width; {fmt(widths[0], 2)} to {fmt(widths[-1], 2)})."
        if widths
        else ""
    )
    return (
        f"Power: with {n} test examples, a paired difference from the unsteered model smaller "
        f"than {fmt(mdes[len(mdes) // 2], 2)} (median over methods; {fmt(mdes[0], 2)} to "
        f"{fmt(mdes[-1], 2)}) is detected less than 80% of the time at the 5% level." + width
    )


def metadata_blocks(run: Run) -> list[Block]:
    m, model = run.manifest, run.manifest.model
    experiment = m.experiment
    wall = m.wall_seconds
    facts = [
        ("run directory", str(run.root)),
        ("status", m.status or "unknown"),
        ("model", model.name or "–"),
        ("model fingerprint", model.fingerprint or "–"),
        ("architecture", f"{model.type or '–'}, {model.n_layers or '–'} layers"),
        ("perplexity evaluator", m.evaluator or "–"),
        ("seeds", ", ".join(str(s) for s in m.seeds) or "–"),
        ("started", _when(m.started)),
        ("wall time", f"{wall:.1f} s" if isinstance(wall, (int, float)) else "–"),
        ("git", m.git or "–"),
        ("experiment file", m.experiment_file or "(built-in default)"),
        (
            "generation",
            ", ".join(f"{k}={v}" for k, v in (experiment.get("generation") or {}).items()),
        ),
        (
            "selection",
            ", ".join(f"{k}={v}" for k, v in (experiment.get("selection") or {}).items()),
        ),
        ("perplexity cap", str(experiment.get("perplexity_cap", "–"))),
        ("versions", ", ".join(f"{k} {v}" for k, v in m.packages.items() if v)),
    ]
    blocks: list[Block] = [
        Heading(3, f"Run: {run.label}"),
        Table(("", "value"), tuple(facts)),
    ]
    params = {t.get("name"): t.get("params") or {} for t in experiment.get("tasks") or []}
    task_rows = []
    for task in m.tasks:
        name, scorers = task.name, task.scorers
        source = task.source or ", ".join(f"{k}={v}" for k, v in params.get(name, {}).items())
        task_rows.append(
            (
                name,
                source or "task defaults (source not recorded in this run)",
                "; ".join(f"{k}: {v}" for k, v in scorers.items()) or "built into the task",
            )
        )
    if task_rows:
        blocks.append(Table(("suite", "data", "scorers"), tuple(task_rows)))
    methods = [f"{e.label} ({e.name}): strengths {list(e.strengths)}" for e in m.methods]
    if methods:
        blocks.append(Bullets(tuple(methods)))
    if run.skipped:
        blocks.append(
            Bullets(tuple(f"skipped {s.method} on {s.task}: {s.reason}" for s in run.skipped))
        )
    return blocks


def _views(runs: Sequence[Run], tables: Mapping[str, list], task: str) -> list[figures.TaskView]:
    views = []
    for run, rows in zip(runs, tables[task]):
        if task not in run.tasks:
            continue
        primary = rows[0].primary_metric if rows else ""
        directions = dict(rows[0].higher_is_better) if rows else {}
        select = curves(run, task, "select")
        if select and primary:
            views.append(
                figures.TaskView(
                    run.label, primary, directions, select, unsteered(run, task, "select"), rows
                )
            )
    return views


def build_report(
    run_dirs: list[Path], output: Path | None = None, *, fluency_budget: float | None = None
) -> Path:
    """Write the report of one run (or a side-by-side comparison of several); returns report.md.

    `fluency_budget` (perplexity <= budget x unsteered) re-chooses every operating point on
    `select`; None keeps the runner's own choice.
    """
    if fluency_budget is not None and not fluency_budget >= 1:
        raise UserError(f"fluency budget must be >= 1 (got {fluency_budget})")
    runs = load_runs([Path(p) for p in run_dirs])
    out = Path(output) if output is not None else runs[0].root / "report"
    fig_dir = out / "figures"
    entries, tables = [], {}
    for run in runs:
        entry, per_task = run_summary(run, fluency_budget)
        entries.append(entry)
        for task, rows in zip(run.tasks, per_task):
            tables.setdefault(task, [[] for _ in runs])[runs.index(run)] = rows
    colours = figures.palette([m for run in runs for m in run.methods])
    title = "steerbench report: " + " vs ".join(r.label for r in runs)
    budget_text = (
        f"perplexity within x{fluency_budget:g} of the unsteered model (re-applied by the report)"
        if fluency_budget is not None
        else "perplexity within "
        + ", ".join(f"x{r.budget:g}" for r in runs)
        + " of the unsteered model, as chosen by the run"
    )
    blocks: list[Block] = [Heading(1, title)]
    blocks.append(
        Para(
            "Each method's operating point is chosen on the select split among the strengths "
            f"within the fluency budget ({budget_text}; the geometric mean of the samples' "
            "perplexity ratios, the ratio the perplexity column shows), by "
            + _rules_text(runs)
            + '. "gain select → test" is the effect\'s gain over the unsteered model where '
            "the strength was chosen and on test: a test gain below the select gain is the "
            "optimism of choosing on select. The table reports the operating point on the test "
            "split: the mean over seeds with its 95% bootstrap interval over the test examples "
            "(each example with all its seeds). Δ columns are paired by example: the method's "
            "effect minus the unsteered model's and minus the prompting baseline's, with their "
            "95% intervals and p-values (sign-flip permutation test; Holm-corrected over every "
            "comparison in the suite's table; a derived effect such as the CounterFact score has "
            'an interval only). "worse" is the share of test examples the operating point '
            "moved the wrong way (anti-steerable; for a derived effect, by the mean of its parts "
            "per example). ★ marks the best test effect among methods "
            "that beat the unsteered model when its paired interval against each of them "
            "excludes 0; otherwise = marks those it cannot be told from. Costs are per cell (one "
            "pass over the split) with the ratio to the unsteered cell, run at another time on "
            "a possibly busy machine; `steerbench bench` measures steering cost side by side."
        )
    )
    blocks.append(Para(definitions_note()))
    for run in runs:
        for warning in run.warnings:
            blocks.append(Para(f"Warning ({run.label}): {warning}", emphasis=True))
    overview = figures.overview_figure(tables, colours)
    if overview is not None:
        png, svg = figures.save(overview, fig_dir, "overview")
        blocks.append(
            FigureBlock(
                png,
                svg,
                "Operating points per suite",
                "Each method's test effect minus the unsteered model's, paired by example, with "
                "its 95% bootstrap interval; right is better; filled black = best, hollow = tied.",
            )
        )
    blocks.extend(effect_blocks(tables, colours, fig_dir))
    for task, per_run in tables.items():
        blocks.append(Heading(2, f"Suite: {task}"))
        if not any(per_run):
            blocks.append(
                Para("No method ran on this suite (see skipped pairs below).", emphasis=True)
            )
            continue
        primary = next(rows[0].primary_metric for rows in per_run if rows)
        blocks.append(Para(f"Effect metric: {primary}."))
        blocks.append(headline_table(task, per_run, runs))
        power = _power_note(per_run)
        if power:
            blocks.append(Para(power))
        views = _views(runs, tables, task)
        if not views:
            continue
        stem = _stem(task)
        png, svg = figures.save(
            figures.strength_figure(task, views, colours), fig_dir, f"{stem}_strength"
        )
        blocks.append(
            FigureBlock(
                png,
                svg,
                f"{task}: effect vs strength",
                "Effect on select vs strength, one panel per method (strengths are in each "
                "method's own units); line = mean over seeds, band = min-max over seeds, star = "
                "chosen operating point, hollow diamond = its test effect.",
            )
        )
        fluency = figures.fluency_figure(task, views, colours)
        if fluency is None:
            blocks.append(
                Para("This suite does not generate text: no fluency measures.", emphasis=True)
            )
        else:
            png, svg = figures.save(fluency, fig_dir, f"{stem}_fluency")
            blocks.append(
                FigureBlock(
                    png,
                    svg,
                    f"{task}: effect vs fluency",
                    "Effect vs each fluency measure on select (one point per swept strength, "
                    "mean over seeds); lines = each method's Pareto frontier, black star = "
                    "unsteered model, vertical line = fluency budget.",
                )
            )
    blocks.extend(side_effect_blocks(runs, tables))
    blocks.append(Heading(2, "Run metadata"))
    for run in runs:
        blocks.extend(metadata_blocks(run))
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / "report.md", markdown(blocks, out))
    write_atomic(out / "report.html", html_page(blocks, title))
    write_summary(out / "summary.json", summary(entries, fluency_budget))
    return out / "report.md"
