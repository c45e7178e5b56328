"""Upstream preprocessing of converted checkpoints, against fixtures made by Sample4Geo's own code.

Fixtures: ``tests/data/upstream/sample4geo`` (README there); the converted model comes from
geo-retrieval's fixture ``timm_model_test_convnext.pth`` (a seeded upstream TimmModel).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import CVUSA, ImageDecodeError
from geo_bench.datasets.upstream_preprocess import UpstreamViews, read_upstream
from geo_retrieval.convert import UpstreamPreprocessing, convert, read_manifest

DATA = Path(__file__).parent / "data" / "upstream" / "sample4geo"
CVUSA_DIR = DATA / "cvusa"
UPSTREAM_CKPT = (
    Path(__file__).resolve().parents[2]
    / "geo-retrieval"
    / "tests"
    / "data"
    / "upstream"
    / "sample4geo"
    / "timm_model_test_convnext.pth"
)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _upstream_pixels(view: str) -> tuple[np.ndarray, str]:
    fx = np.load(DATA / "pixels.npz")
    levels, index = fx[f"{view}_levels"], fx[f"{view}_index"]
    pixels = np.take_along_axis(levels, index.reshape(3, -1).astype(np.int64), 1).reshape(index.shape)
    return pixels, str(fx[f"{view}_file"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not UPSTREAM_CKPT.is_file():
        pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
    out = tmp_path_factory.mktemp("s4g") / "converted"
    convert("sample4geo", UPSTREAM_CKPT, out, dataset="cvusa", model="test_convnext")
    return out


class TestSample4GeoPixels:
    @pytest.mark.parametrize("view", ["aerial", "ground"])
    def test_reproduces_upstream_pixels_on_real_size_images(self, view):
        expected, file = _upstream_pixels(view)
        pre = UpstreamPreprocessing(
            "opencv", "cv2.INTER_LINEAR_EXACT", (140, 768), (384, 384), IMAGENET[0], IMAGENET[1]
        )
        fx = np.load(DATA / "pixels.npz")
        assert tuple(fx["mean"]) == IMAGENET[0] and tuple(fx["std"]) == IMAGENET[1]
        ours = read_upstream(CVUSA_DIR / file, view, pre)
        assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
        assert ours.shape[-2:] == ((384, 384) if view == "aerial" else (140, 768))
        # measured: 0.0 (bit-identical); the source images are 750x750 and 224x1232
        assert float(np.abs(ours.numpy() - expected).max()) <= 1e-6

    def test_missing_and_undecodable_files_are_named(self, tmp_path):
        pre = UpstreamPreprocessing(
            "opencv", "cv2.INTER_LINEAR_EXACT", (4, 8), (4, 4), (0.5,) * 3, (0.5,) * 3
        )
        with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
            read_upstream(tmp_path / "nope.jpg", "ground", pre)
        (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
        with pytest.raises(ImageDecodeError, match=r"bad\.jpg"):
            read_upstream(tmp_path / "bad.jpg", "ground", pre)
        with pytest.raises(ValueError, match="unknown upstream image reader"):
            read_upstream(
                CVUSA_DIR / "bingmap/19/0000013.jpg",
                "aerial",
                UpstreamPreprocessing("scipy", "cv2.INTER_AREA", (4, 8), (4, 4), (0.5,) * 3, (0.5,) * 3),
            )

    def test_views_wrap_the_dataset(self):
        pre = UpstreamPreprocessing(
            "opencv", "cv2.INTER_LINEAR_EXACT", (14, 77), (38, 38), (0.5,) * 3, (0.5,) * 3
        )
        views = UpstreamViews(CVUSA(CVUSA_DIR, "test"), pre)
        s = views[0]
        assert s["id"] == "0000013" and views.ids == ["0000013", "0000014", "0000015"]
        assert s["ground"].shape == (3, 14, 77) and s["aerial"].shape == (3, 38, 38)
        assert views.protocol["interpolation"] == "opencv:cv2.INTER_LINEAR_EXACT"


class TestEvaluateConverted:
    def test_descriptors_equal_the_upstream_pipeline(self, converted, tmp_path, capsys):
        """geo-bench evaluate --checkpoint OUT_DIR --descriptors on a CVUSA-layout folder written by
        ``geo-bench synth`` at the real image sizes gives upstream's own descriptors."""
        store, npz = tmp_path / "r.jsonl", tmp_path / "d.npz"
        args = ["evaluate", "--checkpoint", str(converted), "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
        rc = main(
            [*args, "--store", str(store), "--descriptors", str(npz), "--no-progress", "--device", "cpu"]
        )
        assert rc == 0, capsys.readouterr().err
        ours, upstream = np.load(npz), np.load(DATA / "e2e_descriptors.npz")
        assert list(ours["ids"]) == list(upstream["ids"]) == list(ours["aerial_ids"])
        for view in ("ground", "aerial"):
            assert ours[view].dtype == np.float32 and ours[view].shape == (3, 64)
            assert float(np.abs(ours[view] - upstream[view]).max()) <= 1e-4  # measured: 0.0
            np.testing.assert_allclose(np.linalg.norm(ours[view], axis=1), 1.0, atol=1e-6)
        record = json.loads(store.read_text().splitlines()[0])
        proto = record["protocol"]
        assert proto["preprocess"] == "upstream"
        assert proto["upstream_preprocessing"]["resize"] == "cv2.INTER_LINEAR_EXACT"
        assert proto["upstream_preprocessing"]["ground_size"] == [140, 768]
        assert proto["converted_from"]["sha256"] == read_manifest(converted).source_sha256
        assert record["recipe"] == "sample4geo" and record["variant"] == "full"

    def test_preprocess_ours_is_recorded(self, converted, tmp_path):
        store = tmp_path / "r.jsonl"
        args = ["evaluate", "--checkpoint", str(converted), "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
        assert (
            main([*args, "--preprocess", "ours", "--store", str(store), "--no-progress", "--device", "cpu"])
            == 0
        )
        proto = json.loads(store.read_text().splitlines()[0])["protocol"]
        assert proto["preprocess"] == "ours" and "upstream_preprocessing" not in proto

    def test_refused_combinations(self, converted, tmp_path, caplog):
        base = ["evaluate", "--checkpoint", str(converted), "--store", str(tmp_path / "r.jsonl")]
        assert main(base) == 2  # the synthetic world has no image files
        assert "--dataset cvusa" in caplog.text
        caplog.clear()
        real = [*base, "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
        assert main([*real, "--protocols", "fov"]) == 2
        assert "--preprocess ours" in caplog.text
        caplog.clear()
        assert main([*real, "--recipe", "safa"]) == 2
        assert "converted 'sample4geo' checkpoint" in caplog.text
        assert not (tmp_path / "r.jsonl").exists()
