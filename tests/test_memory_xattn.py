"""memory_xattn: the trained cross-attention module, its training, caching and steering."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from bench.errors import UserError
from bench.method import NotApplicable
from bench.params import parse
from bench.state import State
from bench.target import SteeringTarget
from methods import memory_xattn as mx
from methods.memory import MemoryXAttn, MemoryXAttnParams
from methods.memory_corpus import Batch, Windows, load_texts
from tests.tiny import CORPUS

TARGET = SteeringTarget(name="fact:vorland", memory="The capital of Vorland is Kamsk .")
OTHER = SteeringTarget(name="fact:ostria", memory="The capital of Ostria is Brellin .")
PROMPT = "The capital of Vorland is"
SMALL = dict(corpus_texts=tuple(CORPUS), steps=6, batch_size=4, seq_len=24, layer=2)


def params(**overrides) -> MemoryXAttnParams:
    return MemoryXAttnParams(**{**SMALL, **overrides})


def logits(subject, text: str) -> torch.Tensor:
    with torch.no_grad():
        return subject.model(torch.tensor([subject.encode(text)])).logits


# ---------------------------------------------------------------------------- the module
def test_untrained_module_is_a_no_op():
    module = mx.MemoryCrossAttention(32, 4)
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    assert torch.equal(module(x, memory), torch.zeros(2, 5, 32))


def test_padding_in_the_memory_is_ignored():
    torch.manual_seed(0)
    module = mx.MemoryCrossAttention(32, 4)
    torch.nn.init.normal_(module.o.weight)
    x, memory = torch.randn(1, 5, 32), torch.randn(1, 7, 32)
    padded = torch.cat([memory, torch.randn(1, 3, 32)], dim=1)
    mask = torch.tensor([[1] * 7 + [0] * 3])
    torch.testing.assert_close(module(x, padded, mask), module(x, memory))
    assert not torch.allclose(module(x, padded), module(x, memory))


def test_shared_memory_broadcasts_over_the_batch():
    torch.manual_seed(0)
    module = mx.MemoryCrossAttention(32, 4)
    torch.nn.init.normal_(module.o.weight)
    x, memory = torch.randn(3, 5, 32), torch.randn(1, 7, 32)
    torch.testing.assert_close(module(x, memory), module(x, memory.expand(3, -1, -1)))


# ---------------------------------------------------------------------------- training
def test_training_writes_module_and_record(subject):
    config = params(steps=8, checkpoint_every=3).train_config(subject)
    key = mx.train_module(subject, config, progress=False)
    directory = mx.module_dir(key)
    assert (directory / "module.safetensors").exists()
    assert not (directory / "checkpoint.safetensors").exists()  # removed once trained
    record = json.loads((directory / "train.json").read_text())
    assert len(record["losses"]) == 8 and record["steps"] == 8
    assert record["module"]["query_point"] == "layers.1.attn_out"
    assert record["module"]["memory_point"] == "layers.2.attn_out"
    module, cfg = mx.load_module(key, "cpu")
    saved = State.load(directory / "module.safetensors")
    assert saved.meta["model_fingerprint"] == subject.fingerprint()
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, saved.tensors[name])
    assert module.o.weight.abs().sum() > 0  # it moved away from the zero init
    assert all(p.requires_grad for p in subject.model.parameters())  # base flags restored


def test_the_module_learns_to_read_the_memory(gpt2_subject):
    """Autoprogressive training: the next-token loss falls, more with the window's own memory
    than with another window's memory (the module reads it, it is not just a bias)."""
    config = params(steps=100, batch_size=8, seq_len=32, lr=3e-3).train_config(gpt2_subject)
    key = mx.train_module(gpt2_subject, config, progress=False)
    record = mx.training_record(key)
    assert record["eval_loss_module"] < record["eval_loss_base"] - 0.05
    assert record["last_loss"] < record["first_loss"]
    module, cfg = mx.load_module(key, "cpu")
    batch = Windows(gpt2_subject, CORPUS, 32, seed=5).batch(0, 8)
    wrong = Batch(batch.stream, batch.memory.roll(1, 0), batch.memory_mask.roll(1, 0))
    with torch.no_grad():
        own = mx._loss(gpt2_subject, module, cfg, batch).item()
        other = mx._loss(gpt2_subject, module, cfg, wrong).item()
        base = mx._loss(gpt2_subject, None, cfg, batch).item()
    assert own < other < base


def test_interrupted_training_resumes_to_the_same_module(gpt2_subject, tmp_path, monkeypatch):
    config = params(steps=6).train_config(gpt2_subject)
    monkeypatch.setenv("STEERBENCH_CACHE", str(tmp_path / "straight"))
    straight, _ = mx.load_module(mx.train_module(gpt2_subject, config, progress=False), "cpu")

    monkeypatch.setenv("STEERBENCH_CACHE", str(tmp_path / "resumed"))
    key = mx.train_module(gpt2_subject, config, checkpoint_every=2, progress=False, stop_after=4)
    directory = mx.module_dir(key)
    assert not (directory / "module.safetensors").exists()
    checkpoint = State.load(directory / "checkpoint.safetensors")
    assert checkpoint.meta["step"] == 4 and len(checkpoint.meta["losses"]) == 4
    assert any(name.startswith("optim.") for name in checkpoint.tensors)

    calls = []
    real_loss = mx._loss
    monkeypatch.setattr(mx, "_loss", lambda *a: calls.append(1) or real_loss(*a))
    assert mx.train_module(gpt2_subject, config, progress=False) == key
    assert len(calls) == 2 + 2 * mx.EVAL_BATCHES  # the two remaining steps, then evaluation
    resumed, _ = mx.load_module(key, "cpu")
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], tensor, rtol=0, atol=1e-6)
    assert len(mx.training_record(key)["losses"]) == 6


def test_module_is_trained_once_and_shared_by_targets(gpt2_subject, monkeypatch):
    method = MemoryXAttn(params(seed=11))
    first = method.fit(gpt2_subject, TARGET)
    monkeypatch.setattr(mx, "_loss", lambda *a: pytest.fail("retrained a cached module"))
    second = method.fit(gpt2_subject, OTHER)
    assert first.meta["module"] == second.meta["module"]
    assert set(first.tensors) == {"memory"}  # the state holds the memory, not the module
    n = len(gpt2_subject.encode(TARGET.memory))
    assert first.tensors["memory"].shape == (n, gpt2_subject.d_model)


def test_cache_key_follows_model_and_training_config(gpt2_subject, llama_subject):
    config = params().train_config(gpt2_subject)
    key = mx.module_key(gpt2_subject, config)
    assert mx.module_key(gpt2_subject, config) == key
    assert mx.module_key(gpt2_subject, replace(config, steps=7)) != key
    assert mx.module_key(gpt2_subject, replace(config, corpus_texts=tuple(CORPUS[:5]))) != key
    assert mx.module_key(llama_subject, params().train_config(llama_subject)) != key
    # Checkpoint frequency does not change the module, so not its key either.
    assert params(checkpoint_every=7).train_config(gpt2_subject) == config


# ---------------------------------------------------------------------------- steering
def test_steering_adds_strength_times_module_output(subject):
    method = MemoryXAttn(params())
    state = method.fit(subject, TARGET)
    module, cfg = mx.load_module(state.meta["module"], "cpu")
    seen = []
    handle = subject.add_hook(cfg.query_point, lambda h, p: seen.append(h.clone()))
    try:
        base = logits(subject, PROMPT)
        with method.steer(subject, state, 0.0):
            assert subject.attachments == 1  # only the observer: strength 0 attaches nothing
            assert torch.equal(logits(subject, PROMPT), base)
    finally:
        handle.remove()
    hidden = seen[0]  # attn_out at L-1, (1, seq, d_model)
    with method.steer(subject, state, 2.5):
        observed = []
        handle = subject.add_hook(cfg.query_point, lambda h, p: observed.append(h.clone()))
        try:
            steered = logits(subject, PROMPT)
        finally:
            handle.remove()
    with torch.no_grad():
        expected = hidden + 2.5 * module(hidden, state.tensors["memory"][None])
    torch.testing.assert_close(observed[0], expected)
    assert not torch.allclose(steered, base)
    assert subject.attachments == 0


def test_state_round_trip_and_retrain_when_the_module_is_gone(gpt2_subject, tmp_path):
    method = MemoryXAttn(params(seed=3))
    state = method.fit(gpt2_subject, TARGET)
    with method.steer(gpt2_subject, state, 1.0):
        expected = logits(gpt2_subject, PROMPT)
    state.save(tmp_path / "s.safetensors")
    loaded = State.load(tmp_path / "s.safetensors")
    assert loaded.meta == state.meta
    module_file = mx.module_dir(state.meta["module"]) / "module.safetensors"
    module_file.unlink()  # a cleared cache: steering retrains the same module
    with method.steer(gpt2_subject, loaded, 1.0):
        assert torch.equal(logits(gpt2_subject, PROMPT), expected)
    assert module_file.exists()


# ---------------------------------------------------------------------------- corpus and errors
def test_corpus_files(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("first doc\nstill first\n\nsecond doc\n")
    assert load_texts(str(txt), "train", "text", (), 10, 0) == [
        "first doc\nstill first",
        "second doc",
    ]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"body": "a b c"}\n\n{"body": "d e"}\n')
    assert load_texts(str(jsonl), "train", "body", (), 10, 0) == ["a b c", "d e"]
    with pytest.raises(UserError, match="no text field 'text'"):
        load_texts(str(jsonl), "train", "text", (), 10, 0)
    with pytest.raises(UserError, match="not found"):
        load_texts(str(tmp_path / "missing.txt"), "train", "text", (), 10, 0)
    assert len(load_texts("x", "train", "text", tuple(CORPUS), 5, 0)) == 5


def test_the_model_corpus_is_the_subjects_own(gpt2_subject, monkeypatch):
    """ "testbed" (and its synonym "model") read the documents the subject's model source
    trained it on; a model without one is a user error naming the way out."""
    monkeypatch.setattr(gpt2_subject, "training_corpus", None)
    with pytest.raises(
        NotApplicable, match="'testbed': the model tiny-gpt2 has no training corpus"
    ):
        load_texts("testbed", "train", "text", (), 10, 0, subject=gpt2_subject)
    asked = []

    def corpus(n_docs: int) -> list[str]:
        asked.append(n_docs)
        return list(CORPUS[:n_docs])

    monkeypatch.setattr(gpt2_subject, "training_corpus", corpus)
    for name in ("testbed", "model"):
        assert load_texts(name, "train", "text", (), 5, 0, subject=gpt2_subject) == CORPUS[:5]
    assert asked == [5, 5]
    config = params(corpus="model", corpus_texts=()).train_config(gpt2_subject)
    key = mx.module_key(gpt2_subject, config)
    monkeypatch.setattr(
        gpt2_subject, "training_corpus", lambda n_docs: list(CORPUS[1 : n_docs + 1])
    )
    assert mx.module_key(gpt2_subject, config) != key  # another corpus, another module


def test_missing_dataset_is_a_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(UserError, match="not a data set in the local|neither a local file"):
        load_texts("no-such-org/no-such-corpus", "train", "text", (), 10, 0)


def test_default_layer_is_mid_depth(gpt2_subject):
    assert MemoryXAttnParams().train_config(gpt2_subject).layer == 1  # 3 layers
    assert MemoryXAttnParams(layer=-1).train_config(gpt2_subject).layer == 2


def test_param_errors(gpt2_subject):
    with pytest.raises(UserError, match="layer must be at least 1"):
        params(layer=0).train_config(gpt2_subject)
    with pytest.raises(UserError, match="does not divide"):
        params(heads=5).train_config(gpt2_subject)
    with pytest.raises(UserError, match="steps"):
        parse(MemoryXAttnParams, {"steps": -1}, "methods[0].params")
    with pytest.raises(UserError, match="unknown key"):
        parse(MemoryXAttnParams, {"stepz": 3}, "methods[0].params")
