"""Run directories: where the records of `bench.records` live on disk.

Layout of a run directory (schema version `bench.records.SCHEMA_VERSION`):

    manifest.json          `Manifest`: config, seeds, package versions, git hash, model, timings
    cells/<cell>.json      one finished `CellRecord` (written atomically)
    records/<cell>.jsonl   that cell's `ExampleRecord`s (written before the cell file)
    cells.jsonl            the run's cells, one per line (rebuilt from cells/ at the end of a run)
    records.jsonl          their example records, one per line
    selection.json         `Choice` per method x task: the operating strength chosen on `select`
    skipped.json           `Skip` per method x task pair that did not run
    fits.json              `Fit` per fitted (or cached) state

A cell file exists only once its records are complete, so an interrupted run resumes by skipping
the cells whose file exists: nothing finished is lost or duplicated.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.records import CellRecord, ExampleRecord, Manifest

# Written at the end of a run, from its cells (`Runner.run`).
RUN_FILES = ("cells.jsonl", "records.jsonl", "selection.json", "skipped.json", "fits.json")
PACKAGES = (
    "steerbench",
    "torch",
    "transformers",
    "tokenizers",
    "datasets",
    "peft",
    "lm_eval",
    "scikit-learn",
)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def to_json(value: Any) -> Any:
    """JSON-safe copy: non-finite floats become None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(to_json(value), sort_keys=True, allow_nan=False)


def read_jsonl(path: Path) -> Iterator[dict]:
    with open(path) as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["python"] = platform.python_version()
    return versions


def git_hash() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        return out + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


class RunDir:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def records_path(self, cell_id: str) -> Path:
        return self.root / "records" / f"{cell_id}.jsonl"

    def has_cell(self, cell_id: str) -> bool:
        return self.cell_path(cell_id).exists()

    def read_cell(self, cell_id: str) -> CellRecord:
        path = self.cell_path(cell_id)
        return CellRecord.from_dict(json.loads(path.read_text()), str(path))

    def read_examples(self, cell_id: str) -> list[ExampleRecord]:
        path = self.records_path(cell_id)
        return [
            ExampleRecord.from_dict(data, f"{path}:{number}")
            for number, data in enumerate(read_jsonl(path), 1)
        ]

    def examples_of(self, cell: CellRecord) -> list[ExampleRecord]:
        """The per-example records behind `cell` (none if the folder has no records file)."""
        if not self.records_path(cell.source_id).is_file():
            return []
        return self.read_examples(cell.source_id)

    def write_cell(self, cell: CellRecord, examples: Iterable[ExampleRecord]) -> None:
        """Examples first, then the cell file: the cell file marks the cell as finished."""
        text = "".join(dumps(e.to_dict()) + "\n" for e in examples)
        write_atomic(self.records_path(cell.id), text)
        write_atomic(self.cell_path(cell.id), dumps(cell.to_dict()))

    def write_json(self, name: str, value: Any) -> None:
        write_atomic(self.root / name, json.dumps(to_json(value), indent=2, sort_keys=True) + "\n")

    def begin(self) -> None:
        """A run starts: the run-level files of an earlier run in this directory go (they are
        rebuilt from `cells/` at the end), so that an interrupted run is never reported
        through them. Finished cells stay: they are what a re-run resumes from."""
        for name in RUN_FILES:
            (self.root / name).unlink(missing_ok=True)

    def write_records(self, name: str, records: Iterable[Any]) -> None:
        """A JSON list of records (`Choice`, `Skip`, `Fit`)."""
        self.write_json(name, [r.to_dict() for r in records])

    def write_manifest(self, manifest: Manifest) -> None:
        self.write_json("manifest.json", manifest.to_dict())

    def consolidate(self, cell_ids: Iterable[str]) -> None:
        """Write cells.jsonl and records.jsonl for the cells of this run, in run order."""
        cells, records = [], []
        for cell_id in dict.fromkeys(cell_ids):  # the shared unsteered cell once
            cells.append(self.cell_path(cell_id).read_text() + "\n")
            records.append(self.records_path(cell_id).read_text())
        write_atomic(self.root / "cells.jsonl", "".join(cells))
        write_atomic(self.root / "records.jsonl", "".join(records))
