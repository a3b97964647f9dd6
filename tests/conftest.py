from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

# Tiny models run faster on one thread than split across cores (thread overhead dominates).
torch.set_num_threads(1)

from tests.tiny import tiny_gpt2, tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def gpt2_subject():
    return tiny_gpt2()


@pytest.fixture(scope="session")
def llama_subject():
    return tiny_llama()


@pytest.fixture(params=["gpt2", "llama"], scope="session")
def subject(request):
    return request.getfixturevalue(f"{request.param}_subject")


def _cache_root(tmp_path_factory) -> str:
    """$STEERBENCH_TEST_CACHE, else a per-session temp directory; never the user's cache."""
    return os.environ.get("STEERBENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Fitted states and testbeds go to a per-session temp cache, never the user's."""
    monkeypatch.setenv("STEERBENCH_CACHE", _cache_root(tmp_path_factory))


def pytest_addoption(parser):
    parser.addoption(
        "--testbed-seed",
        type=int,
        default=0,
        help="which testbed the slow tests steer (its build seed; default 0). The steering "
        "claims are meant to hold on any faithful build: try 1 and 2 as well.",
    )


@pytest.fixture(scope="session")
def testbed_seed(request) -> int:
    return request.config.getoption("--testbed-seed")


@pytest.fixture(scope="session")
def testbed(tmp_path_factory, testbed_seed):
    """The trained testbed (slow tests only), built once per session into the test cache.

    Session-scoped, so it runs before the function-scoped cache isolation: name the cache here.
    """
    from bench.config import ModelConfig
    from bench.subject import Subject
    from tasks.testbed import ensure_testbed
    from tasks.testbed.source import TestbedSource

    cache_dir = _cache_root(tmp_path_factory)
    subject = Subject.load(ensure_testbed(seed=testbed_seed, cache_dir=cache_dir, progress=False))
    # What `bench.sources.load_subject` gives a testbed subject (the build here names its cache).
    config = ModelConfig(name="testbed", testbed_seed=testbed_seed)
    subject.name = TestbedSource().display_name(config)
    subject.training_corpus = TestbedSource().training_corpus(config)
    return subject
