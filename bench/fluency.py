"""Fluency measures shared by every generating cell.

- perplexity: exp of the mean negative log-likelihood over the continuation's tokens only,
  given the prompt, under an evaluator LM (the DExperts definition); averaged over samples.
- distinct-n: unique n-grams / total n-grams over all samples of one prompt (Li et al. 2016,
  as used by DExperts), n = 1, 2, 3; word n-grams from whitespace tokens.
- repetition: share of word trigrams in a continuation that already occurred earlier in it
  (0 = no loops, toward 1 = the text repeats itself).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.metric import Metric
from bench.subject import ContinuationScore

FLUENCY_METRICS = (
    Metric(
        "perplexity",
        higher_is_better=False,
        description="continuation perplexity under the evaluator LM",
    ),
    Metric(
        "distinct_1",
        higher_is_better=True,
        description="unique unigrams / unigrams over a prompt's samples",
    ),
    Metric(
        "distinct_2",
        higher_is_better=True,
        description="unique bigrams / bigrams over a prompt's samples",
    ),
    Metric(
        "distinct_3",
        higher_is_better=True,
        description="unique trigrams / trigrams over a prompt's samples",
    ),
    Metric(
        "repetition",
        higher_is_better=False,
        description="share of repeated word trigrams within a sample",
    ),
)


def perplexity(score: ContinuationScore) -> float:
    """exp(-mean log p) over continuation tokens; nan for an empty continuation."""
    if score.n_tokens == 0:
        return math.nan
    return math.exp(-score.logprob / score.n_tokens)


def ngrams(words: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Unique n-grams over total n-grams pooled across `texts`; nan when there are none."""
    grams = [g for text in texts for g in ngrams(text.split(), n)]
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition(text: str, n: int = 3) -> float:
    grams = ngrams(text.split(), n)
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for gram in grams:
        repeated += gram in seen
        seen.add(gram)
    return repeated / len(grams)


def fluency_scores(
    texts: Sequence[str], scores: Sequence[ContinuationScore], cap: float
) -> tuple[dict[str, float], int]:
    """Per-example fluency metrics for one prompt's samples, and how many perplexities were capped."""
    perplexities = [perplexity(s) for s in scores]
    finite = [p for p in perplexities if not math.isnan(p)]
    capped = sum(p > cap for p in finite)
    values = {
        "perplexity": sum(min(p, cap) for p in finite) / len(finite) if finite else math.nan,
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "repetition": sum(repetition(t) for t in texts) / len(texts) if texts else math.nan,
    }
    return values, capped
