"""Leaderboard tables and plots from hand-made records: provenance columns, the separate reported
section, the file formats."""

import csv
import io
import json

import pytest

from geo_bench.leaderboard.plots import (
    area_summary,
    plot_area_bars,
    plot_bars,
    plot_recall_curves,
    write_plots,
)
from geo_bench.leaderboard.reported import reported_records
from geo_bench.leaderboard.table import (
    measured_rows,
    reported_rows,
    to_csv,
    to_json,
    to_markdown,
    write_outputs,
)
from geo_bench.records import PROTOCOL_KEYS, Provenance, ResultRecord


def _measured(recipe: str, r1: float, known: bool = True) -> ResultRecord:
    proto = {k: None for k in PROTOCOL_KEYS} | {
        "polar": {"preset": "safa", "center": "safa", "size": [32, 128]},
        "fov": 360.0,
        "orientation_known": known,
        "top1pct_rule": "floor",
        "tie_rule": "optimistic",
        "backbone": "timm:resnet10t",
        "synthesis": False,
        "world": {"n_train": 100, "n_test": 50, "seed": 3, "holdout": 0.1},
    }
    metrics = {f"R@{k}": min(100.0, r1 + 3 * k) for k in range(1, 21)} | {
        "R@1%": r1,
        "K_1pct": 1,
        "train_pairs_per_s": 55.0,
    }
    prov = Provenance(
        "measured",
        seed=7,
        commit="0123456789abcdef+dirty",
        hardware={"cpu": "TestCPU", "cores": 2},
        train_seconds=12.5,
        eval_seconds=0.5,
    )
    return ResultRecord(recipe, "small", "synthetic", "test", proto, 50, 50, metrics, prov)


@pytest.fixture
def measured():
    return [_measured("safa", 40.0), _measured("dsm", 60.0), _measured("dsm", 50.0, known=False)]


class TestRows:
    def test_measured_rows_carry_provenance(self, measured):
        rows = measured_rows(measured)
        assert [(r["method"], r["orientation_known"]) for r in rows] == [
            ("dsm", True),
            ("safa", True),
            ("dsm", False),
        ]
        for r in rows:
            assert (
                r["seed"] == 7
                and r["commit"].startswith("0123456789")
                and r["hardware"].startswith("TestCPU")
            )
            assert r["data"] == "synthetic world seed 3: 90 train / 10 held-out / 50 test"
            assert r["polar"] == "yes 32x128" and r["backbone"] == "timm:resnet10t" and r["train_s"] == 12.5

    def test_reported_rows_carry_source(self):
        rows = reported_rows(reported_records("cvusa"))
        assert rows and all(r["source"] for r in rows)
        assert measured_rows(reported_records("cvusa")) == []  # never mixed

    def test_measured_are_not_reported(self, measured):
        assert reported_rows(measured) == []

    def test_compute_columns(self, measured):
        """Training time, optimiser steps and pairs seen in every format; pairs seen derived from the
        throughput for records older than the metric; a time budget named in the protocol."""
        measured[0].metrics.update({"train_steps": 40.0, "pairs_seen": 640.0})
        measured[0].protocol["time_budget_s"] = 30.0
        rows = {(r["method"], r["orientation_known"]): r for r in measured_rows(measured)}
        safa, dsm = rows[("safa", True)], rows[("dsm", True)]
        assert (safa["train_steps"], safa["pairs_seen"], safa["time_budget_s"]) == (40.0, 640.0, 30.0)
        assert safa["protocol"] == "orientation known, time budget 30 s"
        assert dsm["train_steps"] is None and dsm["pairs_seen"] == round(55.0 * 12.5)  # older record
        md = to_markdown(measured)
        assert "| train s | steps | pairs seen | eval s |" in md
        assert "| 12 | 40 | 640 | 0.5 |" in md and "| 12 | – | 688 | 0.5 |" in md
        csv_rows = list(csv.DictReader(io.StringIO(to_csv(measured))))
        assert {(r["method"], r["train_steps"], r["pairs_seen"]) for r in csv_rows} >= {
            ("safa", "40.0", "640.0")
        }
        json_rows = json.loads(to_json(measured))["measured"]["rows"]
        assert any(
            r["pairs_seen"] == 640.0 and r["train_steps"] == 40.0 and r["train_s"] == 12.5 for r in json_rows
        )


class TestRender:
    def test_markdown_sections(self, measured):
        md = to_markdown(measured, reported_records("cvusa"))
        head, sep, tail = md.partition("### Reported by papers")
        assert sep and "### Measured here" in head
        assert "| safa |" in head and "| safa |" not in tail and "| SAFA |" in tail and "| SAFA |" not in head
        assert "commit `0123456789+dirty`" in head and "seed 7" in head and "TestCPU" in head
        assert "[R] = [L]" in tail and "unverified" in tail
        assert "40.0 (K=1)" in head

    def test_csv_and_json(self, measured, tmp_path):
        reported = reported_records("vigor")
        rows = list(csv.DictReader(io.StringIO(to_csv(measured, reported))))
        assert [r["section"] for r in rows] == ["measured"] * 3 + ["reported"] * len(reported)
        assert rows[0]["commit"] and rows[-1]["source"]
        data = json.loads(to_json(measured, reported))
        assert (
            len(data["measured"]["records"]) == 3
            and data["reported"]["records"][0]["provenance"]["kind"] == "reported"
        )
        paths = write_outputs(measured, reported, tmp_path)
        assert sorted(p.name for p in paths.values()) == [
            "leaderboard.csv",
            "leaderboard.json",
            "leaderboard.md",
        ]
        assert all(p.stat().st_size > 100 for p in paths.values())

    def test_rich_prints_both_tables(self, measured):
        from rich.console import Console

        from geo_bench.leaderboard.table import render_rich

        console = Console(record=True, width=250)
        render_rich(measured, reported_records("cvact", "test"), console=console)
        text = console.export_text()
        assert "measured here" in text and "Reported by papers" in text
        assert text.index("measured here") < text.index("Reported by papers")


class TestPlots:
    def test_pngs(self, measured, tmp_path):
        for fn, name in ((plot_recall_curves, "curves.png"), (plot_bars, "bars.png")):
            path = fn(measured, tmp_path / name)
            blob = path.read_bytes()
            assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000


def _area(recipe: str, r1: float, area: str, world_seed: int, **proto) -> ResultRecord:
    r = _measured(recipe, r1)
    protocol = r.protocol | {"area": area, "world_seed": world_seed} | proto
    metrics = r.metrics | {"R@1": r1}
    return ResultRecord(r.recipe, r.variant, r.dataset, r.split, protocol, 50, 50, metrics, r.provenance)


class TestAreaBars:
    @pytest.fixture
    def records(self):
        return [
            _area("safa", 40.0, "same", 0),
            _area("safa", 30.0, "same", 1),
            _area("safa", 20.0, "cross", 0),
            _area("safa", 10.0, "cross", 1),
            _area("dsm", 50.0, "same", 0),
            _area("dsm", 5.0, "cross", 0),
            _area("dsm", 99.0, "same", 0, orientation_known=False),  # another protocol: left out
            _area("dsm", 98.0, "same", 0, fov=90.0),  # limited FoV: left out
        ]

    def test_summary_is_mean_and_sample_std_per_area(self, records):
        summary = area_summary(records)
        assert set(summary) == {"safa (small)", "dsm (small)"}
        mean, sd, n = summary["safa (small)"]["same"]
        assert (mean, n) == (35.0, 2) and sd == pytest.approx(7.0710678, rel=1e-6)
        assert summary["safa (small)"]["cross"][:2] == (15.0, pytest.approx(7.0710678, rel=1e-6))
        assert summary["dsm (small)"] == {"same": (50.0, 0.0, 1), "cross": (5.0, 0.0, 1)}

    def test_png_and_written_only_with_a_cross_area(self, records, tmp_path):
        blob = plot_area_bars(records, tmp_path / "areas.png").read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 5000
        assert "area_chart" in write_plots(records, tmp_path / "a")
        same_only = [r for r in records if r.protocol["area"] == "same"]
        assert "area_chart" not in write_plots(same_only, tmp_path / "b")


class TestTieFlag:
    """Rows whose R@1 with ties for the query and against it differ by more than a point are flagged."""

    @staticmethod
    def _tied(recipe: str, r1: float, r1_pessimistic: float, tie_share: float) -> ResultRecord:
        r = _measured(recipe, r1)
        return ResultRecord(
            r.recipe,
            r.variant,
            r.dataset,
            r.split,
            r.protocol,
            r.n_query,
            r.n_reference,
            {**r.metrics, "R@1": r1, "R@1_pessimistic": r1_pessimistic, "tie_share": tie_share},
            r.provenance,
        )

    @pytest.fixture
    def records(self):
        return [
            self._tied("collapsed", 100.0, 5.0, 100.0),
            self._tied("dupes", 40.0, 39.5, 0.6),
            _measured("old", 30.0),
        ]

    def test_rows(self, records):
        rows = {r["method"]: r for r in measured_rows(records)}
        assert rows["collapsed"]["ties_flag"] and rows["collapsed"]["R@1_pessimistic"] == 5.0
        assert rows["collapsed"]["tie_share"] == 100.0
        assert not rows["dupes"]["ties_flag"]  # 0.5 points: within the tolerance
        assert (
            not rows["old"]["ties_flag"] and rows["old"]["R@1_pessimistic"] is None
        )  # records without the stats

    def test_markdown_marker_and_footnote(self, records):
        md = to_markdown(records)
        assert "| 100.0 † |" in md and "| 40.0 |" in md
        assert md.count("†") == 2  # the collapsed row's cell and its footnote only
        foot = [line for line in md.splitlines() if line.startswith("†")]
        assert len(foot) == 1 and "collapsed" in foot[0] and "5.0" in foot[0] and "100.0 %" in foot[0]
        assert "dupes" not in foot[0]

    def test_csv_and_json(self, records):
        rows = {r["method"]: r for r in csv.DictReader(io.StringIO(to_csv(records)))}
        assert rows["collapsed"]["ties_flag"] == "True" and rows["dupes"]["ties_flag"] == "False"
        assert float(rows["collapsed"]["R@1_pessimistic"]) == 5.0 and float(rows["dupes"]["tie_share"]) == 0.6
        data = {r["method"]: r for r in json.loads(to_json(records))["measured"]["rows"]}
        assert data["collapsed"]["ties_flag"] is True and data["old"]["ties_flag"] is False

    def test_rich(self, records):
        from rich.console import Console

        from geo_bench.leaderboard.table import render_rich

        console = Console(record=True, width=250)
        render_rich(records, console=console)
        text = console.export_text()
        assert "100.0 †" in text and "40.0 †" not in text
        assert any(line.startswith("†") and "collapsed" in line for line in text.splitlines())
