r"""The results store: an append-only JSON-lines file of :class:`~geo_bench.records.ResultRecord`.

Convention:
    - One record per line, UTF-8, ``ResultRecord.to_json()`` (compact, no newlines inside).
    - **Appends are atomic**: the whole line (record + ``"\n"``) is written with a single
      ``os.write`` on a descriptor opened with ``O_APPEND``, while holding an exclusive
      ``fcntl.flock`` on the file, so several processes appending at once never interleave or
      truncate each other's lines (POSIX; on platforms without ``fcntl`` only ``O_APPEND`` is used).
    - **Appends start on a fresh line**: a writer that crashed mid-line leaves a torn tail (the bytes
      after the last ``"\n"``). The next append, under the lock, sees that the file does not end with
      ``"\n"`` and writes ``"\n"`` before its record in the same single write, so the torn tail becomes a
      line of its own and is never glued to new data. Nothing is removed: the torn bytes stay in the
      file (readers skip them as a bad line). The append reports it once with a :class:`StoreWarning`
      (and the log) naming the file, the byte offset and the line number.
    - **Reading is tolerant**: a line that is not valid JSON or not a valid record (a crash of some
      other writer, a hand edit, a newer schema) is reported with a :class:`StoreWarning` naming the
      file and line number and skipped; the remaining records are returned. Each bad line is reported
      **once per process** (keyed by file, line number and a hash of its bytes), however often the
      store is read; a torn tail reported by an append is not reported again by the reads.
    - A record's identity for "already done?" checks is :func:`run_key`: recipe, variant, dataset,
      split, the protocol's ``config`` hash (when present), seed and commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
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
    """A line of the results store could not be read and was skipped (or a torn tail was found)."""


# (resolved path, line number, sha256 of the line's bytes) of every bad line already reported in this process
_REPORTED: set[tuple[str, int, str]] = set()
_REPORTED_LOCK = threading.Lock()
_SCAN_CHUNK = 2**20


def _first_report(path: Path, number: int, raw: bytes) -> bool:
    """Register a bad line; True the first time this process sees (file, line number, content)."""
    key = (str(path.resolve()), number, hashlib.sha256(raw).hexdigest())
    with _REPORTED_LOCK:
        if key in _REPORTED:
            return False
        _REPORTED.add(key)
        return True


def _report(msg: str, stacklevel: int) -> None:
    warnings.warn(msg, StoreWarning, stacklevel=stacklevel + 1)
    log.warning("%s", msg)


def _pread(fd: int, n: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # pragma: no cover - Windows; O_APPEND writes still go to the end
    return os.read(fd, n)  # pragma: no cover


def _is_record(raw: bytes) -> bool:
    try:
        ResultRecord.from_dict(json.loads(raw.decode("utf-8", errors="replace")))
    except (json.JSONDecodeError, RecordValidationError, TypeError, ValueError):
        return False
    return True


def _torn_tail(fd: int, size: int) -> tuple[int, int, bytes] | None:
    r"""``(byte offset, line number, bytes)`` of the tail after the last ``"\n"`` of an open file of
    ``size`` bytes, or None when the file is empty or ends with ``"\n"``. Reads at explicit offsets
    (``os.pread``); the whole file is scanned (in 1 MiB chunks) only when it is torn."""
    if size == 0 or _pread(fd, 1, size - 1) == b"\n":
        return None
    newlines, last = 0, -1
    for start in range(0, size, _SCAN_CHUNK):
        chunk = _pread(fd, min(_SCAN_CHUNK, size - start), start)
        newlines += chunk.count(b"\n")
        pos = chunk.rfind(b"\n")
        if pos >= 0:
            last = start + pos
    offset = last + 1
    return offset, newlines + 1, _pread(fd, size - offset, offset)


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
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                torn = _torn_tail(fd, os.fstat(fd).st_size)
                if torn is not None:  # a crashed writer's half line: end it, never glue the record to it
                    offset, number, raw = torn
                    data = b"\n" + data
                    if _is_record(raw):  # e.g. a hand edit dropped the final newline: nothing is torn
                        log.info(
                            "%s: line %d had no final newline; ended it before appending", self.path, number
                        )
                    elif _first_report(self.path, number, raw):
                        _report(
                            f"{self.path}: torn last line {number} ({len(raw)} bytes from byte {offset}, no "
                            "newline; a writer crashed mid-write?) was ended with a newline and is kept as "
                            "a bad line; the new record starts on the next line",
                            stacklevel=2,
                        )
                written = os.write(fd, data)
                if written != len(data):  # pragma: no cover - regular files write in full
                    raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes")
                os.fsync(fd)
            finally:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _lines(self) -> Iterator[tuple[int, bytes]]:
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
                yield number, raw

    def __iter__(self) -> Iterator[ResultRecord]:
        """Valid records in file order; bad lines are skipped and each is reported once per process
        (:class:`StoreWarning` and the log)."""
        for number, raw in self._lines():
            try:
                record = ResultRecord.from_dict(json.loads(raw.decode("utf-8", errors="replace")))
            except (json.JSONDecodeError, RecordValidationError, TypeError, ValueError) as err:
                if _first_report(self.path, number, raw):
                    _report(
                        f"{self.path}: line {number} is not a valid result record and was skipped ({err})",
                        stacklevel=2,
                    )
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
                    got = record.protocol.get(key[len("protocol__") :])
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
