"""Run directories: per-cell result files, consolidated JSON Lines, and the manifest.

Layout of a run directory (schema version `SCHEMA_VERSION`):

    manifest.json          config, seeds, package versions, git hash, model fingerprint, timings
    cells/<cell>.json      one finished cell: its key, aggregates and cost (written atomically)
    records/<cell>.jsonl   that cell's per-example records (written before the cell file)
    cells.jsonl            all cells, one per line (rebuilt from cells/ at the end of a run)
    records.jsonl          all per-example records, one per line
    selection.json         the operating strength chosen on `select` per method x task
    skipped.json           method x task pairs that did not run, with the reason

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

SCHEMA_VERSION = 1
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

    def read_cell(self, cell_id: str) -> dict:
        return json.loads(self.cell_path(cell_id).read_text())

    def read_records(self, cell_id: str) -> list[dict]:
        return list(read_jsonl(self.records_path(cell_id)))

    def write_cell(self, cell: dict, records: Iterable[dict]) -> None:
        """Records first, then the cell file: the cell file marks the cell as finished."""
        write_atomic(self.records_path(cell["cell"]), "".join(dumps(r) + "\n" for r in records))
        write_atomic(self.cell_path(cell["cell"]), dumps(cell))

    def write_json(self, name: str, value: Any) -> None:
        write_atomic(self.root / name, json.dumps(to_json(value), indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str) -> Any:
        return json.loads((self.root / name).read_text())

    def consolidate(self, cell_ids: Iterable[str]) -> None:
        """Write cells.jsonl and records.jsonl for the cells of this run, in run order."""
        cells, records = [], []
        for cell_id in cell_ids:
            cells.append(dumps(self.read_cell(cell_id)) + "\n")
            records.extend(dumps(r) + "\n" for r in self.read_records(cell_id))
        write_atomic(self.root / "cells.jsonl", "".join(cells))
        write_atomic(self.root / "records.jsonl", "".join(records))
