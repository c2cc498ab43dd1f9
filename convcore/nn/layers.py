"""The layers: each forward is a call into the functional API, each backward
its mirror."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from convcore import _grad
from convcore import functional as F
from convcore._ops.conv import _conv2d_relu_maxpool2, _padding
from convcore._ops.layers import _batch_norm, _batch_norm_backward, linear_backward_accumulate
from convcore._ops.pool import _max_pool2d_compact
from convcore._rng import as_rng
from convcore._validate import as_float, as_int, flag, float_dtype, out_size, pair
from convcore.backends import get_backend
from convcore.nn.init import kaiming_uniform
from convcore.nn.module import Module, Parameter, _not_ready

__all__ = ["Conv2d", "Linear", "ReLU", "Flatten", "Dropout", "BatchNorm2d", "LocalResponseNorm",
           "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "Sequential"]


def _dtype(dtype):
    dt = np.dtype(np.float32 if dtype is None else dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _prod(shape):
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _spatial(input_shape, name):
    if len(input_shape) not in (3, 4):
        raise ValueError(f"{name} expects a 3-D (C, H, W) or 4-D (N, C, H, W) input, got "
                         f"shape {tuple(input_shape)}")
    return tuple(input_shape[:-2]), int(input_shape[-2]), int(input_shape[-1])


class Conv2d(Module):
    """2-D convolution layer (arguments and defaults as ``torch.nn.Conv2d``).

    Weights ``(out_channels, in_channels // groups, kH, kW)`` and bias are drawn
    from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), ``fan_in = in_channels // groups
    * kH * kW``, from ``rng`` (None, a seed or a ``numpy.random.Generator``).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> conv = nn.Conv2d(3, 8, 3, padding=1, rng=0)
    >>> conv(np.zeros((2, 3, 5, 5), np.float32)).shape
    (2, 8, 5, 5)
    """

    _saved_state = ("_x",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", dtype=None, rng=None):
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        self.groups = as_int(groups, "groups", minimum=1)
        if isinstance(padding, str):
            _padding(padding, self.kernel_size, self.dilation, self.stride)
            self.padding = padding
        else:
            self.padding = pair(padding, "padding", minimum=0)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros', got {padding_mode!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({self.in_channels}) and out_channels "
                             f"({self.out_channels}) must be divisible by groups ({self.groups})")
        has_bias = flag(bias, "bias")
        dt = _dtype(dtype)
        rng = as_rng(rng)
        cg = self.in_channels // self.groups
        fan_in = cg * self.kernel_size[0] * self.kernel_size[1]
        self.weight = kaiming_uniform(rng, (self.out_channels, cg) + self.kernel_size, fan_in, dt)
        self.bias = kaiming_uniform(rng, (self.out_channels,), fan_in, dt) if has_bias else None
        #: Whether :meth:`backward` computes the gradient with respect to the
        #: input.  A network's first layer does not need it in training (its
        #: input is the data): ``False`` skips that work and makes
        #: :meth:`backward` return ``None``.
        self.needs_input_grad = True
        self._x = None

    def _args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation,
                    groups=self.groups)

    def forward(self, x):
        fold = self._fold
        if fold is not None and fold.active():
            y = fold.conv_forward(F, x)
        else:
            y = F.conv2d(x, self.weight.data, None if self.bias is None else self.bias.data,
                         **self._args())
        self._x = x
        return y

    def backward(self, grad_output):
        if self._x is None:
            raise _not_ready(self)
        mask = (bool(self.needs_input_grad), True, self.bias is not None)
        gx, gw, gb = F.conv2d_backward(grad_output, self._x, self.weight.data,
                                       output_mask=mask, **self._args())
        self.weight._accumulate(gw)
        if self.bias is not None:
            self.bias._accumulate(gb)
        return gx

    def output_shape(self, input_shape):
        lead, H, W = _spatial(input_shape, "Conv2d")
        (ph, pw), extra = _padding(self.padding, self.kernel_size, self.dilation, self.stride)
        oh = out_size(H + extra[0], self.kernel_size[0], self.stride[0], ph, self.dilation[0],
                      "Conv2d height")
        ow = out_size(W + extra[1], self.kernel_size[1], self.stride[1], pw, self.dilation[1],
                      "Conv2d width")
        return lead[:-1] + (self.out_channels, oh, ow)

    def macs(self, input_shape, output_shape):
        per = (self.in_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        return _prod(output_shape) * per

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class Linear(Module):
    """Fully connected layer ``y = x W^T + b`` (as ``torch.nn.Linear``).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> nn.Linear(4, 2, rng=0)(np.ones((3, 4), np.float32)).shape
    (3, 2)
    """

    _saved_state = ("_x",)

    def __init__(self, in_features, out_features, bias=True, dtype=None, rng=None):
        super().__init__()
        self.in_features = as_int(in_features, "in_features", minimum=1)
        self.out_features = as_int(out_features, "out_features", minimum=1)
        has_bias = flag(bias, "bias")
        dt = _dtype(dtype)
        rng = as_rng(rng)
        self.weight = kaiming_uniform(rng, (self.out_features, self.in_features),
                                      self.in_features, dt)
        self.bias = kaiming_uniform(rng, (self.out_features,), self.in_features, dt) \
            if has_bias else None
        self._x = None

    def forward(self, x):
        y = F.linear(x, self.weight.data, None if self.bias is None else self.bias.data)
        self._x = x
        return y

    def backward(self, grad_output):
        if self._x is None:
            raise _not_ready(self)
        if not self.weight._has_grad() and (self.bias is None or not self.bias._has_grad()):
            # no gradient held (after zero_grad): dW and db written afresh
            gx, gw, gb = F.linear_backward(grad_output, self._x, self.weight.data)
            self.weight._accumulate(gw)
            if self.bias is not None:
                self.bias._accumulate(gb)
            return gx
        # dW and db added into .grad in place: no parameter-sized temporary
        return linear_backward_accumulate(
            grad_output, self._x, self.weight.data, self.weight.grad,
            None if self.bias is None else self.bias.grad)

    def output_shape(self, input_shape):
        if not input_shape or input_shape[-1] != self.in_features:
            raise ValueError(f"Linear expects last dimension {self.in_features}, got shape "
                             f"{tuple(input_shape)}")
        return tuple(input_shape[:-1]) + (self.out_features,)

    def macs(self, input_shape, output_shape):
        return _prod(output_shape) * self.in_features

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ReLU(Module):
    """``max(x, 0)`` (as ``torch.nn.ReLU``).

    With ``inplace=True`` the input array is overwritten with the output and
    returned (no new array; the backward pass needs only the output's sign),
    as in PyTorch: the caller must not need the input afterwards.  In eval
    mode a ReLU directly after a convolution runs inside it
    (:mod:`convcore.nn.fold`).
    """

    #: Set by a :class:`Sequential` when the next module keeps nothing of
    #: this ReLU's output (a pooling layer): the backward pass needs only the
    #: output's sign, then kept as a bool mask (a quarter of a float32
    #: output) instead of the output itself.
    _mask_only = False
    #: Set by a :class:`Sequential` when the previous module's output is a
    #: fresh array that module does not keep (a convolution, batch norm or
    #: Linear layer's): the ReLU may then overwrite it, as ``inplace=True``
    #: would, without the caller seeing a difference.
    _input_is_scratch = False

    _saved_state = ("_x",)

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = flag(inplace, "inplace")
        self._x = None

    def forward(self, x):
        fold = self._fold
        keep = _grad.is_grad_enabled()     # (under no_grad nothing is kept)
        if fold is not None and fold.active():
            y = x                          # already max(z, 0), a fresh array
            if keep and self._mask_only:
                y, self._x = get_backend(y).relu_mask(y, True)   # the sign, in one pass
            elif keep:
                self._x = y
            return y
        float_dtype(x, "x")
        inplace = self.inplace or self._input_is_scratch
        if keep and self._mask_only:
            # one pass writes the output and its sign (the mask the backward
            # pass needs): the input can be freed
            y, self._x = get_backend(x).relu_mask(x, inplace)
            return y
        y = get_backend(x).relu_inplace(x) if inplace else F.relu(x)   # NaN propagates
        if keep:
            self._x = y
        return y

    def _forward_into(self, x, out):
        """The forward pass written into ``out`` (an array or a view of x's
        shape and dtype, e.g. a block's slice of a concatenation), which is
        kept as the mask: no array of the ReLU's own.  x is not changed."""
        if tuple(out.shape) != tuple(x.shape) or out.dtype != x.dtype:
            raise ValueError(f"ReLU: out must have the input's shape {tuple(x.shape)} and "
                             f"dtype {x.dtype}, got {tuple(out.shape)} {out.dtype}")
        fold = self._fold
        if fold is not None and fold.active():
            out[...] = x                   # already max(z, 0)
        else:
            float_dtype(x, "x")
            get_backend(x).relu_into(x, out)   # NaN propagates
        self._x = out
        return out

    def backward(self, grad_output):
        if self._x is None:
            raise _not_ready(self)
        mask = self._x
        if mask.dtype == bool:
            float_dtype(grad_output, "grad_output")
            if tuple(grad_output.shape) != tuple(mask.shape):
                raise ValueError(f"grad_output must have shape {tuple(mask.shape)}, got "
                                 f"{tuple(grad_output.shape)}")
            # exactly 0 where the output was not positive, even for a NaN or
            # Inf gradient (as relu_backward)
            return get_backend(grad_output, mask).relu_backward_mask(grad_output, mask)
        return F.relu_backward(grad_output, mask)


class Flatten(Module):
    """Flatten dimensions ``start_dim .. end_dim`` into one (as ``torch.nn.Flatten``)."""

    _saved_state = ("_shape",)

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = as_int(start_dim, "start_dim", minimum=-(2**31))
        self.end_dim = as_int(end_dim, "end_dim", minimum=-(2**31))
        self._shape = None

    def output_shape(self, input_shape):
        nd = len(input_shape)
        s, e = self.start_dim % nd, self.end_dim % nd
        if s > e:
            raise ValueError(f"Flatten: start_dim {self.start_dim} comes after end_dim "
                             f"{self.end_dim} for a {nd}-D input")
        return tuple(input_shape[:s]) + (_prod(input_shape[s:e + 1]),) + tuple(input_shape[e + 1:])

    def forward(self, x):
        self._shape = tuple(x.shape)
        return x.reshape(self.output_shape(x.shape))

    def backward(self, grad_output):
        if self._shape is None:
            raise _not_ready(self)
        return grad_output.reshape(self._shape)


class _DropoutBase(Module):
    """Dropout with probability ``p`` (identity in eval mode) through a
    functional pair: ``_drop(x, p, training, rng, return_mask=True)`` and
    ``_undrop(grad, mask, p)``.  ``rng`` (None, seed or Generator) makes the
    masks reproducible."""

    _drop = staticmethod(F.dropout)
    _undrop = staticmethod(F.dropout_backward)

    _saved_state = ("_mask",)

    def _release_saved(self):
        self._mask, self._ready = None, False

    def __init__(self, p=0.5, inplace=False, rng=None):
        super().__init__()
        self.p = as_float(p, "p", minimum=0.0, maximum=1.0)
        self.inplace = flag(inplace, "inplace")
        self.rng = as_rng(rng)
        self._mask = None
        self._ready = False

    def forward(self, x):
        y, self._mask = self._drop(x, self.p, self.training, self.rng, return_mask=True)
        self._ready = True
        return y

    def backward(self, grad_output):
        if not self._ready:
            raise _not_ready(self)
        return self._undrop(grad_output, self._mask, self.p)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutBase):
    """Inverted dropout with probability ``p`` (identity in eval mode).

    ``rng`` (None, seed or Generator) makes the masks reproducible.
    """


class BatchNorm2d(Module):
    """Batch normalisation of (N, C, H, W) over N, H, W per channel, with
    running statistics for eval mode (as ``torch.nn.BatchNorm2d``).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> bn = nn.BatchNorm2d(2)
    >>> sorted(bn.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """

    _saved_state = ("_x", "_stats")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, dtype=None):
        super().__init__()
        self.num_features = as_int(num_features, "num_features", minimum=1)
        self.eps = as_float(eps, "eps", minimum=0.0)
        self.momentum = as_float(momentum, "momentum", minimum=0.0, maximum=1.0)
        self.affine = flag(affine, "affine")
        self.track_running_stats = flag(track_running_stats, "track_running_stats")
        dt = _dtype(dtype)
        C = self.num_features
        self.weight = Parameter(np.ones(C, dt)) if self.affine else None
        self.bias = Parameter(np.zeros(C, dt)) if self.affine else None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dt))
            self.register_buffer("running_var", np.ones(C, dt))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.running_mean = self.running_var = None
        self._x = None
        self._stats = None   # the forward's batch statistics, for the backward

    def _use_batch(self):
        return self.training or not self.track_running_stats

    def forward(self, x):
        if x.ndim != 4:
            raise ValueError(f"BatchNorm2d expects a 4-D (N, C, H, W) input, got shape "
                             f"{tuple(x.shape)}")
        fold = self._fold
        if fold is not None and fold.active():
            self._x, self._batch, self._stats = None, False, None   # folded into the conv
            return x
        batch = self._use_batch()
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
        # (in training the batch statistics are kept: the backward then needs
        # one pass over x and dy, not two)
        y, self._stats = _batch_norm(
            x, self.running_mean if (self.training or not batch) else None,
            self.running_var if (self.training or not batch) else None,
            None if self.weight is None else self.weight.data,
            None if self.bias is None else self.bias.data, batch, self.momentum, self.eps,
            keep=True)
        self._x, self._batch = x, batch
        return y

    def backward(self, grad_output):
        fold = self._fold
        if self._x is None and fold is not None and fold.active() and fold.conv._x is not None:
            self._x = fold.bn_input(F)          # the input the fold skipped
        if self._x is None:
            raise _not_ready(self)
        gx, gw, gb = _batch_norm_backward(
            grad_output, self._x, None if self._batch else self.running_mean,
            None if self._batch else self.running_var,
            None if self.weight is None else self.weight.data, self._batch, self.eps,
            saved=self._stats)
        if self.weight is not None:
            self.weight._accumulate(gw)
            self.bias._accumulate(gb)
        return gx

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class LocalResponseNorm(Module):
    """Local response normalisation across channels (``torch.nn.LocalResponseNorm``)."""

    _saved_state = ("_x",)

    def __init__(self, size, alpha=1e-4, beta=0.75, k=1.0):
        super().__init__()
        self.size = as_int(size, "size", minimum=1)
        self.alpha = as_float(alpha, "alpha")
        self.beta = as_float(beta, "beta")
        self.k = as_float(k, "k")
        self._x = None

    def forward(self, x):
        self._x = x
        return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def backward(self, grad_output):
        if self._x is None:
            raise _not_ready(self)
        return F.local_response_norm_backward(grad_output, self._x, self.size, self.alpha,
                                              self.beta, self.k)

    def extra_repr(self):
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class MaxPool2d(Module):
    """Max pooling (as ``torch.nn.MaxPool2d``; ``stride`` defaults to the kernel).

    The positions of the maxima are kept for the backward pass as int32 (half
    the memory of PyTorch's int64) when every input plane has fewer than
    2**31 elements; with ``return_indices=True`` the caller gets int64
    indices, as from :func:`convcore.max_pool2d`.
    """

    _saved_state = ("_cache",)

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        self.return_indices = flag(return_indices, "return_indices")
        self.ceil_mode = flag(ceil_mode, "ceil_mode")
        for k, p, d in zip(self.kernel_size, self.padding, self.dilation):
            if p > (d * (k - 1) + 1) // 2:
                raise ValueError(f"padding {self.padding} must be at most half the effective "
                                 f"kernel size (kernel {self.kernel_size}, dilation "
                                 f"{self.dilation})")
        self._cache = None

    def forward(self, x):
        if not self.return_indices and not _grad.is_grad_enabled():
            # no backward pass to come: the output alone, no indices
            return F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                self.dilation, self.ceil_mode)
        if self.return_indices:     # the caller gets PyTorch's int64 indices
            y, idx = F.max_pool2d(x, self.kernel_size, self.stride, self.padding,
                                  self.dilation, self.ceil_mode, return_indices=True)
        else:                       # kept for backward only: int32 where they fit
            y, idx = _max_pool2d_compact(x, self.kernel_size, self.stride, self.padding,
                                         self.dilation, self.ceil_mode)
        self._cache = (idx, tuple(x.shape))
        return (y, idx) if self.return_indices else y

    def backward(self, grad_output):
        if self._cache is None:
            raise _not_ready(self)
        return F.max_pool2d_backward(grad_output, *self._cache)

    def output_shape(self, input_shape):
        lead, H, W = _spatial(input_shape, "MaxPool2d")
        oh = out_size(H, self.kernel_size[0], self.stride[0], self.padding[0],
                      self.dilation[0], "MaxPool2d height", self.ceil_mode)
        ow = out_size(W, self.kernel_size[1], self.stride[1], self.padding[1],
                      self.dilation[1], "MaxPool2d width", self.ceil_mode)
        return lead + (oh, ow)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(Module):
    """Average pooling (as ``torch.nn.AvgPool2d``)."""

    _saved_state = ("_shape",)

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.ceil_mode = flag(ceil_mode, "ceil_mode")
        self.count_include_pad = flag(count_include_pad, "count_include_pad")
        self.divisor_override = None if divisor_override is None else \
            as_int(divisor_override, "divisor_override", minimum=1)
        for k, p in zip(self.kernel_size, self.padding):
            if p > k // 2:
                raise ValueError(f"padding {self.padding} must be at most half the kernel "
                                 f"size {self.kernel_size}")
        self._shape = None

    def _args(self):
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode,
                self.count_include_pad, self.divisor_override)

    def forward(self, x):
        y = F.avg_pool2d(x, *self._args())
        self._shape = tuple(x.shape)
        return y

    def backward(self, grad_output):
        if self._shape is None:
            raise _not_ready(self)
        return F.avg_pool2d_backward(grad_output, self._shape, *self._args())

    def output_shape(self, input_shape):
        lead, H, W = _spatial(input_shape, "AvgPool2d")
        oh = out_size(H, self.kernel_size[0], self.stride[0], self.padding[0], 1,
                      "AvgPool2d height", self.ceil_mode)
        ow = out_size(W, self.kernel_size[1], self.stride[1], self.padding[1], 1,
                      "AvgPool2d width", self.ceil_mode)
        return lead + (oh, ow)


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (int, pair, None keeps a side)."""

    _saved_state = ("_shape",)

    def __init__(self, output_size):
        super().__init__()
        if isinstance(output_size, (tuple, list)):
            if len(output_size) != 2:
                raise ValueError(f"output_size must be an int or a pair, got {output_size!r}")
            self.output_size = tuple(None if v is None else as_int(v, "output_size", minimum=1)
                                     for v in output_size)
        else:
            v = as_int(output_size, "output_size", minimum=1)
            self.output_size = (v, v)
        self._shape = None

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, self.output_size)
        self._shape = tuple(x.shape)
        return y

    def backward(self, grad_output):
        if self._shape is None:
            raise _not_ready(self)
        return F.adaptive_avg_pool2d_backward(grad_output, self._shape)

    def output_shape(self, input_shape):
        lead, H, W = _spatial(input_shape, "AdaptiveAvgPool2d")
        oh, ow = self.output_size
        return lead + (H if oh is None else oh, W if ow is None else ow)

    def extra_repr(self):
        return f"output_size={self.output_size}"


def _pool_2x2(m):
    return (type(m) is MaxPool2d and m.kernel_size == (2, 2) and m.stride == (2, 2)
            and m.padding == (0, 0) and m.dilation == (1, 1) and not m.ceil_mode
            and not m.return_indices)


def _conv_relu_pool(conv, x):
    """Conv2d -> ReLU -> MaxPool2d(2) in one pass where the core has it for
    this layer (LeNet's first layers; the bits of the three modules), else
    None."""
    if isinstance(conv.padding, str) or conv.groups != 1:
        return None
    fold = conv._fold
    if fold is not None and fold.active():
        if fold.bn is not None:
            return None
        w, b = fold.params()
    else:
        w, b = conv.weight.data, None if conv.bias is None else conv.bias.data
    return _conv2d_relu_maxpool2(x, w, b, conv.stride, conv.padding, conv.dilation, conv.groups)


def _forward_output_only(mods, x):
    """A Sequential's forward pass under convcore.no_grad(): module by
    module, except that Conv2d -> ReLU -> MaxPool2d(2, 2) runs as one pass
    where the core has it (no full-size convolution output is written)."""
    i, n = 0, len(mods)
    while i < n:
        if (i + 2 < n and type(mods[i]) is Conv2d and type(mods[i + 1]) is ReLU
                and _pool_2x2(mods[i + 2])):
            y = _conv_relu_pool(mods[i], x)
            if y is not None:
                for m in mods[i:i + 3]:          # as if each had run under no_grad
                    m.__dict__["_forward_without_grad"] = True
                    m._release_saved()
                x, i = y, i + 3
                continue
        x = mods[i](x)
        i += 1
    return x


class Sequential(Module):
    """Modules applied in order; children are named ``0, 1, ...`` or by an
    ``OrderedDict`` (as ``torch.nn.Sequential``).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.ReLU(), nn.Flatten())
    >>> net(np.ones((1, 1, 4, 4), np.float32)).shape
    (1, 8)
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                self.add_module(name, m)
        else:
            for i, m in enumerate(modules):
                self.add_module(str(i), m)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, i):
        if isinstance(i, str):
            return self._modules[i]
        return list(self._modules.values())[i]

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def forward(self, x):
        mods = list(self._modules.values())
        for prev, m, nxt in zip([None] + mods, mods, mods[1:] + [None]):
            if type(m) is ReLU:
                # a pooling layer keeps none of its input: the ReLU before it
                # keeps its output's sign only
                m._mask_only = isinstance(nxt, (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d))
                # these layers return a new array and keep their input, not
                # their output: the ReLU after them may overwrite it
                m._input_is_scratch = type(prev) in (Conv2d, BatchNorm2d, Linear)
        if not _grad.is_grad_enabled():
            return _forward_output_only(mods, x)
        for m in mods:
            x = m(x)
        return x

    def _fold_groups(self):
        from convcore.nn.fold import sequence_groups
        return sequence_groups(list(self._modules.values()))

    def backward(self, grad_output):
        if self.__dict__.get("_forward_without_grad"):
            raise _not_ready(self)
        for m in reversed(list(self._modules.values())):
            grad_output = m.backward(grad_output)
        return grad_output

    def _summary(self, input_shape, prefix, rows):
        shape = tuple(input_shape)
        for name, m in self._modules.items():
            shape = m._summary(shape, f"{prefix}.{name}" if prefix else name, rows)
        return shape
