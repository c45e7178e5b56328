import re

import geo_retrieval


def test_version_is_single_sourced_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", geo_retrieval.__version__)


def test_public_api_inventory():
    missing = [name for name in geo_retrieval.__all__ if not hasattr(geo_retrieval, name)]
    assert not missing, f"names in __all__ but not importable: {missing}"
