"""The shared pytest plugin's ``one_thread`` marker, run through pytester in this process."""

import torch


def test_one_thread_marker_sets_and_restores(pytester):
    pytester.makeconftest('pytest_plugins = ["geo_transforms.testing.plugin"]')
    pytester.makepyfile(
        test_a_marked="""
        import pytest
        import torch

        pytestmark = pytest.mark.one_thread

        @pytest.fixture(scope="module")
        def threads_at_module_setup():
            return torch.get_num_threads()

        def test_one(threads_at_module_setup):
            assert threads_at_module_setup == 1 and torch.get_num_threads() == 1
        """,
        test_b_unmarked="""
        import torch

        def test_restored():
            assert torch.get_num_threads() == 3
        """,
    )
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    finally:
        torch.set_num_threads(before)
    result.assert_outcomes(passed=2)
