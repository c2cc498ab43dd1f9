"""Resizing of feature maps (nearest and bilinear), forward and backward.

Both modes are separable: along each axis the output is a fixed linear map of
the input, ``y = A_h x A_w^T`` with ``A`` of shape (out, in) holding one 1
per row (nearest) or two weights summing to 1 (bilinear).  The backward pass
is the transpose, ``dx = A_h^T dy A_w``.  The source positions follow
PyTorch's rules, so results agree with ``torch.nn.functional.interpolate``.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from convcore._ops.layers import _xp
from convcore._validate import MAX_HYPER, as_int, batched, float_dtype

__all__ = ["interpolate", "interpolate_backward"]

_MODES = ("nearest", "bilinear")


def _scales(scale_factor):
    if isinstance(scale_factor, (tuple, list)):
        if len(scale_factor) != 2:
            raise ValueError(f"scale_factor must be a number or a pair, got {scale_factor!r}")
        vals = tuple(scale_factor)
    else:
        vals = (scale_factor, scale_factor)
    out = []
    for v in vals:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Real):
            raise TypeError(f"scale_factor must be a positive number, got "
                            f"{type(v).__name__} {v!r}")
        v = float(v)
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"scale_factor must be a positive finite number, got {v}")
        out.append(v)
    return tuple(out)


def _geometry(in_hw, size, scale_factor, mode, align_corners):
    """(out_h, out_w, scales) where scales are the user's factors or None."""
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("align_corners can only be set with mode='bilinear' "
                         f"(as PyTorch), got align_corners={align_corners!r}")
    if align_corners is not None and not isinstance(align_corners, (bool, np.bool_)):
        raise TypeError(f"align_corners must be None or a bool, got {align_corners!r}")
    if (size is None) == (scale_factor is None):
        raise ValueError("give exactly one of size and scale_factor, got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    if size is not None:
        if isinstance(size, (tuple, list)):
            if len(size) != 2:
                raise ValueError(f"size must be an int or a pair of ints, got {size!r}")
            oh, ow = (as_int(s, "size", minimum=1) for s in size)
        else:
            oh = ow = as_int(size, "size", minimum=1)
        return oh, ow, (None, None)
    sh, sw = _scales(scale_factor)
    if in_hw is None:          # arguments only (a layer's constructor)
        return None, None, (sh, sw)
    oh, ow = int(math.floor(in_hw[0] * sh)), int(math.floor(in_hw[1] * sw))
    if oh < 1 or ow < 1:
        raise ValueError(f"scale_factor {scale_factor!r} gives an empty output ({oh}, {ow}) "
                         f"for input size {tuple(in_hw)}")
    if oh > MAX_HYPER or ow > MAX_HYPER:
        raise ValueError(f"output size ({oh}, {ow}) exceeds the supported {MAX_HYPER}")
    return oh, ow, (sh, sw)


def _nearest_index(n_in, n_out, scale):
    """PyTorch's nearest rule: floor(dst * s) in float32, s = in/out or 1/scale_factor."""
    if n_out == n_in:
        return np.arange(n_out)
    s = np.float32(1.0 / scale) if scale is not None else np.float32(n_in) / np.float32(n_out)
    src = np.floor(np.arange(n_out, dtype=np.float32) * s).astype(np.int64)
    return np.minimum(src, n_in - 1)


def _linear_matrix(n_in, n_out, scale, align_corners, dtype):
    """(n_out, n_in) matrix of bilinear weights along one axis."""
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        s = (1.0 / scale) if scale is not None else n_in / n_out
        src = np.maximum((dst + 0.5) * s - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    l1 = np.clip(src - i0, 0.0, 1.0)
    A = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(A, (rows, i0), 1.0 - l1)
    np.add.at(A, (rows, i1), l1)
    return A.astype(dtype)


def _matrix(n_in, n_out, scale, mode, align_corners, dtype):
    if mode == "nearest":
        A = np.zeros((n_out, n_in), dtype=dtype)
        A[np.arange(n_out), _nearest_index(n_in, n_out, scale)] = 1
        return A
    return _linear_matrix(n_in, n_out, scale, bool(align_corners), dtype)


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize the maps of ``x`` (as ``torch.nn.functional.interpolate`` for 4-D input).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W) or (C, H, W)
    size : int or (int, int), optional
        Output size (OH, OW).
    scale_factor : float or (float, float), optional
        ``OH = floor(H * scale_factor)``; exactly one of size and scale_factor.
    mode : 'nearest' or 'bilinear'
    align_corners : bool, optional (bilinear only)
        True: the corner pixels of input and output are aligned,
        ``src = dst * (H - 1) / (OH - 1)``; False (default): pixel centres,
        ``src = (dst + 0.5) / scale - 0.5``.

    Returns
    -------
    y : ndarray, shape (N, C, OH, OW) or (C, OH, OW)

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> x = np.array([[[1., 2.]]])
    >>> cc.interpolate(x, scale_factor=2)[0]
    array([[1., 1., 2., 2.],
           [1., 1., 2., 2.]])
    >>> cc.interpolate(x, size=(1, 3), mode="bilinear", align_corners=True)[0]
    array([[1. , 1.5, 2. ]])
    """
    xp = _xp(x)
    dt = float_dtype(x, "x")
    x4, unbatched = batched(x)
    H, W = int(x4.shape[2]), int(x4.shape[3])
    if H == 0 or W == 0:
        raise ValueError(f"x must have non-zero height and width, got shape {tuple(x.shape)}")
    OH, OW, (sh, sw) = _geometry((H, W), size, scale_factor, mode, align_corners)
    if mode == "nearest":
        ih = xp.asarray(_nearest_index(H, OH, sh))
        iw = xp.asarray(_nearest_index(W, OW, sw))
        y = x4[:, :, ih[:, None], iw[None, :]]
    else:
        Ah = xp.asarray(_matrix(H, OH, sh, mode, align_corners, dt))
        Aw = xp.asarray(_matrix(W, OW, sw, mode, align_corners, dt))
        y = xp.matmul(xp.matmul(Ah, x4), Aw.T)
    y = xp.ascontiguousarray(y)
    return y[0] if unbatched else y


def interpolate_backward(grad_output, input_shape, size=None, scale_factor=None,
                         mode="nearest", align_corners=None):
    """Gradient of :func:`interpolate` with respect to its input.

    Parameters
    ----------
    grad_output : ndarray, shape of interpolate's output
    input_shape : tuple
        Shape of the input given to :func:`interpolate`.
    size, scale_factor, mode, align_corners
        As given to :func:`interpolate`.

    Returns
    -------
    grad_input : ndarray, shape `input_shape`
        ``A_h^T grad_output A_w``: each output's gradient goes back to the input
        pixels it was made of, with the same weights.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> cc.interpolate_backward(np.ones((1, 2, 4)), (1, 1, 2), scale_factor=2)
    array([[[4., 4.]]])
    """
    xp = _xp(grad_output)
    dt = float_dtype(grad_output, "grad_output")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) not in (3, 4):
        raise ValueError(f"input_shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    H, W = input_shape[-2:]
    if H == 0 or W == 0:
        raise ValueError(f"input_shape must have non-zero height and width, got {input_shape}")
    OH, OW, (sh, sw) = _geometry((H, W), size, scale_factor, mode, align_corners)
    want = input_shape[:-2] + (OH, OW)
    if tuple(grad_output.shape) != want:
        raise ValueError(f"grad_output must have shape {want} (the interpolate output), got "
                         f"{tuple(grad_output.shape)}")
    Ah = xp.asarray(_matrix(H, OH, sh, mode, align_corners, dt))
    Aw = xp.asarray(_matrix(W, OW, sw, mode, align_corners, dt))
    return xp.ascontiguousarray(xp.matmul(xp.matmul(Ah.T, grad_output), Aw))
