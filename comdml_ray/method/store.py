"""How payloads move between agents: the `Store` interface, its in-process form, and the `Shipped` handle.

Owns
- `Store`: put/get/prefetch.  In an actor it is Ray's object store (`actors.RayStore`);
  in tests `LocalStore`, a dict.  Weights, fragments and activations only ever move
  through it, as numpy arrays (zero-copy in Ray's store);
- `Shipped`: a payload that its owner put in the store, wrapped so that only the
  reference travels.  An actor method returns `Shipped(store.put(x))`, not `x`: Ray
  inlines small return values into the caller, so a returned 97 KB model would pass
  through the driver, while a Shipped one stays in the store of the owner's node
  until the actor that needs it fetches it.
No torch, no Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


class Store(Protocol):
    def put(self, obj: Any) -> Any: ...
    def get(self, refs: Any) -> Any: ...
    def prefetch(self, refs: list[Any]) -> None: ...


class LocalStore:
    """In-process stand-in for the object store, for tests of the plain classes."""

    def __init__(self) -> None:
        self._objs: dict[int, Any] = {}

    def put(self, obj: Any) -> int:
        key = len(self._objs)
        self._objs[key] = obj
        return key

    def get(self, refs: Any) -> Any:
        if isinstance(refs, list):
            return [self._objs[r] for r in refs]
        return self._objs[refs]

    def prefetch(self, refs: list[Any]) -> None:
        pass


@dataclass(frozen=True)
class Shipped:
    """A reference to an array in the store, with its size (for counting bytes without fetching it)."""

    ref: Any
    nbytes: int

    @staticmethod
    def of(store: Store, x: np.ndarray) -> Shipped:
        return Shipped(store.put(x), int(x.nbytes))

    def open(self, store: Store) -> np.ndarray:
        return store.get(self.ref)
