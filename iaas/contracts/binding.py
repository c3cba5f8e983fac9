"""Late binding of a context's contract to its implementation, done at start-up in the
context's ``AppConfig.ready()``, so callers depend on the contract only."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class ContractNotBound(RuntimeError):
    pass


class Slot(Generic[T]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._implementation: T | None = None

    def bind(self, implementation: T) -> None:
        self._implementation = implementation

    def get(self) -> T:
        if self._implementation is None:
            raise ContractNotBound(f"No implementation bound for the {self.name} contract")
        return self._implementation
