"""A small task for harness tests: steer continuations toward the word 'great'."""

from __future__ import annotations

from dataclasses import dataclass

from bench.metric import Metric
from bench.target import SteeringTarget, SuffixQuestion
from bench.task import Example, Generate, Loglikelihood, Scored, Splits, Task


@dataclass(frozen=True)
class ToyParams:
    n: int = 4
    samples: int = 2


@dataclass(frozen=True)
class ToyExample(Example):
    prompt: str


class ToyTask(Task):
    name = "toy"
    summary = "continuations that say 'great' (harness tests)"
    Params = ToyParams
    metrics = (
        Metric("great_rate", higher_is_better=True),
        Metric("prefers_great", higher_is_better=True),
    )
    primary_metric = "great_rate"
    TARGET = SteeringTarget(
        name="toy:great",
        contrast_pairs=(("The movie was great", "The movie was awful"), ("I love it", "I hate it")),
        concept_pair=(" great", " awful"),
        instructions=("Say great.", "Say great, great, great."),
        demonstrations=("The movie was great .",),
        suffix=SuffixQuestion("\nQuestion : Is the above text positive ? Answer :", " Yes", " No"),
        prompts=("The movie was", "I think"),
        memory="The movie was great .",
    )

    def load(self) -> Splits:
        prompts = ["The movie was", "I love", "The food is", "The staff are", "Thank you"]
        examples = tuple(ToyExample(id=f"toy-{i}", prompt=p) for i, p in enumerate(prompts))
        n = self.params.n
        return Splits(fit=examples[:2], select=examples[:n], test=examples[-n:], source="built-in")

    def target(self, example, splits):
        return self.TARGET

    def requests(self, example):
        return (
            Generate(example.prompt, num_samples=self.params.samples),
            Loglikelihood(example.prompt, " great"),
            Loglikelihood(example.prompt, " awful"),
        )

    def score(self, example, outputs):
        samples, great, awful = outputs
        rate = sum("great" in s for s in samples) / len(samples)
        return Scored({"great_rate": rate, "prefers_great": float(great.logprob > awful.logprob)})
