"""Subject: loading, hook point resolution per architecture, generation and scoring."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
import transformers

from bench.architectures import SITES
from bench.errors import UserError
from bench.steering import attached
from bench.subject import GenerationSettings, Subject
from tests.tiny import tiny_tokenizer

TINY = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=300
)
ARCHITECTURES = {
    "gpt2": lambda: transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=4, vocab_size=300, n_positions=64
    ),
    "gpt_neox": lambda: transformers.GPTNeoXConfig(**TINY, max_position_embeddings=64),
    "llama": lambda: transformers.LlamaConfig(
        **TINY, num_key_value_heads=2, max_position_embeddings=64
    ),
    "mistral": lambda: transformers.MistralConfig(
        **TINY, num_key_value_heads=2, max_position_embeddings=64
    ),
    "qwen2": lambda: transformers.Qwen2Config(
        **TINY, num_key_value_heads=2, max_position_embeddings=64
    ),
    "gemma": lambda: transformers.GemmaConfig(
        **TINY, num_key_value_heads=2, head_dim=8, max_position_embeddings=64
    ),
    "opt": lambda: transformers.OPTConfig(
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=300,
        max_position_embeddings=64,
        word_embed_proj_dim=32,
    ),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def arch_subject(request):
    torch.manual_seed(0)
    config = ARCHITECTURES[request.param]()
    model = transformers.AutoModelForCausalLM.from_config(config)
    return Subject(model, tiny_tokenizer(), name=request.param)


@pytest.mark.parametrize("site", SITES)
def test_every_hook_point_resolves_fires_and_steers(arch_subject, site):
    subject = arch_subject
    ids = torch.tensor([subject.encode("The movie was great")])
    with torch.no_grad():
        base = subject.model(input_ids=ids).logits
    seen = []

    def shift(hidden, positions):
        seen.append(hidden.shape)
        return hidden + 3.0

    with attached(subject, hooks=[(f"layers.1.{site}", shift)]), torch.no_grad():
        steered = subject.model(input_ids=ids).logits
    assert seen and seen[0] == (1, ids.shape[1], subject.d_model)
    assert not torch.allclose(base, steered)
    assert subject.attachments == 0


def test_unknown_hook_point_lists_valid_names(gpt2_subject):
    with pytest.raises(UserError, match=r"valid names: layers\.\{0\.\.2\}"):
        gpt2_subject.hookpoint("layers.1.residual")
    with pytest.raises(UserError, match="out of range"):
        gpt2_subject.hookpoint("layers.7.attn_out")
    assert gpt2_subject.hookpoint("layers.-1.mlp_out").layer == 2


def test_unknown_architecture_is_a_user_error(gpt2_subject, monkeypatch):
    monkeypatch.setattr(gpt2_subject.model.config, "model_type", "mamba")
    with pytest.raises(
        UserError, match="no hook point table for architecture 'mamba'; supported: gemma"
    ):
        gpt2_subject.hookpoint("layers.0.resid_post")


def test_logprobs_override_sees_transformed_contexts_and_is_removed(gpt2_subject):
    subject = gpt2_subject
    contexts, continuations = ["The movie was", "I love it"], [" great", " ."]
    base = subject.logprobs(contexts, continuations)
    seen = []

    def doubled(ctxs, conts, batch_size):
        seen.append(list(ctxs))
        return [replace(s, logprob=2 * s.logprob) for s in subject.logprobs_raw(ctxs, conts)]

    with attached(subject, prompt_transform=lambda p: "Say: " + p, logprobs=doubled):
        assert subject.attachments == 2
        steered = subject.logprobs(contexts, continuations)
        assert seen == [["Say: The movie was", "Say: I love it"]]
        raw = subject.logprobs_raw(["Say: " + c for c in contexts], continuations)
    assert [s.logprob for s in steered] == [2 * r.logprob for r in raw]
    assert subject.attachments == 0
    assert subject.logprobs(contexts, continuations) == base


def test_logprobs_match_a_manual_forward_and_are_batch_invariant(subject):
    contexts = ["The movie was", "I love this place ,", "Human : how do I bake bread ?"]
    continuations = [" great", " the food is lovely", " Assistant : mix flour"]
    batched = subject.logprobs(contexts, continuations, batch_size=3)
    single = [subject.logprobs([c], [x])[0] for c, x in zip(contexts, continuations)]
    for a, b in zip(batched, single):
        assert a.n_tokens == b.n_tokens
        assert a.logprob == pytest.approx(b.logprob, abs=1e-4)
    ctx, cont = subject.split_tokens(contexts[1], continuations[1])
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(subject.model(input_ids=ids).logits[0], -1)
    manual = sum(logp[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))
    assert batched[1].logprob == pytest.approx(manual, abs=1e-4)


def test_trailing_space_moves_to_the_continuation(gpt2_subject):
    assert gpt2_subject.split_tokens("The movie was ", "great") == gpt2_subject.split_tokens(
        "The movie was", " great"
    )


@pytest.mark.parametrize("space", ["\n", "\n\n", " \t\n ", "\t"])
def test_all_trailing_whitespace_moves_to_the_continuation_as_in_lm_eval(gpt2_subject, space):
    """lm-eval's `_encode_pair` moves every trailing whitespace character of the context, not
    only spaces; a context ending in a newline must score the same way (its parity with lm-eval
    itself: tests/test_lm_eval_interchange.py)."""
    context, continuation = "Question : Is the above text positive ?" + space, "Answer : Yes"
    ctx, cont = gpt2_subject.split_tokens(context, continuation)
    stripped = context.rstrip()
    assert ctx == gpt2_subject.encode(stripped)
    assert ctx + cont == gpt2_subject.encode(context + continuation)
    assert (ctx, cont) == gpt2_subject.split_tokens(stripped, space + continuation)


def test_seeded_sampling_is_reproducible_and_greedy_repeats(subject):
    sampled = GenerationSettings(
        max_new_tokens=6, temperature=1.0, top_p=0.9, num_samples=3, seed=7
    )
    assert subject.generate(["The movie"], sampled) == subject.generate(["The movie"], sampled)
    greedy = subject.generate(
        ["The movie"], GenerationSettings(max_new_tokens=6, temperature=0.0, num_samples=2)
    )
    assert len(greedy[0]) == 2 and greedy[0][0] == greedy[0][1]


def test_batched_generation_equals_one_by_one_under_left_padding(gpt2_subject):
    settings = GenerationSettings(max_new_tokens=6, temperature=0.0)
    prompts = ["The movie was wonderful and the", "I", "The capital of"]
    batched = gpt2_subject.generate(prompts, settings)
    single = [gpt2_subject.generate([p], settings)[0] for p in prompts]
    assert batched == single


def test_generating_an_end_of_text_in_an_unpadded_batch_raises_no_false_alarm(
    gpt2_subject, monkeypatch
):
    """transformers' generate drops an all-ones mask, then warns at the first generated pad
    token that no mask came ("We strongly recommend passing in an `attention_mask`"): a false
    alarm for steerbench, which passes its masks. Here the pad token is the one the model
    generates first, and the batch's two prompts are one (nothing padded)."""
    settings = GenerationSettings(max_new_tokens=3, temperature=0.0)
    prompts = ["The movie was"] * 2
    first = gpt2_subject.encode(gpt2_subject.generate(prompts[:1], settings)[0][0])[0]
    monkeypatch.setattr(gpt2_subject.model.config, "pad_token_id", first)
    transformers.utils.logging.get_logger("transformers").warning_once.cache_clear()
    said: list[str] = []
    listener = logging.Handler()
    listener.emit = lambda record: said.append(record.getMessage())
    library = logging.getLogger("transformers")  # where transformers' own handler prints
    library.addHandler(listener)
    level = library.level
    library.setLevel(logging.WARNING)  # -q in an earlier test may have set it to errors only
    try:
        gpt2_subject.generate(prompts, settings)
        transformers.utils.logging.get_logger("transformers.modeling_utils").warning("other")
    finally:
        library.removeHandler(listener)
        library.setLevel(level)
    assert said == ["other"]


def test_load_round_trips_through_from_pretrained(gpt2_subject, tmp_path):
    gpt2_subject.model.save_pretrained(tmp_path)
    gpt2_subject.tokenizer.save_pretrained(tmp_path)
    loaded = Subject.load(tmp_path)
    assert loaded.fingerprint() == gpt2_subject.fingerprint()


def test_missing_hub_model_offline_is_one_line_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as error:
        Subject.load("no-such-org/no-such-model-xyz")
    message = str(error.value)
    assert (
        "\n" not in message
        and "no-such-org/no-such-model-xyz" in message
        and "local path" in message
    )
