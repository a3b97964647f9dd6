"""`steerbench check`: exit codes, tolerances, JUnit XML and the JSON verdict, on the recorded run."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.cli import main
from reports.runs import load_run
from reports.summary import run_summary, summary, write_summary
from tests.test_reports import copy_run, read_cells, write_cells

SENTIMENT = ("toy_sentiment", "meandiff")


def chosen_strength(run: Path, task: str, method: str) -> float:
    selection = json.loads((run / "selection.json").read_text())
    return next(s["strength"] for s in selection if (s["task"], s["method"]) == (task, method))


def shift(run: Path, task: str, method: str, metric: str, by: float = 0.0, scale: float = 1.0):
    """Change a metric in the test cells of a method's operating point (an injected change; at
    strength 0 that is the shared unsteered cell)."""
    strength = chosen_strength(run, task, method)
    stored = "unsteered" if strength == 0.0 else method
    cells = read_cells(run)
    hit = set()
    for c in cells:
        if (c["task"], c["method"], c["split"], c["strength"]) == (task, stored, "test", strength):
            c["metrics"][metric] = c["metrics"][metric] * scale + by
            hit.add(c["id"])
    assert len(hit) == 2  # both seeds
    write_cells(run, cells)
    # The same change in every example's score: the mean moves by as much.
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    for record in records:
        if record["cell"] in hit and record["scores"].get(metric) is not None:
            record["scores"][metric] = record["scores"][metric] * scale + by
    (run / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def without_examples(baseline: Path) -> None:
    """A baseline summary without per-example values: the check compares means."""
    data = json.loads(baseline.read_text())
    for row in data["runs"][0]["rows"]:
        row["per_example"] = None
    baseline.write_text(json.dumps(data))


@pytest.fixture
def setup(tmp_path) -> tuple[Path, Path]:
    """A run and a baseline written from it with --update-baseline."""
    run = copy_run(tmp_path)
    baseline = tmp_path / "ci" / "baseline.json"
    assert main(["check", str(run), "--baseline", str(baseline), "--update-baseline"]) == 0
    return run, baseline


def check(run: Path, baseline: Path, *extra: str) -> tuple[int, dict]:
    verdict = run.parent / "verdict.json"
    code = main(["check", str(run), "--baseline", str(baseline), "--json", str(verdict), *extra])
    return code, json.loads(verdict.read_text()) if verdict.exists() else {}


def status(verdict: dict, task: str, method: str, metric: str) -> str:
    return next(
        r["status"]
        for r in verdict["results"]
        if (r["task"], r["method"], r["metric"]) == (task, method, metric)
    )


def test_update_baseline_writes_the_runs_summary(setup, capsys):
    run, baseline = setup
    data = json.loads(baseline.read_text())
    assert data["schema"] == "steerbench.summary" and data["version"] == 1
    assert len(data["runs"]) == 1 and len(data["runs"][0]["rows"]) == 5
    shift(run, *SENTIMENT, "positive_rate", by=-0.2)  # deliberately accept a change
    assert main(["check", str(run), "--baseline", str(baseline), "--update-baseline"]) == 0
    assert "baseline written" in capsys.readouterr().out
    assert check(run, baseline)[0] == 0
    manifest = json.loads((run / "manifest.json").read_text())
    (run / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    assert main(["check", str(run), "--baseline", str(baseline), "--update-baseline"]) == 2


def test_unchanged_rerun_holds(setup, capsys):
    run, baseline = setup
    code, verdict = check(run, baseline)
    assert code == 0 and verdict["verdict"] == "pass"
    rows = json.loads(baseline.read_text())["runs"][0]["rows"]
    every_metric = sum(len(r["metrics"]) for r in rows)  # each metric of each row
    assert verdict["counts"]["held"] == len(verdict["results"]) == every_metric
    assert "check PASS" in capsys.readouterr().out


def test_injected_regression_fails_and_is_named(setup, capsys):
    run, baseline = setup
    shift(run, *SENTIMENT, "positive_rate", by=-0.2)
    code, verdict = check(run, baseline)
    assert code == 1 and verdict["verdict"] == "fail"
    assert status(verdict, *SENTIMENT, "positive_rate") == "regressed"
    assert verdict["counts"]["regressed"] == 1
    out = capsys.readouterr().out
    assert "REGRESSED  toy_sentiment" in out and "check FAIL: 1 regressed" in out
    # The first line of the table (after the header) is the regression.
    assert out.splitlines()[2].startswith("REGRESSED")


def test_improvement_passes(setup):
    run, baseline = setup
    shift(run, *SENTIMENT, "positive_rate", by=0.5)
    code, verdict = check(run, baseline)
    assert code == 0 and status(verdict, *SENTIMENT, "positive_rate") == "improved"


def test_lower_is_better_metrics_are_direction_aware(setup, tmp_path):
    run, baseline = setup
    shift(run, *SENTIMENT, "perplexity", scale=1.5)  # +50% perplexity: worse
    code, verdict = check(run, baseline)
    assert code == 1 and status(verdict, *SENTIMENT, "perplexity") == "regressed"
    better = copy_run(tmp_path / "b")
    shift(better, *SENTIMENT, "perplexity", scale=0.2)  # -80%: better
    code, verdict = check(better, baseline)
    assert code == 0 and status(verdict, *SENTIMENT, "perplexity") == "improved"


def test_tolerances_absolute_relative_and_default(setup):
    run, baseline = setup
    shift(run, *SENTIMENT, "positive_rate", by=-0.2)
    assert check(run, baseline, "--tolerance", "positive_rate=0.25")[0] == 0
    # Relative: 0.41 -> 0.21 is a 49% drop, beyond 40%.
    assert check(run, baseline, "--tolerance", "positive_rate=40%")[0] == 1
    # `*` sets every metric's tolerance; 0 means any change counts.
    fresh = copy_run(run.parent / "fresh")
    shift(fresh, *SENTIMENT, "distinct_1", by=-0.01)
    assert check(fresh, baseline)[0] == 0  # within the 0.05 default
    code, verdict = check(fresh, baseline, "--tolerance", "*=0")
    assert code == 1 and status(verdict, *SENTIMENT, "distinct_1") == "regressed"


def test_seed_noise_widens_default_tolerances_only(setup):
    run, baseline = setup
    # Seed spread of prompting's toy_sentiment perplexity is large (sd 4.8 over 2 seeds), so a
    # +30% change is within the seed-noise band by default but not under an explicit 10%.
    # (Means compared: a baseline without per-example values.)
    without_examples(baseline)
    shift(run, "toy_sentiment", "prompting", "perplexity", scale=1.3)
    code, verdict = check(run, baseline)
    assert code == 0 and status(verdict, "toy_sentiment", "prompting", "perplexity") == "held"
    assert check(run, baseline, "--tolerance", "perplexity=10%")[0] == 1


def test_paired_check_sees_a_consistent_change_that_seed_noise_hides(setup):
    """Every example 30% more perplexed: across seeds that is noise-sized, example by example
    it is not; a change below the tolerance is held however consistent."""
    run, baseline = setup
    shift(run, "toy_sentiment", "prompting", "perplexity", scale=1.3)
    code, verdict = check(run, baseline)
    found = next(
        r
        for r in verdict["results"]
        if (r["task"], r["method"], r["metric"]) == ("toy_sentiment", "prompting", "perplexity")
    )
    assert code == 1 and found["status"] == "regressed" and "(paired)" in found["tolerance"]
    assert 0 < found["power"] <= 1 and "power" in found["detail"]
    small = copy_run(run.parent / "small")
    shift(small, "toy_sentiment", "prompting", "perplexity", scale=1.05)  # within 10%
    assert status(check(small, baseline)[1], "toy_sentiment", "prompting", "perplexity") == "held"


def test_missing_method_suite_and_degenerate_fail(setup, tmp_path):
    run, baseline = setup
    write_cells(run, [c for c in read_cells(run) if c["task"] != "toy_preference"])
    code, verdict = check(run, baseline)
    assert code == 1 and status(verdict, "toy_preference", "meandiff", "(row)") == "missing"
    broken = copy_run(tmp_path / "broken")
    strength = chosen_strength(broken, *SENTIMENT)
    cells = read_cells(broken)
    for c in cells:
        if (c["task"], c["method"], c["split"], c["strength"]) == (*SENTIMENT, "test", strength):
            c["degenerate"] = True
    write_cells(broken, cells)
    code, verdict = check(broken, baseline)
    assert code == 1 and status(verdict, *SENTIMENT, "(row)") == "regressed"


def test_new_method_suite_is_reported_not_failed(setup):
    run, baseline = setup
    data = json.loads(baseline.read_text())
    data["runs"][0]["rows"] = [r for r in data["runs"][0]["rows"] if r["task"] != "toy_toxicity"]
    baseline.write_text(json.dumps(data))
    code, verdict = check(run, baseline)
    assert code == 0 and verdict["counts"]["new"] == 2


def test_junit_xml_has_the_required_structure(setup, tmp_path):
    run, baseline = setup
    shift(run, *SENTIMENT, "positive_rate", by=-0.2)
    junit = tmp_path / "junit.xml"
    assert main(["check", str(run), "--baseline", str(baseline), "--junit", str(junit)]) == 1
    root = ET.parse(junit).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert {s.get("name") for s in suites} == {
        "steerbench.toy_sentiment",
        "steerbench.toy_toxicity",
        "steerbench.toy_preference",
    }
    total = failures = 0
    for suite in suites:
        cases = suite.findall("testcase")
        failed = [c for c in cases if c.find("failure") is not None]
        assert int(suite.get("tests")) == len(cases) and int(suite.get("failures")) == len(failed)
        assert suite.get("errors") == "0" and suite.get("skipped") == "0"
        for case in cases:
            assert case.get("classname", "").startswith("steerbench.") and case.get("name")
            for failure in case.findall("failure"):
                assert failure.get("message") and failure.get("type") == "regressed"
        total, failures = total + len(cases), failures + len(failed)
    assert (int(root.get("tests")), int(root.get("failures"))) == (total, failures)
    rows = json.loads(baseline.read_text())["runs"][0]["rows"]
    assert failures == 1 and total == sum(len(r["metrics"]) for r in rows)  # one case a metric
    failing = root.find(".//testcase[failure]")
    assert failing.get("classname") == "steerbench.toy_sentiment.meandiff"
    assert failing.get("name") == "positive_rate"


def test_baseline_may_be_a_run_directory(tmp_path):
    base, run = copy_run(tmp_path / "a"), copy_run(tmp_path / "b")
    assert check(run, base)[0] == 0
    shift(run, *SENTIMENT, "positive_rate", by=-0.2)
    assert check(run, base)[0] == 1


def test_stored_summary_is_used_only_while_it_matches_the_results(setup):
    run, baseline = setup
    stored = run / "report" / "summary.json"  # what build_report writes, without the figures
    write_summary(stored, summary([run_summary(load_run(run))[0]], None))
    data = json.loads(stored.read_text())
    for r in data["runs"][0]["rows"]:  # tamper with the stored numbers only
        if (r["task"], r["method"]) == SENTIMENT:
            r["metrics"]["positive_rate"]["mean"] = -1.0
            values = r["per_example"]["metrics"]["positive_rate"]
            r["per_example"]["metrics"]["positive_rate"] = [v - 1.0 for v in values]
    stored.write_text(json.dumps(data))
    assert check(run, baseline)[0] == 1  # the matching stored summary is what gets checked
    shift(run, "toy_toxicity", "meandiff", "distinct_1", by=-0.001)  # results change: stale
    assert check(run, baseline)[0] == 0  # rebuilt from the result files


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('{"schema": "other"}', "not a steerbench summary"),
        ('{"schema": "steerbench.summary", "version": 99, "runs": []}', "summary version 99"),
        ('{"schema": "steerbench.summary", "version": 1, "runs": []}', "has no runs"),
        (
            '{"schema": "steerbench.summary", "version": 1, "runs": [{"rows": [{"task": "t"}]}]}',
            "needs task, method and metrics",
        ),
        (
            '{"schema": "steerbench.summary", "version": 1, "runs": [{"rows": []}, {"rows": []}]}',
            "holds 2 runs",
        ),
    ],
)
def test_unusable_baseline_exits_2(tmp_path, capsys, content, message):
    run = copy_run(tmp_path)
    baseline = tmp_path / "baseline.json"
    baseline.write_text(content)
    assert main(["check", str(run), "--baseline", str(baseline)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("steerbench: error:") and message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--baseline", "{base}", "--tolerance", "perplexity"], "expected METRIC=VALUE"),
        (["--baseline", "{base}", "--tolerance", "perplexity=abc"], "not a number"),
        (["--baseline", "{base}", "--tolerance", "perplexity=-1"], ">= 0"),
        ([], "needs --baseline"),
        (["--baseline", "{missing}"], "baseline not found"),
    ],
)
def test_bad_arguments_exit_2(setup, capsys, argv, message):
    run, baseline = setup
    argv = [a.format(base=baseline, missing=baseline.parent / "nope.json") for a in argv]
    assert main(["check", str(run), *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_stored_summary_without_per_example_values_is_rebuilt(setup):
    """An older report's summary.json cannot pair examples: the check rebuilds from the files."""
    run, baseline = setup
    stored = run / "report" / "summary.json"
    write_summary(stored, summary([run_summary(load_run(run))[0]], None))
    data = json.loads(stored.read_text())
    for r in data["runs"][0]["rows"]:
        del r["per_example"]
        if (r["task"], r["method"]) == SENTIMENT:
            r["metrics"]["positive_rate"]["mean"] = -1.0  # would fail if it were used
    stored.write_text(json.dumps(data))
    code, verdict = check(run, baseline)
    assert code == 0 and status(verdict, *SENTIMENT, "positive_rate") == "held"
