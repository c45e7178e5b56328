"""The GPU check (``geo_bench.gpu_check``): its CPU dry run end to end, so the check never rots, and
its pieces (plan, time budget, DDP comparison, report, the device machine's metadata step)."""

from __future__ import annotations

import importlib.metadata
import json
import runpy
from pathlib import Path

import pytest
import torch

from geo_bench import gpu_check
from geo_bench.gpu_check import (
    CHECK_GROUPS,
    PACKAGES,
    PRECISIONS,
    UPSTREAM_BENCHMARKS,
    CheckRecord,
    compare_ddp_ranks,
    ddp_worker,
    find_repo,
    make_plan,
    render_markdown,
    run_gpu_check,
)
from geo_retrieval.recipes import list_recipes

pytestmark = pytest.mark.one_thread

REPO = Path(__file__).resolve().parents[3]


def _load(out: Path) -> dict:
    report = json.loads((out / gpu_check.REPORT_JSON).read_text())
    assert (out / gpu_check.REPORT_MD).is_file()
    return report


@pytest.mark.slow  # ~30 s on an idle 2-core CPU: six recipes' training steps and one pytest subprocess
def test_dry_run_passes_and_reports_every_check(tmp_path):
    report = run_gpu_check(make_plan(dry_run=True), tmp_path)
    assert report == _load(tmp_path)  # the file holds what was returned
    assert report["ok"] and report["complete"] and report["dry_run"] and report["device"] == "cpu"
    checks = {c["name"]: c for c in report["checks"]}
    expected = {"environment", "mappings", "recall:torch", "recall:faiss", "ddp", "upstream"}
    expected |= {f"train:{name}" for name in list_recipes("small")}
    expected |= {f"tests:{p}" for p in PACKAGES}
    assert set(checks) == expected
    for check in checks.values():
        assert check["status"] in ("ok", "skipped"), (check["name"], check["error"])
        if check["status"] == "skipped":  # every skip says why, in one line
            assert check["reason"] and "\n" not in check["reason"]
    # what the dry run must exercise: the mappings, the torch ranking, the six training
    # configurations (fp16 with GradScaler included) over the recipes, one real pytest run
    assert {row["mapping"] for row in checks["mappings"]["figures"]["rows"]} == {
        "polar",
        "panorama_to_perspective",
        "mixed",
    }
    assert checks["recall:torch"]["status"] == "ok"
    assert 0 < checks["recall:torch"]["figures"]["rows"][0]["R@1"] <= 100
    rows = [row for name, c in checks.items() if name.startswith("train:") for row in c["figures"]["rows"]]
    assert all(row["status"] == "ok" and row["pairs_per_s"] > 0 for row in rows)
    if len(rows) >= 6:
        assert {(r["precision"], r["channels_last"]) for r in rows} == {
            (p, cl) for p in PRECISIONS for cl in (False, True)
        }
    assert all(r["grad_scaler"] == (r["precision"] == "fp16") for r in rows)
    assert checks["tests:geo-transforms"]["status"] == "ok"
    assert checks["tests:geo-transforms"]["figures"]["passed"] > 0
    assert checks["ddp"]["status"] == "skipped" and "nccl" in checks["ddp"]["reason"]
    assert checks["upstream"]["status"] == "skipped" and "--upstream-root" in checks["upstream"]["reason"]
    markdown = (tmp_path / gpu_check.REPORT_MD).read_text()
    for section in ("## Mappings", "## Recall", "## Training step", "## Test suites"):
        assert section in markdown


def test_budget_skips_the_remaining_checks(tmp_path):
    plan = make_plan(dry_run=True, budget_s=1e-6, only=["environment", "train"])
    report = run_gpu_check(plan, tmp_path)
    train = [c for c in report["checks"] if c["name"].startswith("train:")]
    assert train and all(c["status"] == "skipped" and c["reason"].startswith("budget") for c in train)
    assert report["ok"]  # skipped is not failed
    assert "skipped (budget)" in (tmp_path / gpu_check.REPORT_MD).read_text()


def test_exit_status(tmp_path):
    assert gpu_check.main(["--dry-run", "--only", "environment", "--out", str(tmp_path / "a")]) == 0
    assert _load(tmp_path / "a")["checks"][0]["name"] == "environment"
    assert gpu_check.main(["--dry-run", "--only", "nothing", "--out", str(tmp_path / "b")]) == 2
    assert gpu_check.main(["--dry-run"]) == 2  # --out is required
    if not torch.cuda.is_available():  # asking for CUDA where there is none fails, and says why
        assert gpu_check.main(["--only", "environment,mappings", "--out", str(tmp_path / "c")]) == 1
        report = _load(tmp_path / "c")
        assert [c["status"] for c in report["checks"]] == ["failed", "skipped"]
        assert "cuda" in report["checks"][0]["error"]


def test_plan_validation():
    with pytest.raises(ValueError, match="unknown check group"):
        make_plan(only=["gpu"])
    with pytest.raises(ValueError, match="batch_size"):
        make_plan(batch_size=1)
    plan = make_plan()
    assert plan.groups == CHECK_GROUPS and plan.variant == "full" and plan.device == "cuda"
    assert plan.recall_n == 92_802 and plan.recall_dim == 1024 and plan.budget_s <= 480
    assert plan.test_args == ("--device", "cuda", "--dtype", "all") and plan.test_packages == PACKAGES
    assert make_plan(skip=["tests"]).groups == CHECK_GROUPS[:-1]


def test_ddp_worker_alone_and_rank_comparison(tmp_path):
    result = ddp_worker(tmp_path, device="cpu")  # one rank, no process group
    assert json.loads((tmp_path / "rank0.json").read_text()) == result
    assert compare_ddp_ranks([result], 1, None) is None
    other = {**result, "rank": 1, "world_size": 2}
    same = {**result, "world_size": 2}
    assert compare_ddp_ranks([same, other], 2, None) is None
    assert "differ" in compare_ddp_ranks([same, {**other, "params_sha256": "0"}], 2, None)
    assert "backend" in compare_ddp_ranks([same, other], 2, "nccl")
    assert "ranks" in compare_ddp_ranks([same], 2, None)


def _report_of(records: list[CheckRecord], *, ok: bool) -> dict:
    """A report dict of a CUDA run holding ``records`` (what ``render_markdown`` reads)."""
    return {
        "dry_run": False,
        "created": "now",
        "device": "cuda",
        "elapsed_s": 1.0,
        "budget_s": 480.0,
        "ok": ok,
        "checks": [r.as_dict() for r in records],
    }


def test_markdown_lists_failures_and_budget_skips():
    records = [
        CheckRecord("environment", "ok", {"torch": "x", "gpu": "G", "gpu_memory_GiB": 1.0}),
        CheckRecord("train:safa", "skipped", reason="budget: 3 s left"),
        CheckRecord("tests:geo-bench", "failed", {"tail": ["E  boom"]}, error="pytest exited 1"),
    ]
    text = render_markdown(_report_of(records, ok=False))
    assert "some checks FAILED" in text and "skipped (budget)" in text
    assert "### tests:geo-bench" in text and "E  boom" in text
    with pytest.raises(ValueError, match="status"):
        CheckRecord("x", "passed")


def test_upstream_scripts_say_why_they_cannot_run(tmp_path):
    """The ``upstream`` group runs the packages' side-by-side scripts; a checkout that is missing or
    does not parse comes back as ``skipped`` with the script's own message, never as a pass."""
    if find_repo() is None:
        pytest.skip("not run from a checkout")
    root = tmp_path / "upstream"
    models = root / "PanoGAN" / "models"
    models.mkdir(parents=True)
    (models / "panogan_model.py").write_text("")
    (models / "networks.py").write_text(  # PanoGAN 27ab77b's fault: a method at column 0
        "class FeaturePyramidDiscriminator:\n    x = 1\ndef __init__(self):\n        pass\n    def forward(self):\n        pass\n"
    )
    report = run_gpu_check(make_plan(dry_run=True, only=["upstream"], upstream_root=root), tmp_path / "out")
    checks = {c["name"]: c for c in report["checks"]}
    assert set(checks) == {f"upstream:{name}" for name in UPSTREAM_BENCHMARKS}
    assert all(c["status"] == "skipped" for c in checks.values()), checks
    assert "github.com/aysim/comingdowntoearth" in checks["upstream:toker21"]["reason"]
    assert "github.com/Skyy93/Sample4Geo" in checks["upstream:sample4geo"]["reason"]
    assert "does not parse" in checks["upstream:smdt"]["reason"]
    assert "--device cpu" in checks["upstream:smdt"]["figures"]["command"]


def test_markdown_shows_the_side_by_side_steps():
    ok = CheckRecord(
        "upstream:toker21",
        "ok",
        {
            "batch": 32,
            "ratio_mean_step": 1.25,
            "ratio_cpu_s": 1.1,
            "rows": {
                "ours": {"step_mean_s": 0.8, "peak_device_mib": 9000.0},
                "theirs": {"step_mean_s": 1.0, "peak_device_mib": 12000.0},
            },
        },
    )
    text = render_markdown(_report_of([ok, CheckRecord("upstream:smdt", "skipped", reason="x")], ok=True))
    assert "## Against the authors' code" in text
    assert "| toker21 | 32 | 0.8 | 1 | 1.25x | 9,000 | 12,000 |" in text
    assert "| smdt |" not in text  # skipped checks are in the summary only


def test_device_metadata_step_registers_the_packages(tmp_path):
    """tools/gpu/dist_info.py (run on the GPU machine, which has no build backend) gives the src trees
    the metadata an install would: versions and geo-synthesis' recipe entry point."""
    script = REPO / "tools" / "gpu" / "dist_info.py"
    if not script.is_file():
        pytest.skip("not run from a checkout")
    runpy.run_path(str(script), run_name="dist_info")["write_dist_info"](tmp_path)
    found = {d.metadata["Name"]: d for d in importlib.metadata.distributions(path=[str(tmp_path)])}
    assert set(found) == set(PACKAGES)
    assert found["geo-bench"].version == importlib.metadata.version("geo-bench")
    recipes = [ep.value for ep in found["geo-synthesis"].entry_points if ep.group == "geo_retrieval.recipes"]
    assert recipes == ["geo_synthesis.recipes:register_all"]


def test_out_of_memory_is_a_row_not_a_failure(monkeypatch):
    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB")

    monkeypatch.setattr(gpu_check, "_train_row", boom)
    plan = make_plan(dry_run=True, recipes=["safa"], only=["train"])
    (record,) = gpu_check.check_train(plan, torch.device("cpu"), gpu_check._Budget(60.0))
    assert record.status == "ok" and record.figures["rows"][0]["status"] == "oom"
    assert "out of device memory" in record.figures["note"]
