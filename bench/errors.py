"""Errors a user can cause, and warnings. The CLI prints each as one line; errors exit with 2."""

from __future__ import annotations

import difflib
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class UserError(Exception):
    """Bad input (config, names, missing data or weights). Shown as one line, exit code 2."""


class SteerbenchWarning(UserWarning):
    """Something the user should know that does not stop the run (a damaged cache file)."""


def warn(message: str) -> None:
    """Report `message` as a warning (shown as one line by `one_line_warnings`)."""
    warnings.warn(message, SteerbenchWarning, stacklevel=2)


@contextmanager
def one_line_warnings() -> Iterator[None]:
    """Show every Python warning (steerbench's, a method's, a library's) as one line on stderr,
    `steerbench: warning: <message>`, without Python's source line, which means nothing to a
    user (`key, lambda t=target: planned.method.fit(self.subject, t)`)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = " ".join(str(message).split())
        print(f"steerbench: warning: {text}", file=sys.stderr)

    with warnings.catch_warnings():  # restores showwarning afterwards
        warnings.showwarning = show
        yield


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidate, or '' when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
