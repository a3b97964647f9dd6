"""Memory methods: steer a frozen model with cached activations of a memory text.

From the "Changing the Mind of an LLM" GPT-2 experiments. The memory (a fact such as "The capital
of Vorland is Rome.", a tone such as "I am feeling happy.", an exemplary reply) is never put in the
prompt: it is run once through the frozen model and its activations are fed back in.

- `memory_add` (training-free): cache the memory's `attn_out` at layer L (by default at every
  memory position, added position by position to the start of the text; or its last position,
  or the mean over its positions, added everywhere) and add it, times the strength, to
  `attn_out` at layer L of the chosen positions of every forward pass (prompt and generated
  tokens alike, KV cache included).
- `memory_xattn` (trained): a cross-attention module reads the memory's cached `attn_out` at layer
  L (all positions) with queries from the current stream's `attn_out` at layer L-1; its output,
  times the strength, joins `attn_out` at layer L-1, so it flows through layer L-1's MLP and the
  frozen rest of the network. The module is trained once per (model, training config) on a text
  corpus (see `methods.memory_xattn`) and shared by every steering target; `fit` only caches the
  memory's activations and names the module.

Strength 0 attaches nothing, so it reproduces the unsteered model exactly.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal

import torch

from bench.architectures import hook_name
from bench.errors import UserError
from bench.method import Method
from bench.positions import TokenPositions, validate_position_spec
from bench.state import State
from bench.steering import attached
from bench.subject import Subject
from bench.target import SteeringTarget
from bench.tensors import OnDevices, placed
from methods.activations import forward_capture
from methods.memory_xattn import (
    MODULE_VERSION,
    MemoryCrossAttention,
    MemoryKV,
    TrainConfig,
    load_module,
    module_config,
    train_module,
)


def memory_tokens(subject: Subject, text: str, repeat: int = 1) -> tuple[list[int], int]:
    """Token ids of the memory (repeated `repeat` times, space-joined) and how many leading ids
    are special tokens the tokenizer adds itself (e.g. Llama's BOS)."""
    if not text.strip():
        raise UserError("memory text is empty")
    ids = subject.encode(" ".join([text] * repeat))
    n_special = len(subject.encode(""))
    if len(ids) > subject.max_length:
        raise UserError(
            f"memory text is {len(ids)} tokens, longer than the model's {subject.max_length}"
        )
    return ids, n_special


def memory_activations(
    subject: Subject, text: str, hookpoint: str, repeat: int = 1
) -> torch.Tensor:
    """The memory's activation at `hookpoint` at every one of its positions, (n_tokens, d_model)."""
    ids, _ = memory_tokens(subject, text, repeat)
    row = torch.tensor([ids], dtype=torch.long)
    acts = forward_capture(subject, row, torch.ones_like(row), [hookpoint])
    return acts[hookpoint][0].float().cpu()


def _position_mask(positions: TokenPositions | None, spec: str, hidden: torch.Tensor):
    """(batch, seq, 1) mask of the positions to steer, in `hidden`'s dtype."""
    if positions is None or positions.absolute.shape != hidden.shape[:2]:
        return torch.ones(*hidden.shape[:2], 1, dtype=hidden.dtype, device=hidden.device)
    return positions.select(spec)[..., None].to(device=hidden.device, dtype=hidden.dtype)


# ---------------------------------------------------------------------------- training-free
@dataclass(frozen=True)
class MemoryAddParams:
    # L (negative counts from the end); None: early (n_layers // 8) for the aligned pool, which
    # like ActAdd's front injection writes to the first positions and reaches later tokens only
    # through attention, so it must go in before the layers that read it; mid-depth
    # (n_layers // 2) for one vector added everywhere (the post used GPT-2's layer 11).
    layer: int | None = None
    # Which of the memory's attn_out vectors to add: its last position's, the mean over its
    # positions, or "aligned": memory token k's to sequence position k (after any BOS), as if
    # the memory's reading of itself were superimposed on the start of the text. Aligned keeps
    # the memory token by token, which a fact needs (one pooled vector loses which name goes
    # with which attribute); a pooled vector carries a tone or a preference (README: figures).
    pool: Literal["last", "mean", "aligned"] = "aligned"
    # all | prompt | generated | first:K. Prompt positions only: the memory shapes how the
    # prompt is read and the generated tokens are left alone, which costs far less fluency
    # than adding at every position for a similar effect.
    positions: str = "prompt"
    repeat: int = 1  # the memory text repeated this many times (the post repeated "Neil Armstrong")

    def __post_init__(self) -> None:
        validate_position_spec(self.positions)
        if self.repeat < 1:
            raise ValueError("repeat must be at least 1")


class MemoryAdd(Method):
    name = "memory_add"
    summary = "add the memory text's cached attn_out at layer L (training-free)"
    Params = MemoryAddParams
    default_strengths = (0.0, 1.0, 2.0, 3.0, 4.0)
    version = "3"  # 2: default layer mid-depth; 3: aligned pool by default, early layer

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.memory and target.memory.strip())

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        p = self.params
        default = subject.n_layers // 8 if p.pool == "aligned" else subject.n_layers // 2
        layer = default if p.layer is None else p.layer
        point = subject.hookpoint(hook_name(layer, "attn_out")).name
        acts = memory_activations(subject, target.memory or "", point, p.repeat)  # (m, d)
        _, n_special = memory_tokens(subject, target.memory or "", p.repeat)
        # Special tokens the tokenizer prepends (BOS) carry no memory content: leave them out of
        # the mean (they are often attention sinks with outsized activations).
        content = acts[n_special:] if acts.shape[0] > n_special else acts
        if p.pool == "aligned":
            vector = content  # (m, d_model)
        else:
            vector = content[-1] if p.pool == "last" else content.mean(0)  # (d_model,)
        return State(
            tensors={"vector": vector},
            meta={
                "hookpoint": point,
                "memory": target.memory,
                "n_tokens": int(acts.shape[0]),
                "offset": n_special,
            },
        )

    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        spec = self.params.positions
        # (d_model,) or, aligned, (m, d_model): scaled once here, not per forward call, and
        # copied once to the hooked layer's device and dtype (not the subject's: on a
        # dispatched model the layer may run elsewhere).
        delta = placed(state.tensors["vector"] * strength)
        if state.tensors["vector"].dim() == 2:
            return attached(
                subject, hooks=[(state.meta["hookpoint"], _aligned(delta, state.meta, spec))]
            )

        def add(hidden: torch.Tensor, positions: TokenPositions | None) -> torch.Tensor:
            # hidden: (batch, seq, d_model)
            return hidden + _position_mask(positions, spec, hidden) * delta.like(hidden)

        return attached(subject, hooks=[(state.meta["hookpoint"], add)])


def _aligned(delta: OnDevices[torch.Tensor], meta: dict, spec: str):
    """Hook adding memory token k's vector (`delta`, (m, d_model)) at absolute position
    offset + k of every row, where the position spec allows."""
    offset = int(meta.get("offset", 0))

    def add(hidden: torch.Tensor, positions: TokenPositions | None) -> torch.Tensor:
        # hidden: (batch, seq, d_model)
        if positions is None or positions.absolute.shape != hidden.shape[:2]:
            return hidden
        vectors = delta.like(hidden)  # (m, d_model)
        m = vectors.shape[0]
        k = positions.absolute - offset  # (batch, seq) memory index of each position
        inside = (k >= 0) & (k < m) & positions.select(spec)
        added = vectors[k.clamp(0, m - 1)]  # (batch, seq, d_model)
        return hidden + added * inside[..., None].to(hidden.dtype)

    return add


# ---------------------------------------------------------------------------- trained
@dataclass(frozen=True)
class MemoryXAttnParams:
    # L: keys/values from attn_out at L; queries from, and output into, attn_out at L-1.
    # None: mid-depth (n_layers // 2): the best of the layers tried on the testbed (README).
    layer: int | None = None
    positions: str = "all"  # all | prompt | generated | first:K
    heads: int = 4  # attention heads of the module (d_model must be divisible by it)
    # Training (once per model and training config; cached under <cache>/memory_xattn/<key>/).
    # "model": the documents the model was trained on, from its model source (a model whose
    # source has none skips this method); else a .txt / .jsonl(.gz) file or a `datasets` id
    # (see `methods.memory_corpus`).
    corpus: str = "model"
    corpus_split: str = "train"  # split of a `datasets` id
    text_field: str = "text"  # field of a .jsonl record or a `datasets` row
    corpus_texts: tuple[str, ...] = ()  # inline documents; when given, `corpus` is ignored
    max_documents: int = 4000  # documents drawn (seeded) from the corpus
    steps: int = 300  # optimiser steps; raise for a stronger module (e.g. 3000 on a GPU)
    batch_size: int = 8  # text windows per step
    seq_len: int = 64  # tokens per window
    lr: float = 2e-3
    seed: int = 0
    checkpoint_every: int = 50  # steps between resumable checkpoints (not part of the cache key)
    # CPU threads while training (0: torch's setting). One by default: the module's ops are too
    # small to gain from threads, whose overhead then dominates. Only rounding depends on it, so
    # it is not part of the cache key.
    threads: int = 1

    def __post_init__(self) -> None:
        validate_position_spec(self.positions)
        for name in ("heads", "batch_size", "max_documents", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.steps < 0 or self.threads < 0:
            raise ValueError("steps and threads must be >= 0")
        if self.seq_len < 8:
            raise ValueError("seq_len must be at least 8")
        if self.lr <= 0:
            raise ValueError("lr must be positive")

    def train_config(self, subject: Subject) -> TrainConfig:
        wanted = max(subject.n_layers // 2, 1) if self.layer is None else self.layer
        layer = subject.hookpoint(hook_name(wanted, "attn_out")).layer
        if layer < 1:
            raise UserError("memory_xattn: layer must be at least 1 (queries come from layer L-1)")
        if subject.d_model % self.heads:
            raise UserError(
                f"memory_xattn: heads={self.heads} does not divide d_model={subject.d_model}"
            )
        return TrainConfig(
            layer=layer,
            heads=self.heads,
            corpus=self.corpus,
            corpus_split=self.corpus_split,
            text_field=self.text_field,
            corpus_texts=self.corpus_texts,
            max_documents=self.max_documents,
            steps=self.steps,
            batch_size=self.batch_size,
            seq_len=self.seq_len,
            lr=self.lr,
            seed=self.seed,
        )


class MemoryXAttn(Method):
    name = "memory_xattn"
    summary = "trained cross-attention from layer L-1 to the memory's attn_out at layer L"
    Params = MemoryXAttnParams
    default_strengths = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)
    version = f"1-module{MODULE_VERSION}"  # fitted states name a module of this version

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.memory and target.memory.strip())

    def _training_options(self) -> dict:
        return {"checkpoint_every": self.params.checkpoint_every, "threads": self.params.threads}

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        config = self.params.train_config(subject)
        key = train_module(subject, config, **self._training_options())
        cfg = module_config(subject, config)
        memory = memory_activations(subject, target.memory or "", cfg.memory_point)  # (m, d)
        return State(
            tensors={"memory": memory},
            meta={"module": key, "memory_text": target.memory},
        )

    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        config = self.params.train_config(subject)
        key = state.meta["module"]
        # The module named by the state; if the cache lost it, retrain (same config, same key).
        module, cfg = load_module(key, subject.device)
        if module is None:
            key = train_module(subject, config, **self._training_options())
            module, cfg = load_module(key, subject.device)
        spec = self.params.positions
        memory = state.tensors["memory"].to(torch.float32)[None]  # (1, m, d)
        # The module and the memory's keys and values on the device of the layer the hook
        # reads (on a dispatched model not necessarily the subject's); the memory does not
        # change during generation, so each device loads and projects them once.
        readers = OnDevices(lambda device, _dtype: _reader(key, memory, device))

        def inject(hidden: torch.Tensor, positions: TokenPositions | None) -> torch.Tensor:
            # hidden: attn_out at layer L-1, (batch, seq, d_model)
            reader, kv = readers.on(hidden.device)
            with torch.no_grad():
                out = reader.attend(hidden.float(), kv)  # (batch, seq, d_model)
            mask = _position_mask(positions, spec, hidden)
            return hidden + (strength * out).to(hidden.dtype) * mask

        return attached(subject, hooks=[(cfg.query_point, inject)])


def _reader(
    key: str, memory: torch.Tensor, device: torch.device
) -> tuple[MemoryCrossAttention, MemoryKV]:
    """The trained module under `key` on `device`, and its projection of `memory` (1, m, d)."""
    module, _ = load_module(key, device)
    if module is None:  # the caller loaded it a moment ago: the cache lost it since
        raise UserError(f"memory_xattn: the trained module {key} left the cache while in use")
    with torch.no_grad():
        return module, module.memory_kv(memory.to(device))
