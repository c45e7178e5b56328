"""The layout of a training run folder: the one place that spells its folder and file names.

Convention (written by :class:`~geo_retrieval.training.Trainer`, plus what ``geo-bench train`` adds):

.. code-block:: text

    RUN/
      last/model.safetensors    weights of the latest checkpoint   } committed together as one
      last/trainer_state.pt     full trainer state                 } folder (resume from here)
      best/model.safetensors    weights of the best held-out epoch } committed together
      best/info.json            its step, metric and checkpoint id }
      history.json              one record per epoch
      recipe.json               the recipe the run trained
      run.json                  geo-bench train: the run's summary (config hash, steps, seconds...)
      run_args.json             geo-bench train: the arguments the run was started with

A checkpoint path given by a user may be the run folder, its ``best/`` or ``last/`` folder or a
weights file; :func:`locate_weights` finds the weights (``best/`` first, then ``last/``) and the run
folder they belong to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "BEST",
    "CHECKPOINTS",
    "HISTORY_FILE",
    "INFO_FILE",
    "LAST",
    "RECIPE_FILE",
    "RUN_ARGS_FILE",
    "RUN_FILE",
    "STATE_FILE",
    "WEIGHTS_FILE",
    "WEIGHTS_NAMES",
    "RunLayout",
    "locate_weights",
]

#: The checkpoint folder written every epoch (weights + trainer state; resume from here).
LAST = "last"
#: The checkpoint folder of the best held-out epoch (weights + :data:`INFO_FILE`).
BEST = "best"
#: The checkpoint folders, in the order a checkpoint is looked for (:func:`locate_weights`).
CHECKPOINTS = (BEST, LAST)
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "trainer_state.pt"
INFO_FILE = "info.json"
HISTORY_FILE = "history.json"
RECIPE_FILE = "recipe.json"
RUN_FILE = "run.json"
RUN_ARGS_FILE = "run_args.json"
#: Weights file names accepted in a checkpoint folder, preferred first.
WEIGHTS_NAMES = (WEIGHTS_FILE, "model.pt", "model.pth")


@dataclass(frozen=True)
class RunLayout:
    """The paths of a run folder (module convention); nothing is read or created.

    Example:
        >>> RunLayout("runs/safa").weights("best").as_posix()
        'runs/safa/best/model.safetensors'
        >>> RunLayout("runs/safa").state().as_posix()
        'runs/safa/last/trainer_state.pt'
    """

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def last(self) -> Path:
        """``RUN/last``: the latest checkpoint (weights + trainer state)."""
        return self.root / LAST

    @property
    def best(self) -> Path:
        """``RUN/best``: the weights of the best held-out epoch."""
        return self.root / BEST

    def checkpoint(self, which: str) -> Path:
        """``RUN/last`` or ``RUN/best``."""
        if which not in CHECKPOINTS:
            raise ValueError(f"which must be one of {CHECKPOINTS}, got {which!r}")
        return self.root / which

    def weights(self, which: str = BEST) -> Path:
        """The weights file of ``which`` checkpoint (``RUN/best/model.safetensors`` by default)."""
        return self.checkpoint(which) / WEIGHTS_FILE

    def state(self, which: str = LAST) -> Path:
        """The trainer-state file of ``which`` checkpoint (``RUN/last/trainer_state.pt`` by default)."""
        return self.checkpoint(which) / STATE_FILE

    def info(self, which: str = BEST) -> Path:
        """The ``info.json`` of ``which`` checkpoint (``best/`` by default)."""
        return self.checkpoint(which) / INFO_FILE

    @property
    def history_json(self) -> Path:
        return self.root / HISTORY_FILE

    @property
    def recipe_json(self) -> Path:
        return self.root / RECIPE_FILE

    @property
    def run_json(self) -> Path:
        return self.root / RUN_FILE

    @property
    def run_args_json(self) -> Path:
        return self.root / RUN_ARGS_FILE


def locate_weights(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """The weights file a checkpoint path names and the run folder it belongs to.

    ``path`` may be a weights file (its folder is the run folder), a run folder (its ``best/``
    weights, else ``last/``), a ``best/`` or ``last/`` folder (the run folder is its parent) or a
    folder holding a weights file (:data:`WEIGHTS_NAMES`).

    Returns:
        ``(weights file, run folder)``.

    Raises:
        FileNotFoundError: nothing at ``path``, or no weights in the folder.
    """
    p = Path(path)
    if p.is_file():
        return p, p.parent
    if not p.exists():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    for sub in (*CHECKPOINTS, "."):
        for name in WEIGHTS_NAMES:
            f = p / sub / name
            if f.is_file():
                run_dir = p if sub != "." else (p.parent if p.name in CHECKPOINTS else p)
                return f, run_dir
    raise FileNotFoundError(f"no weights in {p} (looked for {BEST}/, {LAST}/ or {WEIGHTS_FILE})")
