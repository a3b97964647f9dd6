"""`summary.json`: the headline numbers, machine-readable and versioned.

Schema (`"schema": "steerbench.summary"`, `"version": 1`):

    {
      "schema": "steerbench.summary", "version": 1, "created": ISO-8601, "steerbench": version,
      "fluency_budget": null | float,        # null: each run's own choice (selection.json)
      "runs": [{
        "label", "run_dir", "status", "model": {...}, "git", "seeds", "wall_seconds",
        "fluency_budget": float,              # the budget the operating points were chosen under
        "selection_rule": str,                # how they were chosen (bench.selection.RULES)
        "inputs_digest": str,                 # hash of cells.jsonl + selection.json
        "rows": [{
          "task", "method", "method_name", "primary_metric", "strength", "select_effect",
          "select_gain", "test_gain",           # gain over unsteered where chosen, and on test
          "perplexity_ratio",                   # geometric mean of the samples' ratios, test
          "reason", "best", "tied", "measured_on_test", "degenerate", "n_seeds", "n_examples",
          "metrics":   {name: {"mean", "std", "min", "max", "n",      # over seeds, on test
                               "ci_low", "ci_high", "ci_level",       # bootstrap over examples
                               "higher_is_better"}},
                   # with the capability suite, also "capability_retained" (one lm-eval
                   # measurement, its interval over lm-eval's items; the check compares it)
          "unsteered": {name: {...same...}},   # the unsteered model on test
          "vs_unsteered" | "vs_prompting": null | {"estimate", "ci_low", "ci_high", "ci_level",
                   "p_value", "p_holm", "n_examples"},   # primary metric, paired by example
          "steerability": null | {"anti_steerable", "minimum_detectable_difference",
                   "per_example"},                     # per-example change vs unsteered
          "per_example": null | {"examples": [id], "metrics": {name: [value]}},
                   # each test example's seed-mean at the operating point (the paired check)
          "cost": {"seconds", "tokens_per_second", "seconds_ratio", "tokens_per_second_ratio",
                   "fit_seconds"},
          "notes": [str]
        }],
        "skipped": [{"method", "task", "reason"}],
        "capability": [Capability],            # bench.capability records (lm-eval per task)
        "side_effects": [SideEffect]           # bench.side_effects records
      }]
    }

Non-finite numbers are written as null (JSON has no NaN).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.rundir import to_json
from bench.stats import Difference, Interval
from reports.headline import Headline, Point, headlines
from reports.runs import Run

SCHEMA = "steerbench.summary"
VERSION = 1


def _version() -> str | None:
    try:
        return metadata.version("steerbench")
    except metadata.PackageNotFoundError:
        return None


def _metrics(
    point: Point | None, directions: Mapping[str, bool], intervals: Mapping[str, Interval]
) -> dict:
    if point is None:
        return {}
    return {
        name: {
            **stat.to_dict(),
            **_interval(intervals.get(name)),
            "higher_is_better": directions.get(name),
        }
        for name, stat in point.metrics.items()
    }


def _capability(row: Headline) -> dict:
    """Capability retained at the operating point, as a metric the check compares like the
    others: one lm-eval measurement (no spread over seeds) with its interval over items."""
    value, found = row.capability
    if not math.isfinite(value):
        return {}
    stat = {"mean": value, "std": None, "min": value, "max": value, "n": 1}
    return {"capability_retained": {**stat, **_interval(found), "higher_is_better": True}}


def _interval(found: Interval | None) -> dict:
    """The bootstrap interval over examples (null where the run kept no examples)."""
    if found is None:
        return {"ci_low": None, "ci_high": None, "ci_level": None}
    return {"ci_low": found.low, "ci_high": found.high, "ci_level": found.level}


def _difference(found: Difference | None, adjusted: float | None) -> dict | None:
    if found is None:
        return None
    return {
        "estimate": found.estimate,
        "ci_low": found.low,
        "ci_high": found.high,
        "ci_level": found.level,
        "p_value": found.p_value,
        "p_holm": adjusted,
        "n_examples": found.n,
    }


def _uncertainty(row: Headline) -> dict:
    u = row.uncertainty
    if u is None:
        return {
            "vs_unsteered": None,
            "vs_prompting": None,
            "steerability": None,
            "per_example": None,
        }
    examples, values = u.per_example
    steer = u.steerability
    return {
        "vs_unsteered": _difference(u.vs_unsteered, u.adjusted.get("vs_unsteered")),
        "vs_prompting": _difference(u.vs_prompting, u.adjusted.get("vs_prompting")),
        "steerability": None
        if steer is None
        else {
            "anti_steerable": steer.share_worse,
            "minimum_detectable_difference": steer.mde,
            "per_example": list(steer.differences),
        },
        "per_example": {
            "examples": list(examples),
            "metrics": {k: list(v) for k, v in values.items()},
        },
    }


def row_dict(row: Headline) -> dict:
    test, u = row.test, row.uncertainty
    return {
        "task": row.task,
        "method": row.method,
        "method_name": row.method_name,
        "primary_metric": row.primary_metric,
        "strength": row.strength,
        "select_effect": row.select_effect,
        "select_gain": row.select_gain,
        "test_gain": row.test_gain,
        "perplexity_ratio": row.perplexity_ratio,
        "reason": row.reason,
        "best": row.best,
        "tied": row.tied,
        "measured_on_test": test is not None,
        "degenerate": bool(test and test.degenerate),
        "n_seeds": test.seeds if test else 0,
        "n_examples": test.n_examples if test else 0,
        "metrics": {
            **_metrics(test, row.higher_is_better, u.intervals if u else {}),
            **_capability(row),
        },
        "unsteered": _metrics(row.reference, row.higher_is_better, u.reference if u else {}),
        **_uncertainty(row),
        "cost": {
            "seconds": test.seconds.mean if test else math.nan,
            "tokens_per_second": test.tokens_per_second.mean if test else math.nan,
            "seconds_ratio": row.cost_ratio("seconds"),
            "tokens_per_second_ratio": row.cost_ratio("tokens_per_second"),
            "fit_seconds": row.fit_seconds,
        },
        "notes": list(row.notes),
    }


def run_summary(run: Run, budget: float | None = None) -> tuple[dict, list[list[Headline]]]:
    """One run's summary entry and its headline rows per task."""
    tables = [headlines(run, task, budget) for task in run.tasks]
    entry = {
        "label": run.label,
        "run_dir": str(run.root),
        "status": run.manifest.status,
        "model": dataclasses.asdict(run.manifest.model),
        "git": run.manifest.git,
        "seeds": list(run.manifest.seeds),
        "wall_seconds": run.manifest.wall_seconds,
        "fluency_budget": budget if budget is not None else run.budget,
        "selection_rule": run.manifest.selection_rule,
        "inputs_digest": run.digest,
        "rows": [row_dict(row) for rows in tables for row in rows],
        "skipped": [s.to_dict() for s in run.skipped],
        "capability": [c.to_dict() for c in run.capability],
        "side_effects": [e.to_dict() for e in run.side_effects],
    }
    return entry, tables


def summary(entries: list[dict], budget: float | None) -> dict:
    return to_json(
        {
            "schema": SCHEMA,
            "version": VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "steerbench": _version(),
            "fluency_budget": budget,
            "runs": entries,
        }
    )


def validate(data: Any, where: str) -> dict:
    """A summary's structure, checked enough that the check can trust it (else UserError)."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UserError(f'{where}: not a steerbench summary (no "schema": "{SCHEMA}")')
    if data.get("version") != VERSION:
        raise UserError(f"{where}: summary version {data.get('version')!r}, expected {VERSION}")
    runs = data.get("runs")
    if not isinstance(runs, list) or not runs:
        raise UserError(f"{where}: summary has no runs")
    for i, run in enumerate(runs):
        rows = run.get("rows") if isinstance(run, dict) else None
        if not isinstance(rows, list):
            raise UserError(f"{where}: runs[{i}].rows must be a list")
        for j, row in enumerate(rows):
            ok = (
                isinstance(row, dict)
                and isinstance(row.get("task"), str)
                and isinstance(row.get("method"), str)
                and isinstance(row.get("metrics"), dict)
                and all(isinstance(v, dict) and "mean" in v for v in row["metrics"].values())
            )
            if not ok:
                raise UserError(
                    f"{where}: runs[{i}].rows[{j}] needs task, method and metrics {{name: {{mean}}}}"
                )
    return data


def read_summary(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read ({error})") from None
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None
    return validate(data, str(path))


def write_summary(path: Path, data: dict) -> None:
    from bench.rundir import write_atomic

    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")
