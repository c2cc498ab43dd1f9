"""conv2d, its backward pass, im2col and col2im."""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from convcore._geometry import ConvGeom
from convcore._validate import (as_int, batched, check_elems, check_index32, float_dtype,
                                out_size, pair, same_dtype)
from convcore.backends import get_backend

IntOrPair = Union[int, Tuple[int, int]]
Padding = Union[int, Tuple[int, int], str]


def _padding(padding, kernel, dilation, stride):
    """((ph, pw), extra) where extra = (bottom, right) zeros needed beyond the
    symmetric padding (only for 'same' with an even effective kernel)."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"padding='same' needs stride 1, got stride {stride}")
            sym, extra = [], []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                sym.append(total // 2)
                extra.append(total - 2 * (total // 2))
            return tuple(sym), tuple(extra)
        raise ValueError(f"padding must be an int, a pair, 'valid' or 'same', got {padding!r}")
    return pair(padding, "padding", minimum=0), (0, 0)


def _plain(v) -> bool:
    """An int, a str or a tuple of ints (bools excluded): safe as a memo key."""
    t = type(v)
    return t is int or t is str or (t is tuple and all(type(e) is int for e in v))


# Validated geometries of recent calls, keyed by everything the checks look
# at: array types, shapes and dtypes, and the plain hyper-parameters.  A
# network calls the same few shapes again and again; the checks are pure
# functions of the key, so a hit needs none of them.  Errors are not stored.
_setup_memo: dict = {}


def _conv_setup(x, weight, bias, stride, padding, dilation, groups):
    key = None
    if _plain(stride) and _plain(padding) and _plain(dilation) and type(groups) is int:
        try:
            key = (type(x), x.shape, x.dtype, type(weight), weight.shape, weight.dtype,
                   None if bias is None else (type(bias), bias.shape, bias.dtype),
                   stride, padding, dilation, groups)
        except AttributeError:   # not arrays: the checks below say so
            key = None
        hit = _setup_memo.get(key) if key is not None else None
        if hit is not None:
            be, dt, unbatched, geom = hit
            return be, dt, (x[None] if unbatched else x), unbatched, (0, 0), geom
    out = _conv_setup_checked(x, weight, bias, stride, padding, dilation, groups)
    if key is not None and out[4] == (0, 0):
        if len(_setup_memo) >= 256:
            _setup_memo.clear()
        _setup_memo[key] = (out[0], out[1], out[3], out[5])
    return out


def _check_arrays(x, weight, bias, layout):
    """The checks a convolution and a transposed convolution share: the
    backend, float dtypes, a 4-D weight of ``layout``.  Returns (be, dt, x4,
    unbatched)."""
    be = get_backend(x, weight, bias)
    dt = float_dtype(x, "x")
    if weight is None:
        raise TypeError("weight must be an array, got None")
    same_dtype(x, "x", weight, "weight")
    same_dtype(x, "x", bias, "bias")
    x4, unbatched = batched(x)
    if weight.ndim != 4:
        raise ValueError(f"weight must be 4-D ({layout}), got shape {tuple(weight.shape)}")
    return be, dt, x4, unbatched


def _conv_setup_checked(x, weight, bias, stride, padding, dilation, groups):
    be, dt, x4, unbatched = _check_arrays(x, weight, bias,
                                          "out_channels, in_channels/groups, kH, kW")
    groups = as_int(groups, "groups", minimum=1)
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    N, C, H, W = (int(s) for s in x4.shape)
    K, Cg, KH, KW = (int(s) for s in weight.shape)
    if K == 0 or Cg == 0 or KH == 0 or KW == 0:
        raise ValueError(f"weight must have non-zero sizes, got shape {tuple(weight.shape)}")
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"x must have non-zero channels, height and width, got shape "
                         f"{tuple(x.shape)}")
    if C % groups:
        raise ValueError(f"in_channels ({C}) must be divisible by groups ({groups})")
    if K % groups:
        raise ValueError(f"out_channels ({K}) must be divisible by groups ({groups})")
    if Cg * groups != C:
        raise ValueError(f"weight expects {Cg * groups} input channels "
                         f"(shape {tuple(weight.shape)}, groups={groups}), but x has {C} "
                         f"(shape {tuple(x.shape)})")
    if bias is not None and tuple(bias.shape) != (K,):
        raise ValueError(f"bias must have shape ({K},), got {tuple(bias.shape)}")
    (PH, PW), extra = _padding(padding, (KH, KW), dilation, stride)
    if extra != (0, 0):
        # 'same' with an even effective kernel pads one more row/column at the
        # bottom/right, as PyTorch does.
        xp_ = be.xp
        x4 = xp_.pad(x4, ((0, 0), (0, 0), (0, extra[0]), (0, extra[1])))
        H, W = H + extra[0], W + extra[1]
    OH = out_size(H, KH, stride[0], PH, dilation[0], "conv2d height")
    OW = out_size(W, KW, stride[1], PW, dilation[1], "conv2d width")
    check_elems((N, K, OH, OW), "conv2d output")
    check_elems((C, KH, KW, OH, OW), "conv2d column matrix of one image")
    check_index32("conv2d", **{"H*W": H * W, "OH*OW": OH * OW, "C*KH*KW": C * KH * KW,
                               "out_channels": K})
    geom = ConvGeom(N, C, H, W, K, KH, KW, stride[0], stride[1], PH, PW,
                    dilation[0], dilation[1], OH, OW, groups)
    return be, dt, x4, unbatched, extra, geom


def conv2d(x, weight, bias=None, stride: IntOrPair = 1, padding: Padding = 0,
           dilation: IntOrPair = 1, groups: int = 1):
    r"""2-D convolution (cross-correlation) of a batch of images.

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
        Input images, float32 or float64, any strides.
    weight : ndarray, shape (K, C / groups, KH, KW)
        Kernels, same dtype as `x`.
    bias : ndarray, shape (K,), optional
        Added to every output position of each channel.
    stride, dilation : int or (int, int)
        Step between windows and between kernel taps.
    padding : int, (int, int), 'valid' or 'same'
        Zeros added on each side; 'same' keeps the size (needs stride 1).
    groups : int
        Input and output channels split into this many independent groups.

    Returns
    -------
    y : ndarray, shape (N, K, OH, OW) or (K, OH, OW)

    Notes
    -----
    With ``xpad`` the zero-padded input and :math:`g(k)` the group of kernel
    :math:`k` (:math:`G` = `groups`),

    .. math::

        y[n, k, i, j] &= \mathrm{bias}[k] + \sum_{c, a, b} \mathrm{weight}[k, c, a, b]
        \, x_\mathrm{pad}[n,\ g(k) C / G + c,\ i S_H + a D_H,\ j S_W + b D_W],

        O_H &= \left\lfloor \frac{H + 2 P_H - D_H (K_H - 1) - 1}{S_H} \right\rfloor + 1

    (likewise :math:`O_W`).

    Examples
    --------
    The worked example of the notes: a 3x3 patch against a Sobel kernel.

    >>> import numpy as np, convcore as cc
    >>> patch = np.array([[200, 150, 150], [100, 50, 100], [25, 25, 10]], float)
    >>> sobel = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], float)
    >>> cc.conv2d(patch[None, None], sobel[None, None]).item()
    65.0
    """
    be, dt, x4, unbatched, extra, geom = _conv_setup(x, weight, bias, stride, padding,
                                                     dilation, groups)
    return _conv2d_run(be, dt, x4, unbatched, geom, weight, bias)


def _conv2d_run(be, dt, x4, unbatched, geom, weight, bias):
    """conv2d's call into the backend, after _conv_setup."""
    N = geom.N
    y = be.empty((N, geom.K, geom.OH, geom.OW), dt)
    if N > 0:
        asc = be.ascontiguous
        be.conv2d_forward(asc(x4), asc(weight), None if bias is None else asc(bias), y, geom)
    return y[0] if unbatched else y


def _conv2d_packed(x, weight, bias, packs, stride=1, padding=0, dilation=1, groups=1):
    """``conv2d(x, weight, bias, ...)`` from weights packed once where the
    backend has a packed form that runs this call faster (WINOGRAD's
    transformed weights, whose output is the bits AUTO's WINOGRAD gives, or
    a GEMM kernel's layout: see ``cc_conv_pack_elems``), else conv2d itself.
    `packs` (a dict) keeps the packed forms; its owner empties it whenever
    the weights may have changed."""
    be, dt, x4, unbatched, extra, geom = _conv_setup(x, weight, bias, stride, padding,
                                                     dilation, groups)
    packable = getattr(be, "conv2d_packable", None)
    n, kind = packable(geom, dt) if packable and extra == (0, 0) and geom.N > 0 else (0, 0)
    if not n:
        return _conv2d_run(be, dt, x4, unbatched, geom, weight, bias)
    asc = be.ascontiguous
    w = asc(weight)
    key = (kind, tuple(weight.shape), dt)
    packed = packs.get(key)
    if packed is None or packed.size != n:
        packed = packs[key] = be.conv2d_pack(w, geom, n)
    y = be.empty((geom.N, geom.K, geom.OH, geom.OW), dt)
    be.conv2d_forward_packed(asc(x4), w, packed, None if bias is None else asc(bias), y, geom,
                             kind)
    return y[0] if unbatched else y


def _conv2d_relu_maxpool2(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """``max_pool2d(relu(conv2d(x, weight, bias, ...)), 2, 2)`` in one pass
    where the backend has it for this geometry (the same bits as the three
    calls), else None: the caller then runs them."""
    be, dt, x4, unbatched, extra, geom = _conv_setup(x, weight, bias, stride, padding,
                                                     dilation, groups)
    fused = getattr(be, "conv2d_relu_maxpool2", None)
    if fused is None or extra != (0, 0) or geom.N == 0:
        return None
    asc = be.ascontiguous
    y = fused(asc(x4), asc(weight), None if bias is None else asc(bias), geom)
    if y is None:
        return None
    return y[0] if unbatched else y


def conv2d_backward(grad_output, x, weight, stride: IntOrPair = 1, padding: Padding = 0,
                    dilation: IntOrPair = 1, groups: int = 1,
                    output_mask: Tuple[bool, bool, bool] = (True, True, True)):
    """Gradients of :func:`conv2d` with respect to its input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, shape of conv2d's output
        Upstream gradient dL/dy.
    x, weight, stride, padding, dilation, groups
        As given to :func:`conv2d`.
    output_mask : (bool, bool, bool)
        Which of (grad_input, grad_weight, grad_bias) to compute; the others
        are returned as None and cost nothing (a network's first layer needs
        no grad_input).

    Returns
    -------
    grad_input : ndarray, shape of `x`
        Full convolution of dL/dy with the kernel (cross-correlation with the
        flipped kernel).
    grad_weight : ndarray, shape of `weight`
        Cross-correlation of the input with dL/dy.
    grad_bias : ndarray, shape (K,)
        dL/dy summed over batch and positions.

    Notes
    -----
    Every gradient element is reduced in an order fixed by the shapes, so the
    results are identical for every thread count and repeat.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> w = np.ones((1, 1, 3, 3))
    >>> gx, gw, gb = cc.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 2., 1.],
           [2., 4., 4., 2.],
           [2., 4., 4., 2.],
           [1., 2., 2., 1.]])
    >>> gb
    array([4.])
    """
    be, dt, x4, unbatched, extra, geom = _conv_setup(x, weight, None, stride, padding,
                                                     dilation, groups)
    if grad_output is None:
        raise TypeError("grad_output must be an array, got None")
    get_backend(x, grad_output)
    same_dtype(x, "x", grad_output, "grad_output")
    N, C, H, W, K, OH, OW = geom.N, geom.C, geom.H, geom.W, geom.K, geom.OH, geom.OW
    want = (K, OH, OW) if unbatched else (N, K, OH, OW)
    if tuple(grad_output.shape) != want:
        raise ValueError(f"grad_output must have shape {want} (the conv2d output), got "
                         f"{tuple(grad_output.shape)}")
    if (not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3
            or not all(isinstance(m, (bool, np.bool_)) for m in output_mask)):
        raise TypeError(f"output_mask must be three bools, got {output_mask!r}")
    want_dx, want_dw, want_db = (bool(m) for m in output_mask)
    dy = grad_output[None] if unbatched else grad_output
    dx = be.empty((N, C, H, W), dt) if want_dx else None
    dw = be.empty(tuple(weight.shape), dt) if want_dw else None
    db = be.empty((K,), dt) if want_db else None
    if want_dx or want_dw or want_db:
        asc = be.ascontiguous
        be.conv2d_backward(asc(dy), asc(x4), asc(weight), dx, dw, db, geom)
    if dx is not None:
        if extra != (0, 0):
            dx = dx[:, :, :H - extra[0], :W - extra[1]]
        if unbatched:
            dx = dx[0]
    return dx, dw, db


def _unfold_geom(N, C, H, W, kernel_size, stride, padding, dilation):
    (KH, KW) = pair(kernel_size, "kernel_size")
    stride = pair(stride, "stride")
    dilation = pair(dilation, "dilation")
    PH, PW = pair(padding, "padding", minimum=0)
    OH = out_size(H, KH, stride[0], PH, dilation[0], "im2col height")
    OW = out_size(W, KW, stride[1], PW, dilation[1], "im2col width")
    check_elems((N, C, KH, KW, OH, OW), "column matrix")
    check_index32("im2col/col2im", **{"H*W": H * W, "OH*OW": OH * OW,
                                      "C*KH*KW": C * KH * KW})
    return ConvGeom(N, C, H, W, 1, KH, KW, stride[0], stride[1], PH, PW,
                    dilation[0], dilation[1], OH, OW, 1)


def im2col(x, kernel_size: IntOrPair, stride: IntOrPair = 1, padding: IntOrPair = 0,
           dilation: IntOrPair = 1):
    """Sliding windows of `x` as columns (PyTorch's ``unfold`` layout).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    kernel_size, stride, padding, dilation : int or (int, int)

    Returns
    -------
    cols : ndarray, shape (N, C*KH*KW, OH*OW) or (C*KH*KW, OH*OW)
        Row ``(c*KH + a)*KW + b``, column ``i*OW + j`` holds
        ``xpad[c, i*SH + a*DH, j*SW + b*DW]``.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.im2col(np.arange(9.0).reshape(1, 3, 3), 2)
    array([[0., 1., 3., 4.],
           [1., 2., 4., 5.],
           [3., 4., 6., 7.],
           [4., 5., 7., 8.]])
    """
    be = get_backend(x)
    dt = float_dtype(x, "x")
    x4, unbatched = batched(x)
    N, C, H, W = (int(s) for s in x4.shape)
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"x must have non-zero channels, height and width, got shape "
                         f"{tuple(x.shape)}")
    geom = _unfold_geom(N, C, H, W, kernel_size, stride, padding, dilation)
    cols = be.empty((N, C * geom.KH * geom.KW, geom.OH * geom.OW), dt)
    if N > 0:
        be.im2col(be.ascontiguous(x4), cols, geom)
    return cols[0] if unbatched else cols


def col2im(cols, output_size: IntOrPair, kernel_size: IntOrPair, stride: IntOrPair = 1,
           padding: IntOrPair = 0, dilation: IntOrPair = 1):
    """Sum columns back into images (PyTorch's ``fold``); the adjoint of :func:`im2col`.

    Parameters
    ----------
    cols : ndarray, shape (N, C*KH*KW, L) or (C*KH*KW, L)
    output_size : int or (int, int)
        The image size (H, W).
    kernel_size, stride, padding, dilation : int or (int, int)

    Returns
    -------
    x : ndarray, shape (N, C, H, W) or (C, H, W)

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.col2im(np.ones((4, 4)), 3, 2)
    array([[[1., 2., 1.],
            [2., 4., 2.],
            [1., 2., 1.]]])
    """
    be = get_backend(cols)
    dt = float_dtype(cols, "cols")
    if cols.ndim == 2:
        cols3, unbatched = cols[None], True
    elif cols.ndim == 3:
        cols3, unbatched = cols, False
    else:
        raise ValueError(f"cols must be 2-D (C*KH*KW, L) or 3-D (N, C*KH*KW, L), got shape "
                         f"{tuple(cols.shape)}")
    H, W = pair(output_size, "output_size")
    KH, KW = pair(kernel_size, "kernel_size")
    N, R, L = (int(s) for s in cols3.shape)
    if R == 0 or R % (KH * KW):
        raise ValueError(f"cols.shape[-2] must be a positive multiple of kernel_size "
                         f"product {KH * KW}, got {R}")
    C = R // (KH * KW)
    geom = _unfold_geom(N, C, H, W, (KH, KW), stride, padding, dilation)
    OH, OW = geom.OH, geom.OW
    if L != OH * OW:
        raise ValueError(f"cols.shape[-1] must be {OH * OW} (= {OH}x{OW} windows for "
                         f"output_size {(H, W)}), got {L}")
    check_elems((N, C, H, W), "col2im output")
    x = be.empty((N, C, H, W), dt)
    if N > 0:
        be.col2im(be.ascontiguous(cols3), x, geom)
    return x[0] if unbatched else x
