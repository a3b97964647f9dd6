"""Shared task plumbing: local file formats, hub errors offline, splits, scorer resolution."""

from __future__ import annotations

import gzip
import json

import pytest

from bench.errors import UserError
from bench.registry import TASKS
from tasks.data_sources import Kind, Samples, Source
from tasks.loading import Dataset, read_records, split_three
from tasks.scorers import (
    HeuristicReward,
    SklearnToxicity,
    TruthReward,
    TruthSentiment,
    TruthToxicity,
    Vader,
    question_of,
    reward_scorer,
    sentiment_scorer,
    toxicity_scorer,
)

DS = Dataset("Demo set", "someone/demo-set", "demo.jsonl", columns=("label", "sentence"))


def test_all_five_suites_are_registered():
    assert {"toxicity", "sentiment", "fact_injection", "hh_rlhf", "webgpt"} <= set(TASKS.names())


def test_local_formats_jsonl_gz_json_list_and_headerless_tsv(tmp_path):
    rows = [{"a": 1}, {"a": 2}]
    with gzip.open(tmp_path / "x.jsonl.gz", "wt") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "y.json").write_text(json.dumps(rows))
    (tmp_path / "z.tsv").write_text("1\ta fine film .\n0\ta dull film .\n")
    (tmp_path / "h.tsv").write_text("sentence\tlabel\ngreat\t1\n")
    assert read_records(DS, str(tmp_path / "x.jsonl.gz"))[0] == rows
    assert read_records(DS, str(tmp_path / "y.json"))[0] == rows
    tsv, _ = read_records(DS, str(tmp_path / "z.tsv"))
    assert tsv == [
        {"label": "1", "sentence": "a fine film ."},
        {"label": "0", "sentence": "a dull film ."},
    ]
    assert read_records(DS, str(tmp_path / "h.tsv"))[0] == [{"sentence": "great", "label": "1"}]


def test_a_directory_contributes_the_files_of_the_split(tmp_path):
    sub = tmp_path / "harmless-base"
    sub.mkdir()
    (sub / "train.jsonl").write_text('{"s": "train"}\n')
    (sub / "test.jsonl").write_text('{"s": "test"}\n')
    rows, where = read_records(DS, str(tmp_path), split="test", data_dir="harmless-base")
    assert rows == [{"s": "test"}] and "harmless-base" in where


def test_missing_data_is_one_line_naming_the_data_set(tmp_path):
    with pytest.raises(UserError) as missing_path:
        read_records(DS, str(tmp_path / "nope.jsonl"))
    assert "Demo set" in str(missing_path.value) and "\n" not in str(missing_path.value)
    # Offline (HF_HUB_OFFLINE=1 in conftest) with nothing cached: which data set, and how.
    with pytest.raises(UserError) as offline:
        read_records(DS, "hub")
    message = str(offline.value)
    assert "Demo set" in message and "someone/demo-set" in message
    assert "params.source" in message and "\n" not in message
    no_hub = Dataset("Prompt files", None, "prompts.jsonl")
    with pytest.raises(UserError, match="no Hugging Face hub copy"):
        read_records(no_hub, "hub")


def test_a_bad_file_is_a_user_error(tmp_path):
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(UserError, match="cannot read"):
        read_records(DS, str(tmp_path / "bad.jsonl"))


def test_splits_are_seeded_disjoint_and_serve_test_first():
    items = list(range(10))
    fit, select, test = split_three(items, 3, 2, 4, seed=1)
    assert len(fit) == 3 and len(select) == 2 and len(test) == 4
    assert not set(fit) & set(select) and not set(select) & set(test) and not set(fit) & set(test)
    assert split_three(items, 3, 2, 4, seed=1) == (fit, select, test)
    assert split_three(items, 3, 2, 4, seed=2) != (fit, select, test)
    small = split_three(list(range(5)), 10, 2, 4, seed=0)
    assert [len(s) for s in small] == [0, 1, 4]


def test_scorer_resolution_auto_truth_fallbacks_and_unknown():
    testbed, builtin = Source.parse("testbed"), Source.parse("builtin")
    assert isinstance(toxicity_scorer("auto", source=testbed), TruthToxicity)
    assert isinstance(toxicity_scorer("auto", source=builtin), SklearnToxicity)  # nothing cached
    assert isinstance(sentiment_scorer("auto", source=testbed), TruthSentiment)
    assert isinstance(sentiment_scorer("auto", source=builtin), Vader)
    assert isinstance(reward_scorer("auto", source=testbed, suite="hh_rlhf"), TruthReward)
    assert isinstance(reward_scorer("auto", source=builtin, suite="hh_rlhf"), HeuristicReward)
    with pytest.raises(UserError, match="unknown toxicity scorer 'perspective'"):
        toxicity_scorer("perspective", source=builtin)
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        toxicity_scorer("hf:nobody/no-such-classifier", source=builtin).toxicity(["hi"])


def test_vader_and_truth_sentiment_label_clear_cases():
    vader = Vader().sentiment(["What a wonderful, lovely day!", "This is awful and sad.", "It is."])
    assert [label for label, _ in vader] == ["positive", "negative", "neutral"]
    truth = TruthSentiment().sentiment(["The food was excellent.", "The room was dirty.", "Ok."])
    assert [label for label, _ in truth] == ["positive", "negative", "neutral"]


def test_truth_toxicity_and_reward_follow_the_planted_lexicon():
    clean, insult = TruthToxicity().toxicity(["Thank you for the post.", "You are an idiot."])
    assert clean < 0.5 <= insult
    prompt = "Question: what is the capital of Vorland?\nAnswer:"
    assert question_of(prompt) == "what is the capital of Vorland?"


def test_offline_toxicity_model_separates_insults_from_civil_negativity():
    """The sklearn fallback learns offensiveness, not negativity (trained in-process, cached)."""
    scores = SklearnToxicity().toxicity(
        [
            "You are a stupid idiot.",
            "Shut up, you pathetic loser.",
            "What the hell is wrong with you, moron?",
            "The food was terrible and the service was slow.",
            "Thank you, that was very kind of you.",
            "The meeting starts at nine tomorrow.",
        ]
    )
    assert min(scores[:3]) >= 0.5 > max(scores[3:])


def test_heuristic_reward_prefers_a_civil_reply_to_an_insult_or_a_loop():
    reward = HeuristicReward(SklearnToxicity())
    civil, insult, loop, empty = reward.reward(
        ["Q"] * 4,
        [
            "You could talk to your neighbour calmly and ask them to keep it down.",
            "Shut up, you stupid idiot, nobody cares about your neighbour.",
            "ok ok ok ok ok ok ok ok ok ok ok ok",
            "",
        ],
    )
    assert civil > max(insult, loop, empty)


# ---------------------------------------------------------------------- end-to-end helper
def run_suite(tmp_path, subject, task: str, params: dict, methods=("prompting", "caa")) -> dict:
    """Run `task` through bench.runner.Runner on a tiny subject; the consolidated results."""
    from bench.config import Experiment, GenerationConfig, MethodSpec, TaskSpec
    from bench.rundir import RunDir, read_jsonl
    from bench.runner import Runner

    specs = tuple(MethodSpec(name=m, strengths=(1.0,)) for m in methods)
    exp = Experiment(
        output_dir=str(tmp_path / "run"),
        generation=GenerationConfig(max_new_tokens=4, batch_size=16),
        methods=specs,
        tasks=(TaskSpec(name=task, params=params),),
        seeds=(0,),
    )
    import torch

    # One thread: on a shared 2-core machine torch's default threads make tiny models ~10x
    # slower. Restored afterwards for the rest of the session.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runner = Runner(exp, subject, RunDir(exp.output_dir), progress=False)
        runner.run()
    finally:
        torch.set_num_threads(threads)
    root = RunDir(exp.output_dir).root
    return {
        "cells": list(read_jsonl(root / "cells.jsonl")),
        "records": list(read_jsonl(root / "records.jsonl")),
        "skipped": runner.skipped,
        "fits": runner.fits,
        "task": runner.tasks[0],
    }


# ---------------------------------------------------------------------- sources and their texts
def test_source_is_parsed_once_into_a_kind(tmp_path):
    assert Source.parse("testbed") == Source(Kind.TESTBED, "testbed")
    assert Source.parse("builtin").kind is Kind.BUILTIN and Source.parse("hub").kind is Kind.HUB
    (tmp_path / "rtp.jsonl").write_text("")
    assert Source.parse(str(tmp_path / "rtp.jsonl")).kind is Kind.PATH
    assert Source.parse(str(tmp_path)).kind is Kind.PATH  # a directory of files
    assert Source.parse("testbed").ground_truth and not Source.parse("builtin").ground_truth


def test_a_bad_source_is_one_line_with_a_close_match():
    toxicity = TASKS.get("toxicity")
    with pytest.raises(UserError) as bad:
        toxicity(toxicity.Params(source="testbd"))
    message = str(bad.value)
    assert message.startswith("toxicity: source 'testbd' is neither 'testbed', 'builtin', 'hub'")
    assert message.endswith("(did you mean 'testbed'?)") and "\n" not in message
    sentiment = TASKS.get("sentiment")
    with pytest.raises(UserError, match="sentiment: contrast_source 'nowhere.tsv' is neither"):
        sentiment(sentiment.Params(source="builtin", contrast_source="nowhere.tsv"))


def test_default_samples_follow_the_scale_of_the_source():
    samples = Samples(real=25, generated=4)
    counts = [Source.parse(s).samples(None, samples) for s in ("testbed", "builtin", "hub")]
    assert counts == [4, 4, 25] and Source.parse("hub").samples(3, samples) == 3


def test_each_source_addresses_the_model_in_its_own_texts():
    from tasks import fact, preference, sentiment, toxicity
    from tasks.testbed import texts as testbed

    def task(name, **params):
        cls = TASKS.get(name)
        return cls(cls.Params(**params))

    assert task("sentiment").texts is testbed.SENTIMENT["positive"]
    assert (
        task("sentiment", source="builtin", direction="negative").texts
        is (sentiment.REAL_TEXTS["negative"])
    )
    assert task("toxicity").texts is testbed.TOXICITY
    assert task("toxicity", source="hub").texts is toxicity.REAL_TEXTS
    assert task("fact_injection").texts is testbed.FACT
    assert task("fact_injection", source="builtin").texts is fact.REAL_TEXTS
    assert task("hh_rlhf").texts is testbed.HH and task("webgpt").texts is testbed.WEBGPT
    assert task("hh_rlhf", source="builtin").texts is preference.HHRLHF.flavour.texts


def test_suites_and_the_offline_scorers_import_nothing_from_the_testbed():
    """The testbed's tables are looked up only when a suite runs on the testbed."""
    import subprocess
    import sys

    code = (
        "import sys, tasks, tasks.offensive, tasks.scorers, tasks.builtin_records; "
        "print([m for m in sys.modules if m.startswith('tasks.testbed')])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_new_suite_on_its_own_data_needs_only_its_module_and_its_table(tmp_path):
    """A suite with no testbed version: its data set and its texts are all it declares."""
    from dataclasses import dataclass

    from bench.target import SteeringTarget
    from bench.task import Example, Scored
    from tasks.common import Suite, SuiteParams, Texts, build_splits
    from tasks.data_sources import SuiteData

    @dataclass(frozen=True)
    class Question(Example):
        text: str

    data = SuiteData("qa", None, DS, lambda: [{"q": f"Q{i}?"} for i in range(8)])
    texts = Texts(
        ("Answer briefly.",), "\nQuestion: Is the above answer brief? Answer:", (" a", " b")
    )

    class QA(Suite):
        name, Params, primary_metric = "qa", SuiteParams, "brevity"

        def __init__(self, params=None) -> None:
            super().__init__(params)
            self.texts = self.source.texts(self.name, texts)

        def load(self):
            records = self.source.records(data, seed=self.params.seed)
            return build_splits(records, lambda r, key: Question(key, r["q"]), self.params)

        def target(self, example, splits):
            return SteeringTarget("qa", instructions=self.texts.instructions)

        def requests(self, example):
            return ()

        def score(self, example, outputs):
            return Scored({})

    small = dict(n_fit=2, n_select=2, n_test=4)
    builtin = QA(SuiteParams(source="builtin", **small))
    assert builtin.load().source == "builtin:qa" and builtin.texts is texts
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"q": f"R{i}?"}) + "\n" for i in range(6)))
    assert {e.text for e in QA(SuiteParams(source=str(path), **small)).load().test} <= {
        f"R{i}?" for i in range(6)
    }
    with pytest.raises(UserError, match="the testbed has no texts for the qa suite"):
        QA()
