from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from geo_transforms import (
    PolarPreset,
    PolarPresetTransform,
    apply_polar_preset,
    get_polar_preset,
    list_polar_presets,
    polar_transform,
    register_polar_preset,
)
from geo_transforms.presets import _uint8_bytescale, _uint8_imageio
from geo_transforms.testing import BaseTester

DATA = Path(__file__).parent / "data" / "polar_presets"
# (preset, row stride, column stride) of the stored references; see data/polar_presets/data.py
STORED = [
    ("safa", 5, 7),
    ("dsm", 6, 8),
    ("toker_cvusa_legacy", 5, 7),
    ("safa_imsave", 5, 7),
    ("dsm_imsave", 6, 8),
    ("geodtr", 5, 7),
    ("toker_cvact", 5, 7),
]
#: presets whose stored reference is made from ``aerial // 2 + 40`` (levels 40-167: the stretch matters)
NARROW = ("safa_imsave", "dsm_imsave", "toker_cvact")
#: ``scipy.misc.bytescale`` of SciPy 1.1.0 (Python 3.7) on three (2, 2, 3) float64 images, flattened:
#: exact halves on the full range, a narrow range stretched to 0-255, a constant image (-> 0)
SCIPY_BYTESCALE = [
    (
        [0.0, 0.5, 1.5, 2.4999999, 2.5, 127.5, 254.49, 254.5, 255.0, 100.0, 3.0, 77.25],
        [0, 1, 2, 2, 3, 128, 254, 255, 255, 100, 3, 77],
    ),
    (
        [10.0, 10.02, 10.04, 12.55, 15.1, 17.65, 20.2, 11.0, 19.9, 14.3, 16.0, 18.18],
        [0, 0, 1, 64, 127, 191, 255, 25, 247, 108, 150, 205],
    ),
    ([42.7] * 12, [0] * 12),
]
#: ``imageio.core.util.image_as_uint(x, bitdepth=8)`` of imageio 2.9.0 on four (2, 2, 3) float64 images
#: (what ``imageio.imsave`` writes for a float image): the full range (halves truncate: + 0.499999999),
#: a narrow range stretched (107 / 204 where SciPy's bytescale gives 108 / 205), the [0, 1] branch
#: (x * 255, no stretch) and a constant image (truncated, not 0)
IMAGEIO_UINT8 = [
    (
        [0.0, 0.5, 1.5, 2.4999999, 2.5, 127.5, 254.49, 254.5, 255.0, 100.0, 3.0, 77.25],
        [0, 0, 1, 2, 2, 127, 254, 254, 255, 100, 3, 77],
    ),
    (
        [10.0, 10.02, 10.04, 12.55, 15.1, 17.65, 20.2, 11.0, 19.9, 14.3, 16.0, 18.18],
        [0, 0, 1, 64, 127, 191, 255, 25, 247, 107, 150, 204],
    ),
    (
        [0.0, 0.1, 0.002, 0.5, 0.998, 1.0, 0.25, 0.75, 0.0019607, 0.0019608, 0.33, 0.9999],
        [0, 25, 1, 127, 254, 255, 64, 191, 0, 1, 84, 255],
    ),
    ([42.7] * 12, [42] * 12),
]


def _aerial(device: torch.device, dtype: torch.dtype, narrow: bool = False) -> torch.Tensor:
    aerial = np.load(DATA / "aerial.npy")  # (64, 64, 3) uint8
    if narrow:
        aerial = aerial // 2 + 40
    return torch.from_numpy(aerial).permute(2, 0, 1)[None].to(device, dtype)


class TestPolarPresets(BaseTester):
    def test_registry(self):
        assert list_polar_presets() == [
            "dsm@1",
            "dsm_imsave@1",
            "geodtr@1",
            "safa@1",
            "safa_imsave@1",
            "toker_cvact@1",
            "toker_cvusa_legacy@1",
        ]
        safa = get_polar_preset("safa")
        assert safa is get_polar_preset("safa@1")
        assert (safa.out_size, safa.center, safa.steps, safa.identifier) == (
            (112, 616),
            "safa",
            ("polar",),
            "safa@1",
        )
        assert get_polar_preset("dsm").out_size == (128, 512)
        legacy = get_polar_preset("toker_cvusa_legacy")
        assert legacy.render_size == (224, 1232) and legacy.out_size == (112, 616)
        assert legacy.steps == ("polar_safa_exact", "uint8_truncate", "resize_bicubic", "uint8_round")
        for name, size in (("safa_imsave", (112, 616)), ("dsm_imsave", (128, 512))):
            p = get_polar_preset(name)
            assert (p.out_size, p.render_size, p.steps) == (
                size,
                size,
                ("polar_safa_exact", "uint8_bytescale"),
            )
        cvact = get_polar_preset("toker_cvact@1")
        assert (cvact.out_size, cvact.render_size, cvact.steps) == (
            (112, 616),
            (112, 616),
            ("polar_safa_exact", "uint8_imageio"),
        )
        geodtr = get_polar_preset("geodtr@1")
        assert geodtr.out_size == (122, 671) and geodtr.steps == ("polar_safa_exact", "uint8_truncate")

    def test_frozen_and_record(self):
        preset = get_polar_preset("dsm")
        with pytest.raises(dataclasses.FrozenInstanceError):
            preset.version = 2  # type: ignore[misc]
        record = preset.record()
        assert record["identifier"] == "dsm@1" and record["out_size"] == [128, 512]
        assert record["steps"] == ["polar"] and record["center"] == "safa" and record["source"]

    def test_versioning(self):
        v1 = get_polar_preset("safa")
        with pytest.raises(
            ValueError, match=r"polar preset 'safa@1' is already registered; pass overwrite=True"
        ):
            register_polar_preset(dataclasses.replace(v1, center="pixel"))
        # one registry policy: any existing identifier raises (a changed recipe gets a new version) ...
        with pytest.raises(ValueError, match="already registered"):
            register_polar_preset(v1)
        # ... unless replaced on purpose
        assert register_polar_preset(v1, overwrite=True) is v1
        assert get_polar_preset("safa@1") is v1

    def test_exception(self):
        with pytest.raises(ValueError, match=r"unknown polar preset 'polar'; available: \['dsm@1'"):
            get_polar_preset("polar")
        with pytest.raises(ValueError, match="unknown version in 'safa@7'"):
            get_polar_preset("safa@7")
        with pytest.raises(TypeError, match="name must be a preset name string"):
            get_polar_preset(3)
        with pytest.raises(TypeError, match="preset must be a PolarPreset"):
            register_polar_preset("safa")
        with pytest.raises(ValueError, match="steps must start with one of"):
            PolarPreset("x", 1, (4, 8), "safa", (4, 8), ("resize_bicubic",))
        with pytest.raises(ValueError, match="steps must start with one of"):
            PolarPreset("x", 1, (4, 8), "safa", (4, 8), ("polar", "sharpen"))
        with pytest.raises(ValueError, match="without a resize step"):
            PolarPreset("x", 1, (4, 8), "safa", (8, 16), ("polar",))
        with pytest.raises(ValueError, match="version must be an int >= 1"):
            PolarPreset("x", 0, (4, 8), "safa", (4, 8), ("polar",))
        with pytest.raises(ValueError, match="center 'safa'"):
            PolarPreset("x", 1, (4, 8), "pixel", (4, 8), ("polar_safa_exact",))
        with pytest.raises(ValueError, match=r"out_size must be positive"):
            PolarPreset("x", 1, (0, 8), "safa", (0, 8), ("polar",))
        with pytest.raises(ValueError, match=r"aerial must be square \(B, C, S, S\)"):
            apply_polar_preset(torch.rand(1, 3, 8, 9), "safa")
        with pytest.raises(TypeError, match="aerial must be a floating tensor"):
            apply_polar_preset(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "safa")
        with pytest.raises(ValueError, match="max_value must be a positive number"):
            apply_polar_preset(torch.rand(1, 3, 8, 8), "safa", max_value=0)

    @pytest.mark.parametrize(("name", "row_stride", "col_stride"), STORED)
    def test_matches_stored_reference(self, device, name, row_stride, col_stride):
        expected = torch.from_numpy(np.load(DATA / f"{name}.npy").astype(np.float64))
        for dtype in (torch.float32, torch.float64):
            out = apply_polar_preset(_aerial(device, dtype, narrow=name in NARROW), name)
            assert out.shape == (1, 3, *get_polar_preset(name).out_size) and out.dtype == dtype
            actual = out[0].permute(1, 2, 0)[::row_stride, ::col_stride].cpu().double()
            if any(step.startswith("uint8") for step in get_polar_preset(name).steps):
                assert torch.equal(actual, expected)  # uint8 steps: exact, in any dtype
            else:
                err = (actual - expected).abs().max().item()
                assert err < 1e-3, f"{name} {dtype}: max error {err:.3g} on the 0-255 scale"

    def test_max_value_scale(self, device):
        aerial = _aerial(device, torch.float64)
        for name in ("safa", "toker_cvusa_legacy"):
            on_255 = apply_polar_preset(aerial, name)
            on_1 = apply_polar_preset(aerial / 255, name, max_value=1.0)
            self.assert_close(on_1 * 255, on_255, rtol=0, atol=1e-9)

    def test_bytescale_matches_scipy(self, device):
        """The ``uint8_bytescale`` step is SciPy 1.1's ``bytescale`` (values from SciPy 1.1.0 itself),
        one (cmin, cmax) per image of the batch."""
        images = torch.tensor([v for v, _ in SCIPY_BYTESCALE], dtype=torch.float64, device=device)
        images = images.view(3, 2, 2, 3).permute(0, 3, 1, 2)  # (B, C, H, W) from (B, H, W, C)
        out = _uint8_bytescale(images).permute(0, 2, 3, 1).reshape(3, -1)
        assert out.cpu().tolist() == [[float(b) for b in e] for _, e in SCIPY_BYTESCALE]
        # through a preset: the stretch is per image of the batch
        aerial = _aerial(device, torch.float64, narrow=True)
        both = apply_polar_preset(torch.cat([aerial, aerial / 2]), "safa_imsave")
        assert torch.equal(both[0], both[1]) and both.amin() == 0 and both.amax() == 255
        assert apply_polar_preset(aerial / 255, "safa_imsave", max_value=1.0).mul(255).round().equal(both[:1])

    def test_imageio_matches_imageio(self, device):
        """The ``uint8_imageio`` step is imageio 2.9.0's ``image_as_uint`` (values from imageio itself),
        one (min, max) per image of the batch; its rounding differs from SciPy's bytescale."""
        images = torch.tensor([v for v, _ in IMAGEIO_UINT8], dtype=torch.float64, device=device)
        images = images.view(4, 2, 2, 3).permute(0, 3, 1, 2)
        out = _uint8_imageio(images).permute(0, 2, 3, 1).reshape(4, -1)
        assert out.cpu().tolist() == [[float(b) for b in e] for _, e in IMAGEIO_UINT8]
        assert not torch.equal(_uint8_imageio(images[:2]), _uint8_bytescale(images[:2]))
        aerial = _aerial(device, torch.float64, narrow=True)
        both = apply_polar_preset(torch.cat([aerial, aerial / 2]), "toker_cvact")
        assert torch.equal(both[0], both[1]) and both.amin() == 0 and both.amax() == 255

    def test_legacy_close_to_direct(self, device):
        # the legacy chain is a quantised, resampled version of the direct 112x616 map
        aerial = _aerial(device, torch.float32)
        legacy = apply_polar_preset(aerial, "toker_cvusa_legacy")
        direct = polar_transform(aerial, (112, 616))
        assert (legacy - direct).abs().mean() < 20  # noise input: resampling differences only

    def test_module(self, device):
        aerial = _aerial(device, torch.float32)
        module = PolarPresetTransform("dsm")
        assert torch.equal(module(aerial), apply_polar_preset(aerial, "dsm"))
        assert "dsm@1" in repr(module)

    def test_gradcheck(self, device):
        aerial = (_aerial(device, torch.float64)[..., :9, :9] / 255).requires_grad_()
        preset = PolarPreset("tiny", 1, (4, 12), "safa", (6, 20), ("polar", "resize_bicubic"))
        assert self.gradcheck(lambda a: apply_polar_preset(a, preset, max_value=1.0), (aerial,))
