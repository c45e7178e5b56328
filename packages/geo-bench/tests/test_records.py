"""ResultRecord: JSON round trip, validation, provenance helpers."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
import torch

from geo_bench.metrics import retrieval_recall
from geo_bench.records import (
    PROTOCOL_KEYS,
    Provenance,
    RecordValidationError,
    ResultRecord,
    collect_provenance,
    git_commit,
    hardware_info,
    package_versions,
    utc_now,
)

_PROTOCOL = {
    "polar": True,
    "fov": 360,
    "orientation_known": True,
    "top1pct_rule": "floor",
    "tie_rule": "optimistic",
    "cvact_test": None,
    "labels": None,
    "cvusa_split": "orig",
}


def _measured(**changes) -> ResultRecord:
    prov = Provenance(
        kind="measured",
        seed=0,
        commit="0123456789abcdef0123456789abcdef01234567",
        packages={"torch": "2.15.0"},
        hardware={"cpu": "test cpu", "cores": 2, "cuda": None},
        eval_seconds=1.5,
        time="2025-01-01T00:00:00+00:00",
    )
    fields = dict(
        recipe="safa",
        variant="small",
        dataset="world",
        split="test",
        protocol=dict(_PROTOCOL),
        n_query=100,
        n_reference=100,
        metrics={"R@1": 50.0, "R@5": 80.0, "R@10": 90.0, "R@1%": 60.0, "K_1pct": 1},
        provenance=prov,
    )
    fields.update(changes)
    return ResultRecord(**fields)


def _reported(**changes) -> ResultRecord:
    fields = dict(
        recipe="safa",
        variant="full",
        dataset="cvusa",
        split="val",
        protocol=dict(_PROTOCOL),
        n_query=8884,
        n_reference=8884,
        metrics={"R@1": 89.84, "R@5": 96.93, "R@10": 98.14, "R@1%": 99.64},
        provenance=Provenance(kind="reported", source="Shi et al., NeurIPS 2019, Table 1"),
    )
    fields.update(changes)
    return ResultRecord(**fields)


class TestResultRecord:
    @pytest.mark.parametrize("make", [_measured, _reported])
    def test_json_round_trip(self, make):
        rec = make()
        again = ResultRecord.from_json(rec.to_json())
        assert again == rec
        d = json.loads(rec.to_json())
        assert list(d) == [
            "recipe",
            "variant",
            "dataset",
            "split",
            "protocol",
            "n_query",
            "n_reference",
            "metrics",
            "provenance",
        ]
        assert set(d["provenance"]) == {
            "kind",
            "source",
            "seed",
            "commit",
            "packages",
            "hardware",
            "train_seconds",
            "eval_seconds",
            "time",
        }

    def test_save_load(self, tmp_path):
        rec = _measured()
        path = rec.save(tmp_path / "r.json")
        assert ResultRecord.load(path) == rec
        assert path.read_text().endswith("\n")

    def test_from_a_recall_result(self):
        g = torch.eye(300)
        res = retrieval_recall(g, g)
        proto = {**_PROTOCOL, **res.protocol_dict()}
        rec = _measured(
            metrics=res.as_dict(), protocol=proto, n_query=res.n_query, n_reference=res.n_reference
        )
        assert ResultRecord.from_json(rec.to_json()).metrics["K_1pct"] == 3

    def test_reported_may_omit_sizes_and_k(self):
        rec = _reported(n_query=None, n_reference=None)
        assert ResultRecord.from_json(rec.to_json()).n_query is None

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            ({"provenance": Provenance(kind="guessed")}, "kind must be one of"),
            ({"provenance": Provenance(kind="measured", commit="abc", hardware={"cpu": "x"})}, r"\['seed'\]"),
            ({"provenance": Provenance(kind="measured", seed=1, hardware={"cpu": "x"})}, r"\['commit'\]"),
            ({"provenance": Provenance(kind="measured", seed=1, commit="abc")}, r"\['hardware'\]"),
            (
                {"provenance": Provenance(kind="measured", seed=1.5, commit="abc", hardware="cpu")},
                "seed must be an int",
            ),
            ({"provenance": Provenance(kind="reported")}, "needs provenance.source"),
            ({"provenance": Provenance(kind="reported", source="  ")}, "needs provenance.source"),
            ({"provenance": Provenance(kind="reported", source="x", eval_seconds=-1)}, "eval_seconds"),
            ({"provenance": Provenance(kind="reported", source="x", time="yesterday")}, "ISO 8601"),
            ({"metrics": {"R@1": 50.0, "R@1%": 60.0}}, "K_1pct"),
            ({"metrics": {"R@1": float("nan")}}, "finite"),
            ({"metrics": {"R@1": 150.0}}, "percent"),
            ({"metrics": {}}, "non-empty"),
            ({"metrics": {"R@1": "high"}}, "number"),
            ({"n_query": None}, "n_query"),
            ({"n_reference": 0}, "n_reference"),
            ({"recipe": ""}, "recipe"),
            ({"protocol": {"polar": True}}, "protocol is missing"),
            ({"protocol": {**_PROTOCOL, "tie_rule": "random"}}, "tie_rule"),
            ({"protocol": {**_PROTOCOL, "top1pct_rule": "ceil"}}, "top1pct_rule"),
            ({"protocol": {**_PROTOCOL, "extra": object()}}, "JSON-serialisable"),
        ],
    )
    def test_validation_errors(self, changes, message):
        with pytest.raises(RecordValidationError, match=message):
            _measured(**changes)

    def test_from_json_rejects_bad_documents(self):
        good = json.loads(_measured().to_json())
        with pytest.raises(RecordValidationError, match="not valid JSON"):
            ResultRecord.from_json("{")
        with pytest.raises(RecordValidationError, match="missing"):
            ResultRecord.from_dict({k: v for k, v in good.items() if k != "metrics"})
        with pytest.raises(RecordValidationError, match="unexpected"):
            ResultRecord.from_dict({**good, "notes": "x"})
        with pytest.raises(RecordValidationError, match="provenance keys"):
            ResultRecord.from_dict({**good, "provenance": {**good["provenance"], "gpu": "x"}})
        with pytest.raises(RecordValidationError, match="kind"):
            ResultRecord.from_dict({**good, "provenance": {**good["provenance"], "kind": "estimated"}})

    def test_frozen(self):
        rec = _measured()
        with pytest.raises(dataclasses.FrozenInstanceError):
            rec.recipe = "other"  # type: ignore[misc]

    def test_protocol_keys_documented(self):
        assert set(PROTOCOL_KEYS) == {
            "polar",
            "fov",
            "orientation_known",
            "top1pct_rule",
            "tie_rule",
            "cvact_test",
            "labels",
        }


class TestProvenanceHelpers:
    def test_git_commit_in_this_checkout(self):
        commit = git_commit(Path(__file__))
        assert commit == "unknown" or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)

    def test_git_commit_outside_git(self, tmp_path):
        assert git_commit(tmp_path) == "unknown"

    def test_git_commit_dirty_flag(self, tmp_path):
        import shutil
        import subprocess

        if shutil.which("git") is None:
            pytest.skip("git not installed")
        env_args = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
        subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
        (tmp_path / "a.txt").write_text("1")
        subprocess.run(["git", *env_args, "-C", str(tmp_path), "add", "a.txt"], check=True)
        subprocess.run(["git", *env_args, "-C", str(tmp_path), "commit", "-qm", "x"], check=True)
        clean = git_commit(tmp_path)
        assert re.fullmatch(r"[0-9a-f]{40}", clean)
        (tmp_path / "untracked.txt").write_text("ignored for dirtiness")
        assert git_commit(tmp_path) == clean
        (tmp_path / "a.txt").write_text("2")
        assert git_commit(tmp_path) == clean + "+dirty"

    def test_package_versions(self):
        versions = package_versions(["torch", "geo-bench", "surely-not-installed-xyz"])
        assert versions["torch"] == torch.__version__.split("+")[0] or versions["torch"].startswith("2.")
        assert "geo-bench" in versions and "surely-not-installed-xyz" not in versions

    def test_hardware_info(self):
        info = hardware_info()
        assert info["cpu"] and info["cores"] >= 1
        assert ("cuda" in info) and (info["cuda"] is None or all(isinstance(n, str) for n in info["cuda"]))

    def test_utc_now(self):
        t = datetime.fromisoformat(utc_now())
        assert t.tzinfo is not None and t.utcoffset() == timezone.utc.utcoffset(None)

    def test_collect_provenance_makes_a_valid_measured_record(self):
        prov = collect_provenance(seed=3, eval_seconds=0.25)
        assert prov.kind == "measured" and prov.seed == 3 and prov.commit
        rec = _measured(provenance=prov)
        assert ResultRecord.from_json(rec.to_json()) == rec
