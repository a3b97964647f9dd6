"""Models larger than one device: a tiny model dispatched by accelerate over the CPU and disk
offload (`[model] device_map`) steers exactly as the same model in one piece: hooks, activation
capture (the vector and memory methods' fits), SelfControl's gradients and the trained modules
(the prefix, the memory cross-attention) run on the dispatched modules. One device type only:
hooks on another device than the subject's are `tests/test_placement.py`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.config import ModelConfig
from bench.params import parse
from bench.registry import METHODS
from bench.subject import GenerationSettings, Subject
from methods.memory_xattn import load_module, train_module
from tests.test_method_contract import CASES, TARGET, make
from tests.tiny import tiny_gpt2

PROMPTS = ["The movie was", "I love this place , the food is", "You are"]
SAMPLED = GenerationSettings(max_new_tokens=5, temperature=1.0, num_samples=2, seed=3)
# A budget that holds the embedding and the first block in memory: the rest goes to disk.
MAX_MEMORY = {"cpu": "200KB"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dispatch") / "model"
    subject = tiny_gpt2(vocab_size=600)
    subject.model.save_pretrained(folder)
    subject.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pair(saved, tmp_path_factory) -> tuple[Subject, Subject]:
    whole = Subject.load(saved)
    offload = tmp_path_factory.mktemp("offload")
    dispatched = Subject.load(
        saved, device_map="auto", max_memory=MAX_MEMORY, offload_folder=str(offload)
    )
    return whole, dispatched


def test_the_model_is_spread_over_cpu_and_disk_and_keeps_its_fingerprint(pair):
    whole, dispatched = pair
    assert set(dispatched.model.hf_device_map.values()) == {"cpu", "disk"}
    assert dispatched.dispatched and not whole.dispatched
    assert dispatched.device == torch.device("cpu")
    assert dispatched.fingerprint() == whole.fingerprint()


def _answers(subject: Subject, method, state, strength: float):
    with method.steer(subject, state, strength):
        texts = subject.generate(PROMPTS, SAMPLED)
        scores = subject.logprobs(PROMPTS, [" wonderful", " kind", " an idiot"])
    return texts, [s.logprob for s in scores]


@pytest.mark.parametrize(
    "name", ["caa", "actadd", "selfcontrol", "memory_add", "memory_xattn", "prefix"]
)
def test_a_dispatched_model_steers_identically(pair, name):
    whole, dispatched = pair
    cls = METHODS.get(name)
    case = CASES.get(name)
    params = parse(cls.Params, case.params if case else {}, name)
    strength = case.strength if case and case.strength else 4.0
    method = cls(params)
    state = method.fit(whole, TARGET)
    fitted = method.fit(dispatched, TARGET)  # activation capture on the dispatched modules
    for key, tensor in state.tensors.items():
        torch.testing.assert_close(fitted.tensors[key], tensor, rtol=1e-5, atol=1e-6)
    texts, scores = _answers(whole, method, state, strength)
    got_texts, got_scores = _answers(dispatched, method, fitted, strength)
    assert got_texts == texts
    torch.testing.assert_close(torch.tensor(got_scores), torch.tensor(scores))
    assert _answers(whole, method, state, 0.0) != (texts, scores)  # the method really steered


def test_the_memory_module_trains_identically_on_a_dispatched_model(pair, tmp_path, monkeypatch):
    """memory_xattn's module, trained through the dispatched model's hooks (each subject in a
    cache of its own, so the second one trains too), ends as the one trained in one piece."""
    modules = []
    for subject in pair:
        method, _ = make("memory_xattn")
        config = method.params.train_config(subject)
        monkeypatch.setenv("STEERBENCH_CACHE", str(tmp_path / str(len(modules))))
        module, _ = load_module(train_module(subject, config, progress=False), "cpu")
        modules.append(module.state_dict())
    assert bool(modules[0]["o.weight"].any())  # trained: the output projection starts at zero
    for name, tensor in modules[0].items():
        torch.testing.assert_close(modules[1][name], tensor, rtol=1e-5, atol=1e-6)


def test_device_map_is_checked_where_the_experiment_is_parsed():
    with pytest.raises(Exception, match="unknown device_map 'everywhere'"):
        parse(ModelConfig, {"device_map": "everywhere"})
    with pytest.raises(Exception, match="max_memory needs a device_map"):
        parse(ModelConfig, {"max_memory": {"cpu": "1GB"}})
    config = parse(ModelConfig, {"device_map": "auto", "max_memory": {"0": "2GiB"}})
    assert config.max_memory == {"0": "2GiB"}
