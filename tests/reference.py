"""Independent references for the tests: plain loops over NumPy arrays.

Nothing here imports convcore; these are the oracles the library is checked against.
"""
import numpy as np


def pad2(x, ph, pw, value=0.0):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def conv2d_naive(x, w, b=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """Direct loops over every output element, accumulated in float64."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    SH, SW = stride
    PH, PW = padding
    DH, DW = dilation
    xp = pad2(x, PH, PW)
    OH = (H + 2 * PH - DH * (KH - 1) - 1) // SH + 1
    OW = (W + 2 * PW - DW * (KW - 1) - 1) // SW + 1
    Kg = K // groups
    y = np.zeros((N, K, OH, OW))
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for i in range(OH):
                for j in range(OW):
                    s = 0.0 if b is None else float(b[k])
                    for c in range(Cg):
                        for a in range(KH):
                            for bb in range(KW):
                                s += w[k, c, a, bb] * xp[n, g * Cg + c, i * SH + a * DH,
                                                         j * SW + bb * DW]
                    y[n, k, i, j] = s
    return y


def conv2d_abs_bound(x, w, stride, padding, dilation, groups):
    """conv(|x|, |w|): scales the sound float32 error bound of EDGE_CASES.md."""
    return conv2d_naive(np.abs(x), np.abs(w), None, stride, padding, dilation, groups)
