"""Self-judgement: can the subject tell the better of two texts through a suite's suffix question?

SelfControl and its prefix controller climb the model's own answer to the suite's suffix
question ("Is the above response harmful?"). They can only steer where that answer is right, so
this measures it: for labelled pairs (a better and a worse text for the suite's target, after
the same context) the subject's judgement is its log-odds log p(target answer) - log p(contrast
answer) after context + text + question, under the unsteered model (sigmoid of it is P(yes) as
SelfControl scores it when the answers are single tokens).

- pairwise accuracy: the better text's log-odds is the larger (an exact tie counts 1/2);
- pointwise accuracy: the judgement's own verdict (log-odds > 0 = the target answer) matches the
  label, the mean over the pair's two texts (a log-odds of exactly 0 counts 1/2).

Pairs without a preference (WebGPT's equal scores) are excluded from both. Each accuracy has a
cluster-bootstrap interval over pairs (`bench.stats.bootstrap_interval`). A suite says which
pairs it has (`Task.judgement_pairs`), or why it has none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bench.records import Judgement
from bench.stats import Interval, bootstrap_interval
from bench.subject import Subject
from bench.target import SuffixQuestion

CHANCE = 0.5


@dataclass(frozen=True)
class JudgedPair:
    """Two texts after one context, the first better for the suite's target than the second."""

    id: str
    context: str  # what precedes each text (a prompt; "" when the texts stand alone)
    better: str
    worse: str
    suffix: SuffixQuestion  # the question asked after context + text
    tie: bool = False  # no preference in the data: excluded from the accuracies


@dataclass(frozen=True)
class JudgementPairs:
    """A suite's labelled pairs on one split, or why it has none (`missing`)."""

    pairs: tuple[JudgedPair, ...] = ()
    source: str = ""  # what the pairs are, for the report
    missing: str = ""  # "" when there are pairs


def _verdict(log_odds: np.ndarray, yes: bool) -> np.ndarray:
    """1 where the judgement's own answer is the label's, 0 where not, 1/2 at log-odds 0."""
    right = log_odds > 0 if yes else log_odds < 0
    return np.where(log_odds == 0, 0.5, right.astype(float))


def pair_accuracies(
    better: np.ndarray, worse: np.ndarray, tie: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pair (pairwise, pointwise) accuracies from the two texts' log-odds; NaN for a tie."""
    better, worse = np.asarray(better, dtype=float), np.asarray(worse, dtype=float)
    tie = np.asarray(tie, dtype=bool)
    pairwise = np.where(better > worse, 1.0, np.where(better < worse, 0.0, 0.5))
    pointwise = (_verdict(better, True) + _verdict(worse, False)) / 2
    return np.where(tie, np.nan, pairwise), np.where(tie, np.nan, pointwise)


def accuracy_interval(per_pair: np.ndarray, seed: int = 0) -> Interval:
    """The mean accuracy over the non-tied pairs with its bootstrap interval."""
    return bootstrap_interval(np.asarray(per_pair, dtype=float)[:, None], seed=seed)


def log_odds(
    subject: Subject, pairs: Sequence[JudgedPair], batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(better, worse) log-odds of the target answer over the contrast, under `subject` as it is
    (the caller makes sure nothing steers it), without prompt transforms."""
    contexts, answers = [], []
    for pair in pairs:
        q = pair.suffix
        for text in (pair.better, pair.worse):
            read = pair.context + text + q.question
            contexts += [read, read]
            answers += [q.target_answer, q.contrast_answer]
    scores = subject.logprobs(contexts, answers, batch_size=batch_size, transform=False)
    logp = np.array([s.logprob for s in scores], dtype=float).reshape(len(pairs), 2, 2)
    gaps = logp[..., 0] - logp[..., 1]  # (pairs, [better, worse])
    return gaps[:, 0], gaps[:, 1]


def measure(
    subject: Subject, task: str, data: JudgementPairs, *, batch_size: int = 16, seed: int = 0
) -> Judgement:
    """The subject's judgement accuracies on one suite's pairs."""
    pairs = data.pairs
    question = pairs[0].suffix.question if pairs else ""
    if not pairs:
        return Judgement(task, subject.name, source=data.source, missing=data.missing)
    better, worse = log_odds(subject, pairs, batch_size)
    tie = np.array([p.tie for p in pairs])
    pairwise, pointwise = pair_accuracies(better, worse, tie)
    if bool(tie.all()):
        return Judgement(
            task, subject.name, source=data.source, missing="every pair is a tie", ties=len(tie)
        )
    return Judgement(
        task,
        subject.name,
        pairwise=accuracy_interval(pairwise, seed),
        pointwise=accuracy_interval(pointwise, seed),
        ties=int(tie.sum()),
        question=question,
        source=data.source,
        mean_log_odds_better=float(np.mean(better[~tie])),
        mean_log_odds_worse=float(np.mean(worse[~tie])),
    )


def at_chance(interval: Interval | None) -> bool:
    """The interval includes chance (0.5): the subject cannot be said to judge better."""
    return interval is not None and interval.low <= CHANCE <= interval.high


def inverted(interval: Interval | None) -> bool:
    """The whole interval is below chance: the subject prefers the worse text, and a method
    that climbs its judgement steers the wrong way."""
    return interval is not None and interval.high < CHANCE


def chance_note(judgement: Judgement) -> str:
    """The report's note for a self-judging method on a suite the subject judges at chance or
    the wrong way round, else ""."""
    i = judgement.pairwise
    where = "at chance" if at_chance(i) else "the wrong way round" if inverted(i) else ""
    if not where:
        return ""
    return (
        f"cannot steer here: the subject judges this suite {where}, "
        f"{i.estimate:.2f} [{i.low:.2f}, {i.high:.2f}]"
    )
