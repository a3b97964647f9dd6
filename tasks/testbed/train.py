"""Training the testbed model: a byte-level BPE tokenizer and a small GPT-2, on the CPU.

Deterministic for a given machine and thread count: seeded initialisation, a seeded block order,
``torch.use_deterministic_algorithms(True)`` and a fixed number of intra-op threads (the thread
count changes the floating-point summation order, so it is part of the recipe).

Training runs in float32: every x86 CPU computes it natively, whereas bf16 autocast is emulated
(several times slower) on CPUs without AVX512-BF16 or AMX. The kernels a CPU picks (AVX2 or
AVX512) still change the last bits of the weights, so a build records the CPU capability and
torch version it ran on (``build_environment``) next to the recipe.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

EOS, PAD = "<|endoftext|>", "<|pad|>"


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the model besides the seed."""

    n_docs: int = 90_000
    tokenizer_docs: int = 20_000  # documents the BPE is trained on
    vocab_size: int = 2048
    n_ctx: int = 128
    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    batch_size: int = 16
    steps: int = 1000
    lr: float = 5e-3
    warmup: int = 50
    weight_decay: float = 0.05
    threads: int = 2  # intra-op threads: part of the recipe, results depend on it
    precision: str = "float32"  # of the forward and backward passes (the only one offered)

    def __post_init__(self) -> None:
        if self.precision != "float32":
            raise ValueError(
                f"testbed precision {self.precision!r}: only 'float32' is built (bf16 is "
                "emulated, several times slower, on CPUs without native support)"
            )

    def fingerprint(self) -> str:
        """A short content hash of every field: part of the testbed's cache identity, so
        builds of different recipes never share a directory (or a result baseline)."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


def build_environment() -> dict[str, str]:
    """What besides the recipe shapes the weights' last bits: torch and the CPU kernels."""
    return {"torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def weights_hash(model: torch.nn.Module) -> str:
    """SHA-256 over parameter names, shapes, dtypes and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------ tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int, n_ctx: int):
    """A byte-level BPE (GPT-2 style pre-tokenisation) wrapped as ``PreTrainedTokenizerFast``
    with ``<|endoftext|>`` as bos/eos/unk, a separate ``<|pad|>`` and left padding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS, PAD],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
        pad_token=PAD,
        model_max_length=n_ctx,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def encode(tokenizer, texts: Sequence[str]) -> torch.Tensor:
    """One stream: doc, EOS, doc, EOS, ... (1-D int64)."""
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for enc in tokenizer.backend_tokenizer.encode_batch(list(texts), add_special_tokens=False):
        stream.extend(enc.ids)
        stream.append(eos)
    return torch.tensor(stream, dtype=torch.long)


# ------------------------------------------------------------------------------ training


@contextlib.contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


def make_model(tokenizer, recipe: Recipe):
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=recipe.n_ctx,
        n_embd=recipe.n_embd,
        n_layer=recipe.n_layer,
        n_head=recipe.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPT2LMHeadModel(config)


def _lr(step: int, recipe: Recipe) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak."""
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(1, recipe.steps - recipe.warmup)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _batches(ids: torch.Tensor, recipe: Recipe, seed: int) -> Iterator[torch.Tensor]:
    """[batch, n_ctx] blocks of the token stream, in a seeded order, epoch after epoch."""
    n_blocks = ids.numel() // recipe.n_ctx
    if n_blocks < recipe.batch_size:
        raise ValueError(f"corpus too small: {n_blocks} blocks < batch {recipe.batch_size}")
    blocks = ids[: n_blocks * recipe.n_ctx].view(n_blocks, recipe.n_ctx)
    gen = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(n_blocks, generator=gen)
        for i in range(0, n_blocks - recipe.batch_size + 1, recipe.batch_size):
            yield blocks[order[i : i + recipe.batch_size]]


ESTIMATE_AFTER = 20  # steps timed before the build prints how long training will take


def train_model(ids: torch.Tensor, tokenizer, recipe: Recipe, seed: int, progress: bool = True):
    """Train a fresh GPT-2 on the token stream; returns (model in eval mode, final avg loss).

    With ``progress``, prints an estimate of the training time once the first steps are timed
    (the first step, which warms up allocators and kernels, is not counted)."""
    from tqdm.auto import tqdm

    with _torch_settings(recipe.threads):
        torch.manual_seed(seed)
        model = make_model(tokenizer, recipe)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "wpe" not in n]
        rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "wpe" not in n)]
        opt = torch.optim.AdamW(
            [{"params": decay, "weight_decay": recipe.weight_decay},
             {"params": rest, "weight_decay": 0.0}],
            lr=recipe.lr, betas=(0.9, 0.95),
        )  # fmt: skip
        model.train()
        batches = _batches(ids, recipe, seed)
        bar = tqdm(range(recipe.steps), desc="testbed: training", disable=not progress)
        ema = None
        started = None
        for step in bar:
            if step == 1:
                started = time.perf_counter()
            elif step == ESTIMATE_AFTER + 1 and progress and started is not None:
                _print_estimate((time.perf_counter() - started) / ESTIMATE_AFTER, recipe.steps)
            for group in opt.param_groups:
                group["lr"] = _lr(step, recipe)
            x = next(batches)
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{ema:.3f}")
        model.eval()
    return model, float(ema or float("nan"))


def _print_estimate(seconds_per_step: float, steps: int) -> None:
    total = seconds_per_step * steps
    print(
        f"testbed: {seconds_per_step:.2f} s per training step on this CPU "
        f"({build_environment()['cpu_capability']}, {torch.get_num_threads()} threads): "
        f"training takes about {total / 60:.1f} min",
        file=sys.stderr,
        flush=True,
    )
