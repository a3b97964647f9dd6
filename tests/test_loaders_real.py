"""The real loaders on real slices of the public data sets (../shared/data, see its SOURCES.md).

Skipped with a reason when the folder is absent; `STEERBENCH_REAL_DATA` points elsewhere.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from tasks.loading import read_records
from tasks.preference import ASSISTANT, HHRLHF, HHParams
from tasks.sentiment import SST2, Sentiment, SentimentParams, sst2_sentences
from tasks.toxicity import Toxicity, ToxicityParams

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("STEERBENCH_REAL_DATA", ROOT.parent / "shared" / "data"))


def real(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real data slice {path} is absent (set STEERBENCH_REAL_DATA)")
    return path


def test_realtoxicityprompts_slice_parses_prompts_and_their_perspective_scores():
    path = real("rtp_toxic_2k.jsonl.gz")
    task = Toxicity(ToxicityParams(source=str(path), subset="toxic", n_fit=8, n_test=40))
    splits = task.load()
    assert len(splits.test) == 40 and len(splits.fit) == 8
    for example in splits.test:
        assert example.prompt.strip() and example.prompt_toxicity >= 0.5
    ids = [e.id for s in (splits.fit, splits.select, splits.test) for e in s]
    assert len(ids) == len(set(ids))
    # The slice has no `challenging` flag: the subset says so instead of silently emptying.
    flagless = Toxicity(ToxicityParams(source=str(path))).load()
    assert "no flag" in flagless.source and len(flagless.test) == 32


def test_hh_rlhf_slice_splits_transcripts_into_shared_prompt_and_replies():
    path = real("hh_harmless_base_test.jsonl.gz")
    with gzip.open(path, "rt") as handle:
        originals = [json.loads(line) for line in handle]
    task = HHRLHF(HHParams(source=str(path), n_fit=16, n_select=8, n_test=64))
    splits = task.load()
    assert len(splits.test) == 64
    chosen_set = {r["chosen"] for r in originals}
    rejected_set = {r["rejected"] for r in originals}
    for example in splits.test:
        assert example.prompt.startswith("\n\nHuman:") and example.prompt.endswith(ASSISTANT)
        assert example.chosen.strip() != example.rejected.strip()
        assert example.prompt + example.chosen in chosen_set
        assert example.prompt + example.rejected in rejected_set
    target = task.target(splits.test[0], splits)
    assert len(target.contrast_pairs) == 16
    assert all(good.endswith(e.chosen) for (good, _), e in zip(target.contrast_pairs, splits.fit))


def test_dexperts_prompt_files_by_path_and_by_directory():
    neutral = real("sentiment_neutral_prompts.jsonl.gz")
    splits = Sentiment(SentimentParams(source=str(neutral), n_test=20)).load()
    assert len(splits.test) == 20 and all(e.prompt for e in splits.test)
    # A directory with all three files: "opposite" prompts for the positive direction are the
    # negative ones.
    with gzip.open(real("sentiment_negative_prompts.jsonl.gz"), "rt") as handle:
        negative_ids = {json.loads(line)["md5_hash"] for line in handle}
    opposite = Sentiment(SentimentParams(source=str(DATA), prompts="opposite", n_test=20)).load()
    assert {e.id for e in opposite.test} <= negative_ids
    assert "negative prompts -> positive" in opposite.source


def test_sst2_tsv_gives_contrast_pairs_for_either_direction():
    path = real("sst2_train.tsv.gz")
    rows, _ = read_records(SST2, str(path))
    positive, negative = sst2_sentences(rows)
    assert len(positive) + len(negative) == 6920 and min(len(positive), len(negative)) > 3000
    params = dict(source="builtin", contrast_source=str(path), n_fit=10, n_select=2, n_test=4)
    for direction in ("positive", "negative"):
        task = Sentiment(SentimentParams(direction=direction, **params))
        splits = task.load()
        pairs = task.target(splits.test[0], splits).contrast_pairs
        assert len(pairs) == 10
        toward = set(positive if direction == "positive" else negative)
        assert all(a in toward and b not in toward for a, b in pairs)
