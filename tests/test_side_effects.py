"""Side effects across suites: each method's state fitted for one suite, at that suite's
operating point, scored on every other suite's primary metric; a matrix per method in the
report."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest

from bench.config import Experiment, GenerationConfig, MethodSpec, TaskSpec
from bench.registry import TASKS
from bench.rundir import RunDir
from bench.runner import Runner
from reports.build import build_report
from reports.runs import load_run
from tests.toy_task import ToyTask


class Preference(ToyTask):
    """The toy suite judged on its log-likelihood preference."""

    name = "toy_preference"
    primary_metric = "prefers_great"


@pytest.fixture(autouse=True)
def toys_registered():
    with TASKS.registered(ToyTask), TASKS.registered(Preference):
        yield


@pytest.fixture
def strongest(monkeypatch):
    """Every operating point at the strongest swept strength, whatever the tiny random model's
    effects: the side effects must use the chosen point, whichever it is."""
    import bench.runner

    real = bench.runner.choose_strength

    def choose(method, task, cells, *args, **kwargs):
        return replace(
            real(method, task, cells, *args, **kwargs), strength=max(c.strength for c in cells)
        )

    monkeypatch.setattr(bench.runner, "choose_strength", choose)


def _run(tmp_path, gpt2_subject, side_effects: bool) -> Runner:
    exp = Experiment(
        output_dir=str(tmp_path / "run"),
        generation=GenerationConfig(max_new_tokens=4, batch_size=8),
        methods=(MethodSpec(name="caa", strengths=(30.0,), params={"layer": 1}),),
        tasks=(
            TaskSpec(name="toy_preference", params={"n": 3, "samples": 1}),
            TaskSpec(name="toy", params={"n": 3, "samples": 1}),
        ),
        side_effects=side_effects,
    )
    runner = Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False)
    runner.run()
    return runner


def test_each_operating_point_is_scored_on_every_other_suite(tmp_path, gpt2_subject, strongest):
    runner = _run(tmp_path, gpt2_subject, side_effects=True)
    chosen = {c.task: c.strength for c in runner.selection}
    assert chosen == {"toy_preference": 30.0, "toy": 30.0}
    steered = {source for source, strength in chosen.items() if strength}
    effects = json.loads((tmp_path / "run" / "side_effects.json").read_text())
    assert {(e["fitted_for"], e["scored_on"]) for e in effects} == {
        (source, other) for source in steered for other in chosen if other != source
    }
    for effect in effects:
        assert effect["strength"] == chosen[effect["fitted_for"]]
        assert (
            effect["primary_metric"]
            == {"toy": "great_rate", "toy_preference": "prefers_great"}[effect["scored_on"]]
        )
        assert effect["n_examples"] == 3 and math.isfinite(effect["value"])
        assert effect["seeds"] == [0] and len(effect["cells"]) == 1
        # Paired by example against the unsteered model on the same examples and seeds.
        found = effect["difference"]
        assert found["estimate"] == pytest.approx(effect["value"] - effect["unsteered"])
        assert found["low"] <= found["estimate"] <= found["high"] and found["n"] == 3
    # The side-effect cells are cells of their own, beside (not among) the run's cells.
    side = tmp_path / "run" / "side_effects"
    items = (side / "records.jsonl").read_text().splitlines()
    assert len(items) == 3 * len(effects)
    assert len((side / "cells.jsonl").read_text().splitlines()) == len(effects)
    assert gpt2_subject.attachments == 0

    run = load_run(tmp_path / "run")
    assert len(run.side_effects) == len(effects)
    assert all(c.id not in {e["cells"][0] for e in effects} for c in run.cells)
    text = build_report([tmp_path / "run"]).read_text()
    assert "## Side effects across suites" in text
    header = next(line for line in text.splitlines() if line.startswith("| state fitted for"))
    assert "toy_preference: prefers_great ↑" in header and "toy: great_rate ↑" in header
    row = next(line for line in text.splitlines() if line.startswith("| toy_preference (30)"))
    assert "(own)" in row
    # Each entry is the steered mean minus the unsteered model's on the scored suite's test,
    # with its interval.
    cells = [c for c in run.cells if c.task == "toy" and c.split == "test" and c.strength == 0]
    base = sum(c.metrics["great_rate"] for c in cells) / len(cells)
    value = next(e["value"] for e in effects if e["scored_on"] == "toy")
    assert row.split("|")[3].strip().startswith(f"{value - base:+.3g} [")


def test_a_rerun_resumes_the_side_effect_cells(tmp_path, gpt2_subject, strongest, monkeypatch):
    """Side-effect cells are finished cells like any: a re-run into the folder computes none of
    them again (nor any other cell) and writes the same records."""
    _run(tmp_path, gpt2_subject, side_effects=True)
    first = (tmp_path / "run" / "side_effects.json").read_text()
    import bench.runner

    def fails(*args, **kwargs):
        raise AssertionError("a finished cell was evaluated again")

    monkeypatch.setattr(bench.runner, "evaluate_shard", fails)
    _run(tmp_path, gpt2_subject, side_effects=True)
    assert (tmp_path / "run" / "side_effects.json").read_text() == first


def test_no_side_effects_unless_asked(tmp_path, gpt2_subject):
    _run(tmp_path, gpt2_subject, side_effects=False)
    assert not (tmp_path / "run" / "side_effects.json").exists()
    assert "Side effects across suites" not in build_report([tmp_path / "run"]).read_text()
