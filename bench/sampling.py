"""Sampling from per-stream random numbers: batch-invariant draws and common random numbers.

A *stream* is one sampled continuation, named by a key (what is being answered: an example's
id and request, or a prompt's tokens), the sample's index and the run seed. Its random numbers
come from a generator seeded by those three only, so a continuation does not depend on the
batch size, on which other prompts share its batch, or on which process ran it; and the
steered and the unsteered answer to one example draw from the same numbers (common random
numbers), so a paired difference between them measures the steering, not sampling luck.

The token at each step is the Gumbel-max draw: the argmax of the temperature-scaled log-probs
(the top-p nucleus only) plus the stream's Gumbel noise for that step, an exact sample of the
nucleus distribution. Its coupling is tight: a push that moves the log-probs by less than the
gap between the best and second-best noisy score, which is about 1 nat whatever the vocabulary,
draws the same token (an inverse-CDF draw from one uniform per step moves to a neighbouring
token under any shift of a flat distribution).
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Sequence

import numpy as np
import torch
from transformers import LogitsProcessor


def stream_key(*parts: object) -> bytes:
    """A stream key from printable parts, e.g. `stream_key(example.id, request_index)`."""
    return "\x1f".join(str(p) for p in parts).encode()


def tokens_key(tokens: Sequence[int]) -> bytes:
    """A stream key from token ids (a prompt that has no example behind it)."""
    return np.asarray(list(tokens), dtype=np.int64).tobytes()


def stream_seed(key: bytes, sample: int, seed: int) -> int:
    """The generator seed of stream (`key`, `sample`) under run seed `seed`."""
    digest = hashlib.blake2b(key + struct.pack("<qq", sample, seed), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # a non-negative int64


def stream_seeds(keys: Sequence[bytes], samples: int, seed: int) -> list[int]:
    """Row i * samples + s is stream (keys[i], s): the row order of prompts each repeated
    `samples` times."""
    return [stream_seed(key, s, seed) for key in keys for s in range(samples)]


class StreamSampling(LogitsProcessor):
    """Temperature / top-p sampling of each row from its own stream (Gumbel-max). Used with
    greedy decoding: every score but the drawn token's is set to -inf.

    `strict`: non-finite probabilities (a model pushed to inf/nan by an extreme steering
    strength) raise RuntimeError, as torch's own sampler does, instead of drawing a token.
    """

    def __init__(
        self, seeds: Sequence[int], temperature: float, top_p: float, *, strict: bool = False
    ):
        self.seeds = list(seeds)  # one stream per row of the batch
        self.temperature, self.top_p, self.strict = temperature, top_p, strict
        # One generator per row, created on the scores' device at the first step; each step
        # draws the next vocabulary-sized block of the row's stream.
        self._generators: list[torch.Generator] | None = None

    def noise(self, vocab: int, device: torch.device) -> torch.Tensor:
        """This step's Gumbel noise (rows, vocab), one row per stream."""
        if self._generators is None:
            self._generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        tiny = torch.finfo(torch.float32).tiny
        uniforms = torch.stack(
            [torch.rand(vocab, generator=g, device=device) for g in self._generators]
        )
        return -(-uniforms.clamp_min(tiny).log()).log()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logp = (scores.float() / self.temperature).log_softmax(-1)  # (batch, vocab)
        if self.strict and not torch.isfinite(logp.exp()).all():
            raise RuntimeError("probability tensor contains either inf or nan")
        if self.top_p < 1.0:  # the nucleus: the most probable tokens covering top_p
            sorted_logp, order = logp.sort(-1, descending=True)
            probs = sorted_logp.exp()
            outside = probs.cumsum(-1) - probs >= self.top_p
            logp = logp.scatter(-1, order, sorted_logp.masked_fill(outside, -math.inf))
        token = (logp + self.noise(logp.shape[-1], logp.device)).argmax(-1)
        out = torch.full_like(scores, -math.inf)
        return out.scatter(-1, token[:, None], 0.0)
