"""The capability suite: lm-eval tasks through lm-eval's evaluator at each operating point."""

from __future__ import annotations

import json
import math
import re

import pytest

pytest.importorskip("lm_eval", reason="lm_eval is not installed")

from bench.capability import Capability, TaskScore, retained  # noqa: E402
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
        record = runner.capability[(choice.method, choice.task, choice.strength)]
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
    plain = Experiment(**{**vars(exp), "capability": None, "output_dir": str(tmp_path / "plain")})
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
        ({"tasks": []}, "tasks = [] runs nothing"),
        ({"tasks": ["a"], "limit": 0}, "limit must be at least 1"),
        ({"tasks": ["a"], "budget": 1.5}, "budget must be a number in (0, 1]"),
        ({"tasks": ["a"], "num_fewshot": -1}, "num_fewshot must be >= 0"),
        ({"task": ["a"]}, "unknown key 'capability.task'"),
    ],
)
def test_bad_capability_config_is_a_one_line_error(data, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse(CapabilityConfig, data, "capability")


def test_an_unknown_lm_eval_task_is_a_user_error(tmp_path, gpt2_subject):
    from bench.capability import evaluate_capability
    from bench.lm_eval_model import Steering

    write_tasks(tmp_path, TINY_TASKS)
    config = CapabilityConfig(
        tasks=("testbed_fact",), include_path=str(tmp_path), include_defaults=False
    )
    with pytest.raises(UserError, match="lm-eval knows no task 'testbed_fact'"):
        evaluate_capability(gpt2_subject, Steering(), config)


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
