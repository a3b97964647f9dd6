"""Experiment files: TOML of values only, parsed into frozen dataclasses.

    output_dir = "runs/sentiment-gpt2"
    seeds = [0, 1]

    [model]
    name = "gpt2"            # hub id, local directory, or "testbed" (the built-in default)

    [generation]
    max_new_tokens = 24

    [[methods]]
    name = "caa"
    strengths = [0, 2, 4]
    params = { layer = 6 }

    [[tasks]]
    name = "sentiment"
    params = { source = "testbed" }

With no `methods` (or `tasks`) every registered method (task) runs with its defaults.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.params import parse
from bench.positions import validate_position_spec  # noqa: F401  (re-exported for methods)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "testbed"
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    revision: str | None = None
    testbed_seed: int = 0  # which testbed to build/load when name == "testbed"


@dataclass(frozen=True)
class GenerationConfig:
    max_new_tokens: int = 24
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 0.9
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    strengths: tuple[float, ...] | None = None  # None: the method's default sweep
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # to run one method twice with different params

    @property
    def display(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class TaskSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SelectionConfig:
    # The operating strength is chosen on `select` among strengths whose perplexity is within
    # `fluency_budget` x the unsteered perplexity (geometric mean of the sample ratios), by
    # `rule` (`bench.selection.RULES`).
    fluency_budget: float = 1.5
    rule: str = "smallest-within-noise"
    test_strengths: str = (
        "chosen"  # "chosen": test at 0 and the chosen strength; "all": every strength
    )

    def __post_init__(self) -> None:
        from bench.selection import RULES  # here: bench.selection's records import this module

        if self.fluency_budget < 1:
            raise ValueError("fluency_budget must be >= 1")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}")
        if self.test_strengths not in ("chosen", "all"):
            raise ValueError("test_strengths must be 'chosen' or 'all'")


@dataclass(frozen=True)
class Experiment:
    output_dir: str = "runs/default"
    seeds: tuple[int, ...] = (0,)
    evaluator: str | None = None  # LM for perplexity; None = the unsteered subject
    perplexity_cap: float = 1e4  # larger per-sample perplexities are capped (and counted)
    threads: int = 0  # torch CPU threads during the run; 0 = torch's default (one per core)
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    methods: tuple[MethodSpec, ...] = ()
    tasks: tuple[TaskSpec, ...] = ()
    report: bool = True

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError("threads must be >= 0 (0: torch's default)")

    def to_dict(self) -> dict:
        return asdict(self)


def load_experiment(path: str | Path | None) -> Experiment:
    """Parse an experiment file; None gives the built-in default (testbed, everything)."""
    if path is None:
        return Experiment()
    path = Path(path)
    if not path.is_file():
        raise UserError(f"experiment file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    try:
        return parse(Experiment, data)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
