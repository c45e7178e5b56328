"""The toolkit's one string-keyed registry type (presets here; backbones, heads, losses, recipes and
recipe builders in geo-retrieval and geo-synthesis).

Convention:
    one :class:`Registry` per kind of thing, with timm's shape: ``register`` (also a decorator),
    ``names(filter)`` (sorted, an fnmatch ``filter``) and ``get`` (the ``create_*`` factories of
    each package call it and forward their ``**kwargs``). One duplicate policy everywhere:
    registering a name that is already registered raises ``ValueError`` unless ``overwrite=True``
    (then the new entry replaces the old one). An unknown name raises ``ValueError`` naming the
    kind and listing the registered names. With ``patterns=True`` a registered name may be an
    fnmatch pattern (``"convnext_*"``): an exact name wins, then the first matching pattern in
    registration order.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

__all__ = ["Registry"]

T = TypeVar("T")

_WILDCARDS = "*?["


class Registry(Generic[T]):
    """A string-keyed registry of ``T`` (classes, builder functions, frozen configs).

    Args:
        kind: what the entries are, for error messages (``"head"``, ``"polar preset"``).
        patterns: allow fnmatch patterns as names (see the module Convention).

    Example:
        >>> heads = Registry[type]("head")
        >>> @heads.register("identity")
        ... class Identity: ...
        >>> heads.names(), heads.get("identity").__name__
        (['identity'], 'Identity')
        >>> heads.register("identity", Identity)
        Traceback (most recent call last):
        ...
        ValueError: head 'identity' is already registered; pass overwrite=True to replace it
        >>> heads.get("gem")
        Traceback (most recent call last):
        ...
        ValueError: unknown head 'gem'; available: ['identity']
    """

    def __init__(self, kind: str, *, patterns: bool = False) -> None:
        if not isinstance(kind, str) or not kind:
            raise TypeError(f"kind must be a non-empty str, got {kind!r}")
        self.kind = kind
        self.patterns = bool(patterns)
        self._entries: dict[str, T] = {}

    @overload
    def register(self, name: str, obj: None = None, *, overwrite: bool = False) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, overwrite: bool = False) -> T: ...

    def register(self, name: str, obj: T | None = None, *, overwrite: bool = False) -> T | Callable[[T], T]:
        """Register ``obj`` under ``name`` and return it; without ``obj``, a decorator that does.

        Args:
            name: the key (an fnmatch pattern only when the registry allows ``patterns``).
            obj: the entry; ``None`` returns a decorator.
            overwrite: replace an existing entry of that name instead of raising.

        Raises:
            TypeError: ``name`` is not a non-empty str.
            ValueError: ``name`` is already registered and ``overwrite`` is False, or ``name`` is a
                pattern in a registry without patterns.
        """
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.kind} name must be a non-empty str, got {name!r}")
        if not self.patterns and any(ch in name for ch in _WILDCARDS):
            raise ValueError(f"{self.kind} name {name!r} must not contain any of {_WILDCARDS!r}")

        def add(entry: T) -> T:
            if name in self._entries and not overwrite:
                raise ValueError(
                    f"{self.kind} {name!r} is already registered; pass overwrite=True to replace it"
                )
            self._entries[name] = entry
            return entry

        if obj is None:
            return add
        return add(obj)

    def unregister(self, name: str) -> T:
        """Remove ``name`` and return its entry (tests and plugins undoing a registration)."""
        if name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return self._entries.pop(name)

    def names(self, filter: str | None = None) -> list[str]:
        """Registered names (patterns included), sorted; only those matching the fnmatch ``filter``."""
        names = sorted(self._entries)
        if filter is None:
            return names
        return [n for n in names if fnmatch.fnmatchcase(n, filter)]

    def find(self, name: str) -> T | None:
        """The entry for ``name`` (exact, then the first matching pattern), or None."""
        if name in self._entries:
            return self._entries[name]
        if self.patterns:
            for pattern, entry in self._entries.items():
                if any(ch in pattern for ch in _WILDCARDS) and fnmatch.fnmatchcase(name, pattern):
                    return entry
        return None

    def get(self, name: str) -> T:
        """The entry for ``name``; ``ValueError`` listing the registered names when there is none."""
        if not isinstance(name, str):
            raise TypeError(f"{self.kind} name must be a str, got {type(name).__name__}")
        entry = self.find(name)
        if entry is None:
            raise ValueError(f"unknown {self.kind} {name!r}; available: {self.names()}")
        return entry

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs in registration order."""
        return list(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"
