"""Where a suite's records come from: its `source` parameter, parsed once into a `Source`.

`source` is one of
- `"testbed"` (the default): the built-in testbed's records for the suite and `seed`
  (`tasks.testbed.records.testbed_records`, already split: its select/test records are held out
  from the testbed's training corpus), scored by the planted ground truth and addressed in the
  texts the testbed's model was trained on (`tasks/testbed/texts.py`);
- `"builtin"`: the small records in `tasks.builtin_records` (tests, smoke runs);
- `"hub"`: the Hugging Face hub id of the original data set, through `datasets`;
- a path: a local file or directory in the original schema (`tasks.loading`).

What differs between these kinds for every suite (how records are read, how many samples a
prompt gets by default, whether "auto" scorers are the ground truth, whose texts a steering
target is made of) is the `KINDS` table below; suites ask their `Source` and never compare
source strings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from bench.errors import UserError, did_you_mean
from tasks.loading import Dataset, read_records

T = TypeVar("T")


class Kind(Enum):
    TESTBED = "testbed"
    BUILTIN = "builtin"
    HUB = "hub"
    PATH = "path"  # a local file or directory


KEYWORDS = ("testbed", "builtin", "hub")


@dataclass(frozen=True)
class SuiteData:
    """A suite's data set under each kind of source."""

    name: str  # in the description of its records ("builtin:<name>", "testbed:<name>:seed=0")
    testbed: str | None  # the testbed's record set (`tasks.testbed.records.SUITES`); None: none
    dataset: Dataset  # the real data: hub id and original file layout
    builtin: Callable[[], list[dict[str, Any]]]  # the project's own records in that schema


@dataclass(frozen=True)
class Records:
    """Records in the original schema: one pool to split (real data, builtin) or already split
    (the testbed keeps select/test held out from its training corpus, so its split stands)."""

    source: str
    pool: tuple[dict[str, Any], ...] = ()
    parts: Mapping[str, Sequence[dict[str, Any]]] | None = None

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every record, whatever the split."""
        for part in self.parts.values() if self.parts is not None else (self.pool,):
            yield from part

    def fit_rows(self) -> Sequence[dict[str, Any]]:
        """The records a method may learn from: the fit part of split records, else the pool."""
        return self.parts["fit"] if self.parts is not None else self.pool


@dataclass(frozen=True)
class Samples:
    """A suite's default samples per prompt for each scale of data."""

    real: int  # real data (hub, a path): the published protocol
    generated: int  # the project's generated records (testbed, builtin): quick runs


# (source, data, seed, split, data_dir) -> the records
Reader = Callable[["Source", SuiteData, int, str, "str | None"], Records]


@dataclass(frozen=True)
class Traits:
    """How one kind of source behaves, for every suite."""

    read: Reader
    generated: bool  # the project's generated records: `Samples.generated` by default
    ground_truth: bool  # attributes are planted: "auto" scorers resolve to the ground truth
    # The source's own texts for a suite (its model reads only these); None: the real data's.
    texts: Callable[[str], Any] | None = None


NOT_INSTALLED = "the built-in testbed is not available in this installation"


def _no_testbed(what: str) -> UserError:
    return UserError(f"{what}; set the task's params.source to 'builtin', 'hub' or a local file")


def _read_testbed(source: Source, data: SuiteData, seed: int, split: str, data_dir) -> Records:
    try:
        from tasks.testbed.records import testbed_records
    except ImportError:
        raise _no_testbed(NOT_INSTALLED) from None
    if data.testbed is None:
        raise _no_testbed(f"the testbed has no records for {data.name}")
    parts = testbed_records(data.testbed, seed)
    return Records(f"testbed:{data.name}:seed={seed}", parts=parts)


def _read_builtin(source: Source, data: SuiteData, seed: int, split: str, data_dir) -> Records:
    return Records(f"builtin:{data.name}", pool=tuple(data.builtin()))


def _read_real(source: Source, data: SuiteData, seed: int, split: str, data_dir) -> Records:
    rows, where = read_records(data.dataset, source.location, split=split, data_dir=data_dir)
    return Records(where, pool=tuple(rows))


def _testbed_texts(suite: str) -> Any:
    try:
        from tasks.testbed.texts import TEXTS
    except ImportError:
        raise _no_testbed(NOT_INSTALLED) from None
    if suite not in TEXTS:
        raise _no_testbed(f"the testbed has no texts for the {suite} suite")
    return TEXTS[suite]


KINDS: dict[Kind, Traits] = {
    Kind.TESTBED: Traits(_read_testbed, generated=True, ground_truth=True, texts=_testbed_texts),
    Kind.BUILTIN: Traits(_read_builtin, generated=True, ground_truth=False),
    Kind.HUB: Traits(_read_real, generated=False, ground_truth=False),
    Kind.PATH: Traits(_read_real, generated=False, ground_truth=False),
}


@dataclass(frozen=True)
class Source:
    """A parsed `source` parameter: its kind, and the string itself ("hub" or the path) that
    the hub and file readers take."""

    kind: Kind
    location: str

    @classmethod
    def parse(cls, text: str, what: str = "source") -> Source:
        """One-line UserError (with a did-you-mean) for a value that is neither a keyword nor
        an existing file or directory; `what` names the parameter in the message."""
        if text in KEYWORDS:
            return cls(Kind(text), text)
        if text and Path(text).expanduser().exists():
            return cls(Kind.PATH, text)
        raise UserError(
            f"{what} '{text}' is neither {', '.join(map(repr, KEYWORDS))} nor an existing file "
            f"or directory{did_you_mean(text, KEYWORDS)}"
        )

    @property
    def traits(self) -> Traits:
        return KINDS[self.kind]

    @property
    def ground_truth(self) -> bool:
        return self.traits.ground_truth

    def records(
        self, data: SuiteData, *, seed: int, split: str = "train", data_dir: str | None = None
    ) -> Records:
        return self.traits.read(self, data, seed, split, data_dir)

    def samples(self, chosen: int | None, defaults: Samples) -> int:
        """`chosen` (the suite's `num_samples`), or the suite's default for this source."""
        if chosen is not None:
            return chosen
        return defaults.generated if self.traits.generated else defaults.real

    def texts(self, suite: str, real: T) -> T:
        """The texts `suite` addresses this source's model with: the source's own table where
        it has one (the testbed's), else `real`, the suite's texts for real data."""
        own = self.traits.texts
        return real if own is None else own(suite)
