"""conv_transpose2d and the layers added beside it on CuPy arrays, against the
CPU result (needs CuPy and a GPU; marked ``gpu``, run with ``pytest -m gpu``)."""
import os

import numpy as np
import pytest

import convcore as cc
from convcore import nn
from convcore.backends import cuda

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not cuda.is_available(), reason="needs CuPy and a CUDA device")]


@pytest.fixture
def cp():
    import cupy
    if os.environ.get("CUPY_TF32") == "1":
        pytest.skip("CUPY_TF32=1 turns TF32 on: float32 parity is not to float rounding")
    return cupy


def _same(got, want, dtype):
    import cupy
    assert isinstance(got, cupy.ndarray), type(got)
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = dict(rtol=1e-11, atol=1e-11) if dtype == np.float64 else dict(rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cupy.asnumpy(got), want, **tol)


TRANSPOSE_CASES = [
    # (N, C_in, H, W, C_out, K, stride, padding, output_padding, dilation, groups)
    (2, 4, 5, 4, 6, 3, 2, 1, 1, 1, 2),
    (3, 8, 7, 7, 4, 4, 2, 1, 0, 1, 1),
    (2, 6, 6, 5, 6, 3, 1, 1, 0, 1, 6),
    (1, 3, 4, 6, 2, (2, 3), (3, 1), (0, 1), (2, 0), (1, 2), 1),
    (0, 3, 4, 4, 2, 3, 2, 0, 0, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d_on_cupy_matches_cpu(cp, rng, dtype, case):
    N, C, H, W, K, k, s, p, op, d, g = case
    k = (k, k) if isinstance(k, int) else k
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((C, K // g) + k).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    kw = dict(stride=s, padding=p, output_padding=op, dilation=d, groups=g)
    y = cc.conv_transpose2d(x, w, b, **kw)
    _same(cc.conv_transpose2d(cp.asarray(x), cp.asarray(w), cp.asarray(b), **kw), y, dtype)
    dy = rng.standard_normal(y.shape).astype(dtype)
    want = cc.conv_transpose2d_backward(dy, x, w, **kw)
    got = cc.conv_transpose2d_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), **kw)
    for a, e in zip(got, want):
        _same(a, e, dtype)


LAYERS = [
    lambda: nn.ConvTranspose2d(3, 4, 3, stride=2, padding=1, output_padding=1, rng=0),
    lambda: nn.Upsample(scale_factor=2),
    lambda: nn.Upsample(size=(7, 9), mode="bilinear"),
    lambda: nn.Upsample(scale_factor=1.5, mode="bilinear", align_corners=True),
    lambda: nn.Tanh(), lambda: nn.Sigmoid(), lambda: nn.LeakyReLU(0.2),
    lambda: nn.Softmax(dim=1), lambda: nn.LogSoftmax(dim=1), lambda: nn.Identity(),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make", LAYERS, ids=lambda f: type(f()).__name__)
def test_layer_on_cupy_matches_cpu(cp, rng, dtype, make):
    cpu = make().astype(dtype)
    gpu = make().astype(dtype).to("cuda")
    x = rng.standard_normal((2, 3, 5, 6)).astype(dtype)
    y = cpu(x)
    _same(gpu(cp.asarray(x)), y, dtype)
    g = rng.standard_normal(y.shape).astype(dtype)
    _same(gpu.backward(cp.asarray(g)), cpu.backward(g), dtype)
    for (n, p), (_, q) in zip(cpu.named_parameters(), gpu.named_parameters()):
        _same(q.grad, p.grad, dtype)


def test_dropout2d_on_cupy_drops_whole_channels(cp):
    x = cp.ones((8, 32, 3, 3), dtype=cp.float32)
    layer = nn.Dropout2d(0.5, rng=0)
    y = layer(x)
    assert isinstance(y, cp.ndarray)
    yy = cp.asnumpy(y)
    assert np.all(yy.min(axis=(2, 3)) == yy.max(axis=(2, 3)))
    assert set(np.unique(yy)) <= {0.0, 2.0}
    g = cp.asnumpy(layer.backward(cp.ones_like(y)))
    np.testing.assert_array_equal(g, yy)
