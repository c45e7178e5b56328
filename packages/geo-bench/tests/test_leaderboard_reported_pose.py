"""The published fine-grained pose numbers on VIGOR (``leaderboard/data/reported_pose.json``)."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from geo_bench.leaderboard.reported import REPORTED_FORMAT, reported_pose_records, reported_records
from geo_bench.metrics import pose_metrics

METHODS = {"CCVPE", "HC-Net", "FG²"}
POSE_KEYS = set(pose_metrics([[0.0, 1.0]], [[0.0, 0.0]], [0.0], [0.0]).as_dict())


def test_file_format_and_every_record_loads() -> None:
    text = resources.files("geo_bench.leaderboard").joinpath("data", "reported_pose.json").read_text("utf-8")
    data = json.loads(text)
    assert data["format"] == REPORTED_FORMAT
    recs = reported_pose_records()
    assert len(recs) == len(data["records"]) == 6


def test_records_are_reported_with_sources_and_protocol() -> None:
    for r in reported_pose_records():
        assert r.provenance.kind == "reported" and r.variant == "reported"
        assert r.provenance.source and r.dataset == "vigor"
        p = r.protocol
        assert p["task"] == "pose" and r.split == f"{p['area']}_area"
        assert p["labels"] in ("orig", "slicematch_corrected", "hcnet_mercator_gps")
        assert p["orientation_known"] in (True, False, None) and p["venue"]
        assert isinstance(p["unverified"], bool)
        if p["unverified"]:  # the source says why it could not be confirmed
            assert "unverified" in r.provenance.source
        assert set(r.metrics) <= POSE_KEYS and "mean_m" in r.metrics
        assert all(v is None or v > 0 for v in r.metrics.values())


@pytest.mark.parametrize("split", ["same_area", "cross_area"])
def test_three_methods_per_split(split: str) -> None:
    recs = reported_pose_records("vigor", split)
    assert {r.recipe for r in recs} == METHODS and len(recs) == 3


def test_ccvpe_numbers() -> None:
    ccvpe = {r.split: r for r in reported_pose_records("vigor") if r.recipe == "CCVPE"}
    assert ccvpe["same_area"].metrics["mean_m"] == 3.60 and ccvpe["cross_area"].metrics["mean_m"] == 4.97
    assert all(r.protocol["orientation_known"] is True for r in ccvpe.values())
    assert all(r.protocol["labels"] == "slicematch_corrected" for r in ccvpe.values())


def test_unknown_dataset_and_separation_from_retrieval_numbers() -> None:
    with pytest.raises(ValueError, match="available: \\['vigor'\\]"):
        reported_pose_records("cvusa")
    assert all("mean_m" not in r.metrics for r in reported_records("vigor"))
