"""Corruption robustness protocol (``geo_bench.protocols.corruptions``) and its heat map."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from geo_bench.protocols import (
    CORRUPTION_GROUPS,
    CORRUPTION_SET_VERSION,
    CORRUPTIONS,
    CorruptedViews,
    corrupt,
    corruption_set_hash,
    get_corruption,
    relative_corruption_error,
    sample_generator,
    summarise_corruptions,
)
from geo_bench.protocols import corruptions as corruptions_module

pytestmark = pytest.mark.one_thread

NAMES = list(CORRUPTIONS)
RANDOM = [n for n in NAMES if CORRUPTIONS[n].random]
SEVERITIES = (1, 2, 3, 4, 5)
# 80 rows: s = 80 / 224 = 0.36, large enough that every spatial corruption is visible at severity 1
H, W = 80, 320


def _scene(b: int = 2, h: int = H, w: int = W, seed: int = 0) -> Tensor:
    """A smooth random scene with sharp edges, float32 in [0.05, 0.95], (b, 3, h, w)."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(
        torch.rand(b, 3, h // 8, w // 8, generator=g), size=(h, w), mode="bilinear", align_corners=False
    )
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    checks = (((yy // 40) + (xx // 40)) % 2).float()
    return (0.1 + 0.45 * smooth + 0.4 * checks).clamp(0.05, 0.95)


def _golden_input() -> Tensor:
    """(1, 3, 56, 112) uint8 defined by integer arithmetic only (no float, no RNG): the same bytes on
    every machine and torch version."""
    y, x = np.meshgrid(np.arange(56), np.arange(112), indexing="ij")
    channels = [
        ((x - 56) ** 2 + (y - 28) ** 2) // 13 % 256,
        (37 * x + 11 * y + 5 * ((x // 8 + y // 8) % 2) * 90) % 256,
        np.where((x // 14 + y // 14) % 2 == 0, 40 + 2 * y, 210 - x),
    ]
    return torch.from_numpy(np.stack(channels).astype(np.uint8))[None]


def _quantised(x: Tensor) -> Tensor:
    return torch.round(x.double() * 255) / 255


def _psnr(a: Tensor, b: Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def _sha(x: Tensor) -> str:
    assert x.dtype == torch.uint8
    return hashlib.sha256(x.cpu().contiguous().numpy().tobytes()).hexdigest()


@pytest.fixture(scope="module")
def scene() -> Tensor:
    return _scene()


@pytest.fixture(scope="module")
def outputs(scene: Tensor) -> dict[tuple[str, int], Tensor]:
    """Every corruption at every severity on the CPU scene, ids "a", "b", seed 0."""
    return {(n, s): corrupt(scene, n, s, seed=0, sample_ids=["a", "b"]) for n in NAMES for s in SEVERITIES}


class TestRegistry:
    def test_cvusa_c_list_and_groups(self):
        assert NAMES == [
            "gaussian_noise",
            "shot_noise",
            "impulse_noise",
            "speckle_noise",
            "defocus_blur",
            "glass_blur",
            "motion_blur",
            "zoom_blur",
            "snow",
            "frost",
            "fog",
            "brightness",
            "spatter",
            "contrast",
            "pixelate",
            "jpeg_compression",
        ]
        assert CORRUPTION_GROUPS == {
            "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
            "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
            "weather": ("snow", "frost", "fog", "brightness", "spatter"),
            "digital": ("contrast", "pixelate", "jpeg_compression"),
        }

    @pytest.mark.parametrize("name", NAMES)
    def test_tables(self, name):
        spec = CORRUPTIONS[name]
        assert spec.name == name and len(spec.params) == 5
        assert all(len(row) == len(spec.fields) for row in spec.params)

    def test_imagenet_c_values(self):
        # spot checks against hendrycks/robustness imagenet_c/corruptions.py
        assert [r[0] for r in CORRUPTIONS["gaussian_noise"].params] == [0.08, 0.12, 0.18, 0.26, 0.38]
        assert [r[0] for r in CORRUPTIONS["shot_noise"].params] == [60, 25, 12, 5, 3]
        assert CORRUPTIONS["motion_blur"].params[4] == (20, 15)
        assert CORRUPTIONS["snow"].params[2] == (0.55, 0.3, 4, 0.9, 12, 8, 0.7)
        assert [r[0] for r in CORRUPTIONS["jpeg_compression"].params] == [25, 18, 15, 10, 7]

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="available"):
            get_corruption("rain")
        with pytest.raises(TypeError):
            get_corruption(3)  # type: ignore[arg-type]


class TestOutputs:
    @pytest.mark.parametrize("name", NAMES)
    def test_every_severity(self, name, scene, outputs):
        clean = _quantised(scene)
        psnr = {}
        for s in SEVERITIES:
            y = outputs[name, s]
            assert y.shape == scene.shape and y.dtype == scene.dtype and y.device == scene.device
            assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
            levels = torch.round(y.double() * 255)
            assert torch.equal(y, levels.to(y.dtype) / 255), "not on 8-bit levels: x != round(255 x) / 255"
            psnr[s] = _psnr(y, clean)
            assert psnr[s] < 60, f"severity {s} barely changes the image (PSNR {psnr[s]:.1f} dB)"
        assert psnr[5] < psnr[1] - 0.5, f"severity 5 is not stronger than 1: {psnr}"

    @pytest.mark.parametrize("name", NAMES)
    def test_on_device(self, name, device):
        x = _scene(2, 48, 96, seed=3)
        y_dev = corrupt(x.to(device), name, 4, seed=5, sample_ids=[0, 1])
        assert y_dev.device.type == device.type
        # same bits on every device (the arithmetic is exact or elementwise IEEE in a fixed order)
        assert torch.equal(y_dev.cpu(), corrupt(x, name, 4, seed=5, sample_ids=[0, 1]))

    def test_dtype_conventions(self, scene):
        u8 = torch.round(scene * 255).to(torch.uint8)
        y8 = corrupt(u8, "fog", 3, seed=0, sample_ids=["a", "b"])
        assert y8.dtype == torch.uint8
        for dtype in (torch.float16, torch.float64):
            y = corrupt(u8.to(dtype) / 255, "fog", 3, seed=0, sample_ids=["a", "b"])
            assert y.dtype == dtype
            assert torch.equal(torch.round(y.float() * 255).to(torch.uint8), y8)

    @pytest.mark.parametrize("input_dtype", [torch.float64, torch.uint8])
    def test_input_untouched(self, input_dtype):
        x = _scene(2, 32, 64).to(torch.float64)
        x = (x * 255).round().to(torch.uint8) if input_dtype == torch.uint8 else x
        before = x.clone()
        for name in NAMES:
            corrupt(x, name, 5, seed=0, sample_ids=["a", "b"])
        assert torch.equal(x, before)

    def test_brightness_and_contrast_by_hand(self):
        x = torch.tensor([0.2, 0.4, 0.0]).view(1, 3, 1, 1).expand(1, 3, 2, 2).contiguous()
        x = torch.round(x * 255) / 255
        y = corrupt(x, "brightness", 1, seed=0, sample_ids=["p"])  # V 0.4 -> 0.5: every channel x 1.25
        assert torch.equal(y[0, :, 0, 0], torch.round(x[0, :, 0, 0].double() * 1.25 * 255).float() / 255)
        y = corrupt(x, "contrast", 5, seed=0, sample_ids=["p"])  # a flat image keeps its mean
        assert torch.equal(y, x)


class TestDeterminism:
    @pytest.mark.parametrize("name", NAMES)
    def test_seeded_identity(self, name, scene, outputs):
        again = corrupt(scene, name, 3, seed=0, sample_ids=["a", "b"])
        assert torch.equal(again, outputs[name, 3])
        other_seed = corrupt(scene, name, 3, seed=1, sample_ids=["a", "b"])
        other_ids = corrupt(scene, name, 3, seed=0, sample_ids=["c", "d"])
        if CORRUPTIONS[name].random:
            assert not torch.equal(other_seed, outputs[name, 3])
            assert not torch.equal(other_ids, outputs[name, 3])
            # the two images have independent streams
            swapped = corrupt(scene, name, 3, seed=0, sample_ids=["b", "a"])
            assert not torch.equal(swapped, outputs[name, 3])
        else:
            assert torch.equal(other_seed, outputs[name, 3]) and torch.equal(other_ids, outputs[name, 3])

    @pytest.mark.parametrize("name", NAMES)
    def test_independent_of_batch(self, name, device):
        x = _scene(3, 48, 96, seed=7).to(device)
        ids = ["p", "q", "r"]
        whole = corrupt(x, name, 5, seed=2, sample_ids=ids)
        for i in range(3):
            alone = corrupt(x[i : i + 1], name, 5, seed=2, sample_ids=[ids[i]])
            assert torch.equal(alone, whole[i : i + 1]), f"image {i} depends on its batch"
        mixed = corrupt(
            torch.stack([x[2], _scene(1, 48, 96, seed=9)[0].to(device), x[0]]),
            name,
            5,
            seed=2,
            sample_ids=["r", "z", "p"],
        )
        assert torch.equal(mixed[0], whole[2]) and torch.equal(mixed[2], whole[0])

    def test_independent_of_threads(self):
        x = _scene(2, 48, 96, seed=4)
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(1)
            one = {n: corrupt(x, n, 4, seed=0, sample_ids=["a", "b"]) for n in NAMES}
            torch.set_num_threads(2)
            two = {n: corrupt(x, n, 4, seed=0, sample_ids=["a", "b"]) for n in NAMES}
        finally:
            torch.set_num_threads(threads)
        assert [n for n in NAMES if not torch.equal(one[n], two[n])] == []

    def test_streams(self):
        a = sample_generator(0, "fog", 3, "x").random(4)
        assert np.array_equal(a, sample_generator(0, "fog", 3, "x").random(4))
        assert np.array_equal(a, sample_generator(0, "fog", 3, b"x".decode()).random(4))
        for other in (
            sample_generator(1, "fog", 3, "x"),
            sample_generator(0, "snow", 3, "x"),
            sample_generator(0, "fog", 4, "x"),
            sample_generator(0, "fog", 3, "y"),
        ):
            assert not np.array_equal(a, other.random(4))
        assert np.array_equal(
            sample_generator(0, "fog", 3, 7).random(4), sample_generator(0, "fog", 3, "7").random(4)
        )


# Golden SHA-256 of the uint8 bytes of corrupt(_golden_input(), name, severity, seed=2024,
# sample_ids=["golden"]), an input built from integers only. Generated once, on Linux x86-64 with torch
# 2.15 (CPU), numpy 2.4.6 and Pillow 13.0 (libjpeg-turbo), by running this file as a script
# (``python packages/geo-bench/tests/test_protocols_corruptions.py`` prints the table). A mismatch means
# the pixels of the set changed on this machine, device or version (numpy's samplers, libjpeg, torch's
# arithmetic, or our code): find out why; if the change is intended, bump CORRUPTION_SET_VERSION and
# regenerate (and re-pin TestSetHash.PINNED).
GOLDEN = {
    ("gaussian_noise", 3): "d81ab87480ca45335e7899242394b6a8844ab977ea365e0f3325be58b07118fa",
    ("shot_noise", 3): "ccee0bbf31636fbd3f8b0915597ca33481161fcb69dddc7fb8459a69c19ada24",
    ("impulse_noise", 2): "0940e30bb080d76c7e00fe33787dfcaee2adc05565e7a3fe6884105f0f5e7a8c",
    ("defocus_blur", 5): "69acbed49b45692ccd6a93be50206142442c06149b8fcc84de549a57b5fc975e",
    ("glass_blur", 3): "bff1b9027cfea08868c6d60838139fb5efa25852e694bb6f9399dfbc6b9e2f77",
    ("motion_blur", 4): "2854224292636a496187b21437e8a62f0dcee20dd046e3bbb49e711dcbb1d97a",
    ("zoom_blur", 2): "ebb58319b2b3e3db0337a9ce275cd815bff92d3f48e5b3fe30577dad9711e55e",
    ("snow", 3): "14a83a8ff362eef935661f9aa275114bd8225c16069f0accdfd0dc85b16534c0",
    ("frost", 2): "a565abd6ca013731d819bd9fc3922290e579e18103ccef4f9bf5be435be2691f",
    ("fog", 4): "9cf3c698e1e54f0b30ccb51b5e40d2afde59da97322213c51b3ed337bb0f923b",
    ("spatter", 2): "896e464fb674186788e2299884d2bdf7623db6bc5acc003dadb6169a1b04eb25",
    ("spatter", 5): "f14ae471198a1338fd8ee712370318a7d1ee3bc1295e2b0cee9fb5c88b922ad9",
    ("pixelate", 4): "46eb1dffe9ccdd463d5f1c48ac1384a50c308f5d8aab70f734339b7895426d71",
    ("jpeg_compression", 3): "b761f1d25b85a0f57df2fca52446fe18e96512c13b82daf1dc5d93d37564376b",
}


@pytest.mark.parametrize(("name", "severity"), list(GOLDEN))
def test_golden_pixels(name, severity, device):
    y = corrupt(_golden_input().to(device), name, severity, seed=2024, sample_ids=["golden"])
    assert _sha(y) == GOLDEN[name, severity]


class TestSetHash:
    # Pinned: changes only together with CORRUPTION_SET_VERSION.
    PINNED = "8eee4dab109f16a101c71bbb0f1aa9d2889d93a75a13c9cb58241b53238ebd13"

    def test_stable(self):
        assert CORRUPTION_SET_VERSION == "cvbench-c-1"
        assert corruption_set_hash() == corruption_set_hash() == self.PINNED

    def test_changes_with_a_parameter(self, monkeypatch):
        spec = CORRUPTIONS["gaussian_noise"]
        bumped = dataclasses.replace(spec, params=((0.09,), *spec.params[1:]))
        monkeypatch.setitem(CORRUPTIONS, "gaussian_noise", bumped)
        assert corruption_set_hash() != self.PINNED
        # and the implementation reads the same table
        x = _scene(1, 32, 64)
        with monkeypatch.context() as m:
            m.setitem(CORRUPTIONS, "gaussian_noise", spec)
            before = corrupt(x, "gaussian_noise", 1, seed=0, sample_ids=["a"])
        assert not torch.equal(corrupt(x, "gaussian_noise", 1, seed=0, sample_ids=["a"]), before)

    def test_changes_with_a_constant_or_order(self, monkeypatch):
        with monkeypatch.context() as m:
            m.setitem(corruptions_module._CONSTANTS, "mud_rgb", (64, 42, 20))
            assert corruption_set_hash() != self.PINNED
        with monkeypatch.context() as m:
            m.setattr(corruptions_module, "CORRUPTION_SET_VERSION", "cvbench-c-2")
            assert corruption_set_hash() != self.PINNED
        reordered = dict(reversed(list(CORRUPTIONS.items())))
        monkeypatch.setattr(corruptions_module, "CORRUPTIONS", reordered)
        assert corruption_set_hash() != self.PINNED


class TestErrors:
    def test_inputs(self, scene):
        ids = ["a", "b"]
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            corrupt(scene[0], "fog", 1, seed=0, sample_ids=ids)
        with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
            corrupt(torch.cat([scene, scene[:, :1]], 1), "fog", 1, seed=0, sample_ids=ids)
        with pytest.raises(ValueError, match="normalised"):
            corrupt((scene - 0.45) / 0.22, "fog", 1, seed=0, sample_ids=ids)
        with pytest.raises(ValueError, match="NaN"):
            corrupt(scene.clone().fill_(float("nan")), "fog", 1, seed=0, sample_ids=ids)
        with pytest.raises(TypeError, match="uint8"):
            corrupt((scene * 255).int(), "fog", 1, seed=0, sample_ids=ids)
        with pytest.raises(ValueError, match="2 images"):
            corrupt(scene, "fog", 1, seed=0, sample_ids=["a"])
        with pytest.raises(TypeError, match="sequence"):
            corrupt(scene, "fog", 1, seed=0, sample_ids="ab")

    def test_severity_seed_generator(self, scene):
        for bad in (0, 6):
            with pytest.raises(ValueError, match=r"1\.\.5"):
                corrupt(scene, "fog", bad, seed=0, sample_ids=["a", "b"])
        with pytest.raises(TypeError, match="severity"):
            corrupt(scene, "fog", 2.0, seed=0, sample_ids=["a", "b"])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="seed"):
            corrupt(scene, "fog", 2, seed="0", sample_ids=["a", "b"])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="random"):
            CORRUPTIONS["fog"](scene, 2)
        with pytest.raises(ValueError, match="one per image"):
            CORRUPTIONS["fog"](scene, 2, [np.random.default_rng(0)])
        assert torch.equal(
            CORRUPTIONS["contrast"](scene, 2), corrupt(scene, "contrast", 2, seed=9, sample_ids=["x", "y"])
        )

    def test_single_generator(self, scene):
        a = CORRUPTIONS["snow"](scene, 2, np.random.default_rng(3))
        assert torch.equal(a, CORRUPTIONS["snow"](scene, 2, np.random.default_rng(3)))
        assert not torch.equal(a, CORRUPTIONS["snow"](scene, 2, np.random.default_rng(4)))


class TestRCE:
    def test_hand_cases(self):
        assert relative_corruption_error(50.0, 40.0) == pytest.approx(0.2)
        assert relative_corruption_error(50.0, [50, 40, 30, 20, 10]) == pytest.approx(0.4)
        assert relative_corruption_error(0.5, {1: 0.5, 5: 0.3}) == pytest.approx(0.2)
        assert relative_corruption_error(40.0, 50.0) == pytest.approx(-0.25)
        assert relative_corruption_error(80.0, 0.0) == 1.0
        assert relative_corruption_error(80.0, {"1": 40.0}) == 0.5  # JSON keys

    def test_mean_of_rces_equals_rce_of_mean(self):
        per_severity = [61.0, 47.5, 33.0, 20.0, 12.5]
        rces = [relative_corruption_error(70.0, v) for v in per_severity]
        assert relative_corruption_error(70.0, per_severity) == pytest.approx(sum(rces) / 5)

    def test_errors(self):
        with pytest.raises(ValueError, match="undefined"):
            relative_corruption_error(0.0, 10.0)
        with pytest.raises(ValueError, match=">= 0"):
            relative_corruption_error(-1.0, 10.0)
        with pytest.raises(ValueError, match="finite"):
            relative_corruption_error(50.0, [float("nan")])
        with pytest.raises(ValueError, match="no values"):
            relative_corruption_error(50.0, [])
        with pytest.raises(ValueError, match=r"1\.\.5"):
            relative_corruption_error(50.0, {6: 1.0})
        with pytest.raises(TypeError):
            relative_corruption_error(True, 1.0)  # type: ignore[arg-type]

    def test_summary(self):
        table = summarise_corruptions(
            80.0, {"fog": [80, 60, 40, 40, 40], "contrast": {1: 80.0, 2: 72.0}, "gaussian_noise": [40.0] * 5}
        )
        assert list(table["corruptions"]) == ["gaussian_noise", "fog", "contrast"]  # registry order
        fog = table["corruptions"]["fog"]
        assert fog["group"] == "weather" and fog["R@1"] == {1: 80.0, 2: 60.0, 3: 40.0, 4: 40.0, 5: 40.0}
        assert fog["mean_R@1"] == pytest.approx(52.0) and fog["RCE"] == pytest.approx(0.35)
        assert table["corruptions"]["contrast"]["RCE"] == pytest.approx(0.05)
        assert table["mRCE"] == pytest.approx((0.5 + 0.35 + 0.05) / 3)
        assert table["mean_R@1"] == pytest.approx((40 + 52 + 76) / 3)
        assert set(table["groups"]) == {"noise", "weather", "digital"}
        assert table["groups"]["noise"] == {"mean_R@1": 40.0, "mRCE": 0.5, "n": 1}
        assert table["corruption_set"] == {"version": CORRUPTION_SET_VERSION, "hash": corruption_set_hash()}
        dead = summarise_corruptions(0.0, {"fog": [0.0] * 5})
        assert dead["corruptions"]["fog"]["RCE"] is None and dead["mRCE"] is None
        with pytest.raises(ValueError, match="unknown corruption"):
            summarise_corruptions(80.0, {"rain": [1.0]})


class _Pairs:
    """A tiny cross-view dataset: float ground, uint8 aerial, string ids, an extra key."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.ground = _scene(3, 48, 96, seed=11)
        self.aerial = (torch.rand(3, 3, 32, 32, generator=g) * 255).round().to(torch.uint8)

    def __len__(self) -> int:
        return 3

    def __getitem__(self, i: int) -> dict:
        return {
            "ground": self.ground[i],
            "aerial": self.aerial[i],
            "id": f"pair{i}",
            "utm": torch.tensor([i, 0.0]),
        }


class TestCorruptedViews:
    def test_ground_only(self):
        base = _Pairs()
        ds = CorruptedViews(base, "motion_blur", 3, seed=0)
        assert len(ds) == 3
        for i in range(3):
            clean, out = base[i], ds[i]
            assert out["aerial"] is clean["aerial"] or torch.equal(out["aerial"], clean["aerial"])
            assert out["id"] == clean["id"] and torch.equal(out["utm"], clean["utm"])
            assert out["ground"].dtype == torch.float32 and out["ground"].shape == clean["ground"].shape
            assert not torch.equal(out["ground"], clean["ground"])
            expected = corrupt(
                clean["ground"][None], "motion_blur", 3, seed=0, sample_ids=[f"ground:pair{i}"]
            )[0]
            assert torch.equal(out["ground"], expected)

    def test_aerial_only_keeps_uint8(self):
        base = _Pairs()
        ds = CorruptedViews(base, "gaussian_noise", 2, seed=0, views=("aerial",))
        out = ds[1]
        assert out["ground"] is base.ground[1] or torch.equal(out["ground"], base.ground[1])
        assert out["aerial"].dtype == torch.uint8 and not torch.equal(out["aerial"], base.aerial[1])

    def test_batch_apply_matches_samples(self):
        base = _Pairs()
        ds = CorruptedViews(base, "spatter", 2, seed=3, views=("ground", "aerial"))
        batch = {"ground": base.ground, "aerial": base.aerial, "id": [f"pair{i}" for i in range(3)]}
        out = ds.apply(batch)
        for i in range(3):
            assert torch.equal(out["ground"][i], ds[i]["ground"]) and torch.equal(
                out["aerial"][i], ds[i]["aerial"]
            )

    def test_errors(self):
        base = _Pairs()
        with pytest.raises(ValueError, match="views"):
            CorruptedViews(base, "fog", 1, seed=0, views="ground")
        with pytest.raises(ValueError, match="available"):
            CorruptedViews(base, "rain", 1, seed=0)
        with pytest.raises(ValueError, match=r"1\.\.5"):
            CorruptedViews(base, "fog", 9, seed=0)
        with pytest.raises(KeyError, match="no view"):
            CorruptedViews(base, "fog", 1, seed=0, views=("street",))[0]
        with pytest.raises(KeyError, match="id"):
            CorruptedViews([{"ground": base.ground[0]}], "fog", 1, seed=0)[0]


def test_heatmap_written_atomically(tmp_path):
    # imported here: geo_bench.leaderboard pulls in geo_retrieval and timm (seconds), only this test needs it
    from geo_bench.leaderboard.plots import plot_corruption_heatmap

    rows = {
        "safa (small)": summarise_corruptions(60.0, {n: [50.0, 45.0, 40.0, 35.0, 30.0] for n in NAMES}),
        "partial": {"fog": 20.0, "snow": 10.0},
    }
    for metric in ("R@1", "RCE"):
        path = plot_corruption_heatmap(rows, tmp_path / "figs" / f"heat_{metric}.png", metric=metric)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["heat_R@1.png", "heat_RCE.png"]
    with pytest.raises(ValueError, match="metric"):
        plot_corruption_heatmap(rows, tmp_path / "x.png", metric="mCE")
    with pytest.raises(ValueError, match="empty"):
        plot_corruption_heatmap({}, tmp_path / "x.png")


def _print_golden() -> None:
    for name, severity in GOLDEN:
        digest = _sha(corrupt(_golden_input(), name, severity, seed=2024, sample_ids=["golden"]))
        print(f'    ("{name}", {severity}): "{digest}",')
    print(f'    PINNED = "{corruption_set_hash()}"')


if __name__ == "__main__":
    _print_golden()
