"""``geo-bench reported`` and the packaged published numbers."""

import csv
import io
import json

import pytest

from geo_bench.cli import main
from geo_bench.leaderboard.reported import reported_records


class TestReportedData:
    def test_every_record_is_reported_with_source(self):
        recs = reported_records()
        assert len(recs) > 60
        assert all(r.provenance.kind == "reported" and r.provenance.source for r in recs)
        assert {r.dataset for r in recs} == {"cvusa", "cvact", "vigor"}

    def test_known_rows(self):
        cvusa = {
            (r.recipe, r.protocol["polar"]): r
            for r in reported_records("cvusa", "test")
            if r.protocol["orientation_known"]
        }
        safa = cvusa[("SAFA", True)]
        assert safa.metrics == {"R@1": 89.84, "R@5": 96.93, "R@10": 98.14, "R@1%": 99.64}
        assert safa.provenance.source == "[R] = [L]" and safa.protocol["unverified"] is False
        assert cvusa[("L2LTR (no polar)", False)].protocol["unverified"] is True
        smdt = cvusa[("SMDT", True)]
        assert smdt.protocol["synthesis"] is True and smdt.provenance.source == "[P]"
        # CVACT_test keeps the protocol where stated and the unverified flags
        test = {r.recipe: r for r in reported_records("cvact", "test") if not r.protocol.get("trained_on")}
        assert test["Sample4Geo"].protocol["cvact_test"] == "id_1to1_glob"
        assert test["OriCNN"].protocol["cvact_test"] == "utm_5m" and test["OriCNN"].protocol["unverified"]
        # limited FoV, orientation unknown (DSM table)
        fov = [r for r in reported_records("cvusa") if r.protocol["fov"] == 90.0]
        assert (
            len(fov) == 1 and fov[0].protocol["orientation_known"] is False and fov[0].metrics["R@1"] == 16.19
        )
        # VIGOR: the same-area source is verified, the cross-area one is not
        vig = {(r.recipe, r.split): r for r in reported_records("vigor")}
        assert vig[("Sample4Geo", "same_area")].metrics["R@1"] == 77.86
        assert not vig[("Sample4Geo", "same_area")].protocol["unverified"]
        assert vig[("Sample4Geo", "cross_area")].protocol["unverified"]

    def test_conflicting_cells_become_two_records(self):
        congeo = [r for r in reported_records("cvusa") if r.recipe == "ConGeo"]
        assert sorted(r.protocol["conflict"] for r in congeo) == ["first value", "second value"]
        assert {r.metrics["R@1"] for r in congeo} == {96.6, 98.3}

    def test_unknown_dataset(self):
        with pytest.raises(ValueError, match="available"):
            reported_records("kitti")


class TestReportedCli:
    def test_markdown(self, capsys):
        assert main(["reported", "--dataset", "cvact", "--split", "test", "--format", "markdown"]) == 0
        out = capsys.readouterr().out
        assert "Reported by papers" in out and "Measured here" in out and "(no measured results)" in out
        assert "unverified" in out and "CVACT_test utm_5m" in out and "CLGT" in out

    def test_csv_and_json(self, capsys):
        assert main(["reported", "--dataset", "vigor", "--format", "csv"]) == 0
        rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
        assert rows and all(r["section"] == "reported" and r["source"] for r in rows)
        assert main(["reported", "--format", "json", "--verified-only"]) == 0
        data = json.loads(capsys.readouterr().out)
        assert data["measured"]["rows"] == [] and data["reported"]["rows"]
        assert not any(r["unverified"] for r in data["reported"]["rows"])

    def test_rich_terminal(self, capsys):
        assert main(["reported", "--dataset", "cvusa"]) == 0
        out = capsys.readouterr().out
        assert "Sample4Geo" in out and "98.7" in out

    def test_bad_dataset_is_an_argparse_error(self, capsys):
        with pytest.raises(SystemExit) as exc:
            main(["reported", "--dataset", "kitti"])
        assert exc.value.code == 2


class TestReportedProtocols:
    """Issue 12: the top-1 % rule, the model-selection caveat and the CVACT_test protocol are on the records."""

    def test_top1pct_rule_where_the_source_states_it(self):
        by_name = {}
        for r in reported_records():
            by_name.setdefault(r.recipe, set()).add(r.protocol.get("top1pct_rule"))
        assert by_name["Toker et al."] == {"int_plus_one"}  # Toker's 99.57 is at K = 89 of 8,884
        for name in ("SAFA", "L2LTR (polar)", "SMDT", "GeoDTR", "TransGeo", "Sample4Geo"):
            assert by_name[name] == {"floor"}, name

    def test_selection_caveat(self):
        safa = [r for r in reported_records("cvusa") if r.recipe == "SAFA"]
        assert safa and all(r.protocol.get("selected_on_reported_split") for r in safa)
        transfer = [r for r in reported_records("cvact") if r.protocol.get("trained_on")]
        assert transfer and not any(r.protocol.get("selected_on_reported_split") for r in transfer)

    def test_every_cvact_test_row_names_its_protocol(self):
        rows = reported_records("cvact", "test")
        assert rows and all(r.protocol.get("cvact_test") for r in rows)
        transfer = [r for r in rows if r.protocol.get("trained_on") == "cvusa"]
        assert transfer and all(r.protocol["cvact_test"] for r in transfer)

    def test_printed(self):
        from geo_bench.leaderboard.table import to_markdown

        text = to_markdown((), reported_records("cvusa"), title=None)
        assert "K=int(N/100)+1" in text and "K=floor(N/100)" in text
        assert "checkpoint selected on the reported split" in text
        text = to_markdown((), reported_records("cvact", "test"), title=None)
        assert "CVACT_test protocol" in text and "CVACT_test id_1to1_glob" in text
