"""Write installed-package metadata for the four packages into a site folder (GPU machine setup).

``python3 tools/gpu/dist_info.py SITE`` writes ``SITE/<name>-<version>.dist-info/`` with ``METADATA``
(name, version) and ``entry_points.txt`` (the console scripts and entry-point groups of the
package's ``pyproject.toml``) for every ``packages/*/``. With ``SITE`` and each package's ``src/`` on
``PYTHONPATH`` the working tree then behaves as an editable install: ``importlib.metadata`` finds
the versions and the ``geo_retrieval.recipes`` entry point (geo-synthesis' recipes), with no build
backend and no package index (the device machine has neither).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _version(package_dir: Path, module: str) -> str:
    text = (package_dir / "src" / module / "__init__.py").read_text()
    found = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']', text, re.MULTILINE)
    if found is None:
        raise SystemExit(f"no __version__ in {package_dir}/src/{module}/__init__.py")
    return found.group(1)


def write_dist_info(site: Path) -> list[Path]:
    """Write one ``.dist-info`` folder per package into ``site``; returns them."""
    written = []
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        name = project["name"]
        module = name.replace("-", "_")
        version = _version(pyproject.parent, module)
        info = site / f"{module}-{version}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        groups = {"console_scripts": project.get("scripts", {}), **project.get("entry-points", {})}
        lines = []
        for group, entries in groups.items():
            if entries:
                lines += [f"[{group}]", *(f"{k} = {v}" for k, v in entries.items()), ""]
        (info / "entry_points.txt").write_text("\n".join(lines))
        (info / "INSTALLER").write_text("tools/gpu/dist_info.py\n")
        written.append(info)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python3 tools/gpu/dist_info.py SITE")
    for path in write_dist_info(Path(sys.argv[1])):
        print(path)
