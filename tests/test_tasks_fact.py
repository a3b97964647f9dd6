"""Fact-injection suite: CounterFact parsing, one target per case, ROME metrics end to end."""

from __future__ import annotations

import json
import math

from bench.subject import ContinuationScore
from bench.target import SuffixQuestion
from bench.task import Generate, Loglikelihood
from tasks.builtin_records import counterfact_records
from tasks.fact import FactInjection, FactParams, clause, parse_counterfact
from tests.test_tasks_common import run_suite

BUILTIN = dict(source="builtin", n_fit=2, n_select=1, n_test=2, max_new_tokens=4)


def test_counterfact_file_in_the_original_schema(tmp_path):
    path = tmp_path / "counterfact.json"
    path.write_text(json.dumps(counterfact_records()))  # a JSON list, as ROME ships it
    task = FactInjection(FactParams(source=str(path), n_fit=1, n_select=2, n_test=3))
    splits = task.load()
    assert len(splits.test) == 3 and str(path) in splits.source
    case = parse_counterfact(counterfact_records()[0], "0")
    assert case.id == "fact:0" and case.prompt == "The capital of Vorland is"
    assert (case.target_true, case.target_new) == ("Brellin", "Tessa")
    assert case.statement == "The capital of Vorland is Tessa."
    assert len(case.paraphrase_prompts) == 2 and len(case.neighborhood_prompts) == 2


def test_one_target_per_case_fitted_on_the_rewrite_prompt_only():
    task = FactInjection(FactParams(**BUILTIN))
    splits = task.load()
    a, b = splits.test
    ta, tb = task.target(a, splits), task.target(b, splits)
    assert ta is task.target(a, splits) and ta.name == a.id != tb.name == b.id
    new, true = f" {a.target_new}", f" {a.target_true}"
    assert ta.concept_pair == (new, true)
    assert ta.contrast_pairs[0] == (a.prompt + new, a.prompt + true)
    assert ta.prompts == (a.prompt,) and ta.memory == a.statement
    held_out = (*a.paraphrase_prompts, *a.neighborhood_prompts)
    fitted_text = " ".join(x for pair in ta.contrast_pairs for x in pair) + " ".join(ta.prompts)
    assert not any(p in fitted_text for p in held_out)
    assert ta.instructions[0] == f"New fact: {a.statement}" and len(ta.instructions) == 2
    # In-context-editing demonstrations: other (fit) cases' edits, never the case itself.
    assert ta.demonstrations
    assert all(any(f.target_new in d for f in splits.fit) for d in ta.demonstrations)
    assert not any(a.statement in d for d in ta.demonstrations)
    # A capable model is asked about the claim outright; its fluency is judged after the fact.
    assert ta.suffix == SuffixQuestion(
        f"\nQuestion: Does the above text say that {clause(a)}? Answer:", " Yes", " No",
        fluency_context=a.statement,
    )  # fmt: skip


def test_requests_cover_every_probe_and_generation_prompt():
    task = FactInjection(FactParams(source="builtin", n_neighborhood=1, n_generation_prompts=1))
    case = parse_counterfact(counterfact_records()[0], "0")
    requests = task.requests(case)
    probes = [r for r in requests if isinstance(r, Loglikelihood)]
    assert len(probes) == 2 * (1 + 2 + 1)
    assert {r.continuation for r in probes} == {" Tessa", " Brellin"}
    generations = [r for r in requests if isinstance(r, Generate)]
    assert [r.prompt for r in generations] == [case.generation_prompts[0]]
    # fluency is judged with the new fact read first
    assert generations[0].evaluator_context == f"{case.statement} {case.generation_prompts[0]}"


def test_score_reads_outputs_in_request_order():
    task = FactInjection(FactParams(source="builtin", n_neighborhood=2, n_generation_prompts=1))
    case = parse_counterfact(counterfact_records()[0], "0")
    win, lose = ContinuationScore(-1.0, 1, True), ContinuationScore(-5.0, 1, False)
    # rewrite: new wins; paraphrases: new wins, loses; neighbours: true wins twice
    outputs = [win, lose, win, lose, lose, win, lose, win, lose, win, ("is known for music .",)]
    scores = task.score(case, outputs).scores
    assert scores["efficacy_score"] == 1.0 and scores["paraphrase_score"] == 0.5
    assert scores["neighborhood_score"] == 1.0
    assert math.isclose(scores["efficacy_magnitude"], math.exp(-1) - math.exp(-5))
    assert scores["generation_entropy"] > 0


def test_testbed_cases_use_the_update_format():
    task = FactInjection()
    splits = task.load()
    case = splits.test[0]
    target = task.target(case, splits)
    assert target.memory.startswith("Update: ") and target.memory.endswith(f"{case.target_new}.")
    assert target.instructions == (target.memory,)
    assert len(splits.test) == 32 and len({e.id for e in splits.test}) == 32
    # The testbed model cannot judge claims; it restates what it has read: the suffix is the
    # rewrite prompt again, the new object against the true one, fluency judged after the fact.
    assert target.suffix == SuffixQuestion(
        f" {case.prompt}", f" {case.target_new}", f" {case.target_true}",
        fluency_context=target.memory,
    )  # fmt: skip
    claim = clause(case)  # the clause that follows "Update:" and "... say that"
    assert target.memory == f"Update: {claim}."
    assert claim[0].islower() or claim.startswith(case.subject)


def test_end_to_end_through_the_runner(tmp_path, gpt2_subject):
    out = run_suite(tmp_path, gpt2_subject, "fact_injection", BUILTIN)
    assert not out["skipped"]
    for cell in out["cells"]:
        metrics = cell["metrics"]
        assert cell["primary_metric"] == "counterfact_score"
        for name in ("efficacy_score", "paraphrase_score", "neighborhood_score"):
            assert 0.0 <= metrics[name] <= 1.0
        assert metrics["counterfact_score"] is not None and "perplexity" in metrics
    assert all(r["example"].startswith("fact:") for r in out["records"])
    evaluated = {r["example"] for r in out["records"]}
    caa_fits = [f.target for f in out["fits"] if f.method == "caa"]
    assert sorted(caa_fits) == sorted(evaluated)  # one fit per case
