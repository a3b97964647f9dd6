"""SelfControl on the built-in testbed's fact-injection suite: its judge and its effect.

Slow: needs the trained testbed (see tests/test_memory_testbed.py). The testbed model answers the
claim question ("Does the above text say that ...?") at chance, so on the testbed the suite asks
it to restate the fact after the text (`FactInjection.suffix`): the judgement is then higher
after the new fact than after the true one in nearly every case (47 or 48 of 48 on the builds
checked). At strength 1, SelfControl (with its
fluency guard, reading the new fact first) moves the belief toward the new fact on paraphrases
and in magnitude on every build checked (seeds 0, 1 and 2); whether the rewrite prompt's own
answer flips (efficacy) differs between builds, so it is not claimed. Other subjects mostly keep
their true object.
"""

from __future__ import annotations

import pytest
import torch

from methods.selfcontrol import SelfControl
from methods.selfcontrol_engine import Suffix, suffix_logit_gap
from tasks.fact import FactInjection
from tests.test_memory_testbed import fact_scores

pytestmark = pytest.mark.slow


def test_the_fact_judgement_follows_what_the_text_says(testbed):
    task = FactInjection()
    splits = task.load()
    wrong = []
    examples = (*splits.select, *splits.test)
    for ex in examples:
        suffix = Suffix.build(testbed, task.target(ex, splits).suffix)
        prompt = testbed.encode(ex.prompt)
        objects = (ex.target_new, ex.target_true)
        stated = [testbed.tokenizer(f" {obj}.")["input_ids"] for obj in objects]
        with torch.no_grad():
            gaps = suffix_logit_gap(testbed, [prompt, prompt], stated, suffix)
        if float(gaps[0]) <= float(gaps[1]):
            wrong.append(ex.id)
    assert len(wrong) <= 0.1 * len(examples), wrong


def test_selfcontrol_moves_the_fact_belief(testbed):
    base = fact_scores(testbed, SelfControl(), 0.0)
    efficacy, paraphrase, neighbourhood, magnitude = fact_scores(testbed, SelfControl(), 1.0)
    assert efficacy >= base[0] and paraphrase > base[1] + 0.2
    assert magnitude > base[3] + 0.08
    assert neighbourhood > 0.5
