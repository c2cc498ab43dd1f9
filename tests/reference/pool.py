"""Independent pooling references for the tests: plain loops, written from the
definitions (PyTorch's documented semantics), sharing no code with convcore.
"""
import math

import numpy as np


def pool_out(size, k, s, p, d, ceil_mode):
    """PyTorch's output length: floor or ceil of (size + 2p - d(k-1) - 1)/s, plus one,
    and with ceil_mode no window may start in the right/bottom padding."""
    num = size + 2 * p - d * (k - 1) - 1
    o = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (o - 1) * s >= size + p:
        o -= 1
    return o


def max_pool_naive(x, k, s, p, d, ceil_mode):
    """(y, idx): row-major scan of every window's taps that fall inside the input,
    taking a tap when it is larger than the running max or NaN."""
    N, C, H, W = x.shape
    OH = pool_out(H, k[0], s[0], p[0], d[0], ceil_mode)
    OW = pool_out(W, k[1], s[1], p[1], d[1], ceil_mode)
    y = np.empty((N, C, OH, OW), x.dtype)
    idx = np.empty((N, C, OH, OW), np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(OH):
                for j in range(OW):
                    taps = [(i * s[0] - p[0] + a * d[0], j * s[1] - p[1] + b * d[1])
                            for a in range(k[0]) for b in range(k[1])]
                    taps = [(h, w) for h, w in taps if 0 <= h < H and 0 <= w < W]
                    assert taps, "window of padding only"
                    best, where = -math.inf, taps[0][0] * W + taps[0][1]
                    for h, w in taps:
                        v = x[n, c, h, w]
                        if v > best or v != v:
                            best, where = v, h * W + w
                    y[n, c, i, j] = best
                    idx[n, c, i, j] = where
    return y, idx


def max_pool_backward_naive(dy, idx, shape):
    """Each upstream gradient added, in output order, to the input its index names."""
    dx = np.zeros(shape, dy.dtype)
    N, C, H, W = shape
    for n in range(N):
        for c in range(C):
            plane = dx[n, c].reshape(-1)
            for o, t in zip(dy[n, c].reshape(-1), idx[n, c].reshape(-1)):
                plane[t] += o
    return dx


def avg_windows(H, W, k, s, p, ceil_mode, count_include_pad, divisor_override):
    """[(i, j, rows, cols, divisor)] for every output of an average pooling."""
    OH = pool_out(H, k[0], s[0], p[0], 1, ceil_mode)
    OW = pool_out(W, k[1], s[1], p[1], 1, ceil_mode)
    out = []
    for i in range(OH):
        h0 = i * s[0] - p[0]
        h1 = min(h0 + k[0], H + p[0])          # the overhang past the padding never counts
        for j in range(OW):
            w0 = j * s[1] - p[1]
            w1 = min(w0 + k[1], W + p[1])
            rows = range(max(h0, 0), min(h1, H))
            cols = range(max(w0, 0), min(w1, W))
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = (h1 - h0) * (w1 - w0)
            else:
                div = len(rows) * len(cols)
            out.append((i, j, rows, cols, div))
    return OH, OW, out


def avg_pool_naive(x, k, s, p, ceil_mode=False, count_include_pad=True,
                   divisor_override=None):
    """Average pooling in float64."""
    N, C, H, W = x.shape
    OH, OW, wins = avg_windows(H, W, k, s, p, ceil_mode, count_include_pad,
                               divisor_override)
    x = np.asarray(x, np.float64)
    y = np.zeros((N, C, OH, OW))
    for i, j, rows, cols, div in wins:
        if len(rows) and len(cols):
            y[:, :, i, j] = x[:, :, rows.start:rows.stop, cols.start:cols.stop].sum(
                axis=(2, 3)) / div
    return y


def avg_pool_backward_naive(dy, shape, k, s, p, ceil_mode=False, count_include_pad=True,
                            divisor_override=None):
    N, C, H, W = shape
    _, _, wins = avg_windows(H, W, k, s, p, ceil_mode, count_include_pad, divisor_override)
    dy = np.asarray(dy, np.float64)
    dx = np.zeros(shape)
    for i, j, rows, cols, div in wins:
        if len(rows) and len(cols):
            dx[:, :, rows.start:rows.stop, cols.start:cols.stop] += \
                dy[:, :, i, j][:, :, None, None] / div
    return dx


def adaptive_bounds(size, out):
    return [(i * size // out, -(-(i + 1) * size // out)) for i in range(out)]


def adaptive_avg_naive(x, OH, OW):
    N, C, H, W = x.shape
    x = np.asarray(x, np.float64)
    y = np.zeros((N, C, OH, OW))
    for i, (h0, h1) in enumerate(adaptive_bounds(H, OH)):
        for j, (w0, w1) in enumerate(adaptive_bounds(W, OW)):
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def adaptive_avg_backward_naive(dy, shape):
    N, C, H, W = shape
    OH, OW = dy.shape[2:]
    dy = np.asarray(dy, np.float64)
    dx = np.zeros(shape)
    for i, (h0, h1) in enumerate(adaptive_bounds(H, OH)):
        for j, (w0, w1) in enumerate(adaptive_bounds(W, OW)):
            dx[:, :, h0:h1, w0:w1] += dy[:, :, i, j][:, :, None, None] / ((h1 - h0) * (w1 - w0))
    return dx
