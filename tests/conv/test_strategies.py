"""Every convolution strategy, the kernel crop and measured plans.

Each strategy is forced (CONVCORE_CONV_STRATEGY) on geometries where it
applies, including the crop's cases (1x1 and 2x2 maps, odd sizes at stride
2, 1-4 input channels), and checked against PyTorch (float64) and the
independent loops of tests/reference/conv.py.
"""
import json
import warnings

import numpy as np
import pytest

import convcore as cc
from convcore import _config, _plan
from convcore._core import _conv
from convcore.backends import cpu
from reference.conv import conv2d_backward_naive, conv2d_naive

torch = pytest.importorskip("torch")

# (N, C, H, W, K, kernel, stride, padding, groups)
# (the crop's cases have batches large enough for the crop to pay, see
# test_no_crop_where_it_would_not_pay)
GEOMS = [
    (20, 3, 1, 1, 5, 3, 1, 1, 1),    # 1x1 map: only the centre tap
    (2, 4, 2, 2, 6, 3, 1, 1, 1),     # 2x2 map: every tap meets some position
    (32, 2, 2, 2, 5, 3, 2, 1, 1),    # 2x2 map at stride 2: first row/column dead
    (3, 1, 7, 9, 4, 3, 2, 1, 1),     # odd sizes, stride 2, one channel
    (2, 3, 5, 5, 4, 5, 1, 2, 1),     # 5x5
    (17, 4, 1, 1, 3, 7, 2, 3, 1),    # 7x7/2 stem on a 1x1 map
    (8, 2, 1, 3, 4, 3, 1, 1, 1),     # 1x3 map: rows cropped, columns not
    (2, 32, 2, 2, 32, 3, 1, 1, 1),   # (WINOGRAD's channel counts)
    (20, 4, 1, 1, 4, 3, 1, 1, 4),    # depthwise on a 1x1 map
    (2, 3, 6, 5, 6, 3, 2, 1, 3),     # grouped, odd sizes, stride 2
    (3, 5, 4, 3, 6, 1, 1, 0, 1),     # pointwise (x is its own columns)
    (2, 6, 7, 5, 4, 1, 2, 0, 1),     # 1x1 at stride 2, odd sizes
    (5, 300, 2, 2, 240, 1, 1, 0, 1), # pointwise on 2x2 maps, many weights:
    (3, 40, 1, 3, 48, 1, 1, 0, 1),   # columns copied a channel at a time
]
NAMES = ["tiles", "batched", "winograd", "direct", "depthwise", "regions", "unrolled"]


def _geom(N, C, H, W, K, k, s, p, groups):
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    return (N, C, H, W, K, k, k, s, s, p, p, 1, 1, OH, OW, groups)


def _torch(x, w, b, dy, s, p, groups):
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bt = torch.tensor(b, dtype=torch.float64, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, bt, stride=s, padding=p, groups=groups)
    yt.backward(torch.tensor(dy, dtype=torch.float64))
    return [t.detach().numpy() for t in (yt, xt.grad, wt.grad, bt.grad)]


def _close(got, ref, dtype):
    tol = 1e-12 if dtype == np.float64 else 2e-5   # relative norm error
    err = np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-30)
    assert err < tol, f"relative error {err:.3g} (tolerance {tol})"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("case", GEOMS, ids=lambda c: "x".join(map(str, c)))
def test_every_strategy_matches_pytorch(case, name, dtype, monkeypatch, rng):
    N, C, H, W, K, k, s, p, groups = case
    geom = _geom(*case)
    ran = _conv.plan(geom, dtype, name).split("+")[0]
    if ran != name:
        pytest.skip(f"{name} does not apply here (runs {ran})")
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", name)
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C // groups, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = cc.conv2d(x, w, b, stride=s, padding=p, groups=groups)
    dy = rng.standard_normal(y.shape).astype(dtype)
    got = (y,) + tuple(cc.conv2d_backward(dy, x, w, stride=s, padding=p, groups=groups))
    for g, r in zip(got, _torch(x, w, b, dy, s, p, groups)):
        assert g.dtype == dtype
        _close(g, r, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["tiles", "batched"])
@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (4, 4), (5, 6), (7, 7)])
def test_pointwise_on_small_maps_in_chunks_matches_pytorch(hw, name, dtype, rng, monkeypatch):
    # a chunk's columns are copied a channel of every image at a time below
    # 32 positions; a workspace of a few images' columns makes several
    # chunks, so the copies start past the first image
    N, C, K = 7, 96, 160
    x = rng.standard_normal((N, C) + hw).astype(dtype)
    w = rng.standard_normal((K, C, 1, 1)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    dy = rng.standard_normal((N, K) + hw).astype(dtype)
    ref = _torch(x, w, b, dy, 1, 0, 1)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", name)
    limit = _config.get_workspace_limit()
    cc.set_workspace_limit(3 * (C + K) * hw[0] * hw[1] * np.dtype(dtype).itemsize)
    try:
        y = cc.conv2d(x, w, b)
        got = (y,) + tuple(cc.conv2d_backward(dy, x, w))
    finally:
        cc.set_workspace_limit(limit)
    for g, r in zip(got, ref):
        _close(g, r, dtype)


# first layers whose weight gradient streams block by block (few weights,
# at least 8,192 output positions in all): blocks that do not divide a
# plane, fewer blocks than segments, odd sizes, a stem
STREAMED = [
    (8, 3, 62, 62, 16, 7, 2, 3),     # 31x31 outputs: blocks of 512 and 449
    (1, 1, 100, 90, 4, 3, 1, 1),     # one image, 18 blocks over 8 segments
    (3, 2, 75, 61, 6, 5, 1, 0),      # odd sizes, no padding
    (2, 3, 224, 224, 64, 7, 2, 3),   # ResNet's stem
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", STREAMED, ids=lambda c: "x".join(map(str, c)))
def test_first_layer_weight_gradient_streams_and_matches_pytorch(case, dtype, rng, monkeypatch):
    N, C, H, W, K, k, s, p = case
    geom = _geom(*case, 1)
    assert _conv.plan(geom, dtype, "batched", backward=True) == "batched"
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((K, C, k, k)).astype(dtype)
    b = rng.standard_normal(K).astype(dtype)
    y = cc.conv2d(x, w, b, stride=s, padding=p)
    dy = rng.standard_normal(y.shape).astype(dtype)
    _, dx_ref, dw_ref, _ = _torch(x, w, b, dy, s, p, 1)
    monkeypatch.setenv("CONVCORE_CONV_STRATEGY", "batched")
    # the weight gradient alone (a first layer's), and with dx
    _, dw_only, _ = cc.conv2d_backward(dy, x, w, stride=s, padding=p,
                                       output_mask=(False, True, False))
    dx, dw, _ = cc.conv2d_backward(dy, x, w, stride=s, padding=p)
    # and under a workspace too small for a chunk's columns
    limit = _config.get_workspace_limit()
    cc.set_workspace_limit(1)
    try:
        _, dw_tight, _ = cc.conv2d_backward(dy, x, w, stride=s, padding=p,
                                            output_mask=(False, True, False))
    finally:
        cc.set_workspace_limit(limit)
    _close(dx, dx_ref, dtype)
    for got in (dw_only, dw, dw_tight):
        assert got.dtype == dtype
        _close(got, dw_ref, dtype)
    # the same sums in the same order, with or without dx
    np.testing.assert_array_equal(dw_only, dw)


@pytest.mark.parametrize("case", [GEOMS[0], GEOMS[2], GEOMS[5], GEOMS[6], GEOMS[8]])
def test_dead_taps_are_cropped_and_match_the_loops(case, rng):
    N, C, H, W, K, k, s, p, groups = case
    geom = _geom(*case)
    assert _conv.plan(geom, np.float64).endswith("+crop")
    x = rng.standard_normal((N, C, H, W))
    w = rng.standard_normal((K, C // groups, k, k))
    y = cc.conv2d(x, w, stride=s, padding=p, groups=groups)
    np.testing.assert_allclose(y, conv2d_naive(x, w, None, (s, s), (p, p), (1, 1), groups),
                               rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, dw, _ = cc.conv2d_backward(dy, x, w, stride=s, padding=p, groups=groups)
    dx_ref, dw_ref, _ = conv2d_backward_naive(dy, x, w, (s, s), (p, p), (1, 1), groups)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)


def test_no_crop_where_it_would_not_pay():
    # batch 1 on a 1x1 map: one pass over the weights would cost more than the
    # eight dead taps' products; from 18 images on, the crop pays
    assert not _conv.plan(_geom(1, 512, 1, 1, 512, 3, 1, 1, 1), np.float32).endswith("+crop")
    assert not _conv.plan(_geom(17, 8, 1, 1, 8, 3, 1, 1, 1), np.float32).endswith("+crop")
    assert _conv.plan(_geom(18, 8, 1, 1, 8, 3, 1, 1, 1), np.float32).endswith("+crop")
    x = np.random.default_rng(0).standard_normal((1, 6, 1, 1))
    w = np.random.default_rng(1).standard_normal((5, 6, 3, 3))
    np.testing.assert_allclose(cc.conv2d(x, w, padding=1),
                               conv2d_naive(x, w, None, (1, 1), (1, 1), (1, 1), 1),
                               rtol=1e-12, atol=1e-12)


def test_no_crop_where_every_tap_meets_the_input():
    assert not _conv.plan(_geom(*GEOMS[1]), np.float32).endswith("+crop")
    assert not _conv.plan(_geom(2, 3, 7, 7, 4, 3, 2, 1, 1), np.float32).endswith("+crop")


@pytest.mark.parametrize("n", [2, 20])          # (crop: from 18 images on)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inf_and_nan_in_dead_taps_keep_the_reference_pattern(dtype, n, rng):
    # a dead tap meets only padding: w * 0 is NaN for an Inf/NaN weight, and
    # the dead tap's gradient sum(dy * 0) is NaN where dy holds an Inf
    assert _conv.plan(_geom(n, 3, 1, 1, 4, 3, 1, 1, 1), dtype).endswith("+crop") == (n > 2)
    x = rng.standard_normal((n, 3, 1, 1)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    w[1, 2, 0, 0] = np.inf
    w[3, 0, 2, 1] = np.nan
    y = cc.conv2d(x, w, padding=1)
    with np.errstate(invalid="ignore"):
        ref = conv2d_naive(x, w, None, (1, 1), (1, 1))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    assert np.isnan(y[:, 1]).all() and np.isnan(y[:, 3]).all() and np.isfinite(y[:, 0]).all()
    w[1, 2, 0, 0] = w[3, 0, 2, 1] = 0.5
    dy = rng.standard_normal((n, 4, 1, 1)).astype(dtype)
    dy[1, 2, 0, 0] = np.inf
    dx, dw, _ = cc.conv2d_backward(dy, x, w, padding=1)
    with np.errstate(invalid="ignore"):
        dx_ref, dw_ref, _ = conv2d_backward_naive(dy, x, w, (1, 1), (1, 1))
    np.testing.assert_array_equal(np.isnan(dw), np.isnan(dw_ref))
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(dx_ref))
    np.testing.assert_array_equal(dw[0, :, 0, 0], 0)   # dead, finite dy: exactly zero


@pytest.mark.parametrize("name", ["auto"] + NAMES)
@pytest.mark.parametrize("case", [GEOMS[0], GEOMS[3], GEOMS[7], (8, 16, 12, 12, 24, 3, 1, 1, 1)])
def test_every_strategy_stays_within_the_workspace_limit(case, name):
    geom = _geom(*case)
    req = _conv.AUTO if name == "auto" else _conv.STRATEGIES[name]
    for itemsize in (4, 8):
        one = _conv.make_plan(geom, itemsize, req, False, 0)[3]   # one image: the least
        for limit in (0, 1, 4096, 65536, 1 << 20, 1 << 30):
            _, _, chunk, total = _conv.make_plan(geom, itemsize, req, False, limit // itemsize)
            assert total <= max(limit // itemsize, one)
            assert 1 <= chunk <= geom[0]


def test_results_hold_under_a_tiny_workspace_limit(rng):
    x = rng.standard_normal((6, 8, 9, 9)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    old = _config.get_workspace_limit()
    try:
        cc.set_workspace_limit(1)
        y = cc.conv2d(x, w, padding=1, stride=2)
    finally:
        cc.set_workspace_limit(old)
    _close(y, conv2d_naive(x, w, None, (2, 2), (1, 1)), np.float32)


@pytest.mark.usefixtures("wide_vectors")   # (AUTO as with AVX-512)
def test_plan_names_the_strategy():
    assert _conv.plan(_geom(*GEOMS[8]), np.float32) == "depthwise+crop"
    body = _geom(8, 64, 14, 14, 64, 3, 1, 1, 1)
    assert _conv.plan(body, np.float32) == "winograd"
    assert _conv.plan(body, np.float64) == "batched"   # float64: never unasked
    assert _conv.plan(body, np.float64, "tiles") == "tiles"
    # batch 1 on 14x14 maps: Winograd both ways from 256 channels a side;
    # forward from 128 x 256 channel pairs; the GEMM below
    one = _geom(1, 256, 14, 14, 256, 3, 1, 1, 1)
    assert _conv.plan(one, np.float32) == "winograd"
    assert _conv.plan(one, np.float32, backward=True) == "winograd"
    assert _conv.plan(_geom(1, 512, 14, 14, 512, 3, 1, 1, 1), np.float32) == "winograd"
    mid = _geom(1, 128, 14, 14, 256, 3, 1, 1, 1)
    assert _conv.plan(mid, np.float32) == "winograd"
    assert _conv.plan(mid, np.float32, backward=True) == "batched"
    for n in (1, 2):
        narrow = _geom(n, 64, 14, 14, 64, 3, 1, 1, 1)
        assert _conv.plan(narrow, np.float32) == "batched"
        assert _conv.plan(narrow, np.float32, backward=True) == "batched"
    assert _conv.plan(_geom(4, 64, 14, 14, 64, 3, 1, 1, 1), np.float32) == "winograd"
    # 7x7 and 8x8 maps (16 tiles) in fewer than 64 tiles in all: the GEMM
    # both ways, and on 7x7 maps below 128 tiles
    for n, c, h in ((1, 512, 7), (2, 256, 7), (1, 128, 8), (2, 512, 7), (1, 256, 8),
                    (1, 160, 7), (4, 512, 7), (4, 832, 7)):
        small = _geom(n, c, h, h, c, 3, 1, 1, 1)
        assert _conv.plan(small, np.float32) == "batched", (n, c, h)
        assert _conv.plan(small, np.float32, backward=True) == "batched", (n, c, h)
    # from 64 tiles in all on 8x8 maps and 128 on 7x7 ones, Winograd both ways
    for n, h in ((4, 8), (8, 7)):
        enough = _geom(n, 512, h, h, 512, 3, 1, 1, 1)
        assert _conv.plan(enough, np.float32) == "winograd"
        assert _conv.plan(enough, np.float32, backward=True) == "winograd"
    # odd planes in fewer than 64 tiles (AlexNet's 13x13 at batch 1): the GEMM
    for n, want in ((1, "batched"), (2, "winograd")):
        odd = _geom(n, 384, 13, 13, 384, 3, 1, 1, 1)
        assert _conv.plan(odd, np.float32) == want, n
        assert _conv.plan(odd, np.float32, backward=True) == want, n
    # 5x5: from 64 channels a side, or from 32 inputs on planes of 28x28 outputs
    assert _conv.plan(_geom(8, 32, 28, 28, 96, 5, 1, 2, 1), np.float32) == "winograd"
    assert _conv.plan(_geom(8, 32, 14, 14, 128, 5, 1, 2, 1), np.float32) == "batched"
    assert _conv.plan(_geom(8, 16, 28, 28, 32, 5, 1, 2, 1), np.float32) == "batched"
    # 1x1 layers of one group: per-image products (tiles), except the
    # product kernel's forward pass from 64 positions an image, the
    # side-by-side columns' forward pass on 1x1 maps from batch 16 and their
    # backward pass below 32 positions an image (16 for small layers)
    # ... and beyond batch 1 not where each image would read 1 MiB of weights
    # again (from 1 MiB): side by side both ways.  (geometry, forward,
    # backward; None: not asserted here)
    for args, fwd, bwd in [
            ((8, 480, 14, 14, 16, 1, 1, 0, 1), "direct", "tiles"),
            ((64, 512, 4, 4, 128, 1, 1, 0, 1), "tiles", "tiles"),
            ((32, 64, 1, 1, 512, 1, 1, 0, 1), "tiles", "batched"),
            ((64, 512, 4, 4, 256, 1, 1, 0, 1), "tiles", "batched"),
            ((8, 832, 7, 7, 192, 1, 1, 0, 1), "tiles", "tiles"),
            ((64, 2048, 1, 1, 512, 1, 1, 0, 1), "batched", None),
            ((4, 2048, 7, 7, 512, 1, 1, 0, 1), "batched", "batched"),
            ((8, 2048, 1, 1, 512, 1, 1, 0, 1), "batched", "batched"),
            ((4, 1024, 14, 14, 2048, 1, 2, 0, 1), "batched", "batched"),
            ((64, 1024, 2, 2, 256, 1, 1, 0, 1), "batched", "batched"),
            ((1, 2048, 7, 7, 512, 1, 1, 0, 1), "tiles", "tiles"),
            ((8, 128, 28, 28, 256, 1, 2, 0, 1), "tiles", "tiles"),     # strided
            ((8, 64, 14, 14, 64, 1, 1, 1, 1), "batched", None)]:       # padded
        assert _conv.plan(_geom(*args), np.float32) == fwd, args
        if bwd is not None:
            assert _conv.plan(_geom(*args), np.float32, backward=True) == bwd, args
    # maps of under 3x3 Winograd tiles: the GEMM both ways
    assert _conv.plan(_geom(*GEOMS[7]), np.float32) == "batched"
    assert _conv.plan(_geom(*GEOMS[7]), np.float32, backward=True) == "batched"
    with pytest.raises(ValueError, match="strategy must be"):
        _conv.plan(_geom(*GEOMS[7]), np.float32, "fastest")


@pytest.fixture
def no_plan():
    _plan.clear_plan()
    yield
    _plan.clear_plan()


def test_plan_round_trips_and_is_used(tmp_path, no_plan, rng):
    geom = _geom(*GEOMS[3])
    threads = cc.get_num_threads()
    entry = {"geom": list(geom), "dtype": "float32", "threads": threads,
             "forward": "tiles", "backward": "direct"}
    _plan.set_entries([entry])
    path = tmp_path / "plan.json"
    cc.save_plan(path)
    _plan.clear_plan()
    assert cpu._request(geom, 4, False) == _conv.AUTO
    assert cc.load_plan(path) is True
    assert cpu._request(geom, 4, False) == _conv.TILES
    assert cpu._request(geom, 4, True) == _conv.DIRECT
    assert cpu._request(geom, 8, False) == _conv.AUTO         # other dtype: heuristics
    doc = json.loads(path.read_text())
    assert doc["entries"] == [entry] and doc["cpu"] == _plan.cpu_model()
    # results with the plan match PyTorch
    N, C, H, W, K, k, s, p, groups = GEOMS[3]
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)
    w = rng.standard_normal((K, C, k, k)).astype(np.float32)
    b = rng.standard_normal(K).astype(np.float32)
    y = cc.conv2d(x, w, b, stride=s, padding=p)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    got = (y,) + tuple(cc.conv2d_backward(dy, x, w, stride=s, padding=p))
    for g, r in zip(got, _torch(x, w, b, dy, s, p, 1)):
        _close(g, r, np.float32)


def test_plan_from_another_machine_is_ignored_with_a_warning(tmp_path, no_plan):
    geom = _geom(*GEOMS[3])
    doc = {"format": _plan.FORMAT, "version": _plan.VERSION, "cpu": "Some Other CPU 9000",
           "entries": [{"geom": list(geom), "dtype": "float32",
                        "threads": cc.get_num_threads(), "forward": "tiles",
                        "backward": "tiles"}]}
    path = tmp_path / "other.json"
    path.write_text(json.dumps(doc))
    with pytest.warns(RuntimeWarning, match="not on this machine"):
        assert cc.load_plan(path) is False
    assert not _plan.active


@pytest.mark.parametrize("text, match", [
    ("not json", "invalid JSON"),
    ('{"format": "something else"}', "not a convcore plan"),
    ('{"format": "convcore-conv-plan", "version": 99}', "version"),
])
def test_malformed_plan_files_raise_valueerror(tmp_path, text, match, no_plan):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        cc.load_plan(path)


def test_plan_entries_for_other_thread_counts_stay_unused(no_plan):
    geom = _geom(*GEOMS[3])
    _plan.set_entries([{"geom": list(geom), "dtype": "float32",
                        "threads": cc.get_num_threads() + 1, "forward": "tiles",
                        "backward": "tiles"}])
    assert cpu._request(geom, 4, False) == _conv.AUTO


def test_tune_measures_a_small_network_and_the_cli_writes_the_plan(tmp_path, no_plan,
                                                                   capsys):
    from convcore import cli
    entries = cc.tune("lenet5", (2, 1, 28, 28), repeat=1)
    assert entries and all(e["forward"] in e["times"]["forward"] for e in entries)
    for e in entries:
        assert cpu._request(tuple(e["geom"]), 4, False) == _conv.STRATEGIES[e["forward"]]
    out = tmp_path / "p.json"
    assert cli.main(["tune", "lenet5", "--input", "1,1,28,28", "--repeat", "1",
                     "--forward-only", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["format"] == _plan.FORMAT
    assert "plan written" in capsys.readouterr().out


def test_convcore_plan_environment_variable_loads_at_import(tmp_path, no_plan):
    import os
    import subprocess
    import sys
    geom = _geom(*GEOMS[3])
    _plan.set_entries([{"geom": list(geom), "dtype": "float32", "threads": 1,
                        "forward": "tiles", "backward": "tiles"}])
    path = tmp_path / "env.json"
    cc.save_plan(path)
    env = dict(os.environ, CONVCORE_PLAN=str(path))
    out = subprocess.run([sys.executable, "-c", "from convcore import _plan; "
                          "print(len(_plan.active))"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "2"


def test_dead_tap_checks_hold_for_large_kernels_on_every_thread_count(rng):
    # (enough weights for the checks to run in a team)
    x = rng.standard_normal((2, 96, 1, 1)).astype(np.float32)
    w = rng.standard_normal((96, 96, 3, 3)).astype(np.float32)
    w[50, 7, 2, 2] = np.nan
    before = cc.get_num_threads()
    try:
        for n in (1, 2, 3):
            cc.set_num_threads(n)
            y = cc.conv2d(x, w, padding=1)
            assert np.isnan(y[:, 50]).all()
            assert np.isfinite(np.delete(y, 50, axis=1)).all()
    finally:
        cc.set_num_threads(before)
