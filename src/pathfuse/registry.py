"""A name → object registry with a decorator, one instance per pluggable family.

Heads, fusers and embedding rules register themselves by name so that the config can pick
them with a string and an unknown name fails with the list of what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Named objects of one family (e.g. ``HEADS``), filled by ``@REGISTRY.register("name")``."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that stores the decorated object under ``name`` (names are unique)."""

        def decorate(obj: T) -> T:
            if name in self._items:
                raise KeyError(f"{self.family} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorate

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; unknown names list the known ones."""
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.family} {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)
