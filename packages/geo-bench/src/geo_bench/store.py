"""The results store: an append-only JSON-lines file of :class:`~geo_bench.records.ResultRecord`.

Convention:
    - One record per line, UTF-8, ``ResultRecord.to_json()`` (compact, no newlines inside).
    - **Appends are atomic**: the whole line (record + ``"\\n"``) is written with a single
      ``os.write`` on a descriptor opened with ``O_APPEND``, while holding an exclusive
      ``fcntl.flock`` on the file, so several processes appending at once never interleave or
      truncate each other's lines (POSIX; on platforms without ``fcntl`` only ``O_APPEND`` is used).
    - **Reading is tolerant**: a line that is not valid JSON or not a valid record (a crash of some
      other writer, a hand edit, a newer schema) is reported with a :class:`StoreWarning` naming the
      file and line number and skipped; the remaining records are returned.
    - A record's identity for "already done?" checks is :func:`run_key`: recipe, variant, dataset,
      split, the protocol's ``config`` hash (when present), seed and commit.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .records import RecordValidationError, ResultRecord

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["ResultStore", "StoreWarning", "run_key"]

log = logging.getLogger(__name__)


class StoreWarning(UserWarning):
    """A line of the results store could not be read and was skipped."""


def run_key(record: ResultRecord) -> tuple[Any, ...]:
    """What makes two measured records "the same run": (recipe, variant, dataset, split,
    protocol ``config`` hash, ``orientation_known``, ``fov``, seed, commit)."""
    p = record.protocol
    return (
        record.recipe,
        record.variant,
        record.dataset,
        record.split,
        p.get("config"),
        p.get("orientation_known"),
        p.get("fov"),
        record.provenance.seed,
        record.provenance.commit,
    )


class ResultStore:
    """An append-only JSON-lines results file (see the module Convention).

    Args:
        path: the ``.jsonl`` file; created (with its folder) on the first append.

    Example:
        >>> import tempfile, pathlib
        >>> from geo_bench.records import Provenance
        >>> store = ResultStore(pathlib.Path(tempfile.mkdtemp()) / "results.jsonl")
        >>> rec = ResultRecord("safa", "small", "world", "test",
        ...     {"polar": True, "fov": 360, "orientation_known": True, "top1pct_rule": "floor",
        ...      "tie_rule": "optimistic", "cvact_test": None, "labels": None},
        ...     10, 10, {"R@1": 50.0}, Provenance("reported", source="example"))
        >>> store.append(rec); len(store.records())
        1
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ResultStore({str(self.path)!r})"

    def append(self, record: ResultRecord) -> None:
        """Validate ``record`` and append it as one line, atomically (one locked ``O_APPEND`` write)."""
        if not isinstance(record, ResultRecord):
            raise TypeError(f"record must be a ResultRecord, got {type(record).__name__}")
        record.validate()
        line = record.to_json(separators=(",", ":")) + "\n"
        if "\n" in line[:-1]:  # pragma: no cover - json.dumps never emits raw newlines
            raise ValueError("a store line must not contain a newline")
        data = line.encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                written = os.write(fd, data)
                if written != len(data):  # pragma: no cover - regular files write in full
                    raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
                os.fsync(fd)
            finally:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _lines(self) -> Iterator[tuple[int, str]]:
        if not self.path.exists():
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if fcntl is not None:  # a shared lock: never read half of a line being written
                fcntl.flock(fd, fcntl.LOCK_SH)
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read()
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
        for number, raw in enumerate(data.split(b"\n"), start=1):
            if raw.strip():
                yield number, raw.decode("utf-8", errors="replace")

    def __iter__(self) -> Iterator[ResultRecord]:
        """Valid records in file order; bad lines warn (:class:`StoreWarning`) and are skipped."""
        for number, text in self._lines():
            try:
                record = ResultRecord.from_dict(json.loads(text))
            except (json.JSONDecodeError, RecordValidationError, TypeError, ValueError) as err:
                msg = f"{self.path}: line {number} is not a valid result record and was skipped ({err})"
                warnings.warn(msg, StoreWarning, stacklevel=2)
                log.warning("%s", msg)
                continue
            yield record

    def records(self, **match: Any) -> list[ResultRecord]:
        """All valid records, optionally only those whose attributes equal ``match`` (e.g.
        ``dataset="world"``); protocol flags can be matched as ``protocol__config="abc"``."""
        out = []
        for record in self:
            ok = True
            for key, value in match.items():
                if key.startswith("protocol__"):
                    got = record.protocol.get(key[len("protocol__"):])
                else:
                    got = getattr(record, key)
                if got != value:
                    ok = False
                    break
            if ok:
                out.append(record)
        return out

    def find(self, key: tuple[Any, ...]) -> ResultRecord | None:
        """The last measured record whose :func:`run_key` equals ``key``, or None."""
        found = None
        for record in self:
            if record.provenance.kind == "measured" and run_key(record) == key:
                found = record
        return found
