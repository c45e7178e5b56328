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
from geo_transforms.testing import BaseTester

DATA = Path(__file__).parent / "data" / "polar_presets"
# (preset, row stride, column stride) of the stored references; see data/polar_presets/data.py
STORED = [("safa", 5, 7), ("dsm", 6, 8), ("toker_cvusa_legacy", 5, 7)]


def _aerial(device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    aerial = np.load(DATA / "aerial.npy")  # (64, 64, 3) uint8
    return torch.from_numpy(aerial).permute(2, 0, 1)[None].to(device, dtype)


class TestPolarPresets(BaseTester):
    def test_registry(self):
        assert list_polar_presets() == ["dsm@1", "safa@1", "toker_cvusa_legacy@1"]
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
            out = apply_polar_preset(_aerial(device, dtype), name)
            assert out.shape == (1, 3, *get_polar_preset(name).out_size) and out.dtype == dtype
            actual = out[0].permute(1, 2, 0)[::row_stride, ::col_stride].cpu().double()
            if name == "toker_cvusa_legacy":
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
