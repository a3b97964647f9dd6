"""What every suite shares: where records come from, the splits, one target per split set.

A suite's `source` parameter is one of
- `"testbed"` (the default): the built-in testbed's records for this suite and `seed`
  (`tasks.testbed.records.testbed_records`, already split: its select/test records are held out
  from the testbed's training corpus), scored by the planted ground truth;
- `"builtin"`: the small records in `tasks.records` (tests, smoke runs);
- `"hub"`: the Hugging Face hub id of the original data set, through `datasets`;
- a path: a local file or directory in the original schema (`tasks.loading`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bench.errors import UserError
from bench.target import SteeringTarget
from bench.task import Example, Splits
from tasks.loading import Dataset, read_records, split_three

SPLITS = ("fit", "select", "test")
# The testbed's name for each suite's records (tasks.testbed.records.SUITES).
TESTBED_SUITES = {
    "toxicity": "toxicity",
    "sentiment": "sentiment",
    "fact_injection": "fact",
    "hh_rlhf": "hh",
    "webgpt": "webgpt",
}


@dataclass(frozen=True)
class Records:
    """Records in the original schema: one pool to split (real data, builtin) or already split
    (the testbed keeps select/test held out from its training corpus, so its split stands)."""

    source: str
    pool: tuple[dict[str, Any], ...] = ()
    parts: Mapping[str, Sequence[dict[str, Any]]] | None = None


def load_records(
    source: str,
    *,
    suite: str,
    seed: int,
    dataset: Dataset,
    builtin: Callable[[], list[dict[str, Any]]],
    split: str = "train",
    data_dir: str | None = None,
) -> Records:
    if source == "testbed":
        parts = testbed(TESTBED_SUITES[suite], seed)
        return Records(f"testbed:{suite}:seed={seed}", parts=parts)
    if source == "builtin":
        return Records(f"builtin:{suite}", pool=tuple(builtin()))
    rows, where = read_records(dataset, source, split=split, data_dir=data_dir)
    return Records(where, pool=tuple(rows))


def testbed(suite: str, seed: int) -> Mapping[str, Sequence[dict[str, Any]]]:
    """The testbed's records for `suite` by split, in the original schema of the real data."""
    try:
        from tasks.testbed.records import testbed_records
    except ImportError:
        raise UserError(
            "the built-in testbed's records are not available in this installation; "
            "set the task's params.source to 'builtin', 'hub' or a local file"
        ) from None
    return testbed_records(suite, seed)


Parse = Callable[[dict[str, Any], str], Example | None]


def build_splits(records: Records, parse: Parse, params: Any, note: str = "") -> Splits:
    """Parse records into examples (None = unusable, dropped) and cut the splits.

    A pool is shuffled with `params.seed` and cut into disjoint fit / select / test of sizes
    `params.n_fit` / `n_select` / `n_test`; pre-split records keep their split, truncated to
    those sizes. `parse(record, key)` gets a key unique across splits for example ids."""
    sizes = {"fit": params.n_fit, "select": params.n_select, "test": params.n_test}
    if records.parts is not None:
        parsed = {
            name: [parse(r, f"{name}-{i}") for i, r in enumerate(records.parts.get(name, ()))]
            for name in SPLITS
        }
        kept = {name: [e for e in rows if e is not None] for name, rows in parsed.items()}
        dropped = sum(len(parsed[n]) - len(kept[n]) for n in SPLITS if n != "fit")
        fit, select, test = (tuple(kept[name][: sizes[name]]) for name in SPLITS)
    else:
        parsed_pool = [parse(r, str(i)) for i, r in enumerate(records.pool)]
        examples = [e for e in parsed_pool if e is not None]
        dropped = len(parsed_pool) - len(examples)
        fit, select, test = split_three(
            examples, sizes["fit"], sizes["select"], sizes["test"], params.seed
        )
    if not select or not test:
        raise UserError(
            f"{records.source}: no usable records for the select/test splits{note and ' ' + note}"
        )
    source = records.source + (f" {note}" if note else "")
    if dropped:
        source += f" ({dropped} records filtered out or unusable)"
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
