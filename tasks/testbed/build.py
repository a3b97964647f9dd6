"""Build the testbed model: corpus -> byte-level BPE tokenizer -> small GPT-2, trained on the CPU.

``ensure_testbed()`` returns a directory that ``AutoModelForCausalLM.from_pretrained`` and
``AutoTokenizer.from_pretrained`` load, building it on first use. The directory is
``<cache root>/testbed/v{GENERATOR_VERSION}-seed{seed}``; the cache root is the ``cache_dir``
argument, else ``$STEERBENCH_CACHE``, else ``~/.cache/steerbench``. A build is written into a
temporary sibling directory and renamed into place, under a file lock, so an interrupted or
concurrent build never leaves (or reads) a half-written model. ``testbed.json`` beside the
weights records the recipe, timings and SHA-256 hashes of corpus, tokenizer and weights.

Training is deterministic for a given machine and thread count: seeded init, a seeded block
order, ``torch.use_deterministic_algorithms(True)`` and a fixed number of intra-op threads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .world import GENERATOR_VERSION, corpus_hash, generate_corpus

EOS, PAD = "<|endoftext|>", "<|pad|>"
INFO_FILE = "testbed.json"


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
    steps: int = 1500
    lr: float = 3e-3
    warmup: int = 60
    weight_decay: float = 0.05
    threads: int = 2  # intra-op threads: part of the recipe, results depend on it
    bf16: bool = True  # bf16 autocast for matmuls (fp32 master weights): ~1.3x on AVX512-BF16


DEFAULT_RECIPE = Recipe()
# Intra-op threads of a default build. 2 is fastest on an idle 2-core machine; on a machine
# shared with other jobs 1 avoids OpenMP threads waiting on each other (several times faster
# there). Weights are deterministic for a given thread count, so it is recorded.
THREADS_ENV = "STEERBENCH_TESTBED_THREADS"


def default_recipe() -> Recipe:
    """``DEFAULT_RECIPE``, with ``threads`` from ``$STEERBENCH_TESTBED_THREADS`` when set."""
    env = os.environ.get(THREADS_ENV, "").strip()
    if not env:
        return DEFAULT_RECIPE
    if not env.isdigit() or int(env) < 1:
        raise ValueError(f"{THREADS_ENV} must be a positive integer, got {env!r}")
    return dataclasses.replace(DEFAULT_RECIPE, threads=int(env))


@dataclass(frozen=True)
class BuildInfo:
    path: Path
    generator_version: int
    seed: int
    recipe: Recipe
    corpus_sha256: str
    tokenizer_sha256: str
    weights_sha256: str
    n_tokens: int
    final_loss: float
    timings: dict[str, float]

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


# ------------------------------------------------------------------------------ cache paths


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """``cache_dir``, else ``$STEERBENCH_CACHE``, else ``~/.cache/steerbench``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("STEERBENCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "steerbench"


def testbed_dir(seed: int = 0, cache_dir: Path | str | None = None) -> Path:
    return cache_root(cache_dir) / "testbed" / f"v{GENERATOR_VERSION}-seed{seed}"


def read_info(model_dir: Path | str) -> dict | None:
    """The build record of a finished testbed directory, or None."""
    try:
        return json.loads((Path(model_dir) / INFO_FILE).read_text())
    except (OSError, ValueError):
        return None


def ensure_testbed(
    seed: int = 0, cache_dir: Path | str | None = None, progress: bool = True
) -> Path:
    """The testbed model directory for ``seed``, built (a few CPU minutes) if not cached."""
    target = testbed_dir(seed, cache_dir)
    if read_info(target) is not None:
        return target
    with _lock(target.with_name(target.name + ".lock")):
        if read_info(target) is None:  # another process may have finished it meanwhile
            if progress:
                print(f"steerbench: building the testbed model (first use, a few minutes on "
                      f"2 CPU cores) into {target}", file=sys.stderr, flush=True)  # fmt: skip
            build_testbed(target, seed, progress=progress)
    return target


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: no inter-process lock, the atomic rename still holds
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ the build


def build_testbed(
    out_dir: Path | str,
    seed: int = 0,
    recipe: Recipe | None = None,
    progress: bool = True,
    **overrides: object,
) -> BuildInfo:
    """Build corpus, tokenizer and model into ``out_dir`` (replaced atomically if it exists).

    ``recipe`` defaults to ``default_recipe()``; ``overrides`` replace its fields, e.g.
    ``build_testbed(d, steps=20, n_docs=500)`` for a tiny build in tests."""
    recipe = dataclasses.replace(recipe or default_recipe(), **overrides)  # type: ignore[arg-type]
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    docs = generate_corpus(seed, recipe.n_docs)
    texts = [d.text for d in docs]
    timings["corpus_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    # the world is closed: a slice of the corpus already holds every word
    tokenizer = train_tokenizer(texts[: recipe.tokenizer_docs], recipe.vocab_size, recipe.n_ctx)
    ids = encode(tokenizer, texts)
    timings["tokenizer_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model, loss = train_model(ids, tokenizer, recipe, seed, progress)
    timings["train_s"] = time.perf_counter() - t

    t = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp / "tokenizer_config.json")
        timings["save_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        info = BuildInfo(
            path=out_dir,
            generator_version=GENERATOR_VERSION,
            seed=seed,
            recipe=recipe,
            corpus_sha256=corpus_hash(docs),
            tokenizer_sha256=_file_hash(tmp / "tokenizer.json"),
            weights_sha256=weights_hash(model),
            n_tokens=int(ids.numel()),
            final_loss=loss,
            timings={k: round(v, 2) for k, v in timings.items()},
        )
        (tmp / INFO_FILE).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        _replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


def _replace_dir(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst``; an existing ``dst`` is moved aside first and then deleted."""
    old = None
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _portable_tokenizer_config(path: Path) -> None:
    """Name the class that transformers 4.x and 5.x both load (5.x writes its own new name)."""
    config = json.loads(path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


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


def train_model(ids: torch.Tensor, tokenizer, recipe: Recipe, seed: int, progress: bool = True):
    """Train a fresh GPT-2 on the token stream; returns (model in eval mode, final avg loss)."""
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
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = _lr(step, recipe)
            x = next(batches)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=recipe.bf16):
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
