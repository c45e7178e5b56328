"""geo_synthesis.pooling: the CPU depthwise path against ``F.avg_pool2d`` (values, gradients, dtypes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from geo_synthesis.pooling import SMALL_MAP_PIXELS, AvgPool2d, avg_pool2d

CASES = [
    # kernel, stride, padding, count_include_pad
    (2, 2, 0, True),
    (3, 2, 1, False),
    (3, 2, 1, True),
    (3, 1, 1, False),
    (4, 2, 1, False),
    (5, 3, 2, False),
]


@pytest.mark.parametrize("kernel,stride,padding,include", CASES)
@pytest.mark.parametrize("size", [(8, 12), (7, 9), (5, 32)])
def test_matches_torch_float32(kernel, stride, padding, include, size):
    x = torch.randn(3, 5, *size, generator=torch.Generator().manual_seed(0))
    ours = avg_pool2d(x, kernel, stride, padding, include)
    ref = F.avg_pool2d(x, kernel, stride, padding, count_include_pad=include)
    assert ours.shape == ref.shape and ours.dtype == x.dtype
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)


def test_two_by_two_is_exact():
    x = torch.randn(4, 7, 16, 32, generator=torch.Generator().manual_seed(1))
    assert torch.equal(avg_pool2d(x, 2), F.avg_pool2d(x, 2))


def test_edges_divide_by_the_pixels_inside_when_padding_is_excluded():
    x = torch.ones(1, 1, 4, 4)
    # a constant map stays constant only if the border windows divide by their own pixel count
    assert torch.equal(avg_pool2d(x, 3, 2, 1, count_include_pad=False), torch.ones(1, 1, 2, 2))
    # counting the padding, the corner window holds 4 of 9 pixels
    assert avg_pool2d(x, 3, 2, 1, count_include_pad=True)[0, 0, 0, 0].item() == pytest.approx(4 / 9)


@pytest.mark.parametrize("kernel,stride,padding,include", CASES)
def test_gradcheck_float64(kernel, stride, padding, include):
    x = torch.randn(2, 3, 7, 10, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: avg_pool2d(t, kernel, stride, padding, include), (x,))


@pytest.mark.parametrize("kernel,stride,padding,include", CASES)
def test_gradient_matches_torch(kernel, stride, padding, include):
    x = torch.randn(2, 4, 9, 12, generator=torch.Generator().manual_seed(2))
    g = torch.randn_like(F.avg_pool2d(x, kernel, stride, padding, count_include_pad=include))
    a = x.clone().requires_grad_()
    b = x.clone().requires_grad_()
    (avg_pool2d(a, kernel, stride, padding, include) * g).sum().backward()
    (F.avg_pool2d(b, kernel, stride, padding, count_include_pad=include) * g).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-6, atol=1e-6)


def test_bf16_under_autocast_keeps_dtype_and_averages_in_float32():
    x = torch.randn(2, 8, 16, 16, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert ours.dtype == torch.bfloat16
    exact = F.avg_pool2d(x.float(), 3, 2, 1, count_include_pad=False)
    # one rounding to bf16 of the float32 mean, not a bf16 convolution (8-bit mantissa sums)
    torch.testing.assert_close(ours, exact.to(torch.bfloat16), rtol=0, atol=0)


def test_float64_stays_float64():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64)
    out = avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, F.avg_pool2d(x, 3, 2, 1, count_include_pad=False), rtol=1e-12, atol=1e-12)


def test_module_has_no_state_and_matches_the_function():
    pool = AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
    assert pool.state_dict() == {}
    assert "count_include_pad=False" in repr(pool)
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(pool(x), avg_pool2d(x, 3, 2, 1, False))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kernel_size": 3, "stride": 2, "padding": 2}, "padding"),
        ({"kernel_size": 0}, "kernel_size"),
        ({"kernel_size": 2, "stride": 0}, "stride"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        avg_pool2d(torch.zeros(1, 1, 8, 8), **kwargs)


def test_needs_a_batch_of_maps():
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        avg_pool2d(torch.zeros(1, 8, 8), 2)


def test_large_maps_take_torchs_kernel_bit_for_bit():
    # above SMALL_MAP_PIXELS PyTorch's kernel is the faster one: the result is exactly its own
    x = torch.randn(2, 4, 65, 64, generator=torch.Generator().manual_seed(4))
    assert 65 * 64 > SMALL_MAP_PIXELS
    assert torch.equal(avg_pool2d(x, 3, 2, 1, False), F.avg_pool2d(x, 3, 2, 1, count_include_pad=False))
    small = x[..., :64, :64]
    assert 64 * 64 <= SMALL_MAP_PIXELS
    # the depthwise path: equal to float rounding, not bit for bit, on 3x3 windows
    torch.testing.assert_close(
        avg_pool2d(small, 3, 2, 1, False), F.avg_pool2d(small, 3, 2, 1, count_include_pad=False)
    )
