"""Whether long steps show progress bars, without threading a flag through every signature.

The runner (and the CLI's ``-q``) set it for the duration of a run; a method's training loop
asks ``progress_enabled()`` for its default, so ``steerbench run -q`` is quiet all the way down.
Quiet reaches the libraries too: transformers' bars (its "Loading weights" bar, the hub's
download bars), datasets' bars, lm-eval's request-building bars and transformers'
informational log lines are off while it lasts.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
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


# Each library's switch for its bars, (is_enabled, disable, enable), imported when quiet asks.
Switch = tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]


def _transformers_bars() -> Switch:
    from transformers.utils import logging  # its "Loading weights" bar, and the hub's downloads

    return (
        logging.is_progress_bar_enabled,
        logging.disable_progress_bar,
        logging.enable_progress_bar,
    )


def _datasets_bars() -> Switch:
    import datasets

    return (
        datasets.is_progress_bar_enabled,
        datasets.disable_progress_bars,
        datasets.enable_progress_bars,
    )


def _lm_eval_bars() -> Switch:
    # lm-eval (0.4.13) builds each task's requests under a tqdm bar it has no switch for: quiet
    # gives that module a silent tqdm while it lasts.
    import lm_eval.api.task as task
    from tqdm import tqdm

    silent = functools.partial(tqdm, disable=True)
    return (
        lambda: task.tqdm is not silent,
        lambda: setattr(task, "tqdm", silent),
        lambda: setattr(task, "tqdm", tqdm),
    )


LIBRARY_BARS: tuple[Callable[[], Switch], ...] = (_transformers_bars, _datasets_bars, _lm_eval_bars)


@contextmanager
def _library_bars(enabled: bool) -> Iterator[None]:
    """The libraries' bars (and transformers' info lines) off when quiet, restored afterwards."""
    if enabled:
        yield
        return
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    switched = []
    for switch in LIBRARY_BARS:
        is_enabled, disable, enable = switch()
        if is_enabled():
            disable()
            switched.append(enable)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        for enable in switched:
            enable()
