# Runs tudelft-iv/CCVPE's own losses.py on seeded inputs and stores inputs + outputs.
import numpy as np
import torch
from losses import cross_entropy_loss, infoNCELoss, orientation_loss

g = torch.Generator().manual_seed(0)
B, R, h, w, S = 3, 20, 4, 4, 16
scores = torch.rand(B, R, h, w, generator=g, dtype=torch.float64) * 2 - 1
labels = torch.rand(B, R, h, w, generator=g, dtype=torch.float64) ** 4  # many below 1e-2
logits = torch.randn(B, S * S, generator=g, dtype=torch.float64)
gt = torch.rand(B, S * S, generator=g, dtype=torch.float64)
gt = gt / gt.sum(1, keepdim=True)
ori = torch.nn.functional.normalize(torch.randn(B, 2, S, S, generator=g, dtype=torch.float64), dim=1)
ang = torch.rand(B, generator=g, dtype=torch.float64) * 2 * np.pi
gt_ori = torch.stack([ang.cos(), ang.sin()], 1)[:, :, None, None].expand(B, 2, S, S).contiguous()
gauss = torch.rand(B, 1, S, S, generator=g, dtype=torch.float64)
out = {
    "scores": scores,
    "labels": labels,
    "logits": logits,
    "gt": gt,
    "ori": ori,
    "gt_ori": gt_ori,
    "gauss": gauss,
    "infonce": infoNCELoss(torch.flatten(scores, 1), torch.flatten(labels, 1)),
    "ce": cross_entropy_loss(logits, gt),
    "orientation": orientation_loss(ori, gt_ori, gauss),
}
np.savez("losses.npz", **{k: v.numpy() for k, v in out.items()})
print({k: float(v) for k, v in out.items() if v.ndim == 0})
