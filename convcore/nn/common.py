"""More layers a PyTorch user reaches for: transposed convolution, identity,
softmax and log-softmax, channel dropout, upsampling, and the activations
tanh, sigmoid and leaky ReLU.  As in :mod:`convcore.nn.layers`, each forward
is a call into the functional API and each backward its mirror."""
from __future__ import annotations

from convcore import functional as F
from convcore._ops.upsample import _geometry
from convcore._rng import as_rng
from convcore._validate import as_float, as_int, flag, pair
from convcore.nn.init import kaiming_uniform
from convcore.nn.layers import _DropoutBase, _dtype, _prod, _spatial
from convcore.nn.module import Module, _not_ready

__all__ = ["ConvTranspose2d", "Identity", "Softmax", "LogSoftmax", "Dropout2d", "Upsample",
           "Tanh", "Sigmoid", "LeakyReLU"]


class ConvTranspose2d(Module):
    """2-D transposed convolution (arguments, defaults, state-dict layout and
    initialisation as ``torch.nn.ConvTranspose2d``).

    ``weight`` has shape ``(in_channels, out_channels // groups, kH, kW)``;
    weight and bias are drawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    ``fan_in = out_channels // groups * kH * kW`` (PyTorch computes it from
    the weight's second dimension).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> up = nn.ConvTranspose2d(8, 4, 3, stride=2, padding=1, output_padding=1, rng=0)
    >>> up(np.zeros((2, 8, 5, 5), np.float32)).shape
    (2, 4, 10, 10)
    >>> up.weight.shape
    (8, 4, 3, 3)
    """

    _saved_state = ("_x",)

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, groups=1, bias=True, dilation=1, padding_mode="zeros",
                 dtype=None, rng=None):
        super().__init__()
        self.in_channels = as_int(in_channels, "in_channels", minimum=1)
        self.out_channels = as_int(out_channels, "out_channels", minimum=1)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        if isinstance(padding, str):
            raise ValueError(f"padding must be an int or a pair of ints for ConvTranspose2d, "
                             f"got {padding!r}")
        self.padding = pair(padding, "padding", minimum=0)
        self.output_padding = pair(output_padding, "output_padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        self.groups = as_int(groups, "groups", minimum=1)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode must be 'zeros', got {padding_mode!r}")
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(f"in_channels ({self.in_channels}) and out_channels "
                             f"({self.out_channels}) must be divisible by groups ({self.groups})")
        for op, s, d in zip(self.output_padding, self.stride, self.dilation):
            if op >= s and op >= d:
                raise ValueError(f"output_padding {self.output_padding} must be smaller than "
                                 f"either stride {self.stride} or dilation {self.dilation}")
        has_bias = flag(bias, "bias")
        dt = _dtype(dtype)
        rng = as_rng(rng)
        kg = self.out_channels // self.groups
        fan_in = kg * self.kernel_size[0] * self.kernel_size[1]
        self.weight = kaiming_uniform(rng, (self.in_channels, kg) + self.kernel_size, fan_in, dt)
        self.bias = kaiming_uniform(rng, (self.out_channels,), fan_in, dt) if has_bias else None
        self.needs_input_grad = True
        self._x = None

    def _args(self):
        return dict(stride=self.stride, padding=self.padding,
                    output_padding=self.output_padding, groups=self.groups,
                    dilation=self.dilation)

    def forward(self, x):
        y = F.conv_transpose2d(x, self.weight.data,
                               None if self.bias is None else self.bias.data, **self._args())
        self._x = x
        return y

    def backward(self, grad_output):
        if self._x is None:
            raise _not_ready(self)
        mask = (bool(self.needs_input_grad), True, self.bias is not None)
        gx, gw, gb = F.conv_transpose2d_backward(grad_output, self._x, self.weight.data,
                                                 output_mask=mask, **self._args())
        self.weight._accumulate(gw)
        if self.bias is not None:
            self.bias._accumulate(gb)
        return gx

    def output_shape(self, input_shape):
        lead, H, W = _spatial(input_shape, "ConvTranspose2d")
        size = []
        for n, k, s, p, d, op in zip((H, W), self.kernel_size, self.stride, self.padding,
                                     self.dilation, self.output_padding):
            o = (n - 1) * s - 2 * p + d * (k - 1) + op + 1
            if o <= 0:
                raise ValueError(f"ConvTranspose2d: output size {o} is not positive for input "
                                 f"size {n}")
            size.append(o)
        return lead[:-1] + (self.out_channels,) + tuple(size)

    def macs(self, input_shape, output_shape):
        # every input element meets out_channels/groups * kH * kW weights
        per = (self.out_channels // self.groups) * self.kernel_size[0] * self.kernel_size[1]
        return _prod(input_shape) * per

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, "
                f"output_padding={self.output_padding}")


class Identity(Module):
    """Returns its input unchanged (as ``torch.nn.Identity``); arguments are ignored."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x

    def backward(self, grad_output):
        return grad_output


def _implicit_dim(ndim):
    # PyTorch's rule for a softmax built without dim
    return 0 if ndim in (0, 1, 3) else 1


class _SoftmaxBase(Module):
    _saved_state = ("_y",)

    def __init__(self, dim=None):
        super().__init__()
        self.dim = None if dim is None else as_int(dim, "dim", minimum=-(2**31))
        self._y = None

    def _d(self, ndim):
        return _implicit_dim(ndim) if self.dim is None else self.dim

    def extra_repr(self):
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """Softmax along ``dim`` (as ``torch.nn.Softmax``; without ``dim``, PyTorch's
    implicit choice: 0 for 1-D and 3-D input, else 1).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> nn.Softmax(dim=1)(np.zeros((1, 4)))
    array([[0.25, 0.25, 0.25, 0.25]])
    """

    def forward(self, x):
        self._y = F.softmax(x, self._d(x.ndim))
        return self._y

    def backward(self, grad_output):
        if self._y is None:
            raise _not_ready(self)
        return F.softmax_backward(grad_output, self._y, self._d(self._y.ndim))


class LogSoftmax(_SoftmaxBase):
    """Log-softmax along ``dim`` (as ``torch.nn.LogSoftmax``)."""

    def forward(self, x):
        self._y = F.log_softmax(x, self._d(x.ndim))
        return self._y

    def backward(self, grad_output):
        if self._y is None:
            raise _not_ready(self)
        return F.log_softmax_backward(grad_output, self._y, self._d(self._y.ndim))


class Dropout2d(_DropoutBase):
    """Channel dropout: each feature map is zeroed with probability ``p``
    (as ``torch.nn.Dropout2d``); identity in eval mode.  ``rng`` (None, seed
    or Generator) makes the masks reproducible."""

    _drop = staticmethod(F.dropout2d)
    _undrop = staticmethod(F.dropout2d_backward)


class Upsample(Module):
    """Resize feature maps by ``scale_factor`` or to ``size``, ``mode``
    'nearest' or 'bilinear' (as ``torch.nn.Upsample``); see :func:`convcore.interpolate`.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> nn.Upsample(scale_factor=2, mode="bilinear")(np.zeros((1, 3, 4, 5))).shape
    (1, 3, 8, 10)
    """

    _saved_state = ("_shape",)

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None):
        super().__init__()
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        _geometry(None, size, scale_factor, mode, align_corners)   # checks the arguments
        self._shape = None

    def _args(self):
        return dict(size=self.size, scale_factor=self.scale_factor, mode=self.mode,
                    align_corners=self.align_corners)

    def forward(self, x):
        y = F.interpolate(x, **self._args())
        self._shape = tuple(x.shape)
        return y

    def backward(self, grad_output):
        if self._shape is None:
            raise _not_ready(self)
        return F.interpolate_backward(grad_output, self._shape, **self._args())

    def output_shape(self, input_shape):
        lead, H, W = _spatial(input_shape, "Upsample")
        oh, ow, _ = _geometry((H, W), self.size, self.scale_factor, self.mode,
                              self.align_corners)
        return tuple(input_shape[:-2]) + (oh, ow)

    def extra_repr(self):
        what = f"size={self.size}" if self.size is not None else \
            f"scale_factor={self.scale_factor}"
        return f"{what}, mode={self.mode!r}"


class Tanh(Module):
    """Hyperbolic tangent (as ``torch.nn.Tanh``)."""

    _saved_state = ("_y",)

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        self._y = F.tanh(x)
        return self._y

    def backward(self, grad_output):
        if self._y is None:
            raise _not_ready(self)
        return F.tanh_backward(grad_output, self._y)


class Sigmoid(Module):
    """Logistic sigmoid (as ``torch.nn.Sigmoid``)."""

    _saved_state = ("_y",)

    def __init__(self):
        super().__init__()
        self._y = None

    def forward(self, x):
        self._y = F.sigmoid(x)
        return self._y

    def backward(self, grad_output):
        if self._y is None:
            raise _not_ready(self)
        return F.sigmoid_backward(grad_output, self._y)


class LeakyReLU(Module):
    """``max(x, 0) + negative_slope * min(x, 0)`` (as ``torch.nn.LeakyReLU``);
    ``inplace`` is accepted for compatibility and ignored."""

    _saved_state = ("_x",)

    def __init__(self, negative_slope=0.01, inplace=False):
        super().__init__()
        self.negative_slope = as_float(negative_slope, "negative_slope")
        self.inplace = flag(inplace, "inplace")
        self._x = None

    def forward(self, x):
        self._x = x
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, grad_output):
        if self._x is None:
            raise _not_ready(self)
        return F.leaky_relu_backward(grad_output, self._x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"
