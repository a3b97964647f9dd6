"""What "steered" means for a task: the steering target each method family reads from.

A task returns one `SteeringTarget` for all its examples (e.g. "positive sentiment") or one per
example (e.g. each CounterFact rewrite). Each method uses the fields it needs and declares which
those are; a method whose fields are empty for a task does not run on it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SuffixQuestion:
    """A question the model answers about its own output (SelfControl)."""

    question: str  # appended after prompt + response, e.g. "\nQuestion: Is the above text positive? Answer:"
    target_answer: str  # e.g. " Yes"
    contrast_answer: str  # e.g. " No"
    # What the fluency judge reads before the prompt, as the suite's own fluency judgement does
    # (fact injection: the new fact; a response stating it is not disfluent). "" = nothing.
    fluency_context: str = ""


@dataclass(frozen=True)
class SteeringTarget:
    name: str  # short, stable identifier, e.g. "sentiment:positive" or "fact:case-17"
    # Contrastive vectors: (toward, away) text pairs; CAA reads the activation at the last token.
    contrast_pairs: tuple[tuple[str, str], ...] = ()
    # ActAdd: one short prompt pair, e.g. (" Love", " Hate").
    concept_pair: tuple[str, str] | None = None
    # Prompting: instructions of increasing intensity (level k uses instructions[k-1]) and
    # demonstrations of the target behaviour for few-shot prompting.
    instructions: tuple[str, ...] = ()
    demonstrations: tuple[str, ...] = ()
    # SelfControl / prefix controller.
    suffix: SuffixQuestion | None = None
    prompts: tuple[str, ...] = ()  # prompts to optimise / train on (from the fit split)
    # Memory methods: text whose activations are injected.
    memory: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
