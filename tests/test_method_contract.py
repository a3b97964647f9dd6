"""The contract every registered method keeps, on tiny GPT-2 and tiny Llama.

- strength 0 gives bit-identical logits to no steering context at all (forward and generation);
- nothing attached by `steer` survives the context, also when its body raises (no attachment,
  no torch hook on any module except the subject's own position tracker, weights untouched);
- `State.save` / `State.load` round-trips (tensors and meta equal, same steering);
- the same seed gives the same generations under steering;
- a nonzero strength changes the logits (for methods that act on them).

Methods whose `fit` is expensive, or that need other settings to be checked in seconds, put
their entry in CASES (one dict for all methods; add yours there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from bench.method import Method
from bench.params import parse
from bench.registry import METHODS
from bench.state import State
from bench.subject import GenerationSettings, Subject
from bench.target import SteeringTarget, SuffixQuestion
from tests.tiny import CORPUS


@dataclass(frozen=True)
class Case:
    params: dict[str, Any] = field(default_factory=dict)  # parsed into the method's Params
    strength: float | None = None  # None: the method's first nonzero default strength
    acts_on_logits: bool = True  # False for methods that only change generation


CASES: dict[str, Case] = {
    # Contrastive vectors: the sweep path exercises the most code; mean over tokens too.
    "caa": Case(params={"layer": "sweep", "token": "mean"}, strength=4.0),
    "pca": Case(params={"layer": [1, -1], "positions": "prompt"}, strength=4.0),
    "actadd": Case(strength=4.0),
    "prompting": Case(strength=2.0),
    # SelfControl: a short search; a large step so the tiny random model's score moves.
    "selfcontrol": Case(
        # Four sampled candidates: with two, whether the one step improves the judgement of a
        # random tiny model's three prompts is a coin flip of the draws.
        params={"iterations": 1, "branches": 4, "step_size": 4.0, "loglik_max_new_tokens": 4},
        strength=1.0,
    ),
    "prefix": Case(
        params={
            "teacher_params": {"iterations": 1, "step_size": 4.0},
            "distill_max_new_tokens": 4,
            "require_improvement": False,
            "max_delta_ratio": 100.0,
            "train_steps": 10,
        },
        strength=1.0,
    ),
    # Memory cross-attention: a few training steps on the tiny corpus (default: the testbed's).
    "memory_xattn": Case(
        params={"corpus_texts": list(CORPUS), "steps": 6, "batch_size": 4, "seq_len": 24},
        strength=2.0,
    ),
}

# A target with every field filled, so every method finds what it needs.
TARGET = SteeringTarget(
    name="contract:positive",
    contrast_pairs=(
        ("The movie was wonderful and the acting was great .", "The movie was terrible ."),
        ("I love this place , the food is lovely", "I hate this place , the food is bad"),
        ("Thank you , that was very kind .", "You are an idiot and a loser ."),
        ("the staff are kind .", "the staff are rude ."),
        ("the acting was great", "the acting was awful"),
    ),
    concept_pair=(" love", " hate"),
    instructions=("Be kind.", "Be very kind."),
    demonstrations=("the food is lovely .", "the staff are kind ."),
    suffix=SuffixQuestion("\nQuestion : Is the above text positive ? Answer :", " Yes", " No"),
    prompts=("The movie was", "I love this place ,", "Human : how do I bake bread ?"),
    memory="The capital of Vorland is Brellin .",
)
PROMPTS = ["The movie was", "Human : how do I bake bread ? Assistant :", "I"]
CONTINUATIONS = [" wonderful and great .", " mix flour , water", " hate this place"]
NAMES = METHODS.names()


def make(name: str) -> tuple[Method, Case]:
    cls = METHODS.get(name)
    case = CASES.get(name, Case())
    return cls(parse(cls.Params, case.params, f"CASES[{name!r}].params")), case


def strength_of(method: Method, case: Case) -> float:
    if case.strength is not None:
        return case.strength
    return next(s for s in method.default_strengths if s != 0)


_FITTED: dict[tuple[str, str], State] = {}


def fitted(name: str, subject: Subject) -> tuple[Method, Case, State]:
    method, case = make(name)
    key = (name, subject.name)
    if key not in _FITTED:
        assert method.applies_to(TARGET), f"{name} does not apply to a target with every field"
        _FITTED[key] = method.fit(subject, TARGET)
    return method, case, _FITTED[key]


def forward_logits(subject: Subject) -> torch.Tensor:
    """Logits of a left-padded batch, (batch, seq, vocab), with the model's own forward."""
    rows = [subject.encode(p) for p in PROMPTS]
    ids, mask = subject.padded(rows, side="left")
    with torch.no_grad():
        return subject.model(input_ids=ids, attention_mask=mask).logits


def scores(subject: Subject) -> list:
    return subject.logprobs(PROMPTS, CONTINUATIONS)


def foreign_hooks(subject: Subject) -> list[str]:
    """Every torch hook on the subject's modules except its position tracker, and global ones."""
    found = []
    for name, module in subject.model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks"):
            hooks = list(getattr(module, kind).values())
            if module is subject.model and kind == "_forward_pre_hooks":
                hooks = [h for h in hooks if h is not subject.positions]
            found += [f"{name or '<model>'}.{kind}" for _ in hooks]
    modules = torch.nn.modules.module
    for kind in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks"):
        found += [kind for _ in getattr(modules, kind).values()]
    return found


def weights(subject: Subject) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in subject.model.state_dict().items()}


GREEDY = GenerationSettings(max_new_tokens=6, temperature=0.0, batch_size=2)
SAMPLED = GenerationSettings(max_new_tokens=6, temperature=1.0, top_p=0.9, num_samples=2, seed=5)


@pytest.mark.parametrize("name", NAMES)
def test_strength_zero_is_bit_identical(name, subject):
    method, _, state = fitted(name, subject)
    logits, base_scores = forward_logits(subject), scores(subject)
    greedy, sampled = subject.generate(PROMPTS, GREEDY), subject.generate(PROMPTS, SAMPLED)
    with method.steer(subject, state, 0.0):
        assert torch.equal(forward_logits(subject), logits)
        assert scores(subject) == base_scores
        assert subject.generate(PROMPTS, GREEDY) == greedy
        assert subject.generate(PROMPTS, SAMPLED) == sampled


@pytest.mark.parametrize("name", NAMES)
def test_nothing_survives_the_context_even_when_it_raises(name, subject):
    method, case, state = fitted(name, subject)
    assert subject.attachments == 0 and foreign_hooks(subject) == []
    before, base_logits, base_scores = weights(subject), forward_logits(subject), scores(subject)
    strength = strength_of(method, case)
    for _ in range(2):  # twice through an exception (a second entry must start clean too)
        with (
            pytest.raises(RuntimeError, match="body failed"),
            method.steer(subject, state, strength),
        ):
            subject.generate(PROMPTS[:1], GREEDY)
            raise RuntimeError("body failed")
        assert subject.attachments == 0
        assert foreign_hooks(subject) == []
    with method.steer(subject, state, strength):  # and once through a normal exit
        assert subject.attachments > 0
        scores(subject)
    assert subject.attachments == 0 and foreign_hooks(subject) == []
    after = weights(subject)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(forward_logits(subject), base_logits)
    assert scores(subject) == base_scores


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips(name, subject, tmp_path):
    method, case, state = fitted(name, subject)
    path = tmp_path / "state.safetensors"
    state.save(path)
    loaded = State.load(path)
    assert set(loaded.tensors) == set(state.tensors)
    for key, tensor in state.tensors.items():
        assert loaded.tensors[key].dtype == tensor.dtype
        assert torch.equal(loaded.tensors[key], tensor.cpu())
    assert dict(loaded.meta) == dict(state.meta)
    strength = strength_of(method, case)
    with method.steer(subject, state, strength):
        original = scores(subject)
    with method.steer(subject, loaded.to(subject.device), strength):
        assert scores(subject) == original


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_generations(name, subject):
    method, case, state = fitted(name, subject)
    with method.steer(subject, state, strength_of(method, case)):
        first = subject.generate(PROMPTS, SAMPLED)
        second = subject.generate(PROMPTS, SAMPLED)
    with method.steer(subject, state, strength_of(method, case)):
        third = subject.generate(PROMPTS, SAMPLED)
    assert first == second == third


@pytest.mark.parametrize("name", NAMES)
def test_nonzero_strength_changes_logits(name, subject):
    method, case, state = fitted(name, subject)
    if not case.acts_on_logits:
        pytest.skip(f"{name} changes generation only (CASES says so)")
    base = scores(subject)
    with method.steer(subject, state, strength_of(method, case)):
        steered = scores(subject)
    assert max(abs(s.logprob - b.logprob) for s, b in zip(steered, base)) > 1e-4


def test_the_hook_check_sees_a_leaked_hook(gpt2_subject):
    """The checks above would catch a method that leaves a hook behind."""
    handle = gpt2_subject.model.transformer.h[0].register_forward_hook(lambda *a: None)
    try:
        assert foreign_hooks(gpt2_subject) == ["transformer.h.0._forward_hooks"]
    finally:
        handle.remove()
    assert foreign_hooks(gpt2_subject) == []


def test_every_case_names_a_registered_method():
    assert set(CASES) <= set(NAMES), f"CASES entries without a method: {set(CASES) - set(NAMES)}"
