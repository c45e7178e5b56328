"""``python -m geo_bench``: the ``geo-bench`` command line."""

from .cli import main

raise SystemExit(main())
