import re

import geo_synthesis


def test_version_is_single_sourced_semver():
    assert re.fullmatch(r"\d+\.\d+\.\d+", geo_synthesis.__version__)


def test_public_api_inventory():
    missing = [name for name in geo_synthesis.__all__ if not hasattr(geo_synthesis, name)]
    assert not missing, f"names in __all__ but not importable: {missing}"
