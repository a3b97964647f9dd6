"""The core's shape: one cell evaluation, typed records, model sources, and honest layers."""

from __future__ import annotations

import ast
import json
import math
import re
from pathlib import Path

import pytest

from bench.config import GenerationConfig, ModelConfig
from bench.errors import UserError
from bench.evaluate import Evaluation, evaluate_cell, steering
from bench.records import (
    SCHEMA_VERSION,
    CellKey,
    CellRecord,
    CellResult,
    Choice,
    Cost,
    ExampleRecord,
    Manifest,
    MethodEntry,
    ModelInfo,
    TaskEntry,
)
from bench.registry import MODEL_SOURCES
from bench.sources import HubSource, load_subject, model_source
from bench.task import Scored
from methods.prompting import Prompting
from tests.toy_task import ToyTask

ROOT = Path(__file__).resolve().parents[1]
# The only core modules that may name the packages built on the core: the registry and the
# command line are where the core meets its plug-ins.
TOP = {"registry.py", "cli.py"}
BUILT_ON_CORE = ("methods", "tasks", "reports")


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


CORE = sorted(p for p in (ROOT / "bench").glob("*.py") if p.name not in TOP)


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_the_core_imports_no_method_task_or_report(path):
    assert not _imported_packages(path) & set(BUILT_ON_CORE)


@pytest.mark.parametrize("name", ["sentiment", "toxicity", "fact", "preference"])
def test_no_suite_branches_on_the_testbed(name):
    tree = ast.parse((ROOT / "tasks" / f"{name}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.IfExp)):
            assert "testbed" not in ast.unparse(node.test), ast.unparse(node.test)


# ------------------------------------------------------------------------ evaluation
def _evaluation(subject) -> Evaluation:
    return Evaluation(subject, GenerationConfig(max_new_tokens=3, batch_size=4), 1e4)


def test_evaluate_cell_answers_scores_and_aggregates(gpt2_subject):
    task = ToyTask(ToyTask.Params(n=2))
    splits = task.load()
    examples = splits.select
    targets = [task.target(ex, splits) for ex in examples]
    method = Prompting()
    states = {t.name: method.fit(gpt2_subject, t) for t in targets}
    steer = steering(method, gpt2_subject, states, 1.0)
    evaluated = evaluate_cell(_evaluation(gpt2_subject), task, examples, targets, steer, 0, "c1")
    result = evaluated.result
    assert result.n_examples == 2 and not result.degenerate
    assert set(result.metrics) == {
        "great_rate",
        "prefers_great",
        "perplexity",
        "log_perplexity",
        "distinct_1",
        "distinct_2",
        "distinct_3",
        "repetition",
        "distinct_1_dexperts",
        "distinct_2_dexperts",
        "distinct_3_dexperts",
        "perplexity_dexperts",
    }
    rates = [r.scores["great_rate"] for r in evaluated.examples]
    assert result.metrics["great_rate"] == pytest.approx(sum(rates) / len(rates))
    assert result.cost.generated_tokens > 0 and math.isfinite(result.cost.tokens_per_second)
    assert [r.cell for r in evaluated.examples] == ["c1", "c1"]
    assert gpt2_subject.attachments == 0
    # The same seed gives the same cell.
    again = evaluate_cell(_evaluation(gpt2_subject), task, examples, targets, steer, 0, "c1")
    assert again.result.metrics == result.metrics


@pytest.mark.parametrize("key", ["grate_rate", "perplexity"])
def test_a_score_key_that_is_no_per_example_metric_is_an_error(gpt2_subject, key):
    """A typo would be NaN, and a fluency or derived name would be overwritten or ignored."""

    class Typo(ToyTask):
        def score(self, example, outputs):
            return Scored({key: 1.0})

    task = Typo(ToyTask.Params(n=1))
    splits = task.load()
    targets = [task.target(ex, splits) for ex in splits.select]
    with pytest.raises(
        UserError, match=f"scored '{key}', which is none of its per-example metrics"
    ):
        evaluate_cell(_evaluation(gpt2_subject), task, splits.select, targets, None, 0)


# --------------------------------------------------------------------------- records
def _cell(method: str = "m", strength: float = 1.0) -> CellRecord:
    result = CellResult(
        metrics={"score": 0.5, "perplexity": math.nan},
        higher_is_better={"score": True, "perplexity": False},
        primary_metric="score",
        n_examples=3,
        degenerate=False,
        perplexity_capped=1,
        cost=Cost(2.0, 10),
    )
    return CellRecord("abc", CellKey(method, "mname", "t", "test", strength, 1), result)


def test_records_round_trip_through_their_json():
    from bench.rundir import dumps

    cell = _cell()
    back = CellRecord.from_dict(json.loads(dumps(cell.to_dict())), "x")
    assert back.key == cell.key and back.result.cost == cell.result.cost
    assert back.metrics["score"] == 0.5 and math.isnan(back.metrics["perplexity"])
    assert json.loads(dumps(cell.to_dict()))["cost"]["tokens_per_second"] == 5.0
    example = ExampleRecord("abc", "e1", {"score": 1.0}, {"note": "x"}, (("a", "b"),))
    assert ExampleRecord.from_dict(json.loads(dumps(example.to_dict())), "x").scores == {
        "score": 1.0
    }
    choice = Choice("m", "t", 1.0, 0.5, "best effect within the fluency budget", 3.0, 4.5)
    assert Choice.from_dict(choice.to_dict(), "x") == choice
    manifest = Manifest(
        status="complete",
        seeds=(0, 1),
        model=ModelInfo("testbed (seed 0)", "f", "gpt2", 4),
        methods=(MethodEntry("caa", "caa", (0.0, 1.0)),),
        tasks=(TaskEntry("sentiment", {"sentiment": "truth"}, "testbed", {"test": 3}),),
    )
    assert Manifest.from_dict(json.loads(dumps(manifest.to_dict())), "x") == manifest


def test_the_unsteered_cell_is_viewed_as_each_methods_strength_zero():
    unsteered = _cell("unsteered", 0.0)
    view = unsteered.viewed_as("caa", "caa")
    assert (view.method, view.method_name, view.view_of) == ("caa", "caa", unsteered.id)
    assert view.source_id == unsteered.source_id == unsteered.id
    assert view.metrics is unsteered.metrics


@pytest.mark.parametrize(
    "data, message",
    [
        ({**_cell().to_dict(), "schema": SCHEMA_VERSION + 1}, "not one this steerbench reads"),
        ({**_cell().to_dict(), "schema": 1}, "older than this steerbench reads"),
        ({k: v for k, v in _cell().to_dict().items() if k != "seed"}, ": lacks seed"),
        ({**_cell().to_dict(), "seed": "one"}, "seed: expected an integer, got 'one'"),
        ({**_cell().to_dict(), "metrics": {"score": "high"}}, "metrics: expected a number"),
        ({**_cell().to_dict(), "cost": {"seconds": 1.0}}, "cost: lacks generated_tokens"),
        ([], "expected a JSON object"),
    ],
)
def test_bad_records_are_one_line_user_errors(data, message):
    with pytest.raises(UserError, match=re.escape(message)):
        CellRecord.from_dict(data, "cells.jsonl:1")


@pytest.mark.parametrize(
    "record, data, message",
    [
        (Choice, {"method": "m", "task": "t", "strength": None, "reason": "r"}, "lacks effect"),
        (Choice, {"method": "m", "task": "t", "strength": "x", "effect": 1, "reason": "r"},
         "strength: expected a number, got 'x'"),
        (Manifest, {"seeds": [0, "1"]}, "seeds: expected an integer, got '1'"),
        (Manifest, {"model": {"name": 3}}, "model: name: expected a string, got 3"),
        (Manifest, {"experiment": {"selection": {"fluency_budget": "wide"}}},
         "experiment.selection.fluency_budget: expected a number"),
        (Manifest, {"methods": [{"label": "a"}]}, "methods: lacks name"),
    ],
)  # fmt: skip
def test_bad_run_records_are_one_line_user_errors(record, data, message):
    with pytest.raises(UserError, match=re.escape(message)):
        record.from_dict(data, "f.json")


# --------------------------------------------------------------------------- sources
def test_testbed_is_a_registered_model_source_and_other_names_go_to_the_hub():
    assert model_source(ModelConfig(name="testbed")).name == "testbed"
    assert isinstance(model_source(ModelConfig(name="gpt2")), HubSource)
    corpus = model_source(ModelConfig(name="testbed", testbed_seed=3)).training_corpus(
        ModelConfig(name="testbed", testbed_seed=3)
    )
    assert len(corpus(2)) == 2


def test_a_registered_source_gives_the_subject_its_name_and_corpus(tmp_path, gpt2_subject):
    model_dir = tmp_path / "model"
    gpt2_subject.model.save_pretrained(model_dir)
    gpt2_subject.tokenizer.save_pretrained(model_dir)

    class Local:
        name = "local-tiny"
        summary = "a tiny model saved by the test"

        def locate(self, config, progress):
            return str(model_dir)

        def display_name(self, config):
            return "tiny (local)"

        def training_corpus(self, config):
            return lambda n: ["a document"] * n

    with MODEL_SOURCES.registered(Local()):
        subject = load_subject(ModelConfig(name="local-tiny"))
    assert subject.name == "tiny (local)" and subject.training_corpus(2) == ["a document"] * 2
    assert subject.fingerprint() == gpt2_subject.fingerprint()
    hub = load_subject(ModelConfig(name=str(model_dir)))
    assert hub.training_corpus is None and hub.name == str(model_dir)


# ------------------------------------------------------------------- steering cost
def test_steering_cost_benchmark_times_the_cell_evaluation(tmp_path, gpt2_subject, capsys):
    from bench.cli import main
    from bench.registry import TASKS

    model_dir = tmp_path / "model"
    gpt2_subject.model.save_pretrained(model_dir)
    gpt2_subject.tokenizer.save_pretrained(model_dir)
    out = tmp_path / "bench.json"
    argv = ["bench", "--model", str(model_dir), "--task", "toy", "--methods", "prompting,caa"]
    argv += ["--batch", "4", "--tokens", "4", "--repeats", "1", "--json", str(out)]
    with TASKS.registered(ToyTask):
        code = main(argv)
    rows = {r["method"]: r for r in json.loads(out.read_text())}
    assert set(rows) == {"prompting", "caa"}
    for row in rows.values():
        assert row["unsteered_ms_per_token"] > 0 and row["steered_ms_per_token"] > 0
        assert row["ratio"] == pytest.approx(
            row["steered_ms_per_token"] / row["unsteered_ms_per_token"], rel=1e-2
        )
    assert code in (0, 1) and "ratio" in capsys.readouterr().out
