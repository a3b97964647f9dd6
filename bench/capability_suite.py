"""The capability suite of one run: lm-eval evaluations at the run's operating points, cached.

Each evaluation (the unsteered model once, then a method's state for a suite at a strength) is
kept in the run folder under a key of everything its numbers depend on (`RunDir.store`), so a
re-run or an interrupted run's resume reuses it instead of running lm-eval again. Rank 0 runs
lm-eval (its evaluator is not sharded across steerbench's processes); the other ranks wait for
its record, so a failure there ends every rank with one line.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib import metadata
from typing import Any

from bench.capability import (
    Capability,
    CapabilityRun,
    capability_record,
    evaluate_capability,
    task_manager,
)
from bench.config import CapabilityConfig
from bench.distributed import SINGLE, Group
from bench.records import SCHEMA_VERSION, UNSTEERED
from bench.rundir import RunDir, dumps
from bench.state import State, content_key
from bench.subject import Subject

KIND = "capability"  # the run folder's subfolder of finished evaluations


def _lm_eval_version() -> str | None:
    try:
        return metadata.version("lm_eval")
    except metadata.PackageNotFoundError:
        return None


class CapabilitySuite:
    def __init__(
        self, config: CapabilityConfig, subject: Subject, run_dir: RunDir, group: Group = SINGLE
    ) -> None:
        self.config = config
        self.subject = subject
        self.run_dir = run_dir
        self.group = group
        self.records: dict[tuple[str, str, float], Capability] = {}
        self._items: list[str] = []  # capability_items.jsonl, in evaluation order
        self._unsteered: CapabilityRun | None = None
        self._manager = None  # lm-eval's task index, built at the first evaluation

    def at(
        self,
        label: str,
        method,  # bench.method.Method
        task: str,
        target: dict[str, Any],  # the steering target the state was fitted for (its to_dict)
        state: State,
        strength: float,
    ) -> Capability:
        """Capability retained with `method`'s `state` for suite `task` at `strength` (the
        unsteered model's record at strength 0), on every rank."""
        key = (label, task, float(strength))
        if key not in self.records:
            parts = self.group.gather_checked(
                lambda: (
                    self._record(label, method, task, target, state, strength)
                    if self.group.main
                    else None
                )
            )
            self.records[key] = self.group.broadcast(parts[0] if parts else None)
        return self.records[key]

    def _record(self, label, method, task, target, state, strength) -> Capability:
        from bench.lm_eval_model import Steering

        unsteered = self._unsteered_run()
        if strength == 0.0:
            return capability_record(label, task, 0.0, unsteered, unsteered)
        method_part = {**method.fit_key_parts(), "target": target, "strength": float(strength)}
        run = self._evaluate(method_part, lambda: Steering(method, state, strength))
        self._keep_items(label, task, strength, run)
        return capability_record(label, task, strength, run, unsteered)

    def _unsteered_run(self) -> CapabilityRun:
        from bench.lm_eval_model import Steering

        if self._unsteered is None:
            self._unsteered = self._evaluate({UNSTEERED: True}, Steering)
            self._keep_items(UNSTEERED, "", 0.0, self._unsteered)
        return self._unsteered

    def _evaluate(self, method_part: dict, steering) -> CapabilityRun:
        """lm-eval's evaluation under `steering()`, from the run folder when it holds it."""
        config = {k: v for k, v in asdict(self.config).items() if k != "budget"}
        key = content_key(
            SCHEMA_VERSION, self.subject.fingerprint(), config, _lm_eval_version(), method_part
        )
        found = self.run_dir.stored(KIND, key, CapabilityRun.from_dict)
        if found is not None:
            return found
        if self._manager is None:
            self._manager = task_manager(self.config)
        run = evaluate_capability(self.subject, steering(), self.config, self._manager)
        self.run_dir.store(KIND, key, run.to_dict())
        return run

    def _keep_items(self, method: str, task: str, strength: float, run: CapabilityRun) -> None:
        for lm_eval_task, items in run.items.items():
            for item in items:
                line = {"method": method, "task": task, "strength": strength}
                line |= {"lm_eval_task": lm_eval_task, **item}
                self._items.append(dumps(line) + "\n")

    def write(self) -> None:
        """capability.json and capability_items.jsonl (rank 0)."""
        self.run_dir.write_records("capability.json", self.records.values())
        (self.run_dir.root / "capability_items.jsonl").write_text("".join(self._items))
