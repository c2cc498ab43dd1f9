"""Module and Parameter: the containers of the layer API.

A module holds parameters, buffers (running statistics) and child modules,
registered by attribute assignment as in ``torch.nn``.  ``forward`` caches
what ``backward`` needs; ``backward(grad)`` returns the gradient with respect
to the input and adds (``+=``) the parameter gradients into ``.grad``.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np

from convcore import _grad
from convcore.nn._io import check_state, load_state_dict_file, save_state_dict

__all__ = ["Module", "Parameter"]


class Parameter:
    """A trainable array (``.data``) and its accumulated gradient (``.grad``).

    ``.grad`` is allocated (zeros, same shape and dtype) on first use; a
    layer's backward that finds no gradient held (a new parameter, or after
    :meth:`Module.zero_grad`) stores its result as ``.grad`` directly.  A
    parameter made by :func:`convcore.nn.init.kaiming_uniform` draws its values on first
    access to ``.data`` from its own seed, so counting the parameters of a
    full-size network (or printing its summary) allocates nothing, and the
    values do not depend on the order in which parameters are touched.

    Examples
    --------
    >>> import numpy as np
    >>> from convcore.nn import Parameter
    >>> p = Parameter(np.ones(3, np.float32))
    >>> p.grad += 2
    >>> p.grad
    array([2., 2., 2.], dtype=float32)
    """

    __slots__ = ("_data", "_grad", "_lazy", "_version")

    def __init__(self, data):
        self._data = data
        self._grad = None
        self._lazy = None
        #: Counts the in-place updates convcore makes to ``.data`` (an
        #: optimizer step, pruning, a broadcast): what eval-mode folds
        #: derived from the values check before reusing them.
        self._version = 0

    @property
    def data(self):
        if self._data is None:
            shape, dtype, make = self._lazy
            self._data = make()
            self._lazy = None
        return self._data

    @data.setter
    def data(self, value):
        self._data = value
        self._lazy = None

    @property
    def grad(self):
        d = self.data
        if self._grad is None or self._grad.shape != d.shape or self._grad.dtype != d.dtype:
            from convcore.backends import get_backend
            self._grad = get_backend(d).xp.zeros_like(d)  # not d * 0: NaN weights
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value

    def _has_grad(self):
        """Whether a gradient of this parameter's shape and dtype is held (the
        :attr:`grad` getter would not allocate one)."""
        g, d = self._grad, self.data
        return g is not None and g.shape == d.shape and g.dtype == d.dtype

    def _accumulate(self, g):
        """Add the gradient ``g`` into :attr:`grad`.  Where no gradient is held
        (a new parameter, or after ``zero_grad(set_to_none=True)``), ``g``
        itself becomes it: no zero-filled array and no pass adding to it.
        ``g`` must be a new array that nothing else refers to."""
        d = self.data
        if self._has_grad() or g.shape != d.shape or g.dtype != d.dtype:
            self.grad += g
        else:
            self._grad = g

    @property
    def shape(self):
        return tuple(self._lazy[0]) if self._data is None else tuple(self._data.shape)

    @property
    def dtype(self):
        return np.dtype(self._lazy[1]) if self._data is None else self._data.dtype

    @property
    def size(self):
        n = 1
        for s in self.shape:
            n *= int(s)
        return n

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={self.dtype})"


def _not_ready(module):
    if module.__dict__.get("_forward_without_grad"):
        return RuntimeError(f"{type(module).__name__}.backward: the last forward pass ran under "
                            f"convcore.no_grad(), which keeps nothing for a backward pass; run "
                            f"forward again outside it first")
    return RuntimeError(f"{type(module).__name__}.backward called before forward: run "
                        f"forward (module(x)) first")


class Module:
    """Base class of every layer and model.

    Subclasses define ``forward(x)`` (caching what they need) and
    ``backward(grad_output)`` (returning the input gradient and accumulating
    into their parameters' ``.grad``).

    Examples
    --------
    >>> import numpy as np
    >>> from convcore import nn
    >>> m = nn.Sequential(nn.Linear(3, 2, rng=0), nn.ReLU())
    >>> y = m(np.ones((4, 3), np.float32))
    >>> gx = m.backward(np.ones_like(y))
    >>> gx.shape, sorted(m.state_dict())
    ((4, 3), ['0.bias', '0.weight'])
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -------------------------------------------------------- registration
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"call Module.__init__() in {type(self).__name__}.__init__ "
                               f"before assigning attributes")
        if name in self._buffers and not isinstance(value, (Parameter, Module)):
            object.__setattr__(self, name, value)
            return
        for d in (self._parameters, self._buffers, self._modules):
            d.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name, value):
        """Register a non-trainable array saved in the state dict."""
        object.__setattr__(self, name, value)
        self._buffers[name] = None  # the attribute holds the array

    def add_module(self, name, module):
        if not isinstance(module, Module):
            raise TypeError(f"{name} must be a Module, got {type(module).__name__}")
        setattr(self, str(name), module)

    # ------------------------------------------------------------- calling
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad_output):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    #: The attributes in which forward keeps what backward needs: under
    #: :class:`convcore.no_grad` they are cleared after the forward pass, so
    #: the module holds nothing and its backward raises.
    _saved_state = ()

    def _release_saved(self):
        for name in self._saved_state:
            object.__setattr__(self, name, None)

    def __call__(self, *args, **kwargs):
        d = self.__dict__
        if _grad.is_grad_enabled():
            out = self.forward(*args, **kwargs)
            if d.get("_forward_without_grad"):
                d["_forward_without_grad"] = False
            return out
        d["_forward_without_grad"] = True   # (also if forward raises)
        try:
            return self.forward(*args, **kwargs)
        finally:
            self._release_saved()

    # ------------------------------------------------------------ traversal
    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix=""):
        for name, p in self._parameters.items():
            yield (f"{prefix}.{name}" if prefix else name), p
        for name, m in self._modules.items():
            yield from m.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self):
        for _, p in self.named_parameters():
            yield p

    def num_parameters(self):
        """Total number of trainable scalars."""
        return sum(p.size for p in self.parameters())

    def zero_grad(self, set_to_none=True):
        """Reset every parameter gradient.

        With ``set_to_none`` (the default, as in ``torch.nn.Module``) the
        gradients are dropped: the next :meth:`backward` writes each one afresh
        instead of adding into zeros, which saves a pass over every parameter
        twice per step, and reading ``.grad`` before then gives zeros.  With
        ``set_to_none=False`` each gradient array is zeroed in place (for code
        that keeps references to them)."""
        for p in self.parameters():
            if p._grad is None:
                continue
            if set_to_none:
                p._grad = None
            else:
                p._grad[...] = 0

    #: The eval-mode fold this module belongs to (see :mod:`convcore.nn.fold`).
    _fold = None

    def _fold_groups(self):
        """(conv, bn[, relu]) groups of this module's children that run one
        after the other, which eval mode may fold into one convolution."""
        return ()

    def train(self, mode=True, fold=True):
        """Set training mode (``mode=False``: eval mode) on this module and
        every module below it.  Entering eval mode with ``fold`` folds each
        convolution followed by batch norm (and ReLU) into one convolution
        (:mod:`convcore.nn.fold`); training mode never folds."""
        from convcore.nn import fold as _fold
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        if mode or not fold:
            _fold.clear(self)
        else:
            _fold.plan(self)
        return self

    def eval(self, fold=True):
        """Eval mode (``train(False)``); ``fold=False`` keeps every batch norm
        and ReLU a separate pass, as in training."""
        return self.train(False, fold=fold)

    # ----------------------------------------------------------- state dict
    def _named_state(self, prefix=""):
        """(key, owner, attribute, is_parameter) in PyTorch's state-dict order."""
        for name in self._parameters:
            yield (f"{prefix}{name}", self, name, True)
        for name in self._buffers:
            if getattr(self, name) is not None:
                yield (f"{prefix}{name}", self, name, False)
        for name, m in self._modules.items():
            yield from m._named_state(f"{prefix}{name}.")

    def state_dict(self):
        """Parameters and buffers by dotted name (``features.0.weight``,
        ``layer1.0.bn1.running_mean``), as arrays (not copies)."""
        out = OrderedDict()
        for key, owner, attr, is_param in self._named_state():
            v = getattr(owner, attr)
            out[key] = v.data if is_param else v
        return out

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into this module's parameters and buffers.

        Every key must be present with the same shape and dtype (and no extra
        key, when ``strict``); otherwise ValueError lists every offending key
        and nothing is changed.
        """
        own = self.state_dict()
        errors = check_state(own, state_dict, strict=strict)
        if errors:
            raise ValueError("state dict does not match the module:\n  " + "\n  ".join(errors))
        for key, arr in own.items():
            if key in state_dict:
                src = state_dict[key]
                if isinstance(arr, np.ndarray):
                    arr[...] = src.get() if hasattr(src, "get") else src
                else:  # a CuPy array: copy host data to the device
                    import cupy
                    arr[...] = cupy.asarray(src)
        for m in self.modules():            # folded weights follow the new values
            if m._fold is not None:
                m._fold.invalidate()
        return self

    def save(self, path):
        """Write the state dict to ``path`` as ``.npz`` (atomically, no pickle)."""
        save_state_dict(self.state_dict(), path)

    def load(self, path):
        """Read a ``.npz`` written by :meth:`save`, validated against this module."""
        self.load_state_dict(load_state_dict_file(path, self.state_dict()))
        return self

    # ------------------------------------------------------- dtype / device
    def _map_arrays(self, fn):
        for _, owner, attr, is_param in self._named_state():
            if is_param:
                p = getattr(owner, attr)
                p.data = fn(p.data)
                p._grad = None
            else:
                object.__setattr__(owner, attr, fn(getattr(owner, attr)))
        return self

    def astype(self, dtype):
        """Cast floating parameters and buffers to ``dtype`` (in place); returns self."""
        dtype = np.dtype(dtype)
        return self._map_arrays(lambda a: a.astype(dtype) if a.dtype.kind == "f" else a)

    def double(self):
        return self.astype(np.float64)

    def float(self):
        return self.astype(np.float32)

    def to(self, device):
        """Move parameters and buffers to ``'cpu'`` (NumPy) or ``'cuda'`` (CuPy)."""
        if device == "cpu":
            return self._map_arrays(lambda a: a.get() if hasattr(a, "get") else a)
        if device in ("cuda", "gpu") or str(device).startswith("cuda"):
            from convcore.backends import cuda
            return self._map_arrays(cuda.to_device)
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")

    # ------------------------------------------------------------- summary
    def output_shape(self, input_shape):
        """Shape of ``forward``'s output for an input of ``input_shape``."""
        return tuple(input_shape)

    def macs(self, input_shape, output_shape):
        """Multiply-accumulates of one forward pass."""
        return 0

    def _summary(self, input_shape, prefix, rows):
        """Append one row per leaf layer; return the output shape."""
        if self._modules and type(self).output_shape is Module.output_shape:
            raise NotImplementedError(f"{type(self).__name__} does not describe its layers "
                                      f"for summary()")
        out = tuple(int(s) for s in self.output_shape(input_shape))
        rows.append({
            "name": prefix or type(self).__name__.lower(),
            "type": type(self).__name__,
            "output_shape": out,
            "params": sum(p.size for p in self._parameters.values()),
            "weights": sum(p.size for n, p in self._parameters.items() if n != "bias"),
            "macs": int(self.macs(tuple(input_shape), out)),
        })
        return out

    # --------------------------------------------------------------- repr
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        if self._modules:
            for name, m in self._modules.items():
                sub = repr(m).replace("\n", "\n  ")
                lines.append(f"\n  ({name}): {sub}")
            lines.append("\n")
        return "".join(lines) + ")"

    def copy(self):
        return copy.deepcopy(self)
