"""SelfControl: suffix tokens, delta hooks, suffix scores and gradients, the search, steering."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from bench.errors import UserError
from bench.params import parse
from bench.sampling import stream_seed, tokens_key
from bench.subject import GenerationSettings
from bench.target import SteeringTarget, SuffixQuestion
from methods.selfcontrol import Controller, SelfControl, SelfControlParams
from methods.selfcontrol_engine import (
    DeltaHooks,
    Suffix,
    decode,
    judge,
    suffix_gradients,
    suffix_scores,
)
from methods.selfcontrol_search import SearchConfig, fluent_trials, optimise

QUESTION = SuffixQuestion("\nQuestion : Is the above text positive ? Answer :", " Yes", " No")
TARGET = SteeringTarget(name="test:positive", suffix=QUESTION)
PROMPTS = ["The movie was", "Human : how do I bake bread ? Assistant :", "I"]
CONTEXTS = ["The movie was", "The movie was", "I hate this place ,"]
CONTINUATIONS = [" wonderful .", " terrible .", " the food is bad"]
GREEDY = GenerationSettings(max_new_tokens=6, temperature=0.0, num_samples=2, batch_size=2)
SAMPLED = GenerationSettings(max_new_tokens=6, temperature=1.0, num_samples=2, seed=3)
# A large step (1.5x the hidden-state norm): the tiny models are untrained.
FAST = SelfControlParams(iterations=2, step_size=1.5, loglik_max_new_tokens=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many small ops: on a shared 2-core machine one thread is much faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def ids(subject, texts):
    return [subject.encode(t) for t in texts]


def random_deltas(subject, hooks, rows, seed=0):
    generator = torch.Generator().manual_seed(seed)
    width = max(len(r) for r in rows)
    shape = (len(hooks.layers), len(rows), width, subject.d_model)
    return torch.randn(shape, generator=generator), torch.tensor([len(r) for r in rows])


# ---------------------------------------------------------------------------- suffix tokens
def test_suffix_compares_the_first_tokens_where_the_answers_differ(subject):
    suffix = Suffix.build(subject, QUESTION)
    assert suffix.target != suffix.contrast
    decode_ = subject.tokenizer.decode
    # question + first differing token spell a prefix of question + answer (a shared leading
    # piece such as a bare space, split off by the tiny tokenizer, joins the question).
    assert (QUESTION.question + " Yes").startswith(decode_([*suffix.question, suffix.target]))
    assert (QUESTION.question + " No").startswith(decode_([*suffix.question, suffix.contrast]))
    assert decode_(list(suffix.question)).startswith(QUESTION.question.lstrip("\n")[:8]) or (
        decode_(list(suffix.question)).startswith(QUESTION.question[:8])
    )
    assert suffix.swapped() == Suffix(suffix.question, suffix.contrast, suffix.target)


def test_indistinguishable_answers_are_a_user_error(gpt2_subject):
    with pytest.raises(UserError, match="cannot be told apart"):
        Suffix.build(gpt2_subject, SuffixQuestion("Question : ok ? Answer :", " Yes", " Yes"))
    with pytest.raises(UserError, match="needs a suffix question"):
        SelfControl().fit(gpt2_subject, SteeringTarget(name="none"))
    assert not SelfControl().applies_to(SteeringTarget(name="none"))


def test_bad_params_are_user_errors():
    with pytest.raises(UserError, match="iterations"):
        parse(SelfControlParams, {"iterations": 0}, "selfcontrol.params")
    with pytest.raises(UserError, match="did you mean 'step_size'"):
        parse(SelfControlParams, {"step": 1.0}, "selfcontrol.params")


# ---------------------------------------------------------------------------- delta hooks
def test_deltas_line_up_under_left_padding_and_kv_cache(subject):
    """A row's deltas act the same in a padded batch as alone: forward and greedy generation."""
    from bench.steering import attached

    hooks = DeltaHooks(range(subject.n_layers))
    rows = ids(subject, PROMPTS)
    deltas, lengths = random_deltas(subject, hooks, rows)
    with attached(subject, hooks=hooks.hooks()):
        with hooks.active(deltas, lengths):
            together = decode(subject, rows, lengths.tolist(), 5)
        alone = []
        for i, row in enumerate(rows):
            with hooks.active(deltas[:, i : i + 1], lengths[i : i + 1]):
                alone += decode(subject, [row], [len(row)], 5)
        plain = decode(subject, rows, lengths.tolist(), 5)  # inactive hooks: a no-op
    assert together == alone
    assert plain == decode(subject, rows, lengths.tolist(), 5)
    assert together != plain
    assert subject.attachments == 0


def test_deltas_touch_only_the_prompt_positions(gpt2_subject):
    from bench.steering import attached

    subject = gpt2_subject
    hooks = DeltaHooks([0])
    row = subject.encode("The movie was wonderful and the acting")
    deltas, lengths = random_deltas(subject, hooks, [row[:3]])
    with torch.no_grad(), attached(subject, hooks=hooks.hooks()):
        with hooks.active(deltas, lengths, record=True) as steered:
            subject.model(torch.tensor([row]))
        with hooks.active(None, None, record=True) as plain:
            subject.model(torch.tensor([row]))
    diff = (steered[0] - plain[0])[0]  # (seq, d)
    torch.testing.assert_close(diff[:3], deltas[0, 0, :3])
    assert torch.equal(diff[3:], torch.zeros_like(diff[3:]))


# ---------------------------------------------------------------------------- score and gradient
def test_suffix_score_is_the_sigmoid_of_the_answer_logit_gap(subject):
    """Checked against Subject.logprobs (right padding, another code path)."""
    hooks = DeltaHooks([])
    suffix = Suffix.build(subject, QUESTION)
    prompts = ids(subject, PROMPTS)
    responses = [subject.tokenizer(" wonderful .")["input_ids"], [], [5, 6, 7]]
    got = suffix_scores(subject, hooks, prompts, responses, suffix, batch_size=2)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        text = subject.tokenizer.decode(list(p) + list(r) + list(suffix.question))
        rows = [list(p) + list(r) + list(suffix.question)]
        with torch.no_grad():
            logits = subject.model(torch.tensor(rows)).logits[0, -1]
        expected = torch.sigmoid(logits[suffix.target] - logits[suffix.contrast])
        assert math.isclose(float(got[i]), float(expected), rel_tol=1e-4), text


def test_judge_reads_the_responses_nll_from_the_same_pass(subject):
    """The mean NLL of each response given its prompt, as Subject.logprobs scores it."""
    hooks = DeltaHooks([])
    suffix = Suffix.build(subject, QUESTION)
    prompts = ids(subject, PROMPTS)
    responses = [subject.tokenizer(" wonderful .")["input_ids"], [], [5, 6, 7]]
    scores, nll = judge(subject, hooks, prompts, responses, suffix, batch_size=2)
    torch.testing.assert_close(scores, suffix_scores(subject, hooks, prompts, responses, suffix, 3))
    assert math.isnan(float(nll[1]))  # an empty response has no NLL
    for i in (0, 2):
        rows = [list(prompts[i]) + list(responses[i])]
        with torch.no_grad():
            logits = subject.model(torch.tensor(rows)).logits[0].log_softmax(-1)
        n = len(responses[i])
        picked = logits[-n - 1 : -1].gather(1, torch.tensor(responses[i])[:, None])
        assert math.isclose(float(nll[i]), float(-picked.mean()), rel_tol=1e-4)


def test_judge_reads_the_fluency_context_before_the_prompt(subject):
    """With a fluency context the NLL is the response's given "<context> <prompt>" (the text
    re-encoded, as the suites' evaluator reads it); the suffix score does not see the context."""
    hooks = DeltaHooks([])
    plain = Suffix.build(subject, QUESTION)
    context = "the food was wonderful ."
    read = Suffix.build(subject, replace(QUESTION, fluency_context=context))
    assert read.swapped().fluency_context == context
    prompts = ids(subject, PROMPTS)
    responses = [subject.tokenizer(" wonderful .")["input_ids"], [], [5, 6, 7]]
    scores, nll = judge(subject, hooks, prompts, responses, read, batch_size=2)
    plain_scores, plain_nll = judge(subject, hooks, prompts, responses, plain, batch_size=2)
    torch.testing.assert_close(scores, plain_scores)
    assert math.isnan(float(nll[1]))
    for i in (0, 2):
        row = subject.encode(f"{context} {PROMPTS[i]}") + list(responses[i])
        with torch.no_grad():
            logits = subject.model(torch.tensor([row])).logits[0].log_softmax(-1)
        n = len(responses[i])
        picked = logits[-n - 1 : -1].gather(1, torch.tensor(responses[i])[:, None])
        assert math.isclose(float(nll[i]), float(-picked.mean()), rel_tol=1e-4)
        assert not math.isclose(float(nll[i]), float(plain_nll[i]), rel_tol=1e-3)


# ---------------------------------------------------------------------------- decoding
def test_sampled_decoding_from_streams_is_reproducible(gpt2_subject):
    rows = ids(gpt2_subject, PROMPTS)
    streams = [stream_seed(tokens_key(r), 0, 0) for r in rows]
    lengths = [len(r) for r in rows]
    first = decode(gpt2_subject, rows, lengths, 5, temperature=1.0, top_p=0.9, streams=streams)
    again = decode(gpt2_subject, rows[::-1], lengths[::-1], 5, temperature=1.0, top_p=0.9,
                   streams=streams[::-1])  # fmt: skip
    assert first == again[::-1]  # a row's draws do not depend on its batch neighbours


# ---------------------------------------------------------------------------- fluency guard
NAN = math.nan
GUARD_CASES = [
    # (trial NLLs, unsteered NLL, allowed increase, fluent?)
    ([0.5, 0.6, 0.8], 0.5, 0.2, [True, True, False]),
    ([0.5, 0.6, 0.8], 0.5, None, [True, True, True]),  # guard off
    ([NAN, 0.9], 0.5, 0.2, [False, False]),  # all-empty candidates where there was text
    ([NAN, 0.9], NAN, 0.2, [True, True]),  # the unsteered candidates were empty too
]


@pytest.mark.parametrize("trial, initial, allowed, expected", GUARD_CASES)
def test_fluency_guard_cases(trial, initial, allowed, expected):
    cfg = SearchConfig(1, (1.0,), 1, 1.0, False, 4, 4, max_nll_increase=allowed)
    got = fluent_trials(torch.tensor([trial]), torch.tensor([initial]), cfg)
    assert got[0].tolist() == expected


def test_guarded_search_keeps_steps_within_the_nll_bound(subject):
    from bench.steering import attached

    hooks = DeltaHooks(range(subject.n_layers))
    suffix = Suffix.build(subject, QUESTION)
    prompts = ids(subject, PROMPTS + ["The capital of", "I love this place ,"])
    results = {}
    for bound in (None, 0.05, -100.0):  # off, a bound, one no step can meet
        cfg = SearchConfig(2, (4.0, 8.0), 3, 1.0, False, 5, 8, 1.0, 0.9, 7, bound)
        with attached(subject, hooks=hooks.hooks()):
            results[bound] = optimise(subject, hooks, prompts, suffix, cfg)
    guarded = results[0.05]
    moved = (guarded.steps > 0) & ~guarded.initial_nll.isnan()
    assert bool((guarded.nll[moved] <= guarded.initial_nll[moved] + 0.05 + 1e-6).all())
    assert bool((results[None].steps > 0).any())
    # Same candidates before any step (the same random numbers): the guard only filters steps.
    torch.testing.assert_close(guarded.initial_scores, results[None].initial_scores)
    assert int(results[-100.0].steps.sum()) == 0
    assert float(results[-100.0].deltas.abs().sum()) == 0


def test_gradient_matches_finite_differences_and_is_clipped(gpt2_subject):
    from bench.steering import attached

    subject = gpt2_subject
    hooks = DeltaHooks(range(subject.n_layers))
    suffix = Suffix.build(subject, QUESTION)
    prompts, responses = ids(subject, PROMPTS[:2]), [[10, 11], [12]]
    deltas, lengths = random_deltas(subject, hooks, prompts)
    deltas = deltas * 0.1
    with attached(subject, hooks=hooks.hooks()):
        grad = suffix_gradients(subject, hooks, prompts, responses, suffix, deltas, lengths, 1e9)
        clipped = suffix_gradients(
            subject, hooks, prompts, responses, suffix, deltas, lengths, 0.01
        )

        def objective(d):
            with torch.no_grad(), hooks.active(d, lengths):
                from methods.selfcontrol_engine import suffix_logit_gap

                gap = suffix_logit_gap(subject, prompts, responses, suffix)
            return float(torch.nn.functional.logsigmoid(gap.double()).sum())

        direction = torch.randn(deltas.shape, generator=torch.Generator().manual_seed(1))
        for b, n in enumerate(lengths.tolist()):
            direction[:, b, n:] = 0  # only prompt positions carry deltas
        eps = 1e-2
        numeric = (objective(deltas + eps * direction) - objective(deltas - eps * direction)) / (
            2 * eps
        )
    analytic = float((grad * direction).sum())
    assert math.isclose(analytic, numeric, rel_tol=0.05, abs_tol=1e-4)
    short = int(lengths.argmin())
    assert lengths[short] < grad.shape[2]
    assert float(grad[:, short, lengths[short] :].abs().sum()) == 0  # nothing past the prompt
    assert float(clipped.norm(dim=-1).max()) <= 0.01 + 1e-6
    assert all(not p.requires_grad or p.grad is None for p in subject.model.parameters())
    assert all(p.requires_grad for p in subject.model.parameters())  # flags restored


def test_relative_steps_are_fractions_of_the_hidden_norm(gpt2_subject):
    """Rescaled, the step direction's RMS token norm is the prompt states' RMS norm / K."""
    from bench.steering import attached
    from methods.prefix_module import Batch, record_states
    from methods.selfcontrol_engine import relative_scale

    subject = gpt2_subject
    hooks = DeltaHooks(range(subject.n_layers))
    prompts = ids(subject, PROMPTS)
    grad, lengths = random_deltas(subject, hooks, prompts, seed=3)
    for b, n in enumerate(lengths.tolist()):
        grad[:, b, n:] = 0
    zero = torch.zeros_like(grad)
    with attached(subject, hooks=hooks.hooks()):
        scale = relative_scale(subject, hooks, prompts, grad, zero, lengths)
    states = record_states(subject, Batch.of(subject, prompts))  # (layers, n, W, d) left padded
    for b, n in enumerate(lengths.tolist()):
        hidden_rms = states[:, b, -n:].norm(dim=-1).square().mean().sqrt()
        step_rms = (scale[b] * grad[:, b, :n]).norm(dim=-1).square().mean().sqrt()
        torch.testing.assert_close(step_rms * subject.n_layers, hidden_rms)


# ---------------------------------------------------------------------------- the search
@pytest.mark.parametrize("temperature", [0.0, 1.0])  # branch / sample candidates
def test_search_only_accepts_improvements(subject, temperature):
    from bench.steering import attached

    hooks = DeltaHooks(range(subject.n_layers))
    suffix = Suffix.build(subject, QUESTION)
    cfg = SearchConfig(2, (4.0, 8.0), 3, 1.0, False, 5, 4, temperature, 0.9, 7)
    prompts = ids(subject, PROMPTS + ["The capital of", "I love this place ,"])
    with attached(subject, hooks=hooks.hooks()):
        found = optimise(subject, hooks, prompts, suffix, cfg)
        flat = [(p, r) for p, rs in zip(prompts, found.responses) for r in rs]
        rescored = suffix_scores(subject, hooks, *zip(*flat), suffix, 8)
    # A prompt's score: its best branch's, or the mean over its samples.
    assert [len(rs) for rs in found.responses] == [1 if temperature == 0 else 3] * len(prompts)
    torch.testing.assert_close(rescored.view(len(prompts), -1).mean(-1), found.scores)
    assert bool((found.scores >= found.initial_scores).all())
    moved = found.steps > 0
    assert bool(moved.any()), "a large step should raise some tiny-model suffix score"
    assert bool((found.scores[moved] > found.initial_scores[moved]).all())
    assert float(found.deltas[:, ~moved].abs().sum()) == 0  # rejected steps leave no trace
    for b, n in enumerate(found.lengths.tolist()):
        assert float(found.deltas[:, b, n:].abs().sum()) == 0


def test_negative_strength_steers_toward_the_contrast_answer(gpt2_subject):
    up = Controller(gpt2_subject, FAST, QUESTION, 1.0)
    down = Controller(gpt2_subject, FAST, QUESTION, -2.0)
    assert down.suffix == up.suffix.swapped()
    sampling = (1.0, 0.9, 0)
    assert down.config(4, 2, sampling).step_sizes == tuple(
        2 * s for s in up.config(4, 2, sampling).step_sizes
    )
    assert up.config(4, 2, sampling).temperature == 1.0  # "auto" samples for sampled runs
    assert up.config(4, 2, (0.0, 1.0, 0)).temperature == 0.0  # and branches for greedy ones


# ---------------------------------------------------------------------------- steering
def test_generation_is_steered_by_the_best_deltas_and_leaves_nothing(subject):
    method = SelfControl(FAST)
    state = method.fit(subject, TARGET)
    flags = [p.requires_grad for p in subject.model.parameters()]
    base = subject.generate(PROMPTS, GREEDY)
    controller = method.controller(subject, state, 1.0)
    with method._steering(controller):
        batched = subject.generate(PROMPTS, GREEDY)  # two batches
        steered = subject.generate(PROMPTS, replace(GREEDY, batch_size=8))  # one: inspectable
    assert batched == steered
    found = controller.last
    best = [subject.tokenizer.decode(r[0], skip_special_tokens=True) for r in found.responses]
    assert steered == [[b, b] for b in best]  # greedy settings: the best-scoring response wins
    moved = (found.steps > 0).tolist()
    for i, changed in enumerate(moved):
        if not changed:
            assert found.scores[i] == found.initial_scores[i]
    assert subject.attachments == 0
    assert [p.requires_grad for p in subject.model.parameters()] == flags
    assert all(p.grad is None for p in subject.model.parameters())
    assert torch.is_grad_enabled()
    assert subject.generate(PROMPTS, GREEDY) == base


def test_sampled_generation_is_seeded_and_counts_only_returned_tokens(gpt2_subject):
    subject = gpt2_subject
    method = SelfControl(FAST)
    state = method.fit(subject, TARGET)
    before = subject.generated_tokens
    with method.steer(subject, state, 1.0):
        first = subject.generate(PROMPTS, SAMPLED)
        counted = subject.generated_tokens - before
        second = subject.generate(PROMPTS, SAMPLED)
    assert first == second
    assert [len(samples) for samples in first] == [2, 2, 2]
    # Only the 6 returned samples count (the search's candidates would be many more).
    assert 0 < counted <= SAMPLED.max_new_tokens * 6


def test_loglikelihoods_are_scored_under_the_context_deltas(subject):
    method = SelfControl(FAST)
    state = method.fit(subject, TARGET)
    base = subject.logprobs(CONTEXTS, CONTINUATIONS)
    controller = method.controller(subject, state, 1.0)
    with method._steering(controller):
        assert subject.attachments > 0
        steered = subject.logprobs(CONTEXTS, CONTINUATIONS)
    found = controller.last
    assert len(found.lengths) == 2  # one search per distinct context
    for i, j in enumerate([0, 0, 1]):
        changed = abs(steered[i].logprob - base[i].logprob) > 1e-6
        assert changed == bool(found.steps[j] > 0)
        assert steered[i].n_tokens == base[i].n_tokens
    assert subject.attachments == 0
    unsteered = SelfControl(SelfControlParams(step_size=1.5, steer_loglikelihood=False))
    with unsteered.steer(subject, state, 1.0):
        assert subject.logprobs(CONTEXTS, CONTINUATIONS) == base


# ---------------------------------------------------------------------------- in the runner
def test_both_methods_run_in_the_sweep_and_the_prefix_state_is_reused(tmp_path, gpt2_subject):
    import json

    from bench.config import Experiment, GenerationConfig, MethodSpec, TaskSpec
    from bench.registry import TASKS
    from bench.rundir import RunDir
    from bench.runner import Runner
    from bench.state import StateCache
    from tests.toy_task import ToyTask

    TASKS._loaded()["toy"] = ToyTask
    try:
        fast = {"iterations": 1, "step_size": 1.5, "loglik_max_new_tokens": 3}
        methods = (
            MethodSpec(name="selfcontrol", strengths=(1.0,), params=fast),
            MethodSpec(
                name="prefix",
                strengths=(1.0,),
                params={
                    "teacher_params": fast,
                    "distill_max_new_tokens": 3,
                    "require_improvement": False,
                    "max_delta_ratio": 100.0,
                    "train_steps": 5,
                },
            ),
        )
        exp = Experiment(
            output_dir=str(tmp_path / "run"),
            generation=GenerationConfig(max_new_tokens=4, batch_size=4),
            methods=methods,
            tasks=(TaskSpec(name="toy", params={"n": 2}),),
        )
        cache = StateCache(tmp_path / "states")
        for attempt in range(2):
            runner = Runner(exp, gpt2_subject, RunDir(exp.output_dir), state_cache=cache)
            runner.progress = False
            runner.run()
            fits = {f.method: f.cached for f in runner.fits}
            assert fits == {"selfcontrol": attempt == 1, "prefix": attempt == 1}
    finally:
        TASKS._loaded().pop("toy", None)
    root = RunDir(exp.output_dir).root
    cells = [json.loads(line) for line in (root / "cells.jsonl").read_text().splitlines()]
    steered = [c for c in cells if c["strength"] == 1.0]
    assert {c["method"] for c in steered} == {"selfcontrol", "prefix"}
    for cell in steered:
        assert not cell["degenerate"]
        assert math.isfinite(cell["metrics"]["perplexity"])
        assert cell["cost"]["generated_tokens"] <= 2 * 2 * 4  # returned samples only
    assert gpt2_subject.attachments == 0


# ---------------------------------------------------------------------------- on the testbed
@pytest.mark.slow  # needs the trained testbed (a CPU build of minutes when not cached)
# (suite, least share of prompts the search moves): the WebGPT judge is the weakest (3 of 16
# on the seed-1 build); toxicity moved 3 of 16 on the seed-1 AVX2 build once candidates were
# Gumbel-max draws (`bench.sampling`), 4 or more with the earlier inverse-CDF draws.
@pytest.mark.parametrize(("suite", "least_moved"), [("sentiment", 0.25), ("toxicity", 0.125),
                                                     ("webgpt", 0.125)])  # fmt: skip
def test_the_search_raises_the_testbed_models_own_judgement(testbed, suite, least_moved):
    """SelfControl's objective on the real suites: the suffix score of the best response rises
    for a good share of the prompts, and only accepted steps leave deltas. Not HH-RLHF: on some
    builds of the testbed its judge ("harmful?") offers no step within the fluency guard, so
    the search keeps none there (seed 0 built on AVX512 kernels)."""
    from bench.registry import TASKS
    from bench.steering import attached

    task = TASKS.get(suite)()
    splits = task.load()
    target = task.target(splits.select[0], splits)
    method = SelfControl()
    controller = method.controller(testbed, method.fit(testbed, target), 1.0)
    prompts = [controller.prompt_ids(e.prompt, 16) for e in splits.select]
    with attached(testbed, hooks=controller.hooks.hooks()):
        found = controller.search(prompts, 16, 16)
    moved = found.steps > 0
    assert float(moved.float().mean()) >= least_moved, found.steps.tolist()
    assert float(found.scores.mean()) > float(found.initial_scores.mean())
    assert bool((found.scores[moved] > found.initial_scores[moved]).all())
    assert testbed.attachments == 0
