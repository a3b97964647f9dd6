"""The method interface: fit a state for a steering target, then steer with it at a strength.

A method implements `fit` and `steered`; callers enter `steer`, which attaches nothing at
strength 0 and hands every other strength to `steered`.

Contract for every method (checked by tests/test_method_contract.py):
- strength 0 reproduces the unsteered logits exactly (by construction: `steer` attaches nothing);
- nothing attached by `steer` survives the context, also when its body raises;
- `State.save` / `State.load` round-trips the fitted state;
- the same seed gives the same outputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import ClassVar, final

from bench.state import State
from bench.subject import Subject
from bench.target import SteeringTarget


@dataclass(frozen=True)
class NoParams:
    pass


class NotApplicable(Exception):
    """Raised by `fit` when the method cannot be fitted for this subject (say, it needs the
    corpus the model was trained on and the model's source has none): the runner records the
    method x task pair as skipped, with this message as the reason."""


class Method(ABC):
    name: ClassVar[str]
    Params: ClassVar[type] = NoParams  # a frozen dataclass with defaults for every field
    default_strengths: ClassVar[tuple[float, ...]] = (0.0, 1.0)
    version: ClassVar[str] = "1"  # bump when fitting changes, to invalidate cached states
    summary: ClassVar[str] = ""
    # Inference cost budget: steered / unsteered generation time at equal batch, checked by
    # `steerbench bench` (None: no budget, e.g. iterative methods or longer prompts).
    cost_budget: ClassVar[float | None] = None
    # Steers by climbing the subject's own judgement (the target's suffix question): the runner
    # then measures that judgement per task (`bench.judgement`) and the report shows it.
    self_judging: ClassVar[bool] = False

    def __init__(self, params=None) -> None:
        self.params = params if params is not None else self.Params()

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "steer" in cls.__dict__:  # it would bypass the strength-0 guarantee
            raise TypeError(
                f"{cls.__name__} overrides Method.steer; implement steered() instead "
                "(strength 0 is handled by the base class)"
            )

    def applies_to(self, target: SteeringTarget) -> bool:
        """Whether `target` has what this method needs (else the runner skips the pair)."""
        return True

    @abstractmethod
    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        """Everything the method learns for `target`; may be cheap (e.g. empty for prompting)."""

    @final
    def steer(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        """Steering in effect inside the context. Strength 0 attaches nothing, so it is the
        unsteered model exactly whatever the method; methods implement `steered`, not this."""
        if strength == 0:
            return nullcontext()
        return self.steered(subject, state, strength)

    @abstractmethod
    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        """Steering at a nonzero `strength` (called through `steer` only); attach with
        `bench.steering.attached`, so that everything is removed when the context ends."""

    def fit_key_parts(self) -> dict:
        """What the fitted state depends on, besides the target and the model."""
        return {"method": self.name, "version": self.version, "params": asdict(self.params)}


def iter_strengths(strengths: tuple[float, ...]) -> Iterator[float]:
    """Strengths in sweep order with 0 always included first."""
    yield 0.0
    yield from sorted({float(s) for s in strengths} - {0.0})
