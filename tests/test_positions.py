"""Hooks see each row's absolute token positions under left padding and KV-cache decoding."""

from __future__ import annotations

import pytest
import torch

from bench.positions import TokenPositions
from bench.steering import attached
from bench.subject import GenerationSettings

PROMPTS = ["The movie was wonderful and", "I"]


def _recorder(calls):
    def hook(hidden, positions):
        calls.append(
            (positions.absolute.clone(), positions.prompt().clone(), positions.generated().clone())
        )

    return hook


def test_prompt_and_generated_positions_under_left_padding_and_cache(subject):
    calls = []
    lengths = [len(subject.encode(p)) for p in PROMPTS]
    with attached(subject, hooks=[("layers.0.resid_post", _recorder(calls))]):
        subject.generate(PROMPTS, GenerationSettings(max_new_tokens=4, temperature=0.0))
    absolute, prompt, generated = calls[0]
    width = max(lengths)
    for row, n in enumerate(lengths):
        pad = width - n
        assert absolute[row, :pad].tolist() == [-1] * pad
        assert absolute[row, pad:].tolist() == list(range(n))
        assert prompt[row].tolist() == [False] * pad + [True] * n
        assert not generated[row].any()
    # Decode steps: one new token per row, at position prompt_length + step.
    assert len(calls) >= 3
    for step, (absolute, prompt, generated) in enumerate(calls[1:]):
        assert absolute.shape[1] == 1
        assert absolute[:, 0].tolist() == [n + step for n in lengths]
        assert not prompt.any() and generated.all()


def test_prompt_only_steering_matches_between_cache_and_full_recompute(gpt2_subject):
    """Steering prompt positions with the KV cache equals recomputing the whole sequence."""
    subject = gpt2_subject
    vector = torch.randn(subject.d_model) * 5

    def add_on_prompt(hidden, positions):
        return hidden + positions.prompt()[..., None] * vector

    settings = GenerationSettings(max_new_tokens=5, temperature=0.0)
    with attached(subject, hooks=[("layers.1.resid_post", add_on_prompt)]):
        cached = subject.generate(PROMPTS, settings)
        # Recompute: feed prompt + generated text through a fresh forward with the same prompt lengths.
        rows = [subject.encode(p) for p in PROMPTS]
        ids, mask = subject.padded(rows, side="left")
        with subject.positions.prompt_lengths(mask.sum(-1)):
            out = subject.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=5,
                do_sample=False,
                use_cache=False,
                pad_token_id=subject.tokenizer.pad_token_id,
            )
    recomputed = [
        subject.tokenizer.decode(r[ids.shape[1] :], skip_special_tokens=True) for r in out.tolist()
    ]
    assert [c[0] for c in cached] == recomputed
    unsteered = subject.generate(PROMPTS, settings)
    assert unsteered != cached  # the steering really acted


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("all", [[False, True, True, True, True]]),
        ("prompt", [[False, True, True, False, False]]),
        ("generated", [[False, False, False, True, True]]),
        ("first:1", [[False, True, False, False, False]]),
    ],
)
def test_position_specs(spec, expected):
    positions = TokenPositions(torch.tensor([[-1, 0, 1, 2, 3]]), torch.tensor([2]))
    assert positions.select(spec).tolist() == expected


def test_unknown_position_spec():
    with pytest.raises(ValueError, match="unknown position spec"):
        TokenPositions(torch.tensor([[0]]), torch.tensor([1])).select("middle")


def test_prompt_positions_with_several_samples_per_prompt(subject):
    """num_return_sequences repeats rows: each copy keeps its own prompt's length."""
    calls = []
    lengths = [len(subject.encode(p)) for p in PROMPTS]
    settings = GenerationSettings(max_new_tokens=3, temperature=1.0, num_samples=3)
    with attached(subject, hooks=[("layers.0.resid_post", _recorder(calls))]):
        out = subject.generate(PROMPTS, settings)
    assert [len(samples) for samples in out] == [3, 3]
    absolute, prompt, _ = calls[0]
    assert prompt.sum(-1).tolist() == [n for n in lengths for _ in range(3)]
    for step, (absolute, _, generated) in enumerate(calls[1:]):
        assert absolute[:, 0].tolist() == [n + step for n in lengths for _ in range(3)]
        assert generated.all()
