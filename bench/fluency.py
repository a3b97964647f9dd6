"""Fluency measures shared by every generating cell, in two definitions.

steerbench's own (what the report's fluency columns show):

- perplexity: exp of the mean negative log-likelihood over the continuation's tokens only,
  given the prompt, under an evaluator LM; each sample's perplexity capped at the run's
  `perplexity_cap` (so gibberish still counts), averaged over a prompt's samples.
- distinct-n: unique n-grams / total n-grams over all samples of one prompt (Li et al. 2016),
  n = 1, 2, 3; word n-grams from whitespace tokens (`str.split()`).
- repetition: share of word trigrams in a continuation that already occurred earlier in it
  (0 = no loops, toward 1 = the text repeats itself).

The published ones, as DExperts' evaluation script computes them (Liu et al. 2021,
github.com/alisawuffles/DExperts, scripts/evaluation/evaluate_generations.py), for comparison
with published tables:

- distinct_n_dexperts: unique n-grams over a prompt's samples / the total number of *words* of
  those samples (not of n-grams), for every n; words are `text.split(" ")` (single spaces only,
  so an empty sample is one empty word and a leading space adds an empty word), n-grams compared
  as their "_"-joined strings, as the script does.
- perplexity_dexperts: samples whose perplexity is >= 1e4 (or undefined) are dropped, not
  capped; the mean of the rest (NaN when none is left).

Every metric is a per-prompt value averaged over prompts. DExperts averages distinct-n over
prompts too, but pools perplexity over all generations; the two agree when every prompt keeps
the same number of samples, and otherwise perplexity_dexperts weighs prompts equally.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.metric import Metric
from bench.subject import ContinuationScore

DEXPERTS = "DExperts (Liu et al. 2021, scripts/evaluation/evaluate_generations.py)"
# DExperts keeps a generation's perplexity only when it is below this ("for sanity").
DEXPERTS_PERPLEXITY_LIMIT = 1e4

# steerbench's own definitions: the report's fluency columns and figures.
OWN_FLUENCY = (
    Metric(
        "perplexity",
        higher_is_better=False,
        description=(
            "steerbench: continuation perplexity under the evaluator LM, each sample capped at "
            "the run's perplexity_cap, mean over a prompt's samples, then over prompts"
        ),
    ),
    Metric(
        "distinct_1",
        higher_is_better=True,
        description=(
            "steerbench: unique unigrams / unigrams over a prompt's samples (whitespace words; "
            "Li et al. 2016), mean over prompts"
        ),
    ),
    Metric(
        "distinct_2",
        higher_is_better=True,
        description=(
            "steerbench: unique bigrams / bigrams over a prompt's samples (whitespace words; "
            "Li et al. 2016), mean over prompts; not comparable with DExperts' dist-2"
        ),
    ),
    Metric(
        "distinct_3",
        higher_is_better=True,
        description=(
            "steerbench: unique trigrams / trigrams over a prompt's samples (whitespace words; "
            "Li et al. 2016), mean over prompts; not comparable with DExperts' dist-3"
        ),
    ),
    Metric(
        "repetition",
        higher_is_better=False,
        description=(
            "steerbench: share of repeated word trigrams within a sample, mean over a prompt's "
            "samples, then over prompts"
        ),
    ),
)
# The published definitions, for comparison with DExperts-style tables: cells and summary.json.
PUBLISHED_FLUENCY = (
    *(
        Metric(
            f"distinct_{n}_dexperts",
            higher_is_better=True,
            description=(
                f"{DEXPERTS}: unique {n}-grams over a prompt's samples / the number of words "
                "(split on single spaces) of those samples, mean over prompts"
            ),
        )
        for n in (1, 2, 3)
    ),
    Metric(
        "perplexity_dexperts",
        higher_is_better=False,
        description=(
            f"{DEXPERTS}: continuation perplexity under the evaluator LM, samples with "
            f"perplexity >= {DEXPERTS_PERPLEXITY_LIMIT:g} dropped (not capped), mean over a "
            "prompt's remaining samples (NaN when none), then over prompts (DExperts pools all "
            "generations: the same when every prompt keeps as many)"
        ),
    ),
)
# What the fluency budget is judged on: exp of the difference of two cells' values is the
# geometric mean over their samples of the perplexity ratio, which one runaway sample cannot
# carry the way it carries a ratio of arithmetic means.
LOG_PERPLEXITY = Metric(
    "log_perplexity",
    higher_is_better=False,
    description=(
        "steerbench: log of each sample's perplexity (its mean per-token NLL) under the "
        "evaluator LM, capped at log(perplexity_cap), mean over a prompt's samples, then over "
        "prompts"
    ),
)
FLUENCY_METRICS = (*OWN_FLUENCY, LOG_PERPLEXITY, *PUBLISHED_FLUENCY)


def definitions_note() -> str:
    """One paragraph for the report: which definition the fluency columns use (each metric's
    `description` has the full definition)."""
    published = [m.name for m in PUBLISHED_FLUENCY]
    return (
        "Fluency columns use steerbench's definitions: perplexity of the continuation under the "
        "evaluator LM with each sample capped at the run's perplexity cap (gibberish counts); "
        "distinct-n = unique word n-grams / word n-grams over a prompt's samples (Li et al. "
        "2016); repetition = share of a sample's word trigrams seen earlier in it. Published "
        f"tables follow {DEXPERTS}, which divides distinct-n by the number of words and drops "
        f"samples with perplexity >= {DEXPERTS_PERPLEXITY_LIMIT:g} instead of capping them: "
        f"those definitions are in the cells and summary.json as {', '.join(published)}."
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


def distinct_n_dexperts(texts: Sequence[str], n: int) -> float:
    """DExperts' dist-n of one prompt's samples: unique n-grams / total words, words split on
    single spaces, n-grams compared as "_"-joined strings; nan when there are no samples."""
    words = [text.split(" ") for text in texts]
    total = sum(len(w) for w in words)
    grams = {"_".join(g) for w in words for g in ngrams(w, n)}
    return len(grams) / total if total else math.nan


def perplexity_dexperts(perplexities: Sequence[float]) -> float:
    """Mean of the perplexities below DExperts' limit (1e4; NaN and inf fail it); nan when none."""
    kept = [p for p in perplexities if p < DEXPERTS_PERPLEXITY_LIMIT]
    return sum(kept) / len(kept) if kept else math.nan


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
        "log_perplexity": (
            sum(math.log(min(p, cap)) for p in finite) / len(finite) if finite else math.nan
        ),
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "repetition": sum(repetition(t) for t in texts) / len(texts) if texts else math.nan,
        "distinct_1_dexperts": distinct_n_dexperts(texts, 1),
        "distinct_2_dexperts": distinct_n_dexperts(texts, 2),
        "distinct_3_dexperts": distinct_n_dexperts(texts, 3),
        "perplexity_dexperts": perplexity_dexperts(perplexities),
    }
    return values, capped
