"""The linear family: products in convcore's own thread team, gradients
accumulated in place, no NumPy BLAS pool woken.

References are float64 sums written out with np.einsum over explicit axes
(one multiply-add per term, no BLAS) and PyTorch where installed."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn
from convcore._ops.layers import linear_backward_accumulate

# (rows, in_features, out_features): batch 1 to 8 (the few-rows kernel: every
# row count, features that are not a multiple of its lanes or of its row
# blocks), the first GEMM-sized batch, rows below and above one aligned slice
# per thread, VGG-like wide rows, empty
SHAPES = [(1, 300, 257), (2, 2049, 130), (3, 5, 7), (4, 17, 9), (5, 16, 33), (6, 47, 5),
          (7, 1000, 19), (8, 31, 66), (9, 31, 20), (17, 33, 65), (64, 400, 120),
          (130, 96, 10), (2, 2048, 64), (0, 4, 3), (1, 1, 1)]


def _ref(x, w, b, dy):
    x64, w64, dy64 = (a.astype(np.float64) for a in (x, w, dy))
    y = np.einsum("mk,nk->mn", x64, w64) + (0 if b is None else b)
    gx = np.einsum("mn,nk->mk", dy64, w64)
    gw = np.einsum("mn,mk->nk", dy64, x64)
    return y, gx, gw, dy64.sum(axis=0)


def _close(a, ref, dtype, k):
    # float32: a sound bound for sums of k products of values of magnitude <= 4
    tol = 1e-12 if dtype == np.float64 else 4 * k * np.finfo(np.float32).eps * 16
    np.testing.assert_allclose(a, ref, rtol=0, atol=tol * max(1.0, np.abs(ref).max(initial=0)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("M,K,N", SHAPES)
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_linear_forward_and_backward_match_float64_sums(rng, dtype, M, K, N, threads):
    x = rng.uniform(-2, 2, (M, K)).astype(dtype)
    w = rng.uniform(-2, 2, (N, K)).astype(dtype)
    b = rng.uniform(-2, 2, N).astype(dtype)
    dy = rng.uniform(-2, 2, (M, N)).astype(dtype)
    y_ref, gx_ref, gw_ref, gb_ref = _ref(x, w, b, dy)
    old = cc.get_num_threads()
    cc.set_num_threads(threads)
    try:
        y = cc.linear(x, w, b)
        gx, gw, gb = cc.linear_backward(dy, x, w)
    finally:
        cc.set_num_threads(old)
    assert y.dtype == gx.dtype == gw.dtype == gb.dtype == dtype
    _close(y, y_ref, dtype, K)
    _close(gx, gx_ref, dtype, N)
    _close(gw, gw_ref, dtype, max(M, 1))
    _close(gb, gb_ref, dtype, max(M, 1))


def test_linear_takes_leading_axes_and_strided_input(rng):
    x = rng.standard_normal((2, 3, 4, 10))[..., ::2]           # (2, 3, 4, 5), strided
    w = rng.standard_normal((6, 5))
    y = cc.linear(x, w)
    np.testing.assert_allclose(y, np.einsum("abck,nk->abcn", x, w), rtol=0, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    gx, gw, gb = cc.linear_backward(dy, x, w)
    np.testing.assert_allclose(gx, np.einsum("abcn,nk->abck", dy, w), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gw, np.einsum("abcn,abck->nk", dy, x), rtol=0, atol=1e-12)
    np.testing.assert_allclose(gb, dy.sum(axis=(0, 1, 2)), rtol=0, atol=1e-12)
    v = cc.linear(x[0, 0, 0], w)                                # 1-D input
    assert v.shape == (6,)
    np.testing.assert_allclose(v, w @ x[0, 0, 0], rtol=0, atol=1e-12)


def test_linear_backward_accumulate_adds_into_the_gradients(rng):
    x, w = rng.standard_normal((9, 7)), rng.standard_normal((4, 7))
    dy = rng.standard_normal((9, 4))
    gw0, gb0 = rng.standard_normal((4, 7)), rng.standard_normal(4)
    gw, gb = gw0.copy(), gb0.copy()
    gx = linear_backward_accumulate(dy, x, w, gw, gb)
    _, gx_ref, gw_ref, gb_ref = _ref(x, w, None, dy)
    np.testing.assert_allclose(gx, gx_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gw, gw0 + gw_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(gb, gb0 + gb_ref, rtol=0, atol=1e-12)
    # a strided gradient array (set by a user) still receives the sum
    big = np.zeros((4, 14))
    linear_backward_accumulate(dy, x, w, big[:, ::2], None, need_input=False)
    np.testing.assert_allclose(big[:, ::2], gw_ref, rtol=0, atol=1e-12)
    assert not big[:, 1::2].any()


def test_linear_layer_accumulates_in_place_without_a_new_gradient_array(rng):
    layer = nn.Linear(12, 5, dtype=np.float64, rng=0)
    x = rng.standard_normal((3, 12))
    g = layer.weight.grad
    y = layer(x)
    layer.backward(np.ones_like(y))
    layer(x)
    layer.backward(np.ones_like(y))
    assert layer.weight.grad is g                                # the same array, added to
    np.testing.assert_allclose(g, 2 * np.ones((5, 3)) @ x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer.bias.grad, np.full(5, 6.0), rtol=0, atol=1e-12)


def test_linear_gives_the_same_bits_for_every_thread_count(rng):
    x, w = rng.standard_normal((40, 300)).astype(np.float32), \
        rng.standard_normal((200, 300)).astype(np.float32)
    dy = rng.standard_normal((40, 200)).astype(np.float32)
    old = cc.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 4):
            cc.set_num_threads(t)
            outs.append((cc.linear(x, w), *cc.linear_backward(dy, x, w)))
    finally:
        cc.set_num_threads(old)
    # a part is one BLAS call over the whole reduction: the thread count moves
    # part boundaries only, so the elements agree to the last bit or to one
    # rounding of the BLAS's edge kernels
    for o in outs[1:]:
        for a, r in zip(o, outs[0]):
            np.testing.assert_allclose(a, r, rtol=2e-6, atol=2e-6 * np.abs(r).max())


@pytest.mark.parametrize("rows", [1, 3, 8])
def test_linear_few_rows_give_the_same_bits_for_every_thread_count(rng, rows):
    # the few-rows forward splits the output features only: each sum is the
    # same sequence of operations whatever the team
    x = rng.standard_normal((rows, 1000)).astype(np.float32)
    w = rng.standard_normal((333, 1000)).astype(np.float32)
    b = rng.standard_normal(333).astype(np.float32)
    old = cc.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3):
            cc.set_num_threads(t)
            outs.append(cc.linear(x, w, b))
    finally:
        cc.set_num_threads(old)
    for o in outs[1:]:
        assert o.tobytes() == outs[0].tobytes()


def test_linear_leaves_every_blas_thread_setting_as_it_was(rng):
    """SciPy's BLAS is held at one thread during a call and given back its
    setting afterwards; NumPy's BLAS is never touched."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, w = rng.standard_normal((64, 256)), rng.standard_normal((128, 256))

    def settings():
        return sorted((d["filepath"], d["num_threads"]) for d in threadpoolctl.threadpool_info()
                      if d.get("user_api") == "blas")

    cc.linear(x, w)                     # the first call binds the BLAS thread functions
    before = settings()
    y = cc.linear(x, w)
    cc.linear_backward(y, x, w)
    assert settings() == before


def test_linear_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal((8, 50)).astype(dtype)
        w = rng.standard_normal((30, 50)).astype(dtype)
        b = rng.standard_normal(30).astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(w, requires_grad=True)
        tb = torch.tensor(b, requires_grad=True)
        ty = torch.nn.functional.linear(tx, tw, tb)
        dy = rng.standard_normal(ty.shape).astype(dtype)
        ty.backward(torch.tensor(dy))
        tol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(cc.linear(x, w, b), ty.detach().numpy(), rtol=tol, atol=tol)
        gx, gw, gb = cc.linear_backward(dy, x, w)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=tol, atol=tol)
        np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=tol, atol=tol)
