"""Toker et al.'s upstream preprocessing (``opencv_torchvision`` reader + the ``toker_cvusa_legacy``
polar preset), against pixels made by Toker's own scripts, and applied by ``geo-bench evaluate``.

Fixtures: ``tests/data/upstream/toker/pixels.npz`` (upstream's ``data/convert_polar.py`` run on the
750x750 aerials of ``tests/data/upstream/sample4geo/cvusa``, then its ``CVUSA`` loader + ``ToTensor``;
stored as the uint8 levels); the converter's fixtures are geo-retrieval's
``tests/data/upstream/toker`` (README there).
"""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import CVUSA
from geo_bench.datasets.upstream_preprocess import UpstreamViews, read_upstream, upstream_protocol
from geo_retrieval.convert import convert, load_converted
from geo_retrieval.convert.toker import toker_preprocessing
from geo_transforms.presets import apply_polar_preset

CVUSA_DIR = Path(__file__).parent / "data" / "upstream" / "sample4geo" / "cvusa"
PIXELS = Path(__file__).parent / "data" / "upstream" / "toker" / "pixels.npz"
CONVERT_DATA = Path(__file__).resolve().parents[2] / "geo-retrieval" / "tests" / "data" / "upstream" / "toker"


def _rows() -> list[list[str]]:
    with open(CVUSA_DIR / "splits" / "val-19zl.csv") as fh:
        return list(csv.reader(fh))


def _upstream(view: str, i: int) -> np.ndarray:
    u8 = np.load(PIXELS)[f"{view}_{i}"].astype(np.float32)
    return (u8 / np.float32(255.0) - np.float32(0.5)) / np.float32(0.5)


class TestTokerPixels:
    def test_reproduces_upstream_pixels(self):
        pre = toker_preprocessing()
        aerial_file, ground_file = _rows()[0][:2]
        for view, file in (("aerial", aerial_file), ("ground", ground_file)):
            ours = read_upstream(CVUSA_DIR / file, view, pre)
            assert ours.dtype == torch.float32 and tuple(ours.shape) == (3, 112, 616)
            # measured: 0.0 on all 3 pairs (bit-identical)
            assert float(np.abs(ours.numpy() - _upstream(view, 0)).max()) <= 1e-6

    def test_legacy_polar_differs_from_our_default(self):
        """The legacy chain (render 224x1232, truncate, bicubic, round) is not our default polar map
        (the recipe's ``safa`` preset rendered directly at 112x616)."""
        pre = toker_preprocessing()
        file = CVUSA_DIR / _rows()[0][0]
        legacy = read_upstream(file, "aerial", pre)
        import cv2

        rgb = cv2.cvtColor(cv2.imread(str(file)), cv2.COLOR_BGR2RGB)
        raw = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].double()
        default = (apply_polar_preset(raw, "safa")[0].float() / 255 - 0.5) / 0.5
        diff = (legacy - default).abs()
        assert float(diff.max()) > 0.1 and float(diff.mean()) > 1e-3
        np.testing.assert_array_equal(
            legacy.numpy(),
            ((apply_polar_preset(raw, "toker_cvusa_legacy")[0].float() / 255 - 0.5) / 0.5).numpy(),
        )

    def test_views_record_the_preset(self):
        pre = toker_preprocessing()
        views = UpstreamViews(CVUSA(CVUSA_DIR, "test"), pre)
        assert views.protocol["polar"]["preset"] == "toker_cvusa_legacy@1"
        assert upstream_protocol(pre)["polar"]["preset"] == "toker_cvusa_legacy@1"
        s = views[1]
        assert s["id"] == "0000014"
        np.testing.assert_array_equal(s["aerial"].numpy(), _upstream("aerial", 1))

    def test_size_mismatch_is_refused(self):
        pre = toker_preprocessing((32, 128))
        with pytest.raises(ValueError, match=r"renders 112x616.*--preprocess ours"):
            read_upstream(CVUSA_DIR / _rows()[0][0], "aerial", pre)


def _full_size_checkpoint(path: Path) -> Path:
    """The fixture's deterministic upstream checkpoint at upstream's 112x616 (SAFA N = 1078), float16."""
    spec_path = CONVERT_DATA / "make_fixtures.py"
    if not spec_path.is_file():
        pytest.skip("geo-retrieval's test data is not beside this package (an sdist)")
    spec = importlib.util.spec_from_file_location("toker_make_fixtures", spec_path)
    mf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mf)
    shapes = json.loads((CONVERT_DATA / "state_spec.json").read_text())
    n, k = 14 * 77, 8
    full = {"w1": [n, n // 2, k], "b1": [1, n // 2, k], "w2": [n // 2, n, k], "b2": [1, n, k]}
    for head in ("sa1", "sa2"):
        for leaf, shape in full.items():
            shapes["retriebal_model_dict"][f"{head}.{leaf}"] = shape
    ckpt = {
        comp: {
            k_: torch.from_numpy(v).half() if v.dtype == np.float32 else torch.from_numpy(v)
            for k_, v in mf.fixture_state(shapes[comp]).items()
        }
        for comp in mf.COMPONENTS
    }
    torch.save(ckpt, path)
    return path


@pytest.mark.slow
class TestEvaluateTokerCheckpoint:
    def test_evaluate_applies_the_legacy_preset(self, tmp_path, capsys):
        """geo-bench evaluate --checkpoint OUT_DIR of a converted Toker checkpoint reads the aerials
        through toker_cvusa_legacy: the record names it and the descriptors are those of upstream's
        pixels, not of our default polar maps."""
        src = _full_size_checkpoint(tmp_path / "rgan_best_ckpt.pth")
        out = tmp_path / "converted"
        convert("toker", src, out)
        store, npz = tmp_path / "r.jsonl", tmp_path / "d.npz"
        args = ["evaluate", "--checkpoint", str(out), "--dataset", "cvusa", "--root", str(CVUSA_DIR)]
        rc = main(
            [*args, "--store", str(store), "--descriptors", str(npz), "--no-progress", "--device", "cpu"]
        )
        assert rc == 0, capsys.readouterr().err
        proto = json.loads(store.read_text().splitlines()[0])["protocol"]
        assert proto["preprocess"] == "upstream"
        assert proto["upstream_preprocessing"]["polar"]["preset"] == "toker_cvusa_legacy@1"
        assert proto["converted_from"]["kind"] == "toker"
        _, _, model = load_converted(out)
        model.eval()
        aerial = torch.stack([torch.from_numpy(_upstream("aerial", i)) for i in range(3)])
        ground = torch.stack([torch.from_numpy(_upstream("ground", i)) for i in range(3)])
        with torch.no_grad():
            g, a = model(ground, aerial)
        ours = np.load(npz)
        assert float(np.abs(ours["aerial"] - a.numpy()).max()) <= 1e-4
        assert float(np.abs(ours["ground"] - g.numpy()).max()) <= 1e-4
        rc = main(
            [
                *args,
                "--preprocess",
                "ours",
                "--store",
                str(tmp_path / "o.jsonl"),
                "--descriptors",
                str(tmp_path / "o.npz"),
                "--no-progress",
                "--device",
                "cpu",
            ]
        )
        assert rc == 0
        assert float(np.abs(np.load(tmp_path / "o.npz")["aerial"] - a.numpy()).max()) > 1e-3
