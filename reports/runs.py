"""Reading a run directory (result files only) into the typed records of `bench.records`.

The reports never import a method or a task: everything they show comes from the files the
runner wrote (`bench/rundir.py` documents the layout). `cells.jsonl` is the authoritative list
of the run's cells (the `cells/` folder may also hold cells of earlier experiments written to the
same directory); an interrupted run has no `cells.jsonl` yet, and then the cells of `cells/` that
belong to the manifest's methods and tasks are used, with a warning in the report.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import UserError
from bench.records import UNSTEERED, CellRecord, Choice, Fit, Manifest, Skip

R = TypeVar("R")

Cell = CellRecord  # what the reports call a cell: a stored cell, or a method's view of one


@dataclass(frozen=True)
class Run:
    root: Path
    label: str
    manifest: Manifest
    # The stored cells, and each method's view of the unsteered cells it swept (strength 0).
    cells: tuple[Cell, ...]
    selection: tuple[Choice, ...]
    skipped: tuple[Skip, ...]
    fits: tuple[Fit, ...]
    warnings: tuple[str, ...]
    digest: str  # hash of the result files the numbers come from

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


def _read_cells(root: Path, manifest: Manifest) -> tuple[list[Cell], list[str], bytes]:
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
            cells.append(Cell.from_dict(data, f"{consolidated}:{number}"))
        return cells, warnings, raw
    folder = root / "cells"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise UserError(f"{root}: no cells.jsonl and no cells/ (not a steerbench run directory?)")
    tasks = {t.name for t in manifest.tasks}
    methods = {m.label for m in manifest.methods} | {UNSTEERED}
    cells, raw = [], b""
    for path in files:
        cell = Cell.from_dict(_read_json(path), str(path))
        if not manifest.tasks or (cell.task in tasks and cell.method in methods):
            cells.append(cell)
            raw += path.read_bytes()
    warnings.append(
        f"run status '{manifest.status}': no cells.jsonl, numbers come from the "
        f"{len(cells)} finished cells in cells/"
    )
    return cells, warnings, raw


def _read_list(path: Path, parse: Callable[[Any, str], R]) -> tuple[R, ...]:
    """A JSON list of records; a missing file is an empty list."""
    data = _read_json(path, default=[])
    if not isinstance(data, list):
        raise UserError(f"{path}: must be a JSON list of objects")
    return tuple(parse(item, f"{path}[{i}]") for i, item in enumerate(data))


def unsteered_views(
    cells: list[Cell], selection: tuple[Choice, ...], manifest: Manifest
) -> list[Cell]:
    """Each method's strength-0 point: a view of the unsteered cell of the same task, split and
    seed, for every method that swept that task (it has cells there, or an operating point)."""
    names = {m.label: m.name for m in manifest.methods}
    swept: dict[str, dict[str, str]] = {}  # task -> method label -> registered name
    for cell in cells:
        if cell.method != UNSTEERED:
            swept.setdefault(cell.task, {})[cell.method] = cell.method_name
    for choice in selection:
        swept.setdefault(choice.task, {}).setdefault(
            choice.method, names.get(choice.method, choice.method)
        )
    return [
        cell.viewed_as(label, name)
        for cell in cells
        if cell.method == UNSTEERED
        for label, name in swept.get(cell.task, {}).items()
    ]


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
        warnings.append(f"run status '{manifest.status}': results may be partial")
    selection = _read_list(root / "selection.json", Choice.from_dict)
    skipped = _read_list(root / "skipped.json", Skip.from_dict)
    fits = _read_list(root / "fits.json", Fit.from_dict)
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
    )


def load_runs(paths: list[Path]) -> list[Run]:
    """Load several runs with distinct labels: the directory name, else the model, else #k."""
    if not paths:
        raise UserError("no run directories given")
    runs = [load_run(p) for p in paths]
    names = [r.label for r in runs]
    if len(set(names)) == len(names):
        return runs
    models = [f"{r.label} ({Path(r.manifest.model.name).name})" for r in runs]
    labels = (
        models
        if len(set(models)) == len(models)
        else [f"{n} #{i + 1}" for i, n in enumerate(names)]
    )
    return [load_run(p, label) for p, label in zip(paths, labels)]
