"""ActAdd, CAA and PCA: what they fit, where they add it, and how they are configured."""

from __future__ import annotations

import pytest
import torch

from bench.errors import UserError
from bench.params import parse
from bench.positions import TokenPositions
from bench.state import State
from bench.target import SteeringTarget
from methods.activations import (
    AddVector,
    PositionMask,
    first_prompt_mask,
    forward_capture,
    spec_mask,
)
from methods.vectors import (
    CAA,
    PCA,
    ActAdd,
    ActAddParams,
    CAAParams,
    PCAParams,
)
from tests.tiny import tiny_gpt2

PAIRS = (
    ("The movie was wonderful and the acting was great .", "The movie was terrible ."),
    ("I love this place , the food is lovely", "I hate this place , the food is bad"),
    ("Thank you , that was very kind .", "You are an idiot and a loser ."),
    ("the staff are kind .", "the staff are rude ."),
    ("the acting was great", "the acting was awful"),
    ("I love it", "I hate it"),
)
TARGET = SteeringTarget("t", contrast_pairs=PAIRS, concept_pair=(" love", " hate and"))


def one_by_one(subject, text: str, point: str) -> torch.Tensor:
    """Activations (seq, d_model) of one text alone: no padding, no batch."""
    ids = torch.tensor([subject.encode(text)])
    return forward_capture(subject, ids, torch.ones_like(ids), [point])[point][0].float()


# ---------------------------------------------------------------------------- fitting
@pytest.mark.parametrize("token", ["last", "mean"])
def test_caa_is_the_mean_difference_of_single_text_activations(subject, token):
    method = CAA(CAAParams(layer=1, token=token, batch_size=3))  # batches mix lengths
    state = method.fit(subject, TARGET)
    point = "layers.1.resid_post"
    skip = len(subject.encode(""))  # leading specials are left out of the mean

    def act(text):
        acts = one_by_one(subject, text, point)
        return acts[-1] if token == "last" else acts[skip:].mean(0)

    expected = torch.stack([act(t) - act(a) for t, a in PAIRS]).mean(0)
    torch.testing.assert_close(state.tensors["vector.1"], expected, atol=1e-5, rtol=1e-4)


def test_fitting_is_batched(gpt2_subject):
    calls = []
    handle = gpt2_subject.model.register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        CAA(CAAParams(layer=(0, 1, 2), batch_size=4)).fit(gpt2_subject, TARGET)
    finally:
        handle.remove()
    assert len(calls) == 3  # 12 texts in batches of 4, all three layers read in the same passes


def test_pca_direction_is_the_principal_axis_sign_aligned():
    torch.manual_seed(0)
    axis = torch.nn.functional.normalize(torch.randn(16), dim=0)
    away = torch.randn(40, 16)
    # Differences along -axis mostly (toward lies below away on `axis`), plus small noise.
    scale = torch.linspace(1, 3, 40)[:, None]
    toward = away - scale * axis + 0.05 * torch.randn(40, 16)
    direction = PCA(PCAParams()).direction(toward, away)
    assert torch.isclose(direction.norm(), torch.tensor(1.0))
    assert torch.dot(direction, -axis) > 0.99  # the axis, signed toward "toward"
    assert ((toward - away) @ direction > 0).all()
    centred = PCA(PCAParams(center=True)).direction(toward, away)
    assert abs(torch.dot(centred, axis)) > 0.99  # the spread of the differences is along it too
    assert ((toward - away) @ centred > 0).all()  # and the sign rule holds on the raw pairs


def test_pca_normalisation(gpt2_subject):
    caa = CAA(CAAParams(layer=1)).fit(gpt2_subject, TARGET).tensors["vector.1"]
    scaled = PCA(PCAParams(layer=1)).fit(gpt2_subject, TARGET).tensors["vector.1"]
    unit = PCA(PCAParams(layer=1, normalize="none")).fit(gpt2_subject, TARGET).tensors["vector.1"]
    assert torch.isclose(scaled.norm(), caa.norm(), rtol=1e-5)  # default: the mean-diff norm
    assert torch.isclose(unit.norm(), torch.tensor(1.0), rtol=1e-5)  # repeng: unit
    torch.testing.assert_close(scaled / scaled.norm(), unit)
    unit_caa = CAA(CAAParams(layer=1, normalize="unit")).fit(gpt2_subject, TARGET)
    torch.testing.assert_close(unit_caa.tensors["vector.1"], caa / caa.norm())


def test_actadd_pads_the_pair_with_spaces_and_keeps_the_difference_matrix(gpt2_subject):
    method = ActAdd(ActAddParams(layer=1))
    state = method.fit(gpt2_subject, TARGET)
    love, hate = (gpt2_subject.encode(t) for t in TARGET.concept_pair)
    assert len(love) < len(hate)
    space = gpt2_subject.tokenizer(" ", add_special_tokens=False)["input_ids"][0]
    bos = gpt2_subject.tokenizer.eos_token_id  # GPT-2 adds no BOS: the pair gets one (as in TL)
    ids = method.padded_pair(gpt2_subject, TARGET.concept_pair)
    assert ids.tolist() == [[bos, *love] + [space] * (len(hate) - len(love)), [bos, *hate]]
    point = "layers.1.resid_pre"

    def acts(row):
        row = torch.tensor([row])
        return forward_capture(gpt2_subject, row, torch.ones_like(row), [point])[point][0]

    expected = acts(ids[0].tolist()) - acts(ids[1].tolist())
    matrix = state.tensors["vector.1"]
    torch.testing.assert_close(matrix, expected, atol=1e-5, rtol=1e-4)
    assert matrix.shape == (len(hate) + 1, gpt2_subject.d_model)
    assert torch.equal(matrix[0], torch.zeros(gpt2_subject.d_model))  # BOS - BOS: the sink
    assert state.meta["fit_on"] == {"concept_pair": [" love", " hate and"]}
    assert state.meta["tokens"][0][0] == gpt2_subject.tokenizer.eos_token
    plain = ActAdd(ActAddParams(layer=1, prepend_bos=False)).padded_pair(
        gpt2_subject, TARGET.concept_pair
    )
    assert plain.tolist() == [love + [space] * (len(hate) - len(love)), hate]


# ---------------------------------------------------------------------------- steering
def positions(absolute, prompt_lengths) -> TokenPositions:
    return TokenPositions(torch.tensor(absolute), torch.tensor(prompt_lengths))


# Two rows, left padded, then a decode step: row 0 has 2 prompt tokens, row 1 has 4.
PREFILL = positions([[-1, -1, 0, 1], [0, 1, 2, 3]], [2, 4])
DECODE = positions([[2], [4]], [2, 4])


@pytest.mark.parametrize(
    ("spec", "prefill", "decode"),
    [
        ("all", [[1, 1, 1, 1], [1, 1, 1, 1]], [[1], [1]]),  # padding too: see below
        ("prompt", [[0, 0, 1, 1], [1, 1, 1, 1]], [[0], [0]]),
        ("generated", [[0, 0, 0, 0], [0, 0, 0, 0]], [[1], [1]]),
        ("first:1", [[0, 0, 1, 0], [1, 0, 0, 0]], [[0], [0]]),
    ],
)
def test_vector_lands_on_the_selected_positions(spec, prefill, decode):
    vector = torch.tensor([1.0, -2.0])
    hook = AddVector(3 * vector, spec_mask(spec))
    for pos, where in ((PREFILL, prefill), (DECODE, decode)):
        hidden = torch.zeros(*pos.absolute.shape, 2)
        expected = torch.tensor(where, dtype=torch.float32)[..., None] * 3 * vector
        assert torch.equal(hook(hidden, pos), expected)


def test_actadd_matrix_lands_on_the_first_prompt_positions_only():
    matrix = torch.tensor([[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]])  # k = 3
    hook = AddVector(2 * matrix, first_prompt_mask(3))
    out = hook(torch.zeros(2, 4, 2), PREFILL)
    # Row 0 (2 prompt tokens): positions 0, 1 get rows 0, 1; padding gets nothing.
    assert torch.equal(out[0], torch.tensor([[0.0, 0], [0, 0], [2, 0], [0, 2]]))
    # Row 1 (4 prompt tokens): rows 0..2 at positions 0..2, nothing at position 3.
    assert torch.equal(out[1], torch.tensor([[2.0, 0], [0, 2], [10, 10], [0, 0]]))
    assert torch.equal(hook(torch.zeros(2, 1, 2), DECODE), torch.zeros(2, 1, 2))


def test_hook_casts_once_and_shares_the_mask_across_layers():
    calls = []
    mask = PositionMask(lambda pos: calls.append(1) or pos.real)
    hooks = [AddVector(torch.ones(2), mask), AddVector(torch.ones(2), mask)]
    hidden = torch.zeros(2, 4, 2, dtype=torch.float64)
    for hook in hooks:
        assert hook(hidden, PREFILL).dtype == torch.float64
    assert len(calls) == 1  # one mask per forward call, whatever the number of layers
    hooks[0](hidden, DECODE)
    assert len(calls) == 2


def test_steering_adds_exactly_the_vector_at_the_hooked_layer(subject):
    """Under left padding and several layers, the hooked site sees +strength * vector."""
    method = CAA(CAAParams(layer=(0, 2), site="resid_pre", positions="prompt"))
    state = method.fit(subject, TARGET)
    ids, mask = subject.padded(
        [subject.encode(t) for t in ("I love it", "The movie was great")], side="left"
    )
    points = ["layers.0.resid_pre", "layers.2.resid_pre"]
    base = forward_capture(subject, ids, mask, points)
    with method.steer(subject, state, 2.5):
        steered = forward_capture(subject, ids, mask, points)  # capture runs after the steering
    real = mask.bool()[..., None]
    added = steered["layers.0.resid_pre"] - base["layers.0.resid_pre"]
    expected = 2.5 * state.tensors["vector.0"].to(added.dtype)
    torch.testing.assert_close(
        added[real.expand_as(added)].view(-1, subject.d_model), expected.expand(int(mask.sum()), -1)
    )
    assert (added[~real.expand_as(added)] == 0).all()  # padding untouched
    assert not torch.allclose(steered["layers.2.resid_pre"], base["layers.2.resid_pre"])


def test_all_positions_adds_at_padding_without_changing_real_tokens(subject):
    """ "all" skips the mask: padding gets the vector too, which no real token can see."""
    state = CAA(CAAParams(layer=(0, 2))).fit(subject, TARGET)
    ids, mask = subject.padded(
        [subject.encode(t) for t in ("I love it", "The movie was great")], side="left"
    )
    real = mask.bool()

    def logits(positions: str) -> torch.Tensor:
        method = CAA(CAAParams(layer=(0, 2), positions=positions))
        with method.steer(subject, state, 3.0), torch.no_grad():
            return subject.model(input_ids=ids, attention_mask=mask).logits[real]

    assert not real.all()  # there is padding
    torch.testing.assert_close(logits("all"), logits("prompt"))  # every real token is prompt


def test_generated_only_positions_leave_the_prompt_alone(gpt2_subject):
    method = CAA(CAAParams(layer=1, positions="generated"))
    state = method.fit(gpt2_subject, TARGET)
    contexts, one, two = ["The movie was"], [" the"], [" the ."]
    assert [len(gpt2_subject.split_tokens(contexts[0], c[0])[1]) for c in (one, two)] == [1, 2]
    base_one, base_two = gpt2_subject.logprobs(contexts, one), gpt2_subject.logprobs(contexts, two)
    with method.steer(gpt2_subject, state, 50.0):
        # Scoring declares the context as prompt: the first continuation token is predicted
        # from prompt positions only, so it is unaffected; the second one is not.
        assert gpt2_subject.logprobs(contexts, one) == base_one
        assert gpt2_subject.logprobs(contexts, two) != base_two


# ---------------------------------------------------------------------------- configuration
def test_layer_specs(gpt2_subject):
    assert CAA(CAAParams(layer=-1)).fit(gpt2_subject, TARGET).meta["layers"] == [2]
    assert CAA(CAAParams(layer="middle")).fit(gpt2_subject, TARGET).meta["layers"] == [1]
    assert CAA(CAAParams(layer="early")).fit(gpt2_subject, TARGET).meta["layers"] == [0]
    state = CAA(CAAParams(layer=(2, 0, -1))).fit(gpt2_subject, TARGET)
    assert state.meta["layers"] == [0, 2] and set(state.tensors) == {"vector.0", "vector.2"}
    with pytest.raises(UserError, match="out of range"):
        CAA(CAAParams(layer=7)).fit(gpt2_subject, TARGET)


def test_params_parse_from_experiment_tables():
    assert parse(CAAParams, {"layer": [1, 2]}, "m").layer == (1, 2)
    assert parse(CAAParams, {"layer": -2}, "m").layer == -2
    assert parse(PCAParams, {"layer": "sweep", "center": True}, "m").center
    with pytest.raises(UserError, match="m.layer"):
        parse(CAAParams, {"layer": "top"}, "m")
    with pytest.raises(UserError, match="position spec"):
        parse(CAAParams, {"positions": "everywhere"}, "m")
    with pytest.raises(UserError, match="unknown key .*positions"):
        parse(ActAddParams, {"positions": "all"}, "m")


def test_layer_sweep_scores_every_candidate_and_keeps_the_best():
    subject = tiny_gpt2(seed=1)
    method = CAA(CAAParams(layer="sweep", sweep_layers=(0, 1, 2)))
    state = method.fit(subject, TARGET)
    sweep = state.meta["sweep"]
    assert sweep["candidates"] == [0, 1, 2]
    assert set(sweep["scores"]) == {"0", "1", "2"}
    assert sweep["chosen"] == max(sweep["candidates"], key=lambda i: sweep["scores"][str(i)])
    assert state.meta["layers"] == [sweep["chosen"]]
    assert sweep["held_out_pairs"] == 2 and not sweep["in_sample"]  # every 4th of 6 pairs
    # Layers are scored at their natural scale, whatever the normalisation asked for.
    unit = CAA(CAAParams(layer="sweep", sweep_layers=(0, 1, 2), normalize="unit"))
    assert unit.fit(subject, TARGET).meta["sweep"]["scores"] == sweep["scores"]
    # The chosen layer's vector is refit on all pairs.
    direct = CAA(CAAParams(layer=sweep["chosen"])).fit(subject, TARGET)
    torch.testing.assert_close(
        state.tensors[f"vector.{sweep['chosen']}"], direct.tensors[f"vector.{sweep['chosen']}"]
    )


def test_actadd_sweep_needs_contrast_pairs(gpt2_subject):
    method = ActAdd(ActAddParams(layer="sweep"))
    assert not method.applies_to(SteeringTarget("c", concept_pair=(" a", " b")))
    assert method.applies_to(TARGET)
    assert method.fit(gpt2_subject, TARGET).meta["sweep"]["held_out_pairs"] == len(PAIRS)


def test_applies_to_and_missing_fields():
    assert CAA().applies_to(TARGET) and not CAA().applies_to(SteeringTarget("e"))
    assert ActAdd().applies_to(TARGET) and not ActAdd().applies_to(SteeringTarget("e"))
    with pytest.raises(UserError, match="no contrast_pairs"):
        CAA().source(SteeringTarget("e"))


def test_state_records_what_it_was_fit_on(gpt2_subject):
    state = CAA(CAAParams(layer=1, max_pairs=4)).fit(gpt2_subject, TARGET)
    meta = state.meta
    assert meta["model"] == gpt2_subject.fingerprint() and meta["target"] == "t"
    assert meta["fit_on"]["n_pairs"] == 4 and meta["site"] == "resid_post"
    assert meta["norms"]["1"] == pytest.approx(float(state.tensors["vector.1"].norm()))


def test_steering_a_different_model_is_refused(gpt2_subject):
    state = CAA(CAAParams(layer=1)).fit(gpt2_subject, TARGET)
    other = tiny_gpt2(seed=3)
    with pytest.raises(UserError, match="fit on model"):
        CAA().steer(other, state, 1.0)
    assert other.attachments == 0


def test_steer_only_params_do_not_change_the_fit_key():
    a, b = CAA(CAAParams(positions="all")), CAA(CAAParams(positions="generated"))
    assert a.fit_key_parts() == b.fit_key_parts()
    assert a.fit_key_parts() != CAA(CAAParams(token="mean")).fit_key_parts()


def test_loaded_state_steers_like_the_fitted_one(gpt2_subject, tmp_path):
    method = ActAdd(ActAddParams(layer=1))
    state = method.fit(gpt2_subject, TARGET)
    state.save(tmp_path / "s.safetensors")
    loaded = State.load(tmp_path / "s.safetensors")
    with method.steer(gpt2_subject, state, 4.0):
        a = gpt2_subject.logprobs(["I think"], [" it is great"])
    with method.steer(gpt2_subject, loaded, 4.0):
        b = gpt2_subject.logprobs(["I think"], [" it is great"])
    assert a == b
