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

With no `methods` (or `tasks`) every registered method (task) runs with its defaults; an empty
list is refused (it would run nothing, or, read as "no key", everything).

Every value is checked here, when the file is parsed, so that a bad value fails in one line
before a model loads (not after the compute, in selection or the report). What can only be
checked against the machine (device, folders, data files, model folder) is `bench.preflight`.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import UserError
from bench.params import parse
from bench.positions import validate_position_spec  # noqa: F401  (re-exported for methods)

# Seeds feed torch.manual_seed, numpy's default_rng and derived seeds (seed * k + i); the
# unsigned 32-bit range is what all of them take without overflow.
SEED_RANGE = range(0, 2**32)


def _check_seed(name: str, seed: int) -> None:
    if seed not in SEED_RANGE:
        raise ValueError(f"{name} {seed} is out of range (0 to {SEED_RANGE.stop - 1})")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "testbed"
    dtype: str = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False
    revision: str | None = None
    testbed_seed: int = 0  # which testbed to build/load when name == "testbed"
    # Models larger than one device: accelerate places the modules ("auto", "balanced",
    # "balanced_low_0", "sequential") over the GPUs, the CPU and disk; `device` is then unused.
    device_map: str | None = None
    max_memory: dict[str, str] | None = None  # per device: {"0": "20GiB", "cpu": "60GiB"}
    offload_folder: str | None = None  # for weights offloaded to disk (default: a temp folder)

    def __post_init__(self) -> None:
        from bench.loading import DEVICE_MAPS, DTYPES  # (they import torch: not at the top)

        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype '{self.dtype}'; use one of {', '.join(DTYPES)}")
        if not self.name.strip():
            raise ValueError("name must not be empty (a hub id, a local directory or 'testbed')")
        if not self.device.strip():
            raise ValueError("device must not be empty (e.g. 'cpu' or 'cuda')")
        _check_seed("testbed_seed", self.testbed_seed)
        if self.device_map is not None and self.device_map not in DEVICE_MAPS:
            raise ValueError(
                f"unknown device_map '{self.device_map}'; use one of {', '.join(DEVICE_MAPS)}"
            )
        if self.max_memory is not None and self.device_map is None:
            raise ValueError('max_memory needs a device_map (e.g. device_map = "auto")')


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
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")


# In `[capability] tasks`: the lm-eval tasks the model's source names for it (the testbed's own
# capability tasks; a hub model names none).
MODEL_TASKS = "model"


@dataclass(frozen=True)
class CapabilityConfig:
    """lm-eval tasks run at each operating point (`bench.capability`)."""

    tasks: tuple[str, ...] = (MODEL_TASKS,)  # lm-eval task names; [] turns the suite off
    # Folders of lm-eval task configs (the model's own tasks' folder is added by itself).
    include_path: str | tuple[str, ...] | None = None
    # Also index lm-eval's built-in tasks (seconds per index): None = only when a task named is
    # not one of the model's own.
    include_defaults: bool | None = None
    limit: int | None = None  # items per task; None: all
    num_fewshot: int | None = None  # None: each task's own setting
    budget: float | None = None  # operating points must retain at least this much capability
    batch_size: int = 16
    seed: int = 0  # lm-eval's few-shot sampling and any sampled generation

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be at least 1, got {self.limit}")
        if self.num_fewshot is not None and self.num_fewshot < 0:
            raise ValueError(f"num_fewshot must be >= 0, got {self.num_fewshot}")
        if self.budget is not None and not (math.isfinite(self.budget) and 0 < self.budget <= 1):
            raise ValueError(f"budget must be a number in (0, 1], got {self.budget!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        _check_seed("seed", self.seed)

    @property
    def include_paths(self) -> tuple[str, ...]:
        if self.include_path is None:
            return ()
        return (self.include_path,) if isinstance(self.include_path, str) else self.include_path


@dataclass(frozen=True)
class MethodSpec:
    name: str
    strengths: tuple[float, ...] | None = None  # None: the method's default sweep
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # to run one method twice with different params

    def __post_init__(self) -> None:
        if self.strengths is None:
            return
        if not self.strengths:
            raise ValueError("strengths = [] sweeps nothing; leave it out for the default sweep")
        bad = [s for s in self.strengths if not math.isfinite(s)]
        if bad:
            raise ValueError(f"strengths must be finite numbers, got {bad[0]!r}")

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
    rule: str = "one-se"
    test_strengths: str = (
        "chosen"  # "chosen": test at 0 and the chosen strength; "all": every strength
    )

    def __post_init__(self) -> None:
        from bench.selection import RULES  # here: bench.selection's records import this module

        if not math.isfinite(self.fluency_budget):  # NaN passes the comparison below
            raise ValueError(f"fluency_budget must be a finite number, got {self.fluency_budget!r}")
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
    methods: tuple[MethodSpec, ...] | None = None  # None: every registered method
    tasks: tuple[TaskSpec, ...] | None = None  # None: every registered task
    # What steering costs the model on lm-eval tasks; by default the model's own tasks (the
    # testbed's), none for a model whose source names none. `[capability] tasks = []`: off.
    capability: CapabilityConfig = field(default_factory=CapabilityConfig)
    # Score each method x suite operating point on every other suite (`bench.side_effects`):
    # up to methods x suites x (suites - 1) more test cells per seed (none at strength 0).
    side_effects: bool = True
    report: bool = True

    def __post_init__(self) -> None:
        if self.threads < 0:
            raise ValueError("threads must be >= 0 (0: torch's default)")
        if not self.output_dir.strip():
            raise ValueError("output_dir must not be empty")
        if not self.seeds:
            raise ValueError("seeds = [] runs no cell; give at least one seed")
        for seed in self.seeds:
            _check_seed("seed", seed)
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds repeat a seed: {list(self.seeds)}")
        if not math.isfinite(self.perplexity_cap) or self.perplexity_cap <= 0:
            raise ValueError(
                f"perplexity_cap must be a finite number > 0, got {self.perplexity_cap!r}"
            )
        # None (the key left out) runs everything; an empty list would silently run nothing.
        for key in ("methods", "tasks"):
            if getattr(self, key) == ():
                raise ValueError(f"{key} = [] runs nothing; leave the key out to run every one")

    def to_dict(self) -> dict:
        return asdict(self)


def load_experiment(path: str | Path | None) -> Experiment:
    """Parse an experiment file; None gives the built-in default (testbed, everything)."""
    if path is None:
        return Experiment()
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a directory, not an experiment file")
    if not path.is_file():
        raise UserError(f"experiment file not found: {path}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise UserError(
            f"{path}: not UTF-8 text (TOML files are UTF-8): byte {error.object[error.start]:#x} "
            f"at offset {error.start}"
        ) from None
    except OSError as error:
        raise UserError(f"cannot read {path}: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    try:
        return parse(Experiment, data)
    except UserError as error:
        raise UserError(f"{path}: {error}") from None
