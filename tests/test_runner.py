"""The sweep end to end on a tiny model: results layout, selection, caching and resume."""

from __future__ import annotations

import json

import pytest

from bench.config import Experiment, GenerationConfig, MethodSpec, TaskSpec
from bench.registry import TASKS
from bench.rundir import RunDir
from bench.runner import Runner
from reports.runs import load_run
from tests.toy_task import ToyTask


@pytest.fixture(autouse=True)
def toy_registered():
    with TASKS.registered(ToyTask):
        yield


def experiment(tmp_path, **overrides) -> Experiment:
    base = dict(
        output_dir=str(tmp_path / "run"),
        generation=GenerationConfig(max_new_tokens=4, batch_size=8),
        methods=(MethodSpec(name="prompting", strengths=(1.0, 2.0)),),
        tasks=(TaskSpec(name="toy", params={"n": 3}),),
        seeds=(0, 1),
    )
    return Experiment(**{**base, **overrides})


def run(exp, subject):
    runner = Runner(exp, subject, RunDir(exp.output_dir), progress=False)
    runner.run()
    return runner


def test_sweep_writes_cells_records_selection_and_shares_the_unsteered_cell(tmp_path, gpt2_subject):
    exp = experiment(tmp_path)
    run(exp, gpt2_subject)
    root = RunDir(exp.output_dir).root
    cells = [json.loads(line) for line in (root / "cells.jsonl").read_text().splitlines()]
    select = [c for c in cells if c["split"] == "select"]
    assert sorted({c["strength"] for c in select}) == [0.0, 1.0, 2.0]
    assert {c["seed"] for c in select} == {0, 1}
    chosen = json.loads((root / "selection.json").read_text())[0]
    test_strengths = {c["strength"] for c in cells if c["split"] == "test"}
    assert test_strengths == {0.0, chosen["strength"]}
    for cell in cells:
        assert cell["method"] == ("unsteered" if cell["strength"] == 0 else "prompting")
        assert cell["task"] == "toy" and cell["schema"] == 2
        assert set(cell["metrics"]) >= {
            "great_rate",
            "prefers_great",
            "perplexity",
            "distinct_1",
            "repetition",
        }
        assert cell["n_examples"] == 3
    # The unsteered cell is stored once per split and seed, and the reports view it as the
    # method's strength-0 point.
    zero = [c for c in cells if c["strength"] == 0.0]
    assert len(zero) == len({(c["split"], c["seed"]) for c in zero}) == 4
    loaded = load_run(root)
    views = [c for c in loaded.cells if c.method == "prompting" and c.strength == 0.0]
    assert {v.view_of for v in views} == {c["id"] for c in zero}
    records = [json.loads(line) for line in (root / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3 * len(cells)
    assert all(len(r["outputs"][0]) == 2 for r in records)  # two samples per prompt


def test_rerun_recomputes_nothing_and_resumes_missing_cells(tmp_path, gpt2_subject):
    exp = experiment(tmp_path)
    run(exp, gpt2_subject)
    root = RunDir(exp.output_dir).root
    before = {p.name: p.stat().st_mtime_ns for p in (root / "cells").iterdir()}
    # Simulate an interrupt that lost one cell: it must be recomputed, the others kept.
    victim = sorted(before)[0]
    (root / "cells" / victim).unlink()
    run(exp, gpt2_subject)
    after = {p.name: p.stat().st_mtime_ns for p in (root / "cells").iterdir()}
    assert set(after) == set(before)
    assert [n for n in after if after[n] != before[n]] == [victim]


def test_changed_strength_computes_only_the_new_cells(tmp_path, gpt2_subject):
    run(experiment(tmp_path), gpt2_subject)
    root = RunDir(str(tmp_path / "run")).root
    before = set(p.name for p in (root / "cells").iterdir())
    run(
        experiment(tmp_path, methods=(MethodSpec(name="prompting", strengths=(1.0, 2.0, 3.0)),)),
        gpt2_subject,
    )
    after = set(p.name for p in (root / "cells").iterdir())
    assert before < after


def test_nan_at_high_strength_is_a_degenerate_cell_not_a_crash(tmp_path, gpt2_subject):
    from bench.method import Method
    from bench.registry import METHODS
    from bench.state import State
    from bench.steering import attached

    class Nan(Method):
        name = "nan_method"
        default_strengths = (0.0, 1.0)

        def fit(self, subject, target):
            return State()

        def steered(self, subject, state, strength):
            return attached(subject, hooks=[("layers.1.resid_post", lambda h, p: h * float("nan"))])

    exp = experiment(tmp_path, methods=(MethodSpec(name="nan_method"),), seeds=(0,))
    with METHODS.registered(Nan):
        run(exp, gpt2_subject)
    root = RunDir(exp.output_dir).root
    cells = [json.loads(line) for line in (root / "cells.jsonl").read_text().splitlines()]
    broken = [c for c in cells if c["strength"] == 1.0]
    assert broken and all(c["degenerate"] for c in broken)
    chosen = json.loads((root / "selection.json").read_text())[0]
    assert chosen["strength"] == 0.0  # a degenerate strength is never chosen
    assert gpt2_subject.attachments == 0


def test_run_sets_progress_and_threads_for_its_duration_only(tmp_path, gpt2_subject):
    import torch

    from bench.progress import progress_enabled
    from bench.registry import METHODS
    from bench.state import State
    from methods.prompting import Prompting

    seen: list[tuple[bool, int]] = []

    class Recording(Prompting):
        name = "recording"

        def fit(self, subject, target) -> State:
            seen.append((progress_enabled(), torch.get_num_threads()))
            return super().fit(subject, target)

    before = torch.get_num_threads()
    exp = experiment(tmp_path, threads=before + 1, methods=(MethodSpec(name="recording"),))
    with METHODS.registered(Recording):
        run(exp, gpt2_subject)
    assert seen and set(seen) == {(False, before + 1)}
    assert torch.get_num_threads() == before and progress_enabled()


def test_perplexity_is_scored_in_the_requests_fluency_context(tmp_path, gpt2_subject):
    from dataclasses import replace

    from bench.task import Generate

    seen: list[list[str]] = []
    evaluator_logprobs = gpt2_subject.logprobs

    class Spy:
        def __getattr__(self, name):
            return getattr(gpt2_subject, name)

        def logprobs(self, contexts, continuations, **kwargs):
            seen.append(list(contexts))
            return evaluator_logprobs(contexts, continuations, **kwargs)

    class Framed(ToyTask):
        name = "framed"

        def requests(self, example):
            return [
                replace(r, fluency_context="Given this: " + r.prompt)
                if isinstance(r, Generate)
                else r
                for r in super().requests(example)
            ]

    exp = experiment(tmp_path, tasks=(TaskSpec(name="framed", params={"n": 2}),), seeds=(0,))
    with TASKS.registered(Framed):
        Runner(exp, gpt2_subject, RunDir(exp.output_dir), evaluator=Spy(), progress=False).run()
    assert seen and all(c.startswith("Given this: ") for batch in seen for c in batch)


def test_a_method_that_cannot_fit_this_subject_is_a_recorded_skip(tmp_path, gpt2_subject):
    from bench.method import NotApplicable
    from bench.registry import METHODS
    from methods.prompting import Prompting

    class NeedsCorpus(Prompting):
        name = "needs_corpus"

        def fit(self, subject, target):
            raise NotApplicable(f"the model {subject.name} has no training corpus")

    exp = experiment(tmp_path, methods=(MethodSpec(name="needs_corpus"), MethodSpec("prompting")))
    with METHODS.registered(NeedsCorpus):
        runner = run(exp, gpt2_subject)
    (skip,) = runner.skipped
    assert (skip.method, skip.task) == (
        "needs_corpus",
        "toy",
    ) and "no training corpus" in skip.reason
    assert [c.method for c in runner.selection] == ["prompting"]


def test_a_rerun_starts_without_the_last_runs_consolidated_files(tmp_path, gpt2_subject):
    """An interrupted re-run is then reported from cells/, never from an older cells.jsonl."""
    exp = experiment(tmp_path)
    run(exp, gpt2_subject)
    root = RunDir(exp.output_dir).root
    stale = root / "cells.jsonl"
    stale.write_text("not what this run wrote\n")
    RunDir(exp.output_dir).begin()
    assert not stale.exists() and not (root / "selection.json").exists()
    assert any((root / "cells").iterdir())  # finished cells stay for the re-run to resume


def test_overriding_steer_is_refused_at_class_definition():
    from bench.method import Method

    with pytest.raises(TypeError, match="implement steered"):

        class Old(Method):  # noqa: F841  (written against the old interface)
            name = "old"

            def fit(self, subject, target): ...

            def steer(self, subject, state, strength): ...


class JudgedToy(ToyTask):
    """The toy task with labelled pairs to judge: each test prompt continued well and badly."""

    name = "toy_judged"

    def judgement_pairs(self, splits, split="test"):
        from bench.judgement import JudgedPair, JudgementPairs

        pairs = tuple(
            JudgedPair(ex.id, ex.prompt, " great", " awful", self.TARGET.suffix)
            for ex in splits.get(split)
        )
        return JudgementPairs(pairs, "each prompt + ' great' vs + ' awful'")


def test_a_self_judging_method_gets_the_subjects_judgement_of_each_task(tmp_path, gpt2_subject):
    methods = (
        MethodSpec(name="selfcontrol", strengths=(1.0,), label="selfcontrol-a"),
        MethodSpec(name="prompting", strengths=(1.0,)),  # not self-judging: not in the labels
    )
    tasks = (TaskSpec(name="toy", params={"n": 2}), TaskSpec(name="toy_judged", params={"n": 2}))
    exp = experiment(tmp_path, methods=methods, tasks=tasks, seeds=(0,))
    with TASKS.registered(JudgedToy):
        run(exp, gpt2_subject)
    root = RunDir(exp.output_dir).root
    records = json.loads((root / "judgement.json").read_text())
    assert [r["task"] for r in records] == ["toy", "toy_judged"]  # one per task
    assert all(r["methods"] == ["selfcontrol-a"] for r in records)
    assert all(r["model"] == gpt2_subject.name for r in records)
    unjudged, judged = records
    assert unjudged["pairwise"] is None and "no labelled pairs" in unjudged["missing"]
    assert judged["pairwise"]["n"] == 2 and not judged["missing"]
    assert 0.0 <= judged["pairwise"]["estimate"] <= 1.0
    # The report finds them where the method's rows are.
    loaded = load_run(root)
    assert loaded.judgement("toy_judged", "selfcontrol-a").pairwise.n == 2
    assert loaded.judgement("toy_judged", "prompting") is None


def test_without_a_self_judging_method_the_judgement_file_is_empty(tmp_path, gpt2_subject):
    exp = experiment(tmp_path, methods=(MethodSpec(name="prompting", strengths=(1.0,)),))
    run(exp, gpt2_subject)
    assert json.loads((RunDir(exp.output_dir).root / "judgement.json").read_text()) == []
