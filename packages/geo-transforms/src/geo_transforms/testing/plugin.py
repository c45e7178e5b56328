"""pytest plugin shared by the toolkit's test suites.

- ``--device``: ``auto`` (default: cpu, plus cuda when available), ``cpu``, ``cuda`` or ``all``.
- ``--dtype``: ``float32`` (default), a comma-separated list, or ``all``
  (float16, bfloat16, float32, float64).
- ``device`` and ``dtype`` fixtures parametrised from those options.
- the ``slow`` marker (deselected by each package's ``addopts``; run with ``-m slow``).
- the ``one_thread`` marker: a module with ``pytestmark = pytest.mark.one_thread`` runs with one
  torch intra-op thread (restored afterwards), set before the module's other fixtures. Tiny
  models on a shared CPU run several times faster that way.
- an autouse guard that refuses network connections to anything but loopback, and sets
  ``HF_HUB_OFFLINE=1`` so nothing tries to fetch weights.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

import pytest
import torch

_ALL_DTYPES = ("float16", "bfloat16", "float32", "float64")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--device`` and ``--dtype`` options."""
    group = parser.getgroup("geo", "geo-localisation toolkit test options")
    group.addoption("--device", default="auto", help="cpu | cuda | auto (cpu + cuda if present) | all")
    group.addoption("--dtype", default="float32", help="float32 | comma-separated list | all")


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers and default ``HF_HUB_OFFLINE=1`` and ``MPLBACKEND=Agg``."""
    config.addinivalue_line("markers", "slow: long-running test; run with -m slow")
    config.addinivalue_line("markers", "cuda: needs a CUDA device")
    config.addinivalue_line(
        "markers", "one_thread: (module-level) run the module with one torch intra-op thread"
    )
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")


def _devices(option: str) -> list[str]:
    if option in ("auto", "all"):
        return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    names = [name.strip() for name in option.split(",") if name.strip()]
    if "cuda" in names and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda was asked for but torch.cuda.is_available() is False")
    return names


def _dtypes(option: str) -> list[str]:
    names = list(_ALL_DTYPES) if option == "all" else [n.strip() for n in option.split(",") if n.strip()]
    unknown = [n for n in names if n not in _ALL_DTYPES]
    if unknown:
        raise pytest.UsageError(f"--dtype: unknown {unknown}; choose from {_ALL_DTYPES} or 'all'")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrise the ``device`` and ``dtype`` fixtures from the command-line options."""
    if "device" in metafunc.fixturenames:
        metafunc.parametrize("device", _devices(metafunc.config.getoption("--device")), indirect=True)
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", _dtypes(metafunc.config.getoption("--dtype")), indirect=True)


@pytest.fixture
def device(request: pytest.FixtureRequest) -> torch.device:
    """The torch device under test (from ``--device``)."""
    return torch.device(request.param)


@pytest.fixture
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    """The floating dtype under test (from ``--dtype``)."""
    return getattr(torch, request.param)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(request: pytest.FixtureRequest):
    """One torch intra-op thread for modules marked ``one_thread`` (module-scoped and autouse, so it
    is in place before the module's own module-scoped fixtures train anything)."""
    if request.node.get_closest_marker("one_thread") is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _is_loopback(address: object) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
    else:  # AF_UNIX paths and the like
        return True
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests run offline: a connection to anything but loopback raises instead of hanging."""
    real_connect = socket.socket.connect

    def guarded_connect(self: socket.socket, address: tuple[Any, ...] | str | bytes) -> object:
        if not _is_loopback(address):
            raise RuntimeError(f"test tried to reach the network ({address!r}); tests must run offline")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
