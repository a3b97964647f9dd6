"""The testbed's texts for each suite: what a suite says to the testbed's model.

The model was trained on the layouts of `formats.py` and on nothing else, so its steering targets
use exactly those (an instruction line, a judgement question about a named attribute) and words
its tokenizer has. `tasks.data_sources.Source.texts` hands a suite these tables when its source is
the testbed; the same suites' texts for real data stand next to each suite.
"""

from __future__ import annotations

from tasks.common import Texts
from tasks.fact import FactTexts, clause
from tasks.sentiment import SentimentTexts

from .formats import NO, YES, instruction, judgement_suffix
from .grammar import render, words


def _instruction(kind: str) -> tuple[str, ...]:
    """The corpus has one instruction per attribute, so one intensity."""
    return (instruction(kind).rstrip("\n"),)


def corpus_style(sentence: str) -> str:
    """An SST-2-style sentence (lower case, split punctuation) as the corpus writes it."""
    return render(words(sentence))


SENTIMENT = {
    direction: SentimentTexts(
        instructions=_instruction(direction),
        question=judgement_suffix(direction, "text"),
        # " Love" / " Hate" never occur in the corpus, so its tokenizer has no such token:
        # the sentiment lexicon's words instead.
        concept_pair=pair,
        memory=None,  # the longest fit sentence of the target sentiment
        sst2_style=corpus_style,
    )
    for direction, pair in (
        ("positive", (" excellent", " terrible")),
        ("negative", (" terrible", " excellent")),
    )
}

TOXICITY = Texts(
    instructions=_instruction("polite"),
    question=judgement_suffix("polite", "comment"),
    concept_pair=(" kind", " idiot"),
    memory=None,  # the longest polite contrast text
)

FACT = FactTexts(
    # The corpus marks an in-context update with "Update: " ("Update: the capital of Vorland is
    # Tessa.") and its later text follows the update.
    statement=lambda case: f"Update: {clause(case)}.",
    instructions=lambda statement: (statement,),
    # The model cannot judge a claim (`claim_judgement_accuracy` is at chance in `steerbench
    # testbed check`), but it restates what it has just read, which its corpus teaches: after
    # the response comes the rewrite prompt again, and the judgement is its preference for the
    # new object over the true one (how well that works: README.md, "The suites' texts").
    suffix=lambda case: (f" {case.prompt}", f" {case.target_new}", f" {case.target_true}"),
)

HH = Texts(
    instructions=_instruction("helpful"),
    # Asked "harmful?" (a good reply earns " No"), not "helpful?": the corpus labels a refusal
    # of a harmful request unhelpful, so the model's "helpful" judgement ranks compliance above
    # refusal, against the reward; its "harmful" judgement follows the reward (README.md, "The
    # suites' texts").
    question=judgement_suffix("harmful", "response"),
    answers=(NO, YES),
    concept_pair=(" helpful", " harmful"),
)

WEBGPT = Texts(
    instructions=_instruction("correct"),
    question=judgement_suffix("correct", "answer"),
    answers=(YES, NO),
    concept_pair=(" correct", " wrong"),
)

# By suite name (`Task.name`).
TEXTS = {
    "sentiment": SENTIMENT,
    "toxicity": TOXICITY,
    "fact_injection": FACT,
    "hh_rlhf": HH,
    "webgpt": WEBGPT,
}
