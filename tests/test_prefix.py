"""Prefix controller: the gated prefix module, its training recipe, distillation and steering."""

from __future__ import annotations

import math

import pytest
import torch

from bench.errors import UserError
from bench.params import parse
from bench.steering import attached
from bench.target import SteeringTarget, SuffixQuestion
from methods.prefix import PrefixController, PrefixParams
from methods.prefix_module import Batch, PrefixHooks, TrainConfig, record_states, train_prefix
from tests.tiny import CORPUS

PROMPTS = (
    "The movie was",
    "I love this place ,",
    "Human : how do I bake bread ?",
    "The capital of Vorland",
    "I hate this place , the food",
    "You are an",
)
TARGET = SteeringTarget(
    name="test:positive",
    suffix=SuffixQuestion("\nQuestion : Is the above text positive ? Answer :", " Yes", " No"),
    prompts=PROMPTS,
    contrast_pairs=(
        ("The movie was wonderful and the acting was great .", "The movie was terrible ."),
        ("I love this place , the food is lovely", "I hate this place , the food is bad"),
        ("Thank you , that was very kind .", "You are an idiot and a loser ."),
    ),
    instructions=("Be kind.",),
)
HELD_OUT = ["The food is", "Thank you , that", "The staff are kind and"]
FAST = dict(
    teacher_params={"iterations": 1, "step_size": 4.0},
    distill_max_new_tokens=4,
    train_steps=60,
    lr=0.03,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Training is many small ops: on a shared 2-core machine one thread is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def batch_of(subject, texts) -> Batch:
    return Batch.of(subject, [subject.encode(t) for t in texts])


def mask_mse(a: torch.Tensor, b: torch.Tensor, batch: Batch) -> float:
    mask = batch.mask.bool()[None, :, :, None].expand_as(a)
    return float(((a - b)[mask] ** 2).mean())


def next_logprobs(subject, texts) -> torch.Tensor:
    """log p(next token) after each text, (n, vocab)."""
    rows = []
    with torch.no_grad():
        for t in texts:
            logits = subject.model(torch.tensor([subject.encode(t)])).logits[0, -1]
            rows.append(logits.log_softmax(-1))
    return torch.stack(rows)


# ---------------------------------------------------------------------------- the module
def test_untrained_prefix_is_a_no_op_and_strength_scales_linearly():
    torch.manual_seed(0)
    keys, hidden = torch.randn(1, 32, 8), torch.randn(2, 5, 32)
    assert torch.equal(
        PrefixHooks([0], keys, torch.zeros(1, 8, 32), heads=2).read(0, hidden), 0 * hidden
    )
    values = torch.randn(1, 8, 32)
    one = PrefixHooks([0], keys, values, heads=2).read(0, hidden)
    two = PrefixHooks([0], keys, values, heads=2, strength=2.0).read(0, hidden)
    torch.testing.assert_close(two, 2 * one)
    # Each head's weights over its 4 slots sum to one: with equal values per head the read is
    # the sum of the heads' values whatever the query.
    flat = torch.cat([torch.ones(4, 32), 2 * torch.ones(4, 32)])[None]
    read = PrefixHooks([0], keys, flat, heads=2).read(0, hidden)
    torch.testing.assert_close(read, torch.full_like(read, 3.0))


def test_training_recovers_a_planted_prefix(subject):
    """Targets made by a random prefix: a fresh one trained by MSE reproduces them, also on
    prompts it was not trained on."""
    layers = list(range(subject.n_layers))
    generator = torch.Generator().manual_seed(7)
    d = subject.d_model
    planted = PrefixHooks(
        layers,
        torch.randn(len(layers), d, 8, generator=generator) / math.sqrt(d),
        0.5 * torch.randn(len(layers), 8, d, generator=generator),
        heads=2,
    )
    train, held = batch_of(subject, CORPUS[:8]), batch_of(subject, HELD_OUT)
    with attached(subject, hooks=planted.hooks()):
        goal, held_goal = record_states(subject, train), record_states(subject, held)
    plain = record_states(subject, held)
    cfg = TrainConfig(heads=2, prefix_len=4, steps=80, lr=0.05, batch_size=8, seed=0)
    keys, values, losses = train_prefix(subject, layers, [(train, goal, train.mask.bool())], cfg)
    assert losses[-1] < 0.1 * losses[0]
    with attached(subject, hooks=PrefixHooks(layers, keys, values, heads=2).hooks()):
        learned = record_states(subject, held)
    assert mask_mse(learned, held_goal, held) < 0.3 * mask_mse(plain, held_goal, held)
    assert subject.attachments == 0
    assert all(p.grad is None for p in subject.model.parameters())


# ---------------------------------------------------------------------------- distillation
def test_distils_selfcontrol_and_steers_like_it(subject):
    method = PrefixController(PrefixParams(**FAST, require_improvement=False, max_delta_ratio=50))
    state = method.fit(subject, TARGET)
    meta = state.meta
    assert meta["teacher"] == "selfcontrol" and meta["n_prompts"] == len(PROMPTS)
    assert 0 < meta["n_kept"] <= len(PROMPTS)
    assert meta["loss"][1] < 0.5 * meta["loss"][0]  # the prefix learned most of the deltas
    before, after = meta["teacher_suffix_score"]
    assert after >= before
    assert state.tensors["keys"].shape == (subject.n_layers, subject.d_model, 4 * 8)
    base = subject.logprobs(["The movie was"], [" wonderful"])
    with method.steer(subject, state, 1.0):
        assert subject.attachments == subject.n_layers  # one resid_post hook per layer
        steered = subject.logprobs(["The movie was"], [" wonderful"])
    assert steered != base
    assert subject.attachments == 0


def test_only_improved_and_moderate_targets_are_kept(gpt2_subject):
    keep_all = PrefixController(
        PrefixParams(**FAST, require_improvement=False, max_delta_ratio=50)
    ).fit(gpt2_subject, TARGET)
    strict = PrefixController(PrefixParams(**FAST, max_delta_ratio=50)).fit(gpt2_subject, TARGET)
    assert strict.meta["n_kept"] <= keep_all.meta["n_kept"]
    with pytest.warns(UserWarning, match="no usable targets"):
        tight = PrefixController(PrefixParams(**FAST, max_delta_ratio=1e-9)).fit(
            gpt2_subject, TARGET
        )
    assert tight.meta["n_kept"] == 0 and float(tight.tensors["values"].abs().sum()) == 0


def test_distils_a_vector_method(gpt2_subject):
    """A contrastive vector's (CAA) steered states are distilled; the prefix moves next-token
    log-probs the way the vector does, on the prompts it was trained on and on others."""
    subject = gpt2_subject
    params = PrefixParams(
        teacher="caa",
        teacher_params={"layer": 1},
        teacher_strength=4.0,
        max_delta_ratio=50,
        train_steps=80,
        lr=0.03,
    )
    method = PrefixController(params)
    state = method.fit(subject, TARGET)
    assert state.meta["n_kept"] == len(PROMPTS) and "teacher_suffix_score" not in state.meta
    teacher = method.teacher()
    teacher_state = teacher.fit(subject, TARGET)
    texts = list(PROMPTS) + HELD_OUT
    base = next_logprobs(subject, texts)
    with teacher.steer(subject, teacher_state, 4.0):
        wanted = next_logprobs(subject, texts) - base
    with method.steer(subject, state, 1.0):
        got = next_logprobs(subject, texts) - base
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), wanted.flatten(), dim=0)
    assert cosine > 0.8, float(cosine)


def test_a_teacher_of_its_own_is_told_by_the_protocol():
    from methods.selfcontrol import SelfControl
    from methods.teaching import Teacher
    from methods.vectors import CAA

    assert isinstance(SelfControl(), Teacher)  # deltas searched per prompt
    assert not isinstance(CAA(), Teacher)  # taught through its steer context


def test_a_prompt_only_teacher_gives_no_targets(gpt2_subject):
    method = PrefixController(PrefixParams(teacher="prompting", train_steps=5))
    with pytest.warns(UserWarning, match="no usable targets"):
        state = method.fit(gpt2_subject, TARGET)
    assert state.meta["n_kept"] == 0 and state.meta["mean_delta_ratio"] == 0


# ---------------------------------------------------------------------------- configuration
def test_teacher_params_are_checked_and_keyed():
    with pytest.raises(UserError, match="cannot distil itself"):
        parse(PrefixParams, {"teacher": "prefix"}, "prefix.params")
    with pytest.raises(UserError, match="unknown method 'selfcontol'"):
        PrefixController(PrefixParams(teacher="selfcontol")).teacher()
    with pytest.raises(UserError, match="prefix.teacher_params"):
        PrefixController(PrefixParams(teacher_params={"iteratons": 1})).teacher()
    a = PrefixController(PrefixParams(teacher_params={"iterations": 1})).fit_key_parts()
    b = PrefixController(PrefixParams(teacher_params={"iterations": 2})).fit_key_parts()
    assert a != b and a["teacher"]["method"] == "selfcontrol"
    assert PrefixController().applies_to(TARGET)
    assert not PrefixController().applies_to(SteeringTarget(name="x", prompts=PROMPTS))
    assert not PrefixController().applies_to(SteeringTarget(name="x", suffix=TARGET.suffix))


@pytest.mark.parametrize("train_on", ["prompt", "prompt+response"])
def test_the_loss_covers_the_prompt_or_also_the_teachers_response(
    gpt2_subject, monkeypatch, train_on
):
    import methods.prefix as prefix_mod

    seen = []
    real = prefix_mod.train_prefix

    def spy(subject, layers, batches, cfg):
        seen.extend(batches)
        return real(subject, layers, batches, cfg)

    monkeypatch.setattr(prefix_mod, "train_prefix", spy)
    params = PrefixParams(**{**FAST, "train_steps": 2}, train_on=train_on, max_delta_ratio=50)
    state = PrefixController(params).fit(gpt2_subject, TARGET)
    assert state.meta["train_on"] == train_on
    prompt_tokens = {len(gpt2_subject.encode(p)) for p in PROMPTS}
    longer = 0
    for batch, _, trained in seen:
        for row in range(batch.ids.shape[0]):
            n_trained, n_real = int(trained[row].sum()), int(batch.mask[row].sum())
            assert bool((trained[row] <= batch.mask[row].bool()).all())  # never on padding
            assert n_trained == n_real  # rows hold exactly the positions matched
            longer += n_real not in prompt_tokens
    assert seen and (longer == 0) == (train_on == "prompt")  # responses only when asked


# ---------------------------------------------------------------------------- on the testbed
@pytest.mark.slow  # needs the trained testbed (a CPU build of minutes when not cached)
def test_the_prefix_reproduces_selfcontrol_on_held_out_prompts(testbed):
    """Distilled on the fit prompts, the prefix moves the states of held-out prompts and of
    the teacher's responses to them the way SelfControl does (cosine of the state changes)."""
    from bench.registry import TASKS
    from methods.selfcontrol import SelfControl

    # Toxicity: the suite whose judge ("insulting?") SelfControl's search improves on every
    # build checked; on some builds its HH search keeps no step (see tests/test_selfcontrol.py).
    task = TASKS.get("toxicity")()
    splits = task.load()
    target = task.target(splits.select[0], splits)
    prefix = PrefixController()
    state = prefix.fit(testbed, target)
    assert state.meta["n_kept"] > 0 and state.meta["loss"][1] < 0.2 * state.meta["loss"][0]
    teacher = SelfControl()
    prompts = [e.prompt for e in splits.select]
    hooks, rows, found = teacher.distillation(
        testbed, teacher.fit(testbed, target), 1.0, prompts, 16, 16
    )
    moved = [i for i in range(len(rows)) if found.steps[i] > 0]
    assert moved
    batch = Batch.of(testbed, [rows[i] + found.responses[i][0] for i in moved])
    index = torch.tensor(moved)
    base = record_states(testbed, batch)
    with (
        attached(testbed, hooks=hooks.hooks()),
        hooks.active(found.deltas[:, index], found.lengths[index]),
    ):
        taught = record_states(testbed, batch)
    with prefix.steer(testbed, state, 1.0):
        learned = record_states(testbed, batch)
    real = batch.mask.bool()[None, :, :, None]
    want, got = (taught - base) * real, (learned - base) * real
    cosine = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0)
    assert cosine > 0.3, float(cosine)  # well above chance alignment with SelfControl
