"""Safe, atomic checkpoint I/O.

Convention:
- model weights live in ``.safetensors`` files with ``dict[str, str]`` metadata (provenance);
- optimiser / trainer state lives in a separate ``torch.save`` file holding only plain containers
  (dict, list, tuple), numbers, strings and tensors, so it loads with ``weights_only=True``;
- every load of a pickle-based file is ``torch.load(map_location="cpu", weights_only=True)``. A file
  that needs any other global raises :class:`UnsafeCheckpointError` naming the blocked globals;
  there is no unsafe fallback, ever;
- every write goes to a temporary file in the target directory, is fsync'ed and then
  ``os.replace``'d over the target, so a crash or an exception leaves either the old file or
  none, never a partial one.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import torch
from torch import Tensor, nn

__all__ = [
    "UnsafeCheckpointError",
    "atomic_save",
    "atomic_write_bytes",
    "load_trainer_state",
    "load_weights",
    "read_metadata",
    "save_trainer_state",
    "save_weights",
    "strip_prefixes",
    "unwrap_state_dict",
]

_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".tar")
_PREFIXES = ("module.", "_orig_mod.")


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A pickle checkpoint needs globals outside the ``weights_only`` allow-list.

    Attributes:
        path: the file refused.
        globals: the fully qualified names that were blocked (may be empty if torch did not say).
    """

    def __init__(self, path: str, blocked: list[str], detail: str = "") -> None:
        self.path = path
        self.globals = blocked
        names = ", ".join(blocked) if blocked else "unknown (see the torch message below)"
        msg = (
            f"refusing to load {path!r}: it needs pickled globals outside torch's weights_only allow-list: "
            f"{names}. No unsafe fallback is performed. If you trust the file and the types are plain "
            f"data, load it yourself inside torch.serialization.safe_globals([...]) and re-save it "
            f"as safetensors."
        )
        if detail:
            msg += f"\ntorch said: {detail.splitlines()[0] if detail else ''}"
        super().__init__(msg)


# ----------------------------------------------------------------------------------------------
# atomic writes


def atomic_save(path: str | os.PathLike[str], writer: Callable[[IO[bytes]], Any]) -> Path:
    """Write a file atomically: ``writer(fh)`` fills a temporary file in the same directory, which
    is flushed, fsync'ed and renamed over ``path``.

    If ``writer`` raises, the temporary file is removed, ``path`` is untouched and the exception
    propagates.

    Args:
        path: destination file; its directory is created if missing.
        writer: called with a binary file handle open for writing.

    Returns:
        ``Path(path)``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            writer(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported on every platform / filesystem
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Atomically write ``data`` to ``path`` (see :func:`atomic_save`)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    return atomic_save(path, lambda fh: fh.write(data))


# ----------------------------------------------------------------------------------------------
# state-dict helpers


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: tuple[str, ...] = _PREFIXES) -> dict[str, Any]:
    """Remove leading ``module.`` (DataParallel/DDP) and ``_orig_mod.`` (torch.compile) prefixes,
    repeatedly and in any order, from every key.

    Example:
        >>> strip_prefixes({"module._orig_mod.fc.weight": 1})
        {'fc.weight': 1}
    """
    out: dict[str, Any] = {}
    for key, value in state_dict.items():
        new = key
        changed = True
        while changed:
            changed = False
            for prefix in prefixes:
                if new.startswith(prefix):
                    new = new[len(prefix) :]
                    changed = True
        if new in out:
            raise ValueError(f"stripping prefixes maps two keys onto {new!r}")
        out[new] = value
    return out


def unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    """Return the state dict inside a training checkpoint.

    Prefers ``state_dict_ema``, ``model_ema``, ``state_dict``, ``model`` (timm's order); a mapping
    of tensors is returned as is.
    """
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected a mapping (state dict or checkpoint), got {type(obj).__name__}")
    if obj and all(isinstance(v, Tensor) for v in obj.values()):
        return dict(obj)
    for key in ("state_dict_ema", "model_ema", "state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, Mapping) and inner:
            return unwrap_state_dict(inner)
    raise ValueError(f"no state dict found; top-level keys: {sorted(map(str, obj))[:20]}")


# ----------------------------------------------------------------------------------------------
# weights


def _state_dict_of(module_or_state_dict: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    if isinstance(module_or_state_dict, nn.Module):
        return dict(module_or_state_dict.state_dict())
    if isinstance(module_or_state_dict, Mapping):
        bad = [k for k, v in module_or_state_dict.items() if not isinstance(v, Tensor)]
        if bad:
            raise TypeError(f"state dict values must be tensors; not for {bad[:5]}")
        return dict(module_or_state_dict)
    raise TypeError(f"expected an nn.Module or a state dict, got {type(module_or_state_dict).__name__}")


def _dedupe_storage(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Make tensors contiguous and non-aliased (safetensors refuses shared storage)."""
    out: dict[str, Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for key, t in state_dict.items():
        t = t.detach()
        ident = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (0, id(t))
        if (
            not t.is_contiguous()
            or ident in seen
            or t.untyped_storage().nbytes() != t.numel() * t.element_size()
        ):
            t = t.contiguous().clone()
        seen.add(ident)
        out[key] = t.cpu()
    return out


def save_weights(
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    path: str | os.PathLike[str],
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Save weights to a ``.safetensors`` file, atomically.

    Tied or views-of-one-storage tensors are cloned so each key is stored independently (a load
    restores the values; re-tie in the model if the tie matters). ``module.``/``_orig_mod.``
    prefixes are stripped.

    Args:
        module_or_state_dict: a module (its ``state_dict()``) or a mapping of tensors.
        path: destination; must end in ``.safetensors``.
        metadata: provenance, ``dict[str, str]`` (package versions, config hash, backbone name...).

    Returns:
        ``Path(path)``.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"save_weights writes safetensors; path must end in .safetensors, got {path.name!r}")
    metadata = dict(metadata or {})
    bad = {
        k: type(v).__name__ for k, v in metadata.items() if not (isinstance(k, str) and isinstance(v, str))
    }
    if bad:
        raise TypeError(f"metadata must be dict[str, str]; offending entries: {bad}")
    state = _dedupe_storage(strip_prefixes(_state_dict_of(module_or_state_dict)))
    data = save(state, metadata=metadata)
    return atomic_write_bytes(path, data)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``dict[str, str]`` metadata of a ``.safetensors`` file (without reading tensors)."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def _blocked_globals(path: str, message: str) -> list[str]:
    names: list[str] = []
    get_unsafe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if get_unsafe is not None:
        try:
            names = list(get_unsafe(path))
        except Exception:
            names = []
    if not names:
        names = re.findall(r"Unsupported global: GLOBAL ([\w.]+)", message)
    return sorted(set(names))


def _safe_torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            os.fspath(path), _blocked_globals(os.fspath(path), str(err)), str(err)
        ) from None


def load_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a state dict from ``path``, choosing the loader by extension.

    ``.safetensors``: safetensors (no code execution possible). ``.pt``/``.pth``/``.bin``/``.ckpt``/
    ``.tar``: ``torch.load(map_location="cpu", weights_only=True)``; a checkpoint wrapping the
    weights (``state_dict``, ``model``...) is unwrapped.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle needs globals outside torch's allow-list.
        ValueError: unknown extension, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {os.fspath(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(os.fspath(path), device="cpu")
    if suffix in _PICKLE_SUFFIXES:
        return unwrap_state_dict(_safe_torch_load(path))
    raise ValueError(
        f"unknown weights extension {suffix!r} for {path.name!r}; use .safetensors (preferred) or one of {_PICKLE_SUFFIXES}"
    )


# ----------------------------------------------------------------------------------------------
# trainer state

_PLAIN = (type(None), bool, int, float, complex, str, bytes)


def _check_plain(obj: Any, where: str = "state") -> None:
    if isinstance(obj, _PLAIN) or isinstance(obj, Tensor):
        return
    if isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        return
    if type(obj) in (dict, OrderedDict):  # Module/optimizer state_dict() returns OrderedDict
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: keys must be str or int, got {type(k).__name__}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}; trainer state may hold only "
        f"dict/list/tuple, numbers, strings and tensors (so it loads with weights_only=True)"
    )


def save_trainer_state(state: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Atomically ``torch.save`` optimiser / scheduler / epoch state made of plain containers and tensors.

    Raises:
        TypeError: something that would need an unsafe global to load (checked before writing).
    """
    state = dict(state)
    _check_plain(state)
    return atomic_save(path, lambda fh: torch.save(state, fh))


def load_trainer_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a file written by :func:`save_trainer_state` (``weights_only=True``, on the CPU).

    Raises:
        UnsafeCheckpointError: the file needs globals outside the allow-list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no trainer state at {os.fspath(path)!r}")
    obj = _safe_torch_load(path)
    if not isinstance(obj, dict):
        raise ValueError(f"trainer state must be a dict, got {type(obj).__name__}")
    return obj
