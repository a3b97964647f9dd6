"""Tensor plumbing shared by the subject and the methods: padded token batches, frozen weights.

One definition each, so that every batch is padded the same way (the positions hooks see depend
on the padding side) and every frozen model gets its flags back.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch


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
