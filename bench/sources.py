"""Where a subject comes from: a registered model source (the testbed), else a hub id or a local
directory that `from_pretrained` reads.

A model source is the one place that knows how to produce a model's weights and what else it
knows about that model, such as the documents it was trained on (which the memory methods can
train their reader on). The core names no source: they come through `bench.registry`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Protocol

from bench.capability import OwnTasks
from bench.config import ModelConfig
from bench.subject import Subject


class ModelSource(Protocol):
    name: ClassVar[str]
    summary: ClassVar[str]

    def locate(self, config: ModelConfig, progress: bool) -> str:
        """A name `from_pretrained` reads (building the model first if need be)."""
        ...

    def display_name(self, config: ModelConfig) -> str:
        """How reports name the model."""
        ...

    def training_corpus(self, config: ModelConfig) -> Callable[[int], list[str]] | None:
        """n_docs -> up to that many documents the model was trained on; None when unknown."""
        ...

    def capability_tasks(self, config: ModelConfig) -> OwnTasks | None:
        """The lm-eval tasks that measure this model's capability by default (`[capability]
        tasks = ["model"]`), None when the source names none. Optional: a source without this
        method names none."""
        ...


class HubSource:
    """A hub id or a local directory: what `from_pretrained` reads, no training corpus known."""

    name: ClassVar[str] = "hub"
    summary: ClassVar[str] = "a Hugging Face hub id (from the local cache) or a local directory"

    def locate(self, config: ModelConfig, progress: bool) -> str:
        return config.name

    def display_name(self, config: ModelConfig) -> str:
        return config.name

    def training_corpus(self, config: ModelConfig) -> Callable[[int], list[str]] | None:
        return None

    def capability_tasks(self, config: ModelConfig) -> OwnTasks | None:
        return None  # which of lm-eval's tasks suit a hub model is the user's call


def model_source(config: ModelConfig) -> ModelSource:
    """The registered source named by `config.name`, else the hub."""
    from bench.registry import MODEL_SOURCES

    found = MODEL_SOURCES.find(config.name)
    return found if found is not None else HubSource()


def load_subject(config: ModelConfig, progress: bool = True) -> Subject:
    source = model_source(config)
    subject = Subject.load(
        source.locate(config, progress),
        dtype=config.dtype,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
        revision=config.revision,
        device_map=config.device_map,
        max_memory=config.max_memory,
        offload_folder=config.offload_folder,
    )
    subject.name = source.display_name(config)
    subject.training_corpus = source.training_corpus(config)
    own = getattr(source, "capability_tasks", None)  # optional in a third-party source
    subject.capability_tasks = own(config) if own is not None else None
    return subject
