"""conv_transpose2d and its backward pass, composed from conv2d's own backend
functions: no kernel of its own.

conv2d maps ``z (N, C_out, H_out, W_out)`` to ``x (N, C_in, H, W)`` with a
weight ``(C_in, C_out / groups, KH, KW)``; the transposed convolution is its
adjoint, so

* its forward is conv2d's input gradient (the notes' dX: the full convolution
  of the upstream gradient with the kernel), with ``x`` in the role of dL/dy;
* its input gradient is conv2d's forward applied to ``grad_output``;
* its weight gradient is conv2d's weight gradient with ``grad_output`` as the
  input and ``x`` as dL/dy.

Every strategy of the conv core (and the CuPy path) serves both directions.
"""
from __future__ import annotations

from typing import Tuple, Union

import numpy as np

from convcore._geometry import ConvGeom
from convcore._validate import (MAX_HYPER, as_int, check_elems, check_index32, out_size, pair,
                                same_dtype)
from convcore.backends import get_backend

from convcore._ops.conv import _check_arrays

IntOrPair = Union[int, Tuple[int, int]]

__all__ = ["conv_transpose2d", "conv_transpose2d_backward"]


def _setup(x, weight, bias, stride, padding, output_padding, groups, dilation,
           name="conv_transpose2d"):
    """Validate in the transposed convolution's own terms; return
    (be, dt, x4, unbatched, geom, xpad_rows, xpad_cols, H_out, W_out)."""
    be, dt, x4, unbatched = _check_arrays(x, weight, bias,
                                          "in_channels, out_channels/groups, kH, kW")
    if isinstance(padding, str):
        raise ValueError(f"{name}: padding must be an int or a pair of ints (no 'same' or "
                         f"'valid' for a transposed convolution), got {padding!r}")
    groups = as_int(groups, "groups", minimum=1)
    SH, SW = pair(stride, "stride")
    PH, PW = pair(padding, "padding", minimum=0)
    DH, DW = pair(dilation, "dilation")
    OPH, OPW = pair(output_padding, "output_padding", minimum=0)
    N, C, H, W = (int(s) for s in x4.shape)
    Cw, Kg, KH, KW = (int(s) for s in weight.shape)
    if Cw == 0 or Kg == 0 or KH == 0 or KW == 0:
        raise ValueError(f"weight must have non-zero sizes, got shape {tuple(weight.shape)}")
    if C == 0 or H == 0 or W == 0:
        raise ValueError(f"x must have non-zero channels, height and width, got shape "
                         f"{tuple(x.shape)}")
    if Cw != C:
        raise ValueError(f"weight expects {Cw} input channels (shape {tuple(weight.shape)}: "
                         f"(in_channels, out_channels/groups, kH, kW)), but x has {C} "
                         f"(shape {tuple(x.shape)})")
    if C % groups:
        raise ValueError(f"in_channels ({C}) must be divisible by groups ({groups})")
    K = Kg * groups
    for op, s, d, what in ((OPH, SH, DH, "height"), (OPW, SW, DW, "width")):
        if op >= s and op >= d:
            raise ValueError(f"output_padding ({op}, {what}) must be smaller than either "
                             f"stride ({s}) or dilation ({d})")
    if bias is not None and tuple(bias.shape) != (K,):
        raise ValueError(f"bias must have shape ({K},) (out_channels), got "
                         f"{tuple(bias.shape)}")
    HO = (H - 1) * SH - 2 * PH + DH * (KH - 1) + OPH + 1
    WO = (W - 1) * SW - 2 * PW + DW * (KW - 1) + OPW + 1
    if HO <= 0 or WO <= 0:
        raise ValueError(f"{name}: output size ({HO}, {WO}) is not positive for input "
                         f"({H}, {W}), kernel ({KH}, {KW}), stride ({SH}, {SW}), padding "
                         f"({PH}, {PW}), dilation ({DH}, {DW}), output_padding ({OPH}, {OPW})")
    if HO > MAX_HYPER or WO > MAX_HYPER:
        raise ValueError(f"{name}: output size ({HO}, {WO}) exceeds the supported {MAX_HYPER}")
    # The conv2d whose adjoint this is: input (N, K, HO, WO), output (N, C, OH, OW).
    # OH = H unless output_padding >= stride (allowed when smaller than the
    # dilation): then conv2d has extra output rows, which x fills with zeros.
    OH = out_size(HO, KH, SH, PH, DH, f"{name} height")
    OW = out_size(WO, KW, SW, PW, DW, f"{name} width")
    check_elems((N, K, HO, WO), f"{name} output")
    check_elems((K, KH, KW, OH, OW), f"{name} column matrix of one image")
    check_index32(name, **{"H_out*W_out": HO * WO, "H*W": OH * OW,
                           "C_out*KH*KW": K * KH * KW, "in_channels": C})
    geom = ConvGeom(N, K, HO, WO, C, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, groups)
    return be, dt, x4, unbatched, geom, OH - H, OW - W, HO, WO


def _pad_end(be, a, rows, cols):
    if rows == 0 and cols == 0:
        return a
    return be.xp.pad(a, ((0, 0), (0, 0), (0, rows), (0, cols)))


def conv_transpose2d(x, weight, bias=None, stride: IntOrPair = 1, padding: IntOrPair = 0,
                     output_padding: IntOrPair = 0, groups: int = 1, dilation: IntOrPair = 1):
    """2-D transposed convolution (the adjoint of :func:`conv2d`), as
    ``torch.nn.functional.conv_transpose2d``.

    Parameters
    ----------
    x : ndarray, shape (N, C_in, H, W) or (C_in, H, W)
        Input, float32 or float64, any strides.
    weight : ndarray, shape (C_in, C_out / groups, KH, KW)
        Kernels in PyTorch's layout for transposed convolutions.
    bias : ndarray, shape (C_out,), optional
    stride, padding, dilation : int or (int, int)
        Those of the convolution whose adjoint this is: ``padding`` removes
        ``dilation * (k - 1) - padding`` ... rows from each side of the full
        output.
    output_padding : int or (int, int)
        Rows/columns added at the bottom/right of the output, to pick one of
        the input sizes that a strided conv2d maps to the same output size;
        must be smaller than the stride or the dilation.
    groups : int

    Returns
    -------
    y : ndarray, shape (N, C_out, H_out, W_out) or (C_out, H_out, W_out)

    Notes
    -----
    ``H_out = (H - 1)*SH - 2*PH + DH*(KH - 1) + OPH + 1`` (likewise W_out).
    ``y`` is conv2d's input gradient for the upstream gradient ``x``:
    ``<conv2d(z, w), x> = <z, conv_transpose2d(x, w)>`` for every ``z`` of
    shape ``y``.

    Examples
    --------
    Each input pixel stamps a copy of the kernel, ``stride`` apart:

    >>> import numpy as np, convcore as cc
    >>> x = np.array([[[1., 2.]]])                  # (C_in=1, H=1, W=2)
    >>> w = np.ones((1, 1, 2, 2))
    >>> cc.conv_transpose2d(x, w, stride=1)[0]
    array([[1., 3., 2.],
           [1., 3., 2.]])
    """
    be, dt, x4, unbatched, geom, er, ec, HO, WO = _setup(x, weight, bias, stride, padding,
                                                         output_padding, groups, dilation)
    N, K = geom.N, geom.C
    y = be.empty((N, K, HO, WO), dt)
    if N > 0:
        be.conv2d_backward_input(be.ascontiguous(_pad_end(be, x4, er, ec)),
                                 be.ascontiguous(weight), y, geom)
        if bias is not None:
            y += bias.reshape(1, K, 1, 1)
    return y[0] if unbatched else y


def conv_transpose2d_backward(grad_output, x, weight, stride: IntOrPair = 1,
                              padding: IntOrPair = 0, output_padding: IntOrPair = 0,
                              groups: int = 1, dilation: IntOrPair = 1,
                              output_mask: Tuple[bool, bool, bool] = (True, True, True)):
    """Gradients of :func:`conv_transpose2d` with respect to input, weight and bias.

    Parameters
    ----------
    grad_output : ndarray, shape of conv_transpose2d's output
    x, weight, stride, padding, output_padding, groups, dilation
        As given to :func:`conv_transpose2d`.
    output_mask : (bool, bool, bool)
        Which of (grad_input, grad_weight, grad_bias) to compute; the others
        are None.

    Returns
    -------
    grad_input : ndarray, shape of `x`
        ``conv2d(grad_output, weight)`` (the forward convolution).
    grad_weight : ndarray, shape of `weight`
        conv2d's weight gradient with ``grad_output`` as its input and ``x`` as
        its upstream gradient.
    grad_bias : ndarray, shape (C_out,)
        ``grad_output`` summed over batch and positions.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> x, w = np.ones((1, 1, 2, 2)), np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = cc.conv_transpose2d_backward(np.ones((1, 1, 3, 3)), x, w)
    >>> gx[0, 0], gb
    (array([[4., 4.],
           [4., 4.]]), array([9.]))
    """
    be, dt, x4, unbatched, geom, er, ec, HO, WO = _setup(
        x, weight, None, stride, padding, output_padding, groups, dilation,
        name="conv_transpose2d_backward")
    if grad_output is None:
        raise TypeError("grad_output must be an array, got None")
    get_backend(x, grad_output)
    same_dtype(x, "x", grad_output, "grad_output")
    N, C, K = geom.N, int(x4.shape[1]), geom.C
    H, W = int(x4.shape[2]), int(x4.shape[3])
    want = (K, HO, WO) if unbatched else (N, K, HO, WO)
    if tuple(grad_output.shape) != want:
        raise ValueError(f"grad_output must have shape {want} (the conv_transpose2d output), "
                         f"got {tuple(grad_output.shape)}")
    if (not isinstance(output_mask, (tuple, list)) or len(output_mask) != 3
            or not all(isinstance(m, (bool, np.bool_)) for m in output_mask)):
        raise TypeError(f"output_mask must be three bools, got {output_mask!r}")
    want_dx, want_dw, want_db = (bool(m) for m in output_mask)
    g4 = grad_output[None] if unbatched else grad_output
    gx = gw = gb = None
    if want_dx:
        OH, OW = geom.OH, geom.OW
        out = be.empty((N, C, OH, OW), dt)
        if N > 0:
            be.conv2d_forward(be.ascontiguous(g4), be.ascontiguous(weight), None, out, geom)
        gx = out[:, :, :H, :W] if (er or ec) else out
        if unbatched:
            gx = gx[0]
    if want_dw:
        gw = be.empty(tuple(weight.shape), dt)
        if N > 0:
            be.conv2d_backward(be.ascontiguous(_pad_end(be, x4, er, ec)), be.ascontiguous(g4),
                               be.ascontiguous(weight), None, gw, None, geom)
        else:
            gw.fill(0)
    if want_db:
        gb = g4.sum(axis=(0, 2, 3), dtype=np.float64).astype(dt)
    return gx, gw, gb
