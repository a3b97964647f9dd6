"""The prefix controller's module: gated prefix key/values read by every token, per layer.

At each controlled layer the stream leaving the block (`resid_post`, (batch, seq, d)) attends,
with H heads of its own softmax, to P learned prefix slots and adds what it reads:

    h <- h + strength * sum_heads softmax_P(LN(h) @ keys) @ values
    keys (d, H * P), values (H * P, d) per layer

This is prefix-tuning's key/value prefix in the gated, separate-softmax form of LLaMA-Adapter /
peft's AdaptionPrompt (the form the SelfControl paper trains as its prefix controller), written
in residual space: the frozen query projection and the output projection are absorbed into the
learned keys and values (q.k = LN(h) W_q^T k, W_o v), which makes the module the same for every
architecture and attachable through ordinary `resid_post` hooks (correct under left padding and
KV cache, and for generation and scoring alike, with no generation override). Values start at
zero, so an untrained prefix is exactly the unsteered model; strength scales the prefix's whole
contribution linearly (0 = unsteered, 1 = as trained, > 1 extrapolates).

Training (`train_prefix`) minimises the MSE between the subject's `resid_post` states with the
prefix and target states (a teacher's steered states) at the prompt positions of every layer.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from bench.architectures import hook_name
from bench.positions import TokenPositions
from bench.steering import attached
from bench.subject import HookFn, Subject
from bench.tensors import frozen, padded, placed, position_ids_of


class PrefixHooks:
    """`resid_post` hooks applying the prefix at `layers` (keys (K, d, H*P), values (K, H*P, d))."""

    def __init__(
        self,
        layers: Sequence[int],
        keys: torch.Tensor,
        values: torch.Tensor,
        heads: int,
        strength: float = 1.0,
    ) -> None:
        self.layers = tuple(layers)
        self.keys, self.values, self.heads = keys, values, heads
        self.strength = strength
        # Layer k's keys and values on the device and dtype of its activations (on a dispatched
        # model its own device): copied once per device when steering, at every call while
        # they are trained (`placed`).
        self._keys = [placed(keys, k) for k in range(len(self.layers))]
        self._values = [placed(values, k) for k in range(len(self.layers))]

    def hooks(self) -> list[tuple[str, HookFn]]:
        return [
            (hook_name(layer, "resid_post"), self._hook(k)) for k, layer in enumerate(self.layers)
        ]

    def _hook(self, k: int) -> HookFn:
        def hook(hidden: torch.Tensor, positions: TokenPositions) -> torch.Tensor:
            return hidden + self.read(k, hidden)

        return hook

    def read(self, k: int, hidden: torch.Tensor) -> torch.Tensor:
        """What layer k's prefix adds to `hidden` (batch, seq, d)."""
        z = F.layer_norm(hidden, hidden.shape[-1:])  # the affine part is absorbed by the keys
        logits = z @ self._keys[k].like(hidden)  # (batch, seq, H * P)
        weights = logits.unflatten(-1, (self.heads, -1)).softmax(-1).flatten(-2)  # per head
        return self.strength * (weights @ self._values[k].like(hidden))


class Recorder:
    """`resid_post` hooks that keep each layer's output (after any earlier hook's edit), stacked
    on `device`.

    On a dispatched model the layers run on several devices; their states are gathered on one
    (the input device, where the targets they are compared with are), by copies autograd
    follows, so a loss on the stack still trains what the hooks added on each layer's device.
    """

    def __init__(self, layers: Sequence[int], device: torch.device) -> None:
        self.layers = tuple(layers)
        self.device = device
        self.states: dict[int, torch.Tensor] = {}

    def hooks(self) -> list[tuple[str, HookFn]]:
        def make(layer: int) -> HookFn:
            def hook(hidden: torch.Tensor, positions: TokenPositions) -> None:
                self.states[layer] = hidden

            return hook

        return [(hook_name(layer, "resid_post"), make(layer)) for layer in self.layers]

    def stacked(self) -> torch.Tensor:  # (n_layers, batch, seq, d)
        return torch.stack([self.states[layer].to(self.device) for layer in self.layers])


@dataclass(frozen=True)
class Batch:
    """Prompt rows, left padded: ids / mask / position ids (b, W)."""

    ids: torch.Tensor
    mask: torch.Tensor
    position_ids: torch.Tensor

    @classmethod
    def of(cls, subject: Subject, rows: Sequence[Sequence[int]]) -> Batch:
        pad = subject.tokenizer.pad_token_id
        ids, mask = padded(rows, pad, side="left", device=subject.device)
        return cls(ids, mask, position_ids_of(mask))

    def forward(self, subject: Subject) -> None:
        subject.model(
            input_ids=self.ids,
            attention_mask=self.mask,
            position_ids=self.position_ids,
            logits_to_keep=1,
        )


@contextmanager
def recording(subject: Subject) -> Iterator[Recorder]:
    """Record every layer's `resid_post` (hooks attached after any already in place)."""
    recorder = Recorder(range(subject.n_layers), subject.device)
    with attached(subject, hooks=recorder.hooks()):
        yield recorder


def record_states(subject: Subject, batch: Batch) -> torch.Tensor:
    """resid_post of every layer for `batch`, (n_layers, b, W, d), under current attachments."""
    with torch.no_grad(), recording(subject) as recorder:
        batch.forward(subject)
        return recorder.stacked()


@dataclass(frozen=True)
class TrainConfig:
    heads: int
    prefix_len: int
    steps: int
    lr: float
    batch_size: int
    seed: int
    weight_decay: float = 0.0  # AdamW decay of keys and values (keeps unseen-token reads small)


def train_prefix(
    subject: Subject,
    layers: Sequence[int],
    batches: Sequence[tuple[Batch, torch.Tensor, torch.Tensor]],
    cfg: TrainConfig,
) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Fit keys/values so that resid_post with the prefix matches the targets.

    `batches`: (token batch, target states (n_layers, b, W, d), positions to match (b, W)
    bool); the loss is the MSE over every layer at those positions. Returns keys, values and
    the loss per step.
    """
    d, slots = subject.d_model, cfg.heads * cfg.prefix_len
    # Trained on the input device, with the targets; each layer's hook copies them to its own
    # device at every call (`PrefixHooks`), and the recorder brings the states back here.
    generator = torch.Generator().manual_seed(cfg.seed)
    keys = (torch.randn(len(layers), d, slots, generator=generator) / math.sqrt(d)).to(
        subject.device
    )
    values = torch.zeros(len(layers), slots, d, device=subject.device)
    keys.requires_grad_(True)
    values.requires_grad_(True)
    optimiser = torch.optim.AdamW([keys, values], lr=cfg.lr, weight_decay=cfg.weight_decay)
    prefix = PrefixHooks(layers, keys, values, cfg.heads)
    losses = []
    with (
        frozen(subject.model),
        torch.enable_grad(),
        attached(subject, hooks=prefix.hooks()),
        recording(subject) as recorder,
    ):
        for step in range(cfg.steps):
            batch, target, trained = batches[step % len(batches)]
            batch.forward(subject)
            states = recorder.stacked()  # (n_layers, b, W, d)
            mask = trained[None, :, :, None].expand_as(states)
            loss = F.mse_loss(states[mask], target[mask])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
            recorder.states.clear()
    return keys.detach(), values.detach(), losses
