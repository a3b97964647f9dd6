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
