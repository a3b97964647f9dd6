"""What a run is made of: the experiment's methods and tasks built from their specs.

A method spec becomes a `PlannedMethod` (its label, the method with its parsed parameters, the
strengths to sweep), a task spec a `Task`; parameters are parsed strictly (`bench.params`), so a
typo fails here, before any model loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from bench.config import Experiment, MethodSpec, TaskSpec
from bench.errors import UserError
from bench.method import Method, iter_strengths
from bench.params import parse
from bench.registry import METHODS, TASKS
from bench.task import Task


@dataclass(frozen=True)
class PlannedMethod:
    label: str
    method: Method
    strengths: tuple[float, ...]


def build_methods(specs: Sequence[MethodSpec] | None) -> list[PlannedMethod]:
    if specs is None:
        specs = [MethodSpec(name=name) for name in METHODS.names()]
    planned, labels = [], set()
    for i, spec in enumerate(specs):
        cls = METHODS.get(spec.name)
        params = parse(cls.Params, spec.params, f"methods[{i}] ({spec.name}).params")
        if spec.display in labels:
            raise UserError(
                f"methods[{i}]: '{spec.display}' appears twice; give one a distinct 'label'"
            )
        labels.add(spec.display)
        strengths = tuple(iter_strengths(spec.strengths or cls.default_strengths))
        planned.append(PlannedMethod(spec.display, cls(params), strengths))
    return planned


def build_tasks(specs: Sequence[TaskSpec] | None) -> list[Task]:
    if specs is None:
        specs = [TaskSpec(name=name) for name in TASKS.names()]
    tasks = []
    for i, spec in enumerate(specs):
        cls = TASKS.get(spec.name)
        tasks.append(cls(parse(cls.Params, spec.params, f"tasks[{i}] ({spec.name}).params")))
    return tasks


def replace_output_dir(experiment: Experiment, output_dir: str | None) -> Experiment:
    return experiment if output_dir is None else replace(experiment, output_dir=output_dir)
