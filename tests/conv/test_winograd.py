"""The Winograd paths of conv2d (3x3 at stride 1 or 2, 5x5 at stride 1;
dilation 1, groups 1): F(2x2, 3x3), F(4x4, 3x3) for the forward and dX of
large enough planes when asked for, and the stride-2 tile (2x2 outputs from
5x5 patches).

float32 takes it automatically from 32 input and output channels on (at
stride 2 from 12x12 outputs on); any
dtype takes it when CONVCORE_CONV_STRATEGY=winograd.  Its rounding is not a
direct sum's, so the float32 checks use the error bound of the transform
algorithm itself, built here from absolute values of the transform matrices
(an error model independent of the library), against a float64 reference
computed with sliding windows.
"""
import numpy as np
import pytest

import convcore as cc

U32 = 2.0 ** -24

Bt = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float)
G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], float)
At = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float)
# F(4x4, 3x3), interpolation points 0, ±1, ±2 and infinity
Bt4 = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
G4 = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
               [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])
At4 = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                [0, 1, -1, 8, -8, 1]], float)
# tile m: (Bᵀ, G, Aᵀ, roundings outside the C-term reduction).  F(2x2, 3x3):
# 2 in Bᵀ d B, 4 in G g Gᵀ, 1 product, 5 in the output transform and bias.
# F(4x4, 3x3): 3 + 3 in Bᵀ d B (a product by 5 and two sums a stage), 1 for
# G g Gᵀ (formed in double, rounded once), 1 product, 3 + 3 in the output
# transform and 1 for the bias.
TILES = {2: (Bt, G, At, 12), 4: (Bt4, G4, At4, 15)}

SHAPES = [  # N, C, K, H, W, padding
    (2, 32, 32, 8, 8, 1),
    (3, 33, 40, 7, 9, 1),
    (1, 32, 48, 5, 6, 0),
    (2, 32, 32, 6, 7, 2),
    (1, 40, 32, 1, 1, 1),
    (2, 32, 32, 3, 2, (0, 2)),
    (1, 32, 32, 9, 4, (2, 0)),
    (4, 64, 64, 16, 16, 1),
    (2, 32, 32, 24, 24, 1),      # planes large enough for F(4x4, 3x3)
    (1, 33, 40, 29, 30, 1),
    (1, 32, 32, 30, 26, (0, 2)),
    (1, 32, 136, 6, 7, 1),        # over 128 outputs: the GEMMs through BLAS
]


def _pair(p):
    return p if isinstance(p, tuple) else (p, p)


# ----------------------------------------------------------- float64 references
def _windows(xp, OH, OW):
    return np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, :OH, :OW]


def ref_conv(x, w, b, p):
    ph, pw = _pair(p)
    x = x.astype(np.float64)
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = xp.shape[2] - 2, xp.shape[3] - 2
    y = np.einsum("ncyxab,kcab->nkyx", _windows(xp, OH, OW), w.astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[:, None, None]


def ref_backward(dy, x, w, p):
    ph, pw = _pair(p)
    dy, x, w = (a.astype(np.float64) for a in (dy, x, w))
    # dX: full correlation of dy with the flipped kernel, channels swapped
    dyp = np.pad(dy, ((0, 0), (0, 0), (2 - ph, 2 - ph), (2 - pw, 2 - pw)))
    wf = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    dx = np.einsum("nkyxab,ckab->ncyx", _windows(dyp, x.shape[2], x.shape[3]), wf)
    # dW: correlation of the padded input with dy
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = _windows(xp, dy.shape[2], dy.shape[3])
    dw = np.einsum("ncyxab,nkyx->kcab", win, dy)
    return dx, dw


# ------------------------------------------------------- Winograd error model
def _patches(xa, ph, pw, th, tw, m=2):
    """(m+2)x(m+2) input patches under each mxm output block (zeros past the edges)."""
    N, C, H, W = xa.shape
    xp = np.zeros((N, C, m * th + 2, m * tw + 2))
    hh, ww = min(H, m * th + 2 - ph), min(W, m * tw + 2 - pw)
    xp[:, :, ph:ph + hh, pw:pw + ww] = xa[:, :, :hh, :ww]
    v = np.lib.stride_tricks.sliding_window_view(xp, (m + 2, m + 2), axis=(2, 3))
    return v[:, :, ::m, ::m][:, :, :th, :tw]


def _wg_sums(x, w, b, p, m):
    """|Aᵀ| (Σ_c |G||g||Gᵀ| ⊙ |Bᵀ||d||B|) |A| (+ |b|) for the tile m."""
    Bm, Gm, Am, _ = TILES[m]
    ph, pw = _pair(p)
    N, C, H, W = x.shape
    OH, OW = H + 2 * ph - 2, W + 2 * pw - 2
    th, tw = -(-OH // m), -(-OW // m)
    d = _patches(np.abs(x.astype(np.float64)), ph, pw, th, tw, m)
    V = np.einsum("ia,ncyxab,jb->ncyxij", np.abs(Bm), d, np.abs(Bm))
    U = np.einsum("ia,kcab,jb->kcij", np.abs(Gm), np.abs(w.astype(np.float64)), np.abs(Gm))
    S = np.einsum("kcij,ncyxij->nkyxij", U, V)
    O = np.einsum("ai,nkyxij,bj->nkyxab", np.abs(Am), S, np.abs(Am))
    O = O.transpose(0, 1, 2, 4, 3, 5).reshape(N, w.shape[0], m * th, m * tw)[:, :, :OH, :OW]
    if b is not None:
        O = O + np.abs(b.astype(np.float64))[:, None, None]
    return O


def wg_forward_bound(x, w, b, p, tiles=(2, 4)):
    """(C + r) u times _wg_sums: the float32 error bound of F(m x m, 3x3) with
    a C-term GEMM reduction, the larger over the tiles the library may take
    (which it takes depends on the plane size)."""
    C = x.shape[1]
    bounds = [(C + TILES[m][3]) * U32 * 1.01 * _wg_sums(x, w, b, p, m) for m in tiles]
    return np.maximum.reduce(bounds)


def wg_dw_bound(dy, x, p, dw_ref):
    """(P + 16) u times |Gᵀ| (Σ_tiles |A||dy||Aᵀ| ⊙ |Bᵀ||d||B|) |G| (+ u |dW|)."""
    ph, pw = _pair(p)
    N, K, OH, OW = dy.shape
    th, tw = (OH + 1) // 2, (OW + 1) // 2
    d = _patches(np.abs(x.astype(np.float64)), ph, pw, th, tw)
    V = np.einsum("ia,ncyxab,jb->ncyxij", np.abs(Bt), d, np.abs(Bt))
    g = np.zeros((N, K, 2 * th, 2 * tw))
    g[:, :, :OH, :OW] = np.abs(dy.astype(np.float64))
    g = g.reshape(N, K, th, 2, tw, 2).transpose(0, 1, 2, 4, 3, 5)
    Mt = np.einsum("ai,nkyxij,bj->nkyxab", np.abs(At.T), g, np.abs(At.T))
    dU = np.einsum("nkyxij,ncyxij->kcij", Mt, V)
    Bw = np.einsum("ai,kcij,bj->kcab", np.abs(G.T), dU, np.abs(G.T))
    P = N * th * tw
    return (P + 16) * U32 * 1.01 * Bw + U32 * np.abs(dw_ref)


def _within(got, ref, bound):
    err = np.abs(got.astype(np.float64) - ref)
    assert np.all(err <= bound + 1e-30), f"max excess {np.max(err - bound):.3g}"


@pytest.fixture
def winograd(monkeypatch):
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")


@pytest.fixture(params=["2", "4"])
def tile(request, monkeypatch):
    """F(2x2, 3x3) only (the default), or F(4x4, 3x3) allowed where it pays."""
    monkeypatch.setenv("CONVCORE_WINOGRAD_TILE", request.param)
    return int(request.param)


def _data(rng, N, C, K, H, W, p, dtype=np.float32):
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    ph, pw = _pair(p)
    dy = rng.standard_normal((N, K, H + 2 * ph - 2, W + 2 * pw - 2)).astype(dtype)
    return x, w, b, dy


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("forced", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
def test_float32_forward_and_backward_within_the_winograd_bound(shape, forced, rng,
                                                                monkeypatch, tile):
    if forced:
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")
    x, w, b, dy = _data(rng, *shape)
    p = shape[-1]
    _check_all(x, w, b, dy, p, cc.conv2d(x, w, b, padding=p),
               *cc.conv2d_backward(dy, x, w, padding=p))


def _check_all(x, w, b, dy, p, y, dx, dw, db):
    """y, dx and dw within their Winograd bounds, db a plain sum."""
    _within(y, ref_conv(x, w, b, p), wg_forward_bound(x, w, b, p))
    dx_ref, dw_ref = ref_backward(dy, x, w, p)
    ph, pw = _pair(p)
    wf = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    _within(dx, dx_ref, wg_forward_bound(dy, wf, None, (2 - ph, 2 - pw)))
    _within(dw, dw_ref, wg_dw_bound(dy, x, p, dw_ref))
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)


def test_the_bound_is_tight_enough_to_catch_a_wrong_tap(rng, winograd):
    """The error model must not be so loose that a real bug passes."""
    x, w, b, _ = _data(rng, 2, 32, 32, 8, 8, 1)
    y = cc.conv2d(x, w, b, padding=1)
    w2 = w.copy()
    w2[3, 5, 1, 2] += 0.1   # one tap off by a tenth
    bound = wg_forward_bound(x, w, b, 1)
    assert np.all(np.abs(y - ref_conv(x, w, b, 1)) <= bound)
    assert not np.all(np.abs(y - ref_conv(x, w2, b, 1)) <= bound)


def test_the_bound_catches_a_wrong_tap_on_planes_for_4x4_tiles(rng, winograd, monkeypatch):
    monkeypatch.setenv("CONVCORE_WINOGRAD_TILE", "4")
    x, w, b, _ = _data(rng, 2, 32, 32, 24, 24, 1)
    y = cc.conv2d(x, w, b, padding=1)
    w2 = w.copy()
    w2[3, 5, 2, 0] += 0.1
    bound = wg_forward_bound(x, w, b, 1)
    assert np.all(np.abs(y - ref_conv(x, w, b, 1)) <= bound)
    assert not np.all(np.abs(y - ref_conv(x, w2, b, 1)) <= bound)


def test_4x4_tiles_only_when_asked_for_and_only_on_large_planes(rng, monkeypatch):
    """CONVCORE_WINOGRAD_TILE=4 changes the rounding (another algorithm) on
    planes of 24 and more, and nothing on small ones or by default."""
    got = {}
    for side in (16, 28):
        x, w, b, dy = _data(rng, 2, 32, 32, side, side, 1)
        for opt in ("", "2", "4"):
            monkeypatch.setenv("CONVCORE_WINOGRAD_TILE", opt)
            got[side, opt] = (cc.conv2d(x, w, b, padding=1),
                              cc.conv2d_backward(dy, x, w, padding=1)[0])
    for side in (16, 28):
        for a, c in zip(got[side, ""], got[side, "2"]):
            np.testing.assert_array_equal(a, c)
    for a, c in zip(got[16, ""], got[16, "4"]):
        np.testing.assert_array_equal(a, c)
    for a, c in zip(got[28, ""], got[28, "4"]):
        assert not np.array_equal(a, c)


@pytest.mark.usefixtures("wide_vectors")   # (AUTO as with AVX-512: DIRECT below)
def test_auto_takes_winograd_for_float32_from_32_channels_only(rng, monkeypatch):
    # (100 tiles of 2x2 outputs: few enough channel pairs take the GEMM on
    # fewer tiles)
    x, w, b, dy = _data(rng, 4, 32, 32, 10, 10, 1)
    auto = cc.conv2d(x, w, b, padding=1)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "winograd")
    wino = cc.conv2d(x, w, b, padding=1)
    wino_bwd = cc.conv2d_backward(dy, x, w, padding=1)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "batched")
    direct = cc.conv2d(x, w, b, padding=1)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "fastest")   # no strategy's name: AUTO
    np.testing.assert_array_equal(cc.conv2d(x, w, b, padding=1), auto)
    monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
    np.testing.assert_array_equal(auto, wino)
    assert not np.array_equal(auto, direct)     # a different rounding: another path
    for a, c in zip(cc.conv2d_backward(dy, x, w, padding=1), wino_bwd):
        np.testing.assert_array_equal(a, c)
    # float64, stride 2 and 5x5 below 64 channels stay on the im2col path,
    # few channels on the direct path for small layers
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    cases = [(x64, w64, {}, "batched"), (x[:, :16], w[:16, :16], {}, "direct"),
             (x, w, dict(stride=2), "batched"),
             (x, rng.standard_normal((32, 32, 5, 5)).astype(np.float32), {}, "batched")]
    want = []
    for a, c, kw, strategy in cases:
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
        want.append(cc.conv2d(a, c, padding=1, **kw))
    monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
    for (a, c, kw, _), ref in zip(cases, want):
        np.testing.assert_array_equal(cc.conv2d(a, c, padding=1, **kw), ref)


def _assert_adjoints(x, w, dy, p, ref):
    """<y, dy> = <x, dX> = <w, dW> in float64, and y against the loops' ref."""
    y = cc.conv2d(x, w, padding=p)
    dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=p)
    lhs = np.vdot(y, dy)
    assert abs(lhs - np.vdot(x, dx)) <= 1e-12 * np.abs(y).sum() * np.abs(dy).max()
    assert abs(lhs - np.vdot(w, dw)) <= 1e-12 * np.abs(y).sum() * np.abs(dy).max()
    np.testing.assert_allclose(y, ref(x, w, None, p), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES[:4] + SHAPES[9:10])
def test_float64_adjoint_identities(shape, rng, winograd, tile):
    x, w, _, dy = _data(rng, *shape, dtype=np.float64)
    _assert_adjoints(x, w, dy, shape[-1], ref_conv)


def _same_bits_for_threads(x, w, b, dy, p, counts=(1, 2, 3, 4)):
    """(y, dx, dw, db) with the first thread count, after checking that
    every other count gives the same bits."""
    old = cc.get_num_threads()
    try:
        out = []
        for t in counts:
            cc.set_num_threads(t)
            out.append((cc.conv2d(x, w, b, padding=p), *cc.conv2d_backward(dy, x, w, padding=p)))
    finally:
        cc.set_num_threads(old)
    for other in out[1:]:
        for a, c in zip(out[0], other):
            np.testing.assert_array_equal(a, c)
    return out[0]


def test_results_identical_for_any_thread_count(rng, winograd, tile):
    _same_bits_for_threads(*_data(rng, 4, 32, 48, 16, 16, 1), 1, counts=(1, 2, 3))
    _same_bits_for_threads(*_data(rng, 2, 32, 40, 28, 26, 1), 1, counts=(1, 2, 3))


@pytest.mark.parametrize("shape", [
    (8, 16, 32, 8, 8, 1),       # few channels: the product kernel
    (16, 16, 144, 24, 24, 1),   # 144 outputs: BLAS products in whole-image blocks
    (9, 8, 136, 10, 10, 1),     # groups that do not divide among the threads
])
def test_each_thread_running_its_own_images_gives_the_same_bits(shape, rng, winograd, tile):
    """With enough images each thread takes its own through the transforms and
    products (2 and 4 threads here, 3 shares the steps out for some shapes):
    the same bits for every thread count, within the float32 bound."""
    x, w, b, dy = _data(rng, *shape)
    p = shape[-1]
    y, dx, _, _ = _same_bits_for_threads(x, w, b, dy, p)
    _within(y, ref_conv(x, w, b, p), wg_forward_bound(x, w, b, p))
    dx_ref, _ = ref_backward(dy, x, w, p)
    wf = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    _within(dx, dx_ref, wg_forward_bound(dy, wf, None, (2 - p, 2 - p)))


def test_small_workspace_chunks_stay_within_the_bound(rng, winograd, tile):
    x, w, b, dy = _data(rng, 6, 32, 32, 24, 24, 1)
    old = cc.get_workspace_limit()
    try:
        cc.set_workspace_limit(400_000)        # a few images per chunk
        y = cc.conv2d(x, w, b, padding=1)
        dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=1)
    finally:
        cc.set_workspace_limit(old)
    _within(y, ref_conv(x, w, b, 1), wg_forward_bound(x, w, b, 1))
    dx_ref, dw_ref = ref_backward(dy, x, w, 1)
    wf = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)
    _within(dx, dx_ref, wg_forward_bound(dy, wf, None, 1))
    _within(dw, dw_ref, wg_dw_bound(dy, x, 1, dw_ref))


# Bands: where one image's transformed input and products outgrow 16 MiB,
# layers of the product kernel (up to 128 outputs) run the forward pass and
# dX on bands of tile rows, each thread through its own from transform to
# output: the same bits for any thread count, within the same bound.
BAND_SHAPES = [  # N, C, K, H, W, padding
    (1, 32, 48, 154, 154, 1),        # 77 x 77 tiles (39 x 39 of F(4x4, 3x3))
    (2, 33, 40, 117, 129, (0, 2)),   # odd sizes, padding on one axis only
]


@pytest.mark.parametrize("shape", BAND_SHAPES)
def test_bands_within_the_bound_and_identical_for_any_thread_count(shape, rng, winograd, tile):
    x, w, b, dy = _data(rng, *shape)
    p = shape[-1]
    _check_all(x, w, b, dy, p, *_same_bits_for_threads(x, w, b, dy, p))


def test_bands_catch_a_wrong_tap(rng, winograd):
    """The bound is tight enough on a banded map too (a band's first and last
    rows are where a seam would show)."""
    x, w, b, _ = _data(rng, 1, 32, 32, 130, 132, 1)
    y = cc.conv2d(x, w, b, padding=1)
    bound = wg_forward_bound(x, w, b, 1)
    assert np.all(np.abs(y - ref_conv(x, w, b, 1)) <= bound)
    w2 = w.copy()
    w2[3, 5, 0, 1] += 0.1
    assert not np.all(np.abs(y - ref_conv(x, w2, b, 1)) <= bound)


def test_bands_float64_adjoint_identities(rng, winograd):
    x, w, _, dy = _data(rng, 1, 32, 32, 92, 94, 1, dtype=np.float64)
    _assert_adjoints(x, w, dy, 1, ref_conv)


@pytest.mark.parametrize("where", ["x", "w", "dy"])
@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan, 3e30])
def test_inf_nan_and_huge_values_take_the_direct_path(where, value, rng, monkeypatch):
    """Transforms would turn one Inf into NaN (Inf - Inf) and could overflow
    near the float limit: such inputs give exactly the direct path's result."""
    x, w, b, dy = _data(rng, 2, 32, 32, 8, 8, 1)
    {"x": x, "w": w, "dy": dy}[where][1, 3, 2, 2] = value
    got = []
    for strategy in ("", "winograd", "batched"):
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
        with np.errstate(all="ignore"):
            got.append((cc.conv2d(x, w, b, padding=1), *cc.conv2d_backward(dy, x, w, padding=1)))
    first = 1 if where == "dy" else 0          # dy does not enter the forward pass
    for res in got[:2]:
        for a, c in zip(res[first:], got[2][first:]):
            np.testing.assert_array_equal(a, c)


def test_magnitudes_whose_products_near_overflow_take_the_direct_path(rng, monkeypatch):
    x, w, b, dy = _data(rng, 2, 32, 32, 8, 8, 1)
    x *= np.float32(1e17)
    w *= np.float32(1e10)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "batched")
    direct = cc.conv2d(x, w, padding=1)
    monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
    np.testing.assert_array_equal(cc.conv2d(x, w, padding=1), direct)


def test_matches_torch_on_a_vgg_layer(rng):
    torch = pytest.importorskip("torch", reason="parity with torch needs torch installed")
    x, w, b, dy = _data(rng, 2, 64, 64, 28, 28, 1)
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b), padding=1)
    ty.backward(torch.from_numpy(dy))
    y = cc.conv2d(x, w, b, padding=1)
    dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=1)
    for got, want in ((y, ty.detach().numpy()), (dx, tx.grad.numpy()), (dw, tw.grad.numpy())):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)


# ------------------------------------------------------------------ 5x5 layers
# A 5x5 kernel, zero-extended to 6x6, is four 3x3 pieces at these offsets; the
# library runs them through F(2x2, 3x3), either over 4C shifted copies of the
# input or as four correlations whose outputs are shifted and summed.
OFFSETS = [(0, 3), (0, 0), (3, 0), (3, 3)]
SHAPES5 = [  # N, C, K, H, W, padding
    (2, 32, 48, 9, 9, 2),       # forward splits the input, dX the output
    (1, 48, 32, 8, 11, 2),      # the other way round
    (3, 32, 32, 7, 6, 0),
    (1, 33, 40, 5, 5, 4),
    (2, 40, 33, 6, 9, (1, 3)),
    (1, 32, 32, 1, 1, 2),
    (1, 32, 40, 26, 27, 2),     # planes large enough for F(4x4, 3x3) pieces
]


def _windows5(xp, OH, OW):
    return np.lib.stride_tricks.sliding_window_view(xp, (5, 5), axis=(2, 3))[:, :, :OH, :OW]


def ref_conv5(x, w, b, p):
    ph, pw = _pair(p)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = xp.shape[2] - 4, xp.shape[3] - 4
    y = np.einsum("ncyxab,kcab->nkyx", _windows5(xp, OH, OW), w.astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[:, None, None]


def _flip5(w):
    return w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)


def ref_backward5(dy, x, w, p):
    ph, pw = _pair(p)
    dx = ref_conv5(dy, _flip5(w), None, (4 - ph, 4 - pw))
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    dw = np.einsum("ncyxab,nkyx->kcab", _windows5(xp, dy.shape[2], dy.shape[3]),
                   dy.astype(np.float64))
    return dx, dw


def _pieces(w):
    w6 = np.zeros(w.shape[:2] + (6, 6))
    w6[:, :, :5, :5] = w
    return [w6[:, :, a:a + 3, c:c + 3] for a, c in OFFSETS]


def _split_input(x, p):
    """(N, 4C, OH+2, OW+2): the padded input shifted by each offset."""
    ph, pw = _pair(p)
    N, C, H, W = x.shape
    OH, OW = H + 2 * ph - 4, W + 2 * pw - 4
    xp = np.zeros((N, C, H + 2 * ph + 1, W + 2 * pw + 1))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    return xp, np.concatenate([xp[:, :, a:a + OH + 2, c:c + OW + 2] for a, c in OFFSETS], axis=1)


def wg5_forward_bound(x, w, b, p):
    """Sound for either cut and tile: the larger of the bound over the 4C
    shifted channels, and the sum of the four pieces' own sums on the
    (OH+3) x (OW+3) grid, shifted, with four more roundings for the merge."""
    C = x.shape[1]
    x64, w64 = np.abs(x.astype(np.float64)), np.abs(w.astype(np.float64))
    xp, x4 = _split_input(x64, p)
    OH, OW = x4.shape[2] - 2, x4.shape[3] - 2
    pieces = _pieces(w64)
    bound = wg_forward_bound(x4, np.concatenate(pieces, axis=1), b, 0)
    for m in TILES:
        z = sum(_wg_sums(xp, piece, None, 0, m)[:, :, a:a + OH, c:c + OW]
                for piece, (a, c) in zip(pieces, OFFSETS))
        if b is not None:
            z = z + np.abs(b.astype(np.float64))[:, None, None]
        bound = np.maximum(bound, (C + TILES[m][3] + 4) * U32 * 1.01 * z)
    return bound


def wg5_dw_bound(dy, x, p, dw_ref):
    """dW runs as the adjoint over the split input: the F(2x2, 3x3) dW bound
    of the 4C shifted channels, read back at each tap's piece."""
    C = x.shape[1]
    _, x4 = _split_input(np.abs(x.astype(np.float64)), p)
    b4 = wg_dw_bound(dy, x4, 0, np.concatenate(_pieces(dw_ref), axis=1))
    out = np.empty(dw_ref.shape)
    for q, (a, c) in enumerate(OFFSETS):
        kh, kw = min(3, 5 - a), min(3, 5 - c)
        out[:, :, a:a + kh, c:c + kw] = b4[:, q * C:(q + 1) * C, :kh, :kw]
    return out


def _data5(rng, N, C, K, H, W, p, dtype=np.float32):
    ph, pw = _pair(p)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 5, 5)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    dy = rng.standard_normal((N, K, H + 2 * ph - 4, W + 2 * pw - 4)).astype(dtype)
    return x, w, b, dy


def _check5(x, w, b, dy, p):
    y = cc.conv2d(x, w, b, padding=p)
    _within(y, ref_conv5(x, w, b, p), wg5_forward_bound(x, w, b, p))
    dx, dw, db = cc.conv2d_backward(dy, x, w, padding=p)
    dx_ref, dw_ref = ref_backward5(dy, x, w, p)
    ph, pw = _pair(p)
    _within(dx, dx_ref, wg5_forward_bound(dy, _flip5(w), None, (4 - ph, 4 - pw)))
    _within(dw, dw_ref, wg5_dw_bound(dy, x, p, dw_ref))


@pytest.mark.parametrize("shape", SHAPES5)
def test_5x5_float32_forward_and_backward_within_the_winograd_bound(shape, rng, winograd, tile):
    _check5(*_data5(rng, *shape), shape[-1])


def test_5x5_bound_is_tight_enough_to_catch_a_wrong_tap(rng, winograd):
    x, w, b, _ = _data5(rng, 2, 32, 48, 9, 9, 2)
    y = cc.conv2d(x, w, b, padding=2)
    w2 = w.copy()
    w2[3, 5, 4, 3] += 0.1   # a tap of the last row: the piece at (3, 3)
    bound = wg5_forward_bound(x, w, b, 2)
    assert np.all(np.abs(y - ref_conv5(x, w, b, 2)) <= bound)
    assert not np.all(np.abs(y - ref_conv5(x, w2, b, 2)) <= bound)


@pytest.mark.parametrize("shape", SHAPES5[:3])
def test_5x5_float64_adjoint_identities(shape, rng, winograd):
    x, w, _, dy = _data5(rng, *shape, dtype=np.float64)
    _assert_adjoints(x, w, dy, shape[-1], ref_conv5)


@pytest.mark.parametrize("channels", [(32, 48), (48, 32)])   # both cuts, both ways
def test_5x5_results_identical_for_any_thread_count(channels, rng, winograd, tile):
    _same_bits_for_threads(*_data5(rng, 2, *channels, 26, 26, 2), 2, counts=(1, 2, 3))


def test_5x5_small_workspace_chunks_stay_within_the_bound(rng, winograd):
    # several chunks: dW's sums run on across them
    x, w, b, dy = _data5(rng, 7, 32, 48, 9, 9, 2)
    old = cc.get_workspace_limit()
    try:
        cc.set_workspace_limit(1_500_000)
        _check5(x, w, b, dy, 2)
    finally:
        cc.set_workspace_limit(old)


def test_5x5_auto_takes_winograd_for_float32_from_64_channels(rng, monkeypatch):
    for ch, strategy in ((64, "winograd"), (32, "batched")):
        x, w, b, dy = _data5(rng, 2, ch, ch, 9, 9, 2)
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
        want = (cc.conv2d(x, w, b, padding=2), *cc.conv2d_backward(dy, x, w, padding=2))
        monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
        got = (cc.conv2d(x, w, b, padding=2), *cc.conv2d_backward(dy, x, w, padding=2))
        for a, c in zip(got, want):
            np.testing.assert_array_equal(a, c)


@pytest.mark.parametrize("where", ["x", "w", "dy"])
def test_5x5_inf_and_nan_take_the_direct_path(where, rng, monkeypatch):
    x, w, b, dy = _data5(rng, 2, 32, 32, 8, 8, 2)
    {"x": x, "w": w, "dy": dy}[where][1, 3, 2, 2] = np.inf
    {"x": x, "w": w, "dy": dy}[where][0, 1, 1, 3] = np.nan
    got = []
    for strategy in ("winograd", "batched"):
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
        with np.errstate(all="ignore"):
            got.append((cc.conv2d(x, w, b, padding=2), *cc.conv2d_backward(dy, x, w, padding=2)))
    first = 1 if where == "dy" else 0          # dy does not enter the forward pass
    for a, c in zip(got[0][first:], got[1][first:]):
        np.testing.assert_array_equal(a, c)


# --------------------------------------------------------------- stride 2
# 3x3 at stride 2: each 2x2 output block reads the 5x5 input patch under it
# (patches 4 apart).  Per axis, F(2, 2) on the even taps and the direct
# product on the odd one: 5 multiplications per 2 outputs instead of 6.
BtS = np.array([[1, 0, -1, 0, 0], [0, 0, 1, 0, 0], [0, 0, -1, 0, 1],
                [0, 1, 0, 0, 0], [0, 0, 0, 1, 0]], float)
GS = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 1], [0, 1, 0], [0, 1, 0]], float)
AtS = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 0, 1]], float)
SHAPES2 = [  # N, C, K, H, W, padding
    (2, 32, 32, 28, 28, 1),       # 14x14 outputs: AUTO takes it
    (1, 33, 40, 25, 27, 1),       # odd outputs (13 x 14)
    (2, 32, 32, 24, 26, 0),
    (1, 32, 40, 25, 24, 2),
    (2, 32, 32, 26, 30, (0, 2)),
    (1, 32, 32, 5, 6, 1),         # fewer tiles than a SIMD vector
    (1, 32, 32, 3, 3, 0),         # a single output
    (1, 32, 136, 13, 12, 1),      # over 128 outputs: the GEMMs through BLAS
]


def _out2(n, p):
    return (n + 2 * p - 3) // 2 + 1


def ref_conv2(x, w, b, p):
    ph, pw = _pair(p)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    OH, OW = _out2(x.shape[2], ph), _out2(x.shape[3], pw)
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    y = np.einsum("ncyxab,kcab->nkyx", win[:, :, :OH, :OW], w.astype(np.float64))
    return y if b is None else y + b.astype(np.float64)[:, None, None]


def ref_backward2(dy, x, w, p):
    """dX by scattering every tap's product (the adjoint, written out), dW
    from the strided windows; float64."""
    ph, pw = _pair(p)
    dy, x, w = (a.astype(np.float64) for a in (dy, x, w))
    N, C, H, W = x.shape
    OH, OW = dy.shape[2:]
    dxp = np.zeros((N, C, H + 2 * ph + 2, W + 2 * pw + 2))
    for a in range(3):
        for c in range(3):
            dxp[:, :, a:a + 2 * OH:2, c:c + 2 * OW:2] += np.einsum("nkyx,kc->ncyx", dy, w[:, :, a, c])
    dx = dxp[:, :, ph:ph + H, pw:pw + W]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))[:, :, ::2, ::2]
    dw = np.einsum("ncyxab,nkyx->kcab", win[:, :, :OH, :OW], dy)
    return dx, dw


def _patches2(xa, ph, pw, th, tw):
    """5x5 input patches, 4 apart, under each 2x2 output block (zeros past the edges)."""
    N, C, H, W = xa.shape
    xp = np.zeros((N, C, 4 * th + 1, 4 * tw + 1))
    hh, ww = min(H, 4 * th + 1 - ph), min(W, 4 * tw + 1 - pw)
    xp[:, :, ph:ph + hh, pw:pw + ww] = xa[:, :, :hh, :ww]
    return np.lib.stride_tricks.sliding_window_view(xp, (5, 5), axis=(2, 3))[:, :, ::4, ::4][:, :, :th, :tw]


def _dy_tiles2(dy, th, tw):
    """|A| |dy block| |Aᵀ| for each 2x2 block of |dy| (zeros past the edges)."""
    N, K, OH, OW = dy.shape
    g = np.zeros((N, K, 2 * th, 2 * tw))
    g[:, :, :OH, :OW] = np.abs(dy.astype(np.float64))
    g = g.reshape(N, K, th, 2, tw, 2).transpose(0, 1, 2, 4, 3, 5)
    return np.einsum("ai,nkyxij,bj->nkyxab", np.abs(AtS.T), g, np.abs(AtS.T))


def wg2_bounds(x, w, b, dy, p, dw_ref):
    """Float32 error bounds of the stride-2 algorithm for y, dX and dW, from
    absolute values of its matrices.  Roundings outside the GEMM reductions:
    y: 2 in Bᵀ d B, 1 for U (formed in double), 1 product, 4 in Aᵀ (.) A, 1
    bias; dX: 2 in A dy Aᵀ, 1 for U, 1 product, 4 in B (.) Bᵀ, 3 where four
    patches overlap; dW: 2 + 2 in the transforms, 1 product (+ u |dW| for the
    final rounding)."""
    ph, pw = _pair(p)
    N, C, H, W = x.shape
    OH, OW = _out2(H, ph), _out2(W, pw)
    th, tw = -(-OH // 2), -(-OW // 2)
    V = np.einsum("ia,ncyxab,jb->ncyxij", np.abs(BtS), _patches2(np.abs(x.astype(np.float64)), ph, pw, th, tw),
                  np.abs(BtS))
    U = np.einsum("ia,kcab,jb->kcij", np.abs(GS), np.abs(w.astype(np.float64)), np.abs(GS))
    Y = np.einsum("ai,nkyxij,bj->nkyxab", np.abs(AtS), np.einsum("kcij,ncyxij->nkyxij", U, V), np.abs(AtS))
    Y = Y.transpose(0, 1, 2, 4, 3, 5).reshape(N, -1, 2 * th, 2 * tw)[:, :, :OH, :OW]
    if b is not None:
        Y = Y + np.abs(b.astype(np.float64))[:, None, None]
    M = _dy_tiles2(dy, th, tw)
    Z = np.einsum("ia,ncyxab,jb->ncyxij", np.abs(BtS.T), np.einsum("kcij,nkyxij->ncyxij", U, M), np.abs(BtS.T))
    D = np.zeros((N, C, 4 * th + 1, 4 * tw + 1))
    for a in range(5):
        for c in range(5):
            D[:, :, a:a + 4 * th:4, c:c + 4 * tw:4] += Z[..., a, c]
    D = np.pad(D, ((0, 0), (0, 0), (0, H), (0, W)))[:, :, ph:ph + H, pw:pw + W]
    dU = np.einsum("nkyxij,ncyxij->kcij", M, V)
    Wb = np.einsum("ai,kcij,bj->kcab", np.abs(GS.T), dU, np.abs(GS.T))
    K = w.shape[0]
    return ((C + 9) * U32 * 1.01 * Y, (K + 11) * U32 * 1.01 * D,
            (N * th * tw + 5) * U32 * 1.01 * Wb + U32 * np.abs(dw_ref))


def _check2(x, w, b, dy, p):
    y = cc.conv2d(x, w, b, stride=2, padding=p)
    dx, dw, db = cc.conv2d_backward(dy, x, w, stride=2, padding=p)
    dx_ref, dw_ref = ref_backward2(dy, x, w, p)
    by, bdx, bdw = wg2_bounds(x, w, b, dy, p, dw_ref)
    _within(y, ref_conv2(x, w, b, p), by)
    _within(dx, dx_ref, bdx)
    _within(dw, dw_ref, bdw)
    np.testing.assert_allclose(db, dy.astype(np.float64).sum(axis=(0, 2, 3)), rtol=1e-5)


def _data2(rng, N, C, K, H, W, p, dtype=np.float32):
    ph, pw = _pair(p)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, 3, 3)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    dy = rng.standard_normal((N, K, _out2(H, ph), _out2(W, pw))).astype(dtype)
    return x, w, b, dy


@pytest.mark.parametrize("shape", SHAPES2)
def test_stride2_float32_within_the_winograd_bound(shape, rng, winograd):
    _check2(*_data2(rng, *shape), shape[-1])


def test_stride2_bound_is_tight_enough_to_catch_a_wrong_tap(rng, winograd):
    x, w, b, dy = _data2(rng, 2, 32, 32, 28, 28, 1)
    y = cc.conv2d(x, w, b, stride=2, padding=1)
    dx, dw, _ = cc.conv2d_backward(dy, x, w, stride=2, padding=1)
    dx_ref, dw_ref = ref_backward2(dy, x, w, 1)
    by, bdx, bdw = wg2_bounds(x, w, b, dy, 1, dw_ref)
    assert np.all(np.abs(y - ref_conv2(x, w, b, 1)) <= by)
    w2 = w.copy()
    w2[3, 5, 0, 1] += 0.1
    assert not np.all(np.abs(y - ref_conv2(x, w2, b, 1)) <= by)
    assert not np.all(np.abs(dx - ref_backward2(dy, x, w2, 1)[0]) <= bdx)
    dw2 = dw_ref.copy()
    dw2[3, 5, 2, 2] += 0.1
    assert not np.all(np.abs(dw - dw2) <= bdw)


@pytest.mark.parametrize("shape", SHAPES2[:5])
def test_stride2_float64_adjoint_identities(shape, rng, winograd):
    x, w, _, dy = _data2(rng, *shape, dtype=np.float64)
    p = shape[-1]
    y = cc.conv2d(x, w, stride=2, padding=p)
    dx, dw, _ = cc.conv2d_backward(dy, x, w, stride=2, padding=p)
    lhs = np.vdot(y, dy)
    assert abs(lhs - np.vdot(x, dx)) <= 1e-12 * np.abs(y).sum() * np.abs(dy).max()
    assert abs(lhs - np.vdot(w, dw)) <= 1e-12 * np.abs(y).sum() * np.abs(dy).max()
    np.testing.assert_allclose(y, ref_conv2(x, w, None, p), rtol=1e-12, atol=1e-12)
    dx_ref, dw_ref = ref_backward2(dy, x, w, p)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-11)


def test_stride2_results_identical_for_any_thread_count(rng, winograd):
    x, w, b, dy = _data2(rng, 3, 32, 40, 29, 27, 1)
    old = cc.get_num_threads()
    try:
        out = []
        for t in (1, 2, 3):
            cc.set_num_threads(t)
            out.append((cc.conv2d(x, w, b, stride=2, padding=1),
                        *cc.conv2d_backward(dy, x, w, stride=2, padding=1)))
    finally:
        cc.set_num_threads(old)
    for other in out[1:]:
        for a, c in zip(out[0], other):
            np.testing.assert_array_equal(a, c)


def test_stride2_small_workspace_chunks_stay_within_the_bound(rng, winograd):
    x, w, b, dy = _data2(rng, 6, 32, 32, 28, 28, 1)
    old = cc.get_workspace_limit()
    try:
        cc.set_workspace_limit(400_000)        # a few images per chunk
        _check2(x, w, b, dy, 1)
    finally:
        cc.set_workspace_limit(old)


def test_stride2_bands_of_a_large_map(rng, winograd):
    """104 x 105 outputs (52 x 53 tiles of 25 values): the forward pass in bands."""
    x, w, b, dy = _data2(rng, 1, 32, 32, 208, 210, 1)
    _check2(x, w, b, dy, 1)
    old = cc.get_num_threads()
    try:
        out = []
        for t in (1, 2, 3):
            cc.set_num_threads(t)
            out.append(cc.conv2d(x, w, b, stride=2, padding=1))
    finally:
        cc.set_num_threads(old)
    for other in out[1:]:
        np.testing.assert_array_equal(out[0], other)


@pytest.mark.parametrize("N, H, strategy", [
    (11, 24, "winograd"),   # 12x12 outputs, 11 x 36 = 396 tiles of 2x2 outputs
    (10, 24, "batched"),    # 360 tiles: too few in the batch
    (16, 22, "batched"),    # 11x11 outputs: too small a plane, however many
])
def test_stride2_auto_takes_winograd_from_12x12_outputs_and_384_tiles(N, H, strategy, rng,
                                                                      monkeypatch):
    """AUTO: float32 stride-2 layers of 32 channels and more run the Winograd
    path where the outputs are at least 12x12 and the batch holds at least
    384 tiles of 2x2 outputs, the im2col one elsewhere."""
    x, w, b, dy = _data2(rng, N, 32, 32, H, H, 1)
    auto = (cc.conv2d(x, w, b, stride=2, padding=1),
            *cc.conv2d_backward(dy, x, w, stride=2, padding=1))
    got = {}
    for s in ("winograd", "batched"):
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", s)
        got[s] = (cc.conv2d(x, w, b, stride=2, padding=1),
                  *cc.conv2d_backward(dy, x, w, stride=2, padding=1))
    monkeypatch.delenv("CONVCORE_CONV_STRATEGY")
    other = "batched" if strategy == "winograd" else "winograd"
    for a, c in zip(auto, got[strategy]):
        np.testing.assert_array_equal(a, c)
    assert not np.array_equal(auto[0], got[other][0])


@pytest.mark.parametrize("where", ["x", "w", "dy"])
def test_stride2_inf_and_nan_take_the_direct_path(where, rng, monkeypatch):
    x, w, b, dy = _data2(rng, 2, 32, 32, 28, 28, 1)
    {"x": x, "w": w, "dy": dy}[where][1, 3, 2, 2] = np.nan if where == "w" else np.inf
    got = []
    for strategy in ("", "winograd", "batched"):
        monkeypatch.setenv("CONVCORE_CONV_STRATEGY", strategy)
        with np.errstate(all="ignore"):
            got.append((cc.conv2d(x, w, b, stride=2, padding=1),
                        *cc.conv2d_backward(dy, x, w, stride=2, padding=1)))
    first = 1 if where == "dy" else 0
    for res in got[:2]:
        for a, c in zip(res[first:], got[2][first:]):
            np.testing.assert_array_equal(a, c)


def test_stride2_matches_torch_on_a_resnet_downsampling_layer(rng):
    torch = pytest.importorskip("torch", reason="parity with torch needs torch installed")
    x, w, b, dy = _data2(rng, 2, 64, 128, 28, 28, 1)
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    ty = torch.nn.functional.conv2d(tx, tw, torch.from_numpy(b), stride=2, padding=1)
    ty.backward(torch.from_numpy(dy))
    y = cc.conv2d(x, w, b, stride=2, padding=1)
    dx, dw, _ = cc.conv2d_backward(dy, x, w, stride=2, padding=1)
    for got, want in ((y, ty.detach().numpy()), (dx, tx.grad.numpy()), (dw, tw.grad.numpy())):
        scale = np.abs(want).max()
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * scale)
