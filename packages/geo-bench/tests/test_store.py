import json
import multiprocessing as mp
import warnings

import pytest

from geo_bench.records import Provenance, ResultRecord
from geo_bench.store import ResultStore, StoreWarning, run_key

PROTO = {
    "polar": True,
    "fov": 360.0,
    "orientation_known": True,
    "top1pct_rule": "floor",
    "tie_rule": "optimistic",
    "cvact_test": None,
    "labels": None,
}


def _record(i: int, *, pad: int = 0, commit: str = "abc") -> ResultRecord:
    prov = Provenance("measured", seed=i % 7, commit=commit, hardware={"cpu": "x" * pad, "cores": 2})
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


def _writer(path: str, worker: int, n: int) -> None:
    store = ResultStore(path)
    for j in range(n):
        store.append(_record(worker * 1000 + j, pad=3000))  # ~3 KB lines: larger than PIPE_BUF


class TestResultStore:
    def test_roundtrip(self, tmp_path):
        store = ResultStore(tmp_path / "sub" / "results.jsonl")
        assert store.records() == []
        recs = [_record(i) for i in range(3)]
        for r in recs:
            store.append(r)
        assert store.records() == recs
        assert store.records(recipe="recipe1") == [recs[1]]
        assert store.records(protocol__config="c2") == [recs[2]]
        assert store.find(run_key(recs[0])) == recs[0]
        assert store.find(run_key(_record(0, commit="other"))) is None
        lines = (tmp_path / "sub" / "results.jsonl").read_text().splitlines()
        assert len(lines) == 3 and all(json.loads(line)["recipe"].startswith("recipe") for line in lines)

    def test_append_validates(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        with pytest.raises(TypeError, match="ResultRecord"):
            store.append({"recipe": "x"})  # type: ignore[arg-type]
        assert not store.path.exists()

    def test_corrupt_lines_warn_and_are_skipped(self, tmp_path):
        store = ResultStore(tmp_path / "r.jsonl")
        store.append(_record(1))
        with open(store.path, "a") as fh:
            fh.write('{"recipe": "half a line", "variant\n')  # line 2: truncated JSON
            fh.write(json.dumps({"recipe": "x"}) + "\n")  # line 3: not a record
        store.append(_record(2))
        with pytest.warns(StoreWarning) as caught:
            recs = store.records()
        assert [r.recipe for r in recs] == ["recipe1", "recipe2"]
        messages = [str(w.message) for w in caught]
        assert any("line 2" in m for m in messages) and any("line 3" in m for m in messages)

    def test_concurrent_writers(self, tmp_path):
        path = str(tmp_path / "r.jsonl")
        n_workers, n_each = 6, 40
        ctx = mp.get_context("fork")  # the writers only do file I/O
        procs = [ctx.Process(target=_writer, args=(path, w, n_each)) for w in range(n_workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
        with warnings.catch_warnings():
            warnings.simplefilter("error", StoreWarning)  # a torn or interleaved line would warn
            recs = ResultStore(path).records()
        assert len(recs) == n_workers * n_each
        assert {r.recipe for r in recs} == {
            f"recipe{w * 1000 + j}" for w in range(n_workers) for j in range(n_each)
        }
