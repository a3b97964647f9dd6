"""Activation reading shared by the methods, and the vector-adding steering hook.

Reading: `forward_capture` reads the activations at some hook points in one forward pass (the
same hook points vectors are later added at, so fitting and steering see the same space) and
stops the pass once it has them. `collect` tokenises texts the way prompts are
(`Subject.encode`), sorts them by length, and reads them in right-padded chunks: one forward
per chunk, never one per text.

Steering: `AddVector` adds a vector (d,) at the positions a spec selects, or an ActAdd matrix
(k, d) at absolute prompt positions 0..k-1. It does tensor ops only (no `.item()`, no Python
loop over tokens) and caches the delta on the activation's device/dtype and the position mask
per forward call, so a steered generation costs next to nothing over an unsteered one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch

from bench.positions import TokenPositions
from bench.steering import attached
from bench.subject import Subject
from bench.tensors import placed

Reduce = Literal["last", "mean", "none"]


def n_leading_special(subject: Subject) -> int:
    """How many special tokens `Subject.encode` puts before any text (e.g. 1 for a BOS)."""
    return len(subject.encode(""))


def encode_texts(subject: Subject, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as a prompt; too long texts keep their last tokens."""
    rows = [subject.encode(t)[-subject.max_length :] for t in texts]
    fallback = subject.tokenizer.eos_token_id
    return [r or [fallback] for r in rows]


class _Captured(Exception):
    """Raised by a capture hook once every wanted activation is read, to stop the forward."""


def forward_capture(
    subject: Subject, ids: torch.Tensor, mask: torch.Tensor, points: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Activations (batch, seq, d_model) at each hook point for one forward of `ids` (batch,
    seq) under attention `mask`, without gradient, as the steering attached so far makes them.

    The forward stops once the last of them is read: the layers after it cannot change them.
    """
    captured: dict[str, torch.Tensor] = {}
    wanted = set(points)

    def capture(name: str) -> Callable:
        def fn(hidden: torch.Tensor, positions: TokenPositions) -> None:
            captured[name] = hidden.detach()
            if len(captured) == len(wanted):
                raise _Captured

        return fn

    device = subject.device
    try:
        with torch.no_grad(), attached(subject, hooks=[(p, capture(p)) for p in points]):
            subject.model(input_ids=ids.to(device), attention_mask=mask.to(device))
    except _Captured:
        pass
    return captured


def collect(
    subject: Subject,
    texts: Sequence[str],
    points: Sequence[str],
    *,
    reduce: Literal["last", "mean"] = "last",
    batch_size: int = 16,
) -> torch.Tensor:
    """Activations of each text at each hook point, float32: (len(points), len(texts), d_model).

    reduce="last": the last token (the answer position of CAA); "mean": the mean over the
    text's own tokens (special tokens the tokenizer prepends are left out).
    """
    rows = encode_texts(subject, texts)
    skip = n_leading_special(subject)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    # Gathered on the input device, where the mask and lengths are: on a dispatched model the
    # hook points' activations come from layers on other devices, and each is moved here before
    # it is reduced and stored (no copy when it is here already).
    out = torch.empty(len(points), len(rows), subject.d_model, device=subject.device)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = subject.padded([rows[i] for i in chunk], side="right")
        acts = forward_capture(subject, ids, mask, points)
        lengths = mask.sum(-1)  # (batch,)
        index = torch.tensor(chunk, device=subject.device)
        for p, point in enumerate(points):
            hidden = acts[point].float().to(out.device)  # (batch, seq, d_model)
            if reduce == "last":
                picked = hidden[torch.arange(len(chunk), device=hidden.device), lengths - 1]
            else:
                keep = mask.clone()
                # Leave the prepended specials out unless that would leave nothing.
                keep[:, :skip] = keep[:, :skip] * (lengths <= skip)[:, None]
                weights = keep.float()[..., None]  # (batch, seq, 1)
                picked = (hidden * weights).sum(1) / weights.sum(1)
            out[p, index] = picked
    return out


def text_logprobs(subject: Subject, texts: Sequence[str], *, batch_size: int = 16) -> torch.Tensor:
    """Mean per-token log-probability of each text's tokens after its first, (len(texts),).

    Runs under whatever steering is attached; used to score layers by their causal effect.
    """
    rows = encode_texts(subject, texts)
    out = torch.empty(len(rows))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = subject.padded([rows[i] for i in chunk], side="right")
        with torch.no_grad():
            logits = subject.model(input_ids=ids, attention_mask=mask).logits
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)  # (batch, seq-1, vocab)
        picked = logp.gather(-1, ids[:, 1:, None]).squeeze(-1)  # (batch, seq-1)
        weights = mask[:, 1:].float()
        mean = (picked * weights).sum(-1) / weights.sum(-1).clamp(min=1)
        out[torch.tensor(chunk)] = mean.cpu()
    return out


class PositionMask:
    """The (batch, seq, 1) mask of one position spec, computed once per forward call.

    A steer context shares one instance between its hooks (one per layer), so a multi-layer
    vector computes the mask once per call, not once per layer.
    """

    def __init__(self, select: Callable[[TokenPositions], torch.Tensor]) -> None:
        self._select = select
        # The positions object of the last call is kept (not its id, which could be reused).
        self._positions: TokenPositions | None = None
        self._mask: torch.Tensor | None = None

    def __call__(self, positions: TokenPositions, dtype: torch.dtype) -> torch.Tensor:
        if positions is not self._positions or self._mask is None or self._mask.dtype != dtype:
            self._mask = self._select(positions).to(dtype)[..., None]
            self._positions = positions
        return self._mask


def per_row(positions: TokenPositions) -> TokenPositions:
    """`positions` with one prompt length per row.

    Workaround: `Subject.generate` declares one prompt length per prompt, but with
    num_return_sequences = n Hugging Face repeats each prompt's row n times (repeat_interleave),
    so the batch has n times more rows than lengths. Expand the lengths the same way.
    """
    rows, lengths = positions.absolute.shape[0], positions.prompt_lengths
    if lengths.shape[0] == rows or rows % max(lengths.shape[0], 1):
        return positions
    return TokenPositions(positions.absolute, lengths.repeat_interleave(rows // lengths.shape[0]))


def spec_mask(spec: str) -> PositionMask | None:
    """The mask of a position spec; None for "all".

    "all" adds at padding too: no real token attends to a padding position (left padding is
    masked out, right padding comes after), so the outputs are those of adding at real tokens
    only, and the hook saves the mask ops (this is also what lm-eval's steered model does).
    """
    if spec == "all":
        return None
    return PositionMask(lambda positions: per_row(positions).select(spec))


def first_prompt_mask(k: int) -> PositionMask:
    """Prompt positions 0..k-1 (ActAdd's injection window); never generated tokens."""
    return PositionMask(lambda positions: per_row(positions).prompt() & (positions.absolute < k))


class AddVector:
    """Steering hook: hidden + delta at the masked positions.

    delta (d_model,): added at every selected position (every position when mask is None).
    delta (k, d_model): row j added at absolute position j (ActAdd); the mask restricts to j < k.
    """

    def __init__(self, delta: torch.Tensor, mask: PositionMask | None) -> None:
        self._delta = placed(delta)
        self._mask = mask

    def __call__(self, hidden: torch.Tensor, positions: TokenPositions) -> torch.Tensor:
        delta = self._delta.like(hidden)
        if self._mask is None:  # every position (a vector)
            return hidden + delta
        mask = self._mask(positions, hidden.dtype)  # (batch, seq, 1)
        if delta.dim() == 1:
            return hidden + delta * mask
        index = positions.absolute.clamp(0, delta.shape[0] - 1)  # (batch, seq)
        return hidden + delta[index] * mask  # delta[index]: (batch, seq, d_model)
