"""SelfControl's iterative search (Cai et al. 2024, Algorithm 1), batched over prompts.

Per prompt: sample candidate responses by branching on the first token (the top-B next tokens
under the current deltas, each continued greedily) and keep the one with the best suffix score;
take the clipped suffix gradient at the prompt positions of every steered layer; try a few step
sizes (one batched generation for all of them) and keep the step whose regenerated response
scores best; accept it only if that beats the prompt's best score so far, else the prompt stops
(the paper's early exit, applied per prompt). The best-scoring deltas and response win.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.subject import Subject
from methods.selfcontrol_engine import (
    DeltaHooks,
    Suffix,
    decode,
    last_logits,
    relative_scale,
    suffix_gradients,
    suffix_scores,
)


@dataclass(frozen=True)
class SearchConfig:
    iterations: int  # gradient steps per prompt at most
    step_sizes: tuple[float, ...]  # candidate step sizes tried at every iteration
    branches: int  # first-token branches per candidate response
    max_grad_norm: float  # per-token gradient clipping
    relative: bool  # step sizes are fractions of the hidden states' norm (see relative_scale)
    max_new_tokens: int  # length of candidate responses
    batch_size: int  # rows per forward / generate call


@dataclass(frozen=True)
class Optimised:
    deltas: torch.Tensor  # (K, n, L, d) accumulated steps, zero beyond each prompt's length
    lengths: torch.Tensor  # (n,) prompt lengths in tokens
    responses: list[list[int]]  # best-scoring response per prompt (token ids)
    initial_scores: torch.Tensor  # (n,) best suffix score before any step
    scores: torch.Tensor  # (n,) best suffix score reached
    steps: torch.Tensor  # (n,) accepted iterations


@dataclass(frozen=True)
class Trial:
    """Deltas of candidate rows, built a chunk at a time (never all step sizes at once):
    row r is prompt r // S of `base` moved by `sizes[r % S]` along its gradient."""

    base: torch.Tensor  # (K, m, L, d)
    grad: torch.Tensor | None = None  # (K, m, L, d); None: the rows are `base` itself
    sizes: torch.Tensor | None = None  # (S,)

    @property
    def n_sizes(self) -> int:
        return 1 if self.sizes is None else len(self.sizes)

    def rows(self, index: torch.Tensor) -> torch.Tensor:
        """Deltas of trial rows `index`, (K, len(index), L, d)."""
        if self.grad is None or self.sizes is None:
            return self.base.index_select(1, index)
        prompt = index // self.n_sizes
        size = self.sizes.index_select(0, index % self.n_sizes).view(1, -1, 1, 1)
        return self.base.index_select(1, prompt) + size * self.grad.index_select(1, prompt)


def candidates(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    trial: Trial | None,
    lengths: torch.Tensor,
    suffix: Suffix,
    cfg: SearchConfig,
) -> tuple[list[list[int]], torch.Tensor]:
    """Best-of-branches response per trial row (prompt i under `trial.rows(i)`, no deltas when
    `trial` is None), and its (unsteered) suffix score."""
    n, branches, eos = len(prompts), cfg.branches, subject.tokenizer.eos_token_id
    device = subject.device
    firsts = []  # top-B first tokens per prompt, under the deltas
    with torch.no_grad():
        for start in range(0, n, cfg.batch_size):
            index = torch.arange(start, min(start + cfg.batch_size, n), device=device)
            deltas = None if trial is None else trial.rows(index)
            with hooks.active(deltas, lengths[start : start + cfg.batch_size]):
                logits = last_logits(subject, prompts[start : start + cfg.batch_size])
            firsts.append(logits.topk(branches, dim=-1).indices.cpu())  # (chunk, B)
    first = torch.cat(firsts).flatten().tolist()  # row i * B + b
    rows = [list(prompts[i // branches]) + [first[i]] for i in range(n * branches)]
    row_lengths = lengths.repeat_interleave(branches)
    responses: list[list[int]] = []
    for start in range(0, len(rows), cfg.batch_size):
        end = start + cfg.batch_size
        index = torch.arange(start, min(end, len(rows)), device=device) // branches
        deltas = None if trial is None else trial.rows(index)
        with hooks.active(deltas, row_lengths[start:end]):
            tails = decode(
                subject, rows[start:end], row_lengths[start:end].tolist(), cfg.max_new_tokens - 1
            )
        for row, tail in zip(rows[start:end], tails):
            responses.append([] if row[-1] == eos else [row[-1], *tail])
    prompt_rows = [prompts[i // branches] for i in range(n * branches)]
    scores = suffix_scores(subject, hooks, prompt_rows, responses, suffix, cfg.batch_size)
    best = scores.view(n, branches).argmax(-1)  # (n,)
    picked = [responses[i * branches + int(b)] for i, b in enumerate(best)]
    return picked, scores.view(n, branches).gather(1, best[:, None]).squeeze(1)


def gradients(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    deltas: torch.Tensor,
    lengths: torch.Tensor,
    suffix: Suffix,
    cfg: SearchConfig,
) -> torch.Tensor:
    """Step directions (K, n, L, d): clipped suffix gradients, rescaled per prompt when
    `cfg.relative`; computed in chunks of `batch_size` rows."""
    chunks = []
    for start in range(0, len(prompts), cfg.batch_size):
        end = start + cfg.batch_size
        grad = suffix_gradients(
            subject,
            hooks,
            prompts[start:end],
            responses[start:end],
            suffix,
            deltas[:, start:end],
            lengths[start:end],
            cfg.max_grad_norm,
        )
        if cfg.relative:
            scale = relative_scale(
                subject, hooks, prompts[start:end], grad, deltas[:, start:end], lengths[start:end]
            )
            grad = grad * scale.view(1, -1, 1, 1)
        chunks.append(grad)
    return torch.cat(chunks, dim=1)


def optimise(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    suffix: Suffix,
    cfg: SearchConfig,
) -> Optimised:
    """Run the search for every prompt (token ids, each non-empty); see the module docstring."""
    n, device = len(prompts), subject.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    width = int(lengths.max())
    acc = torch.zeros(len(hooks.layers), n, width, subject.d_model, device=device)
    responses, scores = candidates(subject, hooks, prompts, None, lengths, suffix, cfg)
    initial = scores.clone()
    steps = torch.zeros(n, dtype=torch.long)
    sizes = torch.tensor(cfg.step_sizes, device=device, dtype=acc.dtype)  # (S,)
    n_sizes = len(cfg.step_sizes)
    active = list(range(n))
    for _ in range(cfg.iterations):
        if not active:
            break
        index = torch.tensor(active, device=device)
        sub_prompts = [prompts[i] for i in active]
        sub_lengths = lengths.index_select(0, index)
        current = acc.index_select(1, index)  # (K, m, L, d)
        grad = gradients(
            subject,
            hooks,
            sub_prompts,
            [responses[i] for i in active],
            current,
            sub_lengths,
            suffix,
            cfg,
        )
        # Every candidate step size for every prompt: trial row j * S + k.
        trial = Trial(current, grad, sizes)
        trial_prompts = [p for p in sub_prompts for _ in range(n_sizes)]
        trial_lengths = sub_lengths.repeat_interleave(n_sizes)
        trial_responses, trial_scores = candidates(
            subject, hooks, trial_prompts, trial, trial_lengths, suffix, cfg
        )
        trial_scores = trial_scores.view(len(active), n_sizes)
        best = trial_scores.argmax(-1)
        still = []
        for j, i in enumerate(active):
            k = int(best[j])
            if trial_scores[j, k] > scores[i]:  # accept only an improvement, else stop
                row = j * n_sizes + k
                acc[:, i] = trial.rows(torch.tensor([row], device=device))[:, 0]
                responses[i] = trial_responses[row]
                scores[i] = trial_scores[j, k]
                steps[i] += 1
                still.append(i)
        active = still
    return Optimised(acc, lengths, responses, initial, scores, steps)
