"""The main job: `steerbench run` with no arguments, on the built-in testbed, end to end.

Slow: builds the testbed (once per test session, into the session's cache) and runs every
registered method on every suite. This is the command the README gives a newcomer.
"""

from __future__ import annotations

import json

import pytest

from bench.cli import main
from bench.registry import METHODS, TASKS

pytestmark = pytest.mark.slow


def test_default_run_covers_every_method_and_suite_and_writes_the_report(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "-q"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "default"
    assert f"results: {run_dir.relative_to(tmp_path)}" in out and "report:" in out
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["model"]["name"].startswith("testbed")
    cells = [json.loads(line) for line in (run_dir / "cells.jsonl").read_text().splitlines()]
    skipped = {(s["method"], s["task"]) for s in json.loads((run_dir / "skipped.json").read_text())}
    ran = {(c["method"], c["task"]) for c in cells if c["method"] != "unsteered"}
    assert ran | skipped == {(m, t) for m in METHODS.names() for t in TASKS.names()}
    # The unsteered model: one cell per suite, split and seed, shared by every method's sweep.
    unsteered = [(c["task"], c["split"], c["seed"]) for c in cells if c["method"] == "unsteered"]
    assert len(unsteered) == len(set(unsteered)) == len(TASKS.names()) * 2 * len(manifest["seeds"])
    # Every method runs on every suite whose target it can use; the suites fill every family.
    assert not skipped, skipped
    assert not any(c["degenerate"] for c in cells if c["strength"] == 0.0)
    assert (run_dir / "report" / "report.md").exists() or (run_dir / "report.md").exists()
    # What steering costs: capability retained at every operating point (the testbed's own
    # lm-eval tasks, with intervals), and each steered point scored on every other suite.
    selection = json.loads((run_dir / "selection.json").read_text())
    capability = json.loads((run_dir / "capability.json").read_text())
    measured = {(c["method"], c["task"], c["strength"]) for c in capability}
    assert {(c["method"], c["task"], c["strength"]) for c in selection} <= measured
    assert all(set(c["scores"]) == {f"testbed_{t}" for t in ("facts", "grammar", "reading",
               "text")} for c in capability)  # fmt: skip
    steered = [c for c in capability if c["strength"]]
    assert steered and all(c["interval"] is not None for c in steered)
    effects = json.loads((run_dir / "side_effects.json").read_text())
    points = {(c["method"], c["task"]) for c in selection if c["strength"]}
    assert {(e["method"], e["fitted_for"], e["scored_on"]) for e in effects} == {
        (m, t, other) for m, t in points for other in TASKS.names() if other != t
    }
    report = next(
        p for p in (run_dir / "report" / "report.md", run_dir / "report.md") if p.exists()
    )
    text = report.read_text()
    assert "capability retained [95% CI]" in text and "## Side effects across suites" in text
    # SelfControl and the prefix controller climb the model's own judgement: measured per suite.
    judged = json.loads((run_dir / "judgement.json").read_text())
    assert {j["task"] for j in judged} == set(TASKS.names())
    assert all({"selfcontrol", "prefix"} <= set(j["methods"]) for j in judged)
    assert "self-judgement [95% CI]" in text
