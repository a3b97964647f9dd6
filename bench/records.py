"""The records a run writes, typed once: the runner writes them, the reports and the check read them.

Every record is a frozen dataclass with `to_dict` (what goes into the JSON file) and
`from_dict(data, where)`, which reads it back strictly: a missing field or a value of the wrong
type is a one-line `UserError` naming the file and the field (each field is read by its
annotation, `_converter`); unknown keys are ignored, so that a newer writer may add some.
`SCHEMA_VERSION` is written into every cell and the manifest; a reader refuses other versions.

Schema 2 (this one) stores the unsteered model's cell of a (task, split, seed) once, with method
`UNSTEERED`; the reports view it as each method's strength-0 point (`CellRecord.viewed_as`,
`reports.runs.unsteered_views`). Schema 1 copied it once per method.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.config import SelectionConfig
from bench.errors import UserError
from bench.stats import Difference, Interval

SCHEMA_VERSION = 2
UNSTEERED = "unsteered"  # the method label of the shared strength-0 cells


# ------------------------------------------------------------------------ reading JSON
class _Malformed(ValueError):
    """A value does not fit its field; the message says where and what was expected."""


def _number(value: Any) -> float:
    if value is None:  # how a NaN or inf was written (JSON has neither)
        return math.nan
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Malformed(f"expected a number, got {value!r}")
    return float(value)


def _expect(kind: type, what: str) -> Callable[[Any], Any]:
    """A reader that passes values of `kind` through (a JSON true is no integer)."""

    def read(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise _Malformed(f"expected {what}, got {value!r}")
        return value

    return read


_integer = _expect(int, "an integer")
_text = _expect(str, "a string")
_flag = _expect(bool, "true or false")
_object = _expect(dict, "a JSON object")
_list = _expect(list, "a JSON list")


SCALARS: dict[str, Callable[[Any], Any]] = {
    "str": _text,
    "float": _number,
    "int": _integer,
    "bool": _flag,
    "Any": lambda value: value,
}


def _converter(annotation: str) -> Callable[[Any], Any]:
    """How a field annotated `annotation` (as written in the dataclasses here) is read."""
    if annotation in SCALARS:
        return SCALARS[annotation]
    if annotation.endswith(" | None"):
        inner = _converter(annotation.removesuffix(" | None"))
        return lambda value: None if value is None else inner(value)
    if annotation.startswith("tuple[") and annotation.endswith(", ...]"):
        item = _converter(annotation[len("tuple[") : -len(", ...]")])
        return lambda value: tuple(item(v) for v in _list(value))
    if annotation.startswith("Mapping[str, "):
        item = _converter(annotation[len("Mapping[str, ") : -1])
        return lambda value: {str(k): item(v) for k, v in _object(value).items()}
    record = RECORDS[annotation]
    return lambda value: _read(record, value)


def _read(cls: type, data: Any):
    """`cls` from a JSON object, each field by its annotation (raises `_Malformed`)."""
    data = _object(data)
    fields = dataclasses.fields(cls)
    missing = [
        f.name
        for f in fields
        if f.name not in data
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise _Malformed(f"lacks {', '.join(missing)}")
    values = {}
    for f in fields:
        if f.name in data:
            try:
                values[f.name] = _converter(f.type)(data[f.name])
            except _Malformed as error:
                raise _Malformed(f"{f.name}: {error}") from None
    return cls(**values)


def _record(cls: type, data: Any, where: str):
    """`cls` from a record of a result file, or a one-line `UserError` naming what is wrong."""
    if isinstance(data, dict):
        schema = data.get("schema", SCHEMA_VERSION)
        if schema != SCHEMA_VERSION:
            older = isinstance(schema, int) and schema < SCHEMA_VERSION
            raise UserError(
                f"{where}: results schema {schema} is "
                + (
                    f"older than this steerbench reads ({SCHEMA_VERSION}); run the experiment "
                    "again into a new directory, or into this one to rewrite its cells"
                    if older
                    else "not one this steerbench reads (a newer steerbench wrote it?)"
                )
            )
    try:
        return _read(cls, data)
    except _Malformed as error:
        raise UserError(f"{where}: {error}") from None


class Record:
    """A flat record: its JSON object is its fields (`to_dict`), read back by `from_dict`."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, data: Any, where: str):
        return _record(cls, data, where)


# ---------------------------------------------------------------------------------- cells
@dataclass(frozen=True)
class Cost:
    seconds: float
    generated_tokens: int

    @property
    def tokens_per_second(self) -> float:
        return self.generated_tokens / self.seconds if self.seconds else math.nan

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "tokens_per_second": self.tokens_per_second}


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
class Derivation:
    """How a derived metric is computed from other metrics' aggregates (`bench.metric`)."""

    of: tuple[str, ...]
    combine: str  # a name in `bench.metric.COMBINERS`


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
    # The derived metrics among `metrics`; every other metric is the mean of its examples' scores.
    derived: Mapping[str, Derivation] = field(default_factory=dict)

    @property
    def effect(self) -> float:
        return self.metrics.get(self.primary_metric, math.nan)


@dataclass(frozen=True)
class CellRecord:
    """One finished cell: its id, key and result, stored as one flat JSON object. `view_of` is
    never stored: the reports set it on a method's view of the shared unsteered cell."""

    id: str
    key: CellKey
    result: CellResult
    view_of: str | None = None

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
        return self.view_of or self.id

    def viewed_as(self, method: str, method_name: str) -> CellRecord:
        """This (unsteered) cell as `method`'s strength-0 point."""
        key = dataclasses.replace(self.key, method=method, method_name=method_name)
        return dataclasses.replace(self, key=key, view_of=self.id)

    def to_dict(self) -> dict:
        result = {**dataclasses.asdict(self.result), "cost": self.result.cost.to_dict()}
        return {"schema": SCHEMA_VERSION, "id": self.id, **dataclasses.asdict(self.key), **result}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> CellRecord:
        return cls(
            id=_record(_CellId, data, where).id,
            key=_record(CellKey, data, where),
            result=_record(CellResult, data, where),
        )


@dataclass(frozen=True)
class _CellId:
    id: str


@dataclass(frozen=True)
class ExampleRecord(Record):
    """One example of a cell: its scores, the task's details and the model's outputs."""

    cell: str
    example: str
    scores: Mapping[str, float]
    details: Mapping[str, Any]
    # Per request of the example: generated samples, or a continuation score's fields.
    outputs: tuple[Any, ...]


# ------------------------------------------------------------------- run-level records
@dataclass(frozen=True)
class Choice(Record):
    """The operating strength chosen on `select` for one method x task (`bench.selection`)."""

    method: str
    task: str
    strength: float
    effect: float
    reason: str
    reference_perplexity: float | None = None
    perplexity_limit: float | None = None
    perplexity_ratio: float | None = None  # geometric mean of the sample ratios, at `strength`
    rule: str = ""  # `bench.selection.RULES`; "" in runs that predate the rules
    best_strength: float | None = None  # the best mean effect's strength, and that effect
    best_effect: float | None = None
    unsteered_effect: float | None = None  # at strength 0, on select


@dataclass(frozen=True)
class Skip(Record):
    """A method x task pair that did not run, and why."""

    method: str
    task: str
    reason: str


@dataclass(frozen=True)
class Fit(Record):
    """One fitted (or cached) state of a method for a steering target."""

    method: str
    task: str
    target: str
    state: str  # the state's content key in the state cache
    cached: bool
    seconds: float


@dataclass(frozen=True)
class Judgement(Record):
    """The subject's self-judgement on one suite (`bench.judgement`): its accuracy at preferring
    the better of two texts through the suite's suffix question, on the test split. A suite
    without labelled pairs has no intervals and says why in `missing`."""

    task: str
    model: str
    pairwise: Interval | None = None
    pointwise: Interval | None = None
    ties: int = 0  # pairs without a preference, excluded
    question: str = ""
    source: str = ""  # what the pairs are
    missing: str = ""  # why there are no pairs ("" when there are)
    mean_log_odds_better: float | None = None  # log p(target) - log p(contrast), means
    mean_log_odds_worse: float | None = None
    methods: tuple[str, ...] = ()  # in a run: the self-judging methods' labels it concerns


# ------------------------------------------------------------------------------ manifest
@dataclass(frozen=True)
class ModelInfo:
    name: str | None = None
    fingerprint: str | None = None
    type: str | None = None
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
    """What a run was: configuration, environment, model, plan, status and timing. A run
    directory without a manifest reads as the empty one (every field unknown)."""

    status: str | None = None  # running, then complete, interrupted or failed
    experiment: Mapping[str, Any] = field(default_factory=dict)  # `Experiment.to_dict()`
    experiment_file: str | None = None
    seeds: tuple[int, ...] = ()
    packages: Mapping[str, str | None] = field(default_factory=dict)
    git: str | None = None
    model: ModelInfo = ModelInfo()
    evaluator: str | None = None
    methods: tuple[MethodEntry, ...] = ()
    tasks: tuple[TaskEntry, ...] = ()
    started: float | None = None
    wall_seconds: float | None = None

    @property
    def fluency_budget(self) -> float:
        """The budget the runner chose operating points under."""
        selection = self.experiment.get("selection") or {}
        return selection.get("fluency_budget", SelectionConfig().fluency_budget)

    @property
    def selection_rule(self) -> str:
        """The rule the runner chose operating points by (`bench.selection.RULES`); a run that
        predates the rules chose the best mean."""
        selection = self.experiment.get("selection") or {}
        return (
            str(selection.get("rule", "best-mean")) if self.experiment else SelectionConfig().rule
        )

    def to_dict(self) -> dict:
        return {"schema": SCHEMA_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Manifest:
        manifest = _record(cls, data, where)
        budget = (manifest.experiment.get("selection") or {}).get("fluency_budget", 1.0)
        if isinstance(budget, bool) or not isinstance(budget, (int, float)):
            raise UserError(f"{where}: experiment.selection.fluency_budget: expected a number")
        return manifest


# The records a field may hold, by the name its annotation gives them.
RECORDS: dict[str, type] = {
    cls.__name__: cls
    for cls in (Cost, CellKey, Derivation, ModelInfo, MethodEntry, TaskEntry, Interval, Difference)
}
