"""What every suite shares: where records come from, seeded splits, one target per split set.

A suite's `source` parameter is one of
- `"testbed"` (the default): the built-in testbed's records for this suite and `seed`
  (`tasks.testbed.records.testbed_records`), scored by the planted ground truth;
- `"builtin"`: the small records in `tasks.records` (tests, smoke runs);
- `"hub"`: the Hugging Face hub id of the original data set, through `datasets`;
- a path: a local file or directory in the original schema (`tasks.loading`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.errors import UserError
from bench.target import SteeringTarget
from bench.task import Example, Splits, Task
from tasks.loading import Dataset, read_records, split_three


def is_testbed(source: str) -> bool:
    return source == "testbed"


def records_from(
    source: str,
    *,
    suite: str,
    seed: int,
    dataset: Dataset,
    builtin: Callable[[], list[dict[str, Any]]],
    split: str = "train",
    data_dir: str | None = None,
) -> tuple[list[dict[str, Any]], str]:
    """(records in the original schema, a description of where they came from)."""
    if source == "testbed":
        return list(testbed(suite, seed)), f"testbed:{suite}:seed={seed}"
    if source == "builtin":
        return builtin(), f"builtin:{suite}"
    return read_records(dataset, source, split=split, data_dir=data_dir)


def testbed(suite: str, seed: int) -> list[dict[str, Any]]:
    """The testbed's records for `suite` (in the original schema of the real data set)."""
    try:
        from tasks.testbed.records import testbed_records
    except ImportError:
        raise UserError(
            "the built-in testbed's records are not available in this installation; "
            "set the task's params.source to 'builtin', 'hub' or a local file"
        ) from None
    return list(testbed_records(suite, seed))


def make_splits(
    examples: Sequence[Example], params: Any, source: str, *, minimum: int = 2
) -> Splits:
    """Seeded fit / select / test splits of the sizes in `params` (n_fit, n_select, n_test)."""
    if len(examples) < minimum:
        raise UserError(f"{source}: only {len(examples)} usable records (need {minimum}+)")
    fit, select, test = split_three(
        examples, params.n_fit, params.n_select, params.n_test, params.seed
    )
    return Splits(fit=fit, select=select, test=test, source=source)


class TargetCache:
    """One `SteeringTarget` object per `Splits`, so methods fit once for a one-target task."""

    def __init__(self, build: Callable[[Splits], SteeringTarget]) -> None:
        self._build = build
        self._cache: dict[int, tuple[Splits, SteeringTarget]] = {}

    def __call__(self, splits: Splits) -> SteeringTarget:
        hit = self._cache.get(id(splits))
        if hit is None or hit[0] is not splits:
            hit = (splits, self._build(splits))
            self._cache[id(splits)] = hit
        return hit[1]


def first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0]


def default_samples(params: Any, real: int, testbed: int) -> int:
    """`params.num_samples`, or the suite's default for real data / the testbed and builtin."""
    if params.num_samples is not None:
        return params.num_samples
    return testbed if params.source in ("testbed", "builtin") else real


def check_common(params: Any) -> None:
    """Shared `Params.__post_init__` checks."""
    if min(params.n_fit, params.n_select, params.n_test) < 0:
        raise ValueError("n_fit, n_select and n_test must be >= 0")
    if params.n_select < 1 or params.n_test < 1:
        raise ValueError("n_select and n_test must be >= 1")
    if getattr(params, "num_samples", None) is not None and params.num_samples < 1:
        raise ValueError("num_samples must be >= 1")
    if getattr(params, "max_new_tokens", 1) < 1:
        raise ValueError("max_new_tokens must be >= 1")
    if not params.source:
        raise ValueError("source must be 'testbed', 'builtin', 'hub' or a path")


__all__ = ["Task", "check_common", "is_testbed", "make_splits", "records_from"]
