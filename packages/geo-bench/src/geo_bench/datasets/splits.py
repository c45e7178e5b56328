"""Helpers for reading the datasets' split files.

.. versionadded:: 0.1
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

__all__ = ["warn_repeats"]


def warn_repeats(path: Path, repeats: Sequence[tuple[int, int, str]], what: str = "row") -> None:
    """One ``UserWarning`` for the exact repeats dropped from the split file ``path``.

    Args:
        path: the split file.
        repeats: ``(line, first_line, text)`` of every dropped repeat, in file order (1-based lines).
        what: what a line holds (``"row"``, ``"tile name"``).
    """
    if not repeats:
        return
    line, first, text = repeats[0]
    n = len(repeats)
    warnings.warn(
        f"{path}: {n} duplicate {what}{'' if n == 1 else 's'} dropped, each kept once (first: line {line} "
        f"repeats line {first}: {text.strip()!r})",
        UserWarning,
        stacklevel=3,
    )
