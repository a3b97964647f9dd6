"""The task interface: examples in three splits, what to ask the model, how to score the answers.

A task never calls the model itself. For each example it returns requests (generate from a
prompt, or score a continuation given a context); the runner executes them under steering, in
batches, and hands the outputs back to `score`. That keeps batching, steering and fluency
scoring in one place and tasks to their domain logic.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from bench.judgement import JudgementPairs
from bench.method import NoParams
from bench.metric import DerivedMetric, Metric
from bench.subject import ContinuationScore
from bench.target import SteeringTarget


@dataclass(frozen=True)
class Example:
    """Base for a task's examples; tasks subclass it with typed fields."""

    id: str


@dataclass(frozen=True)
class Splits:
    fit: tuple[Example, ...]  # data methods may learn from (contrast pairs, prompts)
    select: tuple[Example, ...]  # where each method's operating strength is chosen
    test: tuple[Example, ...]  # where the chosen operating point is reported
    source: str = ""  # where the data came from, for the report

    def get(self, split: str) -> tuple[Example, ...]:
        return {"fit": self.fit, "select": self.select, "test": self.test}[split]


@dataclass(frozen=True)
class Generate:
    """Sample continuations of `prompt`; their fluency is scored by the runner.

    `fluency_context` is what the evaluator reads before a continuation when it scores its
    perplexity (None: the prompt). A suite whose steering is *meant* to make the text unlikely
    under the unsteered model (a counterfactual fact) puts the requested change in it, so that
    perplexity measures how fluent the text is, not how much it departs from the old belief."""

    prompt: str
    num_samples: int = 1
    max_new_tokens: int | None = None  # None: the experiment's generation setting
    fluency_context: str | None = None

    @property
    def evaluator_context(self) -> str:
        return self.prompt if self.fluency_context is None else self.fluency_context


@dataclass(frozen=True)
class Loglikelihood:
    context: str
    continuation: str


Request = Generate | Loglikelihood
Output = tuple[str, ...] | ContinuationScore


@dataclass(frozen=True)
class Scored:
    """A task's verdict on one example."""

    scores: Mapping[str, float]
    details: Mapping[str, object] = field(default_factory=dict)  # kept in the per-example record


class Task(ABC):
    """A suite. `metrics` and `primary_metric` are class defaults that an instance may replace
    in `__init__` when they depend on its parameters (e.g. the sentiment direction)."""

    name: ClassVar[str]
    Params: ClassVar[type] = NoParams
    summary: ClassVar[str] = ""
    metrics: ClassVar[tuple[Metric, ...]] = ()
    derived_metrics: ClassVar[tuple[DerivedMetric, ...]] = ()
    primary_metric: ClassVar[str]  # the "effect" a method is judged on

    def __init__(self, params=None) -> None:
        self.params = params if params is not None else self.Params()

    @abstractmethod
    def load(self) -> Splits:
        """Read the data (real or testbed) into typed examples."""

    @abstractmethod
    def target(self, example: Example, splits: Splits) -> SteeringTarget:
        """The steering target for `example` (usually the same object for all examples)."""

    @abstractmethod
    def requests(self, example: Example) -> Sequence[Request]:
        """What to ask the (steered) model about this example."""

    @abstractmethod
    def score(self, example: Example, outputs: Sequence[Output]) -> Scored:
        """Per-example metric values from the outputs of `requests(example)`, in order."""

    def scorers(self) -> Mapping[str, str]:
        """Which scorer produced which metric (named in the report)."""
        return {}

    def judgement_pairs(self, splits: Splits, split: str = "test") -> JudgementPairs:
        """Labelled (better, worse) text pairs of `split` for the self-judgement measurement
        (`bench.judgement`), asked through the suite's own suffix question; a suite without
        them says why, rather than inventing some."""
        return JudgementPairs(missing=f"{self.name} yields no labelled pairs to judge")

    def metric(self, name: str) -> Metric | DerivedMetric:
        for m in (*self.metrics, *self.derived_metrics):
            if m.name == name:
                return m
        raise KeyError(name)
