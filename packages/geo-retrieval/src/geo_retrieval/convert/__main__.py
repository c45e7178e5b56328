"""``python -m geo_retrieval.convert``: see :mod:`geo_retrieval.convert.cli`."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
