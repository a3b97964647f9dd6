"""memory_add: the training-free memory method (cached attn_out of a memory text, added back)."""

from __future__ import annotations

import pytest
import torch

from bench.architectures import hook_name
from bench.errors import UserError
from bench.params import parse
from bench.state import State
from bench.subject import GenerationSettings
from bench.target import SteeringTarget
from methods.memory import MemoryAdd, MemoryAddParams, memory_tokens

TARGET = SteeringTarget(name="fact:vorland", memory="The capital of Vorland is Kamsk .")
PROMPT = "I love this place , the food"


def observed(subject, hookpoint: str, text: str) -> torch.Tensor:
    """What `hookpoint` outputs for `text`, after any steering hook attached before this call."""
    seen: list[torch.Tensor] = []
    handle = subject.add_hook(hookpoint, lambda hidden, positions: seen.append(hidden.clone()))
    try:
        with torch.no_grad():
            subject.model(torch.tensor([subject.encode(text)]))
    finally:
        handle.remove()
    return seen[0]  # (1, seq, d_model)


def plain_attn_out(subject, text: str, layer: int) -> torch.Tensor:
    """attn_out at `layer` through a plain torch hook (independent of the method's capture)."""
    point = subject.hookpoint(hook_name(layer, "attn_out"))
    out = []
    handle = subject.module(point).register_forward_hook(
        lambda m, a, o: out.append((o[0] if isinstance(o, tuple) else o).detach())
    )
    try:
        with torch.no_grad():
            subject.model(torch.tensor([subject.encode(text)]))
    finally:
        handle.remove()
    return out[0][0]  # (seq, d_model)


def logits(subject, text: str) -> torch.Tensor:
    with torch.no_grad():
        return subject.model(torch.tensor([subject.encode(text)])).logits


@pytest.mark.parametrize("pool", ["last", "mean"])
def test_fit_caches_attn_out_of_the_memory(subject, pool):
    state = MemoryAdd(MemoryAddParams(layer=1, pool=pool)).fit(subject, TARGET)
    acts = plain_attn_out(subject, TARGET.memory, 1)
    _, n_special = memory_tokens(subject, TARGET.memory)
    expected = acts[-1] if pool == "last" else acts[n_special:].mean(0)
    torch.testing.assert_close(state.tensors["vector"], expected)
    assert state.meta["hookpoint"] == "layers.1.attn_out"


def test_layer_choice_and_repeat(gpt2_subject):
    assert MemoryAdd().fit(gpt2_subject, TARGET).meta["hookpoint"] == "layers.0.attn_out"  # 3 // 8
    one_vector = MemoryAdd(MemoryAddParams(pool="last")).fit(gpt2_subject, TARGET)
    assert one_vector.meta["hookpoint"] == "layers.1.attn_out"  # 3 // 2
    state = MemoryAdd(MemoryAddParams(layer=-1, repeat=2)).fit(gpt2_subject, TARGET)
    assert state.meta["hookpoint"] == f"layers.{gpt2_subject.n_layers - 1}.attn_out"
    ids, _ = memory_tokens(gpt2_subject, TARGET.memory, 2)
    assert state.meta["n_tokens"] == len(ids) > len(gpt2_subject.encode(TARGET.memory))


def test_adds_strength_times_vector_at_layer(subject):
    method = MemoryAdd(MemoryAddParams(layer=1, pool="last"))
    state = method.fit(subject, TARGET)
    base = observed(subject, "layers.1.attn_out", PROMPT)
    with method.steer(subject, state, 3.0):
        steered = observed(subject, "layers.1.attn_out", PROMPT)
    delta = steered - base  # (1, seq, d_model)
    torch.testing.assert_close(delta, (3.0 * state.tensors["vector"]).expand_as(delta))


def test_aligned_adds_memory_token_k_at_position_k(subject):
    """pool="aligned": the memory's own attn_out at its position k joins position k (after any
    BOS) of the text; positions past the memory are untouched; left padding does not shift it."""
    method = MemoryAdd(MemoryAddParams(layer=1, pool="aligned", positions="all"))
    state = method.fit(subject, TARGET)
    acts = plain_attn_out(subject, TARGET.memory, 1)
    _, n_special = memory_tokens(subject, TARGET.memory)
    content = acts[n_special:]  # (m, d_model)
    torch.testing.assert_close(state.tensors["vector"], content)
    text = PROMPT + " was good and the service was quick , we will come back"
    base = observed(subject, "layers.1.attn_out", text)
    with method.steer(subject, state, 2.0):
        steered = observed(subject, "layers.1.attn_out", text)
        padded = subject.logprobs(["hi", text], [" x", " x"])  # row 1 left of row 2's length
    delta = (steered - base)[0]  # (seq, d_model)
    m = content.shape[0]
    assert delta.shape[0] > n_special + m
    torch.testing.assert_close(delta[n_special : n_special + m], 2.0 * content)
    assert torch.equal(delta[n_special + m :], torch.zeros_like(delta[n_special + m :]))
    assert torch.equal(delta[:n_special], torch.zeros_like(delta[:n_special]))
    with method.steer(subject, state, 2.0):
        alone = subject.logprobs([text], [" x"])
    assert abs(padded[1].logprob - alone[0].logprob) < 1e-4


def test_first_k_positions_only(gpt2_subject):
    method = MemoryAdd(MemoryAddParams(layer=1, pool="last", positions="first:2"))
    state = method.fit(gpt2_subject, TARGET)
    base = observed(gpt2_subject, "layers.1.attn_out", PROMPT)
    with method.steer(gpt2_subject, state, 2.0):
        steered = observed(gpt2_subject, "layers.1.attn_out", PROMPT)
    delta = (steered - base)[0].norm(dim=-1)  # (seq,)
    assert (delta[:2] > 0).all() and (delta[2:] == 0).all()


def test_generated_positions_leave_the_prompt_alone(gpt2_subject):
    """With positions='generated', scoring a prompt is unchanged but generation is steered."""
    method = MemoryAdd(MemoryAddParams(layer=1, pool="last", positions="generated"))
    state = method.fit(gpt2_subject, TARGET)
    base = logits(gpt2_subject, PROMPT)
    settings = GenerationSettings(max_new_tokens=6, temperature=0)
    plain = gpt2_subject.generate([PROMPT], settings)
    with method.steer(gpt2_subject, state, 50.0):
        torch.testing.assert_close(logits(gpt2_subject, PROMPT), base, rtol=0, atol=0)
        steered = gpt2_subject.generate([PROMPT], settings)
    assert steered != plain


def test_strength_zero_is_exact_and_nothing_leaks(subject):
    method = MemoryAdd()
    state = method.fit(subject, TARGET)
    base = logits(subject, PROMPT)
    with method.steer(subject, state, 0.0):
        assert torch.equal(logits(subject, PROMPT), base)
    with pytest.raises(RuntimeError), method.steer(subject, state, 4.0):
        assert subject.attachments == 1
        assert not torch.equal(logits(subject, PROMPT), base)
        raise RuntimeError("body fails")
    assert subject.attachments == 0
    assert torch.equal(logits(subject, PROMPT), base)


def test_state_round_trip(gpt2_subject, tmp_path):
    method = MemoryAdd()
    state = method.fit(gpt2_subject, TARGET)
    state.save(tmp_path / "s.safetensors")
    loaded = State.load(tmp_path / "s.safetensors")
    assert loaded.meta == state.meta
    with method.steer(gpt2_subject, state, 2.0):
        a = logits(gpt2_subject, PROMPT)
    with method.steer(gpt2_subject, loaded, 2.0):
        b = logits(gpt2_subject, PROMPT)
    assert torch.equal(a, b)


def test_applies_only_to_targets_with_memory():
    assert MemoryAdd().applies_to(TARGET)
    assert not MemoryAdd().applies_to(SteeringTarget(name="x"))
    assert not MemoryAdd().applies_to(SteeringTarget(name="x", memory="  "))


def test_user_errors(gpt2_subject):
    with pytest.raises(UserError, match="position spec"):
        parse(MemoryAddParams, {"positions": "middle"}, "methods[0].params")
    with pytest.raises(UserError, match="pool"):
        parse(MemoryAddParams, {"pool": "max"}, "methods[0].params")
    with pytest.raises(UserError, match="layer out of range"):
        MemoryAdd(MemoryAddParams(layer=7)).fit(gpt2_subject, TARGET)
    with pytest.raises(UserError, match="empty"):
        MemoryAdd().fit(gpt2_subject, SteeringTarget(name="x", memory=" "))
