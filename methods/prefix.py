"""Prefix controller (Cai et al. 2024): SelfControl's steering compressed into a trained prefix.

Fit: run the teacher on the target's prompts (the suite's fit split), record the teacher's
steered `resid_post` states of every layer, keep the prompts the paper keeps (the steered
prompt states moved, by at most `max_delta_ratio` x the states' own norm on average, and the
teacher raised the suffix score), then train the prefix (`methods.prefix_module`) to reproduce
those states by MSE. Steering is then a handful of matrix products per layer: no search, no
generation override, about the cost of an unsteered run.

Which states: the paper matches the prompt positions only. By default (`train_on =
"prompt+response"`) the states on the teacher's own greedy response are matched too (for
SelfControl: the response generated under the deltas, whose states feel them through
attention) - a prefix also acts at every generated position, and without targets there it
extrapolates, so its state changes on responses follow the teacher's much less closely
(README). `train_on = "prompt"` is the paper's recipe. The targets come from few prompts (the
filters keep those the teacher improved), so keys and values are trained with AdamW weight decay
(1.0): it keeps the prefix's reads small on tokens unlike the training prompts, which is where
an untamed prefix hurt fluency most, at a small cost in fit.

The teacher is SelfControl by default; any registered method can be distilled instead
(`teacher = "caa"`, `teacher_params = {...}`, `teacher_strength = ...`), through
`methods.teaching`: a method implementing its `Teacher` protocol (SelfControl: deltas searched
per prompt) says itself how it steered each prompt; any other has its `steer` context entered
and the states it produces are the targets (methods that only transform the prompt text change
no hidden states and yield no data).

Strength scales the prefix's contribution linearly: 0 is the unsteered model exactly (nothing is
attached), 1 the trained prefix, 2 twice its contribution. The prefix attends from every
position, prompt and generated, like a real prefix.
"""

from __future__ import annotations

import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from bench.errors import UserError
from bench.method import Method
from bench.params import parse
from bench.state import State
from bench.steering import attached
from bench.subject import Subject
from bench.target import SteeringTarget
from methods.prefix_module import Batch, PrefixHooks, TrainConfig, record_states, train_prefix
from methods.teaching import Lesson, Teaching, teaching_of


@dataclass(frozen=True)
class PrefixParams:
    teacher: str = "selfcontrol"  # the method whose steered states are distilled
    teacher_params: dict[str, Any] = field(default_factory=dict)  # its Params, as in a config
    teacher_strength: float = 1.0
    prefix_len: int = 8  # prefix slots per head
    heads: int = 4
    layers: tuple[int, ...] = ()  # layers that get a prefix; () = all
    max_prompts: int = 32  # fit-split prompts used for the targets
    distill_max_new_tokens: int = 16  # SelfControl's candidate response length while distilling
    max_delta_ratio: float = 0.5  # drop prompts whose states moved more than this (paper: 0.1)
    require_improvement: bool = True  # keep only prompts whose suffix score the teacher raised
    # Positions whose states are matched: the prompt's (the paper), or also the teacher's own
    # greedy response to it, so the prefix learns how the steered model continues too.
    train_on: Literal["prompt", "prompt+response"] = "prompt+response"
    train_steps: int = 100  # twice what the MSE takes to plateau on the testbed (README)
    lr: float = 0.01
    weight_decay: float = 1.0  # AdamW decay of keys/values: smaller reads on unseen tokens
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.teacher == "prefix":
            raise ValueError("teacher: the prefix controller cannot distil itself")
        if min(self.prefix_len, self.heads, self.max_prompts, self.batch_size) < 1:
            raise ValueError("prefix_len, heads, max_prompts and batch_size must be at least 1")
        if self.train_steps < 0 or self.lr <= 0 or self.max_delta_ratio <= 0:
            raise ValueError("train_steps must be >= 0, lr and max_delta_ratio positive")


class PrefixController(Method):
    name = "prefix"
    summary = "trained gated prefix distilled from SelfControl's (or any method's) steered states"
    Params = PrefixParams
    self_judging = True  # distils SelfControl's states by default: the same judgement
    default_strengths = (0.0, 0.5, 1.0, 2.0)  # cheap to sweep: no search at inference
    version = "1"
    cost_budget = 1.2  # one small prefix read per layer (steerbench bench checks it)

    def teacher(self) -> Method:
        from bench.registry import METHODS  # the registry imports this package

        cls = METHODS.get(self.params.teacher)
        if cls is PrefixController:
            raise UserError("prefix.teacher: the prefix controller cannot distil itself")
        return cls(parse(cls.Params, self.params.teacher_params, "prefix.teacher_params"))

    def fit_key_parts(self) -> dict:
        return {**super().fit_key_parts(), "teacher": self.teacher().fit_key_parts()}

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.prompts) and self.teacher().applies_to(target)

    # ------------------------------------------------------------------ fit
    def teach(self, subject: Subject, target: SteeringTarget) -> Teaching:
        p = self.params
        teacher = self.teacher()
        prompts = tuple(target.prompts[: p.max_prompts])
        lesson = Lesson(prompts, p.teacher_strength, p.distill_max_new_tokens, p.batch_size)
        return teaching_of(teacher, subject, teacher.fit(subject, target), lesson)

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        p = self.params
        if not target.prompts:
            raise UserError(f"prefix needs prompts; target '{target.name}' has none")
        n_layers = subject.n_layers
        for layer in p.layers:
            if not -n_layers <= layer < n_layers:
                raise UserError(f"prefix.layers: {layer} out of range for {n_layers} layers")
        layers = sorted({layer % n_layers for layer in p.layers} or range(n_layers))
        teaching = self.teach(subject, target)
        with_response = p.train_on == "prompt+response"
        kept, ratios = [], []  # kept: (token row, positions trained, target states)
        for start in range(0, len(teaching.rows), p.batch_size):
            prompts = teaching.rows[start : start + p.batch_size]
            chunk = [
                row + (teaching.responses[start + i] if with_response else [])
                for i, row in enumerate(prompts)
            ]
            batch = Batch.of(subject, chunk)
            original = record_states(subject, batch)  # (n_layers, b, W, d), left padded
            with teaching.steering(start, start + len(chunk)):
                steered = record_states(subject, batch)
            for i, row in enumerate(chunk):
                n = len(row)  # the row's tokens are its last n positions; the prompt leads
                orig, goal = original[:, i, -n:], steered[:, i, -n:]
                prompt = slice(0, len(prompts[i]))  # the paper's filter reads the prompt
                moved = (goal[:, prompt] - orig[:, prompt]).norm(dim=-1).mean()
                ratio = float(moved / orig[:, prompt].norm(dim=-1).mean().clamp_min(1e-12))
                ratios.append(ratio)
                improved = teaching.improved is None or bool(teaching.improved[start + i])
                if 0 < ratio <= p.max_delta_ratio and (improved or not p.require_improvement):
                    kept.append((row, n if with_response else len(prompts[i]), goal))
        meta: dict[str, Any] = {
            "layers": layers,
            "heads": p.heads,
            "prefix_len": p.prefix_len,
            "teacher": p.teacher,
            "train_on": p.train_on,
            "n_prompts": len(teaching.rows),
            "n_kept": len(kept),
            "mean_delta_ratio": sum(ratios) / len(ratios),
        }
        if teaching.scores is not None:
            meta["teacher_suffix_score"] = list(teaching.scores)
        if not kept:
            warnings.warn(
                f"prefix: no usable targets for '{target.name}' from {p.teacher} "
                f"({len(teaching.rows)} prompts; mean delta ratio {meta['mean_delta_ratio']:.3g}); "
                "the prefix stays untrained (no effect)",
                stacklevel=2,
            )
        batches = []
        for start in range(0, len(kept), p.batch_size):
            chunk = kept[start : start + p.batch_size]
            batch = Batch.of(subject, [row for row, _, _ in chunk])
            width = batch.ids.shape[1]
            goal = torch.zeros(n_layers, len(chunk), width, subject.d_model)
            trained = torch.zeros(len(chunk), width, dtype=torch.bool)  # loss positions
            for i, (row, n_trained, states) in enumerate(chunk):
                goal[:, i, width - len(row) :] = states.cpu()
                trained[i, width - len(row) : width - len(row) + n_trained] = True
            batches.append((batch, goal.to(subject.device), trained.to(subject.device)))
        cfg = TrainConfig(
            p.heads,
            p.prefix_len,
            p.train_steps if kept else 0,
            p.lr,
            p.batch_size,
            p.seed,
            p.weight_decay,
        )
        keys, values, losses = train_prefix(subject, layers, batches, cfg)
        meta["loss"] = [losses[0], losses[-1]] if losses else []
        return State(tensors={"keys": keys.cpu(), "values": values.cpu()}, meta=meta)

    # ------------------------------------------------------------------ steer
    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        m = state.meta
        keys = state.tensors["keys"].to(subject.device)
        values = state.tensors["values"].to(subject.device)
        prefix = PrefixHooks(m["layers"], keys, values, int(m["heads"]), strength)
        return attached(subject, hooks=prefix.hooks())
