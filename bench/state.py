"""Fitted method state: tensors plus JSON metadata, stored as safetensors (never pickle).

States are content-addressed: the cache key hashes everything the fit depended on (method,
its parameters and version, the steering target, the model fingerprint), so a fitted vector or
trained module is reused across runs and refitted only when one of those changes.

A saved state carries the SHA-256 of its tensors in its metadata; `State.load` checks it (and
that the file parses), so a truncated, damaged or foreign file in the cache is found when read.
The cache then moves it aside with a warning and fits again (`StateCache.get_or_fit`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from bench.distributed import Group
from bench.errors import UserError, warn
from bench.rundir import CORRUPT, move_aside

META_KEY = "steerbench.meta"
DIGEST_KEY = "steerbench.sha256"


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class State:
    tensors: Mapping[str, torch.Tensor] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)  # JSON-serialisable

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically: a crash never leaves a truncated state behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        try:
            metadata = {
                META_KEY: json.dumps(dict(self.meta), sort_keys=True),
                DIGEST_KEY: tensors_digest(tensors),
            }
            save_file(tensors, tmp, metadata=metadata)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> State:
        """The state in `path`; a file that does not read back whole as a steerbench state is a
        one-line `UserError` naming it."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            tensors = load_file(str(path))
            if META_KEY not in metadata:
                raise ValueError("no steerbench metadata (not a state steerbench saved)")
            meta = json.loads(metadata[META_KEY])
        except (OSError, ValueError, SafetensorError) as error:  # JSONDecodeError included
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise UserError(f"{path}: unreadable fitted state ({reason})") from None
        # States saved before the digest was stored have none: the parse check is all there is.
        stored = metadata.get(DIGEST_KEY)
        if stored is not None and stored != tensors_digest(tensors):
            raise UserError(f"{path}: fitted state does not match its checksum (damaged)")
        return cls(tensors=tensors, meta=meta)

    def to(self, device: torch.device | str) -> State:
        return State({k: v.to(device) for k, v in self.tensors.items()}, self.meta)


def content_key(*parts: Any) -> str:
    """Stable hash of JSON-serialisable parts (dataclasses should be passed as dicts)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def cache_root() -> Path:
    return Path(os.environ.get("STEERBENCH_CACHE", Path.home() / ".cache" / "steerbench"))


class StateCache:
    """Directory of fitted states keyed by content hash."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root() / "states"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def cached(self, key: str) -> State | None:
        """The state under `key`, or None. One that does not load is moved aside with a
        warning (to be fitted again): a damaged cache must not block every later run."""
        path = self.path(key)
        if path.exists():
            try:
                return State.load(path)
            except UserError as error:
                move_aside(path)
                warn(f"{error}; moved aside ({CORRUPT}), fitting it again")
        return None

    def get_or_fit(self, key: str, fit: Callable[[], State]) -> tuple[State, bool]:
        """(state, was_cached): the cached state, else `fit()`'s, cached."""
        state = self.cached(key)
        if state is not None:
            return state, True
        state = fit()
        state.save(self.path(key))
        return state, False


def share_states(
    group: Group, cache: StateCache, keys: Mapping[str, str], fitted: Mapping[str, State]
) -> dict[str, State]:
    """Rank 0's `fitted` states ({target name: state}, cached under `keys`), on every rank of
    `group`. The others read them from the cache rank 0 wrote (one machine, or a shared
    filesystem); what a rank's cache lacks (another machine's disk) rank 0 sends, and that
    rank keeps it in its own cache for a next run. No rank but 0 fits: every rank steers with
    the very states rank 0 fitted."""
    if group.main:
        mine: dict[str, State | None] = dict(fitted)
    else:
        mine = {name: cache.cached(key) for name, key in keys.items()}
    missing = [name for name, state in mine.items() if state is None]
    lacking = sorted({name for part in group.all_gather(missing) for name in part})
    if lacking:
        sent = group.broadcast(
            {name: mine[name].to("cpu") for name in lacking} if group.main else None
        )
        for name in lacking:
            if mine[name] is None:
                mine[name] = sent[name]
                mine[name].save(cache.path(keys[name]))
    return mine
