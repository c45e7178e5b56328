"""The ``toker`` source: Toker et al., CVPR'21 ("Coming Down to Earth", ``aysim/comingdowntoearth``): a ``torch.save``'d
dict with ``generator_model_dict``, ``discriminator_model_dict``, ``retriebal_model_dict`` (sic),
three optimiser dicts, ``last_epoch`` and ``best_acc``; model keys likely prefixed ``module.``;
spectral-normalised convs stored the old way (``weight_orig``, ``weight_u``, ``weight_v``).

The converter loads with ``weights_only=True`` (never anything else), strips prefixes, bakes
spectral norm (W = W_orig / sigma with sigma = u^T (W_mat v), W_mat = W_orig reshaped to
(out, -1); the value torch's ``spectral_norm`` uses in eval mode) and writes one safetensors file
per model component with provenance metadata. Optimiser state is not converted.

CLI: ``python -m geo_retrieval.convert toker SRC OUT_DIR`` (:mod:`geo_retrieval.convert.cli`).
This source writes the G / D / R components as they are (``{generator,discriminator,retrieval}.safetensors``),
not yet a recipe folder with ``manifest.json`` (the retrieval branch onto the ``toker21`` recipe is a
separate step).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..checkpoint import _safe_torch_load, save_weights, strip_prefixes
from .sources import register_source

__all__ = ["TOKER_COMPONENTS", "bake_spectral_norm", "convert_toker"]

TOKER_COMPONENTS: dict[str, str] = {
    "generator_model_dict": "generator",
    "discriminator_model_dict": "discriminator",
    "retriebal_model_dict": "retrieval",
}


def bake_spectral_norm(state_dict: Mapping[str, Tensor], *, dim: int | None = None) -> dict[str, Tensor]:
    """Replace every ``<p>.weight_orig`` / ``<p>.weight_u`` / ``<p>.weight_v`` triple by ``<p>.weight``.

    ``weight = weight_orig / sigma`` with ``sigma = u . (W_mat @ v)``, ``W_mat`` the weight with
    the normalised dimension first, flattened to 2-D. The dimension is 0 (conv, linear) unless
    ``u`` only matches dim 1 (transposed convs) or ``dim`` says otherwise.

    Raises:
        ValueError: an incomplete triple or inconsistent shapes.
    """

    def join(prefix: str, leaf: str) -> str:
        return f"{prefix}.{leaf}" if prefix else leaf

    out: dict[str, Tensor] = {}
    prefixes = {k.rpartition(".")[0] for k in state_dict if k.rpartition(".")[2] == "weight_orig"}
    for key, value in state_dict.items():
        base, _, leaf = key.rpartition(".")
        if base in prefixes and leaf in ("weight_orig", "weight_u", "weight_v"):
            continue
        if leaf in ("weight_u", "weight_v"):
            raise ValueError(f"{key!r} has no matching {join(base, 'weight_orig')!r}")
        out[key] = value
    for prefix in sorted(prefixes):
        try:
            w = state_dict[join(prefix, "weight_orig")]
            u = state_dict[join(prefix, "weight_u")]
            v = state_dict[join(prefix, "weight_v")]
        except KeyError as err:
            raise ValueError(
                f"incomplete spectral-norm triple for {prefix!r}: missing {err.args[0]!r}"
            ) from None
        d = dim
        if d is None:
            d = 0 if u.numel() == w.shape[0] else 1 if w.ndim > 1 and u.numel() == w.shape[1] else -1
            if d < 0:
                raise ValueError(
                    f"{prefix}: weight_u of size {u.numel()} matches no dimension of {tuple(w.shape)}"
                )
        w64 = w.double()
        w_mat = w64.movedim(d, 0).reshape(w.shape[d], -1)
        if v.numel() != w_mat.shape[1]:
            raise ValueError(f"{prefix}: weight_v has {v.numel()} entries, expected {w_mat.shape[1]}")
        sigma = torch.dot(u.double().flatten(), w_mat @ v.double().flatten())
        if join(prefix, "weight") in out:
            raise ValueError(f"{join(prefix, 'weight')!r} exists beside its weight_orig")
        out[join(prefix, "weight")] = (w64 / sigma).to(w.dtype)
    return out


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def convert_toker(src: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Convert a Toker et al. checkpoint into ``{generator,discriminator,retrieval}.safetensors``.

    Args:
        src: the ``.pth`` file (loaded with ``weights_only=True``).
        out_dir: output directory (created).

    Returns:
        ``{component: path}`` for the components present.

    Raises:
        UnsafeCheckpointError: the file needs pickled globals beyond plain data.
        ValueError: none of the three model dicts is present.
    """
    src = Path(src)
    if not src.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(src)!r}")
    ckpt = _safe_torch_load(src)
    if not isinstance(ckpt, Mapping):
        raise ValueError(f"expected a dict checkpoint, got {type(ckpt).__name__}")
    present = [k for k in TOKER_COMPONENTS if k in ckpt]
    if not present:
        raise ValueError(
            f"{src.name}: none of {sorted(TOKER_COMPONENTS)} found (keys: {sorted(map(str, ckpt))[:20]}); "
            "is this a Toker et al. checkpoint?"
        )
    digest = _sha256(src)
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for key in present:
        component = TOKER_COMPONENTS[key]
        state = ckpt[key]
        if not isinstance(state, Mapping):
            raise ValueError(f"{key} must be a state dict, got {type(state).__name__}")
        state = bake_spectral_norm(strip_prefixes(state))
        metadata = {
            "format": "geo-retrieval/toker21",
            "component": component,
            "source_file": src.name,
            "source_sha256": digest,
            "source_key": key,
            "last_epoch": str(ckpt.get("last_epoch", "")),
            "best_acc": str(ckpt.get("best_acc", "")),
            "converter": f"geo_retrieval.convert.convert_toker {__version__}",
            "spectral_norm": "baked (eval-mode sigma from stored u, v)",
            "input_normalisation": "x/255, mean=std=0.5 ([-1, 1]) for every branch",
        }
        written[component] = save_weights(state, out_dir / f"{component}.safetensors", metadata)
    return written


@register_source(
    "toker", summary="Toker et al. CVPR'21 .pth -> generator/discriminator/retrieval.safetensors"
)
def _convert(src: Path, out_dir: Path, **options: Any) -> dict[str, Path]:
    return convert_toker(src, out_dir)
