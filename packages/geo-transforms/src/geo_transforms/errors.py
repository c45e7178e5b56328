"""The toolkit's one error for a missing optional dependency (Pillow here; faiss, rasterio, pyproj,
geo-synthesis... in the other packages), and the helper that raises it.

Convention:
    optional dependencies are imported where they are used, through :func:`import_optional` (or an
    ``except ImportError`` that raises :class:`MissingDependencyError`); the message names the
    extra to install (``pip install 'geo-bench[map]'``). The error is an ``ImportError``, so
    callers that already catch ``ImportError`` keep working.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingDependencyError", "import_optional"]


class MissingDependencyError(ImportError):
    """An optional dependency needed by the requested feature is not installed.

    Args:
        message: what needs it and how to install it (name the extra).
        extra: the ``dist[extra]`` to install, e.g. ``"geo-bench[faiss]"`` (also on ``.extra``).
    """

    def __init__(self, message: str, *, extra: str | None = None, name: str | None = None) -> None:
        super().__init__(message, name=name)
        self.extra = extra


def import_optional(module: str, *, extra: str, purpose: str, hint: str = "") -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``.

    Args:
        module: the module to import (``"faiss"``, ``"rasterio.windows"``).
        extra: ``dist[extra]`` that installs it, e.g. ``"geo-transforms[preview]"``.
        purpose: what needs it, the start of the message.
        hint: appended to the message (alternatives, caveats).

    Example:
        >>> import_optional("math", extra="geo-transforms[preview]", purpose="nothing").pi > 3
        True
        >>> import_optional("no_such_module_xyz", extra="geo-bench[map]", purpose="maps")
        Traceback (most recent call last):
        ...
        geo_transforms.errors.MissingDependencyError: maps needs no_such_module_xyz: pip install 'geo-bench[map]'
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = f"{purpose} needs {module.partition('.')[0]}: pip install '{extra}'"
        raise MissingDependencyError(
            message + (f" {hint}" if hint else ""), extra=extra, name=module
        ) from err
