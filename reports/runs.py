"""Reading a run directory (result files only) into the typed records of `bench.records`.

The reports never import a method or a task: everything they show comes from the files the
runner wrote (`bench/rundir.py` documents the layout). `cells.jsonl` is the authoritative list
of the run's cells (the `cells/` folder may also hold cells of earlier experiments written to the
same directory); a run removes it when it starts and writes it when it ends, so an interrupted
run has none, and then the cells of `cells/` that belong to the manifest's methods, tasks and
seeds are used, with a warning in the report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.capability import Capability
from bench.errors import UserError
from bench.records import (
    SCHEMA_VERSION,
    UNSTEERED,
    CellRecord,
    Choice,
    ExampleRecord,
    Fit,
    Judgement,
    Manifest,
    Skip,
)
from bench.rundir import read_jsonl
from bench.side_effects import SideEffect

R = TypeVar("R")


@dataclass(frozen=True)
class Run:
    root: Path
    label: str
    manifest: Manifest
    # The stored cells, and each method's view of the unsteered cells it swept (strength 0).
    cells: tuple[CellRecord, ...]
    selection: tuple[Choice, ...]
    skipped: tuple[Skip, ...]
    fits: tuple[Fit, ...]
    warnings: tuple[str, ...]
    digest: str  # hash of the result files the numbers come from
    # Per stored cell id: its examples' records (empty where the run kept none).
    examples: Mapping[str, tuple[ExampleRecord, ...]] = field(default_factory=dict)
    # The capability suite's records (`bench.capability`); empty when it did not run.
    capability: tuple[Capability, ...] = ()
    # Each method x suite operating point scored on the other suites (`bench.side_effects`).
    side_effects: tuple[SideEffect, ...] = ()

    def capability_at(self, method: str, task: str, strength: float) -> Capability | None:
        """Capability retained with `method`'s state for `task` at `strength`."""
        return next(
            (
                c
                for c in self.capability
                if (c.method, c.task, c.strength) == (method, task, strength)
            ),
            None,
        )

    @property
    def capability_budget(self) -> float | None:
        """The capability the operating points had to retain (None: no such budget)."""
        return (self.manifest.experiment.get("capability") or {}).get("budget")

    # The subject's self-judgement per task (`bench.judgement`); () in runs that predate it.
    judgements: tuple[Judgement, ...] = ()

    def judgement(self, task: str, method: str) -> Judgement | None:
        """The judgement a self-judging `method` (label) relies on for `task`, if measured."""
        return next((j for j in self.judgements if j.task == task and method in j.methods), None)

    def examples_of(self, cell: CellRecord) -> tuple[ExampleRecord, ...]:
        """The per-example records behind a cell (a view's are its stored cell's)."""
        return self.examples.get(cell.source_id, ())

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks in run order (manifest order, then any only seen in cells)."""
        named = [t.name for t in self.manifest.tasks]
        return tuple(dict.fromkeys([*named, *(c.task for c in self.cells)]))

    @property
    def methods(self) -> tuple[str, ...]:
        """Method labels in run order (manifest order, then any only seen in cells)."""
        named = [m.label for m in self.manifest.methods]
        seen = [c.method for c in self.cells if c.method != UNSTEERED]
        return tuple(dict.fromkeys([*named, *seen]))

    @property
    def budget(self) -> float:
        """The fluency budget the runner chose operating points under."""
        return self.manifest.fluency_budget


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        if default is not None:
            return default
        raise UserError(f"{path}: missing (not a steerbench run directory?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def _read_cells(root: Path, manifest: Manifest) -> tuple[list[CellRecord], list[str], bytes]:
    """Cells of the run, warnings, and the raw bytes they came from (for the digest)."""
    warnings = []
    consolidated = root / "cells.jsonl"
    if consolidated.exists():
        raw = consolidated.read_bytes()
        cells = []
        for number, line in enumerate(raw.decode("utf-8", "replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{consolidated}:{number}: not valid JSON ({error})") from None
            cells.append(CellRecord.from_dict(data, f"{consolidated}:{number}"))
        return cells, warnings, raw
    folder = root / "cells"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise UserError(f"{root}: no cells.jsonl and no cells/ (not a steerbench run directory?)")
    tasks = {t.name for t in manifest.tasks}
    methods = {m.label for m in manifest.methods} | {UNSTEERED}
    seeds = set(manifest.seeds)
    cells, raw, other_schema = [], b"", 0
    for path in files:
        data = _read_json(path)
        if isinstance(data, dict) and data.get("schema") != SCHEMA_VERSION:
            other_schema += 1  # left by an older steerbench in the same directory
            continue
        cell = CellRecord.from_dict(data, str(path))
        ours = cell.task in tasks and cell.method in methods and cell.seed in seeds
        if not manifest.tasks or ours:
            cells.append(cell)
            raw += path.read_bytes()
    warnings.append(
        f"run status '{manifest.status or 'unknown'}': no cells.jsonl, numbers come from the "
        f"{len(cells)} finished cells in cells/"
        + (f" ({other_schema} of another results schema left out)" if other_schema else "")
    )
    return cells, warnings, raw


def _read_list(path: Path, parse: Callable[[Any, str], R]) -> tuple[R, ...]:
    """A JSON list of records; a missing file is an empty list."""
    data = _read_json(path, default=[])
    if not isinstance(data, list):
        raise UserError(f"{path}: must be a JSON list of objects")
    return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(data))


def unsteered_views(
    cells: list[CellRecord], selection: tuple[Choice, ...], manifest: Manifest
) -> list[CellRecord]:
    """Each method's strength-0 points: views of the unsteered cells its sweep went through.

    A method with an operating point on a task finished its sweep there: strength 0 on both
    splits for every seed. A method without one (an interrupted run) went through strength 0
    where it has steered cells of the same split and seed, the runner sweeping upwards from 0.
    """
    names = {m.label: m.name for m in manifest.methods}
    # (task, method label) -> the (split, seed) pairs its sweep went through, None: all of them
    swept: dict[tuple[str, str], set[tuple[str, int]] | None] = {}
    for cell in cells:
        if cell.method != UNSTEERED:
            names.setdefault(cell.method, cell.method_name)
            points = swept.setdefault((cell.task, cell.method), set())
            if points is not None:
                points.add((cell.split, cell.seed))
    for choice in selection:
        swept[(choice.task, choice.method)] = None
    views = []
    for (task, method), points in swept.items():
        for cell in cells:
            reached = points is None or (cell.split, cell.seed) in points
            if cell.method == UNSTEERED and cell.task == task and reached:
                views.append(cell.viewed_as(method, names.get(method, method)))
    return views


def _read_examples(root: Path, cells: list[CellRecord]) -> dict[str, tuple[ExampleRecord, ...]]:
    """The run's per-example records by cell: records.jsonl, else each cell's own file."""
    by_cell: dict[str, list[ExampleRecord]] = {c.id: [] for c in cells}
    consolidated = root / "records.jsonl"
    try:
        if consolidated.exists():
            for number, data in enumerate(read_jsonl(consolidated), 1):
                record = ExampleRecord.from_dict(data, f"{consolidated}:{number}")
                if record.cell in by_cell:
                    by_cell[record.cell].append(record)
        else:
            for cell_id, records in by_cell.items():
                path = root / "records" / f"{cell_id}.jsonl"
                if path.exists():
                    records.extend(
                        ExampleRecord.from_dict(data, f"{path}:{number}")
                        for number, data in enumerate(read_jsonl(path), 1)
                    )
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{root}: per-example records are not valid JSON Lines ({error})") from None
    return {cell_id: tuple(records) for cell_id, records in by_cell.items() if records}


def load_run(path: str | Path, label: str | None = None) -> Run:
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"run directory not found: {root}")
    # A run written by the Runner alone (not `steerbench run`) has no manifest: still report it.
    has_manifest = (root / "manifest.json").exists()
    manifest = Manifest.from_dict(
        _read_json(root / "manifest.json", default={}), str(root / "manifest.json")
    )
    cells, warnings, raw = _read_cells(root, manifest)
    if not has_manifest:
        warnings.insert(0, "no manifest.json: model, seeds, versions and timings are unknown")
    if has_manifest and manifest.status != "complete" and not warnings:
        warnings.append(f"run status '{manifest.status or 'unknown'}': results may be partial")
    selection = _read_list(root / "selection.json", Choice.from_dict)
    skipped = _read_list(root / "skipped.json", Skip.from_dict)
    fits = _read_list(root / "fits.json", Fit.from_dict)
    capability = _read_list(root / "capability.json", Capability.from_dict)
    side_effects = _read_list(root / "side_effects.json", SideEffect.from_dict)
    unique = list({c.id: c for c in cells}.values())  # a cell listed twice counts once
    selection_bytes = (root / "selection.json").read_bytes() if selection else b"[]"
    digest = hashlib.sha256(raw + selection_bytes).hexdigest()[:16]
    return Run(
        root=root,
        label=label or root.resolve().name,
        manifest=manifest,
        cells=tuple(unique + unsteered_views(unique, selection, manifest)),
        selection=selection,
        skipped=skipped,
        fits=fits,
        warnings=tuple(warnings),
        digest=digest,
        examples=_read_examples(root, unique),
        capability=capability,
        side_effects=side_effects,
        judgements=_read_list(root / "judgement.json", Judgement.from_dict),
    )


def load_runs(paths: list[Path]) -> list[Run]:
    """Load several runs with distinct labels: the directory name, else the model, else #k."""
    if not paths:
        raise UserError("no run directories given")
    runs = [load_run(p) for p in paths]
    names = [r.label for r in runs]
    if len(set(names)) == len(names):
        return runs
    models = [f"{r.label} ({Path(r.manifest.model.name or '?').name})" for r in runs]
    labels = (
        models
        if len(set(models)) == len(models)
        else [f"{n} #{i + 1}" for i, n in enumerate(names)]
    )
    return [load_run(p, label) for p, label in zip(paths, labels)]
