"""The forward pass from GEMM-packed weights (eval-mode folds of large layers
at batch 1-2, src_c/conv_packed_gemm_impl.h): against the definition's sums
in float64 (NumPy over sliding windows) and PyTorch, the same bits for every
thread count, IEEE specials where the definition puts them, and where the
packed form is (and is not) taken."""
import numpy as np
import pytest

import convcore as cc
from convcore import nn
from convcore._core import _conv
from convcore._geometry import ConvGeom
from convcore._ops.conv import _conv2d_packed
from convcore.backends import cpu

try:     # (the float64 reference below is NumPy's; PyTorch's is checked too where it is)
    import torch
except ImportError:
    torch = None


def _geom(N, C, H, K, k=3, s=1, p=1, d=1, W=None):
    W = H if W is None else W
    OH = (H + 2 * p - d * (k - 1) - 1) // s + 1
    OW = (W + 2 * p - d * (k - 1) - 1) // s + 1
    return ConvGeom(N, C, H, W, K, k, k, s, s, p, p, d, d, OH, OW, 1)


def _kind(g):
    return cpu.conv2d_packable(g, np.dtype(np.float32))[1]


def _gemm_machine():
    return _kind(_geom(1, 512, 7, 512)) == _conv.PACK_GEMM


needs_gemm = pytest.mark.skipif(not _gemm_machine(),
                                reason="GEMM-packed weights need AVX-512")

# (N, C, H, W, K, kernel, stride, padding, dilation, bias): each packs (checked)
CASES = [
    (1, 256, 7, 7, 128, 3, 1, 1, 1, True),     # 7x7 map: 49 positions, 7 blocks of 7
    (2, 128, 15, 13, 300, 3, 2, 1, 1, True),   # stride 2, odd sides: 56 positions; K % 64 != 0
    (1, 512, 14, 14, 512, 1, 1, 0, 1, False),  # pointwise on whole blocks: x read in place
    (1, 640, 9, 9, 416, 1, 1, 0, 1, True),     # pointwise, 81 positions: through the columns
    (1, 1024, 13, 13, 256, 1, 2, 0, 1, True),  # 1x1 stride 2 (7x7 out)
    (1, 160, 11, 11, 200, 3, 1, 2, 2, True),   # dilation 2, a map of 11x11
    (2, 300, 16, 16, 100, 3, 2, 1, 1, False),  # 64 positions: a tail of 1; 100 outputs
]


def _data(rng, N, C, H, W, K, k, bias):
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = (rng.standard_normal((K, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32) if bias else None
    return x, w, b


def _exact(x, w, b, s, p, d):
    """the definition's sums in float64: every window of the zero-padded
    input against the kernel"""
    k = w.shape[2]
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (d * (k - 1) + 1,) * 2, axis=(2, 3))
    win = win[:, :, ::s, ::s, ::d, ::d]
    y = np.einsum("ncijab,kcab->nkij", win, w.astype(np.float64), optimize=True)
    return y if b is None else y + b.astype(np.float64)[None, :, None, None]


def _bound(x, w, s, p, d):
    """float32 rounding of the sums: a few units in the last place of the
    sum of the products' magnitudes, per output"""
    mag = _exact(np.abs(x), np.abs(w), None, s, p, d)
    return 8 * np.finfo(np.float32).eps * np.sqrt(w[0].size) * mag + 1e-30


@needs_gemm
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:9])))
def test_gemm_packed_forward_within_float32_rounding_of_pytorch_float64(case, rng):
    N, C, H, W, K, k, s, p, d, bias = case
    g = _geom(N, C, H, K, k, s, p, d, W)
    assert _kind(g) == _conv.PACK_GEMM
    x, w, b = _data(rng, N, C, H, W, K, k, bias)
    packs = {}
    y = _conv2d_packed(x, w, b, packs, stride=s, padding=p, dilation=d)
    assert [key[0] for key in packs] == [_conv.PACK_GEMM]
    ref = _exact(x, w, b, s, p, d)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.all(np.abs(y - ref) <= _bound(x, w, s, p, d))
    # PyTorch's float64 convolution, and an unpacked call, agree to rounding
    if torch is not None:
        t = lambda a: None if a is None else torch.tensor(a, dtype=torch.float64)
        np.testing.assert_allclose(y, torch.nn.functional.conv2d(
            t(x), t(w), t(b), stride=s, padding=p, dilation=d).numpy(),
            rtol=0, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(y, cc.conv2d(x, w, b, stride=s, padding=p, dilation=d),
                               rtol=0, atol=1e-5 * np.abs(ref).max())


@needs_gemm
def test_gemm_packed_forward_same_bits_for_every_thread_count(rng):
    old = cc.get_num_threads()
    try:
        for N, C, H, W, K, k, s, p, d, bias in CASES[:4]:
            x, w, b = _data(rng, N, C, H, W, K, k, bias)
            packs, outs = {}, []
            for t in (1, 2, 3, 4):
                cc.set_num_threads(t)
                outs.append(_conv2d_packed(x, w, b, packs, stride=s, padding=p, dilation=d))
            for o in outs[1:]:
                np.testing.assert_array_equal(outs[0], o)
    finally:
        cc.set_num_threads(old)


@needs_gemm
def test_gemm_packed_forward_puts_inf_and_nan_where_the_definition_does(rng):
    x, w, b = _data(rng, 1, 256, 7, 7, 128, 3, True)
    x[0, 3, 2, 2] = np.inf
    x[0, 9, 2, 3] = -np.inf        # opposite infinities meet in some sums: NaN
    x[0, 40, 6, 0] = np.nan
    y = _conv2d_packed(x, w, b, {}, padding=1)
    with np.errstate(invalid="ignore"):    # (inf - inf in the reference too)
        ref = _exact(x, w, b, 1, 1, 1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    np.testing.assert_array_equal(np.isposinf(y), np.isposinf(ref))
    np.testing.assert_array_equal(np.isneginf(y), np.isneginf(ref))
    assert np.isnan(y).any() and np.isinf(y).any() and np.isfinite(y).any()
    fin = np.isfinite(ref)
    bound = _bound(np.nan_to_num(x, posinf=0, neginf=0), w, 1, 1, 1)
    assert np.all(np.abs(y[fin] - ref[fin]) <= bound[fin])


@needs_gemm
def test_where_gemm_packed_weights_are_taken(monkeypatch):
    f64 = np.dtype(np.float64)
    assert _kind(_geom(1, 512, 7, 512)) == _conv.PACK_GEMM                 # ResNet's layer4
    assert _kind(_geom(2, 256, 14, 512, s=2)) == _conv.PACK_GEMM            # its downsampling
    assert _kind(_geom(1, 1024, 14, 2048, k=1, s=2, p=0)) == _conv.PACK_GEMM
    assert _kind(_geom(3, 512, 7, 512)) != _conv.PACK_GEMM                  # batch 3
    assert _kind(_geom(1, 256, 14, 256)) not in (0, _conv.PACK_GEMM)       # WINOGRAD's saves 2.25x
    assert _kind(_geom(1, 64, 56, 128, s=2)) == 0                           # small weights
    assert _kind(_geom(1, 512, 2, 512)) != _conv.PACK_GEMM                  # 4 positions
    assert cpu.conv2d_packable(_geom(1, 512, 7, 512), f64) == (0, 0)
    grouped = ConvGeom(1, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1, 1, 1, 7, 7, 2)
    assert _kind(grouped) != _conv.PACK_GEMM
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "batched")
    assert cpu.conv2d_packable(_geom(1, 512, 7, 512), np.dtype(np.float32)) == (0, 0)


@needs_gemm
def test_an_eval_mode_block_runs_from_gemm_packed_weights_and_matches_pytorch(rng):
    """conv -> bn -> relu folded in eval mode: packed once, reused for the
    other batch size it serves, within float32 rounding of PyTorch's float64
    network."""
    if torch is None:
        pytest.skip("needs PyTorch")
    net = nn.Sequential(nn.Conv2d(256, 192, 3, padding=1, rng=0), nn.BatchNorm2d(192),
                        nn.ReLU())
    bn = net[1]
    bn.running_mean[...] = rng.standard_normal(192)
    bn.running_var[...] = rng.uniform(0.5, 2.0, 192)
    bn.weight.data[...] = rng.uniform(0.5, 1.5, 192)
    bn.bias.data[...] = rng.standard_normal(192)
    net.eval()
    x = rng.standard_normal((2, 256, 7, 7)).astype(np.float32)
    with cc.no_grad():
        y1 = net(x[:1])
        y2 = net(x)
    folds = [m._fold for m in net.modules()
             if getattr(m, "_fold", None) is not None and m._fold.conv is m]
    keys = [k for f in folds for k in f._packs]
    assert [k[0] for k in keys] == [_conv.PACK_GEMM]
    np.testing.assert_array_equal(y1, y2[:1])
    conv = net[0]
    t = lambda a: torch.tensor(np.asarray(a), dtype=torch.float64)
    z = torch.nn.functional.conv2d(t(x), t(conv.weight.data), t(conv.bias.data), padding=1)
    z = torch.nn.functional.batch_norm(z, t(bn.running_mean), t(bn.running_var),
                                       t(bn.weight.data), t(bn.bias.data), eps=bn.eps)
    ref = torch.relu(z).numpy()
    np.testing.assert_allclose(y2, ref, rtol=0, atol=2e-5 * np.abs(ref).max())
