"""SelfControl's engine: suffix scores, suffix gradients and the iterative search for deltas.

Cai et al. 2024 ("Self-Control of LLM Behaviors by Compressing Suffix Gradient into Prefix
Controller"). The model judges its own response through a suffix question; the gradient of that
judgement with respect to every layer's hidden states at the prompt positions is the direction
in which the prompt's representation is moved. Everything here works on token ids, batched over
prompts; `methods.selfcontrol` wraps it into a method adapter.

Shapes: K steered layers, n prompts in a batch, L the longest prompt, d the model width. A set
of deltas is a tensor (K, n, L, d) plus `lengths` (n,): row b has deltas for its first
`lengths[b]` prompt tokens, indexed by absolute token position (so left padding, right padding
and KV-cache decode steps all line up).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import LogitsProcessorList

from bench.architectures import hook_name
from bench.errors import UserError
from bench.positions import TokenPositions
from bench.sampling import StreamSampling
from bench.subject import HookFn, Subject
from bench.target import SuffixQuestion
from bench.tensors import OnDevices, frozen, placed, position_ids_of


@dataclass(frozen=True)
class Suffix:
    """A suffix question in tokens: question ids and the first tokens of the two answers, and
    the text the fluency judge reads before the prompt (`SuffixQuestion.fluency_context`)."""

    question: tuple[int, ...]
    target: int
    contrast: int
    fluency_context: str = ""

    @classmethod
    def build(cls, subject: Subject, q: SuffixQuestion) -> Suffix:
        """Tokens of the question and of the answers as they follow it.

        The score compares the answers' first tokens; where a tokenizer splits off a shared
        leading piece (e.g. a bare space), that piece is moved into the question and the first
        tokens where the answers differ are compared.
        """
        n_special = len(subject.encode(q.question)) - len(
            subject.tokenizer(q.question, add_special_tokens=False)["input_ids"]
        )
        ctx_t, target = subject.split_tokens(q.question, q.target_answer)
        ctx_c, contrast = subject.split_tokens(q.question, q.contrast_answer)
        if ctx_t != ctx_c:
            raise UserError(
                f"suffix answers {q.target_answer!r} / {q.contrast_answer!r} merge with the "
                "question's last token; end the question with ':' or a space"
            )
        shared = 0
        while shared < min(len(target), len(contrast)) and target[shared] == contrast[shared]:
            shared += 1
        if shared == min(len(target), len(contrast)):
            raise UserError(
                f"suffix answers {q.target_answer!r} and {q.contrast_answer!r} cannot be told "
                "apart by a next-token logit (one is a prefix of the other)"
            )
        question = ctx_t[max(n_special, 0) :] + target[:shared]
        if not question:
            raise UserError("the suffix question is empty")
        return cls(tuple(question), target[shared], contrast[shared], q.fluency_context)

    def swapped(self) -> Suffix:
        return Suffix(self.question, self.contrast, self.target, self.fluency_context)


class DeltaHooks:
    """`layers.{i}.resid_post` hooks that add per-row deltas at the prompt positions.

    Inactive (a no-op returning None) unless `active(...)` has set deltas; optionally records
    each hooked layer's output (after the addition) for distillation.
    """

    def __init__(self, layers: Sequence[int]) -> None:
        self.layers = tuple(layers)
        # The deltas (K, n or 1, L, d) live where the search keeps them (the input device); each
        # layer's hook takes its own, and the lengths (n or 1,), on the device and dtype of its
        # activations (on a dispatched model, the layer's device): once per `active` context,
        # or at every call for deltas probed for a gradient (`placed`).
        self._deltas: list[OnDevices[torch.Tensor]] | None = None
        self._lengths: OnDevices[torch.Tensor] | None = None
        self.recorded: dict[int, torch.Tensor] | None = None

    def hooks(self) -> list[tuple[str, HookFn]]:
        return [
            (hook_name(layer, "resid_post"), self._hook(k)) for k, layer in enumerate(self.layers)
        ]

    @contextmanager
    def active(
        self, deltas: torch.Tensor | None, lengths: torch.Tensor | None, *, record: bool = False
    ) -> Iterator[dict[int, torch.Tensor]]:
        """Deltas in effect inside; with `record`, the yielded dict fills with layer outputs."""
        previous = (self._deltas, self._lengths, self.recorded)
        recorded: dict[int, torch.Tensor] = {}
        if deltas is None or lengths is None:
            self._deltas, self._lengths = None, None
        else:
            self._deltas = [placed(deltas, k) for k in range(deltas.shape[0])]
            self._lengths = placed(lengths)
        self.recorded = recorded if record else None
        try:
            yield recorded
        finally:
            self._deltas, self._lengths, self.recorded = previous

    def _hook(self, k: int) -> HookFn:
        def hook(hidden: torch.Tensor, positions: TokenPositions) -> torch.Tensor | None:
            new = self._apply(k, hidden, positions)
            if self.recorded is not None:
                self.recorded[self.layers[k]] = hidden if new is None else new
            return new

        return hook

    def _apply(
        self, k: int, hidden: torch.Tensor, positions: TokenPositions
    ) -> torch.Tensor | None:
        if self._deltas is None or self._lengths is None:
            return None
        delta = self._deltas[k].like(hidden)  # (n, L, d)
        lengths = self._lengths.on(hidden.device)  # (n,)
        absolute = positions.absolute  # (batch, seq)
        mask = positions.prompt() & (absolute < lengths[:, None])  # (batch, seq)
        if not bool(mask.any()):  # decode steps after the prompt: nothing to add
            return None
        if delta.shape[0] != hidden.shape[0]:
            if delta.shape[0] != 1:
                raise RuntimeError(
                    f"SelfControl deltas for {delta.shape[0]} rows, batch has {hidden.shape[0]}"
                )
            delta = delta.expand(hidden.shape[0], -1, -1)  # one context shared by all rows
        index = absolute.clamp(0, delta.shape[1] - 1).unsqueeze(-1).expand(-1, -1, delta.shape[2])
        added = delta.gather(1, index)  # (batch, seq, d): the delta of each token's position
        return hidden + added * mask.unsqueeze(-1).to(hidden.dtype)


def _left_pad(
    subject: Subject, rows: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ids, attention mask and position ids (batch, width), left padded."""
    ids, mask = subject.padded(rows, side="left")
    return ids, mask, position_ids_of(mask)


def last_logits(subject: Subject, rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Next-token logits after each row (batch, vocab), under whatever hooks are active."""
    ids, mask, position_ids = _left_pad(subject, rows)
    out = subject.model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=1
    )
    return out.logits[:, -1].float()


def suffix_logit_gap(
    subject: Subject,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    suffix: Suffix,
) -> torch.Tensor:
    """logit(target) - logit(contrast) at the end of prompt + response + question, (batch,)."""
    rows = [list(p) + list(r) + list(suffix.question) for p, r in zip(prompts, responses)]
    logits = last_logits(subject, rows)
    return logits[:, suffix.target] - logits[:, suffix.contrast]


def judge(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    suffix: Suffix,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Suffix score sigmoid(gap) of each (prompt, response) under the UNSTEERED model, and the
    response's mean per-token negative log-likelihood given the prompt (nan for an empty
    response), both (batch,): one forward pass of prompt + response + question gives both.
    With a fluency context the NLL is taken in a second pass that reads the context first."""
    scores, nlls = [], []
    with torch.no_grad(), hooks.active(None, None):
        for start in range(0, len(prompts), batch_size):
            end = start + batch_size
            gap, nll = _judged(subject, prompts[start:end], responses[start:end], suffix)
            if suffix.fluency_context:
                read = _read_after(subject, suffix.fluency_context, prompts[start:end])
                nll = _response_nll(subject, read, responses[start:end])
            scores.append(torch.sigmoid(gap))
            nlls.append(nll)
    return torch.cat(scores).cpu(), torch.cat(nlls).cpu()


def _read_after(
    subject: Subject, context: str, prompts: Sequence[Sequence[int]]
) -> list[list[int]]:
    """Each prompt re-encoded as text after `context` ("<context> <prompt>"), as the suites'
    fluency judgement reads it (the join changes the prompt's first token, hence the text)."""
    texts = [subject.tokenizer.decode(p, skip_special_tokens=True) for p in prompts]
    return [subject.encode(f"{context} {t}") for t in texts]


def _response_nll(
    subject: Subject, prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Mean per-token NLL of each response given its prompt, (batch,); nan for an empty one."""
    rows = [list(p) + list(r) for p, r in zip(prompts, responses)]
    logits = _tail_logits(subject, rows, responses, after=0)
    return _mean_nll(logits, responses, after=0)


def _tail_logits(
    subject: Subject,
    rows: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    after: int,
) -> torch.Tensor:
    """Logits (batch, keep, vocab) of the last keep = longest response + `after` + 1 positions
    of the left-padded rows, which end with a response and `after` more tokens: enough to
    score every response and what follows it."""
    ids, mask, position_ids = _left_pad(subject, rows)
    keep = min(max(len(r) for r in responses) + after + 1, ids.shape[1])
    return subject.model(
        input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=keep
    ).logits.float()


def suffix_scores(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    suffix: Suffix,
    batch_size: int,
) -> torch.Tensor:
    """Suffix score sigmoid(gap) of each (prompt, response) under the UNSTEERED model, (batch,)."""
    return judge(subject, hooks, prompts, responses, suffix, batch_size)[0]


def _judged(
    subject: Subject,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    suffix: Suffix,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logit gap, mean response NLL) of one batch, each (batch,)."""
    n_question = len(suffix.question)
    rows = [list(p) + list(r) + list(suffix.question) for p, r in zip(prompts, responses)]
    logits = _tail_logits(subject, rows, responses, after=n_question)  # (batch, keep, vocab)
    gap = logits[:, -1, suffix.target] - logits[:, -1, suffix.contrast]
    return gap, _mean_nll(logits, responses, after=n_question)


def _mean_nll(logits: torch.Tensor, responses: Sequence[Sequence[int]], after: int) -> torch.Tensor:
    """Mean NLL of each response from the last positions' logits (batch, keep, vocab) of rows
    that end with the response and then `after` more tokens; nan for an empty response."""
    keep = logits.shape[1]
    nll = torch.full((len(responses),), float("nan"), device=logits.device)
    for i, response in enumerate(responses):
        if not response:
            continue
        # Response token j sits after + len - j positions before the end of the row; the
        # logits that predict it one position earlier.
        first = keep - after - len(response) - 1
        predicted = logits[i, first : first + len(response)].log_softmax(-1)  # (len, vocab)
        tokens = torch.tensor(list(response), device=logits.device)
        nll[i] = -predicted.gather(1, tokens[:, None]).mean()
    return nll


def suffix_gradients(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    suffix: Suffix,
    deltas: torch.Tensor,
    lengths: torch.Tensor,
    max_norm: float,
) -> torch.Tensor:
    """Clipped gradient of log(suffix score) w.r.t. each hooked layer's output at the prompt
    positions, taken with the current deltas in place (the paper's "consistent" mode).

    Returns (K, n, L, d); each token's gradient is clipped to L2 norm <= max_norm.
    """
    with frozen(subject.model), torch.enable_grad():
        probe = deltas.detach().clone().requires_grad_(True)  # d log s / d probe = d / d hidden
        with hooks.active(probe, lengths):
            gap = suffix_logit_gap(subject, prompts, responses, suffix)
        objective = F.logsigmoid(gap).sum()  # rows are independent: the sum gives per-row grads
        (grad,) = torch.autograd.grad(objective, probe)
    grad = grad.detach()
    norms = grad.norm(dim=-1, keepdim=True)  # (K, n, L, 1)
    return grad * (max_norm / norms.clamp_min(1e-12)).clamp(max=1.0)


@torch.no_grad()
def decode(
    subject: Subject,
    rows: Sequence[Sequence[int]],
    prompt_lengths: Sequence[int],
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    fixed_length: bool = False,
    streams: Sequence[int] | None = None,
) -> list[list[int]]:
    """Continue each row (greedy when temperature is 0); new tokens per row, cut at EOS
    (unless `fixed_length`: exactly max_new_tokens, as GenerationSettings.fixed_length).

    `prompt_lengths` declares how many leading tokens of each row are prompt, so a forced
    first token after the prompt counts as generated for the hooks. Sampling (temperature > 0)
    draws each row from its stream: `streams` holds one stream seed per row (`bench.sampling`).
    """
    if max_new_tokens <= 0:
        return [[] for _ in rows]
    ids, mask, _ = _left_pad(subject, rows)
    kwargs: dict = {"do_sample": False}
    if temperature > 0:
        if streams is None:
            raise ValueError("sampling needs a stream seed per row")
        coupled = StreamSampling(streams, temperature, top_p)
        kwargs["logits_processor"] = LogitsProcessorList([coupled])
    lengths = torch.tensor(list(prompt_lengths), device=subject.device)
    with subject.positions.prompt_lengths(lengths):
        sequences = subject.model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            min_new_tokens=max_new_tokens if fixed_length else None,
            pad_token_id=subject.tokenizer.pad_token_id,
            eos_token_id=subject.tokenizer.eos_token_id,
            **kwargs,
        )
    eos = subject.tokenizer.eos_token_id
    out = []
    for row in sequences[:, ids.shape[1] :].tolist():
        out.append(row[: row.index(eos)] if eos in row and not fixed_length else row)
    return out


@torch.no_grad()
def relative_scale(
    subject: Subject,
    hooks: DeltaHooks,
    prompts: Sequence[Sequence[int]],
    grad: torch.Tensor,
    deltas: torch.Tensor,
    lengths: torch.Tensor,
) -> torch.Tensor:
    """Per-prompt factor (n,) that rescales `grad` (K, n, L, d) so that its RMS token norm over
    the steered layers and prompt tokens equals the RMS norm of the (current) hidden states
    there, divided by the number of steered layers K: a step of size s then moves each layer's
    prompt states by s / K x their own norm (RMS), so that the moves of all K layers, which add
    up in the residual stream, come to about s x the norm whatever the model's depth."""
    with hooks.active(deltas, lengths, record=True) as recorded:
        last_logits(subject, prompts)
    # (K, n, W, d) left padded. On a dispatched model each layer's states come from its own
    # device: they are gathered where the lengths and the gradient are.
    states = torch.stack([recorded[layer].to(lengths.device) for layer in hooks.layers])
    width = states.shape[2]
    real = torch.arange(width, device=states.device)[None, :] >= width - lengths[:, None]  # (n, W)
    tokens = len(hooks.layers) * lengths.to(states.dtype)  # (n,)
    hidden_rms = ((states.square().sum(-1) * real).sum((0, 2)) / tokens).sqrt()
    grad_rms = (grad.square().sum((0, 2, 3)) / tokens).sqrt()
    return hidden_rms / grad_rms.clamp_min(1e-12) / len(hooks.layers)
