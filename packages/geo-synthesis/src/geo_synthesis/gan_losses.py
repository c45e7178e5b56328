"""Adversarial losses with explicit float targets: BCE (optionally label-smoothed), LSGAN, hinge.

Convention:
    discriminator outputs are *logits* (no sigmoid), a tensor of any shape (PatchGAN maps) or a
    sequence of tensors (multi-scale discriminators: the loss is the mean over scales). Targets
    are built as ``torch.full_like(pred, label)`` from the float ``real_label`` / ``fake_label``
    given at construction. ``target_is_real`` must be a ``bool``: the PanoGAN/SMDT code passes 0.9
    *as* ``target_is_real``, which is truthy, so its real target silently stays 1.0 (see
    docs/methods.md#the-panogan-code-smdt-ships); here that call raises ``TypeError`` and label smoothing is a constructor argument.

    - ``"bce"``: ``BCEWithLogits(pred, label)``, mean over elements (Toker: real_label 0.9).
    - ``"lsgan"``: ``mean((pred - label)^2)`` (Mao et al., ICCV'17).
    - ``"hinge"``: D: ``mean(relu(1 - real)) + mean(relu(1 + fake))`` (halved in
      :meth:`GANLoss.discriminator_loss` like the others); G: ``-mean(fake)``. Labels do not apply
      (a non-default label raises ``ValueError``).

    :meth:`GANLoss.discriminator_loss` = 0.5 * (L(real, real) + L(fake, fake)) (Toker's L_D);
    :meth:`GANLoss.generator_loss` = L(fake, real). Losses are computed in float32 (float64 inputs stay float64).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["GAN_LOSS_KINDS", "GANLoss", "gan_loss"]

GAN_LOSS_KINDS = ("bce", "lsgan", "hinge")

Prediction = Tensor | Sequence[Tensor]


def _single(
    pred: Tensor, target_is_real: bool, kind: str, real_label: float, fake_label: float, for_g: bool
) -> Tensor:
    pred = pred if pred.dtype == torch.float64 else pred.float()
    if kind == "hinge":
        if for_g:
            return -pred.mean()
        return F.relu(1.0 - pred).mean() if target_is_real else F.relu(1.0 + pred).mean()
    target = torch.full_like(pred, real_label if target_is_real else fake_label)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(pred, target)
    return F.mse_loss(pred, target)


def gan_loss(
    pred: Prediction,
    target_is_real: bool,
    *,
    kind: str = "bce",
    real_label: float = 1.0,
    fake_label: float = 0.0,
    for_generator: bool = False,
) -> Tensor:
    """Functional adversarial loss (see module docstring).

    Args:
        pred: logits, a tensor or a sequence of tensors (mean over the sequence).
        target_is_real: ``True`` for the real target, ``False`` for the fake one (a bool, never a
            label value).
        kind: ``"bce"``, ``"lsgan"`` or ``"hinge"``.
        real_label, fake_label: float targets (BCE / LSGAN).
        for_generator: hinge only: the generator's ``-mean(pred)`` form.

    Returns:
        scalar float32 loss.

    Example:
        >>> round(float(gan_loss(torch.zeros(2, 1, 3, 3), True, real_label=0.9)), 4)  # log 2
        0.6931
    """
    if not isinstance(target_is_real, bool):
        raise TypeError(
            f"target_is_real must be a bool, got {type(target_is_real).__name__} {target_is_real!r}; "
            "set label smoothing with real_label= instead"
        )
    if kind not in GAN_LOSS_KINDS:
        raise ValueError(f"kind must be one of {GAN_LOSS_KINDS}, got {kind!r}")
    preds = [pred] if isinstance(pred, Tensor) else list(pred)
    if not preds or not all(isinstance(p, Tensor) for p in preds):
        raise TypeError("pred must be a Tensor or a non-empty sequence of Tensors")
    losses = [_single(p, target_is_real, kind, real_label, fake_label, for_generator) for p in preds]
    return torch.stack(losses).mean()


class GANLoss(nn.Module):
    """Adversarial loss module with explicit float targets (see module docstring).

    Args:
        kind: ``"bce"`` (vanilla, logits), ``"lsgan"`` or ``"hinge"``.
        real_label: target of real samples, e.g. 0.9 for Toker's one-sided label smoothing.
        fake_label: target of fake samples.

    Example:
        >>> crit = GANLoss("bce", real_label=0.9)
        >>> logits = torch.zeros(2, 1, 4, 4)
        >>> float(crit.discriminator_loss(logits, logits)) > 0
        True
    """

    def __init__(self, kind: str = "bce", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        if kind not in GAN_LOSS_KINDS:
            raise ValueError(f"kind must be one of {GAN_LOSS_KINDS}, got {kind!r}")
        for name, value in (("real_label", real_label), ("fake_label", fake_label)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{name} must be a float, got {type(value).__name__}")
        if kind == "hinge" and (real_label != 1.0 or fake_label != 0.0):
            raise ValueError("hinge loss has no targets; real_label / fake_label must stay 1.0 / 0.0")
        if kind == "bce" and not (0.0 <= fake_label <= 1.0 and 0.0 <= real_label <= 1.0):
            raise ValueError(f"BCE labels must lie in [0, 1], got real={real_label}, fake={fake_label}")
        self.kind = kind
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, real_label={self.real_label}, fake_label={self.fake_label}"

    def target(self, pred: Tensor, target_is_real: bool) -> Tensor:
        """The explicit float target tensor for ``pred`` (BCE / LSGAN)."""
        if not isinstance(target_is_real, bool):
            raise TypeError(f"target_is_real must be a bool, got {type(target_is_real).__name__}")
        return torch.full_like(
            pred, self.real_label if target_is_real else self.fake_label, dtype=torch.float32
        )

    def forward(self, pred: Prediction, target_is_real: bool) -> Tensor:
        """Loss of ``pred`` against the real (``True``) or fake (``False``) target (D form for hinge)."""
        return gan_loss(
            pred, target_is_real, kind=self.kind, real_label=self.real_label, fake_label=self.fake_label
        )

    def discriminator_loss(self, real_pred: Prediction, fake_pred: Prediction) -> Tensor:
        """0.5 * (L(real_pred, real) + L(fake_pred, fake)); pass *detached* fakes to D."""
        return 0.5 * (self(real_pred, True) + self(fake_pred, False))

    def generator_loss(self, fake_pred: Prediction) -> Tensor:
        """The generator's adversarial term: L(fake_pred, real) (hinge: -mean(fake_pred))."""
        return gan_loss(
            fake_pred,
            True,
            kind=self.kind,
            real_label=self.real_label,
            fake_label=self.fake_label,
            for_generator=True,
        )
