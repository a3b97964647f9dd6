"""steerbench as an lm-eval model: lm-eval's own evaluator runs local task configs through it,
and its per-item log-likelihoods are those of lm-eval's `hf` model (unsteered) and `steered`
model with our exported vector (steered)."""

from __future__ import annotations

import pytest

pytest.importorskip("lm_eval", reason="lm_eval is not installed")

from lm_eval import simple_evaluate  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from bench.errors import UserError  # noqa: E402
from bench.lm_eval_model import SteerbenchLM, build_steering  # noqa: E402
from bench.subject import Subject  # noqa: E402
from bench.target import SteeringTarget  # noqa: E402
from methods.lm_eval_export import export  # noqa: E402
from methods.vectors import CAA, CAAParams  # noqa: E402
from tasks.testbed.lm_eval_tasks import write_tasks  # noqa: E402
from tests.tiny import tiny_gpt2  # noqa: E402

PAIRS = (
    ("The movie was wonderful and the acting was great .", "The movie was terrible ."),
    ("I love this place , the food is lovely", "I hate this place , the food is bad"),
    ("Thank you , that was very kind .", "You are an idiot and a loser ."),
)
FACTS = [
    {"question": "The capital of Vorland is", "choices": ["Brellin", "Kamsk"], "answer": 0},
    {"question": "The capital of Ostria is", "choices": ["Brellin", "Kamsk"], "answer": 1},
    {"question": "The movie was", "choices": ["wonderful", "terrible", "great"], "answer": 0},
    {"question": "I love this place , the food is", "choices": ["lovely", "bad"], "answer": 0},
]
GRAMMAR = [
    {"good": "The movie was great .", "bad": "The was movie great ."},
    {"good": "I love this place .", "bad": "Place this love I ."},
    {"good": "Thank you , that was kind .", "bad": "You thank , kind was that ."},
]
READING = [
    {
        "passage": "The capital of Zarnia is Tessa .",
        "question": "Question : the capital of Zarnia ? Answer :",
        "answer": "Tessa",
    },
    {
        "passage": "The food is lovely .",
        "question": "Question : how is the food ? Answer :",
        "answer": "lovely",
    },
]
TEXT = [
    {"text": "The movie was wonderful and the acting was great ."},
    {"text": "Human : how do I bake bread ? Assistant : mix flour , water and yeast ."},
]
TINY_TASKS = {
    "testbed_facts": {"train": FACTS[:2], "test": FACTS},
    "testbed_grammar": {"train": GRAMMAR[:1], "test": GRAMMAR},
    "testbed_reading": {"train": READING[:1], "test": READING},
    "testbed_text": {"train": TEXT[:1], "test": TEXT},
}
LOGLIKELIHOOD_TASKS = ["testbed_facts", "testbed_grammar", "testbed_text"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny model saved with save_pretrained, a CAA state and its lm-eval export, the tasks."""
    root = tmp_path_factory.mktemp("lm_eval_model")
    tiny = tiny_gpt2()
    tiny.model.save_pretrained(root / "model")
    tiny.tokenizer.save_pretrained(root / "model")
    subject = Subject.load(root / "model")
    # lm-eval's steered model adds at every position, so ours adds at all positions too.
    method = CAA(CAAParams(layer=1, site="resid_post", positions="all"))
    state = method.fit(subject, SteeringTarget("t", contrast_pairs=PAIRS))
    state.save(root / "caa.safetensors")
    strength = 6.0
    export(subject, state, root / "caa.pt", strength=strength)
    write_tasks(root / "tasks", TINY_TASKS)
    return root, strength


def _per_item(model, model_args, tasks, root, **kwargs) -> dict[str, list]:
    """Each task's per-item responses ({task: [resps per doc, in doc order]})."""
    out = simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(root / "tasks"), include_defaults=False),
        batch_size=2,
        device="cpu",
        log_samples=True,
        bootstrap_iters=0,
        **kwargs,
    )
    return {
        task: [s["resps"] for s in sorted(samples, key=lambda s: s["doc_id"])]
        for task, samples in out["samples"].items()
    }, out["results"]


def _logprobs(resps: list) -> list[float]:
    """The log-likelihoods in one task's responses, flattened (rolling: a float per doc)."""
    flat = []
    for doc in resps:
        for resp in doc:
            value = resp[0]
            flat.append(float(value[0] if isinstance(value, (tuple, list)) else value))
    return flat


def _max_diff(ours: dict, theirs: dict) -> float:
    diffs = []
    for task in LOGLIKELIHOOD_TASKS:
        a, b = _logprobs(ours[task]), _logprobs(theirs[task])
        assert len(a) == len(b) > 0
        diffs += [abs(x - y) for x, y in zip(a, b)]
    return max(diffs)


def test_registered_in_lm_evals_registry():
    assert get_model("steerbench") is SteerbenchLM


def test_unsteered_equals_lm_evals_hf_model(setup):
    root, _ = setup
    model_args = f"pretrained={root / 'model'}"
    ours, our_results = _per_item("steerbench", model_args, LOGLIKELIHOOD_TASKS, root)
    theirs, their_results = _per_item("hf", model_args, LOGLIKELIHOOD_TASKS, root)
    assert _max_diff(ours, theirs) <= 1e-4
    for task in ("testbed_facts", "testbed_grammar"):
        assert our_results[task]["acc,none"] == their_results[task]["acc,none"]
    # Few-shot contexts go through the same path.
    ours, _ = _per_item("steerbench", model_args, ["testbed_facts"], root, num_fewshot=1)
    theirs, _ = _per_item("hf", model_args, ["testbed_facts"], root, num_fewshot=1)
    assert (
        max(
            abs(a - b)
            for a, b in zip(_logprobs(ours["testbed_facts"]), _logprobs(theirs["testbed_facts"]))
        )
        <= 1e-4
    )


def test_steered_caa_equals_lm_evals_steered_model(setup):
    root, strength = setup
    model = root / "model"
    ours_args = (
        f"pretrained={model},method=caa,state={root / 'caa.safetensors'},strength={strength}"
    )
    ours, _ = _per_item("steerbench", ours_args, LOGLIKELIHOOD_TASKS, root)
    theirs, _ = _per_item(
        "steered", f"pretrained={model},steer_path={root / 'caa.pt'}", LOGLIKELIHOOD_TASKS, root
    )
    assert _max_diff(ours, theirs) <= 1e-4
    unsteered, _ = _per_item("steerbench", f"pretrained={model}", LOGLIKELIHOOD_TASKS, root)
    # The vector really steers at this strength (else the comparison would prove nothing).
    assert _max_diff(ours, unsteered) > 0.05


def test_generate_until_equals_lm_evals_hf_model_greedy(setup):
    root, _ = setup
    model_args = f"pretrained={root / 'model'}"
    ours, _ = _per_item("steerbench", model_args, ["testbed_reading"], root)
    theirs, _ = _per_item("hf", model_args, ["testbed_reading"], root)
    assert ours["testbed_reading"] == theirs["testbed_reading"]


def test_bad_model_args_are_one_line_user_errors(setup):
    root, _ = setup
    with pytest.raises(UserError, match="unknown method 'cab'"):
        build_steering("cab", None, 0.0, {})
    with pytest.raises(UserError, match="needs state=PATH"):
        build_steering("caa", None, 4.0, {})
    with pytest.raises(UserError, match="need method=NAME"):
        build_steering(None, str(root / "caa.safetensors"), 4.0, {})
    with pytest.raises(UserError, match="unknown key 'model_args.postions'"):
        build_steering("caa", str(root / "caa.safetensors"), 4.0, {"postions": "all"})
    with pytest.raises(UserError, match="fit by 'caa', not 'pca'"):
        build_steering("pca", str(root / "caa.safetensors"), 4.0, {})
    # The state's own parameters come back, a model_arg overrides one.
    steering = build_steering("caa", str(root / "caa.safetensors"), 4.0, {"positions": "prompt"})
    assert steering.method.params.positions == "prompt" and steering.method.params.layer == 1


def test_steerbench_lm_eval_command_runs_a_local_task(setup, capsys):
    """`steerbench lm-eval ...` is lm-eval's own command line with our model registered."""
    from bench.cli import main

    root, strength = setup
    args = f"pretrained={root / 'model'},method=caa,state={root / 'caa.safetensors'},strength={strength}"
    argv = ["lm-eval", "--model", "steerbench", "--model_args", args, "--tasks", "testbed_facts"]
    argv += ["--include_path", str(root / "tasks"), "--batch_size", "2", "--limit", "2"]
    assert main(argv) == 0
    assert "testbed_facts" in capsys.readouterr().out
    bad = [
        "lm-eval",
        "--model",
        "steerbench",
        "--model_args",
        f"pretrained={root / 'model'},method=cab",
    ]
    assert main([*bad, "--tasks", "testbed_facts", "--include_path", str(root / "tasks")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("steerbench: error: unknown method 'cab'")
