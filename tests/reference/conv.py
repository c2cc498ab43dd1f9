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
    """conv(|x|, |w|): scales the sound float32 error bound (docs/contributing.rst)."""
    return conv2d_naive(np.abs(x), np.abs(w), None, stride, padding, dilation, groups)


def out_len(size, k, s, p, d):
    """Sliding-window output length, or a non-positive number when none fits."""
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def im2col_naive(x, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """torch ``unfold`` layout (N, C*KH*KW, OH*OW) by direct indexing."""
    x = np.asarray(x)
    N, C, H, W = x.shape
    KH, KW = kernel
    OH = out_len(H, KH, stride[0], padding[0], dilation[0])
    OW = out_len(W, KW, stride[1], padding[1], dilation[1])
    cols = np.zeros((N, C * KH * KW, OH * OW), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for a in range(KH):
                for b in range(KW):
                    r = (c * KH + a) * KW + b
                    for i in range(OH):
                        for j in range(OW):
                            h = i * stride[0] + a * dilation[0] - padding[0]
                            w = j * stride[1] + b * dilation[1] - padding[1]
                            if 0 <= h < H and 0 <= w < W:
                                cols[n, r, i * OW + j] = x[n, c, h, w]
    return cols


def col2im_naive(cols, size, kernel, stride=(1, 1), padding=(0, 0), dilation=(1, 1)):
    """torch ``fold``: every column entry added back to the pixel it came from."""
    cols = np.asarray(cols, dtype=np.float64)
    N, R, L = cols.shape
    H, W = size
    KH, KW = kernel
    C = R // (KH * KW)
    OH = out_len(H, KH, stride[0], padding[0], dilation[0])
    OW = out_len(W, KW, stride[1], padding[1], dilation[1])
    x = np.zeros((N, C, H, W))
    for n in range(N):
        for c in range(C):
            for a in range(KH):
                for b in range(KW):
                    r = (c * KH + a) * KW + b
                    for i in range(OH):
                        for j in range(OW):
                            h = i * stride[0] + a * dilation[0] - padding[0]
                            w = j * stride[1] + b * dilation[1] - padding[1]
                            if 0 <= h < H and 0 <= w < W:
                                x[n, c, h, w] += cols[n, r, i * OW + j]
    return x


def conv2d_backward_naive(dy, x, w, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                          groups=1):
    """(dx, dw, db) by scattering every forward product's derivative, in float64."""
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    N, C, H, W = x.shape
    K, Cg, KH, KW = w.shape
    PH, PW = padding
    xp = pad2(x, PH, PW)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    OH, OW = dy.shape[2], dy.shape[3]
    Kg = K // groups
    for n in range(N):
        for k in range(K):
            g = k // Kg
            for i in range(OH):
                for j in range(OW):
                    hs = slice(i * stride[0], i * stride[0] + dilation[0] * (KH - 1) + 1,
                               dilation[0])
                    ws = slice(j * stride[1], j * stride[1] + dilation[1] * (KW - 1) + 1,
                               dilation[1])
                    cs = slice(g * Cg, (g + 1) * Cg)
                    dxp[n, cs, hs, ws] += dy[n, k, i, j] * w[k]
                    dw[k] += dy[n, k, i, j] * xp[n, cs, hs, ws]
    dx = dxp[:, :, PH:PH + H, PW:PW + W]
    return dx, dw, dy.sum(axis=(0, 2, 3))
