"""What a teacher hands the prefix controller to distil: `Teaching`, and the `Teacher` protocol.

Any method can teach by steering: its `steer` context is entered over the prompts
(`by_steering`), and whatever it does to the hidden states is the lesson. A method whose
steering differs per prompt (SelfControl searches deltas for each one) cannot show its lesson
through one context over a whole batch; it implements `Teacher` and says itself how it steered
each prompt and which prompts it improved.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from bench.method import Method
from bench.state import State
from bench.subject import GenerationSettings, Subject


@dataclass(frozen=True)
class Lesson:
    """What the prefix controller asks of a teacher: steer these prompts at this strength."""

    prompts: tuple[str, ...]
    strength: float
    max_new_tokens: int  # the teacher's responses are at most this long
    batch_size: int  # prompts per batch


@dataclass(frozen=True)
class Teaching:
    """Prompt rows and the teacher's responses, a context applying its steering to rows
    [start, end) of them, and which prompts it improved (None when it has no suffix score)."""

    rows: list[list[int]]  # prompt token ids
    responses: list[list[int]]  # the teacher's greedy response to each prompt
    steering: Callable[[int, int], AbstractContextManager]
    improved: torch.Tensor | None  # (n_prompts,) bool
    scores: tuple[float, float] | None  # mean suffix score before / after, when known


@runtime_checkable
class Teacher(Protocol):
    """A method that teaches otherwise than through one `steer` context for every prompt."""

    def teaching(self, subject: Subject, state: State, lesson: Lesson) -> Teaching:
        """Steer each of the lesson's prompts and say how to reproduce that on its rows."""
        ...


def teaching_of(method: Method, subject: Subject, state: State, lesson: Lesson) -> Teaching:
    """What `method`, fitted to `state`, teaches in `lesson`."""
    if isinstance(method, Teacher):
        return method.teaching(subject, state, lesson)
    return by_steering(method, subject, state, lesson)


def by_steering(method: Method, subject: Subject, state: State, lesson: Lesson) -> Teaching:
    """The lesson of any method: its greedy responses under `steer`, and `steer` itself."""
    n = lesson.max_new_tokens
    budget = max(subject.max_length - n, 1)  # prompt tokens that fit before the response
    prompts = list(lesson.prompts)
    rows = [subject.encode(t)[-budget:] or [subject.tokenizer.eos_token_id] for t in prompts]
    greedy = GenerationSettings(n, 0.0, batch_size=lesson.batch_size)
    with method.steer(subject, state, lesson.strength):
        texts = subject.generate(prompts, greedy)
    responses = [
        subject.tokenizer(samples[0], add_special_tokens=False)["input_ids"][:n]
        for samples in texts
    ]
    return Teaching(
        rows,
        responses,
        lambda start, end: method.steer(subject, state, lesson.strength),
        None,
        None,
    )
