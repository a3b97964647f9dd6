"""Fitted method state: tensors plus JSON metadata, stored as safetensors (never pickle).

States are content-addressed: the cache key hashes everything the fit depended on (method,
its parameters and version, the steering target, the model fingerprint), so a fitted vector or
trained module is reused across runs and refitted only when one of those changes.
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
from safetensors.torch import load_file, save_file

META_KEY = "steerbench.meta"


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
            save_file(
                tensors, tmp, metadata={META_KEY: json.dumps(dict(self.meta), sort_keys=True)}
            )
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | os.PathLike) -> State:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            meta = json.loads((handle.metadata() or {}).get(META_KEY, "{}"))
        return cls(tensors=load_file(str(path)), meta=meta)

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

    def get_or_fit(self, key: str, fit: Callable[[], State]) -> tuple[State, bool]:
        """(state, was_cached)."""
        path = self.path(key)
        if path.exists():
            return State.load(path), True
        state = fit()
        state.save(path)
        return state, False
