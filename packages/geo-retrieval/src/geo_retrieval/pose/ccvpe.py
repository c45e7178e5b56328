"""CCVPE: convolutional cross-view pose estimation (Xia, Booij, Kooij, TPAMI 2023).

Given a ground panorama and an aerial tile that covers the camera, CCVPE predicts a probability
map of the camera's position over the tile and an orientation per pixel. A ground encoder with
circular horizontal padding gives one orientation-aware descriptor per matching level (``W'`` column
descriptors of ``c_l`` channels); an aerial encoder gives multi-scale features, whose deepest level
is cut into a grid of cell descriptors. Six (``len(levels)``) coarse-to-fine levels each score the
ground descriptor against every cell at every rotation (:func:`~geo_retrieval.pose.matching.
rotation_scores`), feed the best score with the normalised cell descriptors to a transposed
convolution, join the encoder's skip features and produce the next, finer descriptor map; the last
gives heatmap logits at the aerial resolution. A second decoder turns the coarsest level's full
rotation scores into a (cos, sin) field.

This follows the published design and ``models.py`` of tudelft-iv/CCVPE (``CVM_VIGOR``): matching
at every decoder level, max over rotations for localisation (over the bins a heading prior allows,
as ``CVM_VIGOR_ori_prior``), all rotations for orientation, L2-normalised descriptors, a
stride-2 2x2 convolution for the cell descriptors (upstream's per-cell ``Linear`` on 2x2 chunks is
this convolution written as a loop).

Convention:
    - ``ground``: (B, 3, H, W) normalised panorama, centre column at the heading (degrees clockwise
      from north); ``aerial``: (B, 3, S, S) normalised north-up tile, ``S`` divisible by
      ``2 ** len(levels)`` times the cell grid.
    - Outputs (:class:`CCVPEOutput`): ``logits`` (B, 1, S, S); ``field`` (B, 2, S, S) unit vectors
      (cos h, sin h) of the heading h; ``scores`` per level (B, R, h_l, w_l), coarse to fine, with
      ``R = W'`` rotation bins (:mod:`geo_retrieval.pose.matching`).
    - :func:`decode_pose`: position = the heatmap's arg-max pixel (row, col), heading = the angle of
      the field there, in [0, 360).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import create_backbone
from .matching import bin_headings, heading_prior_mask, rotation_scores

__all__ = [
    "CCVPE",
    "CCVPEConfig",
    "CCVPEOutput",
    "WidthCircularConv2d",
    "WidthCircularMaxPool2d",
    "circular_width_padding",
    "decode_pose",
]


@dataclass(frozen=True)
class CCVPEConfig:
    """Architecture and loss settings of a CCVPE model (frozen; part of the recipe's fingerprint).

    Attributes:
        aerial_backbone: timm model name of the aerial encoder (multi-scale features at strides 2, 4,
            8, 16, 32 and its final feature map; ``efficientnet_b0`` upstream).
        aerial_backbone_kwargs: extra timm arguments (narrow widths for the CPU variant).
        descriptor_channels: ``c_l`` per matching level, coarse to fine (upstream 64, 32, 16, 8, 4, 2
            with ``W' = 20``: descriptors of 1280 ... 40).
        up_channels: output channels of each level's transposed convolution (upstream 1024, 320, 160,
            80, 40, 16).
        orientation_up, orientation_conv: the orientation decoder's transposed-conv and conv widths
            (upstream 1024, 256, 128, 64, 32, 16 and 640, 256, 128, 64, 32).
        circular: circular horizontal padding in the ground encoder (360-degree panoramas).
        sigma_px: the Gaussian position target's sigma, pixels at the aerial input size.
        weight_infonce, weight_orientation, temperature: the loss weights (upstream 1e4, 1e1, 0.1).
        orientation_score_scale: factor on the rotation scores fed to the orientation decoder
            (upstream 1: the raw cosines). Cosines of neighbouring bins differ by a few hundredths,
            so a small, briefly trained decoder sees an almost constant input and predicts one
            heading; 1 / temperature (10) gives it the logits the InfoNCE sharpens (CPU variant).
        heading_from: where :meth:`CCVPE.decode` reads the heading: ``"field"`` (upstream: the
            orientation decoder) or ``"scores"`` (the finest level's rotation scores at the
            predicted cell; see :func:`decode_pose`).
    """

    aerial_backbone: str = "efficientnet_b0"
    aerial_backbone_kwargs: dict[str, Any] | None = None
    descriptor_channels: tuple[int, ...] = (64, 32, 16, 8, 4, 2)
    up_channels: tuple[int, ...] = (1024, 320, 160, 80, 40, 16)
    orientation_up: tuple[int, ...] = (1024, 256, 128, 64, 32, 16)
    orientation_conv: tuple[int, ...] = (640, 256, 128, 64, 32)
    circular: bool = True
    sigma_px: float = 4.0
    weight_infonce: float = 1e4
    weight_orientation: float = 1e1
    temperature: float = 0.1
    orientation_score_scale: float = 1.0
    heading_from: str = "field"

    def __post_init__(self) -> None:
        if self.heading_from not in ("field", "scores"):
            raise ValueError(f"heading_from must be 'field' or 'scores', got {self.heading_from!r}")
        n = len(self.descriptor_channels)
        if n != 6:
            raise ValueError(
                "CCVPE matches at 6 levels (cells of 64 px up to the input resolution); descriptor_channels "
                f"must have 6 entries, got {self.descriptor_channels}"
            )
        if len(self.up_channels) != n or len(self.orientation_up) != n or len(self.orientation_conv) != n - 1:
            raise ValueError(
                f"{n} matching levels need {n} up_channels and orientation_up and {n - 1} orientation_conv; got "
                f"{len(self.up_channels)}, {len(self.orientation_up)}, {len(self.orientation_conv)}"
            )


class CCVPEOutput(NamedTuple):
    """What :class:`CCVPE` returns: heatmap logits, orientation field and per-level rotation scores."""

    logits: Tensor  # (B, 1, S, S)
    field: Tensor  # (B, 2, S, S)
    scores: list[Tensor]  # per level (B, R, h, w), coarse to fine


class WidthCircularConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose padding wraps around horizontally and is zero vertically (same weights).

    A panorama's left and right borders are neighbours; CCVPE's ground encoder pads this way so that
    its descriptor shifts exactly with a rotation of the panorama.
    """

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self._pad_hw
        if pw:
            x = F.pad(x, (pw, pw, 0, 0), mode="circular")
        if ph:
            x = F.pad(x, (0, 0, ph, ph))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> WidthCircularConv2d:
        if isinstance(conv.padding, str) or conv.padding_mode != "zeros":
            raise ValueError(f"only explicit zero padding converts to circular, got {conv}")
        new = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,  # type: ignore[arg-type]
            stride=conv.stride,  # type: ignore[arg-type]
            padding=0,
            dilation=conv.dilation,  # type: ignore[arg-type]
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        new._pad_hw = (int(conv.padding[0]), int(conv.padding[1]))
        new.weight = conv.weight
        if conv.bias is not None:
            new.bias = conv.bias
        return new

    _pad_hw: tuple[int, int] = (0, 0)


class WidthCircularMaxPool2d(nn.Module):
    """Max pooling whose padding wraps around horizontally (and is ``-inf`` vertically)."""

    def __init__(self, pool: nn.MaxPool2d) -> None:
        super().__init__()
        pad = pool.padding if isinstance(pool.padding, tuple) else (pool.padding, pool.padding)
        self.pad_hw = (int(pad[0]), int(pad[1]))
        self.kernel_size, self.stride = pool.kernel_size, pool.stride
        self.dilation, self.ceil_mode = pool.dilation, pool.ceil_mode

    def forward(self, x: Tensor) -> Tensor:
        ph, pw = self.pad_hw
        if pw:
            x = F.pad(x, (pw, pw, 0, 0), mode="circular")
        if ph:
            x = F.pad(x, (0, 0, ph, ph), value=float("-inf"))
        return F.max_pool2d(x, self.kernel_size, self.stride, 0, self.dilation, self.ceil_mode)


def circular_width_padding(module: nn.Module) -> nn.Module:
    """Replace (in place) every padded ``nn.Conv2d`` / ``nn.MaxPool2d`` of ``module`` by its
    width-circular version (:class:`WidthCircularConv2d`, :class:`WidthCircularMaxPool2d`);
    parameters and state-dict keys are unchanged. Returns ``module``."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv2d and any(int(p) for p in child.padding):
            setattr(module, name, WidthCircularConv2d.from_conv(child))
        elif type(child) is nn.MaxPool2d and child.padding not in (0, (0, 0)):
            setattr(module, name, WidthCircularMaxPool2d(child))
        else:
            circular_width_padding(child)
    return module


def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, padding=1)
    )


class _FinalFeatures(nn.Module):
    """A timm model's final feature map (``forward_features``: for EfficientNet after its 1x1 head
    conv, 1280 channels, as upstream's ``extract_features``)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, cast(Any, self.model).forward_features(x))


class _GroundDescriptor(nn.Module):
    """(B, C, h', W') features -> (B, W', c): 1x1 conv to ``c`` channels, then a learned weighting of
    the ``h'`` rows (CCVPE's ``Conv2d(h', 1, 1)`` on the permuted map)."""

    def __init__(self, cin: int, cout: int, rows: int) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(cin, cout, 1)
        self.rows = nn.Conv2d(rows, 1, 1)

    def forward(self, f: Tensor) -> Tensor:
        x = self.reduce(f).permute(0, 2, 3, 1)  # (B, h', W', c)
        return self.rows(x)[:, 0]  # (B, W', c)


class CCVPE(nn.Module):
    """CCVPE pose model (see the module docstring).

    Args:
        config: :class:`CCVPEConfig`.
        ground_backbone: registered backbone name of the ground encoder (``create_backbone``).
        ground_backbone_kwargs: its options; ``final_features=True`` (with a ``"timm:<model>"`` name) takes
            the model's final feature map instead (EfficientNet: after its 1280-channel head conv, as
            upstream's ground encoder).
        ground_size: panorama (H, W) the model is built for (fixes ``h'`` and ``W'``).
        aerial_size: aerial side S.
    """

    aerial_encoder: Any  # a timm model (features + forward_intermediates)

    def __init__(
        self,
        config: CCVPEConfig,
        *,
        ground_backbone: str,
        ground_backbone_kwargs: dict[str, Any] | None,
        ground_size: tuple[int, int],
        aerial_size: int,
    ) -> None:
        super().__init__()
        self.config = config
        levels = len(config.descriptor_channels)
        kwargs = dict(ground_backbone_kwargs or {})
        if kwargs.pop("final_features", False):
            if not ground_backbone.startswith("timm:"):
                raise ValueError(
                    f"final_features needs a 'timm:<model>' ground backbone, got {ground_backbone!r}"
                )
            model = timm.create_model(ground_backbone[5:], pretrained=False, num_classes=0, **kwargs)
            self.ground_encoder: nn.Module = _FinalFeatures(model)
        else:
            self.ground_encoder = create_backbone(ground_backbone, **kwargs)
        if config.circular:
            circular_width_padding(self.ground_encoder)
        with torch.no_grad():
            was = self.ground_encoder.training
            self.ground_encoder.eval()
            probe = self.ground_encoder(torch.zeros(1, 3, *ground_size))
            self.ground_encoder.train(was)
        if probe.ndim != 4:
            raise ValueError(f"ground backbone {ground_backbone!r} must give (B, C, h, w) features")
        cg, rows, cols = probe.shape[1:]
        self.bins = int(cols)
        self.ground_size = (int(ground_size[0]), int(ground_size[1]))
        self.ground_descriptors = nn.ModuleList(
            _GroundDescriptor(cg, c, rows) for c in config.descriptor_channels
        )
        dims = [self.bins * c for c in config.descriptor_channels]

        self.aerial_encoder = timm.create_model(
            config.aerial_backbone,
            pretrained=False,
            num_classes=0,
            **dict(config.aerial_backbone_kwargs or {}),
        )
        info = self.aerial_encoder.feature_info
        reductions = [int(f["reduction"]) for f in info][-5:]
        if reductions != [2, 4, 8, 16, 32]:
            raise ValueError(
                f"aerial backbone {config.aerial_backbone!r} must reduce by 2..32, got {reductions}"
            )
        self._n_feat = len(info)
        skip_ch = [int(f["num_chs"]) for f in info][-5:][::-1]  # strides 32, 16, 8, 4, 2
        with torch.no_grad():
            was = self.aerial_encoder.training
            self.aerial_encoder.eval()
            final, _ = self.aerial_encoder.forward_intermediates(
                torch.zeros(1, 3, 64, 64), indices=self._n_feat, intermediates_only=False
            )
            self.aerial_encoder.train(was)
        self.aerial_size = int(aerial_size)
        if self.aerial_size % 64:
            raise ValueError(f"aerial_size must be a multiple of 64 (cells of 64 px), got {aerial_size}")
        self.levels = levels
        self.cells = nn.Conv2d(int(final.shape[1]), dims[0], 2, stride=2)

        ups, convs, o_ups, o_convs = [], [], [], []
        for lvl in range(levels):
            ups.append(nn.ConvTranspose2d(dims[lvl] + 1, config.up_channels[lvl], 2, 2))
            skip = skip_ch[lvl] if lvl < 5 else 0
            if lvl < levels - 1:
                convs.append(_double_conv(config.up_channels[lvl] + skip, dims[lvl + 1]))
            else:
                last = config.up_channels[lvl] + skip
                convs.append(
                    nn.Sequential(
                        nn.Conv2d(last, last, 3, padding=1),
                        nn.ReLU(inplace=True),
                        nn.Conv2d(last, 1, 3, padding=1),
                    )
                )
            o_in = self.bins + dims[0] if lvl == 0 else config.orientation_conv[lvl - 1]
            o_ups.append(nn.ConvTranspose2d(o_in, config.orientation_up[lvl], 2, 2))
            if lvl < levels - 1:
                o_convs.append(_double_conv(config.orientation_up[lvl] + skip, config.orientation_conv[lvl]))
            else:
                last = config.orientation_up[lvl] + skip
                o_convs.append(
                    nn.Sequential(
                        nn.Conv2d(last, last, 3, padding=1),
                        nn.ReLU(inplace=True),
                        nn.Conv2d(last, 2, 3, padding=1),
                    )
                )
        self.up, self.conv = nn.ModuleList(ups), nn.ModuleList(convs)
        self.orientation_up, self.orientation_conv = nn.ModuleList(o_ups), nn.ModuleList(o_convs)

    # -- encoders ----------------------------------------------------------------------------------
    def encode_ground(self, ground: Tensor) -> list[Tensor]:
        """Per level (B, W', c_l) ground column descriptors."""
        f = self.ground_encoder(ground)
        return [d(f) for d in self.ground_descriptors]

    def encode_aerial(self, aerial: Tensor) -> tuple[Tensor, list[Tensor]]:
        """(cell descriptor map (B, D_0, S/64, S/64), skips at strides 32, 16, 8, 4, 2)."""
        final, inter = self.aerial_encoder.forward_intermediates(
            aerial, indices=self._n_feat, intermediates_only=False
        )
        skips = list(inter[-5:])[::-1]
        return self.cells(final), skips

    def decode(self, out: CCVPEOutput) -> tuple[Tensor, Tensor, Tensor]:
        """:func:`decode_pose` with this model's ``heading_from`` and temperature."""
        return decode_pose(out, heading_from=self.config.heading_from, temperature=self.config.temperature)

    # -- forward -----------------------------------------------------------------------------------
    def forward(
        self,
        ground: Tensor,
        aerial: Tensor,
        heading_prior: Tensor | None = None,
        prior_range_deg: float = 180.0,
    ) -> CCVPEOutput:
        """Pose maps for a batch (see the module docstring).

        Args:
            ground: (B, 3, H, W) normalised panoramas.
            aerial: (B, 3, S, S) normalised tiles.
            heading_prior: (B,) prior headings in degrees, or None (orientation unknown).
            prior_range_deg: half-width of the prior; 0 = orientation known.
        """
        if ground.ndim != 4 or aerial.ndim != 4 or ground.shape[0] != aerial.shape[0]:
            raise ValueError(
                f"ground (B, 3, H, W) and aerial (B, 3, S, S) expected, got {tuple(ground.shape)} and {tuple(aerial.shape)}"
            )
        s = aerial.shape[-1]
        if aerial.shape[-2] != s or s % 64:
            raise ValueError(
                f"aerial must be square with a side divisible by 64, got {tuple(aerial.shape[-2:])}"
            )
        g = self.encode_ground(ground)
        x, skips = self.encode_aerial(aerial)
        mask = None
        if heading_prior is not None and prior_range_deg < 180.0:
            mask = heading_prior_mask(heading_prior.to(x.device), prior_range_deg, self.bins)
        scores: list[Tensor] = []
        first_cells = x
        for lvl in range(self.levels):
            sc = rotation_scores(g[lvl], x)
            scores.append(sc)
            if mask is not None:
                best = sc.masked_fill(~mask.view(*mask.shape, 1, 1), -2.0).amax(dim=1, keepdim=True)
            else:
                best = sc.amax(dim=1, keepdim=True)
            y = self.up[lvl](torch.cat([best, F.normalize(x, dim=1)], dim=1))
            if lvl < 5:
                y = torch.cat([y, skips[lvl]], dim=1)
            x = self.conv[lvl](y)
        logits = x
        z = torch.cat(
            [scores[0] * self.config.orientation_score_scale, F.normalize(first_cells, dim=1)], dim=1
        )
        for lvl in range(self.levels):
            z = self.orientation_up[lvl](z)
            if lvl < 5:
                z = torch.cat([z, skips[lvl]], dim=1)
            z = self.orientation_conv[lvl](z)
        field = F.normalize(z, dim=1)
        return CCVPEOutput(logits, field, scores)


def decode_pose(
    out: CCVPEOutput, *, heading_from: str = "field", temperature: float = 0.1
) -> tuple[Tensor, Tensor, Tensor]:
    """Arg-max position and the heading there.

    Args:
        out: the model's output.
        heading_from: ``"field"`` (CCVPE: the orientation decoder's vector at the arg-max pixel) or
            ``"scores"`` (the finest matching level's rotation scores at that pixel's cell, as a
            soft arg-max over the bins: ``angle(sum_k softmax(s / temperature)_k e^{i theta_k})``).
        temperature: of the ``"scores"`` soft arg-max (CCVPE's InfoNCE temperature).

    Returns:
        ``(camera_px, heading_deg, probability)``: (B, 2) float (row, col) of the heatmap's arg-max,
        (B,) heading in [0, 360), (B, 1, S, S) softmax heatmap.
    """
    if heading_from not in ("field", "scores"):
        raise ValueError(f"heading_from must be 'field' or 'scores', got {heading_from!r}")
    b, _, h, w = out.logits.shape
    prob = F.softmax(out.logits.flatten(1).float(), dim=1).view(b, 1, h, w)
    flat = prob.flatten(1).argmax(dim=1)
    rows, cols = flat // w, flat % w
    idx = torch.arange(b, device=flat.device)
    if heading_from == "field":
        vec = out.field[idx, :, rows, cols].float()  # (B, 2)
    else:
        fine = out.scores[-1].float()  # (B, R, h_l, w_l)
        cell_r = rows * fine.shape[-2] // h
        cell_c = cols * fine.shape[-1] // w
        p = F.softmax(fine[idx, :, cell_r, cell_c] / temperature, dim=1)  # (B, R)
        theta = torch.deg2rad(bin_headings(fine.shape[1], fine.device))
        vec = torch.stack([(p * theta.cos()).sum(1), (p * theta.sin()).sum(1)], dim=1)
    heading = torch.rad2deg(torch.atan2(vec[:, 1], vec[:, 0])).remainder(360.0)
    return torch.stack([rows, cols], dim=1).float(), heading, prob
