"""What every suite shares: its parameters, its parsed source, its texts, the splits, one target
per split set, and a scorer that is built on first use or passed in.

Where the records come from and how that changes a suite's defaults is `tasks.data_sources`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from bench.errors import UserError
from bench.target import SteeringTarget, SuffixQuestion
from bench.task import Example, Splits, Task
from tasks.data_sources import Records, Samples, Source
from tasks.loading import split_three

SPLITS = ("fit", "select", "test")
YES, NO = " Yes", " No"
S = TypeVar("S")


# ---------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class SuiteParams:
    """The parameters every suite has; a suite's `Params` extends it (and may redeclare a
    default, e.g. fewer fit cases)."""

    source: str = "testbed"  # "testbed" | "builtin" | "hub" | a path (see tasks.data_sources)
    n_fit: int = 32
    n_select: int = 16
    n_test: int = 32
    max_new_tokens: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_fit, self.n_select, self.n_test) < 0:
            raise ValueError("n_fit, n_select and n_test must be >= 0")
        if self.n_select < 1 or self.n_test < 1:
            raise ValueError("n_select and n_test must be >= 1")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")
        if not self.source:
            raise ValueError("source must be 'testbed', 'builtin', 'hub' or a path")


@dataclass(frozen=True)
class SampledParams(SuiteParams):
    """Parameters of a suite that samples several continuations per prompt."""

    num_samples: int | None = None  # per prompt; None: the suite's default for its source

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_samples is not None and self.num_samples < 1:
            raise ValueError("num_samples must be >= 1")


# ---------------------------------------------------------------------- texts
@dataclass(frozen=True)
class Texts:
    """What a suite says to the model of one source: the words its steering target is made of.

    One table per source: the real data's next to each suite, the testbed's (in the layouts
    its model was trained on) in `tasks/testbed/texts.py`; `Source.texts` picks one."""

    instructions: tuple[str, ...]  # the prompting baseline's, of increasing intensity
    question: str  # SelfControl's suffix question after a text
    concept_pair: tuple[str, str]  # ActAdd's (toward, away): words the model's tokenizer has
    answers: tuple[str, str] = (YES, NO)  # (target, contrast) answers to `question`
    memory: str | None = None  # the memory text; None: the suite picks one from its fit data

    @property
    def suffix(self) -> SuffixQuestion:
        return SuffixQuestion(self.question, *self.answers)


# ---------------------------------------------------------------------- the suite
class Suite(Task):
    """A task suite: `source` is parsed here, once; suites read `self.source`."""

    def __init__(self, params=None) -> None:
        super().__init__(params)
        self.source = Source.parse(self.params.source, f"{self.name}: source")


class ScoredSuite(Suite, Generic[S]):
    """A suite that samples continuations and scores them with a text scorer: `scorer=` passes
    one in (a stub in a test, a shared classifier), else `build_scorer` makes it from the
    parameters on first use. Its parameters extend `SampledParams`."""

    samples: ClassVar[Samples]  # default samples per prompt

    def __init__(self, params=None, *, scorer: S | None = None) -> None:
        super().__init__(params)
        self._scorer = scorer

    @abstractmethod
    def build_scorer(self) -> S:
        """The scorer the parameters name."""

    @property
    def scorer(self) -> S:
        if self._scorer is None:
            self._scorer = self.build_scorer()
        return self._scorer

    def num_samples(self) -> int:
        """Samples per prompt: `params.num_samples`, or the default for the suite's source."""
        return self.source.samples(self.params.num_samples, self.samples)


# ---------------------------------------------------------------------- splits and targets
Parse = Callable[[dict[str, Any], str], Example | None]


def build_splits(records: Records, parse: Parse, params: SuiteParams, note: str = "") -> Splits:
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
