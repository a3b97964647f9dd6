"""Whether long steps show progress bars, without threading a flag through every signature.

The runner (and the CLI's ``-q``) set it for the duration of a run; a method's training loop
asks ``progress_enabled()`` for its default, so ``steerbench run -q`` is quiet all the way down.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_ENABLED: ContextVar[bool] = ContextVar("steerbench_progress", default=True)


def progress_enabled() -> bool:
    return _ENABLED.get()


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)
