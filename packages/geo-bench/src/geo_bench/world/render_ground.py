"""Equirectangular street-level panoramas rendered from an :class:`~geo_bench.world.appearance.Epoch`.

Convention:
    Output (B, 3, H, W). Column ``j`` looks along the bearing
    ``yaw + fov * (j - W / 2) / W`` (degrees clockwise from north), so with ``yaw = 0`` and
    ``fov = 360`` column W/2 (the centre) looks north, 3W/4 east, W/4 west and column 0 south,
    the CVUSA convention that :func:`geo_transforms.polar_transform` matches. Row ``i`` has the
    elevation ``hi - (hi - lo) * (i + 0.5) / H`` for the band ``elevation = (lo, hi)`` degrees;
    with a symmetric band the horizon is the boundary between rows H/2 - 1 and H/2.

Rendering (fully batched, no loop over rays): every column marches along its bearing on the map
at distances d_1 < ... < d_K (geometric), looks up the top height h_k, and forms the top
elevation angle a_k = atan2(h_k - cam_h, d_k). A pixel of elevation e sees the first sample k
with cummax(a)_k >= e (``torch.searchsorted`` on the running maximum); it hits the *top* surface
of that sample if the ray was still above h_k at d_{k-1}, otherwise its *vertical face*. Pixels
above every a_k are sky; below-horizon pixels beyond d_K are distant ground lost in haze. Depth
is the distance along the ground (0 for sky).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .appearance import KIND_BUILDING, KIND_TREE, Epoch
from .city import SKY
from .render_aerial import bilinear_lookup

__all__ = ["march_distances", "render_panorama"]


def march_distances(steps: int, near: float, far: float) -> Tensor:
    """(K,) float32 geometric march distances from ``near`` to ``far`` metres."""
    if steps < 2 or not 0 < near < far:
        raise ValueError(f"need steps >= 2 and 0 < near < far, got {steps}, {near}, {far}")
    return torch.logspace(math.log10(near), math.log10(far), steps)


def render_panorama(
    epoch: Epoch,
    cams: Tensor,
    cam_height: Tensor,
    yaw: Tensor,
    size: tuple[int, int],
    *,
    elevation: tuple[float, float] = (-45.0, 45.0),
    fov: float = 360.0,
    steps: int = 160,
    near: float = 0.5,
    far: float = 150.0,
    haze_m: Tensor | float = 350.0,
    sky: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render B panoramas (see the module docstring for the convention).

    Args:
        epoch: the ground capture of a district.
        cams: (B, 2) camera positions in district metres (east, north).
        cam_height: (B,) camera heights above ground, metres.
        yaw: (B,) bearing of the centre column, degrees clockwise from north.
        size: (H, W) output size.
        elevation: (lo, hi) vertical band in degrees.
        fov: horizontal field of view in degrees (360 = full panorama).
        steps, near, far: the ray march (K samples from ``near`` to ``far`` metres).
        haze_m: (B,) or scalar haze distance.
        sky: (B, 2, 3) horizon and zenith colours, or None for a default blue sky.

    Returns:
        ``(rgb, seg, depth)``: (B, 3, H, W) float32 in [0, 1], (B, H, W) int64 labels,
        (B, H, W) float32 depth in metres (0 for sky).
    """
    if cams.ndim != 2 or cams.shape[1] != 2:
        raise ValueError(f"cams must be (B, 2), got {tuple(cams.shape)}")
    height_px, width = size
    lo, hi = elevation
    if not -90.0 <= lo < hi <= 90.0:
        raise ValueError(f"elevation must be (lo, hi) within [-90, 90], got {elevation}")
    if not 0 < fov <= 360:
        raise ValueError(f"fov must be in (0, 360], got {fov}")
    b = cams.shape[0]
    n, res = epoch.n, epoch.res
    cams = cams.float()
    cam_h = cam_height.float().reshape(b)
    j = torch.arange(width, dtype=torch.float32)
    bearing = torch.deg2rad(yaw.float().reshape(b, 1) + fov * (j[None] - width / 2) / width)  # (B, W)
    elev = torch.deg2rad(
        hi - (hi - lo) * (torch.arange(height_px, dtype=torch.float32) + 0.5) / height_px
    )  # (H,)
    d = march_distances(steps, near, far)  # (K,)
    se, sn = torch.sin(bearing), torch.cos(bearing)
    px = cams[:, 0, None, None] + d * se[..., None]  # (B, W, K)
    py = cams[:, 1, None, None] + d * sn[..., None]
    rows = (epoch.size - py) / res - 0.5
    cols = px / res - 0.5
    ri, ci = rows.round().long(), cols.round().long()
    inside = (ri >= 0) & (ri < n) & (ci >= 0) & (ci < n)
    flat = ri.clamp(0, n - 1) * n + ci.clamp(0, n - 1)
    h = torch.where(inside, epoch.height.reshape(-1)[flat].float(), torch.zeros(()))
    a = torch.atan2(h - cam_h[:, None, None], d)
    running = torch.cummax(a, dim=-1).values  # (B, W, K) non-decreasing
    query = elev.expand(b * width, height_px).contiguous()
    k = torch.searchsorted(running.reshape(b * width, steps).contiguous(), query).reshape(b, width, height_px)
    hit = k < steps
    kc = k.clamp(max=steps - 1)
    kp = (kc - 1).clamp(min=0)

    def take(t: Tensor, idx: Tensor) -> Tensor:
        return t.gather(-1, idx)

    flat_hit = take(flat, kc)
    inside_hit = take(inside, kc)
    h_hit = take(h, kc)
    d_hit = d[kc]
    d_prev = torch.where(kc > 0, d[kp], torch.zeros(()))
    tan_e = torch.tan(elev)[None, None, :].expand(b, width, height_px)
    z_prev = cam_h[:, None, None] + d_prev * tan_e
    top_hit = z_prev >= h_hit - 1e-3
    # top surfaces: exact intersection with the plane z = h_hit, clamped into the march interval
    with torch.no_grad():
        safe_tan = torch.where(tan_e.abs() < 1e-6, torch.full_like(tan_e, -1e-6), tan_e)
        d_top = ((h_hit - cam_h[:, None, None]) / safe_tan).clamp(min=0)
        d_top = torch.minimum(torch.maximum(d_top, d_prev), d_hit)
    depth = torch.where(top_hit, d_top, d_hit)
    # colours
    ex = cams[:, 0, None, None] + depth * se[..., None]
    ny = cams[:, 1, None, None] + depth * sn[..., None]
    top_rgb = (
        bilinear_lookup(epoch.top, (epoch.size - ny) / res - 0.5, ex / res - 0.5) / 255.0
    )  # (3, B, W, H)
    kind = epoch.kind.reshape(-1)[flat_hit]
    face_rgb = epoch.facade.reshape(3, -1)[:, flat_hit].float() / 255.0
    normal = epoch.normal.reshape(-1)[flat_hit].float()
    sun_az = math.radians(epoch.capture.sun_azimuth)
    sun_el = math.radians(epoch.capture.sun_elevation)
    lambert = torch.cos(normal - sun_az).clamp(min=0) * math.cos(sun_el)
    shade = 0.65 + 0.5 * lambert
    z = cam_h[:, None, None] + d_hit * tan_e
    # windows on buildings: floors every 3.4 m, bays every 3 m along the facade
    tangent = ex * torch.cos(normal) - ny * torch.sin(normal)
    fz, fa = torch.remainder(z, 3.4) / 3.4, torch.remainder(tangent, 3.0) / 3.0
    window = (kind == KIND_BUILDING) & (fz > 0.3) & (fz < 0.8) & (fa > 0.2) & (fa < 0.8) & (z > 1.0)
    glass = torch.tensor([0.22, 0.27, 0.34])[:, None, None, None]
    face_rgb = torch.where(window[None], glass + 0.1 * face_rgb, face_rgb)
    # tree trunks / under-crown shade below the crown base
    under = (kind == KIND_TREE) & (z < epoch.base.reshape(-1)[flat_hit].float())
    trunk = torch.tensor([0.28, 0.21, 0.14])[:, None, None, None]
    face_rgb = torch.where(under[None], 0.6 * trunk + 0.3 * face_rgb, face_rgb)
    # leaf speckle: a per-cell pseudo-random pattern on crowns
    speckle = torch.remainder(flat_hit.float() * 0.6180339 + torch.floor(z * 2.5) * 0.3171, 1.0)
    leaf = torch.where(kind == KIND_TREE, 0.8 + 0.4 * speckle, torch.ones_like(speckle))
    face_rgb = face_rgb * (shade * leaf)[None]
    rgb = torch.where(top_hit[None], top_rgb, face_rgb)
    cls = epoch.cls.reshape(-1)[flat_hit].long()
    # outside the district: plain distant grass
    rgb = torch.where(inside_hit[None], rgb, torch.tensor([0.3, 0.4, 0.2])[:, None, None, None])
    # sky and haze
    if sky is None:
        sky = torch.tensor([[0.78, 0.84, 0.92], [0.35, 0.55, 0.85]]).expand(b, 2, 3)
    horizon, zenith = sky[:, 0], sky[:, 1]  # (B, 3)
    t = torch.sin(elev).clamp(min=0) ** 0.6  # (H,)
    sky_rgb = horizon.T[:, :, None, None] * (1 - t) + zenith.T[:, :, None, None] * t  # (3, B, 1, H)
    sky_rgb = sky_rgb.expand(3, b, width, height_px)
    haze = torch.as_tensor(haze_m, dtype=torch.float32).reshape(-1)
    haze = haze.expand(b) if haze.numel() == 1 else haze
    trans = torch.exp(-depth / haze[:, None, None])
    rgb = rgb * trans[None] + horizon.T[:, :, None, None] * (1 - trans[None])
    far_ground = ~hit & (elev[None, None, :] < 0)
    rgb = torch.where(far_ground[None], horizon.T[:, :, None, None] * 0.92, rgb)
    is_sky = ~hit & ~far_ground
    rgb = torch.where(is_sky[None], sky_rgb, rgb)
    cls = torch.where(is_sky, torch.full_like(cls, SKY), cls)
    depth = torch.where(
        is_sky, torch.zeros_like(depth), torch.where(far_ground, torch.full_like(depth, far), depth)
    )
    # (3, B, W, H) -> (B, 3, H, W)
    rgb = rgb.permute(1, 0, 3, 2).clamp(0, 1).contiguous()
    return rgb, cls.permute(0, 2, 1).contiguous(), depth.permute(0, 2, 1).contiguous()
