"""The JSON results record: one object per evaluation, measured here or reported by a paper.

Convention (``design.md``, "Results record"):
    ``{"recipe", "variant", "dataset", "split", "protocol": {"polar", "fov", "orientation_known",
    "top1pct_rule", "tie_rule", "cvact_test", "labels", ...}, "n_query", "n_reference",
    "metrics": {"R@1", ..., "R@1%", "K_1pct", ...}, "provenance": {"kind": "measured" | "reported",
    "source", "seed", "commit", "packages", "hardware", "train_seconds", "eval_seconds", "time"}}``

    - ``kind="measured"`` needs ``seed``, ``commit`` and ``hardware``; ``kind="reported"`` needs a
      ``source`` (paper / table / repository).
    - Every ``R@x%`` metric of a measured record needs its ``K_xpct`` next to it.
    - Protocol values are JSON scalars (or lists/dicts of them); unknown protocol keys are kept, so
      datasets can add their own (``cvusa_split``, ``selection_split``, ``fov_seed``...).
    - ``time`` is UTC ISO 8601. ``commit`` is the git commit of the working tree, with ``+dirty`` when
      it has uncommitted changes, or ``"unknown"`` outside git.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from geo_retrieval.ranking import TIE_RULES, TOP1PCT_RULES

__all__ = [
    "PROTOCOL_KEYS",
    "Provenance",
    "RecordValidationError",
    "ResultRecord",
    "collect_provenance",
    "git_commit",
    "hardware_info",
    "package_versions",
    "utc_now",
]

#: Protocol keys every record carries (values may be ``None`` where a flag does not apply).
PROTOCOL_KEYS = ("polar", "fov", "orientation_known", "top1pct_rule", "tie_rule", "cvact_test", "labels")
_KINDS = ("measured", "reported")
_DEFAULT_PACKAGES = (
    "torch",
    "kornia",
    "timm",
    "numpy",
    "faiss-cpu",
    "geo-transforms",
    "geo-retrieval",
    "geo-synthesis",
    "geo-bench",
)
_JSON_SCALARS = (str, int, float, bool, type(None))


class RecordValidationError(ValueError):
    """A results record is missing a required field or holds an invalid value."""


def _check_json_value(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise RecordValidationError(f"{where} must be finite, got {value}")
    if isinstance(value, _JSON_SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_json_value(v, f"{where}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise RecordValidationError(f"{where} keys must be strings, got {k!r}")
            _check_json_value(v, f"{where}.{k}")
        return
    raise RecordValidationError(f"{where} must be JSON-serialisable, got {type(value).__name__}")


@dataclass(frozen=True)
class Provenance:
    """Where a record's numbers come from.

    Attributes:
        kind: ``"measured"`` (run here) or ``"reported"`` (copied from a paper or repository).
        source: citation for reported numbers (paper, table, URL); optional for measured ones.
        seed: the run's seed (measured).
        commit: git commit of the code that measured it (``+dirty`` when modified; measured).
        packages: ``{distribution: version}``.
        hardware: ``{"cpu", "cores", "cuda", ...}``, or a free-text description.
        train_seconds: wall time of training, when the run trained.
        eval_seconds: wall time of the evaluation.
        time: UTC ISO 8601 time the record was made.
    """

    kind: str
    source: str | None = None
    seed: int | None = None
    commit: str | None = None
    packages: dict[str, str] = field(default_factory=dict)
    hardware: dict[str, Any] | str | None = None
    train_seconds: float | None = None
    eval_seconds: float | None = None
    time: str | None = None

    def validate(self) -> None:
        """Raise :class:`RecordValidationError` when the fields do not fit ``kind``."""
        if self.kind not in _KINDS:
            raise RecordValidationError(f"provenance.kind must be one of {_KINDS}, got {self.kind!r}")
        if self.kind == "measured":
            missing = [
                name
                for name, value in (("seed", self.seed), ("commit", self.commit), ("hardware", self.hardware))
                if value is None or value == "" or value == {}
            ]
            if missing:
                raise RecordValidationError(f"a measured record needs provenance {missing}")
            if isinstance(self.seed, bool) or not isinstance(self.seed, int):
                raise RecordValidationError(f"provenance.seed must be an int, got {self.seed!r}")
        if self.kind == "reported" and not (isinstance(self.source, str) and self.source.strip()):
            raise RecordValidationError("a reported record needs provenance.source (paper, table or URL)")
        for name in ("train_seconds", "eval_seconds"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0
            ):
                raise RecordValidationError(f"provenance.{name} must be a non-negative number, got {value!r}")
        if not isinstance(self.packages, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.packages.items()
        ):
            raise RecordValidationError("provenance.packages must map distribution names to version strings")
        _check_json_value(self.hardware, "provenance.hardware")
        if self.time is not None:
            try:
                datetime.fromisoformat(self.time)
            except (TypeError, ValueError) as err:
                raise RecordValidationError(f"provenance.time must be ISO 8601, got {self.time!r}") from err


@dataclass(frozen=True)
class ResultRecord:
    """One evaluation's numbers with everything needed to compare them (see the module Convention).

    Attributes:
        recipe: recipe name (e.g. ``"safa"``) or the paper's method name for reported numbers.
        variant: ``"full"`` or ``"small"`` (or the paper's variant).
        dataset: ``"cvusa"``, ``"cvact"``, ``"vigor"``, ``"world"``...
        split: ``"val"``, ``"test"``, ``"same_area"``...
        protocol: flags; must contain :data:`PROTOCOL_KEYS`, may contain more.
        n_query: number of queries (N); ``None`` only for reported numbers that do not say.
        n_reference: gallery size (M); ``None`` only for reported numbers.
        metrics: ``{"R@1": ..., "R@1%": ..., "K_1pct": ..., ...}`` (recalls in percent).
        provenance: a :class:`Provenance`.
    """

    recipe: str
    variant: str
    dataset: str
    split: str
    protocol: dict[str, Any]
    n_query: int | None
    n_reference: int | None
    metrics: dict[str, Any]
    provenance: Provenance

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`RecordValidationError` for a missing or invalid field."""
        for name in ("recipe", "variant", "dataset", "split"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise RecordValidationError(f"{name} must be a non-empty string, got {value!r}")
        if not isinstance(self.provenance, Provenance):
            raise RecordValidationError(
                f"provenance must be a Provenance, got {type(self.provenance).__name__}"
            )
        self.provenance.validate()
        measured = self.provenance.kind == "measured"
        if not isinstance(self.protocol, Mapping):
            raise RecordValidationError(f"protocol must be a dict, got {type(self.protocol).__name__}")
        missing = [k for k in PROTOCOL_KEYS if k not in self.protocol]
        if missing:
            raise RecordValidationError(
                f"protocol is missing {missing} (use None where a flag does not apply)"
            )
        _check_json_value(dict(self.protocol), "protocol")
        if self.protocol.get("tie_rule") not in (None, *TIE_RULES):
            raise RecordValidationError(
                f"protocol.tie_rule must be {' or '.join(TIE_RULES)}, got {self.protocol['tie_rule']!r}"
            )
        if self.protocol.get("top1pct_rule") not in (None, *TOP1PCT_RULES):
            raise RecordValidationError(
                f"protocol.top1pct_rule must be {' or '.join(TOP1PCT_RULES)}, got {self.protocol['top1pct_rule']!r}"
            )
        for name in ("n_query", "n_reference"):
            value = getattr(self, name)
            if value is None and not measured:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RecordValidationError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.metrics, Mapping) or not self.metrics:
            raise RecordValidationError("metrics must be a non-empty dict")
        for key, value in self.metrics.items():
            if not isinstance(key, str):
                raise RecordValidationError(f"metric names must be strings, got {key!r}")
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise RecordValidationError(f"metrics[{key!r}] must be a number, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise RecordValidationError(f"metrics[{key!r}] must be finite, got {value}")
            m = re.fullmatch(r"R@([0-9.]+)%", key)
            if m and measured and f"K_{m.group(1)}pct" not in self.metrics:
                raise RecordValidationError(f"metrics has {key!r} but not the K it used, 'K_{m.group(1)}pct'")
            if key.startswith("R@") and isinstance(value, (int, float)) and not 0 <= value <= 100:
                raise RecordValidationError(f"metrics[{key!r}] is a recall in percent, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """A plain dict in the design's key order."""
        return asdict(self)

    def to_json(self, **kwargs: Any) -> str:
        """Serialise to a JSON string (``json.dumps`` keyword arguments are forwarded)."""
        kwargs.setdefault("allow_nan", False)
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResultRecord:
        """Build and validate a record from a dict such as ``json.loads(record.to_json())``."""
        expected = {
            "recipe",
            "variant",
            "dataset",
            "split",
            "protocol",
            "n_query",
            "n_reference",
            "metrics",
            "provenance",
        }
        if not isinstance(d, Mapping):
            raise RecordValidationError(f"a record must be a JSON object, got {type(d).__name__}")
        missing, extra = expected - set(d), set(d) - expected
        if missing or extra:
            raise RecordValidationError(f"record keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
        prov = d["provenance"]
        if not isinstance(prov, Mapping):
            raise RecordValidationError("provenance must be a JSON object")
        known = {f for f in Provenance.__dataclass_fields__}
        unknown = set(prov) - known
        if unknown:
            raise RecordValidationError(f"unexpected provenance keys {sorted(unknown)}")
        return cls(
            recipe=d["recipe"],
            variant=d["variant"],
            dataset=d["dataset"],
            split=d["split"],
            protocol=dict(d["protocol"]) if isinstance(d["protocol"], Mapping) else d["protocol"],
            n_query=d["n_query"],
            n_reference=d["n_reference"],
            metrics=dict(d["metrics"]) if isinstance(d["metrics"], Mapping) else d["metrics"],
            provenance=Provenance(**{**prov, "packages": dict(prov.get("packages") or {})}),
        )

    @classmethod
    def from_json(cls, text: str) -> ResultRecord:
        """Parse and validate a record written by :meth:`to_json`."""
        try:
            d = json.loads(text)
        except json.JSONDecodeError as err:
            raise RecordValidationError(f"not valid JSON: {err}") from err
        return cls.from_dict(d)

    def save(self, path: str | Path) -> Path:
        """Write the record as one JSON file (indented) and return its path."""
        path = Path(path)
        path.write_text(self.to_json(indent=2, sort_keys=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> ResultRecord:
        """Read a record written by :meth:`save`."""
        return cls.from_json(Path(path).read_text())


def utc_now() -> str:
    """The current UTC time, ISO 8601 with seconds (e.g. ``2025-01-31T12:00:00+00:00``)."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def git_commit(path: str | Path | None = None) -> str:
    """Commit of the git working tree containing ``path`` (default: this file), ``+dirty`` if modified.

    Returns ``"unknown"`` outside a git checkout or without git. Untracked files do not count as dirty.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    if cwd.is_file():
        cwd = cwd.parent
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            env=env,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not re.fullmatch(r"[0-9a-f]{40,64}", sha):
        return "unknown"
    return sha + ("+dirty" if status else "")


def package_versions(names: Iterable[str] = _DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed versions (``importlib.metadata``) of the given distributions; missing ones are skipped."""
    out: dict[str, str] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def hardware_info() -> dict[str, Any]:
    """``{"cpu": model, "cores": logical cores, "cuda": [device names] or None, "platform": ...}``."""
    info: dict[str, Any] = {"cpu": _cpu_model(), "cores": os.cpu_count(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["cuda"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    else:
        info["cuda"] = None
    info["torch_threads"] = torch.get_num_threads()
    return info


def collect_provenance(
    *,
    seed: int,
    train_seconds: float | None = None,
    eval_seconds: float | None = None,
    source: str | None = None,
    repo_path: str | Path | None = None,
    packages: Iterable[str] = _DEFAULT_PACKAGES,
) -> Provenance:
    """Provenance of a measurement made now, in this environment (``kind="measured"``).

    Args:
        seed: the run's seed.
        train_seconds: wall time of training, if the run trained.
        eval_seconds: wall time of the evaluation.
        source: optional free-text note (e.g. the checkpoint path or hash).
        repo_path: where to look for the git checkout (default: the installed geo_bench).
        packages: distributions whose versions are recorded.

    Returns:
        A validated :class:`Provenance`.
    """
    prov = Provenance(
        kind="measured",
        source=source,
        seed=seed,
        commit=git_commit(repo_path),
        packages=package_versions(packages),
        hardware=hardware_info(),
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        time=utc_now(),
    )
    prov.validate()
    return prov
