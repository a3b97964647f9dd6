"""Subject: a Hugging Face causal LM plus its tokenizer, and the steering surface around it.

The subject loads through the ordinary `from_pretrained` path (hub id or local directory), offers
batched generation and continuation log-probabilities, and lets methods attach hooks at named
hook points (see `bench.architectures`), prompt transforms and generation overrides. Every
attachment returns a handle; `bench.steering.attached` removes them all in `finally`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from tqdm.auto import tqdm
from transformers import LogitsProcessorList

from bench.architectures import HookPoint, resolve
from bench.loading import execution_device, load_pretrained
from bench.positions import PositionTracker, TokenPositions
from bench.sampling import StreamSampling, stream_seeds
from bench.tensors import padded

if TYPE_CHECKING:  # bench.capability imports this module
    from bench.capability import OwnTasks

# A steering hook gets the hooked activation (batch, seq, d_model) and the positions of its
# tokens, and returns a replacement activation (or None to leave it as it is).
HookFn = Callable[[torch.Tensor, TokenPositions], "torch.Tensor | None"]
PromptTransform = Callable[[str], str]
# (prompts already transformed, settings, one stream key per prompt) -> samples per prompt
GenerateFn = Callable[[Sequence[str], "GenerationSettings", Sequence[bytes]], list[list[str]]]
# (contexts already transformed, continuations, batch_size) -> one score per pair
LogprobsFn = Callable[[Sequence[str], Sequence[str], int], list["ContinuationScore"]]

# Config keys that say where or with what a model was saved, not what it computes.
# (`save_pretrained` fills `architectures` and `dtype` in place; the weights' own dtype is hashed.)
_VOLATILE_CONFIG = {
    "_name_or_path",
    "transformers_version",
    "_commit_hash",
    "_attn_implementation_autoset",
    "architectures",
    "dtype",
    "torch_dtype",
}


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 24
    temperature: float = 1.0  # 0 means greedy decoding
    top_p: float = 0.9
    num_samples: int = 1  # continuations per prompt
    seed: int = 0
    batch_size: int = 32  # prompts per forward batch
    fixed_length: bool = False  # never stop before max_new_tokens (for timing at equal work)


@dataclass(frozen=True)
class ContinuationScore:
    """log p(continuation | context) under the subject, summed over continuation tokens."""

    logprob: float
    n_tokens: int
    is_greedy: bool  # every continuation token is the argmax at its step

    @property
    def mean_logprob(self) -> float:
        return self.logprob / max(self.n_tokens, 1)


class Handle:
    """Undo token for one attachment (hook, prompt transform or override)."""

    def __init__(self, remove: Callable[[], None]) -> None:
        self._remove: Callable[[], None] | None = remove

    def remove(self) -> None:
        if self._remove is not None:
            self._remove()
            self._remove = None


class Subject:
    def __init__(self, model: torch.nn.Module, tokenizer, name: str = "model") -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.positions = PositionTracker()
        model.register_forward_pre_hook(self.positions, with_kwargs=True)
        self._prompt_transforms: list[PromptTransform] = []
        self._generate_overrides: list[GenerateFn] = []
        self._logprobs_overrides: list[LogprobsFn] = []
        self._n_steering_hooks = 0
        self.generated_tokens = 0  # running count, for cost accounting
        self._fingerprint: str | None = None
        # Documents the model was trained on, when its source knows them (n_docs -> texts);
        # set by `bench.sources.load_subject`.
        self.training_corpus: Callable[[int], list[str]] | None = None
        # The lm-eval tasks its model source names for it (`bench.capability.OwnTasks`).
        self.capability_tasks: OwnTasks | None = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike,
        *,
        dtype: str = "float32",
        device: str = "cpu",
        trust_remote_code: bool = False,
        revision: str | None = None,
        device_map: str | None = None,
        max_memory: dict[str, str] | None = None,
        offload_folder: str | None = None,
    ) -> Subject:
        """`device_map` (e.g. "auto"): let accelerate place the model's modules over the GPUs,
        the CPU and disk (within `max_memory` per device, offloading to `offload_folder`, a
        temporary folder by default) instead of putting the whole model on `device`."""
        model, tokenizer = load_pretrained(
            str(name_or_path),
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            revision=revision,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
        )
        return cls(model if device_map else model.to(device), tokenizer, name=str(name_or_path))

    # ------------------------------------------------------------------ facts
    @property
    def device(self) -> torch.device:
        """Where inputs go: the model's device, or for a dispatched model the device its first
        module (the embedding) runs on (accelerate's hooks move activations on from there)."""
        placed = getattr(self.model, "hf_device_map", None)
        if placed:
            return execution_device(next(iter(placed.values())), placed.values())
        return next(self.model.parameters()).device

    @property
    def dispatched(self) -> bool:
        """The model's modules are spread over devices (or offloaded) by accelerate."""
        return len(set(getattr(self.model, "hf_device_map", {}).values())) > 1 or any(
            p.device.type == "meta" for p in self.model.parameters()
        )

    @property
    def model_type(self) -> str:
        return self.model.config.model_type

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self.model.config.hidden_size

    @property
    def max_length(self) -> int:
        config = self.model.config
        for key in ("n_positions", "max_position_embeddings"):
            if getattr(config, key, None):
                return int(getattr(config, key))
        return 2048

    @property
    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def fingerprint(self) -> str:
        """Content fingerprint of config and weights (stable across processes and paths)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            config = self.model.config.to_dict()
            config = {k: v for k, v in config.items() if k not in _VOLATILE_CONFIG}
            digest.update(json.dumps(config, sort_keys=True, default=str).encode())
            with torch.no_grad():
                for name, tensor in self._weights().items():
                    t = tensor.detach().to(torch.float64)
                    stats = (
                        name,
                        tuple(t.shape),
                        str(tensor.dtype),
                        round(t.sum().item(), 6),
                        round(t.square().sum().item(), 6),
                    )
                    digest.update(repr(stats).encode())
            digest.update(repr(sorted(self.tokenizer.get_vocab().items())).encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def _weights(self) -> dict[str, torch.Tensor]:
        """The model's weights, offloaded ones read back (they sit on the meta device)."""
        if any(p.device.type == "meta" for p in self.model.parameters()):
            from accelerate.utils.modeling import get_state_dict_offloaded_model

            return get_state_dict_offloaded_model(self.model)
        return self.model.state_dict()

    # ------------------------------------------------------------------ steering surface
    def hookpoint(self, name: str) -> HookPoint:
        return resolve(name, self.model_type, self.n_layers)

    def module(self, point: HookPoint) -> torch.nn.Module:
        return self.model.get_submodule(point.module_path)

    def add_hook(self, name: str, fn: HookFn) -> Handle:
        """Attach `fn` at hook point `name`; the returned handle detaches it."""
        point = self.hookpoint(name)
        module = self.module(point)
        positions = self.positions

        def call(hidden: torch.Tensor) -> torch.Tensor | None:
            # Some modules (OPT's fc2) work on flattened tokens: (batch * seq, d) -> (batch, seq, d).
            flat = hidden.dim() == 2
            if flat:
                hidden = hidden.view(*positions.current.absolute.shape, hidden.shape[-1])
            # On a dispatched model the module runs on its own device: the hook's positions
            # and its result live there too.
            new = fn(hidden, positions.current.to(hidden.device))
            if new is None:
                return None
            new = new.to(hidden.device)
            return new.reshape(-1, new.shape[-1]) if flat else new

        if point.on_input:

            def pre_hook(mod, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                new = call(hidden)
                if new is None:
                    return None
                if args:
                    return (new, *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": new}

            torch_handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        else:

            def hook(mod, args, output):
                hidden = output[0] if isinstance(output, tuple) else output
                new = call(hidden)
                if new is None:
                    return None
                return (new, *output[1:]) if isinstance(output, tuple) else new

            torch_handle = module.register_forward_hook(hook)
        self._n_steering_hooks += 1

        def remove() -> None:
            torch_handle.remove()
            self._n_steering_hooks -= 1

        return Handle(remove)

    def add_prompt_transform(self, fn: PromptTransform) -> Handle:
        self._prompt_transforms.append(fn)
        return Handle(lambda: self._prompt_transforms.remove(fn))

    def override_generate(self, fn: GenerateFn) -> Handle:
        """Replace generation (e.g. an iterative method); `fn` gets already-transformed prompts."""
        self._generate_overrides.append(fn)
        return Handle(lambda: self._generate_overrides.remove(fn))

    def override_logprobs(self, fn: LogprobsFn) -> Handle:
        """Replace log-likelihood scoring (e.g. a method that steers each context differently);
        `fn` gets already-transformed contexts and calls `logprobs_raw` for the real scores."""
        self._logprobs_overrides.append(fn)
        return Handle(lambda: self._logprobs_overrides.remove(fn))

    @property
    def attachments(self) -> int:
        """Number of steering attachments currently in place (0 outside any steer context)."""
        return (
            self._n_steering_hooks
            + len(self._prompt_transforms)
            + len(self._generate_overrides)
            + len(self._logprobs_overrides)
        )

    def transform(self, prompt: str) -> str:
        for fn in self._prompt_transforms:
            prompt = fn(prompt)
        return prompt

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=True)["input_ids"]

    def padded(
        self, rows: Sequence[Sequence[int]], *, side: Literal["left", "right"]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Token rows as one (ids, mask) batch on the model's device (`bench.tensors.padded`)."""
        return padded(rows, self.tokenizer.pad_token_id, side=side, device=self.device)

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        *,
        streams: Sequence[bytes] | None = None,
        progress: bool = False,
    ) -> list[list[str]]:
        """`settings.num_samples` continuations for each prompt (after prompt transforms).

        `streams`: one key per prompt naming what it answers (`bench.sampling.stream_key`);
        sample s of prompt i draws from stream (streams[i], s) under `settings.seed`, whatever
        the batch, the prompt transforms or the steering. None: each prompt's own text."""
        streams = list(streams) if streams is not None else [p.encode() for p in prompts]
        if len(streams) != len(prompts):
            raise ValueError("one stream key per prompt")
        prompts = [self.transform(p) for p in prompts]
        if self._generate_overrides:
            return self._generate_overrides[-1](prompts, settings, streams)
        return self.generate_raw(prompts, settings, streams, progress=progress)

    def generate_raw(
        self,
        prompts: Sequence[str],
        settings: GenerationSettings,
        streams: Sequence[bytes],
        *,
        progress: bool = False,
    ) -> list[list[str]]:
        """Batched generation of exactly these prompts: left padding, KV cache, sampling from
        each prompt's streams (`bench.sampling`)."""
        out: list[list[str]] = []
        size = settings.batch_size
        for start in tqdm(
            range(0, len(prompts), size), desc="generate", disable=not progress, leave=False
        ):
            end = start + size
            out.extend(self._generate_batch(prompts[start:end], streams[start:end], settings))
        return out

    def _generate_batch(
        self, prompts: Sequence[str], streams: Sequence[bytes], s: GenerationSettings
    ) -> list[list[str]]:
        budget = self.max_length - s.max_new_tokens
        sample = s.temperature > 0
        n = s.num_samples if sample else 1
        # Row i * n + k is sample k of prompt i: each row is one stream.
        rows = [self.encode(p)[-budget:] or [self.tokenizer.eos_token_id] for p in prompts]
        ids, mask = self.padded([r for r in rows for _ in range(n)], side="left")
        processors = LogitsProcessorList()
        if sample:
            seeds = stream_seeds(streams, n, s.seed)
            processors.append(StreamSampling(seeds, s.temperature, s.top_p, strict=True))
        # Declared prompt lengths keep "prompt" positions right even if the model recomputes
        # the whole sequence at every step (no KV cache).
        with torch.no_grad(), self.positions.prompt_lengths(mask.sum(-1)):
            sequences = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=s.max_new_tokens,
                min_new_tokens=s.max_new_tokens if s.fixed_length else None,
                do_sample=False,  # the sampling is StreamSampling's, under greedy decoding
                logits_processor=processors,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        new_tokens = sequences[:, ids.shape[1] :]  # (batch * n, new)
        texts = []
        for row in new_tokens.tolist():
            if self.tokenizer.eos_token_id in row and not s.fixed_length:
                row = row[: row.index(self.tokenizer.eos_token_id)]
            self.generated_tokens += len(row)
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        grouped = [texts[i * n : (i + 1) * n] for i in range(len(prompts))]
        return [g * s.num_samples for g in grouped] if not sample else grouped

    # ------------------------------------------------------------------ scoring
    def split_tokens(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Tokens of context and continuation, split where the joint encoding splits.

        All trailing whitespace of the context (spaces, newlines, tabs) moves to the
        continuation, as lm-eval's `_encode_pair` does (BPE attaches whitespace to the token
        after it), then the whole string is encoded once so the continuation's tokens are those
        the model would really see after the context.
        """
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        context = stripped
        if not context:
            bos = self.tokenizer.bos_token_id
            prefix = [bos if bos is not None else self.tokenizer.eos_token_id]
            return prefix, self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
        whole = self.encode(context + continuation)
        ctx = self.encode(context)
        if whole[: len(ctx)] != ctx:  # the boundary merged into one token: score it whole
            ctx = ctx[:-1]
        return ctx, whole[len(ctx) :]

    def logprobs(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        batch_size: int = 16,
        transform: bool = True,
        progress: bool = False,
    ) -> list[ContinuationScore]:
        """log p(continuation | context) for each pair (after prompt transforms, unless
        `transform` is False), through the innermost log-likelihood override if one is set."""
        if len(contexts) != len(continuations):
            raise ValueError("contexts and continuations differ in length")
        if transform:
            contexts = [self.transform(c) for c in contexts]
        if self._logprobs_overrides:
            return self._logprobs_overrides[-1](contexts, continuations, batch_size)
        return self.logprobs_raw(contexts, continuations, batch_size=batch_size, progress=progress)

    def logprobs_raw(
        self,
        contexts: Sequence[str],
        continuations: Sequence[str],
        *,
        batch_size: int = 16,
        progress: bool = False,
    ) -> list[ContinuationScore]:
        """log p(continuation | context) for each pair, batched (right padding); no transforms,
        no override (hooks still apply)."""
        if len(contexts) != len(continuations):
            raise ValueError("contexts and continuations differ in length")
        pairs = [self.split_tokens(c, x) for c, x in zip(contexts, continuations)]
        # Longest first so batches are dense; results are put back in input order.
        order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
        scores: dict[int, ContinuationScore] = {}
        starts = range(0, len(order), batch_size)
        for start in tqdm(starts, desc="score", disable=not progress, leave=False):
            chunk = order[start : start + batch_size]
            for i, score in zip(chunk, self._score_batch([pairs[i] for i in chunk])):
                scores[i] = score
        return [scores[i] for i in range(len(pairs))]

    def _score_batch(self, pairs: list[tuple[list[int], list[int]]]) -> Iterator[ContinuationScore]:
        limit = self.max_length
        rows, ctx_lens = [], []
        for ctx, cont in pairs:
            cont = cont[: limit - 1]
            ctx = ctx[-(limit - len(cont)) :]  # truncate the context from the left
            rows.append(ctx + cont)
            ctx_lens.append(len(ctx))
        ids, mask = padded(rows, self.tokenizer.pad_token_id, side="right", device=self.device)
        lengths = torch.tensor(ctx_lens, device=self.device)
        with torch.no_grad(), self.positions.prompt_lengths(lengths):
            logits = self.model(input_ids=ids, attention_mask=mask).logits  # (batch, seq, vocab)
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        for i, row in enumerate(rows):
            start, end = ctx_lens[i], len(row)
            target = ids[i, start:end]  # continuation tokens
            step = logprobs[i, start - 1 : end - 1]  # predictions for them, (n_cont, vocab)
            picked = step.gather(-1, target[:, None]).squeeze(-1)
            greedy = bool((step.argmax(-1) == target).all())
            yield ContinuationScore(float(picked.sum()), int(end - start), greedy)
