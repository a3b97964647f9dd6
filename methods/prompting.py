"""Prompting baseline: an instruction (and optionally demonstrations) put before the prompt.

AxBench found prompting beats most steering methods, so this is the bar every method must
clear. Strength is an intensity level: 0 = the prompt as is; level k (1 <= k <= number of
instructions) uses the task's k-th instruction (they grow stronger); levels beyond add that many
demonstrations from the fit split. Through the chat template when the model has one.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

from bench.method import Method
from bench.state import State
from bench.steering import attached
from bench.subject import Subject
from bench.target import SteeringTarget


@dataclass(frozen=True)
class PromptingParams:
    max_demonstrations: int = 3  # demonstrations available to the highest levels
    use_chat_template: bool = True  # when the tokenizer has one
    separator: str = "\n"


class Prompting(Method):
    name = "prompting"
    summary = "instruction / few-shot prefix (the baseline to beat)"
    Params = PromptingParams
    default_strengths = (0.0, 1.0, 2.0, 3.0)

    def applies_to(self, target: SteeringTarget) -> bool:
        return bool(target.instructions)

    def fit(self, subject: Subject, target: SteeringTarget) -> State:
        demos = list(target.demonstrations[: self.params.max_demonstrations])
        return State(meta={"instructions": list(target.instructions), "demonstrations": demos})

    def prefix(self, state: State, level: int) -> str:
        instructions = state.meta["instructions"]
        instruction = instructions[min(level, len(instructions)) - 1]
        n_demos = max(0, level - len(instructions))
        demos = state.meta["demonstrations"][:n_demos]
        sep = self.params.separator
        return "".join(d + sep for d in demos) + instruction

    def steer(
        self, subject: Subject, state: State, strength: float
    ) -> AbstractContextManager[None]:
        level = round(strength)
        if level <= 0:
            return nullcontext()
        instruction = self.prefix(state, level)
        if self.params.use_chat_template and subject.has_chat_template:

            def transform(prompt: str) -> str:
                messages = [{"role": "user", "content": instruction}]
                head = subject.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
                return head + prompt

        else:
            sep = self.params.separator

            def transform(prompt: str) -> str:
                return instruction + sep + prompt

        return attached(subject, prompt_transform=transform)
