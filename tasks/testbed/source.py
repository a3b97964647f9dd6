"""The testbed as a model source: `[model] name = "testbed"` builds (once) and loads it."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from bench.capability import OwnTasks
from bench.config import ModelConfig


class TestbedSource:
    name: ClassVar[str] = "testbed"
    summary: ClassVar[str] = "the built-in testbed GPT-2, built on first use (no download)"

    def locate(self, config: ModelConfig, progress: bool) -> str:
        from tasks.testbed.build import ensure_testbed

        return str(ensure_testbed(seed=config.testbed_seed, progress=progress))

    def display_name(self, config: ModelConfig) -> str:
        return f"testbed (seed {config.testbed_seed})"

    def training_corpus(self, config: ModelConfig) -> Callable[[int], list[str]]:
        def documents(n_docs: int) -> list[str]:
            from tasks.testbed.world import generate_corpus

            return [d.text for d in generate_corpus(seed=config.testbed_seed, n_docs=n_docs)]

        return documents

    def capability_tasks(self, config: ModelConfig) -> OwnTasks:
        from tasks.testbed.capability import ensure_lm_eval_tasks
        from tasks.testbed.lm_eval_tasks import TASKS

        return OwnTasks(tuple(t.name for t in TASKS), str(ensure_lm_eval_tasks()))


BUILTIN_MODEL_SOURCES = (TestbedSource(),)
