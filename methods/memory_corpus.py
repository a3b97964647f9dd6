"""Training text for the memory cross-attention module, and the windows it is trained on.

Sources (the `corpus` parameter): "model", the default, or its older name "testbed" (documents
the subject's model source says the model was trained on, `Subject.training_corpus`: the testbed's generated corpus
for the testbed, of the experiment's testbed seed; a hub model has none), a local `.txt` file
(documents separated by blank lines, or one per line when there are none), a local `.jsonl` /
`.jsonl.gz` file (one record per line, the text in `text_field`), or a Hugging Face `datasets` id
read from the local cache (no network). Inline `corpus_texts` override all of them.

Training is "autoprogressive": every step takes windows of the token stream, and each window's
memory is a random span of that very window, run through the base model on its own (so it starts
at position 0 and cannot be matched by position). Where the memory covers the next token, the
module can lower the loss by reading it; elsewhere it must learn to stay silent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.errors import UserError
from bench.method import NotApplicable
from bench.subject import Subject
from bench.tensors import padded

MIN_MEMORY_TOKENS = 4  # shortest memory span drawn in training
EVAL_EVERY = 20  # every 20th document is held out for the evaluation loss
FILE_SUFFIXES = (".txt", ".jsonl", ".json", ".gz")
# Corpus names meaning the documents the model itself was trained on ("testbed", the first name,
# is still read: experiment files name it).
MODEL_CORPORA = ("model", "testbed")


def load_texts(
    corpus: str,
    split: str,
    text_field: str,
    inline: Sequence[str],
    max_documents: int,
    seed: int,
    *,
    subject: Subject | None = None,
) -> list[str]:
    """Up to `max_documents` non-empty documents, drawn with a seeded shuffle.

    `subject`: the model whose training corpus the names in MODEL_CORPORA read.
    """
    if inline:
        texts = list(inline)
    elif corpus in MODEL_CORPORA:
        texts = _model_texts(subject, corpus, max_documents)
    elif Path(corpus).expanduser().is_file():
        texts = _file_texts(Path(corpus).expanduser(), text_field)
    elif Path(corpus).suffix in FILE_SUFFIXES or corpus.startswith(("/", ".", "~")):
        raise UserError(f"memory corpus file not found: {corpus}")
    else:
        texts = _dataset_texts(corpus, split, text_field)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise UserError(f"memory corpus '{corpus}' has no text")
    if len(texts) > max_documents:
        texts = random.Random(seed).sample(texts, max_documents)
    return texts


def texts_hash(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\0")
    return digest.hexdigest()[:20]


def _model_texts(subject: Subject | None, corpus: str, n_docs: int) -> list[str]:
    """Up to `n_docs` documents the subject's model source trained it on."""
    read = subject.training_corpus if subject is not None else None
    texts = read(n_docs) if read is not None else None
    if texts is None:
        model = subject.name if subject is not None else "(none given)"
        raise NotApplicable(
            f"memory corpus '{corpus}': the model {model} has no training corpus from its "
            "source; give corpus= a file or dataset id"
        )
    return texts


def _file_texts(path: Path, text_field: str) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        raw = handle.read()
    if ".jsonl" in path.name or ".json" in path.name:
        texts = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise UserError(f"{path}:{number}: not a JSON line") from None
            if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                raise UserError(f"{path}:{number}: no text field '{text_field}'")
            texts.append(record[text_field])
        return texts
    paragraphs = [p.strip() for p in raw.split("\n\n")]
    return paragraphs if len(paragraphs) > 1 else raw.splitlines()


def _dataset_texts(name: str, split: str, text_field: str) -> list[str]:
    import datasets

    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as error:  # datasets raises many types for a missing offline data set
        raise UserError(
            f"memory corpus '{name}' is neither a local file nor a data set in the local "
            f"`datasets` cache ({type(error).__name__}); download it where there is network"
        ) from None
    if text_field not in data.column_names:
        raise UserError(
            f"data set '{name}' has no column '{text_field}' (columns: {', '.join(data.column_names)})"
        )
    return [str(t) for t in data[text_field]]


@dataclass(frozen=True)
class Batch:
    stream: torch.Tensor  # (batch, seq) token ids the model reads; loss on next-token prediction
    memory: torch.Tensor  # (batch, mem) right-padded ids of each row's memory span
    memory_mask: torch.Tensor  # (batch, mem) 1 on real memory tokens


class Windows:
    """Seeded windows of a tokenised corpus: batch `i` is the same whenever it is drawn, so a
    resumed training sees exactly the batches the interrupted one would have seen."""

    def __init__(self, subject: Subject, texts: Sequence[str], seq_len: int, seed: int) -> None:
        tok = subject.tokenizer
        eos = tok.eos_token_id if tok.eos_token_id is not None else tok.pad_token_id
        ids: list[int] = []
        for row in tok(list(texts), add_special_tokens=False)["input_ids"]:
            ids.extend(row)
            ids.append(eos)
        self.prefix = subject.encode("")  # special tokens a fresh sequence starts with (BOS)
        self.seq_len = min(seq_len, subject.max_length - len(self.prefix))
        if len(ids) < self.seq_len + 1:
            raise UserError(
                f"memory corpus too small: {len(ids)} tokens for windows of {self.seq_len}"
            )
        self.tokens = torch.tensor(ids, dtype=torch.long)  # (n_tokens,)
        self.pad = tok.pad_token_id if tok.pad_token_id is not None else eos
        self.seed = seed

    def batch(self, index: int, size: int) -> Batch:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        n = self.seq_len
        starts = torch.randint(0, len(self.tokens) - n, (size,), generator=gen)
        windows = torch.stack([self.tokens[s : s + n] for s in starts.tolist()])  # (batch, n)
        prefix = torch.tensor(self.prefix, dtype=torch.long).expand(size, -1)
        spans = []
        for row in windows:
            length = int(torch.randint(MIN_MEMORY_TOKENS, n + 1, (1,), generator=gen))
            begin = int(torch.randint(0, n - length + 1, (1,), generator=gen))
            spans.append(self.prefix + row[begin : begin + length].tolist())
        memory, mask = padded(spans, self.pad, side="right")
        return Batch(torch.cat([prefix, windows], dim=1), memory, mask)


def split_texts(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents for the evaluation loss)."""
    held = [t for i, t in enumerate(texts) if i % EVAL_EVERY == EVAL_EVERY - 1]
    train = [t for i, t in enumerate(texts) if i % EVAL_EVERY != EVAL_EVERY - 1]
    return train, (held or train[:1])
