"""Run directories: where the records of `bench.records` live on disk.

Layout of a run directory (schema version `bench.records.SCHEMA_VERSION`):

    manifest.json          `Manifest`: config, seeds, package versions, git hash, model, timings
    cells/<cell>.json      one finished `CellRecord` (written atomically)
    records/<cell>.jsonl   that cell's `ExampleRecord`s (written before the cell file)
    cells.jsonl            the run's cells, one per line (rebuilt from cells/ at the end of a run)
    records.jsonl          their example records, one per line
    selection.json         `Choice` per method x task: the operating strength chosen on `select`
    skipped.json           `Skip` per method x task pair that did not run
    judgement.json         `Judgement` per task where a self-judging method ran (older runs:
                           none)
    fits.json              `Fit` per fitted (or cached) state
    capability.json        `Capability` per operating point (`bench.capability`), and
    capability_items.jsonl lm-eval's per-item scores behind them
    capability/<key>.json  one finished lm-eval evaluation (what a re-run reuses)
    side_effects.json      `SideEffect` per method x suite x other suite (`bench.side_effects`)
    side_effects/          their cells, records, cells.jsonl and records.jsonl, laid out as here
    report/                the report (`reports.build_report`)
    .steerbench.lock       held (flock) by the run writing the folder

A cell file exists only once its records are complete, so an interrupted run resumes by skipping
the cells whose file exists: nothing finished is lost or duplicated. A cell whose file or
records do not read back (damaged outside steerbench) is moved aside as `*.corrupt`, with a
warning, and computed again.

A folder belongs to one run at a time and to one experiment (`RunDir.claim`): a second run into
it fails while the first holds the lock; a folder holding another experiment's results or files
steerbench did not write is refused unless the user says `--force`.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import UserError, warn
from bench.records import CellRecord, ExampleRecord, Manifest

# Written at the end of a run, from its cells (`Runner.run`).
RUN_FILES = (
    "cells.jsonl",
    "records.jsonl",
    "selection.json",
    "skipped.json",
    "fits.json",
    "capability.json",  # the capability suite (`bench.capability`), when configured
    "capability_items.jsonl",
    "side_effects.json",  # side effects across suites (`bench.side_effects`), when asked
    "side_effects_items.jsonl",  # their records in runs of steerbench before side_effects/
    "judgement.json",
)
T = TypeVar("T")
LOCK_FILE = ".steerbench.lock"
# What steerbench writes at the top of a run folder (hidden files, such as the lock and the
# temporary files of `write_atomic`, are never results and are not counted either way).
OWN_FILES = frozenset(
    {"manifest.json", "cells", "records", "report", "capability", "side_effects", *RUN_FILES}
)
CORRUPT = ".corrupt"  # the suffix of a damaged file moved aside
# Experiment keys that change no number in the folder: a re-run may differ in these.
NOT_RESULTS = ("output_dir", "report", "threads")
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


def move_aside(path: Path) -> Path:
    """Rename a damaged file steerbench wrote (a cached state, a cell) to `*.corrupt`: out of
    the way of the run that computes it again, and still there to be looked at."""
    aside = path.with_name(path.name + CORRUPT)
    os.replace(path, aside)
    return aside


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


def read_json(path: Path) -> Any:
    """The JSON value in `path`, or a one-line `UserError` naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: not valid JSON ({error})") from None


def read_jsonl(path: Path) -> Iterator[dict]:
    """The JSON values of `path`, one a line; a line that does not parse is a `UserError`
    naming the file and line (a truncated file ends in one)."""
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as error:
                        raise UserError(f"{path}:{number}: not valid JSON ({error})") from None
    except FileNotFoundError:
        raise UserError(f"{path}: missing") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not UTF-8 text ({error})") from None


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


def _first_difference(old: Any, new: Any, where: str = "") -> str | None:
    """Where two JSON values first differ and how (`key: old there, new here`), or None.
    Keys only one side has are no difference: a steerbench of another version wrote the other
    (a field added since is at its default there)."""
    if isinstance(old, dict) and isinstance(new, dict):
        parts = sorted(set(old) & set(new))
        pairs = [(old.get(k), new.get(k), f"{where}.{k}" if where else k) for k in parts]
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = [(o, n, f"{where}[{i}]") for i, (o, n) in enumerate(zip(old, new))]
    else:
        return None if old == new else f"{where or 'the experiment'}: {old!r} there, {new!r} here"
    return next((d for o, n, w in pairs if (d := _first_difference(o, n, w)) is not None), None)


class RunDir:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self._lock: int | None = None  # the lock file's descriptor while this run holds it

    @property
    def cells_dir(self) -> Path:
        return self.root / "cells"

    def cell_path(self, cell_id: str) -> Path:
        return self.cells_dir / f"{cell_id}.json"

    def records_path(self, cell_id: str) -> Path:
        return self.root / "records" / f"{cell_id}.jsonl"

    # ------------------------------------------------------------------ ownership
    def claim(self, experiment: Mapping[str, Any], *, force: bool = False) -> None:
        """Take the folder for a run of `experiment` (`Experiment.to_dict()`), until `release`
        or the end of the process: create it, lock it (a second run fails at once, whatever
        `force` says: two writers would mix their results), then refuse a folder that holds
        another experiment's results or files steerbench did not write, unless `force`."""
        self._create()
        path = self.root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise UserError(f"cannot open {path}: {error.strerror or error}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(
                f"{self.root} is in use by another steerbench run (pid {holder}); wait for it "
                "to finish or choose another output folder (-o)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd
        try:
            if not force:
                self._check_owner(experiment)
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def _create(self) -> None:
        blocker = next((p for p in (self.root, *self.root.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            where = "is" if blocker == self.root else f"lies below {blocker}, which is"
            raise UserError(f"output folder {self.root} {where} a file")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):  # can this process write files there?
                pass
        except OSError as error:
            raise UserError(
                f"cannot write to output folder {self.root}: {error.strerror or error}"
            ) from None

    def _check_owner(self, experiment: Mapping[str, Any]) -> None:
        foreign = sorted(
            p.name for p in self.root.iterdir() if p.name not in OWN_FILES and p.name[0] != "."
        )
        if foreign:
            shown = ", ".join(foreign[:3]) + (
                f" and {len(foreign) - 3} more" if foreign[3:] else ""
            )
            raise UserError(
                f"{self.root} holds files steerbench did not write ({shown}); choose an empty or "
                "new output folder (-o), or pass --force to write there anyway"
            )
        path = self.root / "manifest.json"
        if not path.exists():
            return
        try:
            stored = Manifest.from_dict(read_json(path), str(path)).experiment
        except UserError as error:
            raise UserError(
                f"{error}; pass --force to replace it (or choose another output folder, -o)"
            ) from None
        new = json.loads(dumps(experiment))
        differs = _first_difference(
            {k: v for k, v in stored.items() if k not in NOT_RESULTS},
            {k: v for k, v in new.items() if k not in NOT_RESULTS},
        )
        if differs is not None:
            raise UserError(
                f"{self.root} holds the results of a different experiment ({differs}); "
                "choose another output folder (-o), or pass --force to run this one there "
                "(finished cells that still apply are reused)"
            )

    # ------------------------------------------------------------------ cells
    def has_cell(self, cell_id: str) -> bool:
        return self.cell_path(cell_id).exists()

    def read_cell(self, cell_id: str) -> CellRecord:
        path = self.cell_path(cell_id)
        return CellRecord.from_dict(read_json(path), str(path))

    def finished_cell(self, cell_id: str) -> CellRecord | None:
        """The cell if this folder holds it whole: its file and every record read back, as
        many records as it has examples. A damaged cell is moved aside (`move_aside`) and
        None returned, so that the run computes it again instead of failing on every re-run."""
        if not self.has_cell(cell_id):
            return None
        try:
            cell = self.read_cell(cell_id)
            expected = 0 if cell.result.error is not None else cell.result.n_examples
            found = len(self.read_examples(cell_id))
            if found != expected:
                raise UserError(f"{self.records_path(cell_id)}: {found} of {expected} records")
        except UserError as error:
            for path in (self.records_path(cell_id), self.cell_path(cell_id)):
                if path.exists():
                    move_aside(path)
            warn(f"{error}; cell {cell_id} moved aside ({CORRUPT}), computing it again")
            return None
        return cell

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

    # ------------------------------------------------------------------ other results
    def stored(self, kind: str, key: str, parse: Callable[[Any], T]) -> T | None:
        """What `store(kind, key, ...)` kept, read by `parse`; None when it is not there. One
        that does not read back (damaged outside steerbench: `parse` raises) is moved aside
        with a warning, and None returned so that the run computes it again."""
        path = self.root / kind / f"{key}.json"
        if not path.is_file():
            return None
        try:
            return parse(read_json(path))
        except (UserError, KeyError, TypeError, ValueError) as error:
            move_aside(path)
            warn(
                f"{path}: does not read back ({error}); moved aside ({CORRUPT}), computing it again"
            )
            return None

    def store(self, kind: str, key: str, value: Any) -> None:
        """A finished intermediate result of the run (an lm-eval evaluation), by content key."""
        write_atomic(self.root / kind / f"{key}.json", dumps(value))

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
