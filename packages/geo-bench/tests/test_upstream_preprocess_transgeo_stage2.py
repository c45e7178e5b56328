"""TransGeo stage 2 (``convert transgeo`` of a ``--sat_res 320 --crop`` checkpoint) under ``geo-bench evaluate
--checkpoint ... --attention-maps DIR``: upstream's CVUSA evaluation of the same model, the kept patches and
the descriptors.

Fixtures: ``tests/data/upstream/transgeo_stage2`` (``attention/val/<index>.png`` written by upstream's
stage-1 ``scan``, ``e2e_descriptors.npz``: upstream's ``validate`` with ``--crop``), made by geo-retrieval's
``tests/data/upstream/transgeo/make_stage2_fixtures.py`` (README there) on the 3 real-size pairs of
``tests/data/upstream/sample4geo/cvusa``.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import CVUSA
from geo_bench.datasets.upstream_preprocess import UpstreamViews
from geo_retrieval.convert import convert, read_manifest
from geo_retrieval.token_crop import order_from_channel

HERE = Path(__file__).parent
CVUSA_DIR = HERE / "data" / "upstream" / "sample4geo" / "cvusa"
STAGE2 = HERE / "data" / "upstream" / "transgeo_stage2"
MAPS = STAGE2 / "attention" / "val"
RETRIEVAL_DATA = HERE.resolve().parents[1] / "geo-retrieval" / "tests" / "data" / "upstream" / "transgeo"


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    script = RETRIEVAL_DATA / "make_stage2_fixtures.py"
    if not script.is_file():
        pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
    spec = importlib.util.spec_from_file_location("transgeo_stage2", script)
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    shapes = json.loads((RETRIEVAL_DATA / "stage2_spec.json").read_text())
    state = {f"module.{k}": torch.from_numpy(v).half() for k, v in mf.fixture_state(shapes).items()}
    tmp = tmp_path_factory.mktemp("transgeo_stage2")
    torch.save({"epoch": 50, "state_dict": state, "best_acc1": np.float64(40.0)}, tmp / "checkpoint.pth.tar")
    out = tmp / "converted"
    convert("transgeo", tmp / "checkpoint.pth.tar", out, dataset="cvusa", num_heads=2)
    return out


class TestStage2Views:
    def test_kept_patches_are_upstreams(self, converted):
        """The aerial inputs carry upstream's kept patches (256 of 400, in its order) as the fourth channel."""
        views = UpstreamViews(
            CVUSA(CVUSA_DIR, "test"), read_manifest(converted).preprocessing, attention_maps=MAPS
        )
        e2e = np.load(STAGE2 / "e2e_descriptors.npz")
        assert views.protocol["attention_maps"] == "val"
        for i in range(3):
            aerial = views[i]["aerial"]
            assert tuple(aerial.shape) == (4, 320, 320)
            order = order_from_channel(aerial[None, 3:], 16)
            np.testing.assert_array_equal(order.numpy(), e2e["kept"][i : i + 1])

    def test_maps_are_required(self, converted, tmp_path):
        pre = read_manifest(converted).preprocessing
        with pytest.raises(ValueError, match="pass --attention-maps DIR"):
            UpstreamViews(CVUSA(CVUSA_DIR, "test"), pre)
        with pytest.raises(FileNotFoundError, match="attention map folder not found"):
            UpstreamViews(CVUSA(CVUSA_DIR, "test"), pre, attention_maps=tmp_path / "nope")


@pytest.mark.slow
class TestEvaluateStage2:
    def test_evaluate_reproduces_upstream(self, converted, tmp_path, capsys, caplog):
        store, npz = tmp_path / "r.jsonl", tmp_path / "d.npz"
        args = ["evaluate", "--checkpoint", str(converted), "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
        rest = ["--no-progress", "--device", "cpu"]
        rc = main(
            [*args, "--attention-maps", str(MAPS), "--store", str(store), "--descriptors", str(npz), *rest]
        )
        assert rc == 0, capsys.readouterr().err
        proto = json.loads(store.read_text().splitlines()[0])["protocol"]
        assert proto["upstream_attention_maps"] == "val"
        assert proto["upstream_preprocessing"]["aerial_tokens"]["keep_rate"] == 0.64
        ours, e2e = np.load(npz), np.load(STAGE2 / "e2e_descriptors.npz")
        assert list(ours["ids"]) == list(e2e["ids"])
        for view in ("ground", "aerial"):
            up = e2e[view] / np.linalg.norm(e2e[view], axis=1, keepdims=True)
            err = float(np.abs(ours[view] - up).max())
            print(f"{view}: max abs difference {err:.2g}")
            assert err <= 1e-4, (view, err)
        # without the maps: refused with the way out; --preprocess ours encodes every patch
        assert main([*args, "--store", str(tmp_path / "x.jsonl"), *rest]) == 2
        assert "pass --attention-maps DIR" in caplog.text
        ours_npz = tmp_path / "o.npz"
        rc = main(
            [
                *args,
                "--preprocess",
                "ours",
                "--store",
                str(tmp_path / "o.jsonl"),
                "--descriptors",
                str(ours_npz),
                *rest,
            ]
        )
        assert rc == 0
