"""Prompting baseline: an instruction, and at higher levels demonstrations, put before the prompt.

AxBench (Wu et al. 2025) found prompting beats most steering methods, so this is the bar every
method must clear, and it is built to be strong, not a straw man:

- Strength is an intensity level (rounded to the nearest integer). 0 = the prompt as is
  (nothing attached). Level k <= n (n = number of instructions the task gives, mildest first)
  uses instruction k. Levels above n keep the strongest instruction and add (level - n)
  demonstrations of the target behaviour from the fit split (few-shot). Higher levels clamp to
  the top one.
- With a chat template (and `use_chat_template`), instruction and demonstrations form the user
  turn and the prompt opens the assistant's reply, so the model continues the prompt as the
  assistant. Without one, the prefix is plain text before the prompt, demonstrations first so
  the instruction stays right before the prompt (the layout instruction-following data and the
  testbed corpus use: "Instruction: ...\n<text>"):
  "{demo 1}{sep}...{demo j}{sep}{instruction}{sep}{prompt}".
- The prefix never takes more than `max_prefix_share` of the model's context: demonstrations
  that do not fit are dropped (the subject truncates prompts from the left, which would
  otherwise cut the instruction first).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from bench.errors import UserError
from bench.method import Method
from bench.state import State
from bench.steering import attached
from bench.subject import Subject
from bench.target import SteeringTarget


@dataclass(frozen=True)
class PromptingParams:
    max_demonstrations: int = 3  # demonstrations available to the levels above the instructions
    use_chat_template: bool = True  # when the tokenizer has one
    separator: str = "\n"  # between demonstrations, instruction and prompt (no chat template)
    demonstrations_header: str = "Examples:"  # before the demonstrations in a chat user turn
    max_prefix_share: float = 0.5  # most of the context window the prefix may use

    def __post_init__(self) -> None:
        if self.max_demonstrations < 0:
            raise ValueError("max_demonstrations must be >= 0")
        if not 0 < self.max_prefix_share <= 1:
            raise ValueError("max_prefix_share must be in (0, 1]")


@dataclass(frozen=True)
class Level:
    instruction: str  # "" when the task gives demonstrations only
    demonstrations: tuple[str, ...]


class Prompting(Method):
    name = "prompting"
    summary = "instruction / few-shot prefix, chat template when there is one (the baseline)"
    Params = PromptingParams
    default_strengths = (0.0, 1.0, 2.0, 3.0, 4.0)
    version = "2"

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.instructions or target.demonstrations)

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        demos = list(target.demonstrations[: self.params.max_demonstrations])
        return State(
            meta={
                "method": self.name,
                "target": target.name,
                "instructions": list(target.instructions),
                "demonstrations": demos,
                "levels": len(target.instructions) + len(demos),
            }
        )

    # ------------------------------------------------------------------ levels
    @staticmethod
    def level_of(strength: float) -> int:
        if strength < 0 or not math.isfinite(strength):
            raise UserError(f"prompting: strength {strength} is not a level (0, 1, 2, ...)")
        return math.floor(strength + 0.5)

    def level(self, state: State, level: int) -> Level:
        """What level `level` (>= 1) puts before the prompt."""
        instructions = list(state.meta["instructions"])
        demos = list(state.meta["demonstrations"])
        top = len(instructions) + len(demos)
        if top == 0:
            raise UserError("prompting: the target has neither instructions nor demonstrations")
        level = min(level, top)
        if level <= len(instructions):
            return Level(instructions[level - 1], ())
        strongest = instructions[-1] if instructions else ""
        return Level(strongest, tuple(demos[: level - len(instructions)]))

    # ------------------------------------------------------------------ text
    def plain_prefix(self, level: Level) -> str:
        sep = self.params.separator
        parts = [p for p in (*level.demonstrations, level.instruction) if p]
        return "".join(p + sep for p in parts)

    def chat_prefix(self, subject: Subject, level: Level) -> str:
        parts = [level.instruction] if level.instruction else []
        if level.demonstrations:
            parts.append(self.params.demonstrations_header)
            parts.extend(level.demonstrations)
        messages = [{"role": "user", "content": "\n\n".join(parts)}]
        head = subject.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        bos = subject.tokenizer.bos_token
        # The subject's encode adds BOS itself; a template that writes it too would double it.
        if bos and subject.encode("") and head.startswith(bos):
            head = head[len(bos) :]
        return head

    def prefix(self, subject: Subject, level: Level) -> str:
        """The text put before the prompt, demonstrations dropped until it fits the budget."""
        chat = self.params.use_chat_template and subject.has_chat_template
        budget = int(self.params.max_prefix_share * subject.max_length)
        while True:
            text = self.chat_prefix(subject, level) if chat else self.plain_prefix(level)
            if not level.demonstrations or len(subject.encode(text)) <= budget:
                return text
            level = Level(level.instruction, level.demonstrations[:-1])

    # ------------------------------------------------------------------ Method
    def steered(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        level = self.level_of(strength)
        if level == 0:  # a strength below 0.5 rounds to level 0: the prompt as is
            return nullcontext()
        prefix = self.prefix(subject, self.level(state, level))
        return attached(subject, prompt_transform=lambda prompt: prefix + prompt)
