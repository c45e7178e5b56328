"""Every public mapping on an empty batch (B = 0) and on output sizes too large to allocate."""

from __future__ import annotations

import pytest
import torch

from geo_transforms import (
    GroundPlaneView,
    InversePolarTransform,
    MixedPerspectivePolar,
    PanoramaToPerspective,
    PolarPreset,
    PolarTransform,
    apply_polar_preset,
    camera_rays,
    crop_fov,
    ground_plane_homography,
    ground_plane_view,
    inverse_polar_transform,
    joint_hflip,
    joint_rotate,
    list_polar_presets,
    mixed_perspective_polar,
    mixed_pixel_map,
    panorama_to_perspective,
    polar_grid,
    polar_pixel_map,
    polar_transform,
    rotate_panorama,
)
from geo_transforms._checks import MAX_OUTPUT_PIXELS, check_size

pytestmark = pytest.mark.one_thread

AERIAL = (3, 16, 16)
PANO = (3, 8, 32)
GROUND = {"camera_height": 2.0, "meters_per_pixel": 0.5}

# name -> (mapping of (aerial, pano), expected shape(s) for a batch of B)
EMPTY = {
    "polar_transform": (lambda a, p: polar_transform(a, (4, 16)), [(3, 4, 16)]),
    "polar_transform_pixel": (lambda a, p: polar_transform(a, (4, 16), center="pixel"), [(3, 4, 16)]),
    "PolarTransform": (lambda a, p: PolarTransform((4, 16))(a), [(3, 4, 16)]),
    "inverse_polar_transform": (lambda a, p: inverse_polar_transform(p, 16), [(3, 16, 16)]),
    "InversePolarTransform": (lambda a, p: InversePolarTransform(16)(p), [(3, 16, 16)]),
    "mixed": (lambda a, p: mixed_perspective_polar(a, (4, 16)), [(3, 4, 16)]),
    "mixed_as_polar": (
        lambda a, p: mixed_perspective_polar(a, (4, 16), near_fraction=0.0),
        [(3, 4, 16)],
    ),
    "MixedPerspectivePolar": (lambda a, p: MixedPerspectivePolar((4, 16))(a), [(3, 4, 16)]),
    "ground_plane_view": (lambda a, p: ground_plane_view(a, 0.0, 90.0, (6, 8), **GROUND), [(3, 6, 8)]),
    "GroundPlaneView": (lambda a, p: GroundPlaneView(0.0, 90.0, (6, 8), **GROUND)(a), [(3, 6, 8)]),
    "panorama_to_perspective": (lambda a, p: panorama_to_perspective(p, 0.0, 0.0, 90.0, (6, 8)), [(3, 6, 8)]),
    "PanoramaToPerspective": (lambda a, p: PanoramaToPerspective(0.0, 0.0, 90.0, (6, 8))(p), [(3, 6, 8)]),
    "rotate_panorama": (lambda a, p: rotate_panorama(p, 30.0), [PANO]),
    "crop_fov": (lambda a, p: crop_fov(p, 90.0), [(3, 8, 8)]),
    "joint_rotate_k": (lambda a, p: joint_rotate(a, p, k=1), [AERIAL, PANO]),
    "joint_rotate_angle": (lambda a, p: joint_rotate(a, p, angle_deg=30.0), [AERIAL, PANO]),
    "joint_hflip": (lambda a, p: joint_hflip(a, p), [AERIAL, PANO]),
}


@pytest.mark.parametrize("name", sorted(EMPTY))
def test_empty_batch(name, device, dtype):
    fn, shapes = EMPTY[name]
    outs = {}
    for batch in (0, 2):
        a = torch.rand(batch, *AERIAL, device=device, dtype=dtype)
        p = torch.rand(batch, *PANO, device=device, dtype=dtype)
        out = fn(a, p)
        outs[batch] = out if isinstance(out, tuple) else (out,)
    assert [tuple(o.shape) for o in outs[0]] == [(0, *s) for s in shapes]
    assert [tuple(o.shape) for o in outs[2]] == [(2, *s) for s in shapes]  # the same op on a real batch
    assert all(o.dtype == dtype and o.device == device for o in outs[0])


@pytest.mark.parametrize("preset", list_polar_presets())
def test_empty_batch_presets(preset, device):
    out = apply_polar_preset(torch.rand(0, 3, 64, 64, device=device) * 255, preset)
    full = apply_polar_preset(torch.rand(1, 3, 64, 64, device=device) * 255, preset)
    assert out.shape == (0, *full.shape[1:]) and out.dtype == full.dtype and out.device == device


def test_empty_batch_gradient(device):
    a = torch.rand(0, *AERIAL, device=device, requires_grad=True)
    polar_transform(a, (4, 16)).sum().backward()
    assert a.grad is not None and a.grad.shape == a.shape


HUGE = (100_000, 100_000)
TOO_BIG = (
    r"out_size \(100000, 100000\) asks for 10,000,000,000 pixels per image, above the limit of 67,108,864"
)
ROTATIONS = (torch.zeros(1, 1, dtype=torch.float64),) * 4


@pytest.mark.parametrize(
    "call",
    [
        lambda a, p: polar_transform(a, HUGE),
        lambda a, p: PolarTransform(HUGE),
        lambda a, p: polar_pixel_map(16, HUGE),
        lambda a, p: polar_grid(16, HUGE),
        lambda a, p: mixed_perspective_polar(a, HUGE),
        lambda a, p: mixed_pixel_map(16, HUGE),
        lambda a, p: MixedPerspectivePolar(HUGE),
        lambda a, p: panorama_to_perspective(p, 0.0, 0.0, 90.0, HUGE),
        lambda a, p: PanoramaToPerspective(0.0, 0.0, 90.0, HUGE),
        lambda a, p: ground_plane_view(a, 0.0, 90.0, HUGE, **GROUND),
        lambda a, p: GroundPlaneView(0.0, 90.0, HUGE, **GROUND),
        lambda a, p: ground_plane_homography(16, 0.0, 90.0, HUGE, **GROUND),
        lambda a, p: camera_rays(*ROTATIONS, HUGE),
        lambda a, p: PolarPreset("huge", 1, HUGE, "safa", HUGE, ("polar",)),
    ],
    ids=[
        "polar_transform",
        "PolarTransform",
        "polar_pixel_map",
        "polar_grid",
        "mixed_perspective_polar",
        "mixed_pixel_map",
        "MixedPerspectivePolar",
        "panorama_to_perspective",
        "PanoramaToPerspective",
        "ground_plane_view",
        "GroundPlaneView",
        "ground_plane_homography",
        "camera_rays",
        "PolarPreset",
    ],
)
def test_out_size_bounded(call):
    a, p = torch.rand(1, *AERIAL), torch.rand(1, *PANO)
    with pytest.raises(ValueError, match=TOO_BIG):
        call(a, p)


@pytest.mark.parametrize(
    "call",
    [lambda p: inverse_polar_transform(p, 100_000), lambda p: InversePolarTransform(100_000)],
    ids=["inverse_polar_transform", "InversePolarTransform"],
)
def test_inverse_size_bounded(call):
    with pytest.raises(ValueError, match=r"size 100000 asks for 10,000,000,000 pixels per image.*67,108,864"):
        call(torch.rand(1, *PANO))


def test_limit_is_2_26_pixels():
    assert MAX_OUTPUT_PIXELS == 2**26
    assert check_size((8192, 8192), "out_size") == (8192, 8192)  # exactly the limit
    assert check_size((1, 2**26), "out_size") == (1, 2**26)
    with pytest.raises(ValueError, match=r"out_size \(8192, 8193\) asks for 67,117,056 pixels"):
        check_size((8192, 8193), "out_size")
    with pytest.raises(ValueError, match=r"render_size \(1, 67108865\)"):
        check_size((1, 2**26 + 1), "render_size")
