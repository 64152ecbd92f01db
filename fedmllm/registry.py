"""A registry maps names to entries and fails loudly.

Every axis that grows (models, tasks, metrics, tuning methods, strategies, partitioners) is a
`Registry`. A duplicate name raises; an unknown name raises a `UserError` that lists the valid
choices and suggests close matches (as lm-evaluation-harness does).
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from fedmllm.errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name → entry mapping for one kind of thing (e.g. ``"task"``)."""

    def __init__(self, kind: str, populate: Callable[[], None] | None = None):
        """``populate`` imports the modules whose entries register themselves; it runs once,
        the first time the registry is read, so importing a registry never imports every entry."""
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._populate = populate

    def _ensure(self) -> None:
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate()

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; raises ``ValueError`` if the name is taken."""
        if not name or not isinstance(name, str):
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"duplicate {self.kind} {name!r}: already registered")
        self._entries[name] = entry
        return entry

    def decorator(self, name: str) -> Callable[[T], T]:
        """``@REGISTRY.decorator("name")`` registers the decorated object."""

        def wrap(entry: T) -> T:
            return self.register(name, entry)

        return wrap

    def get(self, name: str) -> T:
        """The entry for ``name``; an unknown name raises a `UserError` naming the valid choices."""
        self._ensure()
        try:
            return self._entries[name]
        except KeyError:
            raise UserError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        self._ensure()
        close = difflib.get_close_matches(str(name), list(self._entries), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return f"unknown {self.kind} {name!r}.{hint} Valid choices: {', '.join(sorted(self._entries))}"

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._ensure()
        return len(self._entries)

    def items(self) -> list[tuple[str, T]]:
        self._ensure()
        return [(n, self._entries[n]) for n in sorted(self._entries)]


def import_modules(package: str) -> None:
    """Import every module of ``package`` once, in name order: each registers its entry (the
    one-file-per-entry registries: algorithms, attacks, collaboration paradigms)."""
    import importlib
    import pkgutil

    for info in sorted(pkgutil.iter_modules(importlib.import_module(package).__path__), key=lambda m: m.name):
        importlib.import_module(f"{package}.{info.name}")
