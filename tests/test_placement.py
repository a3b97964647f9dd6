"""What a hook combines with an activation is put on the activation's device and in its dtype
(`bench.tensors.placed`): on a model dispatched over several devices each layer runs on its own
device, which need not be `Subject.device`. The meta device stands in for another device."""

from __future__ import annotations

import torch

from bench.tensors import OnDevices, placed

META, CPU = torch.device("meta"), torch.device("cpu")


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
