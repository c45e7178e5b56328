"""Parameter counts of CCVPE's own CVM_VIGOR (tudelft-iv/CCVPE models.py), grouped as our CCVPE
groups its modules. Run in a scratch folder holding upstream's models.py and efficientnet_pytorch/
(`git archive HEAD models.py efficientnet_pytorch | tar x`); EfficientNet.from_pretrained is pointed
at from_name (same architecture, no download); the notebook / tensorboard imports models.py makes
are stubbed when missing."""

import json
import sys
import types

for name in ("IPython", "IPython.display", "torch.utils.tensorboard", "matplotlib", "matplotlib.pyplot"):
    try:
        __import__(name)
    except Exception:
        stub = types.ModuleType(name)
        stub.Image = None
        stub.SummaryWriter = None
        sys.modules[name] = stub

from efficientnet_pytorch.model import EfficientNet  # noqa: E402

EfficientNet.from_pretrained = classmethod(lambda cls, name, circular, **kw: cls.from_name(name, circular))
import models  # noqa: E402

up = models.CVM_VIGOR("cpu", True)
groups: dict[str, int] = {}
for key, p in up.named_parameters():
    top = key.split(".")[0]
    if top.endswith("efficientnet") and key.split(".")[1] == "_fc":
        continue  # the ImageNet classifier: built, never used by CVM_VIGOR.forward
    group = {
        "grd_efficientnet": "ground_encoder",
        "sat_efficientnet": "aerial_encoder",
        "sat_feature_to_descriptors": "cells",
    }.get(top)
    if group is None:
        if top.startswith("grd_feature_to_descriptor"):
            group = "ground_descriptors"
        elif top.endswith("_ori"):
            group = "orientation_up" if top.startswith("deconv") else "orientation_conv"
        else:
            group = "up" if top.startswith("deconv") else "conv"
    groups[group] = groups.get(group, 0) + p.numel()
with open("param_counts.json", "w") as f:
    json.dump(groups, f, indent=1, sort_keys=True)
print(groups)
