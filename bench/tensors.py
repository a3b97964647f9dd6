"""Tensor plumbing shared by the subject and the methods: padded token batches, frozen weights,
tensors a hook combines with activations.

One definition each, so that every batch is padded the same way (the positions hooks see depend
on the padding side), every frozen model gets its flags back and every hook meets its
activation on the activation's own device and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, Literal, TypeVar

import torch

T = TypeVar("T")


def padded(
    rows: Sequence[Sequence[int]],
    pad: int,
    *,
    side: Literal["left", "right"],
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one batch: (ids, attention mask), both long (len(rows), longest row).

    Left padding puts each row's tokens at the end (generation continues every row from the
    last column); right padding puts them first (a plain forward reads position i of every row
    as its i-th token). Padding holds `pad` and mask 0; empty rows are all padding.
    """
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span] = torch.tensor(list(row), dtype=torch.long)
        mask[i, span] = 1
    if device is not None:
        ids, mask = ids.to(device), mask.to(device)
    return ids, mask


def position_ids_of(mask: torch.Tensor) -> torch.Tensor:
    """Each token's index among its row's real tokens, (batch, seq); 0 on left padding.

    Models that derive positions from the attention mask do so only in `generate`; a plain
    forward of a left-padded batch needs them passed in, or each row's first token would sit at
    the position of the padding before it.
    """
    return (mask.cumsum(-1) - 1).clamp(min=0)


@contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
    """The model's parameters stop requiring grad inside (gradients flow to the activations and
    to whatever is trained next to the model, never into its weights); flags restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class OnDevices(Generic[T]):
    """Something a hook combines with activations, made for the device (and dtype) of each
    activation it meets.

    On a model dispatched over several devices each hooked module runs on its own device, which
    need not be the subject's (`Subject.device` is where inputs go), and its activations need
    not have the dtype of the model's first weights either: what a hook adds to, multiplies
    with or indexes an activation must be where the activation is, in its dtype. `make(device, dtype)` builds it
    there; with `cache`, once per (device, dtype), so a steered generation pays for the copy
    once, not at every forward call.
    """

    def __init__(
        self, make: Callable[[torch.device, torch.dtype | None], T], *, cache: bool = True
    ) -> None:
        self._make = make
        self._cache = cache
        self._made: dict[tuple[torch.device, torch.dtype | None], T] = {}

    def on(self, device: torch.device, dtype: torch.dtype | None = None) -> T:
        """The thing on `device`; in `dtype` where that applies (None: its own)."""
        if not self._cache:
            return self._make(device, dtype)
        key = (device, dtype)
        if key not in self._made:
            self._made[key] = self._make(device, dtype)
        return self._made[key]

    def like(self, activation: torch.Tensor) -> T:
        """The thing on `activation`'s device and in its dtype."""
        return self.on(activation.device, activation.dtype)


def placed(tensor: torch.Tensor, row: int | None = None) -> OnDevices[torch.Tensor]:
    """`tensor` (or its `row`, `tensor[row]`) on the device and dtype each hook asks for.

    A tensor that requires grad (trained, or probed for a gradient) is copied at every call
    instead of once: the copy is then part of that call's graph, so gradients flow back to the
    tensor on its own device, and an optimiser's in-place update is never hidden behind a stale
    copy. On the tensor's own device and dtype the "copy" is the tensor itself (`Tensor.to`).
    """

    def make(device: torch.device, dtype: torch.dtype | None) -> torch.Tensor:
        picked = tensor if row is None else tensor[row]
        return picked.to(device=device, dtype=dtype)

    return OnDevices(make, cache=not tensor.requires_grad)
