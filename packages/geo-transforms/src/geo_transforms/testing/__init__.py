"""Shared test utilities for every package of the toolkit (kept in-repo, as kornia once did).

``assert_close`` picks tolerances from the dtype; ``gradcheck`` runs :func:`torch.autograd.gradcheck`
in float64; ``BaseTester`` groups them for ``TestX`` classes. The pytest plugin in
:mod:`geo_transforms.testing.plugin` adds the ``device``/``dtype`` fixtures, the ``slow`` marker and
a network guard; a package's ``tests/conftest.py`` enables it with
``pytest_plugins = ["geo_transforms.testing.plugin"]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["BaseTester", "assert_close", "gradcheck", "tolerance"]

# (rtol, atol) per dtype: bf16 has 8 mantissa bits, fp16 11, fp32 24.
_TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.bfloat16: (7.8e-3, 7.8e-3),
    torch.float16: (1e-3, 1e-3),
    torch.float32: (1e-4, 1e-5),
    torch.float64: (1e-5, 1e-5),
}


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """The default ``(rtol, atol)`` for comparing tensors of ``dtype``."""
    return _TOLERANCES.get(dtype, (0.0, 0.0))


def assert_close(
    actual: Tensor,
    expected: Tensor,
    rtol: float | None = None,
    atol: float | None = None,
    **kwargs: Any,
) -> None:
    """``torch.testing.assert_close`` with tolerances chosen from the lower-precision dtype.

    Tensors of different dtypes are compared in the wider one, with the tolerance of the narrower.
    """
    if isinstance(actual, Tensor) and isinstance(expected, Tensor) and actual.dtype != expected.dtype:
        low = actual.dtype if tolerance(actual.dtype)[0] > tolerance(expected.dtype)[0] else expected.dtype
        wide = torch.promote_types(actual.dtype, expected.dtype)
        actual, expected = actual.to(wide), expected.to(wide)
    else:
        low = actual.dtype if isinstance(actual, Tensor) else torch.float32
    default_rtol, default_atol = tolerance(low)
    torch.testing.assert_close(
        actual,
        expected,
        rtol=default_rtol if rtol is None else rtol,
        atol=default_atol if atol is None else atol,
        check_device=False,
        **kwargs,
    )


def gradcheck(
    func: Callable[..., Tensor | Sequence[Tensor]],
    inputs: Tensor | Sequence[Any],
    *,
    fast_mode: bool = True,
    **kwargs: Any,
) -> bool:
    """Run :func:`torch.autograd.gradcheck` after casting floating tensor inputs to float64.

    Floating tensors that do not require grad are cast but left constant, so a test chooses which
    inputs are differentiated by setting ``requires_grad`` before the call.
    """
    items = (inputs,) if isinstance(inputs, Tensor) else tuple(inputs)
    cast = []
    for item in items:
        if isinstance(item, Tensor) and item.is_floating_point():
            wants_grad = item.requires_grad
            item = item.detach().to(torch.float64).requires_grad_(wants_grad)
        cast.append(item)
    return torch.autograd.gradcheck(func, tuple(cast), fast_mode=fast_mode, **kwargs)


class BaseTester:
    """Base for ``TestX`` classes: ``self.assert_close`` and ``self.gradcheck`` as methods.

    Subclasses conventionally define ``test_smoke``, ``test_exception``, ``test_cardinality``,
    feature tests, ``test_gradcheck`` (float64) and ``test_compile`` (marked ``slow``).
    """

    @staticmethod
    def assert_close(actual: Tensor, expected: Tensor, **kwargs: Any) -> None:
        assert_close(actual, expected, **kwargs)

    @staticmethod
    def gradcheck(func: Callable[..., Any], inputs: Tensor | Sequence[Any], **kwargs: Any) -> bool:
        return gradcheck(func, inputs, **kwargs)
