"""Whether long steps show progress bars, without threading a flag through every signature.

The runner (and the CLI's ``-q``) set it for the duration of a run; a method's training loop
asks ``progress_enabled()`` for its default, so ``steerbench run -q`` is quiet all the way down.
Quiet reaches the libraries too: transformers' bars (its "Loading weights" bar, the hub's
download bars) and its informational log lines are off while it lasts.
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
        with _library_bars(enabled):
            yield
    finally:
        _ENABLED.reset(token)


@contextmanager
def _library_bars(enabled: bool) -> Iterator[None]:
    """transformers' (and through it the hub's) bars off when quiet, as they were afterwards."""
    if enabled:
        yield
        return
    from transformers.utils import logging

    bars, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
    logging.disable_progress_bar()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
