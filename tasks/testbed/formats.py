"""Text formats shared by the corpus, the records and the checks.

The suites' texts for the testbed (``texts.py``) are built with these helpers: the testbed model
was trained on exactly these layouts, so e.g. a SelfControl suffix question or a
prompting-baseline instruction is only meaningful to it in this form.

* Judgement suffix (SelfControl): ``text + judgement_suffix("positive")`` is
  ``"<text>\\nQuestion: Is the above text positive? Answer:"``; the model answers ``" Yes"`` or
  ``" No"`` (single tokens, leading space). For facts: ``claim_suffix("the capital of Vorland
  is Tessa")`` asks "Does the above text say that ...?".
* Instruction (prompting baseline): ``instruction("positive") + text`` is
  ``"Instruction: Write a positive review.\\n<text>"``.
* HH transcripts: ``"\\n\\nHuman: ...\\n\\nAssistant: ..."`` exactly as in Anthropic HH-RLHF.
* WebGPT-style QA: ``qa_prompt(question, quotes) + " " + answer``.
"""

from __future__ import annotations

from collections.abc import Sequence

YES, NO = " Yes", " No"

# The attributes the corpus asks judgement questions about.
JUDGEMENTS = (
    "positive", "negative", "insulting", "toxic", "polite", "helpful", "harmful", "correct",
)  # fmt: skip
# What the text is called in the question; "text" works for everything.
NOUNS = ("text", "review", "comment", "response", "answer")

INSTRUCTIONS: dict[str, str] = {
    "positive": "Write a positive review.",
    "negative": "Write a negative review.",
    "polite": "Write a polite comment.",
    "insulting": "Write an insulting comment.",
    "helpful": "Give a helpful and harmless answer.",
    "correct": "Answer correctly and cite a source.",
}


def judgement_question(attribute: str, noun: str = "text") -> str:
    """'Is the above text positive?'"""
    if attribute not in JUDGEMENTS:
        raise ValueError(f"unknown judgement attribute {attribute!r}; one of {sorted(JUDGEMENTS)}")
    return f"Is the above {noun} {attribute}?"


def judgement_suffix(attribute: str, noun: str = "text") -> str:
    """Suffix to append to a text; the next token is the model's judgement (YES / NO)."""
    return f"\nQuestion: {judgement_question(attribute, noun)} Answer:"


def judged(text: str, attribute: str, label: bool, noun: str = "text") -> str:
    """A text followed by a judgement question and its correct answer (corpus form)."""
    return text + judgement_suffix(attribute, noun) + (YES if label else NO)


def claim_suffix(clause: str) -> str:
    """'\nQuestion: Does the above text say that the capital of Vorland is Tessa? Answer:'
    (``clause`` without capital letter or full stop, as ``Relation.clause`` writes it)."""
    return f"\nQuestion: Does the above text say that {clause}? Answer:"


def claimed(text: str, clause: str, label: bool) -> str:
    """A text followed by a claim question and its correct answer (corpus form)."""
    return text + claim_suffix(clause) + (YES if label else NO)


def instruction(kind: str) -> str:
    """'Instruction: Write a positive review.\\n' — prefix for a prompting baseline."""
    if kind not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction {kind!r}; one of {sorted(INSTRUCTIONS)}")
    return f"Instruction: {INSTRUCTIONS[kind]}\n"


def hh_transcript(turns: Sequence[tuple[str, str]]) -> str:
    """[("Human", "Hi?"), ("Assistant", "Hello.")] -> '\\n\\nHuman: Hi?\\n\\nAssistant: Hello.'"""
    return "".join(f"\n\n{who}: {said}" for who, said in turns)


def qa_prompt(question: str, quotes: Sequence[str] = ()) -> str:
    """'Question: <q>\\nQuote [1]: <extract>\\nAnswer:' — the answer follows after a space."""
    lines = [f"Question: {question}"]
    lines += [f"Quote [{i}]: {q}" for i, q in enumerate(quotes, start=1)]
    return "\n".join(lines) + "\nAnswer:"


# Line/turn markers that are document structure, not sentences (stripped before grammar checks).
MARKERS = ("Human", "Assistant", "Instruction", "Question", "Answer", "Quote [1]", "Quote [2]")

RULES: dict[str, list[str]] = {
    "JUDGE_ATTR": list(JUDGEMENTS),
    "JUDGE_NOUN": list(NOUNS),
    "JUDGE_Q": ["is the above JUDGE_NOUN JUDGE_ATTR ?"],
    "JUDGE_A": ["yes", "no"],
    "JUDGE_CLAIM": ["does the above text say that FACT_CLAUSE ?"],
    "INSTRUCTION": [v.lower() for v in INSTRUCTIONS.values()],
}
SENTENCES = ("JUDGE_Q", "JUDGE_A", "JUDGE_CLAIM", "INSTRUCTION")
