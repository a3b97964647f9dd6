"""The capability suite: lm-eval tasks through lm-eval's evaluator at each operating point."""

from __future__ import annotations

import json
import math
import re
from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="lm_eval is not installed")

from bench.capability import (  # noqa: E402
    Capability,
    CapabilityRun,
    OwnTasks,
    TaskScore,
    capability_record,
    resolve,
    retained,
)
from bench.config import (  # noqa: E402
    CapabilityConfig,
    Experiment,
    GenerationConfig,
    MethodSpec,
    TaskSpec,
)
from bench.errors import UserError  # noqa: E402
from bench.params import parse  # noqa: E402
from bench.registry import TASKS  # noqa: E402
from bench.rundir import RunDir, read_json  # noqa: E402
from bench.runner import Runner  # noqa: E402
from tasks.testbed.lm_eval_tasks import write_tasks  # noqa: E402
from tests.test_lm_eval_model import TINY_TASKS  # noqa: E402
from tests.toy_task import ToyTask  # noqa: E402

LM_EVAL_TASKS = ("testbed_facts", "testbed_grammar")


@pytest.fixture(autouse=True)
def toy_registered():
    with TASKS.registered(ToyTask):
        yield


def _experiment(tmp_path, **capability) -> Experiment:
    write_tasks(tmp_path / "lm_eval", TINY_TASKS)
    config = CapabilityConfig(
        tasks=LM_EVAL_TASKS,
        include_path=str(tmp_path / "lm_eval"),
        include_defaults=False,
        **capability,
    )
    return Experiment(
        output_dir=str(tmp_path / "run"),
        generation=GenerationConfig(max_new_tokens=4, batch_size=8),
        methods=(
            MethodSpec(name="prompting", strengths=(1.0,)),
            MethodSpec(name="caa", strengths=(8.0,), params={"layer": 1}),
        ),
        tasks=(TaskSpec(name="toy", params={"n": 2, "samples": 1}),),
        capability=config,
    )


def _records(tmp_path) -> list[Capability]:
    data = read_json(tmp_path / "run" / "capability.json")
    return [Capability.from_dict(r, "capability.json") for r in data]


def _items(tmp_path) -> list[dict]:
    lines = (tmp_path / "run" / "capability_items.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


N_ITEMS = sum(len(TINY_TASKS[t]["test"]) for t in LM_EVAL_TASKS)


def test_capability_retained_at_each_operating_point(tmp_path, gpt2_subject):
    exp = _experiment(tmp_path)
    runner = Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False)
    runner.run()
    records = _records(tmp_path)
    chosen = {(c.method, c.task): c.strength for c in runner.selection}
    assert {(r.method, r.task, r.strength) for r in records} == {
        (m, t, s) for (m, t), s in chosen.items()
    }
    for record in records:
        assert set(record.scores) == set(LM_EVAL_TASKS)
        assert record.metrics == {t: "acc,none" for t in LM_EVAL_TASKS}
    # lm-eval's per-item scores are kept (here the unsteered model's at least).
    unsteered = [i for i in _items(tmp_path) if i["method"] == "unsteered"]
    assert len(unsteered) == N_ITEMS and {"doc_id", "acc", "lm_eval_task"} <= set(unsteered[0])
    assert gpt2_subject.attachments == 0


def test_a_capability_budget_keeps_only_strengths_that_retain_it(tmp_path, gpt2_subject):
    """With a budget, capability is measured at every strength swept on select; the chosen
    strengths retain the budget, and every steered record agrees with its items."""
    exp = _experiment(tmp_path, budget=0.99)
    runner = Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False)
    runner.run()
    records, items = _records(tmp_path), _items(tmp_path)
    assert {(r.method, r.strength) for r in records} == {
        ("prompting", 0.0),
        ("prompting", 1.0),
        ("caa", 0.0),
        ("caa", 8.0),
    }
    for choice in runner.selection:
        record = runner.capability.records[(choice.method, choice.task, choice.strength)]
        assert record.capability_retained >= 0.99
    for record in records:
        assert record.capability_retained == pytest.approx(
            sum(record.retained.values()) / len(LM_EVAL_TASKS)
        )
        for task in LM_EVAL_TASKS:
            if record.unsteered[task]:
                assert record.retained[task] == pytest.approx(
                    record.scores[task] / record.unsteered[task]
                )
        if record.strength:
            mine = [
                i for i in items if (i["method"], i["strength"]) == (record.method, record.strength)
            ]
            assert len(mine) == N_ITEMS
            for task in LM_EVAL_TASKS:
                accs = [i["acc"] for i in mine if i["lm_eval_task"] == task]
                assert sum(accs) / len(accs) == pytest.approx(record.scores[task])
    # Some steered strength costs capability, so the budget really excluded a candidate.
    assert min(r.capability_retained for r in records) < 0.99


def test_the_headline_table_gains_a_capability_column(tmp_path, gpt2_subject):
    from reports.build import build_report
    from reports.headline import headlines
    from reports.runs import load_run

    exp = _experiment(tmp_path, budget=0.99)
    Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False).run()
    run = load_run(tmp_path / "run")
    rows = {row.method: row for row in headlines(run, "toy")}
    for row in rows.values():
        found = run.capability_at(row.method, "toy", row.strength)
        assert row.capability_retained == (found.capability_retained if row.strength else 1.0)
    text = build_report([tmp_path / "run"]).read_text()
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert "capability retained" in header
    # A run without the capability suite has no such column.
    off = CapabilityConfig(tasks=())
    plain = Experiment(**{**vars(exp), "capability": off, "output_dir": str(tmp_path / "plain")})
    Runner(plain, gpt2_subject, RunDir(plain.output_dir), progress=False).run()
    assert "capability retained" not in build_report([tmp_path / "plain"]).read_text()


def test_retained_is_oriented_so_that_below_one_is_a_loss():
    assert retained(TaskScore("acc", 0.4, True), TaskScore("acc", 0.8, True)) == 0.5
    assert retained(TaskScore("ppl", 20.0, False), TaskScore("ppl", 10.0, False)) == 0.5
    assert retained(TaskScore("acc", 0.0, True), TaskScore("acc", 0.0, True)) == 1.0
    assert math.isinf(retained(TaskScore("acc", 0.5, True), TaskScore("acc", 0.0, True)))


@pytest.mark.parametrize(
    "data, message",
    [
        ({"tasks": ["a"], "limit": 0}, "limit must be at least 1"),
        ({"tasks": ["a"], "budget": 1.5}, "budget must be a number in (0, 1]"),
        ({"tasks": ["a"], "num_fewshot": -1}, "num_fewshot must be >= 0"),
        ({"task": ["a"]}, "unknown key 'capability.task'"),
    ],
)
def test_bad_capability_config_is_a_one_line_error(data, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse(CapabilityConfig, data, "capability")


def test_tasks_model_names_the_model_sources_own_tasks():
    own = OwnTasks(("testbed_facts", "testbed_text"), "/own")
    default = CapabilityConfig()  # tasks = ["model"]
    # Only the model's own tasks: lm-eval's built-in index (seconds to build) is not needed.
    assert resolve(default, own) == CapabilityConfig(
        tasks=("testbed_facts", "testbed_text"), include_path=("/own",), include_defaults=False
    )
    # A hub model names none: nothing left to run, the suite is off (the CLI warns).
    assert resolve(default, None) is None
    # Named tasks and the model's own together; the user's folders first.
    mixed = CapabilityConfig(tasks=("hellaswag", "model"), include_path="/mine")
    assert resolve(mixed, own).tasks == ("hellaswag", "testbed_facts", "testbed_text")
    assert resolve(mixed, own).include_paths == ("/mine", "/own")
    assert resolve(mixed, own).include_defaults is True  # hellaswag is lm-eval's
    explicit = CapabilityConfig(tasks=("model",), include_defaults=True)
    assert resolve(explicit, own).include_defaults is True
    assert resolve(CapabilityConfig(tasks=("hellaswag",)), own).include_paths == ()
    # tasks = [] turns it off, whatever the model names.
    assert parse(CapabilityConfig, {"tasks": []}, "capability").tasks == ()
    assert resolve(CapabilityConfig(tasks=()), own) is None


def _run_of(acc: dict[str, list[float]], ppl: list[tuple[float, float]] | None = None):
    """A CapabilityRun from per-item values: accuracies per task, and a perplexity task's
    (log-likelihood, words) items."""
    scores = {t: TaskScore("acc,none", sum(v) / len(v), True, "mean") for t, v in acc.items()}
    items = {t: tuple({"doc_id": i, "acc": x} for i, x in enumerate(v)) for t, v in acc.items()}
    if ppl is not None:
        value = math.exp(-sum(ll for ll, _ in ppl) / sum(w for _, w in ppl))
        scores["text"] = TaskScore("word_perplexity,none", value, False, "weighted_perplexity")
        items["text"] = tuple(
            {"doc_id": i, "word_perplexity": [ll, w]} for i, (ll, w) in enumerate(ppl)
        )
    return CapabilityRun(scores, items)


def test_capability_retained_has_a_paired_interval_over_items():
    rng = np.random.default_rng(0)
    base = rng.random(200) < 0.8
    lost = base & (rng.random(200) < 0.25)  # a quarter of the right answers lost
    ppl = [(-float(w) * 2.0, float(w)) for w in rng.integers(5, 20, 200)]
    worse = [(ll * 1.1, w) for ll, w in ppl]
    unsteered = _run_of({"qa": base.astype(float).tolist()}, ppl)
    steered = _run_of({"qa": (base & ~lost).astype(float).tolist()}, worse)
    record = capability_record("caa", "toy", 4.0, steered, unsteered)
    # The estimate is lm-eval's own aggregate ratio; the interval brackets it.
    ratio_qa = steered.scores["qa"].value / unsteered.scores["qa"].value
    ratio_text = unsteered.scores["text"].value / steered.scores["text"].value
    assert record.retained["qa"] == pytest.approx(ratio_qa)
    assert record.retained["text"] == pytest.approx(ratio_text)
    assert record.interval.estimate == pytest.approx(record.capability_retained)
    assert record.interval.low < record.capability_retained < record.interval.high < 1.0
    for task in ("qa", "text"):
        found = record.intervals[task]
        assert found.low - 1e-12 <= record.retained[task] <= found.high + 1e-12  # rounding
    # Paired by item: the same loss on the same items is a tight interval; one on other items
    # (unpaired, as if two draws of items) would be about as wide as the scores' own spread.
    assert record.intervals["qa"].half_width < 0.1
    # The unsteered model against itself: exactly 1, no width.
    same = capability_record("unsteered", "", 0.0, unsteered, unsteered)
    assert (same.interval.low, same.interval.high) == (1.0, 1.0)
    # A metric lm-eval aggregates otherwise (F1) has its ratio but no interval.
    odd = _run_of({"qa": base.astype(float).tolist()})
    odd = CapabilityRun({"qa": replace(odd.scores["qa"], aggregation="f1")}, odd.items)
    assert capability_record("caa", "toy", 4.0, odd, odd).interval is None


def test_a_rerun_reuses_the_lm_eval_evaluations(tmp_path, gpt2_subject, monkeypatch):
    """Each lm-eval evaluation is kept in the run folder by content: a second run into it (a
    resume) runs lm-eval for none of them, and reports the same records."""
    import bench.capability_suite as suite

    exp = _experiment(tmp_path)
    Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False).run()
    first = (tmp_path / "run" / "capability.json").read_text()
    stored = list((tmp_path / "run" / "capability").glob("*.json"))
    assert len(stored) == 1 + sum(1 for r in _records(tmp_path) if r.strength)

    def fails(*args, **kwargs):
        raise AssertionError("lm-eval ran again")

    monkeypatch.setattr(suite, "evaluate_capability", fails)
    Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False).run()
    assert (tmp_path / "run" / "capability.json").read_text() == first
    # A damaged one is moved aside and computed again.
    stored[0].write_text("{")
    monkeypatch.undo()
    with pytest.warns(UserWarning, match="does not read back"):
        Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False).run()
    assert (tmp_path / "run" / "capability.json").read_text() == first
    assert stored[0].with_name(stored[0].name + ".corrupt").exists()


def test_an_unknown_lm_eval_task_is_a_user_error(tmp_path, gpt2_subject):
    from bench.capability import evaluate_capability
    from bench.lm_eval_model import Steering

    write_tasks(tmp_path, TINY_TASKS)
    config = CapabilityConfig(
        tasks=("testbed_fact",), include_path=str(tmp_path), include_defaults=False
    )
    with pytest.raises(UserError, match="lm-eval knows no task 'testbed_fact'"):
        evaluate_capability(gpt2_subject, Steering(), config)


def test_an_evaluation_outside_a_git_repository_prints_nothing(
    tmp_path, gpt2_subject, monkeypatch, capfd
):
    """lm-eval asks git for the working folder's commit; outside a repository git's "fatal:
    not a git repository" went to the terminal at every evaluation."""
    from bench.capability import evaluate_capability
    from bench.lm_eval_model import Steering

    write_tasks(tmp_path / "tasks", TINY_TASKS)
    config = CapabilityConfig(
        tasks=("testbed_grammar",), include_path=str(tmp_path / "tasks"), include_defaults=False
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    capfd.readouterr()
    run = evaluate_capability(gpt2_subject, Steering(), config)
    assert run is not None and run.scores["testbed_grammar"].value >= 0
    assert "git" not in capfd.readouterr().err


def test_a_missing_include_path_fails_before_the_model_loads(tmp_path, capsys):
    from bench.cli import main

    experiment = tmp_path / "exp.toml"
    experiment.write_text(
        f'output_dir = "{tmp_path / "run"}"\n[model]\nname = "{tmp_path / "no-model"}"\n'
        f'[capability]\ntasks = ["testbed_facts"]\ninclude_path = "{tmp_path / "nowhere"}"\n'
    )
    assert main(["run", str(experiment), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "capability.include_path" in err and "is not a folder" in err
    assert len(err.splitlines()) == 1


def test_summary_and_check_carry_capability(tmp_path, gpt2_subject, monkeypatch, capsys):
    """summary.json rows carry capability retained (with its interval) as a metric, the runs
    carry the records, and `steerbench check` compares it like any metric."""
    import bench.runner
    from bench.cli import main
    from reports.build import build_report

    real = bench.runner.choose_strength

    def strongest(method, task, cells, *args, **kwargs):  # a steered operating point
        choice = real(method, task, cells, *args, **kwargs)
        return replace(choice, strength=max(c.strength for c in cells))

    monkeypatch.setattr(bench.runner, "choose_strength", strongest)
    exp = _experiment(tmp_path)
    Runner(exp, gpt2_subject, RunDir(exp.output_dir), progress=False).run()
    build_report([tmp_path / "run"])
    data = json.loads((tmp_path / "run" / "report" / "summary.json").read_text())
    entry = data["runs"][0]
    records = {(r.method, r.strength): r for r in _records(tmp_path)}
    assert len(entry["capability"]) == len(records)
    assert all(row["strength"] for row in entry["rows"])
    for row in entry["rows"]:
        stat = row["metrics"]["capability_retained"]
        record = records[(row["method"], row["strength"])]
        assert stat["mean"] == pytest.approx(record.capability_retained)
        assert stat["higher_is_better"] is True and stat["ci_level"] == 0.95
        # (3 items a task here: a resample without a right unsteered answer has no ratio, and
        # the interval is then left open: null; the interval itself is tested above.)
        if stat["ci_low"] is not None:
            assert stat["ci_low"] <= stat["mean"] <= stat["ci_high"]
    # Against itself the check passes; against a baseline that retained far more, it fails
    # naming capability_retained.
    assert main(["check", str(tmp_path / "run"), "--baseline", str(tmp_path / "run")]) == 0
    for row in entry["rows"]:
        row["metrics"]["capability_retained"]["mean"] += 1.0
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps(data))
    capsys.readouterr()
    assert main(["check", str(tmp_path / "run"), "--baseline", str(baseline)]) == 1
    out = capsys.readouterr().out
    regressed = [line for line in out.splitlines() if line.startswith("REGRESSED")]
    assert regressed and all("capability_retained" in line for line in regressed)
