import numpy as np

import convcore as cc
from reference import conv2d_naive


def test_notes_sobel_patch_gives_65_plus_bias():
    patch = np.array([[200, 150, 150], [100, 50, 100], [25, 25, 10]], dtype=np.float64)
    sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
    y = cc.conv2d(patch[None, None], sobel[None, None], bias=np.array([0.5]))
    assert y.shape == (1, 1, 1, 1)
    assert y.item() == 65.5


def test_conv2d_matches_naive_reference_small(rng):
    x = rng.standard_normal((2, 3, 6, 7))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    y = cc.conv2d(x, w, b, stride=(2, 1), padding=1, dilation=(1, 2))
    ref = conv2d_naive(x, w, b, (2, 1), (1, 1), (1, 2))
    np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)
