"""SelfControl (Cai et al. 2024): steer by the gradient of the model's own judgement.

The target's suffix question ("... Is the above text positive? Answer:") is appended to prompt +
response; the suffix score is sigmoid(logit(target answer) - logit(contrast answer)) under the
UNSTEERED model. Its log's gradient with respect to every layer's output (`resid_post`) at the
prompt positions, clipped per token, is added to those hidden states; step sizes are searched,
responses regenerated, and the best-scoring deltas kept (see `methods.selfcontrol_search`).

Adapter choices (where the paper leaves the harness to decide):
- It is iterative per prompt, so it runs as a generation override; hooks at every steered
  layer add the per-prompt deltas at the prompt positions only (KV-cache decode steps see the
  edited keys/values). The returned samples are drawn with the experiment's sampling settings
  from the model under the best deltas (greedy settings return the best-scoring response).
- Candidates follow the experiment's decoding (`candidates = "auto"`): for greedy decoding the
  paper's first-token branches (best wins); for sampled decoding B samples whose mean suffix
  score is the objective. With the paper's greedy branches the search optimises a response the
  sampler rarely returns, and the samples actually drawn can move away from the target (README).
- Step sizes are relative by default: the clipped gradient (the paper's direction) is rescaled
  per prompt so that a step of s moves the prompt's states of each of the K steered layers by
  s / K x their own RMS norm (the K moves add up in the residual stream). The
  paper's raw steps (0.5 on Llama-2-7B) do not transfer across models: the gradient's scale
  depends on the model (on a small one a raw step moves nothing); `step_scale = "absolute"`
  restores them.
- Sampled candidates use common random numbers (sample b of a prompt draws from the same
  stream in every trial, `bench.sampling`), so the search compares step sizes on the same
  draws rather than rewarding the luckiest samples. The final samples draw from the
  harness's streams of the example, the unsteered answer's numbers.
- Fluency guard (`max_perplexity_ratio`, default 1.25; None turns it off): a step is kept only
  while its candidates' perplexity under the unsteered model stays within that ratio of the
  unsteered candidates'. The suffix score alone is maximised by text that fools the judge,
  however disfluent (README). The unsteered model reads the suffix question's
  `fluency_context` first where it has one (fact injection: the new fact, as the suite's own
  fluency judgement does).
- Strength scales every candidate step size (0 = unsteered, nothing attached); a negative
  strength steers toward the contrast answer instead.
- The method is only as good as the model's own judgement: it maximises the suffix score,
  and a model that cannot answer the suffix question is steered toward whatever fools it.
- Log-likelihood requests (`steer_loglikelihood`, on by default): the search runs on the
  context (candidate responses of `loglik_max_new_tokens` tokens) and the continuation is
  scored with the context's deltas in place: what the steered model believes given that
  context, through the subject's log-likelihood override (`Subject.override_logprobs`),
  removed with everything else when the steer context exits.

Cost knobs: `iterations`, `search_steps`, `branches` (defaults 1, 2, 4: about
1 + iterations x search_steps generations of branches x prompts rows per batch, plus the final
sampling). One iteration (the paper's lower bound) keeps the default run within a coffee break;
`iterations = 2` is the fuller search (about 1.6x the cost), and paper-like runs use iterations
3, search_steps 3, branches 3 (the paper: 1-3 iterations, 3 search steps, factor 2). Memory: the deltas are (layers, batch,
prompt length, d_model) floats per batch; on large models lower the generation batch size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from typing import Literal

from bench.errors import UserError
from bench.method import Method
from bench.sampling import stream_seeds
from bench.state import State
from bench.steering import attached
from bench.subject import ContinuationScore, GenerationSettings, Subject
from bench.target import SteeringTarget, SuffixQuestion
from methods.selfcontrol_engine import DeltaHooks, Suffix, decode
from methods.selfcontrol_search import Optimised, SearchConfig, optimise
from methods.teaching import Lesson, Teaching


@dataclass(frozen=True)
class SelfControlParams:
    iterations: int = 1  # gradient steps per prompt at most (paper: 1-3); 2+: a fuller search
    # First candidate step, multiplied by the strength. "relative": the fraction of the prompt's
    # hidden-state norm by which all steered layers together move it (each layer 1/K of it) -
    # the same knob on any model and depth; "absolute": the paper's raw step on the clipped
    # gradient (0.5 on Llama-2-7B).
    step_size: float = 0.2
    step_scale: Literal["relative", "absolute"] = "relative"
    search_steps: int = 2  # candidate steps per iteration: step_size * search_factor**k
    search_factor: float = 2.0
    # Candidates per prompt: "branch" = the paper's top-B first tokens continued greedily, the
    # best wins; "sample" = B samples, their mean score counts. "auto": sample when the
    # experiment samples (temperature > 0; log-likelihood contexts and distillation sample at
    # DEFAULT_SAMPLING), branch for greedy generation.
    candidates: Literal["auto", "branch", "sample"] = "auto"
    branches: int = 4  # candidates per prompt (paper: n_branches)
    max_grad_norm: float = 1.0  # per-token gradient clipping (paper: norm 1)
    layers: tuple[int, ...] = ()  # resid_post layers whose prompt states move; () = all
    steer_loglikelihood: bool = True  # steer log-likelihood requests too (see module doc)
    loglik_max_new_tokens: int = 16  # candidate response length when the context is steered
    # Fluency guard (not in the paper): a step is kept only while its candidates' perplexity
    # under the unsteered model stays within this ratio of the unsteered candidates'. None: off.
    max_perplexity_ratio: float | None = 1.25

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.search_steps < 1 or self.branches < 1:
            raise ValueError("iterations, search_steps and branches must be at least 1")
        if self.step_size <= 0 or self.search_factor <= 0 or self.max_grad_norm <= 0:
            raise ValueError("step_size, search_factor and max_grad_norm must be positive")
        if self.loglik_max_new_tokens < 1:
            raise ValueError("loglik_max_new_tokens must be at least 1")
        if self.max_perplexity_ratio is not None and self.max_perplexity_ratio < 1:
            raise ValueError("max_perplexity_ratio must be at least 1 (or None)")


# Sampling (temperature, top_p) of the candidates where no generation settings say otherwise.
DEFAULT_SAMPLING = (1.0, 0.9)


def suffix_of(state: State) -> SuffixQuestion:
    return SuffixQuestion(**state.meta)


class Controller:
    """SelfControl attached to one subject at one strength: the generation override, the
    log-likelihood shadow and the delta hooks they share."""

    def __init__(
        self, subject: Subject, params: SelfControlParams, question: SuffixQuestion, strength: float
    ) -> None:
        self.subject = subject
        self.params = params
        suffix = Suffix.build(subject, question)
        self.suffix = suffix if strength > 0 else suffix.swapped()
        self.scale = abs(strength)
        n_layers = subject.n_layers
        for layer in params.layers:
            if not -n_layers <= layer < n_layers:
                raise UserError(f"selfcontrol.layers: {layer} out of range for {n_layers} layers")
        layers = sorted({layer % n_layers for layer in params.layers} or range(n_layers))
        self.hooks = DeltaHooks(layers)
        self.last: Optimised | None = None  # the latest search, for inspection and tests

    def config(
        self, max_new_tokens: int, batch_size: int, sampling: tuple[float, float, int]
    ) -> SearchConfig:
        """`sampling`: (temperature, top_p, seed) of the generation the search serves."""
        p = self.params
        steps = tuple(self.scale * p.step_size * p.search_factor**k for k in range(p.search_steps))
        temperature, top_p, seed = sampling
        if p.candidates == "branch":
            temperature = 0.0
        elif p.candidates == "sample" and temperature <= 0:
            temperature, top_p = DEFAULT_SAMPLING
        return SearchConfig(
            p.iterations,
            steps,
            p.branches,
            p.max_grad_norm,
            p.step_scale == "relative",
            max_new_tokens,
            batch_size,
            temperature,
            top_p,
            seed,
            None if p.max_perplexity_ratio is None else math.log(p.max_perplexity_ratio),
        )

    def prompt_ids(self, text: str, max_new_tokens: int) -> list[int]:
        """Prompt tokens, truncated from the left so prompt + response + question fit."""
        budget = self.subject.max_length - max_new_tokens - len(self.suffix.question)
        ids = self.subject.encode(text)
        if budget < 1:
            raise UserError("the suffix question and max_new_tokens leave no room for a prompt")
        return ids[-budget:] or [self.subject.tokenizer.eos_token_id]

    def search(
        self,
        prompts: Sequence[list[int]],
        max_new_tokens: int,
        batch_size: int,
        sampling: tuple[float, float, int] = (*DEFAULT_SAMPLING, 0),
    ) -> Optimised:
        cfg = self.config(max_new_tokens, batch_size, sampling)
        self.last = optimise(self.subject, self.hooks, prompts, self.suffix, cfg)
        return self.last

    # ------------------------------------------------------------------ generation override
    def generate(
        self, prompts: Sequence[str], s: GenerationSettings, streams: Sequence[bytes]
    ) -> list[list[str]]:
        out: list[list[str]] = []
        for start in range(0, len(prompts), s.batch_size):
            end = start + s.batch_size
            batch = [self.prompt_ids(p, s.max_new_tokens) for p in prompts[start:end]]
            found = self.search(
                batch, s.max_new_tokens, s.batch_size, (s.temperature, s.top_p, s.seed)
            )
            if s.temperature > 0 or s.fixed_length:
                rows = self._sample(batch, streams[start:end], found, s)
            else:  # greedy settings: the best-scoring response itself
                rows = [[r[0]] * s.num_samples for r in found.responses]
            for samples in rows:
                texts = []
                for row in samples:
                    self.subject.generated_tokens += len(row)
                    texts.append(self.subject.tokenizer.decode(row, skip_special_tokens=True))
                out.append(texts)
        return out

    def _sample(
        self,
        batch: list[list[int]],
        streams: Sequence[bytes],
        found: Optimised,
        s: GenerationSettings,
    ) -> list[list[list[int]]]:
        """`num_samples` responses per prompt decoded under its best deltas (sampled from the
        prompt's streams, the unsteered answer's numbers; or greedy at a fixed length for
        timing)."""
        n = s.num_samples if s.temperature > 0 else 1
        rows = [p for p in batch for _ in range(n)]
        deltas = found.deltas.repeat_interleave(n, dim=1)
        lengths = found.lengths.repeat_interleave(n)
        seeds = stream_seeds(streams, n, s.seed)
        samples: list[list[int]] = []
        step = max(s.batch_size, 1)
        for start in range(0, len(rows), step):
            end = start + step
            with self.hooks.active(deltas[:, start:end], lengths[start:end]):
                samples += decode(
                    self.subject,
                    rows[start:end],
                    lengths[start:end].tolist(),
                    s.max_new_tokens,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    fixed_length=s.fixed_length,
                    streams=seeds[start:end],
                )
        return [samples[i * n : (i + 1) * n] * (s.num_samples // n) for i in range(len(batch))]

    # ------------------------------------------------------------------ log-likelihoods
    def logprobs(
        self, contexts: Sequence[str], continuations: Sequence[str], batch_size: int = 16
    ) -> list[ContinuationScore]:
        """The log-likelihood override: each context scored under its own searched deltas
        (contexts arrive already transformed)."""
        subject = self.subject
        members: dict[str, list[int]] = {}  # context -> indices of its requests
        for i, context in enumerate(contexts):
            members.setdefault(context, []).append(i)
        max_new = self.params.loglik_max_new_tokens
        budget = subject.max_length - max_new - len(self.suffix.question)
        scores: list[ContinuationScore | None] = [None] * len(contexts)
        unique = list(members)
        too_long = 0
        for start in range(0, len(unique), batch_size):  # a batch of contexts at a time
            chunk = unique[start : start + batch_size]
            # The tokens the scorer sees for a context (Subject.split_tokens strips trailing
            # spaces); the deltas line up with them from the first position.
            ids = [subject.encode(c.rstrip(" ")) or [subject.tokenizer.eos_token_id] for c in chunk]
            fits = [j for j, row in enumerate(ids) if len(row) <= budget]
            too_long += len(chunk) - len(fits)
            found = self.search([ids[j] for j in fits], max_new, batch_size) if fits else None
            slot = {chunk[j]: k for k, j in enumerate(fits)}
            for context in chunk:
                k = slot.get(context)
                steering = (
                    self.hooks.active(found.deltas[:, k : k + 1], found.lengths[k : k + 1])
                    if found is not None and k is not None
                    else nullcontext()
                )
                rows = members[context]
                with steering:
                    got = subject.logprobs_raw(
                        [context] * len(rows),
                        [continuations[i] for i in rows],
                        batch_size=batch_size,
                    )
                for i, score in zip(rows, got):
                    scores[i] = score
        if too_long:
            warnings.warn(
                f"selfcontrol: {too_long} context(s) longer than {budget} tokens scored unsteered",
                stacklevel=2,
            )
        return scores  # type: ignore[return-value]


class SelfControl(Method):
    name = "selfcontrol"
    summary = (
        "suffix-gradient control of the prompt's hidden states, iterated per prompt "
        "(Cai et al. 2024); log-likelihoods scored under the context's deltas"
    )
    Params = SelfControlParams
    self_judging = True
    default_strengths = (0.0, 1.0, 2.0)
    version = "3"  # 2: fluency guard in the step search; 3: the guard reads the fluency context

    def applies_to(self, target: SteeringTarget) -> bool:
        return target.suffix is not None

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        """Label-free: the state is the suffix question (validated against the tokenizer)."""
        if target.suffix is None:
            raise UserError(f"selfcontrol needs a suffix question; target '{target.name}' has none")
        Suffix.build(subject, target.suffix)
        return State(meta=asdict(target.suffix))

    def controller(self, subject: Subject, state: State, strength: float) -> Controller:
        return Controller(subject, self.params, suffix_of(state), strength)

    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        return self._steering(self.controller(subject, state, strength))

    def _steering(self, controller: Controller) -> AbstractContextManager[None]:
        return attached(
            controller.subject,
            hooks=controller.hooks.hooks(),
            generate=controller.generate,
            logprobs=controller.logprobs if self.params.steer_loglikelihood else None,
        )

    def distillation(
        self,
        subject: Subject,
        state: State,
        strength: float,
        prompts: Sequence[str],
        max_new_tokens: int,
        batch_size: int,
    ) -> tuple[DeltaHooks, list[list[int]], Optimised]:
        """Run the search on `prompts` (for the prefix controller). Returns the delta hooks
        (attach them and activate rows of the found deltas to reproduce the steered states),
        the prompt ids searched and the search's outcome."""
        controller = self.controller(subject, state, strength)
        rows = [controller.prompt_ids(p, max_new_tokens) for p in prompts]
        with attached(subject, hooks=controller.hooks.hooks()):
            found = controller.search(rows, max_new_tokens, batch_size)
        return controller.hooks, rows, found

    def teaching(self, subject: Subject, state: State, lesson: Lesson) -> Teaching:
        """The `Teacher` protocol (for the prefix controller): each prompt's searched deltas,
        its best response, and whether the search raised its suffix score."""
        hooks, rows, found = self.distillation(
            subject,
            state,
            lesson.strength,
            list(lesson.prompts),
            lesson.max_new_tokens,
            lesson.batch_size,
        )
        return Teaching(
            rows,
            [candidates[0] for candidates in found.responses],
            lambda start, end: _delta_rows(subject, hooks, found, start, end),
            found.scores > found.initial_scores,
            (float(found.initial_scores.mean()), float(found.scores.mean())),
        )


@contextmanager
def _delta_rows(
    subject: Subject, hooks: DeltaHooks, found: Optimised, start: int, end: int
) -> Iterator[None]:
    """Rows [start, end) of the found deltas in effect (their rows of a batch, in order)."""
    with (
        attached(subject, hooks=hooks.hooks()),
        hooks.active(found.deltas[:, start:end], found.lengths[start:end]),
    ):
        yield
