"""Nox sessions for the geo-localisation monorepo.

Sessions (``nox -l`` lists them):

- ``tests(<package>)``: one per directory under ``packages/``; installs the package with its
  ``[test]`` extra and the sibling packages it depends on (from their local paths, never from an
  index) into its own environment, then runs its tests and every docstring example under its
  ``src/`` (``pytest --doctest-modules``). ``nox -t tests`` runs them all.
- ``lint``: ``ruff check`` over the whole tree and ``ruff format --check`` over ``packages``,
  ``noxfile.py`` and ``docs`` (also tagged ``tests``, so ``nox -t tests`` lints too).
- ``typecheck``: mypy over ``packages/*/src`` with the root ``mypy.ini`` (also tagged ``tests``).
- ``bench(<package>)``: runs the benchmark scripts in ``packages/<package>/benchmarks/`` (the
  side-by-side ``*_vs_*`` ones only with ``UPSTREAM_<KEY>`` set to a checkout of the original code).
- ``leaderboard``: installs every package (geo-bench with ``[synthesis]``) and runs
  ``geo-bench leaderboard`` (posargs are passed through, e.g. ``nox -s leaderboard -- --tiny``).
- ``gpu``: installs every package (with the test extras) and runs the GPU check,
  ``python -m geo_bench.gpu_check`` (fast tests with ``--device cuda --dtype all``, training
  throughput of every recipe's full variant in fp32 / bf16 / fp16 with channels_last off and on,
  mappings on GPU vs CPU, recall at CVACT_test scale, DDP with nccl on two or more GPUs) into
  ``out/gpu-check/`` (JSON + Markdown; posargs pass through, e.g. ``nox -s gpu -- --dry-run`` on a
  CPU). Not tagged ``tests``: CI runs its dry run through geo-bench's ``test_gpu_check.py``. On the
  device machine (no package index) run ``tools/gpu/run_on_device.sh`` instead.
- ``docs``: installs every package plus mkdocs / mkdocstrings and builds the documentation site
  (``docs/``, ``ARCHITECTURE.md`` and the API reference from the docstrings) with
  ``mkdocs build --strict`` into ``site/``.

Environment variables (hydra-style selection): ``PACKAGES=a,b`` runs only those packages,
``SKIP_PACKAGES=a,b`` skips some. ``PYTEST_ARGS`` is appended to every pytest call. ``tests``
runs every test, slow ones included (``PYTEST_ARGS="-m 'not slow'"`` leaves them out); a bare
``pytest`` in a package leaves them out (its ``addopts``).

torch and torchvision come from PyPI (the CUDA builds, which also run on CPU); uv's cache is
shared between environments, so a warm run installs in seconds.
"""

from __future__ import annotations

import os
import re
import shlex
import tomllib
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
PACKAGES_DIR = ROOT / "packages"


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _discover() -> dict[str, list[str]]:
    """Map each package directory name to the sibling packages it (or its test extra) requires."""
    found = {}
    for pyproject in sorted(PACKAGES_DIR.glob("*/pyproject.toml")):
        meta = tomllib.loads(pyproject.read_text())["project"]
        # siblings named by the [test] extra (e.g. geo-bench's tests use geo-synthesis recipes) are
        # installed from their local paths too, never resolved from an index
        test_extra = meta.get("optional-dependencies", {}).get("test", [])
        found[pyproject.parent.name] = [*meta.get("dependencies", []), *test_extra]
    siblings = {_normalise(name) for name in found}
    direct = {}
    for name, deps in found.items():
        requirements = [_normalise(re.split(r"[\s<>=!~;\[(]", dep, maxsplit=1)[0]) for dep in deps]
        direct[name] = [dep for dep in requirements if dep in siblings]
    return direct


def _select(all_packages: list[str]) -> list[str]:
    wanted = [p for p in os.environ.get("PACKAGES", "").split(",") if p]
    skipped = {p for p in os.environ.get("SKIP_PACKAGES", "").split(",") if p}
    unknown = (set(wanted) | skipped) - set(all_packages)
    if unknown:
        raise SystemExit(f"unknown package(s) {sorted(unknown)}; available: {all_packages}")
    return [p for p in (wanted or all_packages) if p not in skipped]


# Distributions a package must not pull in (checked after installing it alone with its siblings).
MUST_NOT_INSTALL = {"geo-transforms": ("timm", "torchvision")}

DEPENDS = _discover()
PACKAGES = _select(sorted(DEPENDS))


def _closure(package: str) -> list[str]:
    """The package's local siblings, transitively, dependencies first."""
    order: list[str] = []

    def visit(name: str) -> None:
        for dep in DEPENDS[name]:
            visit(dep)
        if name not in order:
            order.append(name)

    visit(package)
    return order[:-1]


def _install(session: nox.Session, package: str, extra: str) -> None:
    """Install torch from PyPI, then the package and its siblings in one resolver call."""
    args = []
    for sibling in _closure(package):
        args += ["-e", f"packages/{sibling}"]
    args += ["-e", f"packages/{package}[{extra}]"]
    session.install(*args)


@nox.session(tags=["tests"])
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """Install one package (and its local siblings) and run its test suite."""
    _install(session, package, "test")
    forbidden = MUST_NOT_INSTALL.get(package, ())
    if forbidden:
        session.run(
            "python",
            "-c",
            "import importlib.metadata as m, sys\n"
            f"found = [n for n in {list(forbidden)!r} if any(True for _ in m.distributions(name=n))]\n"
            f"sys.exit(f'{package} pulled in {{found}}' if found else 0)",
        )
    extra = shlex.split(os.environ.get("PYTEST_ARGS", ""))
    session.run(
        "python",
        "-m",
        "pytest",
        f"packages/{package}/tests",
        # every test, the slow ones included (training learns, DDP, torch.compile); a later -m in
        # PYTEST_ARGS (e.g. "-m 'not slow'") narrows it
        "-m",
        "slow or not slow",
        *extra,
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
    )
    # every docstring example of the package (options: doctest_optionflags in its pyproject; the
    # package-root conftest.py skips examples whose optional dependency is absent). posargs select
    # tests, so they go to the run above only.
    session.run(
        "python",
        "-m",
        "pytest",
        "--doctest-modules",
        f"packages/{package}/src",
        *extra,
        env={"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"},
    )


@nox.session(tags=["tests"])
def lint(session: nox.Session) -> None:
    """``ruff check`` over all packages, the noxfile and the benchmarks; ``ruff format --check`` over the same."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".", *session.posargs)
    session.run("ruff", "format", "--check", "packages", "noxfile.py", "docs")


@nox.session(tags=["tests"])
def typecheck(session: nox.Session) -> None:
    """``mypy`` over ``packages/*/src`` with the root ``mypy.ini`` (also tagged ``tests``): installs every
    package editable with its ``[test]`` extra (pytest, faiss, rasterio... so their own types are
    seen) and mypy; posargs go to mypy."""
    session.install(
        "-e",
        "packages/geo-transforms[test,testing]",
        "-e",
        "packages/geo-retrieval[test]",
        "-e",
        "packages/geo-synthesis[test]",
        "-e",
        "packages/geo-bench[test,synthesis]",
        "mypy>=1.11",
        "types-tqdm",
    )
    session.run("mypy", "--config-file", "mypy.ini", *session.posargs)


#: Side-by-side scripts (``bench_*_vs_*.py``) time the authors' code too, so they need a checkout of
#: it: the ``bench`` session runs one only when ``UPSTREAM_<KEY>`` names that checkout. Per script:
#: (KEY, the repository, whether it takes ``--upstream-python``, passed from ``UPSTREAM_<KEY>_PYTHON``
#: when set: the authors' interpreter, e.g. TF1 for SAFA; the recall script times both sides in one).
UPSTREAM_CHECKOUTS = {
    "bench_recall_vs_sample4geo.py": ("SAMPLE4GEO", "https://github.com/Skyy93/Sample4Geo", False),
    "bench_sample4geo_train_vs_upstream.py": ("SAMPLE4GEO", "https://github.com/Skyy93/Sample4Geo", True),
    "bench_safa_train_vs_upstream.py": (
        "SAFA",
        "https://github.com/shiyujiao/cross_view_localization_SAFA",
        True,
    ),
    "bench_l2ltr_train_vs_upstream.py": (
        "L2LTR",
        "https://github.com/yanghongji2007/cross_view_localization_L2LTR",
        True,
    ),
    "bench_toker21_vs_upstream.py": ("TOKER21", "https://github.com/aysim/comingdowntoearth", True),
    "bench_smdt_vs_panogan.py": ("PANOGAN", "https://github.com/sswuai/PanoGAN", True),
}


def _bench_args(session: nox.Session, script: Path) -> list[str] | None:
    """The arguments a benchmark script runs with; None (with a logged reason) to leave it out."""
    if "_vs_" not in script.name:
        return []
    if script.name not in UPSTREAM_CHECKOUTS:
        session.error(f"{script}: a side-by-side script must be listed in noxfile.UPSTREAM_CHECKOUTS")
    key, url, takes_python = UPSTREAM_CHECKOUTS[script.name]
    checkout = os.environ.get(f"UPSTREAM_{key}")
    if not checkout:
        session.log(f"skipping {script.name}: set UPSTREAM_{key} to a checkout of {url}")
        return None
    python = os.environ.get(f"UPSTREAM_{key}_PYTHON")
    return ["--upstream", checkout] + (["--upstream-python", python] if python and takes_python else [])


@nox.session(tags=["bench"])
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def bench(session: nox.Session, package: str) -> None:
    """Run every ``packages/<package>/benchmarks/bench_*.py`` script (prints figures, not a test).

    Side-by-side scripts run only against a configured checkout of the original code
    (:data:`UPSTREAM_CHECKOUTS`), e.g. ``UPSTREAM_SAMPLE4GEO=~/src/Sample4Geo nox -s bench``."""
    scripts = sorted((PACKAGES_DIR / package / "benchmarks").glob("bench_*.py"))
    if not scripts:
        session.skip(f"{package} has no benchmarks")
    _install(session, package, "bench")
    for script in scripts:
        args = _bench_args(session, script)
        if args is not None:
            session.run("python", str(script.relative_to(ROOT)), *args, *session.posargs)


@nox.session(tags=["leaderboard"])
def leaderboard(session: nox.Session) -> None:
    """Train and evaluate every recipe on the embedded synthetic world (~14 min on 2 CPU cores) and
    print the leaderboard: ``nox -s leaderboard -- [geo-bench leaderboard options]``, e.g.
    ``nox -s leaderboard -- --tiny`` or ``-- --dataset cvusa --root data/CVUSA --device cuda``."""
    session.install(
        "-e",
        "packages/geo-transforms",
        "-e",
        "packages/geo-retrieval",
        "-e",
        "packages/geo-synthesis",
        "-e",
        "packages/geo-bench[synthesis]",
    )
    session.run(
        "geo-bench", "leaderboard", *session.posargs, env={"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    )


@nox.session
def gpu(session: nox.Session) -> None:
    """The GPU check, ``python -m geo_bench.gpu_check`` (one GPU, at most 8 minutes; exits non-zero when a
    check fails): ``nox -s gpu -- [options]``, e.g. ``-- --dry-run`` (CPU, tiny sizes) or
    ``-- --only tests,train``. The report goes to ``out/gpu-check/`` unless posargs name ``--out``."""
    session.install(
        "-e",
        "packages/geo-transforms[test,testing]",
        "-e",
        "packages/geo-retrieval[test]",
        "-e",
        "packages/geo-synthesis[test]",
        "-e",
        "packages/geo-bench[test,synthesis]",
    )
    args = list(session.posargs)
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args = ["--out", "out/gpu-check", *args]
    session.run(
        "python", "-m", "geo_bench.gpu_check", *args, env={"HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg"}
    )


@nox.session(tags=["docs"])
def docs(session: nox.Session) -> None:
    """Build the documentation site into ``site/``: ``mkdocs.yml`` at the root, pages in ``docs/``
    (architecture, methods, protocols) and one API page per package rendered from the docstrings by
    mkdocstrings (Google style). ``--strict`` turns every warning (a broken link, a docstring
    griffe cannot parse) into a failure; posargs go to ``mkdocs build``."""
    session.install(
        "-e",
        "packages/geo-transforms",
        "-e",
        "packages/geo-retrieval",
        "-e",
        "packages/geo-synthesis",
        "-e",
        "packages/geo-bench",
        "mkdocs>=1.6",
        "mkdocs-material>=9.5",
        "mkdocstrings[python]>=0.26",
        "ruff>=0.6",
    )
    session.run(
        "mkdocs",
        "build",
        "--strict",
        "--site-dir",
        "site",
        *session.posargs,
        env={"NO_MKDOCS_2_WARNING": "1"},
    )
