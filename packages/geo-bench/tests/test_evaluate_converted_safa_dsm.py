"""``geo-bench evaluate --checkpoint OUT --descriptors FILE.npz`` end to end on converted SAFA and DSM TF1
checkpoints, against the descriptors of upstream's own pipeline (``data_preparation.py`` -> its test reader
-> its TF1 graph) on the real-size CVUSA-layout folder ``tests/data/upstream/sample4geo/cvusa``.

Fixtures: ``tests/data/upstream/polar/e2e_{safa,dsm}.npz`` (README there; float16 descriptors) and
geo-retrieval's ``tests/data/upstream/{safa,dsm}`` (``upstream.index`` and ``make_fixtures.py``, whose
deterministic weights the TF checkpoints here are rebuilt from).
"""

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.cli.evaluate import _upstream_options
from geo_retrieval.convert import convert, read_manifest
from geo_retrieval.convert.tf_checkpoint import tf_checkpoint_entries, write_tf_checkpoint
from geo_retrieval.heads import dsm_similarity

HERE = Path(__file__).parent
DATA = HERE / "data" / "upstream" / "polar"
CVUSA_DIR = HERE / "data" / "upstream" / "sample4geo" / "cvusa"
RETRIEVAL = HERE.parents[1] / "geo-retrieval" / "tests" / "data" / "upstream"
IDS = ["0000013", "0000014", "0000015"]


def _tf_checkpoint(method: str, tmp: Path) -> Path:
    """The fixtures' deterministic TF checkpoint of upstream's full graph (written with our TF writer)."""
    folder = RETRIEVAL / method
    if not (folder / "make_fixtures.py").is_file():
        pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
    spec = importlib.util.spec_from_file_location(f"{method}_make_fixtures", folder / "make_fixtures.py")
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    entries, _ = tf_checkpoint_entries(folder / "upstream.index")
    return write_tf_checkpoint(
        tmp / "model.ckpt", mf.fixture_weights({k: e.shape for k, e in entries.items()})
    )


def _evaluate(out: Path, tmp: Path, name: str, *extra: str) -> tuple[dict, dict]:
    store, npz = tmp / f"{name}.jsonl", tmp / f"{name}.npz"
    argv = ["evaluate", "--checkpoint", str(out), "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
    rc = main(
        [*argv, *extra, "--store", str(store), "--descriptors", str(npz), "--no-progress", "--device", "cpu"]
    )
    assert rc == 0
    return json.loads(store.read_text().splitlines()[0]), dict(np.load(npz))


@pytest.mark.slow
class TestEvaluateConvertedSAFA:
    def test_descriptors_equal_upstreams(self, tmp_path):
        out = tmp_path / "converted"
        convert("safa", _tf_checkpoint("safa", tmp_path), out)
        record, ours = _evaluate(out, tmp_path, "safa")
        up = np.load(DATA / "e2e_safa.npz")
        assert list(ours["ids"]) == list(up["ids"]) == IDS
        for view in ("ground", "aerial"):
            assert ours[view].shape == (3, 4096)
            # float16 fixture (<= 3.1e-5 off); measured against upstream's float32: below 3e-7
            assert float(np.abs(ours[view] - up[view].astype(np.float32)).max()) <= 1e-4
        proto = record["protocol"]
        assert proto["preprocess"] == "upstream" and proto["converted_from"]["kind"] == "safa"
        assert proto["upstream_preprocessing"]["reader"] == "opencv_caffe"
        assert proto["upstream_preprocessing"]["polar"]["preset"] == "safa_imsave@1"
        assert set(proto["image_decoders"]) == {"pillow", "pillow_jpeg", "opencv"}
        assert proto["orientation_known"] is True and "upstream_test_roll" not in proto
        assert record["metrics"]["R@1"] == pytest.approx(100 * float(np.mean(_r1(up))))
        assert read_manifest(out).preprocessing.polar["decode"] == "pil"


def _r1(up) -> np.ndarray:
    """SAFA: upstream's own top-1 hits (distance 2 - 2 g.a, strict < ranks)."""
    g, a = up["ground"].astype(np.float64), up["aerial"].astype(np.float64)
    d = 2 - 2 * g @ a.T
    return (d < np.diag(d)[:, None]).sum(1) < 1


@pytest.mark.slow
class TestEvaluateConvertedDSM:
    def test_descriptors_and_seeded_roll_equal_upstreams(self, tmp_path):
        out = tmp_path / "converted"
        convert("dsm", _tf_checkpoint("dsm", tmp_path), out)
        up = np.load(DATA / "e2e_dsm.npz")
        # upstream's maps are (B, 4, 64, 16) HWC; ours (B, 16, 4, 64)
        up_a = up["aerial"].astype(np.float32).transpose(0, 3, 1, 2)
        record, ours = _evaluate(out, tmp_path, "dsm")
        assert list(ours["ids"]) == IDS and ours["ground"].shape == (3, 16, 4, 64)
        up_g = up["ground"].astype(np.float32).transpose(0, 3, 1, 2)
        assert float(np.abs(ours["aerial"] - up_a).max()) <= 1e-4  # float16 fixture; measured float32: ~1e-7
        assert float(np.abs(ours["ground"] - up_g).max()) <= 1e-4
        sim, shift = dsm_similarity(torch.from_numpy(ours["ground"]), torch.from_numpy(ours["aerial"]))
        assert float(np.abs((2 - 2 * sim).numpy() - up["distance"]).max()) <= 1e-4
        np.testing.assert_array_equal(shift.numpy().T, up["orien"])
        assert record["protocol"]["upstream_preprocessing"]["polar"]["preset"] == "dsm_imsave@1"

        # --test-grd-noise 360: DSM's seeded test-time roll (test_cvusa_fov.py --test_grd_noise 360)
        record, rolled = _evaluate(out, tmp_path, "dsm360", "--test-grd-noise", "360")
        up_g = up["ground_noise360"].astype(np.float32).transpose(0, 3, 1, 2)
        assert float(np.abs(rolled["ground"] - up_g).max()) <= 1e-4
        np.testing.assert_array_equal(rolled["aerial"], ours["aerial"])
        sim, shift = dsm_similarity(torch.from_numpy(rolled["ground"]), torch.from_numpy(rolled["aerial"]))
        assert float(np.abs((2 - 2 * sim).numpy() - up["distance_noise360"]).max()) <= 1e-4
        np.testing.assert_array_equal(shift.numpy().T, up["orien_noise360"])
        proto = record["protocol"]
        assert proto["orientation_known"] is False
        assert (
            proto["upstream_test_roll"]["noise_deg"] == 360.0 and proto["upstream_test_roll"]["seed"] == 2019
        )
        assert proto["upstream_test_roll"]["width"] == 512


class TestEvaluateOptions:
    def test_upstream_options_need_upstream_preprocessing(self):
        ns = argparse.Namespace(polar_maps=None, test_grd_noise=360.0)
        with pytest.raises(ValueError, match="--test-grd-noise replays an upstream evaluation"):
            _upstream_options(ns, "ours")
        _upstream_options(ns, "upstream")
        with pytest.raises(ValueError, match="--polar-maps replays an upstream evaluation"):
            _upstream_options(argparse.Namespace(polar_maps="maps", test_grd_noise=None), "ours")
        with pytest.raises(ValueError, match=r"--test-grd-noise must be in \[0, 360\]"):
            _upstream_options(argparse.Namespace(polar_maps=None, test_grd_noise=400.0), "upstream")
