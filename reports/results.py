"""Reading a run directory (result files only) into typed, read-only objects.

The reports never import a method or a task: everything they show comes from the files the
runner wrote (`bench/results.py` documents the layout). `cells.jsonl` is the authoritative list
of the run's cells (the `cells/` folder may also hold cells of earlier experiments written to the
same directory); an interrupted run has no `cells.jsonl` yet, and then the cells of `cells/` that
belong to the manifest's methods and tasks are used, with a warning in the report.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UserError

UNSTEERED = "unsteered"  # the label bench.runner gives the shared strength-0 cells
SUPPORTED_SCHEMA = 1


def _float(value: Any) -> float:
    """JSON null (the runner's NaN/inf) and missing values become NaN."""
    return float(value) if isinstance(value, (int, float)) else math.nan


@dataclass(frozen=True)
class Cell:
    """One finished (method, task, split, strength, seed) cell."""

    id: str
    method: str  # the method's label in the experiment
    method_name: str
    task: str
    split: str  # "select" or "test"
    strength: float
    seed: int
    metrics: Mapping[str, float]  # NaN where the runner wrote null
    higher_is_better: Mapping[str, bool]
    primary_metric: str
    n_examples: int
    degenerate: bool
    perplexity_capped: int
    seconds: float
    generated_tokens: int
    tokens_per_second: float
    shared_from: str | None  # the unsteered cell this strength-0 cell copies
    error: str | None

    @property
    def source_id(self) -> str:
        """The cell whose numbers these are (shared strength-0 copies point to one original)."""
        return self.shared_from or self.id

    @property
    def effect(self) -> float:
        return self.metrics.get(self.primary_metric, math.nan)


def parse_cell(data: Any, where: str) -> Cell:
    if not isinstance(data, dict):
        raise UserError(f"{where}: a cell must be a JSON object")
    missing = [
        k
        for k in ("cell", "method", "task", "split", "strength", "seed", "metrics")
        if k not in data
    ]
    if missing:
        raise UserError(f"{where}: cell lacks {', '.join(missing)}")
    if data.get("schema", SUPPORTED_SCHEMA) > SUPPORTED_SCHEMA:
        raise UserError(f"{where}: results schema {data['schema']} is newer than this steerbench")
    cost = data.get("cost") or {}
    try:
        return Cell(
            id=str(data["cell"]),
            method=str(data["method"]),
            method_name=str(data.get("method_name", data["method"])),
            task=str(data["task"]),
            split=str(data["split"]),
            strength=float(data["strength"]),
            seed=int(data["seed"]),
            metrics={str(k): _float(v) for k, v in dict(data["metrics"]).items()},
            higher_is_better={
                str(k): bool(v) for k, v in (data.get("higher_is_better") or {}).items()
            },
            primary_metric=str(data.get("primary_metric", "")),
            n_examples=int(data.get("n_examples", 0)),
            degenerate=bool(data.get("degenerate", False)),
            perplexity_capped=int(data.get("perplexity_capped") or 0),
            seconds=_float(cost.get("seconds")),
            generated_tokens=int(cost.get("generated_tokens") or 0),
            tokens_per_second=_float(cost.get("tokens_per_second")),
            shared_from=data.get("shared_from"),
            error=data.get("error"),
        )
    except (TypeError, ValueError) as error:
        raise UserError(f"{where}: malformed cell ({error})") from None


@dataclass(frozen=True)
class Run:
    root: Path
    label: str
    manifest: Mapping[str, Any]
    cells: tuple[Cell, ...]
    selection: tuple[Mapping[str, Any], ...]
    skipped: tuple[Mapping[str, Any], ...]
    fits: tuple[Mapping[str, Any], ...]
    warnings: tuple[str, ...]
    digest: str  # hash of the result files the numbers come from

    @property
    def tasks(self) -> tuple[str, ...]:
        """Tasks in run order (manifest order, then any only seen in cells)."""
        named = [t.get("name") for t in self.manifest.get("tasks", []) if isinstance(t, dict)]
        return tuple(dict.fromkeys([*(n for n in named if n), *(c.task for c in self.cells)]))

    @property
    def methods(self) -> tuple[str, ...]:
        """Method labels in run order (manifest order, then any only seen in cells)."""
        named = [m.get("label") for m in self.manifest.get("methods", []) if isinstance(m, dict)]
        seen = [c.method for c in self.cells if c.method != UNSTEERED]
        return tuple(dict.fromkeys([*(n for n in named if n), *seen]))

    @property
    def model(self) -> Mapping[str, Any]:
        return self.manifest.get("model") or {}

    @property
    def budget(self) -> float:
        """The fluency budget the runner chose operating points under."""
        selection = (self.manifest.get("experiment") or {}).get("selection") or {}
        return float(selection.get("fluency_budget", 1.5))


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.exists():
        if default is not None:
            return default
        raise UserError(f"{path}: missing (not a steerbench run directory?)")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def _read_cells(root: Path, manifest: Mapping[str, Any]) -> tuple[list[Cell], list[str], bytes]:
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
            cells.append(parse_cell(data, f"{consolidated}:{number}"))
        return cells, warnings, raw
    folder = root / "cells"
    files = sorted(folder.glob("*.json")) if folder.is_dir() else []
    if not files:
        raise UserError(f"{root}: no cells.jsonl and no cells/ (not a steerbench run directory?)")
    tasks = {t.get("name") for t in manifest.get("tasks", [])}
    methods = {m.get("label") for m in manifest.get("methods", [])} | {UNSTEERED}
    cells, raw = [], b""
    for path in files:
        cell = parse_cell(_read_json(path), str(path))
        if not manifest or (cell.task in tasks and cell.method in methods):
            cells.append(cell)
            raw += path.read_bytes()
    warnings.append(
        f"run status '{manifest.get('status', 'unknown')}': no cells.jsonl, numbers come from the "
        f"{len(cells)} finished cells in cells/"
    )
    return cells, warnings, raw


def load_run(path: str | Path, label: str | None = None) -> Run:
    root = Path(path)
    if not root.is_dir():
        raise UserError(f"run directory not found: {root}")
    # A run written by the Runner alone (not `steerbench run`) has no manifest: still report it.
    has_manifest = (root / "manifest.json").exists()
    manifest = _read_json(root / "manifest.json", default={})
    if not isinstance(manifest, dict):
        raise UserError(f"{root / 'manifest.json'}: must be a JSON object")
    if manifest.get("schema", SUPPORTED_SCHEMA) > SUPPORTED_SCHEMA:
        raise UserError(
            f"{root}: results schema {manifest['schema']} is newer than this steerbench"
        )
    cells, warnings, raw = _read_cells(root, manifest)
    if not has_manifest:
        warnings.insert(0, "no manifest.json: model, seeds, versions and timings are unknown")
    if manifest.get("status") not in ("complete", None) and not warnings:
        warnings.append(f"run status '{manifest.get('status')}': results may be partial")
    selection = _read_json(root / "selection.json", default=[])
    skipped = _read_json(root / "skipped.json", default=[])
    fits = _read_json(root / "fits.json", default=[])
    for name, value in (
        ("selection.json", selection),
        ("skipped.json", skipped),
        ("fits.json", fits),
    ):
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise UserError(f"{root / name}: must be a JSON list of objects")
    unique = list({c.id: c for c in cells}.values())  # a cell listed twice counts once
    digest = hashlib.sha256(raw + json.dumps(selection, sort_keys=True).encode()).hexdigest()[:16]
    return Run(
        root=root,
        label=label or root.resolve().name,
        manifest=manifest,
        cells=tuple(unique),
        selection=tuple(selection),
        skipped=tuple(skipped),
        fits=tuple(fits),
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
    models = [f"{r.label} ({Path(str(r.model.get('name', '?'))).name})" for r in runs]
    labels = (
        models
        if len(set(models)) == len(models)
        else [f"{n} #{i + 1}" for i, n in enumerate(names)]
    )
    return [load_run(p, label) for p, label in zip(paths, labels)]
