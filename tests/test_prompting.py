"""The prompting baseline: levels, plain and chat formats, the context budget, no-op at 0."""

from __future__ import annotations

import pytest

from bench.errors import UserError
from bench.subject import GenerationSettings, Subject
from bench.target import SteeringTarget
from methods.prompting import Level, Prompting, PromptingParams
from tests.tiny import tiny_gpt2

TARGET = SteeringTarget(
    "sentiment:positive",
    instructions=("Write positively.", "Write very positively, with warm words."),
    demonstrations=("The food is lovely .", "The staff are kind .", "The acting was great ."),
)

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def test_levels_climb_from_instructions_to_demonstrations(gpt2_subject):
    method = Prompting()
    state = method.fit(gpt2_subject, TARGET)
    assert state.meta["levels"] == 5
    assert method.level(state, 1) == Level("Write positively.", ())
    assert method.level(state, 2) == Level("Write very positively, with warm words.", ())
    assert method.level(state, 3) == Level(TARGET.instructions[1], TARGET.demonstrations[:1])
    assert method.level(state, 5) == Level(TARGET.instructions[1], TARGET.demonstrations)
    assert method.level(state, 9) == method.level(state, 5)  # clamps to the top level
    assert Prompting.level_of(2.4) == 2 and Prompting.level_of(2.5) == 3
    with pytest.raises(UserError, match="not a level"):
        Prompting.level_of(-1.0)


def test_plain_prefix_applies_to_generation_and_scoring(gpt2_subject):
    method = Prompting(PromptingParams(max_prefix_share=1.0))  # tiny GPT-2: 64 positions
    state = method.fit(gpt2_subject, TARGET)
    with method.steer(gpt2_subject, state, 3):
        assert gpt2_subject.attachments == 1
        assert gpt2_subject.transform("The movie was") == (
            "The food is lovely .\nWrite very positively, with warm words.\nThe movie was"
        )
        steered = gpt2_subject.logprobs(["The movie was"], [" great ."])[0]
    assert gpt2_subject.attachments == 0
    direct = gpt2_subject.logprobs(
        ["The food is lovely .\nWrite very positively, with warm words.\nThe movie was"],
        [" great ."],
    )[0]
    assert steered == direct


def test_strength_zero_attaches_nothing(gpt2_subject):
    method = Prompting()
    state = method.fit(gpt2_subject, TARGET)
    settings = GenerationSettings(max_new_tokens=6, temperature=1.0, seed=3)
    base = gpt2_subject.generate(["The movie was"], settings)
    with method.steer(gpt2_subject, state, 0.0):
        assert gpt2_subject.attachments == 0
        assert gpt2_subject.generate(["The movie was"], settings) == base


def test_demonstrations_only_target():
    method = Prompting()
    target = SteeringTarget("demos", demonstrations=("The staff are kind .",))
    assert method.applies_to(target)
    assert not method.applies_to(SteeringTarget("empty"))
    state = method.fit(tiny_gpt2(), target)
    assert method.level(state, 1) == Level("", ("The staff are kind .",))
    assert method.plain_prefix(method.level(state, 1)) == "The staff are kind .\n"


def test_chat_template_user_turn_and_assistant_prefill():
    subject = tiny_gpt2()
    subject.tokenizer.chat_template = CHAT_TEMPLATE
    subject.tokenizer.bos_token = "<|endoftext|>"
    assert subject.has_chat_template
    target = SteeringTarget(
        "short", instructions=("Be kind.",), demonstrations=("kind .", "great .")
    )
    method = Prompting(PromptingParams(max_prefix_share=1.0))  # tiny GPT-2: 64 positions
    state = method.fit(subject, target)
    with method.steer(subject, state, 3):
        text = subject.transform("The movie was")
    assert text == (
        "<|endoftext|><|user|>Be kind.\n\nExamples:\n\nkind .\n\ngreat .<|end|>"
        "<|assistant|>The movie was"
    )
    plain = Prompting(PromptingParams(use_chat_template=False))
    with plain.steer(subject, state, 1):
        assert subject.transform("P") == "Be kind.\nP"


def test_chat_template_bos_not_doubled(tmp_path):
    """A tokenizer that adds BOS itself: the template's BOS text is dropped from the prefix."""
    subject = tiny_gpt2()
    tokenizer = subject.tokenizer
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.bos_token = "<|endoftext|>"
    tokenizer.add_bos_token = True  # encode() now prepends BOS
    tokenizer.save_pretrained(tmp_path)
    subject.model.save_pretrained(tmp_path)
    subject = Subject.load(tmp_path)
    if subject.encode("") != [subject.tokenizer.bos_token_id]:
        pytest.skip("this tokenizers version ignores add_bos_token on a fast GPT-2 tokenizer")
    method = Prompting()
    with method.steer(subject, method.fit(subject, TARGET), 1):
        text = subject.transform("P")
    assert text == "<|user|>Write positively.<|end|><|assistant|>P"
    assert subject.encode(text).count(subject.tokenizer.bos_token_id) == 1


def test_prefix_keeps_within_the_context_budget(gpt2_subject):
    long_demo = "The food is lovely and the staff are kind . " * 6
    target = SteeringTarget(
        "long", instructions=("Write positively.",), demonstrations=(long_demo,) * 3
    )
    method = Prompting(PromptingParams(max_prefix_share=0.5))
    state = method.fit(gpt2_subject, target)
    prefix = method.prefix(gpt2_subject, method.level(state, 4))
    assert len(gpt2_subject.encode(prefix)) <= 32  # tiny GPT-2 has 64 positions
    assert prefix.startswith("Write positively.")  # the instruction is never dropped
