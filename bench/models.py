"""Where a subject comes from: a hub id, a local directory, or the built-in testbed."""

from __future__ import annotations

from bench.config import ModelConfig
from bench.subject import Subject

TESTBED = "testbed"


def model_source(config: ModelConfig, progress: bool = True) -> str:
    """A name `from_pretrained` understands; builds the testbed on first use."""
    if config.name != TESTBED:
        return config.name
    from tasks.testbed import ensure_testbed

    return str(ensure_testbed(seed=config.testbed_seed, progress=progress))


def load_subject(config: ModelConfig, progress: bool = True) -> Subject:
    subject = Subject.load(
        model_source(config, progress),
        dtype=config.dtype,
        device=config.device,
        trust_remote_code=config.trust_remote_code,
        revision=config.revision,
    )
    if config.name == TESTBED:
        subject.name = f"{TESTBED} (seed {config.testbed_seed})"
    return subject
