"""Faults of the results store and of the leaderboard's "already in the store?" check.

- A torn last line (a writer crashed mid-line, the file ends without a newline) must not swallow the
  next appended record: an append always starts on a fresh line and reports the torn tail once.
- A bad store line is reported once per process, not on every read.
- A recipe counts as done only when every record its protocols produce is readable.
"""

import logging
import warnings

import pytest

from geo_bench.baselines import BASELINE_NAME
from geo_bench.leaderboard.config import TINY
from geo_bench.leaderboard.evaluation import expected_protocols
from geo_bench.leaderboard.recording import _done
from geo_bench.leaderboard.runner import run_leaderboard
from geo_bench.records import PROTOCOL_KEYS, Provenance, ResultRecord
from geo_bench.store import ResultStore, StoreWarning

PROTO = {
    "polar": True,
    "fov": 360.0,
    "orientation_known": True,
    "top1pct_rule": "floor",
    "tie_rule": "optimistic",
    "cvact_test": None,
    "labels": None,
}


def _record(i: int, *, commit: str = "abc") -> ResultRecord:
    prov = Provenance("measured", seed=i % 7, commit=commit, hardware={"cpu": "x", "cores": 2})
    return ResultRecord(
        f"recipe{i}",
        "small",
        "synthetic",
        "test",
        {**PROTO, "config": f"c{i}"},
        10,
        10,
        {"R@1": float(i % 100), "R@1%": 1.0, "K_1pct": 1},
        prov,
    )


def _store_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, StoreWarning)]


class TestTornLastLine:
    def test_append_after_a_torn_line_keeps_the_new_records(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        store.append(_record(1))
        offset = store.path.stat().st_size
        full = _record(2).to_json(separators=(",", ":")).encode()
        torn = full[: len(full) // 2]  # the crash: half a record, no newline
        with open(store.path, "ab") as fh:
            fh.write(torn)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            store.append(_record(3))
            store.append(_record(4))
            recs = store.records()
            store.records()
        assert [r.recipe for r in recs] == ["recipe1", "recipe3", "recipe4"]
        messages = _store_warnings(caught)
        assert len(messages) == 1, messages  # reported once: at the append that found it, not again on reads
        assert str(store.path) in messages[0] and f"byte {offset}" in messages[0]
        # nothing is lost: the torn bytes stay in the file, on a line of their own
        assert store.path.read_bytes().split(b"\n")[1] == torn

    def test_a_file_that_is_only_a_torn_line(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        store.path.write_bytes(b'{"recipe": "tor')
        with pytest.warns(StoreWarning, match="byte 0"):
            store.append(_record(5))
        assert [r.recipe for r in store.records()] == ["recipe5"]

    def test_a_complete_record_without_its_newline_is_kept(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        store.path.write_text(_record(1).to_json())  # e.g. an editor dropped the final newline
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)  # nothing is torn: no warning
            store.append(_record(2))
            assert [r.recipe for r in store.records()] == ["recipe1", "recipe2"]

    def test_clean_file_appends_without_warning(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)
            for i in range(3):
                store.append(_record(i))
            assert len(store.records()) == 3
        assert store.path.read_bytes().count(b"\n") == 3 and not store.path.read_bytes().startswith(b"\n")


class TestBadLinesReportedOnce:
    def test_each_bad_line_warns_once_across_reads(self, tmp_path, caplog):
        store = ResultStore(tmp_path / "r.jsonl")
        store.append(_record(1))
        with open(store.path, "a") as fh:
            fh.write('{"recipe": "half a line", "variant\n')  # line 2
            fh.write('{"recipe": "x"}\n')  # line 3
        store.append(_record(2))
        caplog.set_level(logging.WARNING, logger="geo_bench.store")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(3):
                assert [r.recipe for r in store.records()] == ["recipe1", "recipe2"]
            store.find(("recipe1",))
            assert len(ResultStore(store.path).records()) == 2  # another handle on the same file: still once
        messages = _store_warnings(caught)
        assert len(messages) == 2, messages
        assert any("line 2" in m for m in messages) and any("line 3" in m for m in messages)
        assert sum("not a valid result record" in r.getMessage() for r in caplog.records) == 2
        # a new bad line is still reported
        with open(store.path, "a") as fh:
            fh.write("not json\n")
        with pytest.warns(StoreWarning, match="line 5"):
            store.records()


def _synthetic_record(
    known: bool,
    *,
    recipe: str = "safa",
    seed: int = 0,
    commit: str = "abc",
    config: str = "c0",
    area: str = "same",
) -> ResultRecord:
    proto = {k: None for k in PROTOCOL_KEYS} | {
        "fov": 360.0,
        "orientation_known": known,
        "config": config,
        "top1pct_rule": "floor",
        "tie_rule": "optimistic",
        "area": area,
    }
    prov = Provenance("measured", seed=seed, commit=commit, hardware={"cpu": "x", "cores": 2})
    return ResultRecord(
        recipe,
        "small",
        "synthetic",
        "test",
        proto,
        20,
        20,
        {"R@1": 10.0 if known else 5.0, "R@1%": 5.0, "K_1pct": 1},
        prov,
    )


class TestDoneNeedsEveryProtocol:
    def test_expected_protocols(self):
        assert expected_protocols("synthetic", "test") == [
            {"orientation_known": True, "area": "same"},
            {"orientation_known": False, "area": "same"},
            {"orientation_known": True, "area": "cross"},
            {"orientation_known": False, "area": "cross"},
        ]
        for dataset, split in (("cvusa", "test"), ("cvact", "val"), ("vigor", "test")):
            assert expected_protocols(dataset, split) == [{"orientation_known": True}]
        assert expected_protocols("cvact", "test") == [{"orientation_known": True, "cvact_test": "utm_5m"}]
        with pytest.raises(ValueError, match="dataset"):
            expected_protocols("kitti", "test")

    def test_one_of_two_records_is_not_done(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        store.append(_synthetic_record(True))
        for known in (True, False):
            store.append(_synthetic_record(known, area="cross"))
        store.append(_synthetic_record(False, seed=1))  # another seed does not complete it
        store.append(_synthetic_record(False, commit="other"))  # nor another commit
        store.append(_synthetic_record(False, area=None))  # nor a record without the area
        found, missing = _done(store, "safa", "small", TINY, "c0", "abc")
        assert missing == [{"orientation_known": False, "area": "same"}]
        assert [(r.protocol["orientation_known"], r.protocol["area"]) for r in found] == [
            (True, "same"),
            (True, "cross"),
            (False, "cross"),
        ]
        store.append(_synthetic_record(False))
        found, missing = _done(store, "safa", "small", TINY, "c0", "abc")
        assert missing == [] and [r.protocol["orientation_known"] for r in found] == [
            True,
            False,
            True,
            False,
        ]

    def test_a_rerun_protocol_counts_once(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        for known in (True, False, True):
            store.append(_synthetic_record(known))
            store.append(_synthetic_record(known, area="cross"))
        found, missing = _done(store, "safa", "small", TINY, "c0", "abc")
        assert missing == [] and len(found) == 4  # one row per protocol in the table, the last one appended

    def test_run_leaderboard_reruns_a_partial_baseline(self, tmp_path):
        store = ResultStore(tmp_path / "results.jsonl")
        events: list[str] = []
        first = run_leaderboard(TINY, tmp_path, recipes=[], store=store, on_event=events.append)
        assert len(first) == 4 and len(store.records()) == 4
        # lose the last record (e.g. a crash between two appends)
        lines = store.path.read_bytes().splitlines(keepends=True)
        store.path.write_bytes(b"".join(lines[:3]))
        events.clear()
        again = run_leaderboard(TINY, tmp_path, recipes=[], store=store, on_event=events.append)
        assert not any("skipped" in e for e in events), events
        assert sorted(r.protocol["orientation_known"] for r in again) == [False, False, True, True]
        assert len(store.records(recipe=BASELINE_NAME)) == 7
        events.clear()
        third = run_leaderboard(TINY, tmp_path, recipes=[], store=store, on_event=events.append)
        assert any("skipped" in e for e in events) and len(third) == 4
