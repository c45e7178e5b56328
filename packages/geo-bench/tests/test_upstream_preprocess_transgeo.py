"""The ``pil`` upstream reader and a converted TransGeo checkpoint, against fixtures made by TransGeo's
own code.

Fixtures: ``tests/data/upstream/transgeo`` (pixels and end-to-end descriptors; the README is
geo-retrieval's ``tests/data/upstream/transgeo/README.md``), the CVUSA-layout folder of
``tests/data/upstream/sample4geo/cvusa`` and geo-retrieval's ``checkpoint.pth.tar`` (a seeded upstream
TransGeo with 2-block, 64-wide DeiT branches at the real input sizes).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import ImageDecodeError
from geo_bench.datasets.upstream_preprocess import read_upstream
from geo_retrieval.convert import UpstreamPreprocessing, convert, read_manifest

DATA = Path(__file__).parent / "data" / "upstream" / "transgeo"
CVUSA_DIR = Path(__file__).parent / "data" / "upstream" / "sample4geo" / "cvusa"
UPSTREAM_CKPT = (
    Path(__file__).resolve().parents[2]
    / "geo-retrieval"
    / "tests"
    / "data"
    / "upstream"
    / "transgeo"
    / "checkpoint.pth.tar"
)
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
PRE = UpstreamPreprocessing("pil", "PIL.Image.BILINEAR", (112, 616), (256, 256), *IMAGENET)


def _upstream_pixels(view: str) -> tuple[np.ndarray, str]:
    fx = np.load(DATA / "pixels.npz")
    levels, index = fx[f"{view}_levels"], fx[f"{view}_index"]
    pixels = np.take_along_axis(levels, index.reshape(3, -1).astype(np.int64), 1).reshape(index.shape)
    return pixels, str(fx[f"{view}_file"])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not UPSTREAM_CKPT.is_file():
        pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
    out = tmp_path_factory.mktemp("transgeo") / "converted"
    convert("transgeo", UPSTREAM_CKPT, out, dataset="cvusa", num_heads=2)
    return out


class TestPilReader:
    @pytest.mark.parametrize("view", ["aerial", "ground"])
    def test_reproduces_upstream_pixels_on_real_size_images(self, view):
        expected, file = _upstream_pixels(view)
        ours = read_upstream(CVUSA_DIR / file, view, PRE)
        assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape
        assert ours.shape[-2:] == ((256, 256) if view == "aerial" else (112, 616))
        # measured: 0.0 (bit-identical); the source images are 750x750 and 224x1232
        assert float(np.abs(ours.numpy() - expected).max()) <= 1e-6

    def test_faults_are_named(self, tmp_path):
        with pytest.raises(FileNotFoundError, match=r"nope\.jpg"):
            read_upstream(tmp_path / "nope.jpg", "ground", PRE)
        (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
        with pytest.raises(ImageDecodeError, match=r"bad\.jpg"):
            read_upstream(tmp_path / "bad.jpg", "ground", PRE)
        with pytest.raises(ValueError, match="unknown resize"):
            read_upstream(
                CVUSA_DIR / "bingmap/19/0000013.jpg",
                "aerial",
                UpstreamPreprocessing("pil", "cv2.INTER_AREA", (4, 8), (4, 4), *IMAGENET),
            )


class TestEvaluateConvertedTransGeo:
    def test_descriptors_equal_the_upstream_pipeline(self, converted, tmp_path, capsys):
        """geo-bench evaluate --checkpoint OUT_DIR --descriptors on a CVUSA-layout folder at the real
        image sizes gives upstream's own (L2-normalised) descriptors."""
        store, npz = tmp_path / "r.jsonl", tmp_path / "d.npz"
        args = ["evaluate", "--checkpoint", str(converted), "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
        rc = main(
            [*args, "--store", str(store), "--descriptors", str(npz), "--no-progress", "--device", "cpu"]
        )
        assert rc == 0, capsys.readouterr().err
        ours, upstream = np.load(npz), np.load(DATA / "e2e_descriptors.npz")
        assert list(ours["ids"]) == list(upstream["ids"]) == list(ours["aerial_ids"])
        for view in ("ground", "aerial"):
            ref = upstream[view] / np.linalg.norm(upstream[view], axis=1, keepdims=True)
            assert ours[view].dtype == np.float32 and ours[view].shape == (3, 48)
            assert float(np.abs(ours[view] - ref).max()) <= 1e-4  # measured: below 1e-6
        record = json.loads(store.read_text().splitlines()[0])
        proto = record["protocol"]
        assert proto["preprocess"] == "upstream"
        assert proto["upstream_preprocessing"]["reader"] == "pil"
        assert proto["upstream_preprocessing"]["aerial_size"] == [256, 256]
        assert proto["converted_from"]["sha256"] == read_manifest(converted).source_sha256
        assert record["recipe"] == "transgeo" and record["variant"] == "full"
