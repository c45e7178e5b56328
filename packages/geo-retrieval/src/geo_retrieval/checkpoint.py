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
  none, never a partial one;
- files that belong together (a trainer's weights + state, ``best/`` weights + ``info.json``) are
  committed as one folder by :func:`commit_directory`: written into a sibling ``NAME.tmp-XXXXXXXX``,
  fsync'ed, then switched in by two renames (``NAME`` -> ``NAME.old-XXXXXXXX``, tmp -> ``NAME``).
  A crash leaves either the old folder or the new one under ``NAME``; only a crash between the two
  renames leaves no ``NAME``, and :func:`recover_directory` puts back the newest complete sibling;
- a trainer checkpoint pair carries a shared random ``checkpoint_id`` and the ``global_step`` in
  both files (safetensors metadata / trainer-state keys) plus, in the state, the ``weights_sha256``
  of the weights file it was written with; :func:`verify_checkpoint_pair` refuses a pair that was
  not written together (:class:`InconsistentCheckpointError`). Files written before these keys
  existed are compared by step only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import secrets
import shutil
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import safetensors.torch
import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn

__all__ = [
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "InconsistentCheckpointError",
    "UnsafeCheckpointError",
    "atomic_save",
    "atomic_write_bytes",
    "commit_directory",
    "file_sha256",
    "load_model_weights",
    "load_trainer_state",
    "load_weights",
    "read_metadata",
    "recover_directory",
    "save_trainer_state",
    "save_weights",
    "strip_prefixes",
    "unwrap_state_dict",
    "verify_checkpoint_pair",
    "weights_digest",
]

logger = logging.getLogger(__name__)

# the process umask, read once at import (os.umask can only be read by setting it)
_UMASK = os.umask(0o022)
os.umask(_UMASK)
#: Mode of files written by :func:`atomic_save`: what ``open(path, "w")`` would give.
_FILE_MODE = 0o666 & ~_UMASK

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


class CorruptCheckpointError(ValueError):
    """A checkpoint file cannot be read: truncated, empty, or not a file of its format at all.

    Attributes:
        path: the file.
        format: ``"safetensors"`` or ``"torch.save"``.
    """

    def __init__(self, path: str | os.PathLike[str], format: str, reason: str) -> None:
        self.path = os.fspath(path)
        self.format = format
        reason = " ".join(str(reason).split())[:200]
        super().__init__(
            f"cannot read {self.path}: not a complete {format} file ({reason}); it is truncated or damaged: "
            "copy or download it again, or use another checkpoint"
        )


class CheckpointMismatchError(ValueError):
    """The weights of a checkpoint do not fit a model (names which keys / shapes), or hold NaN /
    infinite values (see :func:`load_model_weights`)."""


class InconsistentCheckpointError(ValueError):
    """The weights and the trainer state of a checkpoint folder were not written together.

    Typically a run killed between the two writes of a trainer that saved them one after the
    other, or a file copied in from another run. Resuming would silently mix two states.

    Attributes:
        weights_path, state_path: the two files.
        weights_step, state_step: the global step each was written at (None: not recorded).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike[str],
        state_path: str | os.PathLike[str],
        weights_step: int | None,
        state_step: int | None,
        reason: str,
    ) -> None:
        self.weights_path, self.state_path = os.fspath(weights_path), os.fspath(state_path)
        self.weights_step, self.state_step = weights_step, state_step
        folder = os.path.dirname(self.weights_path) or "."
        super().__init__(
            f"{reason}; resuming would mix two states. Put back a consistent copy of {folder} if you kept "
            f"one, or start the run again in a new folder"
        )


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
        if hasattr(os, "fchmod"):  # mkstemp makes 0600; a written file gets the usual 0666 & ~umask
            os.fchmod(fd, _FILE_MODE)
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


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (read in ``chunk``-byte pieces)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _siblings(directory: Path, kind: str) -> list[Path]:
    """``NAME.tmp-*`` or ``NAME.old-*`` folders beside ``directory``, newest first."""
    if not directory.parent.is_dir():
        return []
    found = [p for p in directory.parent.glob(f"{directory.name}.{kind}-*") if p.is_dir()]
    return sorted(found, key=lambda p: p.stat().st_mtime_ns, reverse=True)


def _new_sibling(directory: Path, kind: str) -> Path:
    while True:
        path = directory.parent / f"{directory.name}.{kind}-{secrets.token_hex(4)}"
        if not path.exists():
            return path


def commit_directory(directory: str | os.PathLike[str], write: Callable[[Path], Any]) -> Path:
    """Replace the folder ``directory`` as a whole by one that ``write(tmp)`` fills.

    ``write`` fills a fresh sibling ``NAME.tmp-XXXXXXXX``; its files are fsync'ed, then the old
    folder is renamed to ``NAME.old-XXXXXXXX``, the new one to ``NAME``, and the old one (and any
    leftover ``NAME.tmp-*`` / ``NAME.old-*`` of an earlier crash, now superseded) is removed. If
    ``write`` raises, the temporary folder is removed and ``directory`` is untouched. A crash
    leaves the old folder or the new one complete under ``NAME``, except between the two renames,
    where :func:`recover_directory` restores it. Files that others put in ``directory`` are dropped
    with the old folder.

    Args:
        directory: the folder to replace (created if missing, with its parents).
        write: called with the temporary folder's path; writes every file of the new folder.

    Returns:
        ``Path(directory)``.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{os.fspath(directory)!r} exists and is not a folder")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_sibling(directory, "tmp")
    tmp.mkdir()
    try:
        write(tmp)
        for path in tmp.rglob("*"):
            if path.is_file():
                _fsync_file(path)
        _fsync_dir(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if directory.exists():
        old = _new_sibling(directory, "old")
        os.rename(directory, old)
    os.rename(tmp, directory)
    _fsync_dir(directory.parent)
    for stale in [*_siblings(directory, "old"), *_siblings(directory, "tmp")]:
        shutil.rmtree(stale, ignore_errors=True)
    return directory


def recover_directory(directory: str | os.PathLike[str], is_complete: Callable[[Path], bool]) -> Path | None:
    """Put back a folder that a crash inside :func:`commit_directory` left missing.

    When ``directory`` does not exist, its siblings ``NAME.tmp-*`` (newest first: written but not
    switched in) and then ``NAME.old-*`` (the previous folder) are tried; the first one for which
    ``is_complete(path)`` is true is renamed to ``NAME`` and a warning is logged.

    Returns:
        ``Path(directory)`` when a folder was recovered, else None (nothing to do or nothing usable).
    """
    directory = Path(directory)
    if directory.exists():
        return None
    for candidate in [*_siblings(directory, "tmp"), *_siblings(directory, "old")]:
        try:
            complete = bool(is_complete(candidate))
        except Exception:  # a damaged candidate is simply not complete
            complete = False
        if complete:
            os.rename(candidate, directory)
            _fsync_dir(directory.parent)
            logger.warning(
                "%s was missing (a crash while it was being replaced): recovered it from %s",
                os.fspath(directory),
                candidate.name,
            )
            return directory
    return None


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
        ident = (t.untyped_storage().data_ptr(), int(t.storage_offset())) if t.numel() else (0, id(t))
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
    data = safetensors.torch.save(state, metadata=metadata)
    return atomic_write_bytes(path, data)


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``dict[str, str]`` metadata of a ``.safetensors`` file (without reading tensors)."""
    try:
        with safe_open(os.fspath(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except SafetensorError as err:
        raise CorruptCheckpointError(Path(path), "safetensors", str(err)) from None


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
    """``torch.load(weights_only=True)``; a pickle that needs unsafe globals raises
    :class:`UnsafeCheckpointError`, a truncated, empty or garbage file :class:`CorruptCheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        blocked = _blocked_globals(os.fspath(path), str(err))
        if blocked or "Unsupported global" in str(err):
            raise UnsafeCheckpointError(os.fspath(path), blocked, str(err)) from None
        raise CorruptCheckpointError(path, "torch.save", str(err)) from None
    except Exception as err:
        # weights_only runs no code from the file, so any other failure means the bytes are not a
        # whole torch.save file: the zip reader raises RuntimeError / OSError on a truncated archive,
        # the legacy reader EOFError / KeyError / IndexError on garbage or an empty file
        raise CorruptCheckpointError(path, "torch.save", f"{type(err).__name__}: {err}") from None


def load_weights(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Load a state dict from ``path``, choosing the loader by extension.

    ``.safetensors``: safetensors (no code execution possible). ``.pt``/``.pth``/``.bin``/``.ckpt``/
    ``.tar``: ``torch.load(map_location="cpu", weights_only=True)``; a checkpoint wrapping the
    weights (``state_dict``, ``model``...) is unwrapped.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the pickle needs globals outside torch's allow-list.
        CorruptCheckpointError: a truncated, empty or garbage file (names it).
        ValueError: unknown extension, or no state dict inside.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {os.fspath(path)!r}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(os.fspath(path), device="cpu")
        except SafetensorError as err:
            raise CorruptCheckpointError(path, "safetensors", str(err)) from None
    if suffix in _PICKLE_SUFFIXES:
        return unwrap_state_dict(_safe_torch_load(path))
    raise ValueError(
        f"unknown weights extension {suffix!r} for {path.name!r}; use .safetensors (preferred) or one of {_PICKLE_SUFFIXES}"
    )


def weights_digest(state: Mapping[str, Tensor]) -> str:
    """A 16-hex-digit sha256 of a state dict's contents: names, dtypes, shapes and values in key
    order. Unlike a hash of the file, it does not depend on metadata (step, time, key order in the
    header), so identical weights always give the same digest."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def load_model_weights(model: nn.Module, path: str | os.PathLike[str]) -> str:
    """Load the weights file ``path`` (:func:`load_weights`, prefixes stripped) into ``model``
    strictly, refusing non-finite values; returns their :func:`weights_digest`.

    Raises:
        CheckpointMismatchError: the keys or shapes differ (lists which), or NaN / infinite values.
        UnsafeCheckpointError: a pickle needing unsafe globals (never unpickled).
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at {path}")
    state = strip_prefixes(load_weights(path))
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:

        def few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" ... ({len(items)} in all)" if len(items) > 5 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches: {few(shapes)}")
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit the recipe's model ({'; '.join(parts)}). "
            "Was it trained with another recipe or variant? Pass the matching --recipe / --variant."
        )
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointMismatchError(
            f"checkpoint {path} holds NaN or infinite values in {len(bad)} tensor(s) (first: {bad[0]}): the "
            "training diverged or the file is damaged; evaluate an earlier checkpoint (best/ or last/)"
        )
    model.load_state_dict(state, strict=True)
    return weights_digest(state)


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


# ----------------------------------------------------------------------------------------------
# weights + trainer state written together


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def verify_checkpoint_pair(
    weights_path: str | os.PathLike[str],
    state_path: str | os.PathLike[str],
    state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Check that a weights file and a trainer-state file were written together (module convention).

    Compared, as far as both files record them: the ``global_step``, the ``checkpoint_id`` and the
    SHA-256 of the weights file (``weights_sha256`` in the state). Files from before the id existed
    are compared by step only.

    Args:
        weights_path: the ``.safetensors`` file.
        state_path: the trainer-state file.
        state: the already loaded trainer state (loaded from ``state_path`` when None).

    Returns:
        The trainer state.

    Raises:
        InconsistentCheckpointError: the pair was not written together (one line naming both files
            and both steps).
        FileNotFoundError: a file is missing.
    """
    weights_path, state_path = Path(weights_path), Path(state_path)
    if not weights_path.is_file():
        raise FileNotFoundError(f"no weights file at {os.fspath(weights_path)!r}")
    state = dict(state) if state is not None else load_trainer_state(state_path)
    meta = read_metadata(weights_path)
    w_step, s_step = _int_or_none(meta.get("global_step")), _int_or_none(state.get("global_step"))
    w_id, s_id = meta.get("checkpoint_id"), state.get("checkpoint_id")
    w_name = f"{weights_path.parent.name}/{weights_path.name}"
    s_name = f"{state_path.parent.name}/{state_path.name}"

    def fail(reason: str) -> InconsistentCheckpointError:
        return InconsistentCheckpointError(weights_path, state_path, w_step, s_step, reason)

    if w_step is not None and s_step is not None and w_step != s_step:
        raise fail(
            f"{w_name} is from step {w_step} but {s_name} from step {s_step}: the two were not written "
            f"together (the run was killed between the two writes, or a file was replaced)"
        )
    if w_id and s_id and w_id != s_id:
        raise fail(
            f"{w_name} (step {w_step}, checkpoint {w_id}) and {s_name} (step {s_step}, checkpoint {s_id}) "
            f"were not written together (a file was copied in from another save)"
        )
    expected = state.get("weights_sha256")
    if expected and file_sha256(weights_path) != expected:
        raise fail(
            f"{w_name} (step {w_step}) is not the file {s_name} (step {s_step}) was saved with: its sha256 "
            f"differs (the weights were changed or replaced after the save)"
        )
    return state
