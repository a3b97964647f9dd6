"""Absolute token positions of the tokens in the current forward pass.

Steering hooks must know, for every row of a batch, which of the tokens they see belong to the
prompt and which were generated, whatever the padding and however many KV-cache decode steps
came before. `PositionTracker` is a forward pre-hook on the top-level model that reads the
attention mask of each call and publishes a `TokenPositions` for the hooks of that call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TokenPositions:
    """Positions of the tokens in one forward call.

    absolute:       (batch, seq) index of each token among its row's real tokens; -1 on padding.
    prompt_lengths: (batch,) number of real prompt tokens in each row.
    """

    absolute: torch.Tensor
    prompt_lengths: torch.Tensor

    @property
    def real(self) -> torch.Tensor:  # (batch, seq) bool
        return self.absolute >= 0

    def to(self, device: torch.device) -> TokenPositions:
        """These positions on `device` (a hook on a module of a dispatched model, which runs
        where its module's weights are)."""
        if self.absolute.device == device:
            return self
        return TokenPositions(self.absolute.to(device), self.prompt_lengths.to(device))

    def prompt(self) -> torch.Tensor:  # (batch, seq) bool
        return self.real & (self.absolute < self.prompt_lengths[:, None])

    def generated(self) -> torch.Tensor:  # (batch, seq) bool
        return self.absolute >= self.prompt_lengths[:, None]

    def first(self, k: int) -> torch.Tensor:  # (batch, seq) bool
        return self.real & (self.absolute < k)

    def select(self, spec: str) -> torch.Tensor:
        """Mask for a position spec: 'all', 'prompt', 'generated' or 'first:K'."""
        if spec == "all":
            return self.real
        if spec == "prompt":
            return self.prompt()
        if spec == "generated":
            return self.generated()
        if spec.startswith("first:"):
            return self.first(int(spec.split(":", 1)[1]))
        raise ValueError(f"unknown position spec '{spec}'; use all, prompt, generated or first:K")


def validate_position_spec(spec: str) -> str:
    """Raise ValueError for a malformed spec; return it unchanged otherwise."""
    TokenPositions(torch.zeros(1, 1, dtype=torch.long), torch.ones(1, dtype=torch.long)).select(
        spec
    )
    return spec


class PositionTracker:
    """Forward pre-hook on a causal LM that records the positions of each call's tokens.

    A call whose tokens span the whole attention mask starts a sequence (no KV cache before
    it): every real token in it counts as prompt unless `prompt_lengths` overrides that. Later
    calls (decode steps) keep the prompt lengths of the call that started the sequence.
    """

    def __init__(self) -> None:
        self.current: TokenPositions | None = None
        self._override: torch.Tensor | None = None

    @contextmanager
    def prompt_lengths(self, lengths: torch.Tensor) -> Iterator[None]:
        """Declare how many leading real tokens of each row are prompt (e.g. for scoring)."""
        previous, self._override = self._override, lengths
        try:
            yield
        finally:
            self._override = previous

    def __call__(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        tokens = kwargs.get("input_ids")
        if tokens is None:
            tokens = args[0] if args and torch.is_tensor(args[0]) else kwargs.get("inputs_embeds")
        if tokens is None:
            return
        batch, seq = tokens.shape[0], tokens.shape[1]
        mask = kwargs.get("attention_mask")
        if mask is None or mask.dim() != 2:
            past = self._past_length(kwargs)
            mask = torch.ones(batch, past + seq, dtype=torch.long, device=tokens.device)
        mask = mask.to(torch.long)
        absolute = (mask.cumsum(-1) - 1)[:, -seq:]
        absolute = absolute.masked_fill(mask[:, -seq:] == 0, -1)
        starts_sequence = seq == mask.shape[1]
        if starts_sequence or self.current is None or self.current.absolute.shape[0] != batch:
            lengths = self._override if self._override is not None else mask.sum(-1)
            if lengths.shape[0] != batch and batch % lengths.shape[0] == 0:
                # generate(num_return_sequences=n) repeats each row n times after we declared.
                lengths = lengths.repeat_interleave(batch // lengths.shape[0])
        else:
            lengths = self.current.prompt_lengths
        self.current = TokenPositions(absolute, lengths.to(absolute.device))

    @staticmethod
    def _past_length(kwargs: dict) -> int:
        for key in ("cache", "past_key_values"):
            cache = kwargs.get(key)
            if cache is not None and hasattr(cache, "get_seq_length"):
                return int(cache.get_seq_length())
        return 0
