"""Sampling from per-stream uniforms: the sampler's distribution, batch invariance, and common
random numbers across steering (`bench.sampling`)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from bench.architectures import hook_name
from bench.config import GenerationConfig
from bench.evaluate import Evaluation, answer_cell
from bench.sampling import StreamSampling, stream_key, stream_seed, stream_seeds, tokens_key
from bench.subject import GenerationSettings
from tests.toy_task import ToyTask

SAMPLED = GenerationSettings(max_new_tokens=8, temperature=1.0, top_p=0.9, num_samples=2)
PROMPTS = ["The movie was", "I", "The food at the new place on the corner is", "Thank you", "A"]


def _draws(logits, seeds, temperature=1.0, top_p=1.0, steps=1):
    """Tokens StreamSampling picks for `logits` (vocab,) in each stream of `seeds`, at each of
    `steps` steps: (len(seeds), steps)."""
    n = len(seeds)
    sampler = StreamSampling(seeds, temperature, top_p)
    picked = []
    for _ in range(steps):
        out = sampler(torch.zeros((n, 1), dtype=torch.long), logits.expand(n, -1).clone())
        assert bool((out.isfinite().sum(-1) == 1).all())  # exactly one token left per row
        picked.append(out.argmax(-1))
    return torch.stack(picked, dim=1)


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.5, 1.0), (1.0, 0.8)])
def test_stream_sampling_draws_from_the_nucleus_distribution(temperature, top_p):
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0, -3.0])
    probs = (logits / temperature).softmax(-1)
    if top_p < 1:  # the smallest most-probable set covering top_p, renormalised
        order = probs.argsort(descending=True)
        keep = (probs[order].cumsum(0) - probs[order]) < top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], probs[order][keep])
        probs = probs / probs.sum()
    draws = _draws(logits, stream_seeds([b"grid"], 2_000, 0), temperature, top_p, steps=10)
    counts = torch.bincount(draws.flatten(), minlength=5) / draws.numel()
    # 20,000 draws: a share's standard error is at most 0.0035; 0.015 is over 4 of them.
    torch.testing.assert_close(counts, probs, atol=0.015, rtol=0)
    assert not bool(counts[probs == 0].any())  # nothing outside the nucleus


def test_stream_sampling_keeps_draws_when_the_distribution_moves_a_little():
    """Common random numbers: the same streams under slightly moved logits give mostly the
    same tokens, where independent streams agree only by chance, also for a flat
    distribution over many tokens (where an inverse-CDF draw moves to a neighbour)."""
    generator = torch.Generator().manual_seed(0)
    seeds, others = stream_seeds([b"a"], 500, 0), stream_seeds([b"a"], 500, 1)
    for scale in (1.0, 0.01):  # peaked, then nearly flat over 1,000 tokens
        logits = scale * torch.randn(1_000, generator=generator)
        moved = logits + 0.05 * torch.randn(1_000, generator=generator)
        same = (_draws(logits, seeds) == _draws(moved, seeds)).float().mean()
        independent = (_draws(logits, seeds) == _draws(moved, others)).float().mean()
        assert float(same) > 0.9 > 0.25 > float(independent)


def test_streams_depend_on_key_sample_and_seed_only():
    a = stream_seed(tokens_key([1, 2, 3]), 0, 0)
    assert a == stream_seed(tokens_key([1, 2, 3]), 0, 0) and 0 <= a < 2**63
    for other in ([1, 2, 4], 0, 0), ([1, 2, 3], 1, 0), ([1, 2, 3], 0, 1):
        assert a != stream_seed(tokens_key(other[0]), other[1], other[2])
    assert stream_seeds([b"x", b"y"], 2, 5) == [
        stream_seed(k, s, 5) for k in (b"x", b"y") for s in (0, 1)
    ]


def test_stream_keys_name_their_parts():
    assert stream_key("ex-1", 0) != stream_key("ex-1", 1) != stream_key("ex-10", 0)
    assert stream_key("ex-1", 0) == stream_key("ex-1", 0)


# ---------------------------------------------------------------------------- batch invariance
def test_samples_do_not_depend_on_batch_size_order_or_neighbours(subject):
    """Each prompt's samples are a function of its stream: batching it with others, in any
    order or batch size, draws the same tokens."""
    reference = subject.generate(PROMPTS, replace(SAMPLED, batch_size=len(PROMPTS)))
    for size in (1, 2, 3):
        assert subject.generate(PROMPTS, replace(SAMPLED, batch_size=size)) == reference
    order = [3, 0, 4, 2, 1]
    shuffled = subject.generate([PROMPTS[i] for i in order], replace(SAMPLED, batch_size=2))
    assert shuffled == [reference[i] for i in order]
    assert subject.generate(PROMPTS[2:3], SAMPLED) == reference[2:3]


def test_samples_follow_the_stream_key_and_the_seed(gpt2_subject):
    prompts = ["The movie was"] * 4
    keys = [stream_key("ex", i) for i in range(4)]
    by_key = gpt2_subject.generate(prompts, SAMPLED, streams=keys)
    flat = [text for samples in by_key for text in samples]
    assert len(set(flat)) > 4  # different streams draw differently, also within a prompt
    again = gpt2_subject.generate(prompts[:1], SAMPLED, streams=keys[:1])
    assert again == by_key[:1]
    reseeded = gpt2_subject.generate(prompts, replace(SAMPLED, seed=1), streams=keys)
    assert reseeded != by_key


def test_one_key_per_prompt_is_required(gpt2_subject):
    with pytest.raises(ValueError, match="one stream key per prompt"):
        gpt2_subject.generate(PROMPTS, SAMPLED, streams=[b"a"])


def test_nonfinite_probabilities_raise_like_torchs_sampler(gpt2_subject):
    nan = (hook_name(1, "resid_post"), lambda h, p: h * float("nan"))
    handle = gpt2_subject.add_hook(*nan)
    try:
        with pytest.raises(RuntimeError, match="inf or nan"):
            gpt2_subject.generate(PROMPTS[:1], SAMPLED)
    finally:
        handle.remove()


# ---------------------------------------------------------------------------- common random numbers
def _agreement(a: list[list[str]], b: list[list[str]]) -> float:
    pairs = [(x, y) for sa, sb in zip(a, b) for x, y in zip(sa, sb)]
    return sum(x == y for x, y in pairs) / len(pairs)


def test_a_small_steer_keeps_most_samples_a_reseeded_run_does_not(gpt2_subject):
    """Steered and unsteered answers of one prompt draw from the same uniforms: a small push
    leaves most samples as they were, so a paired difference measures the push. Another seed
    (independent draws) agrees far less."""
    settings = replace(SAMPLED, max_new_tokens=4, num_samples=4)
    prompts = PROMPTS * 2
    keys = [stream_key("ex", i) for i in range(len(prompts))]
    base = gpt2_subject.generate(prompts, settings, streams=keys)
    direction = torch.randn(
        gpt2_subject.model.config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    push = (hook_name(0, "resid_post"), lambda h, p: h + 0.02 * direction)
    handle = gpt2_subject.add_hook(*push)
    try:
        steered = gpt2_subject.generate(prompts, settings, streams=keys)
    finally:
        handle.remove()
    independent = gpt2_subject.generate(prompts, replace(settings, seed=1), streams=keys)
    assert steered != base  # the push changed something
    assert _agreement(base, steered) > 0.6 > 0.3 > _agreement(base, independent)


def test_cell_answers_do_not_depend_on_the_batch_size_or_the_example_order(gpt2_subject):
    """The harness keys each sample by (example id, request, sample): a cell's outputs per
    example are the same in any batch size and any order of its examples."""
    task = ToyTask(ToyTask.Params(n=4, samples=3))
    splits = task.load()
    examples = list(splits.test)
    targets = [task.target(ex, splits) for ex in examples]

    def outputs(batch_size: int, order: list[int]) -> dict[str, tuple]:
        generation = GenerationConfig(max_new_tokens=5, batch_size=batch_size)
        evaluation = Evaluation(gpt2_subject, generation, 1e4)
        picked = [examples[i] for i in order]
        answers = answer_cell(evaluation, task, picked, [targets[i] for i in order], None, 0)
        return {ex.id: out[0] for ex, out in zip(picked, answers.outputs)}

    reference = outputs(4, [0, 1, 2, 3])
    assert outputs(1, [0, 1, 2, 3]) == reference
    assert outputs(3, [2, 0, 3, 1]) == reference
    assert outputs(4, [1, 3]) == {k: reference[k] for k in ("toy-2", "toy-4")}
