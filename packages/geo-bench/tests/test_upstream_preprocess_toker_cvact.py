"""Toker et al.'s CVACT preprocessing (``toker --dataset cvact``: the ``toker_cvact`` polar preset and the
``prepared`` JPEGs their ``convert_polar.py`` writes), against model inputs made by Toker's own scripts on
a real-size synthetic CVACT folder, and applied by ``geo-bench evaluate``.

Fixtures: ``tests/data/upstream/toker_cvact`` (README there: the 2 CVACT_val pairs of ``geo-bench synth
--layout cvact``, upstream's ``convert_polar.py`` + ``CVACT`` loader + ``ToTensor`` as sha256 / sums / crops,
and upstream's descriptors with geo-retrieval's deterministic Toker fixture weights).
"""

import hashlib
import importlib.util
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_bench.cli import main
from geo_bench.datasets import CVACT
from geo_bench.datasets.upstream_preprocess import UpstreamViews, read_upstream, upstream_protocol
from geo_retrieval.convert import convert, read_manifest
from geo_retrieval.convert.toker import toker_preprocessing

DATA = Path(__file__).parent / "data" / "upstream" / "toker_cvact"
CVACT_DIR = DATA / "cvact"
TOKER_TEST = Path(__file__).parent / "test_upstream_preprocess_toker.py"


def _sha(x: torch.Tensor) -> str:
    return hashlib.sha256(np.ascontiguousarray(x.numpy(), dtype=np.float32).tobytes()).hexdigest()


def _pixels() -> dict[str, np.ndarray]:
    return dict(np.load(DATA / "pixels.npz"))


def _views(**kw) -> UpstreamViews:
    return UpstreamViews(CVACT(CVACT_DIR, "val"), toker_preprocessing(dataset="cvact"), **kw)


class TestTokerCVACTPixels:
    def test_reproduces_upstream_model_inputs(self):
        """Both views of both pairs equal upstream's model inputs bit for bit (sha256 of the float32 arrays)."""
        px, views = _pixels(), _views()
        assert len(views) == 2
        for i in range(len(views)):
            s = views[i]
            assert s["id"] == str(px[f"id_{i}"])
            for view in ("aerial", "ground"):
                x = s[view]
                assert x.dtype == torch.float32 and tuple(x.shape) == (3, 112, 616)
                np.testing.assert_array_equal(x.double().sum(dim=(1, 2)).numpy(), px[f"{view}_sum_{i}"])
                levels = torch.round((x.double() + 1) / 2 * 255).to(torch.uint8)[:, 48:56, 300:332]
                np.testing.assert_array_equal(levels.numpy(), px[f"{view}_crop_{i}"])
                assert _sha(x) == str(px[f"{view}_sha256_{i}"]), f"pair {i} {view}"

    def test_each_step_matters(self):
        """Without the JPEG the script writes, or with SciPy's stretch instead of imageio's, or Toker's
        CVUSA pipeline, the pixels are not upstream's."""
        px, pre = _pixels(), toker_preprocessing(dataset="cvact")
        aerial = CVACT_DIR / "ANU_data_small" / "satview_polish" / f"{px['id_0']}_satView_polish.jpg"
        ground = CVACT_DIR / "ANU_data_small" / "streetview" / f"{px['id_0']}_grdView.jpg"
        no_jpeg = replace(pre, prepared=None)
        assert _sha(read_upstream(aerial, "aerial", no_jpeg)) != str(px["aerial_sha256_0"])
        # imageio's min-max stretch: pair 0's map reaches only 216.6 before it (measured: the levels move by
        # 14.9 on average, up to 38); SciPy's bytescale rounds differently but agrees on these two maps
        from PIL import Image

        from geo_transforms.presets import apply_polar_preset

        raw1 = aerial
        a = torch.from_numpy(np.asarray(Image.open(raw1).convert("RGB")).transpose(2, 0, 1).copy())[None]
        stretched = apply_polar_preset(a.double(), "toker_cvact")
        assert float((stretched - apply_polar_preset(a.double(), "safa")).abs().mean()) > 10
        cvusa = toker_preprocessing()
        assert _sha(read_upstream(ground, "ground", cvusa)) != str(px["ground_sha256_0"])
        # the JPEG round trip changes many levels (quality 75), not a few
        diff = (read_upstream(aerial, "aerial", no_jpeg) - read_upstream(aerial, "aerial", pre)).abs()
        assert float(diff.mean()) > 1e-3

    def test_manifest_records_the_pipeline(self):
        pre = toker_preprocessing(dataset="cvact")
        d = upstream_protocol(pre)
        assert d["polar"]["preset"] == "toker_cvact@1" and d["polar"]["map_suffix"] == ".jpg"
        assert d["prepared"]["views"] == ["ground", "aerial"] and d["prepared"]["quality"] == 75
        assert d["prepared"]["ground_rows"] == [208, 624] and d["resize"] == "cv2.INTER_AREA"
        assert "prepared" not in upstream_protocol(toker_preprocessing())  # CVUSA: unchanged record
        with pytest.raises(ValueError, match="dataset must be one of"):
            toker_preprocessing(dataset="vigor")

    def test_premade_polar_maps_are_read_as_jpg(self, tmp_path):
        """--polar-maps with Toker's CVACT maps: ``<aerial stem>.jpg`` read by cv2 as the loader does; a map
        written as upstream's script writes it gives upstream's input."""
        import cv2

        from geo_bench.datasets.upstream_preprocess import _jpeg_roundtrip, _prepare_file

        pre = toker_preprocessing(dataset="cvact")
        px = _pixels()
        for i in range(2):
            f = CVACT_DIR / "ANU_data_small" / "satview_polish" / f"{px[f'id_{i}']}_satView_polish.jpg"
            rgb = _prepare_file(f, "aerial", pre, pre.prepared)
            from PIL import Image

            Image.fromarray(rgb).save(tmp_path / f.name, format="JPEG", quality=75)
            assert cv2.imread(str(tmp_path / f.name)) is not None
            np.testing.assert_array_equal(
                _jpeg_roundtrip(rgb, 75), cv2.cvtColor(cv2.imread(str(tmp_path / f.name)), cv2.COLOR_BGR2RGB)
            )
        views = _views(polar_maps=tmp_path)
        assert views.protocol["polar_maps"] == tmp_path.name
        for i in range(2):
            assert _sha(views[i]["aerial"]) == str(px[f"aerial_sha256_{i}"])


def _full_size_checkpoint(path: Path) -> Path:
    spec = importlib.util.spec_from_file_location("toker_cvusa_test", TOKER_TEST)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._full_size_checkpoint(path)


@pytest.mark.slow
class TestEvaluateTokerCVACT:
    def test_evaluate_reproduces_upstream_descriptors(self, tmp_path, capsys, caplog):
        """Convert toker --dataset cvact, then geo-bench evaluate --checkpoint on CVACT_val: upstream's
        descriptors (its models on its pixels, the same weights) within 1e-4 (measured: see README)."""
        src = _full_size_checkpoint(tmp_path / "rgan_best_ckpt.pth")
        out = tmp_path / "converted"
        convert("toker", src, out, dataset="cvact")
        manifest = read_manifest(out)
        assert manifest.preprocessing.polar["preset"] == "toker_cvact@1"
        assert manifest.source_options["dataset"] == "cvact"
        store, npz = tmp_path / "r.jsonl", tmp_path / "d.npz"
        args = ["evaluate", "--checkpoint", str(out), "--dataset", "cvact", "--split", "val"]
        rest = ["--store", str(store), "--descriptors", str(npz), "--no-progress", "--device", "cpu"]
        rc = main([*args, "--root", str(CVACT_DIR), *rest])
        assert rc == 0, capsys.readouterr().err
        proto = json.loads(store.read_text().splitlines()[0])["protocol"]
        assert proto["preprocess"] == "upstream"
        assert proto["upstream_preprocessing"]["polar"]["preset"] == "toker_cvact@1"
        assert proto["upstream_preprocessing"]["prepared"]["format"] == "jpeg"
        ours, theirs = np.load(npz), np.load(DATA / "e2e_descriptors.npz")
        assert list(ours["ids"]) == list(theirs["ids"])
        for view in ("ground", "aerial"):
            err = float(np.abs(ours[view] - theirs[view]).max())
            print(f"{view}: max abs difference {err:.2g}")
            assert err <= 1e-4, f"{view}: {err}"
        # a CVUSA folder on CVACT data is refused under --preprocess upstream
        convert("toker", src, tmp_path / "cvusa_folder")
        args = [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "cvusa_folder"),
            "--dataset",
            "cvact",
            "--split",
            "val",
        ]
        rest = [
            "--root",
            str(CVACT_DIR),
            "--store",
            str(tmp_path / "x.jsonl"),
            "--no-progress",
            "--device",
            "cpu",
        ]
        rc = main([*args, *rest])
        assert rc == 2
        assert "convert the checkpoint again with --dataset cvact" in caplog.text
