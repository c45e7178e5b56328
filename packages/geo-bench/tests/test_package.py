import re

import geo_bench


def test_version_is_single_sourced_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", geo_bench.__version__)


def test_public_api_inventory():
    missing = [name for name in geo_bench.__all__ if not hasattr(geo_bench, name)]
    assert not missing, f"names in __all__ but not importable: {missing}"
