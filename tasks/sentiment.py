"""Sentiment suite (DExperts prompts): steer continuations toward a target sentiment.

As in DExperts (Liu et al. 2021): prompts are OpenWebText half-sentences whose continuations
were neutral, or of the sentiment opposite to the target; k continuations (25, 20 new tokens,
nucleus p = 0.9) are sampled per prompt and each *continuation* is classified. The metric is the
share of continuations with the target sentiment, reported per direction: `positive_rate` when
steering toward positive (from neutral or negative prompts), `negative_rate` toward negative
(from neutral or positive prompts). The other rate is reported too (lower is better there): it
tells a method that removes the opposite sentiment, leaving neutral text, from one that adds
the target sentiment. Per prompt the share of its samples; the cell mean over
prompts equals the share over all samples (every prompt has the same k).

Contrast pairs and demonstrations come from SST-2 (`stanfordnlp/sst2`; label 1 = positive),
from its fit split: (target-sentiment sentence, opposite sentence) pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from bench.errors import UserError
from bench.judgement import JudgedPair, JudgementPairs
from bench.metric import Metric
from bench.target import SteeringTarget
from bench.task import Example, Generate, Output, Request, Scored, Splits
from tasks import builtin_records
from tasks.common import SampledParams, ScoredSuite, TargetCache, Texts, build_splits
from tasks.data_sources import Kind, Samples, Source, SuiteData
from tasks.loading import Dataset, split_three
from tasks.scorers import SentimentScorer, check_spec, resolve_spec, sentiment_scorer

PROMPTS = Dataset("DExperts sentiment prompts", None, "sentiment_prompts-10k/neutral_prompts.jsonl")
SST2 = Dataset("SST-2", "stanfordnlp/sst2", "sst2_train.tsv.gz", columns=("label", "sentence"))
SST2_DATA = SuiteData("sst2", "sentiment", SST2, builtin_records.sst2_records)
OPPOSITE = {"positive": "negative", "negative": "positive"}
# SST-2 for contrast pairs when `contrast_source` is "auto": the prompts' own source, except
# beside local prompt files, which come without SST-2: the project's builtin sentences.
AUTO_CONTRAST = {Kind.PATH: Source(Kind.BUILTIN, "builtin")}


def as_written(sentence: str) -> str:
    return sentence


@dataclass(frozen=True)
class SentimentTexts(Texts):
    """A sentiment direction's texts for one source; `sst2_style` rewrites an SST-2 sentence of
    that source (lower case, split punctuation) as the running text its model reads."""

    sst2_style: Callable[[str], str] = as_written


# Real data, per target direction; the memory texts are the project's own.
REAL_TEXTS: Mapping[str, SentimentTexts] = {
    "positive": SentimentTexts(
        instructions=(
            "Continue the text in a positive tone.",
            "Continue the text in a positive, upbeat and warm tone.",
            "Continue the text in a very positive, enthusiastic and joyful tone.",
        ),
        question="\nQuestion: Is the above text positive? Answer:",
        concept_pair=(" Love", " Hate"),  # ActAdd's pair
        memory="I am feeling happy and grateful. Everything today is wonderful.",
    ),
    "negative": SentimentTexts(
        instructions=(
            "Continue the text in a negative tone.",
            "Continue the text in a negative, gloomy and critical tone.",
            "Continue the text in a very negative, bitter and hostile tone.",
        ),
        question="\nQuestion: Is the above text negative? Answer:",
        concept_pair=(" Hate", " Love"),
        memory="I am feeling sad and angry. Everything today is terrible.",
    ),
}


def rate_metric(label: str, target: bool) -> Metric:
    return Metric(
        f"{label}_rate",
        higher_is_better=target,
        description=f"share of continuations classified {label}",
    )


def target_rate(labels: Sequence[str], direction: str) -> float:
    """Share of samples whose label is the target direction."""
    return sum(label == direction for label in labels) / len(labels) if labels else float("nan")


@dataclass(frozen=True)
class SentimentExample(Example):
    prompt: str


@dataclass(frozen=True)
class SentimentParams(SampledParams):
    direction: Literal["positive", "negative"] = "positive"  # the target sentiment
    prompts: Literal["neutral", "opposite"] = "neutral"  # which DExperts prompt set
    # SST-2 for contrast pairs: "auto" (testbed / builtin with those sources; the hub for
    # "hub"; the project's builtin sentences for a local prompts path), "hub" or a path.
    contrast_source: str = "auto"
    scorer: str = "auto"  # "auto" | "truth" | "vader" | "hf:<id>" (see tasks.scorers)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_spec(self.scorer, "sentiment")


class Sentiment(ScoredSuite[SentimentScorer]):
    name = "sentiment"
    summary = "DExperts prompts: share of continuations with the target sentiment"
    Params = SentimentParams
    primary_metric = "positive_rate"
    metrics = (rate_metric("positive", True), rate_metric("negative", False))
    samples = Samples(real=25, generated=4)  # k: DExperts' 25 on real data

    def __init__(self, params=None, *, scorer: SentimentScorer | None = None) -> None:
        super().__init__(params, scorer=scorer)
        # Resolve "auto" now: the parameters (and the cells' cache keys) name the real scorer.
        spec = resolve_spec(self.params.scorer, source=self.source, what="sentiment")
        self.params = replace(self.params, scorer=spec)
        direction = self.params.direction
        self.texts = self.source.texts(self.name, REAL_TEXTS)[direction]
        contrast = self.params.contrast_source
        self.contrast_source = (
            AUTO_CONTRAST.get(self.source.kind, self.source)
            if contrast == "auto"
            else Source.parse(contrast, f"{self.name}: contrast_source")
        )
        # The target rate (the effect) and, as a diagnostic, the opposite sentiment's rate: a
        # method can remove the opposite sentiment without adding the target one (neutral text).
        self.metrics = (rate_metric(direction, True), rate_metric(OPPOSITE[direction], False))
        self.primary_metric = f"{direction}_rate"
        self._target = TargetCache(self._build_target)

    @property
    def prompt_kind(self) -> str:
        p = self.params
        return "neutral" if p.prompts == "neutral" else OPPOSITE[p.direction]

    def build_scorer(self) -> SentimentScorer:
        return sentiment_scorer(self.params.scorer, source=self.source)

    def scorers(self) -> dict[str, str]:
        return {m.name: self.scorer.name for m in self.metrics}

    def load(self) -> Splits:
        p = self.params
        kind = self.prompt_kind
        data = SuiteData(
            "sentiment", "sentiment", PROMPTS, lambda: builtin_records.dexperts_records(kind)
        )
        return build_splits(
            self.source.records(data, seed=p.seed, split=f"{kind}_prompts"),
            lambda r, key: parse_prompt(r, key, kind),
            p,
            note=f"[{kind} prompts -> {p.direction}]",
        )

    # ------------------------------------------------------------------ target
    def contrast_sentences(self) -> tuple[list[str], list[str], str]:
        """(target-sentiment sentences, opposite sentences, source) for contrast pairs (the
        testbed's sentiment fit split is SST-2-style sentences)."""
        return self._sentences(held_out=False)

    def _sentences(self, held_out: bool) -> tuple[list[str], list[str], str]:
        """SST-2 (target, opposite, source): the fit share, or the `n_test` after it."""
        p, source = self.params, self.contrast_source
        records = source.records(SST2_DATA, seed=p.seed, split="train")
        style = source.texts(self.name, REAL_TEXTS)[p.direction].sst2_style
        positive, negative = sst2_sentences(records.fit_rows())
        positive, negative = [style(s) for s in positive], [style(s) for s in negative]
        if not positive or not negative:
            raise UserError(f"{records.source}: SST-2 data needs positive and negative sentences")
        # Only the fit share of the contrast data is used (select/test sizes as the prompts');
        # the self-judgement's held-out sentences follow it in the same shuffle.
        start, stop = (p.n_fit, p.n_fit + p.n_test) if held_out else (0, p.n_fit)
        positive = list(split_three(positive, stop, 0, 0, p.seed)[0][start:])
        negative = list(split_three(negative, stop, 0, 0, p.seed)[0][start:])
        if p.direction == "positive":
            return positive, negative, records.source
        return negative, positive, records.source

    def target(self, example: Example, splits: Splits) -> SteeringTarget:
        return self._target(splits)

    def _build_target(self, splits: Splits) -> SteeringTarget:
        toward, away, _ = self.contrast_sentences()
        texts = self.texts
        return SteeringTarget(
            name=f"sentiment:{self.params.direction}",
            contrast_pairs=tuple(zip(toward, away)),
            concept_pair=texts.concept_pair,
            instructions=texts.instructions,
            demonstrations=tuple(toward[:4]),
            suffix=texts.suffix,
            prompts=tuple(e.prompt for e in splits.fit) or half_sentences(toward + away),
            # A source without a memory text: its longest sentence of the target sentiment.
            memory=texts.memory or max(toward, key=len),
        )

    def judgement_pairs(self, splits: Splits, split: str = "test") -> JudgementPairs:
        # The prompts carry no label: labelled SST-2 sentences held out from the contrast pairs
        # stand in for the test split (whatever `split` is asked for).
        toward, away, source = self._sentences(held_out=True)
        pairs = tuple(
            JudgedPair(f"sst2-{i}", "", a, b, self.texts.suffix)
            for i, (a, b) in enumerate(zip(toward, away))
        )
        if not pairs:
            return JudgementPairs(missing=f"{source}: no SST-2 sentences beyond the fit share")
        return JudgementPairs(
            pairs, f"{self.params.direction} vs opposite SST-2 sentence, held out ({source})"
        )

    # ------------------------------------------------------------------ requests and scores
    def requests(self, example: SentimentExample) -> Sequence[Request]:
        return (Generate(example.prompt, self.num_samples(), self.params.max_new_tokens),)

    def score(self, example: SentimentExample, outputs: Sequence[Output]) -> Scored:
        (samples,) = outputs
        verdicts = self.scorer.sentiment(samples)
        labels = [label for label, _ in verdicts]
        direction = self.params.direction
        return Scored(
            {
                f"{direction}_rate": target_rate(labels, direction),
                f"{OPPOSITE[direction]}_rate": target_rate(labels, OPPOSITE[direction]),
            },
            {"labels": labels, "polarity": [score for _, score in verdicts]},
        )


def parse_prompt(record: dict[str, Any], key: str, kind: str) -> SentimentExample | None:
    """A DExperts prompt record; records that name their prompt file (`polarity`, the
    testbed's) are kept only for the wanted kind; records without a prompt are skipped."""
    text = (
        (record.get("prompt") or {}).get("text") if isinstance(record.get("prompt"), dict) else None
    )
    if not isinstance(text, str) or not text or record.get("polarity", kind) != kind:
        return None
    return SentimentExample(id=str(record.get("md5_hash") or f"prompt-{key}"), prompt=text)


def half_sentences(sentences: Sequence[str]) -> tuple[str, ...]:
    """Prompts cut from sentences (their first half of words, at least two), for methods that
    train on prompts when the source has no fit prompts (the testbed's fit split is SST-2)."""
    out = []
    for sentence in sentences:
        words = sentence.split()
        out.append(" ".join(words[: max(2, len(words) // 2)]))
    return tuple(out)


def sst2_sentences(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """(positive, negative) sentences of SST-2 records (hub or `label<TAB>sentence` files)."""
    positive, negative = [], []
    for row in rows:
        sentence, label = str(row.get("sentence", "")).strip(), str(row.get("label", "")).strip()
        if not sentence or label not in ("0", "1"):
            continue
        (positive if label == "1" else negative).append(sentence)
    return positive, negative
