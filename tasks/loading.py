"""Reading a suite's data: the Hugging Face hub (through `datasets`) or local files.

Every suite names its data set with a `Dataset` (human name, hub id, the original file layout)
and calls `read_records(dataset, source, ...)`, where `source` is the suite's `source` parameter:

- `"hub"`: `datasets.load_dataset(hub_id, name=..., data_dir=..., split=...)`. Offline with no
  cached copy this fails with one line naming the data set and how to provide it.
- a path: a local file (or a directory of files) in the data set's original schema: JSON Lines
  (`.jsonl`, `.jsonl.gz`), JSON (`.json`: a list of records, as CounterFact ships), TSV/CSV
  (`.tsv`, `.csv`, optionally gzipped; SST-2's `label<TAB>sentence` layout without a header is
  recognised) or Parquet (`.parquet`, read through `datasets`). A directory contributes the
  files whose names contain the split (e.g. `test.jsonl.gz` for split "test"), or all of them
  if none does.

`"testbed"` and `"builtin"` never come here: suites take those records from the testbed and
from `tasks.builtin_records` (`tasks.data_sources`). Records are plain dicts in the original
schema; suites parse them.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import UserError

T = TypeVar("T")

SUFFIXES = (".jsonl", ".json", ".tsv", ".csv", ".parquet")


@dataclass(frozen=True)
class Dataset:
    """Where a data set lives, for loading and for the message when it cannot be found."""

    title: str  # "RealToxicityPrompts"
    hub_id: str | None  # "allenai/real-toxicity-prompts"; None: not on the hub
    example_file: str  # what a local copy looks like, e.g. "rtp.jsonl.gz"
    hub_name: str | None = None  # `name=` (configuration) for load_dataset
    columns: tuple[str, ...] = ()  # TSV/CSV column names when the file has no header


def read_records(
    dataset: Dataset,
    source: str,
    *,
    split: str = "train",
    data_dir: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """The records of `dataset` from `source` ("hub" or a local path), and a description."""
    if source == "hub":
        return _from_hub(dataset, split, data_dir), f"hub:{dataset.hub_id}" + (
            f"/{data_dir}" if data_dir else ""
        ) + f":{split}"
    path = Path(source).expanduser()
    if not path.exists():
        raise UserError(
            f"{dataset.title}: source '{source}' is neither 'testbed', 'builtin', 'hub' nor an "
            f"existing file or directory (e.g. a local {dataset.example_file})"
        )
    files = _data_files(path, split, data_dir)
    if not files:
        raise UserError(
            f"{dataset.title}: no data files ({', '.join(SUFFIXES)}, optionally .gz) in {path}"
        )
    records = [r for f in files for r in read_file(f, dataset.columns)]
    if not records:
        raise UserError(f"{dataset.title}: {path} holds no records")
    return records, ", ".join(str(f) for f in files)


def _data_files(path: Path, split: str, data_dir: str | None) -> list[Path]:
    if path.is_file():
        return [path]
    if data_dir and (path / data_dir).is_dir():
        path = path / data_dir
    files = sorted(f for f in path.iterdir() if f.is_file() and _suffix(f) in SUFFIXES)
    of_split = [f for f in files if split in f.name]
    return of_split or files


def _suffix(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s != ".gz"]
    return suffixes[-1] if suffixes else ""


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_file(path: Path, columns: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Records of one local file, by its suffix (see the module docstring)."""
    kind = _suffix(path)
    try:
        if kind == ".parquet":
            import datasets

            return list(datasets.load_dataset("parquet", data_files=str(path), split="train"))
        with _open_text(path) as handle:
            if kind == ".jsonl":
                return _objects(path, [json.loads(line) for line in handle if line.strip()])
            if kind == ".json":
                data = json.load(handle)
                if isinstance(data, dict):  # {"data": [...]} or {"train": [...]}-style wrappers
                    lists = [v for v in data.values() if isinstance(v, list)]
                    data = lists[0] if len(lists) == 1 else [data]
                if not isinstance(data, list):
                    raise UserError(f"{path}: expected a list of records, got JSON {_kind(data)}")
                return _objects(path, data)
            if kind in (".tsv", ".csv"):
                return _read_table(handle, "\t" if kind == ".tsv" else ",", columns)
    except (OSError, ValueError, EOFError) as error:  # UnicodeDecodeError is a ValueError
        raise UserError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    raise UserError(f"cannot read {path}: unsupported file type (use {', '.join(SUFFIXES)})")


def _kind(value: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _objects(path: Path, records: list[Any]) -> list[dict[str, Any]]:
    """`records` if every one is a JSON object (suites read records by field name)."""
    for number, record in enumerate(records, 1):
        if not isinstance(record, dict):
            raise UserError(
                f"{path}: record {number} is a JSON {_kind(record)}, not an object "
                "(each record is one JSON object with the data set's fields)"
            )
    return records


def _read_table(handle, delimiter: str, columns: Sequence[str]) -> list[dict[str, Any]]:
    rows = [r for r in csv.reader(handle, delimiter=delimiter, quoting=csv.QUOTE_NONE) if r]
    if not rows:
        return []
    if columns and not set(rows[0]) & set(columns):  # no header: the given column names
        header = list(columns)
    else:
        header, rows = rows[0], rows[1:]
    return [dict(zip(header, row)) for row in rows]


def _from_hub(dataset: Dataset, split: str, data_dir: str | None) -> list[dict[str, Any]]:
    if dataset.hub_id is None:
        raise UserError(
            f"{dataset.title} has no Hugging Face hub copy; set the task's params.source to a "
            f"local file in its original schema (e.g. {dataset.example_file})"
        )
    try:
        import datasets

        data = datasets.load_dataset(
            dataset.hub_id, name=dataset.hub_name, data_dir=data_dir, split=split
        )
    except Exception as error:  # datasets raises many types offline; all mean "not available"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(
            f"{dataset.title} ('{dataset.hub_id}') is not available: {reason}. Download it where "
            f"there is network (datasets.load_dataset('{dataset.hub_id}')) or set the task's "
            f"params.source to a local file in its original schema (e.g. {dataset.example_file})"
        ) from None
    return list(data)


def split_three(
    items: Sequence[T], n_fit: int, n_select: int, n_test: int, seed: int
) -> tuple[tuple[T, ...], tuple[T, ...], tuple[T, ...]]:
    """Seeded shuffle, then disjoint fit / select / test slices of the requested sizes.

    When there are fewer items than requested, test is served first, then select, then fit
    (so a small file still gives a meaningful test split)."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    shuffled = [items[i] for i in order]
    test = shuffled[:n_test]
    select = shuffled[n_test : n_test + n_select]
    fit = shuffled[n_test + n_select : n_test + n_select + n_fit]
    return tuple(fit), tuple(select), tuple(test)
