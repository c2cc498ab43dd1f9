"""Every place where convcore differs from PyTorch on purpose, one test each
(docs/differences.rst lists them with the reasons).  Each test shows what
convcore does and, where PyTorch is installed, what PyTorch does instead, so
a change on either side is noticed."""
import warnings

import numpy as np
import pytest

import convcore as cc
from convcore import nn


def _torch():
    return pytest.importorskip("torch")


def test_max_pool_window_of_only_padding_raises():
    # kernel 2, dilation 5, padding 1 on a 4x4 input: both taps of the first
    # window miss the input
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="covers only padding"):
        cc.max_pool2d(x, 2, padding=1, dilation=5)
    torch = _torch()
    y, idx = torch.nn.functional.max_pool2d(torch.tensor(x), 2, padding=1, dilation=5,
                                            return_indices=True)
    assert y.item() == -np.inf and idx.item() >= 16   # an index outside the 4x4 input


@pytest.mark.parametrize("case", ["adaptive_output_0",
                                  "conv_zero_channels", "layer_zero_channels"])
def test_empty_maps_and_channels_raise_instead_of_empty_results(case):
    calls = {
        "adaptive_output_0": (
            lambda: cc.adaptive_avg_pool2d(np.zeros((1, 1, 4, 4)), (0, 2)),
            lambda t: t.nn.functional.adaptive_avg_pool2d(t.zeros(1, 1, 4, 4), (0, 2))),
        "conv_zero_channels": (
            lambda: cc.conv2d(np.zeros((1, 0, 4, 4)), np.zeros((2, 0, 3, 3))),
            lambda t: t.nn.functional.conv2d(t.zeros(1, 0, 4, 4), t.zeros(2, 0, 3, 3))),
        "layer_zero_channels": (
            lambda: nn.Conv2d(1, 0, 3),
            lambda t: t.nn.Conv2d(1, 0, 3).weight),
    }
    ours, theirs = calls[case]
    with pytest.raises(ValueError):
        ours()
    torch = _torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = theirs(torch)
    assert out.numel() == 0


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.complex64])
def test_only_float32_and_float64_are_accepted(dtype):
    x = np.zeros((1, 1, 4, 4), dtype)
    with pytest.raises(TypeError, match="float32 or float64"):
        cc.conv2d(x, np.zeros((1, 1, 3, 3), dtype))
    if dtype == np.float16:
        torch = _torch()
        y = torch.nn.functional.conv2d(torch.zeros(1, 1, 4, 4, dtype=torch.float16),
                                       torch.zeros(1, 1, 3, 3, dtype=torch.float16))
        assert y.dtype == torch.float16


@pytest.mark.parametrize("layer", [lambda: nn.LeakyReLU(0.1, inplace=True),
                                   lambda: nn.Dropout(0.5, inplace=True, rng=0),
                                   lambda: nn.Dropout2d(0.5, inplace=True, rng=0)])
def test_inplace_is_accepted_and_the_input_is_left_untouched(layer):
    x = np.full((2, 3, 2, 2), -1.0)
    x[0] = 2.0
    before = x.copy()
    y = layer()(x)
    np.testing.assert_array_equal(x, before)      # PyTorch would overwrite x
    assert y is not x


def test_softmax_without_dim_picks_torchs_dim_without_a_warning(rng):
    x = rng.standard_normal((2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = nn.Softmax()(x)
    np.testing.assert_allclose(y.sum(axis=0), 1.0)  # dim 0 for 3-D input, as PyTorch
    torch = _torch()
    with pytest.warns(UserWarning, match="Implicit dimension"):
        torch.nn.Softmax()(torch.tensor(x))


def test_initial_weights_and_dropout_masks_follow_numpy_seeds():
    # Same distributions as PyTorch, drawn from numpy.random.Generator: a seed
    # (rng=) gives the same weights and masks on every machine, not torch's.
    a, b = nn.Conv2d(3, 4, 3, rng=5), nn.Conv2d(3, 4, 3, rng=5)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    m1 = nn.Dropout(0.5, rng=3)(np.ones(64))
    m2 = nn.Dropout(0.5, rng=3)(np.ones(64))
    np.testing.assert_array_equal(m1, m2)
    torch = _torch()
    torch.manual_seed(5)
    t = torch.nn.Conv2d(3, 4, 3).weight.detach().numpy()
    assert t.shape == a.weight.shape and not np.allclose(t, a.weight.data)


def test_backward_is_explicit_and_accumulates_into_grad(rng):
    # no autograd: module.backward(dL/dy) returns dL/dx and adds into .grad,
    # as loss.backward() adds into .grad in PyTorch
    layer = nn.Linear(3, 2, rng=0)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    g = np.ones((4, 2), np.float32)
    layer(x)
    gx1 = layer.backward(g)
    gw1 = layer.weight.grad.copy()
    gx2 = layer.backward(g)
    np.testing.assert_array_equal(gx1, gx2)
    np.testing.assert_allclose(layer.weight.grad, 2 * gw1)
    layer.zero_grad()
    assert not layer.weight.grad.any()


def test_state_dict_files_are_npz_archives_not_pickles(tmp_path):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0))
    path = tmp_path / "w.npz"
    net.save(str(path))
    with np.load(str(path), allow_pickle=False) as z:   # no pickle inside
        assert sorted(z.files) == ["0.bias", "0.weight"]


def test_dropout2d_reads_3d_input_as_one_unbatched_image():
    # (C, H, W): whole (H, W) maps are dropped, as for every other unbatched
    # input of convcore; PyTorch 2.x reads 3-D input as (N, C, L) and warns
    # that this will change to convcore's reading
    y = cc.dropout2d(np.ones((64, 3, 5)), 0.5, rng=0)
    assert np.all(y.min(axis=(1, 2)) == y.max(axis=(1, 2)))
    torch = _torch()
    with pytest.warns(UserWarning, match="3D input to dropout2d"):
        t = torch.nn.functional.dropout2d(torch.ones(64, 3, 5), 0.5).numpy()
    assert np.all(t.min(axis=2) == t.max(axis=2))          # per (row, channel) of (N, C, L)
    assert not np.all(t.min(axis=(1, 2)) == t.max(axis=(1, 2)))
