"""Sentiment suite: prompt sets per direction, SST-2 contrast pairs, the target rate."""

from __future__ import annotations

import pytest

from tasks.builtin_records import dexperts_records, sst2_records
from tasks.sentiment import (
    REAL_TEXTS,
    Sentiment,
    SentimentExample,
    SentimentParams,
    half_sentences,
    parse_prompt,
    sst2_sentences,
)
from tests.test_tasks_common import run_suite

BUILTIN = dict(source="builtin", n_fit=4, n_select=3, n_test=4)


@pytest.mark.parametrize(
    ("direction", "prompts", "kind"),
    [("positive", "neutral", "neutral"), ("positive", "opposite", "negative"),
     ("negative", "opposite", "positive"), ("negative", "neutral", "neutral")],
)  # fmt: skip
def test_prompt_set_follows_direction_and_metric_is_named_by_it(direction, prompts, kind):
    task = Sentiment(SentimentParams(direction=direction, prompts=prompts, source="builtin",
                                     n_fit=0, n_select=1, n_test=2))  # fmt: skip
    splits = task.load()
    texts = {r["prompt"]["text"] for r in dexperts_records(kind)}
    assert {e.prompt for e in (*splits.select, *splits.test)} <= texts
    assert task.primary_metric == f"{direction}_rate"
    opposite = "negative" if direction == "positive" else "positive"
    assert [m.name for m in task.metrics] == [f"{direction}_rate", f"{opposite}_rate"]
    assert task.metric(f"{direction}_rate").higher_is_better
    assert not task.metric(f"{opposite}_rate").higher_is_better


def test_target_contrast_pairs_point_toward_the_direction():
    positive, negative = sst2_sentences(sst2_records())
    for direction, toward, away in (
        ("positive", positive, negative),
        ("negative", negative, positive),
    ):
        task = Sentiment(SentimentParams(direction=direction, **BUILTIN))
        splits = task.load()
        target = task.target(splits.test[0], splits)
        assert target is task.target(splits.select[0], splits)
        assert target.name == f"sentiment:{direction}"
        assert len(target.contrast_pairs) == 4
        assert all(a in toward and b in away for a, b in target.contrast_pairs)
        assert target.concept_pair == (
            (" Love", " Hate") if direction == "positive" else (" Hate", " Love")
        )
        assert target.memory == REAL_TEXTS[direction].memory
        assert direction in target.suffix.question
        assert target.demonstrations and set(target.demonstrations) <= set(toward)
        assert len(target.instructions) == 3 and target.prompts == tuple(
            e.prompt for e in splits.fit
        )


def test_testbed_prompts_are_filtered_by_polarity_and_prompts_fall_back_to_half_sentences():
    task = Sentiment(SentimentParams(prompts="opposite"))
    splits = task.load()
    assert not splits.fit  # the testbed's fit split is SST-2 sentences, not prompts
    negative_prompts = {
        r["prompt"]["text"]
        for part in ("select", "test")
        for r in __import__("tasks.testbed.records", fromlist=["x"]).testbed_records(
            "sentiment", 0
        )[part]
        if r["polarity"] == "negative"
    }
    assert {e.prompt for e in splits.test} <= negative_prompts
    target = task.target(splits.test[0], splits)
    assert target.instructions == ("Instruction: Write a positive review.",)
    assert target.suffix.question == "\nQuestion: Is the above text positive? Answer:"
    assert target.prompts and all(len(p.split()) >= 2 for p in target.prompts)
    truth = "testbed-truth:sentiment_label"
    assert task.scorers() == {"positive_rate": truth, "negative_rate": truth}


def test_parsing_helpers():
    record = {"md5_hash": "abc", "prompt": {"text": "The day"}, "polarity": "neutral"}
    assert parse_prompt(record, "0", "neutral") == SentimentExample("abc", "The day")
    assert parse_prompt(record, "0", "negative") is None
    assert parse_prompt({"prompt": {"text": ""}}, "0", "neutral") is None
    assert half_sentences(["a b c d e f", "x"]) == ("a b c", "x")
    rows = [
        {"label": "1", "sentence": "good"},
        {"label": 0, "sentence": "bad"},
        {"label": "x", "sentence": "?"},
    ]
    assert sst2_sentences(rows) == (["good"], ["bad"])


def test_score_is_the_share_of_samples_with_the_target_label():
    stub = type("Stub", (), {"name": "s", "sentiment": lambda self, t: [(x, 0.0) for x in t]})()
    task = Sentiment(SentimentParams(direction="negative", source="builtin"), scorer=stub)
    assert task.scorers() == {"negative_rate": "s", "positive_rate": "s"}
    scored = task.score(
        SentimentExample("x", "p"), (("negative", "positive", "neutral", "negative"),)
    )
    assert scored.scores == {"negative_rate": 0.5, "positive_rate": 0.25}
    assert scored.details["labels"] == ["negative", "positive", "neutral", "negative"]


def test_end_to_end_through_the_runner(tmp_path, gpt2_subject):
    out = run_suite(
        tmp_path, gpt2_subject, "sentiment", {**BUILTIN, "num_samples": 2, "scorer": "vader"}
    )
    assert not out["skipped"]
    assert out["task"].scorers() == {"positive_rate": "vader", "negative_rate": "vader"}
    for cell in out["cells"]:
        assert (
            0.0 <= cell["metrics"]["positive_rate"] <= 1.0
            and cell["primary_metric"] == "positive_rate"
        )
    assert all(len(r["details"]["labels"]) == 2 for r in out["records"])
