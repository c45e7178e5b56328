"""The errors of :mod:`geo_bench.datasets`.

Convention: every fault a user can fix is a ``ValueError`` (a malformed file) or a
``FileNotFoundError`` (a missing one) whose message is **one line** that names the file (and the
line or sample where known) and says what was expected; further lines, where present, are details
(the expected layout, the list of missing files). The command line reports such errors in one line
with exit status 2.

:class:`CacheError` (a ``ValueError``) covers the ``prepare`` cache (:mod:`geo_bench.datasets.cache`):
an entry that does not match the dataset, is incomplete, damaged or fails its checksums.

The errors raised while reading a sample (:class:`DatasetFormatError`, :class:`ImageDecodeError`)
are constructible from their message alone (``cls(message)``), as torch's ``DataLoader`` needs to
re-raise an error from a worker process.

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
from pathlib import Path

from geo_transforms.errors import MissingDependencyError  # the toolkit's one missing-dependency error

__all__ = [
    "CacheError",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "ImageDecodeError",
    "MissingDependencyError",
]


class DatasetFormatError(ValueError):
    """A dataset file exists but is malformed (a split file, ``ACT_data.mat``, an image).

    Args:
        message: one line naming the file (``path:line:`` where a line is known) and what was
            expected.
        path: the malformed file, if known.
        line: its 1-based line (or row) number, if known.

    Attributes:
        path: ``str`` or None.
        line: ``int`` or None.

    .. versionadded:: 0.1
    """

    def __init__(
        self, message: str, *, path: str | os.PathLike[str] | None = None, line: int | None = None
    ) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.line = line


class ImageDecodeError(DatasetFormatError, OSError):
    """An image file exists but cannot be decoded (garbage, truncated, unsupported).

    A :class:`DatasetFormatError`, and also an ``OSError``: the image reader documents ``OSError``
    for an undecodable file, so ``except OSError`` keeps working.

    .. versionadded:: 0.1
    """


class DatasetNotFoundError(FileNotFoundError):
    """A dataset (or part of it) is not where it was looked for.

    The message starts with ``"Dataset not found"``, names the path that was looked for and shows the
    expected on-disk layout.

    .. versionadded:: 0.1
    """

    def __init__(self, name: str, root: Path, missing: Path | str, layout: str, hint: str = "") -> None:
        msg = (
            f"Dataset not found: {name} expected {str(missing)!r} under root={str(root)!r}.\n"
            f"Expected layout:\n{layout.rstrip()}\n"
            f"{name} is licence-gated and cannot be downloaded automatically: request it from its "
            f"authors and point root= at the folder shown above."
        )
        if hint:
            msg += "\n" + hint
        super().__init__(msg)
        self.name = name
        self.root = root
        self.missing = str(missing)


class CacheError(ValueError):
    """A cache entry does not match the dataset, is incomplete or fails its checksums.

    .. versionadded:: 0.1
    """
