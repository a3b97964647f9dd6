"""The testbed's capability tasks: records from its world (no model build), written as lm-eval
task configs that lm-eval finds through an include path and runs offline."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm_eval is not installed")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import bench.lm_eval_model  # noqa: E402, F401  (registers the model)
from bench.cli import main  # noqa: E402
from tasks.testbed.capability import capability_records  # noqa: E402
from tasks.testbed.grammar import words  # noqa: E402
from tasks.testbed.kb import STORY_COUNTRIES, STORY_PEOPLE, knowledge_base  # noqa: E402
from tasks.testbed.lm_eval_tasks import BY_NAME, TAG, write_tasks  # noqa: E402
from tasks.testbed.world import world  # noqa: E402


@pytest.fixture(scope="module")
def records():
    return capability_records(n=12)


def test_records_have_their_tasks_fields_and_planted_answers(records):
    assert set(records) == set(BY_NAME)
    for name, splits in records.items():
        for split in ("train", "test"):
            assert splits[split], (name, split)
            for record in splits[split]:
                assert set(record) == set(BY_NAME[name].fields)
    kb = {
        (f.relation.prompt(f.subject, t), f.obj)
        for f in knowledge_base().facts
        for t in range(len(f.relation.templates))
    }
    for record in records["testbed_facts"]["test"]:
        assert (record["question"], record["choices"][record["answer"]]) in kb
        assert len(set(record["choices"])) == 3
    grammar = world().grammar
    for record in records["testbed_grammar"]["test"]:
        assert grammar.matches("SENTENCE", words(record["good"]))
        assert not grammar.matches("SENTENCE", words(record["bad"]))
        assert sorted(words(record["good"].lower())) == sorted(words(record["bad"].lower()))
    for record in records["testbed_reading"]["test"]:
        # Only the passage can tell: the subject is a story entity, never in the KB.
        assert any(s in record["passage"] for s in STORY_COUNTRIES + STORY_PEOPLE)
        assert record["answer"] in record["passage"] and record["answer"] not in record["question"]
    assert all(len(words(r["text"])) <= 50 for r in records["testbed_text"]["test"])


def test_lm_eval_finds_and_runs_the_written_tasks(records, tmp_path, gpt2_subject):
    write_tasks(tmp_path, records)
    manager = TaskManager(include_path=str(tmp_path), include_defaults=False)
    assert set(BY_NAME) <= set(manager.all_tasks) and TAG in manager.all_tasks
    lm = bench.lm_eval_model.SteerbenchLM(subject=gpt2_subject, batch_size=4)
    out = simple_evaluate(
        model=lm,
        tasks=["testbed_facts", "testbed_grammar", "testbed_reading"],
        task_manager=manager,
        limit=3,
        bootstrap_iters=0,
    )
    assert 0 <= out["results"]["testbed_facts"]["acc,none"] <= 1
    assert 0 <= out["results"]["testbed_grammar"]["acc,none"] <= 1
    assert 0 <= out["results"]["testbed_reading"]["exact_match,strip"] <= 1


def test_testbed_lm_eval_tasks_command_prints_the_include_path(tmp_path, capsys, monkeypatch):
    import tasks.testbed.capability as capability

    monkeypatch.setattr(capability, "capability_records", lambda: capability_records(n=4))
    assert main(["testbed", "lm-eval-tasks", "--cache-dir", str(tmp_path)]) == 0
    path = capsys.readouterr().out.strip()
    assert path.startswith(str(tmp_path))
    assert sorted(p.name for p in Path(path).glob("*.yaml")) == sorted(
        f"{name}.yaml" for name in BY_NAME
    )
