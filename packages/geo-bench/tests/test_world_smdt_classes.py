"""The synthetic world's label classes are the ones geo-synthesis's SMDT class grouping expects.

Lives in geo-bench (whose test extra installs geo-synthesis), because geo-synthesis must not import
geo-bench.
"""

from geo_bench.world.city import CLASSES
from geo_synthesis.smdt import WORLD_CLASSES


def test_world_classes_match_smdt_grouping():
    assert tuple(CLASSES) == WORLD_CLASSES
