"""The one way steering is applied: a context manager that attaches and always detaches.

Methods implement `Method.steered()` by returning `attached(...)`; whatever they attach (hooks at
hook points, prompt transforms, generation or log-likelihood overrides) is removed in
`finally`, also when the body raises, so no steering outlives its context.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from bench.subject import GenerateFn, Handle, HookFn, LogprobsFn, PromptTransform, Subject


@contextmanager
def attached(
    subject: Subject,
    *,
    hooks: Sequence[tuple[str, HookFn]] = (),
    prompt_transform: PromptTransform | None = None,
    generate: GenerateFn | None = None,
    logprobs: LogprobsFn | None = None,
) -> Iterator[None]:
    handles: list[Handle] = []
    try:
        for name, fn in hooks:
            handles.append(subject.add_hook(name, fn))
        if prompt_transform is not None:
            handles.append(subject.add_prompt_transform(prompt_transform))
        if generate is not None:
            handles.append(subject.override_generate(generate))
        if logprobs is not None:
            handles.append(subject.override_logprobs(logprobs))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()
