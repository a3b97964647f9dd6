"""The capability suite of one run: lm-eval evaluations at the run's operating points, cached.

Each evaluation (the unsteered model once, then a method's state for a suite at a strength) is
kept in the run folder under a key of everything its numbers depend on (`RunDir.store`), so a
re-run or an interrupted run's resume reuses it instead of running lm-eval again. In a run of
several processes every rank takes part in each evaluation: lm-eval's evaluator gives each its
share of the documents and gathers the per-item results on rank 0, which alone keeps them.
"""

from __future__ import annotations

from collections.abc import Callable
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
from bench.distributed import SINGLE, Group, RankFailed
from bench.errors import UserError
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


def _lost_a_rank(reason: str) -> bool:
    """Whether an error is a collective that failed because a peer process went away."""
    return "gloo" in reason and ("Connection" in reason or "closed" in reason)


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
        self._unsteered: CapabilityRun | None = None  # rank 0's
        self._unsteered_done = False
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
        unsteered model's record at strength 0), on every rank. Every rank calls this at the
        same points of the run: each evaluation lm-eval runs is shared among them."""
        from bench.lm_eval_model import Steering

        key = (label, task, float(strength))
        if key not in self.records:
            unsteered = self._unsteered_run()
            run = unsteered
            if strength != 0.0:
                method_part = {
                    **method.fit_key_parts(),
                    "target": target,
                    "strength": float(strength),
                }
                run = self._evaluation(method_part, lambda: Steering(method, state, strength))
                if self.group.main:
                    self._keep_items(label, task, strength, run)
            parts = self.group.gather_checked(
                lambda: (
                    capability_record(label, task, strength, run, unsteered)
                    if self.group.main
                    else None
                )
            )
            self.records[key] = self.group.broadcast(parts[0] if parts else None)
        return self.records[key]

    def _unsteered_run(self) -> CapabilityRun | None:
        """The unsteered model's evaluation (rank 0's; None on the others)."""
        from bench.lm_eval_model import Steering

        if not self._unsteered_done:
            self._unsteered = self._evaluation({UNSTEERED: True}, Steering)
            self._unsteered_done = True
            if self.group.main:
                self._keep_items(UNSTEERED, "", 0.0, self._unsteered)
        return self._unsteered

    def _evaluation(self, method_part: dict, steering) -> CapabilityRun | None:
        """lm-eval's evaluation under `steering()`: from the run folder when it holds it, else
        run by every rank together and stored by rank 0. Rank 0's run; None on the others."""
        config = {k: v for k, v in asdict(self.config).items() if k != "budget"}
        key = content_key(
            SCHEMA_VERSION, self.subject.fingerprint(), config, _lm_eval_version(), method_part
        )
        found = self.run_dir.stored(KIND, key, CapabilityRun.from_dict) if self.group.main else None
        if not self.group.broadcast(found is None):
            return found
        if self._manager is None:
            self._manager = task_manager(self.config)
        run = self._shared(
            lambda: evaluate_capability(
                self.subject, steering(), self.config, self._manager, self.group
            )
        )
        if self.group.main:
            self.run_dir.store(KIND, key, run.to_dict())
        return run

    def _shared(self, evaluate: Callable[[], CapabilityRun | None]) -> CapabilityRun | None:
        """`evaluate()`, whose lm-eval evaluator exchanges documents among the ranks. An error
        a user caused is met by every rank alike (a task config, say) and stays as it is. Any
        other failure is said by the rank it happened on, which then leaves: the others find
        it gone at their next exchange (gloo's connection closes; NCCL's ranks are ended by
        the launcher) and say that they stopped for another rank."""
        try:
            return evaluate()
        except UserError:
            raise
        except Exception as error:
            if not self.group.distributed:
                raise
            reason = str(error).splitlines()[0] if str(error) else ""
            if _lost_a_rank(reason):
                what = "stopped in lm-eval: another rank left (its own line says why)"
            else:
                what = f"failed in lm-eval: {type(error).__name__}: {reason}"
            raise RankFailed(f"rank {self.group.rank} {what}", everywhere=False) from error

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
