"""One generic registry for methods, tasks and model sources.

Built-ins come from explicit imports (`methods.BUILTIN_METHODS`, `tasks.BUILTIN_TASKS`,
`tasks.testbed.source.BUILTIN_MODEL_SOURCES`); third-party plugins from the
`steerbench.methods` / `steerbench.tasks` / `steerbench.model_sources` entry point groups.
This module and the command line are the only places the core reaches those packages.
No directory scanning, no getattr on packages. Unknown names fail with "did you mean".
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

from bench.errors import UserError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, group: str, builtins: Callable[[], Iterable[T]]) -> None:
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._items: dict[str, T] | None = None

    def register(self, item: T) -> T:
        items = self._loaded()
        name = item.name  # type: ignore[attr-defined]
        if name in items and items[name] is not item:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        items[name] = item
        return item

    def unregister(self, name: str) -> None:
        self._loaded().pop(name, None)

    @contextmanager
    def registered(self, item: T) -> Iterator[T]:
        """Register `item` for the duration of the context (tests, notebooks)."""
        self.register(item)
        try:
            yield item
        finally:
            self.unregister(item.name)  # type: ignore[attr-defined]

    def get(self, name: str) -> T:
        items = self._loaded()
        if name not in items:
            raise UserError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, items)}; known: {', '.join(sorted(items))}"
            )
        return items[name]

    def find(self, name: str) -> T | None:
        """The item registered as `name`, or None (for names that may mean something else)."""
        return self._loaded().get(name)

    def names(self) -> list[str]:
        return sorted(self._loaded())

    def _loaded(self) -> dict[str, T]:
        if self._items is None:
            # Built into a local dict first: an import that fails leaves nothing half-loaded.
            items: dict[str, T] = {}
            for item in self._builtins():
                items[item.name] = item  # type: ignore[attr-defined]
            for entry in importlib.metadata.entry_points(group=self.group):
                item = entry.load()
                items.setdefault(item.name, item)
            self._items = items
        return self._items


def _builtin_methods():
    from methods import BUILTIN_METHODS

    return BUILTIN_METHODS


def _builtin_tasks():
    from tasks import BUILTIN_TASKS

    return BUILTIN_TASKS


def _builtin_model_sources():
    from tasks.testbed.source import BUILTIN_MODEL_SOURCES

    return BUILTIN_MODEL_SOURCES


METHODS: Registry = Registry("method", "steerbench.methods", _builtin_methods)
TASKS: Registry = Registry("task", "steerbench.tasks", _builtin_tasks)
MODEL_SOURCES: Registry = Registry(
    "model source", "steerbench.model_sources", _builtin_model_sources
)
