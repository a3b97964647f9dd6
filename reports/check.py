"""`steerbench check RUN --baseline BASELINE`: the CI regression check on headline numbers.

For every method x suite of the baseline, each metric at the operating point (the test-split
mean over seeds: the effect, the task's other metrics, and the fluency measures) is compared
with the run's, direction-aware:

- worse by more than the tolerance  -> regressed   (exit 1)
- better by more than the tolerance -> improved
- otherwise                         -> held
- in the baseline but not in the run (method x suite, metric, or test measurement) -> missing
  (exit 1); degenerate in the run but not in the baseline -> regressed.

Default tolerances (override per metric with `--tolerance METRIC=VALUE`, VALUE absolute like
`0.05` or relative like `10%`; `*=VALUE` sets the default for every metric):

- perplexity: 10% relative;
- metrics whose baseline and run values both lie in [0, 1] (rates, accuracies, distinct-n,
  repetition): 0.05 absolute;
- any other metric: 10% relative;
- and never tighter than the seed noise: 2 x sqrt(sd_base^2 / n_base + sd_run^2 / n_run), the
  ~95% band of a difference of two seed means (only for defaults; explicit values are exact).

Where both sides carry per-example values (a run directory, or a summary.json written by this
version: each row keeps every test example's seed-mean), a metric is compared example by example
instead: the change's 95% paired bootstrap interval must exclude 0 on the worse side AND the
change must exceed the tolerance for "regressed" (likewise for "improved"); the detail prints
the power the comparison had to detect a change as large as the tolerance. Derived metrics
(no per-example values) and older baselines fall back to the comparison of means above.

Costs (seconds, tokens/s) are not compared: they measure the machine as much as the method.
Exit codes: 0 pass, 1 regression or missing, 2 unusable input (UserError, mapped by the CLI).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.errors import UserError
from bench.rundir import to_json, write_atomic
from bench.stats import paired_difference, power_of
from reports.junit import junit_xml
from reports.runs import load_run
from reports.summary import read_summary, run_summary, summary, write_summary

PAIRED_LEVEL = 0.95
PAIRED_RESAMPLES = 2000
ABSOLUTE_DEFAULT = 0.05
RELATIVE_DEFAULT = 0.10
NOISE_Z = 2.0
FAILING = ("regressed", "missing")


@dataclass(frozen=True)
class Tolerance:
    value: float
    relative: bool

    @staticmethod
    def parse(text: str, where: str) -> Tolerance:
        raw = text.strip()
        relative = raw.endswith("%")
        try:
            value = float(raw[:-1] if relative else raw)
        except ValueError:
            raise UserError(
                f"{where}: tolerance '{text}' is not a number or a percentage"
            ) from None
        if not math.isfinite(value) or value < 0:
            raise UserError(f"{where}: tolerance must be a finite value >= 0 (got '{text}')")
        return Tolerance(value / 100 if relative else value, relative)

    def allowed(self, baseline: float) -> float:
        return self.value * abs(baseline) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value * 100:g}%" if self.relative else f"{self.value:g}"


def parse_tolerances(items: Sequence[str]) -> dict[str, Tolerance]:
    tolerances = {}
    for item in items:
        metric, sep, value = item.partition("=")
        if not sep or not metric.strip():
            raise UserError(f"--tolerance '{item}': expected METRIC=VALUE (e.g. perplexity=10%)")
        tolerances[metric.strip()] = Tolerance.parse(value, f"--tolerance {metric.strip()}")
    return tolerances


def default_tolerance(metric: str, base: float, run: float) -> Tolerance:
    if metric == "perplexity":
        return Tolerance(RELATIVE_DEFAULT, True)
    if 0.0 <= base <= 1.0 and 0.0 <= run <= 1.0:
        return Tolerance(ABSOLUTE_DEFAULT, False)
    return Tolerance(RELATIVE_DEFAULT, True)


def _num(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else math.nan
    )


def seed_noise(base: Mapping[str, Any], run: Mapping[str, Any]) -> float:
    """Half-width of the ~95% band for a difference of two seed means (0 with one seed each)."""
    var = 0.0
    for stat in (base, run):
        sd, n = _num(stat.get("std")), _num(stat.get("n"))
        if math.isfinite(sd) and n >= 1:
            var += sd * sd / n
    return NOISE_Z * math.sqrt(var)


@dataclass(frozen=True)
class Result:
    task: str
    method: str
    metric: str
    status: str  # regressed | improved | held | missing | new
    baseline: float
    run: float
    delta: float
    tolerance: str  # as shown, e.g. "0.05", "10%", "0.05 (seed noise 0.08)"
    higher_is_better: bool | None
    detail: str
    # Compared example by example: the power to detect a change as large as the tolerance.
    power: float | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILING


def paired_values(base_row: Mapping, run_row: Mapping, metric: str) -> tuple | None:
    """Both sides' per-example values of `metric` on the test examples they share."""
    sides = []
    for row in (base_row, run_row):
        found = row.get("per_example") or {}
        values = (found.get("metrics") or {}).get(metric)
        if not values:
            return None
        sides.append(dict(zip(found.get("examples") or [], values)))
    shared = [
        e for e in sides[0] if e in sides[1] and _finite(sides[0][e]) and _finite(sides[1][e])
    ]
    if len(shared) < 2:
        return None
    base = np.array([sides[0][e] for e in shared], dtype=float)[:, None]
    run = np.array([sides[1][e] for e in shared], dtype=float)[:, None]
    return base, run


def _finite(value: Any) -> bool:
    return math.isfinite(_num(value))


def compare_paired(common: dict, higher, allowed: float, shown: str, base, run) -> Result:
    """Regressed only when the paired interval of the change excludes 0 on the worse side and
    the change is larger than the tolerance; improved likewise; else held."""
    found = paired_difference(run, base, level=PAIRED_LEVEL, n_resamples=PAIRED_RESAMPLES)
    sign = -1.0 if higher is False else 1.0
    gain, low, high = sign * found.estimate, *sorted((sign * found.low, sign * found.high))
    diffs = (run - base)[:, 0]
    sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
    power = power_of(allowed, sd, found.n) if math.isfinite(sd) and sd > 0 else 1.0
    if higher is None:
        worse = (low > 0 or high < 0) and abs(gain) > allowed
        status = "regressed" if worse else "held"
    elif high < 0 and gain < -allowed:
        status = "regressed"
    elif low > 0 and gain > allowed:
        status = "improved"
    else:
        status = "held"
    direction = {True: "higher", False: "lower", None: "no direction: any change"}[higher]
    detail = (
        f"{common['baseline']:.4g} -> {common['run']:.4g}; paired over {found.n} examples: change "
        f"{found.estimate:+.3g} [{found.low:+.3g}, {found.high:+.3g}] ({direction} is better); "
        f"tolerance ±{allowed:.3g}; power {power:.0%} to detect a change of that size"
    )
    return Result(**common, status=status, delta=common["run"] - common["baseline"],
                  tolerance=f"{shown} (paired)", higher_is_better=higher, detail=detail,
                  power=power)  # fmt: skip


def compare_metric(
    task, method, metric, base_stat, run_stat, explicit, paired: tuple | None = None
) -> Result:
    """One metric of one row. With both sides' per-example values the comparison is paired by
    example (`compare_paired`); without them, the means are compared within the tolerance
    widened to the seed noise."""
    base, run = _num(base_stat.get("mean")), _num(run_stat.get("mean") if run_stat else None)
    higher = base_stat.get("higher_is_better")
    if higher is None and run_stat:
        higher = run_stat.get("higher_is_better")
    common = dict(task=task, method=method, metric=metric, baseline=base, run=run)
    if not math.isfinite(base):
        status = "new" if math.isfinite(run) else "held"
        return Result(**common, status=status, delta=math.nan, tolerance="–",
                      higher_is_better=higher, detail="no baseline value")  # fmt: skip
    if not math.isfinite(run):
        return Result(**common, status="missing", delta=math.nan, tolerance="–",
                      higher_is_better=higher, detail="no value in the run")  # fmt: skip
    tol = explicit.get(metric) or explicit.get("*")
    if paired is not None:
        tol = tol or default_tolerance(metric, base, run)
        return compare_paired(common, higher, tol.allowed(base), str(tol), *paired)
    if tol is not None:
        allowed, shown = tol.allowed(base), str(tol)
    else:
        tol = default_tolerance(metric, base, run)
        noise = seed_noise(base_stat, run_stat)
        allowed = max(tol.allowed(base), noise)
        shown = str(tol) if noise <= tol.allowed(base) else f"{tol} (seed noise {noise:.3g})"
    delta = run - base
    gain = delta if higher in (True, None) else -delta
    if higher is None:  # no direction known: any change beyond tolerance counts against
        status = "regressed" if abs(delta) > allowed else "held"
    else:
        status = "regressed" if gain < -allowed else "improved" if gain > allowed else "held"
    detail = f"{base:.4g} -> {run:.4g} (allowed ±{allowed:.3g}, {'higher' if higher else 'lower'} is better)"
    return Result(**common, status=status, delta=delta, tolerance=shown, higher_is_better=higher,
                  detail=detail)  # fmt: skip


def compare(base_run: Mapping, run: Mapping, explicit: Mapping[str, Tolerance]) -> list[Result]:
    rows = {(r["task"], r["method"]): r for r in run.get("rows", [])}
    results = []
    for base in base_run.get("rows", []):
        key = (base["task"], base["method"])
        found = rows.pop(key, None)
        if found is None:
            results.append(Result(*key, "(row)", "missing", math.nan, math.nan, math.nan, "–",
                                  None, "method x suite not in the run"))  # fmt: skip
            continue
        if base.get("measured_on_test", True) and not found.get("measured_on_test", True):
            results.append(Result(*key, "(row)", "missing", math.nan, math.nan, math.nan, "–",
                                  None, "operating point not measured on test in the run"))  # fmt: skip
        if found.get("degenerate") and not base.get("degenerate"):
            results.append(Result(*key, "(row)", "regressed", math.nan, math.nan, math.nan, "–",
                                  None, "operating point degenerate (NaN/inf) in the run"))  # fmt: skip
        for metric, stat in base.get("metrics", {}).items():
            paired = paired_values(base, found, metric)
            results.append(
                compare_metric(*key, metric, stat, found["metrics"].get(metric), explicit, paired)
            )
    for key in rows:
        results.append(Result(*key, "(row)", "new", math.nan, math.nan, math.nan, "–", None,
                              "method x suite not in the baseline"))  # fmt: skip
    return results


def single_run(data: Mapping, where: str) -> Mapping:
    runs = data["runs"]
    if len(runs) != 1:
        raise UserError(f"{where}: summary holds {len(runs)} runs; the check needs one run")
    return runs[0]


def run_entry(path: Path) -> Mapping:
    """The headline numbers of RUN_DIR: its report/summary.json when it matches the result
    files (same inputs digest, the run's own budget), else rebuilt from the result files."""
    if path.is_file():
        return single_run(read_summary(path), str(path))
    run = load_run(path)
    stored = path / "report" / "summary.json"
    if stored.exists():
        try:
            data = read_summary(stored)
        except UserError:
            data = None
        if (
            data
            and data.get("fluency_budget") is None
            and len(data["runs"]) >= 1
            and data["runs"][0].get("inputs_digest") == run.digest
            # written by a version that keeps per-example values (else: rebuild, for pairing)
            and all("per_example" in row for row in data["runs"][0].get("rows", []))
        ):
            return data["runs"][0]
    return to_json(run_summary(run)[0])


def baseline_entry(path: Path) -> Mapping:
    if path.is_dir():
        return run_entry(path)
    if not path.exists():
        raise UserError(f"baseline not found: {path} (create one with --update-baseline)")
    return single_run(read_summary(path), str(path))


def _fmt(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "–"


def table(results: Sequence[Result]) -> str:
    order = {"regressed": 0, "missing": 1, "improved": 2, "new": 3, "held": 4}
    rows = sorted(results, key=lambda r: (order[r.status], r.task, r.method, r.metric))
    header = ("status", "suite", "method", "metric", "baseline", "run", "delta", "tolerance")
    body = [
        (
            r.status.upper() if r.failed else r.status,
            r.task,
            r.method,
            r.metric,
            _fmt(r.baseline),
            _fmt(r.run),
            f"{r.delta:+.4g}" if math.isfinite(r.delta) else "–",
            r.tolerance,
        )  # fmt: skip
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)) for line in (header, *body)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdict(results: Sequence[Result]) -> dict:
    counts = Counter(r.status for r in results)
    failed = any(r.failed for r in results)
    return {
        "schema": "steerbench.check",
        "version": 1,
        "verdict": "fail" if failed else "pass",
        "exit_code": 1 if failed else 0,
        "counts": {
            s: counts.get(s, 0) for s in ("regressed", "missing", "improved", "held", "new")
        },
        "results": [asdict(r) for r in results],
    }


def run_check(args: argparse.Namespace) -> int:
    """Compare args.run_dir with args.baseline; 0 pass, 1 regression/missing (2 via UserError)."""
    explicit = parse_tolerances(getattr(args, "tolerance", None) or [])
    run_path = Path(args.run_dir)
    if not run_path.exists():
        raise UserError(f"run not found: {run_path}")
    if not args.baseline:
        raise UserError("check needs --baseline FILE (a summary.json or a run directory)")
    baseline_path = Path(args.baseline)
    run = run_entry(run_path)
    if getattr(args, "update_baseline", False):
        if baseline_path.is_dir():
            raise UserError(f"--update-baseline writes a file; {baseline_path} is a directory")
        if run.get("status") not in ("complete", None):
            raise UserError(
                f"{run_path}: run status is '{run.get('status')}'; finish the run (run it again "
                "to resume) before making it the baseline"
            )
        write_summary(baseline_path, summary([dict(run)], None))
        print(f"baseline written: {baseline_path} ({len(run.get('rows', []))} method x suite rows)")
        return 0
    results = compare(baseline_entry(baseline_path), run, explicit)
    outcome = verdict(results)
    print(table(results))
    counts = outcome["counts"]
    print(
        f"\ncheck {outcome['verdict'].upper()}: {counts['regressed']} regressed, "
        f"{counts['missing']} missing, {counts['improved']} improved, {counts['held']} held, "
        f"{counts['new']} new (baseline {baseline_path})"
    )
    outcome.update(run=str(run_path), baseline=str(baseline_path),
                   tolerances={k: str(v) for k, v in explicit.items()})  # fmt: skip
    if getattr(args, "json_out", None):
        text = json.dumps(to_json(outcome), indent=2, sort_keys=True, allow_nan=False) + "\n"
        if args.json_out == "-":
            sys.stdout.write(text)
        else:
            write_atomic(Path(args.json_out), text)
    if getattr(args, "junit", None):
        write_atomic(
            Path(args.junit), junit_xml(results, run_label=str(run.get("label", run_path)))
        )
    return outcome["exit_code"]
