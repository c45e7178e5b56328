"""Polar-PNG pipelines (SAFA, DSM, L2LTR, GeoDTR): our upstream readers against the pixels the upstream
scripts themselves make, on the real-size images of ``tests/data/upstream/sample4geo/cvusa``.

Fixtures: ``tests/data/upstream/polar`` (README there, made by ``make_pixels.py``): per method the
sha256 of every (3, H, W) float32 model input upstream's reader returned (as our RGB layout), a crop
and per-channel sums for diagnostics, the sha256 of SAFA's / DSM's uint8 polar PNGs, and DSM's seeded
test-time roll.
"""

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from geo_bench.datasets import CVUSA
from geo_bench.datasets.upstream_preprocess import (
    UpstreamViews,
    decoder_versions,
    read_upstream,
    upstream_protocol,
    upstream_roll_shifts,
)
from geo_retrieval.convert import UpstreamPreprocessing
from geo_retrieval.convert.dsm import dsm_preprocessing
from geo_retrieval.convert.geodtr import geodtr_preprocessing
from geo_retrieval.convert.l2ltr import l2ltr_preprocessing
from geo_retrieval.convert.safa import safa_preprocessing
from geo_transforms.presets import apply_polar_preset

DATA = Path(__file__).parent / "data" / "upstream" / "polar"
CVUSA_DIR = Path(__file__).parent / "data" / "upstream" / "sample4geo" / "cvusa"
IDS = ("0000013", "0000014", "0000015")
CROP = (slice(48, 56), slice(300, 316))  # make_pixels.CROP

CASES = {
    "safa": safa_preprocessing(),
    "dsm": dsm_preprocessing(),
    "l2ltr_safa": l2ltr_preprocessing(),
    "l2ltr_dsm": l2ltr_preprocessing(polar_script="dsm"),
    "geodtr": geodtr_preprocessing(polar=True),
}


def _file(view: str, i: str) -> Path:
    return CVUSA_DIR / ("bingmap/19" if view == "aerial" else "streetview/panos") / f"{i}.jpg"


def _sha(x: torch.Tensor | np.ndarray) -> str:
    a = x.numpy() if isinstance(x, torch.Tensor) else x
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _diagnose(fx, view: str, k: int, ours: torch.Tensor) -> str:
    """What differs when a hash does not match: the sums and, for pair 0, the crop."""
    sums = np.abs(ours.double().sum(dim=(1, 2)).numpy() - fx[f"{view}_sum"][k]).max()
    out = f"{view} pair {k}: per-channel sums differ by up to {sums:.3g}"
    if k == 0:
        out += (
            f", crop max abs diff {np.abs(ours[:, CROP[0], CROP[1]].numpy() - fx[f'{view}_crop']).max():.3g}"
        )
    return out


class TestPolarPngPixels:
    @pytest.mark.parametrize("view", ["aerial", "ground"])
    @pytest.mark.parametrize("case", sorted(CASES))
    def test_bit_identical_to_upstream(self, case, view):
        """Our reader returns upstream's model inputs bit for bit (sha256 of the float32 arrays) on all 3
        real-size pairs: the polar render, the imsave stretch / uint8 truncation, the panorama resize and
        the normalisation."""
        fx = np.load(DATA / f"pixels_{case}.npz")
        assert tuple(fx["ids"]) == IDS
        for k, i in enumerate(IDS):
            ours = read_upstream(_file(view, i), view, CASES[case])
            assert ours.dtype == torch.float32 and tuple(ours.shape) == tuple(fx[f"{view}_shape"])
            assert _sha(ours) == str(fx[f"{view}_sha256"][k]), _diagnose(fx, view, k, ours)

    @pytest.mark.parametrize("case", ["safa", "dsm"])
    def test_polar_png_levels(self, case):
        """The uint8 maps before normalisation equal the PNGs of upstream's data_preparation.py
        (scipy.misc.imread + sample_bilinear + scipy.misc.imsave, SciPy 1.1.0)."""
        fx = np.load(DATA / f"pixels_{case}.npz")
        preset = CASES[case].polar["preset"]
        for k, i in enumerate(IDS):
            rgb = np.asarray(Image.open(_file("aerial", i)).convert("RGB"))
            raw = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].double()
            u8 = apply_polar_preset(raw, preset)[0].numpy().astype(np.uint8)
            assert _sha(u8) == str(fx["polar_png_sha256"][k])

    def test_imsave_stretch_matters(self):
        """Without scipy.misc.imsave's min-max stretch (the float map, or the map rounded) the polar
        input differs from upstream's by many grey levels on these images."""
        rgb = np.asarray(Image.open(_file("aerial", IDS[1])).convert("RGB"))
        raw = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].double()
        stretched = apply_polar_preset(raw, "safa_imsave")
        plain = apply_polar_preset(raw, "safa")
        assert float((stretched - plain.round()).abs().max()) >= 10  # measured: 17 levels (15-18 over the 3)
        assert float(stretched.amin()) == 0 and float(stretched.amax()) == 255

    def test_caffe_normalisation_is_upstreams(self):
        """SAFA / DSM: float32 pixels minus float32 means, the in-place ``img[:, :, c] -= 103.939``."""
        pre = CASES["safa"]
        ground = read_upstream(_file("ground", IDS[0]), "ground", pre)
        bgr = cv2.resize(cv2.imread(str(_file("ground", IDS[0]))), (616, 112), interpolation=cv2.INTER_AREA)
        img = bgr.astype(np.float32)
        img[:, :, 0] -= 103.939
        img[:, :, 1] -= 116.779
        img[:, :, 2] -= 123.6
        np.testing.assert_array_equal(ground.numpy(), img[..., ::-1].transpose(2, 0, 1))

    def test_dsm_seeded_roll(self):
        """DSM's test reader after ``np.random.seed(2019)`` with ``grd_noise=360``: the shifts and the rolled
        panoramas, replayed by ``UpstreamViews(ground_shifts=upstream_roll_shifts(...))``."""
        fx = np.load(DATA / "pixels_dsm.npz")
        shifts = upstream_roll_shifts(3, 360.0, seed=2019, width=512)
        assert shifts == tuple(int(s) for s in fx["shifts_noise360"])
        bins = np.round((512 - np.array(shifts)) / 512 * 64) % 64
        np.testing.assert_array_equal(bins, fx["orien_noise360"])
        views = UpstreamViews(CVUSA(CVUSA_DIR, "test"), CASES["dsm"], ground_shifts=shifts)
        for k in range(3):
            assert _sha(views[k]["ground"]) == str(fx["ground_noise360_sha256"][k])
        assert upstream_roll_shifts(3, 0.0) == (0, 0, 0)  # test_cvusa_fov.py's default: no roll
        assert "ground_shifts_sha256" in views.protocol
        with pytest.raises(ValueError, match="ground_shifts has 2 entries for 3 queries"):
            UpstreamViews(CVUSA(CVUSA_DIR, "test"), CASES["dsm"], ground_shifts=(1, 2))


class TestPolarMapFiles:
    """``polar_maps``: polar maps made beforehand (the authors' released files) read as upstream reads them."""

    def _maps(self, tmp_path: Path, case: str) -> Path:
        out = tmp_path / "polarmap" / "19"
        out.mkdir(parents=True)
        preset = CASES[case].polar["preset"]
        for i in IDS:
            rgb = np.asarray(Image.open(_file("aerial", i)).convert("RGB"))
            raw = torch.from_numpy(rgb.transpose(2, 0, 1).copy())[None].double()
            u8 = apply_polar_preset(raw, preset)[0].numpy().astype(np.uint8).transpose(1, 2, 0)
            Image.fromarray(u8).save(out / f"{i}.png")
        return out

    @pytest.mark.parametrize("case", ["safa", "l2ltr_safa", "geodtr"])
    def test_files_equal_the_render(self, tmp_path, case):
        maps = self._maps(tmp_path, case)
        fx = np.load(DATA / f"pixels_{case}.npz")
        views = UpstreamViews(CVUSA(CVUSA_DIR, "test"), CASES[case], polar_maps=maps)
        for k in range(3):
            assert _sha(views[k]["aerial"]) == str(fx["aerial_sha256"][k])
        assert views.protocol["polar_maps"] == "19"

    def test_faults(self, tmp_path):
        maps = self._maps(tmp_path, "dsm")  # 128x512 maps for SAFA's 112x616 model
        views = UpstreamViews(CVUSA(CVUSA_DIR, "test"), CASES["safa"], polar_maps=maps)
        with pytest.raises(ValueError, match=r"0000013\.png: a 128x512 polar map.* reads 112x616 maps"):
            views[0]
        (maps / "0000014.png").unlink()
        with pytest.raises(FileNotFoundError, match=r"0000014\.png"):
            views[1]
        with pytest.raises(FileNotFoundError, match="polar map folder not found"):
            UpstreamViews(CVUSA(CVUSA_DIR, "test"), CASES["safa"], polar_maps=tmp_path / "nope")
        raw = UpstreamPreprocessing(
            "pil", "PIL.Image.BILINEAR", (112, 616), (256, 256), (0.5,) * 3, (0.5,) * 3
        )
        with pytest.raises(ValueError, match="reads raw aerials"):
            UpstreamViews(CVUSA(CVUSA_DIR, "test"), raw, polar_maps=maps)
        with pytest.raises(ValueError, match="view 'polar_map' needs a manifest with a polar aerial"):
            read_upstream(maps / "0000013.png", "polar_map", raw)
        with pytest.raises(ValueError, match="view must be one of"):
            read_upstream(maps / "0000013.png", "sky", raw)


class TestRecords:
    def test_protocol_names_preset_and_decoders(self):
        proto = upstream_protocol(CASES["safa"])
        assert proto["reader"] == "opencv_caffe" and proto["max_pixel_value"] == 1.0
        assert proto["polar"] == {
            "preset": "safa_imsave@1",
            "size": [112, 616],
            "center": "safa",
            "input": "raw aerial image",
            "decode": "pil",
        }
        versions = decoder_versions()
        assert set(versions) == {"pillow", "pillow_jpeg", "opencv"}
        assert versions["pillow_jpeg"].startswith(("libjpeg-turbo ", "libjpeg "))

    def test_float_preset_refused_by_pil_reader(self):
        pre = l2ltr_preprocessing()
        legacy = UpstreamPreprocessing(**{**pre.to_dict(), "polar": {**pre.polar, "preset": "safa@1"}})
        with pytest.raises(ValueError, match=r"polar preset safa@1 must end in a uint8 step"):
            read_upstream(_file("aerial", IDS[0]), "aerial", legacy)

    def test_unknown_decoder(self):
        pre = safa_preprocessing()
        bad = UpstreamPreprocessing(**{**pre.to_dict(), "polar": {**pre.polar, "decode": "imageio"}})
        with pytest.raises(ValueError, match="unknown polar decode 'imageio'"):
            read_upstream(_file("aerial", IDS[0]), "aerial", bad)
