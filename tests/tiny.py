"""Tiny models and tokenizers built in-process: no downloads, seconds to build."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from bench.subject import Subject

CORPUS = [
    "The movie was wonderful and the acting was great .",
    "The movie was terrible and the acting was awful .",
    "I love this place , the food is lovely and the staff are kind .",
    "I hate this place , the food is bad and the staff are rude .",
    "The capital of Vorland is Brellin . The capital of Ostria is Kamsk .",
    "Human : how do I bake bread ? Assistant : mix flour , water and yeast , then bake it .",
    "Question : Is the above text positive ? Answer : Yes",
    "Question : Is the above text positive ? Answer : No",
    "You are an idiot and a loser . Thank you , that was very kind .",
] * 4


def tiny_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """Byte-level BPE on the corpus; at 300 words are mostly bytes, at 600 mostly whole."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


def tiny_gpt2(seed: int = 0, vocab_size: int = 300) -> Subject:
    tokenizer = tiny_tokenizer(vocab_size)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=3,
        n_head=4,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    return Subject(GPT2LMHeadModel(config), tokenizer, name="tiny-gpt2")


def tiny_llama(seed: int = 0) -> Subject:
    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
    )
    return Subject(LlamaForCausalLM(config), tokenizer, name="tiny-llama")
