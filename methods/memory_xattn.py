"""The memory cross-attention module and its autoprogressive training.

Queries come from the current stream's `attn_out` at layer L-1, keys and values from the memory's
cached `attn_out` at layer L (every memory position, plus a learned "null" key with a zero value
so the module can attend to nothing when the memory is irrelevant). The output projection starts
at zero: an untrained module changes nothing. Its output is added to `attn_out` at layer L-1.

Training: the base model is frozen; the memory of each training window is a span of the window
itself run through the base model on its own (see `methods.memory_corpus`); the loss is the
next-token loss of the window with the module in place. One module is trained per (model
fingerprint, training config) and cached under `<cache_root>/memory_xattn/<key>/`:

    module.safetensors      the trained weights, with the module and training config as metadata
    checkpoint.safetensors  module + optimizer state every `checkpoint_every` steps while training;
                            an interrupted training resumes from it (removed when training ends)
    train.json              loss curve, held-out loss with and without the module, seconds

Train longer with the method's `steps` parameter (the default 300 is sized for a 2-core CPU and
the testbed; a GPT-2-sized model wants a few thousand on a GPU); a new value is a new cache key.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from bench.architectures import hook_name
from bench.errors import UserError
from bench.progress import progress_enabled
from bench.state import State, cache_root, content_key
from bench.steering import attached
from bench.subject import Subject
from bench.tensors import frozen
from bench.threads import torch_threads
from methods.activations import forward_capture
from methods.memory_corpus import (
    MODEL_CORPORA,
    Batch,
    Windows,
    load_texts,
    split_texts,
    texts_hash,
)

MODULE_VERSION = "1"  # bump when the module or its training changes, to retrain cached modules
WARMUP_STEPS = 20
EVAL_BATCHES = 4
LOG_WINDOW = 10  # steps averaged for the reported first / last loss


@dataclass(frozen=True)
class TrainConfig:
    """Everything the trained module depends on besides the model (hashed into its cache key)."""

    layer: int  # L, resolved (non-negative)
    heads: int
    corpus: str
    corpus_split: str
    text_field: str
    corpus_texts: tuple[str, ...]
    max_documents: int
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    seed: int


@dataclass(frozen=True)
class ModuleConfig:
    d_model: int
    heads: int
    query_point: str  # hook point the queries come from and the output goes to (L-1 attn_out)
    memory_point: str  # hook point of the memory's cached keys/values (L attn_out)


@dataclass(frozen=True)
class MemoryKV:
    """A memory's projected keys and values, the null slot first."""

    keys: torch.Tensor  # (batch or 1, heads, 1 + mem, d_head)
    values: torch.Tensor  # (batch or 1, heads, 1 + mem, d_head)
    mask: torch.Tensor | None  # (batch or 1, 1 + mem) bool, False on padding; None: no padding


class MemoryCrossAttention(nn.Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads, self.d_head = heads, d_model // heads
        self.norm_q = nn.LayerNorm(d_model)
        self.norm_kv = nn.LayerNorm(d_model)
        self.q = nn.Linear(d_model, d_model, bias=False)
        self.k = nn.Linear(d_model, d_model, bias=False)
        self.v = nn.Linear(d_model, d_model, bias=False)
        self.o = nn.Linear(d_model, d_model, bias=False)
        nn.init.zeros_(self.o.weight)  # an untrained module is a no-op
        # A key to attend to when nothing in the memory is relevant; its value is zero.
        self.null_key = nn.Parameter(torch.zeros(heads, self.d_head))

    def memory_kv(self, memory: torch.Tensor, mask: torch.Tensor | None = None) -> MemoryKV:
        """Project a memory (batch, mem, d_model), `mask` (batch, mem) 1 on real tokens."""
        b, m, _ = memory.shape
        kv = self.norm_kv(memory)
        keys = self.k(kv).view(b, m, self.heads, self.d_head).transpose(1, 2)
        values = self.v(kv).view(b, m, self.heads, self.d_head).transpose(1, 2)
        null_k = self.null_key[None, :, None, :].expand(b, -1, -1, -1)  # (b, heads, 1, d_head)
        keys = torch.cat([null_k, keys], dim=2)
        values = torch.cat([torch.zeros_like(null_k), values], dim=2)
        if mask is not None:
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1).bool()
        return MemoryKV(keys, values, mask)

    def attend(self, x: torch.Tensor, kv: MemoryKV) -> torch.Tensor:
        """Output for the stream `x` (batch, seq, d_model) -> (batch, seq, d_model)."""
        b, s, _ = x.shape
        q = self.q(self.norm_q(x)).view(b, s, self.heads, self.d_head).transpose(1, 2)
        keys, values = kv.keys, kv.values
        if keys.shape[0] != b:  # one memory shared by the whole batch
            keys, values = keys.expand(b, -1, -1, -1), values.expand(b, -1, -1, -1)
        mask = None if kv.mask is None else kv.mask[:, None, None, :]  # (b, 1, 1, 1 + mem)
        out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return self.o(out.transpose(1, 2).reshape(b, s, -1))

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.attend(x, self.memory_kv(memory, mask))


# ---------------------------------------------------------------------------- cache
_TEXTS: dict[tuple, list[str]] = {}
_KEYS: dict[tuple, str] = {}
_MODULES: dict[tuple, tuple[MemoryCrossAttention, ModuleConfig]] = {}


def module_config(subject: Subject, config: TrainConfig) -> ModuleConfig:
    return ModuleConfig(
        d_model=subject.d_model,
        heads=config.heads,
        query_point=hook_name(config.layer - 1, "attn_out"),
        memory_point=hook_name(config.layer, "attn_out"),
    )


def _own_corpus(subject: Subject, config: TrainConfig) -> object:
    """What tells the model's own corpus apart in the memos: the subject's function that reads
    it (kept alive by the memo, so its id is never reused); None for any other corpus."""
    own = config.corpus in MODEL_CORPORA and not config.corpus_texts
    return subject.training_corpus if own else None


def corpus_texts(subject: Subject, config: TrainConfig) -> list[str]:
    """The module's training documents (read once per process and corpus)."""
    spec = (
        config.corpus,
        config.corpus_split,
        config.text_field,
        config.corpus_texts,
        config.max_documents,
        config.seed,
    )
    memo = (_own_corpus(subject, config), spec)
    if memo not in _TEXTS:
        _TEXTS[memo] = load_texts(*spec, subject=subject)
    return _TEXTS[memo]


def module_key(subject: Subject, config: TrainConfig) -> str:
    """Content key of the module: model fingerprint, training config, the training text itself."""
    memo = (subject.fingerprint(), config, _own_corpus(subject, config))
    if memo not in _KEYS:
        digest = texts_hash(corpus_texts(subject, config))
        _KEYS[memo] = content_key(
            "memory_xattn", MODULE_VERSION, subject.fingerprint(), asdict(config), digest
        )
    return _KEYS[memo]


def module_dir(key: str) -> Path:
    return cache_root() / "memory_xattn" / key


def load_module(
    key: str, device: torch.device | str
) -> tuple[MemoryCrossAttention, ModuleConfig] | tuple[None, None]:
    """The trained module cached under `key` (frozen, eval mode), or (None, None)."""
    path = module_dir(key) / "module.safetensors"
    if not path.exists():
        return None, None
    memo = (str(path), path.stat().st_mtime_ns, str(device))
    if memo not in _MODULES:
        state = State.load(path)
        cfg = ModuleConfig(**state.meta["module"])
        module = MemoryCrossAttention(cfg.d_model, cfg.heads)
        module.load_state_dict(dict(state.tensors))
        module.to(device).eval().requires_grad_(False)
        _MODULES[memo] = (module, cfg)
    return _MODULES[memo]


def training_record(key: str) -> dict | None:
    """What `train.json` says about the module under `key` (loss curve, time), if trained."""
    path = module_dir(key) / "train.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------- training
def train_module(
    subject: Subject,
    config: TrainConfig,
    *,
    checkpoint_every: int = 50,
    progress: bool | None = None,
    threads: int = 0,
    stop_after: int | None = None,
) -> str:
    """Train (or resume, or reuse) the module for `subject` and `config`; returns its key.

    `threads` > 0 sets torch's CPU threads while training (restored afterwards). `progress`
    defaults to the run's setting (`bench.progress`; `steerbench run -q` turns it off).
    `stop_after` stops once that many steps are done, leaving the checkpoint behind as an
    interruption would (for budgeted runs and tests); the next call resumes.
    """
    key = module_key(subject, config)
    directory = module_dir(key)
    if (directory / "module.safetensors").exists():
        return key
    show = progress_enabled() if progress is None else progress
    with torch_threads(threads):
        _train(subject, config, key, checkpoint_every, show, stop_after)
    return key


def _train(
    subject: Subject,
    config: TrainConfig,
    key: str,
    checkpoint_every: int,
    progress: bool,
    stop_after: int | None,
) -> None:
    directory = module_dir(key)
    directory.mkdir(parents=True, exist_ok=True)
    cfg = module_config(subject, config)
    train_texts, held_texts = split_texts(corpus_texts(subject, config))
    windows = Windows(subject, train_texts, config.seq_len, config.seed)
    try:
        held = Windows(subject, held_texts, config.seq_len, config.seed + 1)
    except UserError:  # a corpus too small to hold documents out: evaluate on training text
        held = Windows(subject, train_texts, config.seq_len, config.seed + 1)
    device = subject.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        module = MemoryCrossAttention(cfg.d_model, cfg.heads).to(device)
    optimizer = torch.optim.Adam(module.parameters(), lr=config.lr)
    step, losses, seconds = _resume(directory / "checkpoint.safetensors", key, module, optimizer)
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="memory_xattn training",
        unit="step",
        disable=not progress,
    )
    with frozen(subject.model), bar:
        while step < config.steps:
            if stop_after is not None and step >= stop_after:
                return
            start = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = _learning_rate(config, step)
            loss = _loss(subject, module, cfg, windows.batch(step, config.batch_size))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            losses.append(round(loss.item(), 5))
            seconds += time.perf_counter() - start
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
            if step % checkpoint_every == 0 and step < config.steps:
                meta = {"key": key, "step": step, "losses": losses, "seconds": seconds}
                _save_checkpoint(directory / "checkpoint.safetensors", module, optimizer, meta)
    module.eval()
    with torch.no_grad():
        batches = [held.batch(i, config.batch_size) for i in range(EVAL_BATCHES)]
        eval_module = sum(float(_loss(subject, module, cfg, b)) for b in batches) / len(batches)
        eval_base = sum(float(_loss(subject, None, cfg, b)) for b in batches) / len(batches)
    window = min(LOG_WINDOW, len(losses)) or 1
    record = {
        "key": key,
        "module": asdict(cfg),
        "train": asdict(config),
        "model": subject.name,
        "model_fingerprint": subject.fingerprint(),
        "steps": config.steps,
        "seconds": round(seconds, 2),
        "first_loss": sum(losses[:window]) / window if losses else None,
        "last_loss": sum(losses[-window:]) / window if losses else None,
        "eval_loss_base": eval_base,
        "eval_loss_module": eval_module,
        "losses": losses,
    }
    State({k: v for k, v in module.state_dict().items()}, record).save(
        directory / "module.safetensors"
    )
    _write_json(directory / "train.json", record)
    (directory / "checkpoint.safetensors").unlink(missing_ok=True)


def _loss(
    subject: Subject, module: MemoryCrossAttention | None, cfg: ModuleConfig, batch: Batch
) -> torch.Tensor:
    """Next-token loss of the batch's windows, with the module reading each row's memory."""
    stream = batch.stream.to(subject.device)  # (batch, seq)
    hooks = []
    if module is not None:
        # The module trains where its optimiser put it (the input device). On a dispatched
        # model the layers it reads (L for the memory, L-1 for the stream) may run on other
        # devices: their activations are moved to the module and its output back to the
        # stream's device, copies autograd follows, so the gradients still reach the module.
        home = next(module.parameters()).device
        acts = forward_capture(subject, batch.memory, batch.memory_mask, [cfg.memory_point])
        memory = acts[cfg.memory_point].float().to(home)  # (batch, mem, d_model)
        kv = module.memory_kv(memory, batch.memory_mask.to(home))

        def inject(hidden: torch.Tensor, positions) -> torch.Tensor:
            out = module.attend(hidden.float().to(home), kv)
            return hidden + out.to(device=hidden.device, dtype=hidden.dtype)

        hooks.append((cfg.query_point, inject))
    with attached(subject, hooks=hooks):
        logits = subject.model(input_ids=stream, attention_mask=torch.ones_like(stream)).logits
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), stream[:, 1:].flatten())


def _learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to a tenth: a function of the step alone (resumable)."""
    warm = min(1.0, (step + 1) / WARMUP_STEPS)
    decay = 0.5 * (1 + math.cos(math.pi * step / max(config.steps, 1)))
    return config.lr * warm * (0.1 + 0.9 * decay)


def _save_checkpoint(
    path: Path, module: nn.Module, optimizer: torch.optim.Optimizer, meta: dict
) -> None:
    tensors = {f"module.{k}": v for k, v in module.state_dict().items()}
    for index, slots in optimizer.state_dict()["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value)
    State(tensors, meta).save(path)


def _resume(
    path: Path, key: str, module: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[int, list[float], float]:
    """Load a checkpoint into `module` and `optimizer`; (step, losses so far, seconds so far)."""
    if not path.exists():
        return 0, [], 0.0
    state = State.load(path)
    if state.meta.get("key") != key:
        return 0, [], 0.0
    module.load_state_dict({k[7:]: v for k, v in state.tensors.items() if k.startswith("module.")})
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in state.tensors.items():
        if name.startswith("optim."):
            _, index, field = name.split(".", 2)
            slots.setdefault(int(index), {})[field] = value
    optimizer.load_state_dict(
        {"state": slots, "param_groups": optimizer.state_dict()["param_groups"]}
    )
    return int(state.meta["step"]), list(state.meta["losses"]), float(state.meta["seconds"])


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)
