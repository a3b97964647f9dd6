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


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Fitted states and testbeds go to a per-session temp cache, never the user's."""
    root = os.environ.get("STEERBENCH_TEST_CACHE") or str(tmp_path_factory.getbasetemp() / "cache")
    monkeypatch.setenv("STEERBENCH_CACHE", root)
