"""The unit of the corpus: one document with its planted labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Doc:
    """``genre`` is one of "review", "comment", "fact", "update", "dialogue", "qa";
    ``labels`` holds the planted attributes (e.g. ``{"polarity": "positive"}``)."""

    genre: str
    text: str
    labels: Mapping[str, object] = field(default_factory=dict)
