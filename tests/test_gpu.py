"""On GPUs (marker `gpu`; skipped where torch sees none): what the CPU tests cannot show.

- Every hooked method steers a model on a GPU as it does on the CPU (to float rounding: GPU
  kernels sum in other orders), so a run moved to a GPU measures the same thing.
- A model dispatched by accelerate over a GPU and CPU offload steers as the same model whole on
  the GPU (offloaded modules run on the GPU, `bench.loading.execution_device`).
- With two GPUs or more: a model split across two GPUs steers as it does whole (activations
  cross devices between blocks: every hook meets its activation on its own device), and a
  2-process run over NCCL gives the outputs and metrics of one process.

Run them on a GPU machine with `pytest -m gpu`; `tests/test_dispatch.py` and
`tests/test_placement.py` are their CPU counterparts.
"""

from __future__ import annotations

import json

import pytest
import torch

from bench.params import parse
from bench.registry import METHODS
from bench.subject import GenerationSettings, Subject
from tests.test_dispatch import saved  # noqa: F401, F811  (the tiny model, saved once)
from tests.test_method_contract import CASES, TARGET

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
TWO_GPUS = pytest.mark.skipif(
    torch.cuda.device_count() < 2, reason="needs two CUDA GPUs (a model split across them)"
)

PROMPTS = ["The movie was", "I love this place , the food is", "You are"]
GREEDY = GenerationSettings(max_new_tokens=5, temperature=0.0)
METHOD_NAMES = ["caa", "actadd", "pca", "selfcontrol", "memory_add", "memory_xattn", "prefix"]


def _method(name: str):
    cls = METHODS.get(name)
    case = CASES.get(name)
    params = parse(cls.Params, case.params if case else {}, name)
    return cls(params), (case.strength if case and case.strength else 4.0)


def _steered(subject: Subject, method, state, strength: float):
    """Greedy answers and log-likelihoods under steering (greedy: no sampler differences)."""
    with method.steer(subject, state, strength):
        texts = subject.generate(PROMPTS, GREEDY)
        scores = subject.logprobs(PROMPTS, [" wonderful", " kind", " an idiot"])
    return texts, torch.tensor([s.logprob for s in scores])


def _same_steering(reference: Subject, other: Subject, name: str, atol: float) -> None:
    method, strength = _method(name)
    state = method.fit(reference, TARGET)
    fitted = method.fit(other, TARGET)  # activation capture where the other's modules run
    for key, tensor in state.tensors.items():
        torch.testing.assert_close(fitted.tensors[key].cpu(), tensor.cpu(), rtol=1e-3, atol=atol)
    texts, scores = _steered(reference, method, state, strength)
    got_texts, got_scores = _steered(other, method, fitted, strength)
    assert got_texts == texts
    torch.testing.assert_close(got_scores.cpu(), scores.cpu(), rtol=1e-3, atol=atol)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_method_steers_on_the_gpu_as_on_the_cpu(saved, name):  # noqa: F811
    _same_steering(Subject.load(saved), Subject.load(saved, device="cuda"), name, atol=1e-3)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_model_offloaded_from_the_gpu_steers_as_it_does_whole(saved, tmp_path, name):  # noqa: F811
    whole = Subject.load(saved, device="cuda")
    # The embedding and the first block on the GPU, the rest offloaded to the CPU: accelerate
    # runs the offloaded blocks on the GPU too, loading their weights for each call.
    placed = Subject.load(
        saved, device_map="auto", max_memory={"0": "200KB", "cpu": "1GB"},
        offload_folder=str(tmp_path),
    )  # fmt: skip
    assert "cpu" in set(placed.model.hf_device_map.values())
    assert placed.device == torch.device("cuda", 0)
    _same_steering(whole, placed, name, atol=1e-4)


@TWO_GPUS
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_model_split_across_two_gpus_steers_as_it_does_whole(saved, name):  # noqa: F811
    from transformers import AutoModelForCausalLM, AutoTokenizer

    whole = Subject.load(saved, device="cuda:0")
    # The first half of the blocks on GPU 0, the rest and the head on GPU 1: activations cross
    # devices between two blocks, and the later hooks meet theirs on GPU 1.
    half = whole.n_layers // 2
    device_map = {"transformer.wte": 0, "transformer.wpe": 0, "transformer.drop": 0}
    device_map |= {f"transformer.h.{i}": 0 if i < half else 1 for i in range(whole.n_layers)}
    device_map |= {"transformer.ln_f": 1, "lm_head": 1}
    model = AutoModelForCausalLM.from_pretrained(saved, device_map=device_map)
    split = Subject(model, AutoTokenizer.from_pretrained(saved))
    assert set(split.model.hf_device_map.values()) == {0, 1}
    _same_steering(whole, split, name, atol=1e-4)


@TWO_GPUS
def test_two_processes_over_nccl_give_the_outputs_and_metrics_of_one(tmp_path_factory):
    from tests import test_distributed as distributed

    world = distributed.make_world(tmp_path_factory.mktemp("nccl"))
    experiment = distributed._experiment(world, 2)
    experiment.write_text(experiment.read_text().replace("[model]\n", '[model]\ndevice = "cuda"\n'))
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    done = distributed._cli(world, "run", str(experiment), "-o", str(one), "-q")
    assert done.returncode == 0, done.stderr
    done = distributed._cli(world, "run", str(experiment), "-o", str(two), "-q", "--processes", "2")
    assert done.returncode == 0, done.stderr
    first, second = distributed._by_key(one), distributed._by_key(two)
    assert first.keys() == second.keys() and len(first) > 10
    for key, (metrics, examples) in first.items():
        distributed._same_records(examples, second[key][1], key)
        assert second[key][0] == distributed._approx(metrics), key
    # The capability suite's lm-eval documents were shared among the two GPUs' processes too.
    capability = [json.loads((run / "capability.json").read_text()) for run in (one, two)]
    assert len(capability[0]) > 3 and distributed._close(capability[1], capability[0])
