"""Our exported vectors give lm-eval's `steered` model the log-likelihoods our steering gives."""

from __future__ import annotations

import math

import pytest
import torch

from bench.architectures import hook_name
from bench.errors import UserError
from bench.state import State
from bench.subject import Subject
from bench.target import SteeringTarget
from methods.lm_eval_export import export, lm_eval_hookpoint, main
from methods.vectors import CAA, ActAdd, CAAParams
from tests.tiny import tiny_gpt2, tiny_llama

PAIRS = (
    ("The movie was wonderful and the acting was great .", "The movie was terrible ."),
    ("I love this place , the food is lovely", "I hate this place , the food is bad"),
    ("Thank you , that was very kind .", "You are an idiot and a loser ."),
)
REQUESTS = [
    ("The movie was", " wonderful and the acting was great ."),
    ("I love this place ,", " the staff are rude ."),
    ("Human : how do I bake bread ? Assistant :", " mix flour , water and yeast"),
    ("The capital of Vorland is ", "Brellin ."),  # trailing space moves to the continuation
    ("Question : Is the above text positive ?\n", "Answer : Yes"),  # so does a newline
]


def saved_subject(build, tmp_path) -> Subject:
    """A tiny model saved with save_pretrained and loaded back through from_pretrained."""
    tiny = build()
    tiny.model.save_pretrained(tmp_path / "model")
    tiny.tokenizer.save_pretrained(tmp_path / "model")
    return Subject.load(tmp_path / "model")


@pytest.mark.parametrize(
    ("build", "site", "layers"),
    [(tiny_gpt2, "resid_post", 1), (tiny_llama, "resid_pre", (1, 2)), (tiny_gpt2, "mlp_out", 0)],
    ids=["gpt2-resid_post", "llama-resid_pre-2layers", "gpt2-mlp_out"],
)
def test_lm_eval_steered_model_matches_our_steering(build, site, layers, tmp_path):
    lm_eval_steered = pytest.importorskip(
        "lm_eval.models.hf_steered", reason="lm_eval is not installed (pip install lm-eval)"
    )
    from lm_eval.api.instance import Instance

    subject = saved_subject(build, tmp_path)
    # lm-eval adds at every position, so ours adds at all positions too.
    method = CAA(CAAParams(layer=layers, site=site, positions="all"))
    state = method.fit(subject, SteeringTarget("t", contrast_pairs=PAIRS))
    strength = 6.0
    path = export(subject, state, tmp_path / "vector.pt", strength=strength)
    # The file is plain data: it loads without unpickling code.
    assert set(torch.load(path, weights_only=True)) == {
        lm_eval_hookpoint(
            hook_name(i, site),
            model_type=subject.model_type,
            n_layers=subject.n_layers,
            base_prefix=subject.model.base_model_prefix,
        )
        for i in state.meta["layers"]
    }

    contexts, continuations = zip(*REQUESTS)
    unsteered = subject.logprobs(contexts, continuations)
    with method.steer(subject, state, strength):
        ours = subject.logprobs(contexts, continuations)

    lm = lm_eval_steered.SteeredModel(
        pretrained=str(tmp_path / "model"), steer_path=str(path), device="cpu", batch_size=2
    )
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i)
        for i, pair in enumerate(REQUESTS)
    ]
    theirs = lm.loglikelihood(requests, disable_tqdm=True)

    for our, (their_logprob, their_greedy) in zip(ours, theirs):
        assert math.isclose(our.logprob, their_logprob, rel_tol=1e-4, abs_tol=1e-4)
        assert our.is_greedy == their_greedy
    # The vector really steers at this strength (else the comparison would prove nothing).
    assert max(abs(o.logprob - b.logprob) for o, b in zip(ours, unsteered)) > 0.05


def test_export_refuses_what_lm_eval_cannot_express(gpt2_subject, tmp_path):
    target = SteeringTarget("t", contrast_pairs=PAIRS, concept_pair=(" love", " hate"))
    actadd = ActAdd().fit(gpt2_subject, target)
    with pytest.raises(UserError, match="position-indexed"):
        export(gpt2_subject, actadd, tmp_path / "a.pt")
    first = CAA(CAAParams(layer=0, site="resid_pre")).fit(gpt2_subject, target)
    with pytest.raises(UserError, match="first block"):
        export(gpt2_subject, first, tmp_path / "b.pt")
    caa = CAA().fit(gpt2_subject, target)
    with pytest.raises(UserError, match=r"\.pt"):
        export(gpt2_subject, caa, tmp_path / "c.safetensors")


def test_export_command_line(tmp_path, capsys):
    subject = saved_subject(tiny_gpt2, tmp_path)
    state = CAA(CAAParams(layer=-1)).fit(subject, SteeringTarget("t", contrast_pairs=PAIRS))
    state.save(tmp_path / "state.safetensors")
    out = tmp_path / "out.pt"
    argv = [str(tmp_path / "state.safetensors"), str(out), "--model", str(tmp_path / "model")]
    assert main([*argv, "--strength", "3"]) == 0
    config = torch.load(out, weights_only=True)
    assert list(config) == ["h.2"]
    assert config["h.2"]["steering_coefficient"] == 3.0
    assert torch.equal(config["h.2"]["steering_vector"], state.tensors["vector.2"])
    assert main([str(tmp_path / "missing.safetensors"), str(out), "--model", "x"]) == 2
    assert "state file not found" in capsys.readouterr().err
    # A round trip through State.load gives the same file content.
    assert torch.equal(
        State.load(tmp_path / "state.safetensors").tensors["vector.2"],
        config["h.2"]["steering_vector"],
    )


def test_export_refuses_a_vector_that_does_not_fit_the_model(gpt2_subject, tmp_path, capsys):
    """A vector of another hidden size (or fit on another model) is one line, no file: lm-eval
    would accept the file and fail inside its forward."""
    hidden = gpt2_subject.model.config.hidden_size
    wrong = State({"vector.1": torch.ones(hidden // 2)}, {"layers": [1], "site": "resid_post"})
    with pytest.raises(UserError, match=f"has {hidden // 2} values but the model's hidden size"):
        export(gpt2_subject, wrong, tmp_path / "a.pt")
    other = State({"vector.1": torch.ones(hidden)}, {**wrong.meta, "model": "0123abcd"})
    with pytest.raises(UserError, match="the state was fit on model"):
        export(gpt2_subject, other, tmp_path / "b.pt")
    assert not list(tmp_path.glob("*.pt"))

    gpt2_subject.model.save_pretrained(tmp_path / "model")
    wrong.save(tmp_path / "wrong.safetensors")
    argv = [str(tmp_path / "wrong.safetensors"), str(tmp_path / "c.pt"), "--model"]
    capsys.readouterr()  # save_pretrained's own progress bar
    assert main([*argv, str(tmp_path / "model")]) == 2
    err = capsys.readouterr().err.strip()
    assert "hidden size is" in err and len(err.splitlines()) == 1
