"""Steering where the hooked layer runs: on a model dispatched over several devices
(`[model] device_map`) each layer runs on its own device, which need not be `Subject.device`
(where inputs go), so whatever a hook combines with an activation must be on the activation's
device and in its dtype, not the subject's.

This machine has one device, the CPU. Each method's hooks are called here by hand with their
activation on the meta device (shapes without data), where any torch call mixing it with a
tensor the hook kept on the CPU fails, and in another dtype than the model's weights.
SelfControl's hooks read a value (whether the call has prompt positions at all), which a meta
tensor has not: they are checked in another dtype only. What gathers several layers'
activations on one device (activation capture, the prefix's recorder, SelfControl's relative
step size, memory_xattn's training) needs two real devices. The whole model dispatched over the
CPU and disk offload is `tests/test_dispatch.py`; several GPUs remain to be tried on a machine
with them.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode

from bench.loading import execution_device
from bench.positions import TokenPositions
from bench.subject import GenerationSettings, Handle, HookFn, Subject
from bench.tensors import OnDevices, placed
from methods.memory import MemoryAdd, MemoryAddParams
from methods.selfcontrol_engine import DeltaHooks
from tests.test_method_contract import TARGET, fitted, make, strength_of
from tests.tiny import tiny_gpt2

META, CPU = torch.device("meta"), torch.device("cpu")
# Methods whose steering is hooks at hook points (prompting transforms the prompt; SelfControl's
# hooks are inactive outside its search and are tested below with deltas in effect).
HOOKED = ["caa", "pca", "actadd", "memory_add", "memory_xattn", "prefix"]


def tensors_in(value) -> Iterator[torch.Tensor]:
    """The tensors among a call's arguments (nested in lists, tuples and dicts)."""
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from tensors_in(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from tensors_in(item)


class OneDevicePerOp(TorchFunctionMode):
    """Fails every torch call whose tensors are on two devices (a CPU scalar aside), as a GPU
    would: the meta device's own kernels let some of these through (a matmul, an index).
    Copies from one device to another (a tensor's or a module's) are what a hook may do."""

    COPIES = (torch.Tensor.copy_, torch._has_compatible_shallow_copy_type)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.COPIES:
            return func(*args, **kwargs)
        devices = {
            t.device
            for t in tensors_in((args, kwargs))
            if not (t.device.type == "cpu" and t.dim() == 0)
        }
        assert len(devices) <= 1, f"{func} mixes tensors on {sorted(map(str, devices))}"
        return func(*args, **kwargs)


def hooks_of(subject: Subject, steering, monkeypatch) -> list[tuple[str, HookFn]]:
    """The hooks a steer context attaches, caught instead of attached."""
    caught: list[tuple[str, HookFn]] = []

    def catch(name: str, fn: HookFn) -> Handle:
        caught.append((name, fn))
        return Handle(lambda: None)

    monkeypatch.setattr(subject, "add_hook", catch)
    with steering:
        pass
    return caught


def positions(device: torch.device = CPU) -> TokenPositions:
    """Two rows of five tokens: one whole prompt of 3 then 2 generated, one left padded."""
    absolute = torch.tensor([[0, 1, 2, 3, 4], [-1, 0, 1, 2, 3]])
    return TokenPositions(absolute, torch.tensor([3, 4])).to(device)


# ---------------------------------------------------------------------------- the helper
def test_placed_follows_the_activation_and_copies_once_per_device_and_dtype():
    vector = torch.randn(4)
    delta = placed(vector)
    assert delta.like(torch.zeros(2, 4)) is vector  # already there: no copy at all
    wide = delta.like(torch.zeros(2, 4, dtype=torch.float64))
    assert wide.dtype == torch.float64 and torch.equal(wide, vector.double())
    assert delta.like(torch.zeros(1, dtype=torch.float64)) is wide  # cached
    elsewhere = delta.like(torch.empty(3, 4, device=META))
    assert elsewhere.device == META and elsewhere.shape == (4,)
    assert delta.on(META, torch.float32) is elsewhere
    stack = torch.randn(3, 4)
    assert torch.equal(
        placed(stack, 1).like(torch.zeros(1, dtype=torch.float64)), stack[1].double()
    )
    lengths = placed(torch.tensor([3, 4]))
    assert lengths.on(META).dtype == torch.long  # no dtype asked: its own


def test_placed_copies_a_trained_tensor_at_every_call_and_gradients_reach_it():
    weight = torch.zeros(4, requires_grad=True)
    delta = placed(weight)
    first = delta.like(torch.zeros(1, dtype=torch.float64))
    first.sum().backward()
    assert torch.equal(weight.grad, torch.ones(4))
    with torch.no_grad():
        weight += 1  # an optimiser's in-place step
    second = delta.like(torch.zeros(1, dtype=torch.float64))
    assert second is not first and torch.equal(second, torch.ones(4, dtype=torch.float64))


def test_on_devices_makes_each_thing_once_per_device():
    made = []
    things = OnDevices(lambda device, dtype: made.append(device) or len(made))
    assert things.on(META) == things.on(META) == 1
    assert things.like(torch.zeros(1)) == 2
    assert made == [META, CPU]


def test_offloaded_modules_run_on_accelerates_main_device():
    """accelerate runs CPU- and disk-offloaded modules on its main device, the GPU when there
    is one: that, not the CPU, is where the inputs of a model whose embedding is offloaded go."""
    assert execution_device(1, [1, 2, "disk"]) == torch.device("cuda", 1)
    assert execution_device("disk", [0, 1, "cpu", "disk"]) == torch.device("cuda", 0)
    assert execution_device("cpu", [0, "cpu"]) == torch.device("cuda", 0)
    assert execution_device("disk", ["cpu", "disk"]) == torch.device("cpu")
    assert execution_device("cpu") == torch.device("cpu")


# ---------------------------------------------------------------------------- every hook
@pytest.mark.parametrize("name", HOOKED)
def test_each_hook_works_on_the_device_and_dtype_of_its_activation(gpt2_subject, name, monkeypatch):
    subject = gpt2_subject
    method, case, state = fitted(name, subject)
    hooks = hooks_of(subject, method.steer(subject, state, strength_of(method, case)), monkeypatch)
    assert hooks
    d = subject.d_model
    hidden = torch.randn(2, 5, d, generator=torch.Generator().manual_seed(0))
    for point, fn in hooks:
        steered = fn(hidden, positions())
        assert steered is not None and not torch.equal(steered, hidden), point
        # On another device than the subject's (the meta device: shapes only).
        with OneDevicePerOp():
            out = fn(torch.empty(2, 5, d, device=META), positions(META))
        assert out is not None and out.device == META and out.shape == (2, 5, d), point
        # In another dtype than the model's weights (float32): the activation's dtype stays.
        out = fn(hidden.to(torch.bfloat16), positions())
        assert out is not None and out.dtype == torch.bfloat16, point
        torch.testing.assert_close(out.float(), steered, rtol=0.02, atol=0.05)


def test_memory_add_adds_its_vector_in_the_activation_dtype(gpt2_subject, monkeypatch):
    """The memory vector is cast to the dtype of the activation it joins, never rounded to the
    dtype of the subject's first weights on the way (here a bfloat16 embedding in front of
    float32 blocks, as a model keeping some modules in another precision has)."""
    method = MemoryAdd(MemoryAddParams(pool="last", positions="all"))
    state = method.fit(gpt2_subject, TARGET)
    model = copy.deepcopy(gpt2_subject.model)
    model.transformer.wte.to(torch.bfloat16)
    subject = Subject(model, gpt2_subject.tokenizer)
    assert next(subject.model.parameters()).dtype == torch.bfloat16
    ((_, fn),) = hooks_of(subject, method.steer(subject, state, 3.0), monkeypatch)
    hidden = torch.randn(2, 5, subject.d_model)
    real = positions().real[..., None].float()  # "all" leaves row 1's padding alone
    expected = hidden + real * (state.tensors["vector"] * 3.0)
    assert torch.equal(fn(hidden, positions()), expected)


def test_selfcontrol_deltas_join_the_activation_in_its_dtype(gpt2_subject):
    """A bfloat16 layer's output stays bfloat16 under SelfControl's deltas (float32, kept where
    the search keeps them), with the delta of each prompt position added."""
    hooks = DeltaHooks([0])
    ((_, fn),) = hooks.hooks()
    deltas = torch.randn(1, 2, 4, gpt2_subject.d_model)
    lengths = torch.tensor([3, 4])
    hidden = torch.zeros(2, 5, gpt2_subject.d_model, dtype=torch.bfloat16)
    with hooks.active(deltas, lengths):
        out = fn(hidden, positions())
    assert out is not None and out.dtype == torch.bfloat16
    expected = torch.zeros_like(hidden)
    expected[0, :3] = deltas[0, 0, :3].to(torch.bfloat16)  # row 0: its 3 prompt tokens
    expected[1, 1:] = deltas[0, 1, :4].to(torch.bfloat16)  # row 1: after its padding
    assert torch.equal(out, expected)


def test_selfcontrol_steers_a_bfloat16_model():
    """End to end: the search's float32 deltas used to turn a bfloat16 layer's output into
    float32, which the next layer's bfloat16 weights refused."""
    subject = tiny_gpt2()
    subject.model.to(torch.bfloat16)
    method, case = make("selfcontrol")
    state = method.fit(subject, TARGET)
    settings = GenerationSettings(max_new_tokens=4, temperature=0.0)
    with method.steer(subject, state, strength_of(method, case)):
        texts = subject.generate(["The movie was", "You are"], settings)
    assert len(texts) == 2 and all(len(samples) == 1 for samples in texts)
