"""The records a run writes, typed once: the runner writes them, the reports and the check read them.

Every record is a frozen dataclass with `to_dict` (what goes into the JSON file) and
`from_dict(data, where)` (strict: a missing or mistyped field is a one-line `UserError` naming the
file and the field). `SCHEMA_VERSION` is written into every cell and the manifest; a reader refuses
files from a newer steerbench.

Schema 2 (this one) stores the unsteered model's cell of a (task, split, seed) once, with method
`UNSTEERED`; each method's strength-0 point refers to it (`RunResults.cells` in the reports
builds those views). Schema 1 copied it once per method.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.errors import UserError

SCHEMA_VERSION = 2
UNSTEERED = "unsteered"  # the method label of the shared strength-0 cells


def _float(value: Any) -> float:
    """JSON null (a NaN or inf when written) becomes NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


def _fields(cls: type, data: Any, where: str, required: tuple[str, ...]) -> Mapping[str, Any]:
    if not isinstance(data, dict):
        raise UserError(f"{where}: a {cls.__name__} record must be a JSON object")
    schema = data.get("schema", SCHEMA_VERSION)
    if isinstance(schema, int) and schema > SCHEMA_VERSION:
        raise UserError(f"{where}: results schema {schema} is newer than this steerbench")
    if isinstance(schema, int) and schema < SCHEMA_VERSION:
        raise UserError(
            f"{where}: results schema {schema} is older than this steerbench reads "
            f"({SCHEMA_VERSION}); run the experiment again into this directory to rewrite it"
        )
    missing = [k for k in required if k not in data]
    if missing:
        raise UserError(f"{where}: {cls.__name__} record lacks {', '.join(missing)}")
    return data


def _typed(where: str, build):
    try:
        return build()
    except (TypeError, ValueError, AttributeError, KeyError) as error:
        raise UserError(f"{where}: malformed record ({error})") from None


# ---------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cost:
    seconds: float
    generated_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else math.nan

    def to_dict(self) -> dict:
        return {
            "seconds": self.seconds,
            "generated_tokens": self.generated_tokens,
            "tokens_per_second": self.tokens_per_second,
        }


@dataclass(frozen=True)
class CellKey:
    """What a cell is: one (method, task, split, strength, seed) point of a sweep."""

    method: str  # the method's label in the experiment, or UNSTEERED
    method_name: str  # the registered method name, or UNSTEERED
    task: str
    split: str  # "select" or "test"
    strength: float
    seed: int


@dataclass(frozen=True)
class CellResult:
    """What evaluating a cell measured (`bench.evaluate.evaluate_cell`)."""

    metrics: Mapping[str, float]  # aggregates over the examples; NaN where undefined
    higher_is_better: Mapping[str, bool]
    primary_metric: str
    n_examples: int
    degenerate: bool  # the primary metric or the perplexity is not finite, or generation failed
    perplexity_capped: int  # samples whose perplexity hit the cap
    cost: Cost
    error: str | None = None  # why generation failed (inf/nan probabilities), if it did

    @property
    def effect(self) -> float:
        return self.metrics.get(self.primary_metric, math.nan)


@dataclass(frozen=True)
class CellRecord:
    """One finished cell as stored: its id, key and result. `shared_from` is never written: the
    reports set it on a method's view of the shared unsteered cell."""

    id: str
    key: CellKey
    result: CellResult
    shared_from: str | None = None
    schema: int = SCHEMA_VERSION

    # The fields every reader uses, without the nesting.
    method = property(lambda self: self.key.method)
    method_name = property(lambda self: self.key.method_name)
    task = property(lambda self: self.key.task)
    split = property(lambda self: self.key.split)
    strength = property(lambda self: self.key.strength)
    seed = property(lambda self: self.key.seed)
    metrics = property(lambda self: self.result.metrics)
    primary_metric = property(lambda self: self.result.primary_metric)
    higher_is_better = property(lambda self: self.result.higher_is_better)
    degenerate = property(lambda self: self.result.degenerate)
    effect = property(lambda self: self.result.effect)

    @property
    def source_id(self) -> str:
        """The stored cell whose numbers these are (views of the unsteered cell share one)."""
        return self.shared_from or self.id

    def viewed_as(self, method: str, method_name: str) -> CellRecord:
        """This (unsteered) cell as `method`'s strength-0 point."""
        key = dataclasses.replace(self.key, method=method, method_name=method_name)
        return dataclasses.replace(self, key=key, shared_from=self.id)

    def to_dict(self) -> dict:
        r = self.result
        return {
            "schema": self.schema,
            "id": self.id,
            **dataclasses.asdict(self.key),
            "metrics": dict(r.metrics),
            "higher_is_better": dict(r.higher_is_better),
            "primary_metric": r.primary_metric,
            "n_examples": r.n_examples,
            "degenerate": r.degenerate,
            "perplexity_capped": r.perplexity_capped,
            "cost": r.cost.to_dict(),
            "error": r.error,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> CellRecord:
        d = _fields(cls, data, where, ("id", "method", "task", "split", "strength", "seed"))
        d = _fields(cls, d, where, ("metrics", "primary_metric", "cost"))

        def build() -> CellRecord:
            cost = d["cost"]
            return cls(
                id=str(d["id"]),
                key=CellKey(
                    method=str(d["method"]),
                    method_name=str(d.get("method_name", d["method"])),
                    task=str(d["task"]),
                    split=str(d["split"]),
                    strength=float(d["strength"]),
                    seed=int(d["seed"]),
                ),
                result=CellResult(
                    metrics={str(k): _float(v) for k, v in dict(d["metrics"]).items()},
                    higher_is_better={
                        str(k): bool(v) for k, v in dict(d.get("higher_is_better") or {}).items()
                    },
                    primary_metric=str(d["primary_metric"]),
                    n_examples=int(d.get("n_examples", 0)),
                    degenerate=bool(d.get("degenerate", False)),
                    perplexity_capped=int(d.get("perplexity_capped") or 0),
                    cost=Cost(_float(cost.get("seconds")), int(cost.get("generated_tokens") or 0)),
                    error=d.get("error"),
                ),
                schema=int(d.get("schema", SCHEMA_VERSION)),
            )

        return _typed(where, build)


@dataclass(frozen=True)
class ExampleRecord:
    """One example of a cell: its scores, the task's details and the model's outputs."""

    cell: str
    example: str
    scores: Mapping[str, float]
    details: Mapping[str, Any]
    # Per request of the example: generated samples, or a continuation score's fields.
    outputs: tuple[Any, ...]

    def to_dict(self) -> dict:
        return {
            "cell": self.cell,
            "example": self.example,
            "scores": dict(self.scores),
            "details": dict(self.details),
            "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> ExampleRecord:
        d = _fields(cls, data, where, ("cell", "example", "scores", "outputs"))
        return _typed(
            where,
            lambda: cls(
                cell=str(d["cell"]),
                example=str(d["example"]),
                scores={str(k): _float(v) for k, v in dict(d["scores"]).items()},
                details=dict(d.get("details") or {}),
                outputs=tuple(d["outputs"]),
            ),
        )


# ------------------------------------------------------------------- run-level records
def _simple_from_dict(cls, data: Any, where: str):
    """A flat record: required fields are those without a default; unknown keys are ignored."""
    names = [f.name for f in dataclasses.fields(cls)]
    required = tuple(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    d = _fields(cls, data, where, required)
    return _typed(where, lambda: cls(**{k: d[k] for k in names if k in d}))


@dataclass(frozen=True)
class Choice:
    """The operating strength chosen on `select` for one method x task (`bench.selection`)."""

    method: str
    task: str
    strength: float
    effect: float
    reason: str
    reference_perplexity: float | None = None
    perplexity_limit: float | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Choice:
        choice = _simple_from_dict(cls, data, where)
        return dataclasses.replace(
            choice, strength=float(choice.strength), effect=_float(choice.effect)
        )


@dataclass(frozen=True)
class Skip:
    """A method x task pair that did not run, and why."""

    method: str
    task: str
    reason: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Skip:
        return _simple_from_dict(cls, data, where)


@dataclass(frozen=True)
class Fit:
    """One fitted (or cached) state of a method for a steering target."""

    method: str
    task: str
    target: str
    state: str  # the state's content key in the state cache
    cached: bool
    seconds: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Fit:
        return _simple_from_dict(cls, data, where)


# ------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class ModelInfo:
    name: str = "–"
    fingerprint: str = "–"
    type: str = "–"
    n_layers: int | None = None


@dataclass(frozen=True)
class MethodEntry:
    label: str
    name: str
    strengths: tuple[float, ...] = ()


@dataclass(frozen=True)
class TaskEntry:
    name: str
    scorers: Mapping[str, str] = field(default_factory=dict)
    source: str = ""  # where the data came from
    sizes: Mapping[str, int] = field(default_factory=dict)  # examples per split


@dataclass(frozen=True)
class Manifest:
    """What a run was: configuration, environment, model, plan, status and timing."""

    status: str = "unknown"  # running, interrupted or complete
    experiment: Mapping[str, Any] = field(default_factory=dict)
    experiment_file: str | None = None
    seeds: tuple[int, ...] = ()
    packages: Mapping[str, str | None] = field(default_factory=dict)
    git: str | None = None
    model: ModelInfo = ModelInfo()
    evaluator: str = "–"
    methods: tuple[MethodEntry, ...] = ()
    tasks: tuple[TaskEntry, ...] = ()
    started: float | None = None
    wall_seconds: float | None = None
    schema: int = SCHEMA_VERSION

    @property
    def fluency_budget(self) -> float:
        """The budget the runner chose operating points under."""
        return float((self.experiment.get("selection") or {}).get("fluency_budget", 1.5))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        d = _fields(cls, data, where, ())

        def build() -> Manifest:
            return cls(
                status=str(d.get("status", "unknown")),
                experiment=dict(d.get("experiment") or {}),
                experiment_file=d.get("experiment_file"),
                seeds=tuple(int(s) for s in d.get("seeds") or ()),
                packages=dict(d.get("packages") or {}),
                git=d.get("git"),
                model=ModelInfo(**dict(d.get("model") or {})),
                evaluator=str(d.get("evaluator", "–")),
                methods=tuple(
                    MethodEntry(str(m["label"]), str(m["name"]), tuple(m.get("strengths", ())))
                    for m in d.get("methods") or ()
                ),
                tasks=tuple(
                    TaskEntry(
                        str(t["name"]),
                        dict(t.get("scorers") or {}),
                        str(t.get("source", "")),
                        dict(t.get("sizes") or {}),
                    )
                    for t in d.get("tasks") or ()
                ),
                started=d.get("started"),
                wall_seconds=d.get("wall_seconds"),
                schema=int(d.get("schema", SCHEMA_VERSION)),
            )

        return _typed(where, build)
