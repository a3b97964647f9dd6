"""SelfControl's iterative search (Cai et al. 2024, Algorithm 1), batched over prompts.

Per prompt: draw candidate responses under the current deltas and score them; take the clipped
suffix gradient at the prompt positions of every steered layer; try a few step sizes (one
batched generation for all of them) and keep the step whose regenerated candidates score best;
accept it only if that beats the prompt's best score so far, else the prompt stops (the paper's
early exit, applied per prompt). The best-scoring deltas win.

Candidates, two ways:
- "branch" (the paper, for greedy decoding): the top-B first tokens, each continued greedily;
  the best-scoring one is the response, its score the prompt's score and its gradient the step.
- "sample" (for sampled decoding): B responses sampled with the experiment's temperature and
  top-p; the prompt's score is their mean suffix score and the step follows the gradient of
  their mean log score - the judgement of the responses the harness will actually draw, not of
  one the sampler rarely returns. Sample b of a prompt is drawn from the same random numbers
  in every trial (`bench.sampling`): with independent draws the step that wins is mostly the
  one with the luckiest samples, and its gain does not carry over to fresh samples (README).

Fluency guard (`max_nll_increase`, not in the paper): a step is kept only if its candidates'
mean per-token NLL under the unsteered model stays within the bound of the unsteered
candidates'; otherwise the suffix score is maximised by text that fools the judge, however
disfluent (README).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from bench.sampling import stream_seed, tokens_key
from bench.subject import Subject
from methods.selfcontrol_engine import (
    DeltaHooks,
    Suffix,
    decode,
    judge,
    last_logits,
    relative_scale,
    suffix_gradients,
)


@dataclass(frozen=True)
class SearchConfig:
    iterations: int  # gradient steps per prompt at most
    step_sizes: tuple[float, ...]  # candidate step sizes tried at every iteration
    branches: int  # candidates per prompt: first-token branches, or samples
    max_grad_norm: float  # per-token gradient clipping
    relative: bool  # step sizes are fractions of the hidden states' norm (see relative_scale)
    max_new_tokens: int  # length of candidate responses
    batch_size: int  # rows per forward / generate call
    temperature: float = 0.0  # 0: "branch" candidates; > 0: "sample" at this temperature
    top_p: float = 1.0
    seed: int = 0
    # Fluency guard: a step is kept only if its candidates' mean per-token NLL under the
    # unsteered model rises by at most this many nats over the unsteered candidates' (None: off).
    max_nll_increase: float | None = None


@dataclass(frozen=True)
class Optimised:
    deltas: torch.Tensor  # (K, n, L, d) accumulated steps, zero beyond each prompt's length
    lengths: torch.Tensor  # (n,) prompt lengths in tokens
    responses: list[list[list[int]]]  # the best step's candidates per prompt ([best] if branch)
    initial_scores: torch.Tensor  # (n,) suffix score before any step
    scores: torch.Tensor  # (n,) best suffix score reached (mean over samples if sampled)
    steps: torch.Tensor  # (n,) accepted iterations
    initial_nll: torch.Tensor  # (n,) candidates' mean response NLL before any step (nats/token)
    nll: torch.Tensor  # (n,) the same for the kept candidates


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
) -> tuple[list[list[list[int]]], torch.Tensor, torch.Tensor]:
    """Candidates per trial row (prompt i under `trial.rows(i)`, no deltas when `trial` is
    None), the row's (unsteered) suffix score and its candidates' mean response NLL (the
    unsteered model's, nats per token): see the module docstring."""
    if cfg.temperature > 0:
        return _sampled(subject, hooks, prompts, trial, lengths, suffix, cfg)
    return _branched(subject, hooks, prompts, trial, lengths, suffix, cfg)


def _sampled(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    trial: Trial | None,
    lengths: torch.Tensor,
    suffix: Suffix,
    cfg: SearchConfig,
) -> tuple[list[list[list[int]]], torch.Tensor, torch.Tensor]:
    n, samples, device = len(prompts), cfg.branches, subject.device
    rows = [prompts[i // samples] for i in range(n * samples)]  # row i * B + b
    row_lengths = lengths.repeat_interleave(samples)
    # Common random numbers: sample b of a prompt draws from the same stream in every trial.
    streams = [stream_seed(tokens_key(row), i % samples, cfg.seed) for i, row in enumerate(rows)]
    responses: list[list[int]] = []
    for start in range(0, len(rows), cfg.batch_size):
        end = start + cfg.batch_size
        index = torch.arange(start, min(end, len(rows)), device=device) // samples
        deltas = None if trial is None else trial.rows(index)
        with hooks.active(deltas, row_lengths[start:end]):
            responses += decode(
                subject,
                rows[start:end],
                row_lengths[start:end].tolist(),
                cfg.max_new_tokens,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                streams=streams[start:end],
            )
    scores, nll = judge(subject, hooks, rows, responses, suffix, cfg.batch_size)
    grouped = [responses[i * samples : (i + 1) * samples] for i in range(n)]
    return grouped, scores.view(n, samples).mean(-1), nll.view(n, samples).nanmean(-1)


def _branched(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    trial: Trial | None,
    lengths: torch.Tensor,
    suffix: Suffix,
    cfg: SearchConfig,
) -> tuple[list[list[list[int]]], torch.Tensor, torch.Tensor]:
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
    scores, nll = judge(subject, hooks, prompt_rows, responses, suffix, cfg.batch_size)
    best = scores.view(n, branches).argmax(-1)  # (n,)
    picked = [[responses[i * branches + int(b)]] for i, b in enumerate(best)]
    chosen = best[:, None]
    return (
        picked,
        scores.view(n, branches).gather(1, chosen).squeeze(1),
        nll.view(n, branches).gather(1, chosen).squeeze(1),
    )


def gradients(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[Sequence[int]]],
    deltas: torch.Tensor,
    lengths: torch.Tensor,
    suffix: Suffix,
    cfg: SearchConfig,
) -> torch.Tensor:
    """Step directions (K, n, L, d): the gradient of the mean log suffix score over each
    prompt's candidates, clipped per token, rescaled per prompt when `cfg.relative`."""
    owner = [j for j, rs in enumerate(responses) for _ in rs]  # prompt of each (prompt, response)
    flat = [r for rs in responses for r in rs]
    total = torch.zeros_like(deltas)
    for start in range(0, len(flat), cfg.batch_size):
        rows = owner[start : start + cfg.batch_size]
        index = torch.tensor(rows, device=deltas.device)
        grad = suffix_gradients(
            subject,
            hooks,
            [prompts[j] for j in rows],
            flat[start : start + cfg.batch_size],
            suffix,
            deltas.index_select(1, index),
            lengths.index_select(0, index),
            math.inf,  # clipped below, after the mean over candidates
        )
        total.index_add_(1, index, grad)
    counts = torch.tensor([len(rs) for rs in responses], device=deltas.device, dtype=total.dtype)
    grad = total / counts.clamp_min(1).view(1, -1, 1, 1)
    norms = grad.norm(dim=-1, keepdim=True)  # (K, n, L, 1): the paper's per-token clipping
    grad = grad * (cfg.max_grad_norm / norms.clamp_min(1e-12)).clamp(max=1.0)
    if cfg.relative:
        chunks = []
        for start in range(0, len(prompts), cfg.batch_size):
            end = start + cfg.batch_size
            chunks.append(
                relative_scale(
                    subject,
                    hooks,
                    prompts[start:end],
                    grad[:, start:end],
                    deltas[:, start:end],
                    lengths[start:end],
                )
            )
        grad = grad * torch.cat(chunks).view(1, -1, 1, 1)
    return grad


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
    # Every layer's deltas stay on the input device, where the gradients of the probe land
    # (`suffix_gradients`); the hooks copy each layer's to the device it runs on.
    acc = torch.zeros(len(hooks.layers), n, width, subject.d_model, device=device)
    responses, scores, nll = candidates(subject, hooks, prompts, None, lengths, suffix, cfg)
    initial, initial_nll = scores.clone(), nll.clone()
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
        trial_responses, trial_scores, trial_nll = candidates(
            subject, hooks, trial_prompts, trial, trial_lengths, suffix, cfg
        )
        trial_scores = trial_scores.view(len(active), n_sizes)
        trial_nll = trial_nll.view(len(active), n_sizes)
        fluent = fluent_trials(trial_nll, initial_nll.index_select(0, index.cpu()), cfg)
        best = trial_scores.masked_fill(~fluent, -math.inf).argmax(-1)
        still = []
        for j, i in enumerate(active):
            k = int(best[j])
            # Accept only a fluent improvement, else the prompt stops.
            if fluent[j, k] and trial_scores[j, k] > scores[i]:
                row = j * n_sizes + k
                acc[:, i] = trial.rows(torch.tensor([row], device=device))[:, 0]
                responses[i] = trial_responses[row]
                scores[i], nll[i] = trial_scores[j, k], trial_nll[j, k]
                steps[i] += 1
                still.append(i)
        active = still
    return Optimised(acc, lengths, responses, initial, scores, steps, initial_nll, nll)


def fluent_trials(trial_nll: torch.Tensor, initial_nll: torch.Tensor, cfg: SearchConfig):
    """(m, S) bool: which trials keep their candidates' NLL within the guard of the prompt's
    unsteered candidates (`initial_nll`, (m,)). Trials whose candidates are all empty (nan)
    pass only where the unsteered ones were empty too."""
    if cfg.max_nll_increase is None:
        return torch.ones_like(trial_nll, dtype=torch.bool)
    limit = initial_nll[:, None] + cfg.max_nll_increase  # (m, 1)
    within = trial_nll <= limit
    both_empty = trial_nll.isnan() & initial_nll[:, None].isnan()
    unknown_limit = limit.isnan() & ~trial_nll.isnan()  # the unsteered ones were empty
    return within | both_empty | unknown_limit
