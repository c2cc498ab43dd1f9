"""gradcheck(): compare a module's backward pass with central differences."""
from __future__ import annotations

import copy

import numpy as np


class GradcheckError(AssertionError):
    """The analytic and numerical gradients disagree."""


def gradcheck(module, input, eps=1e-6, atol=1e-5, rtol=1e-4, max_checks=64, seed=0,
              check_params=True, raise_exception=True):
    """Check ``module.backward`` against float64 central differences.

    A float64 copy of ``module`` (the original is untouched) computes
    ``L = sum(forward(x) * r)`` for a fixed random ``r``; the input gradient
    and every parameter gradient from ``backward(r)`` are compared with
    ``(L(t + eps) - L(t - eps)) / (2 eps)`` at up to ``max_checks`` entries
    of each tensor.  Modules with randomness (dropout in training mode) must
    be put in eval mode first.

    Returns True, or raises :class:`GradcheckError` (returns False when
    ``raise_exception`` is False) naming the tensor and entry that disagree.

    Examples
    --------
    >>> import numpy as np, convcore as cc
    >>> conv = cc.nn.Conv2d(2, 3, 3, padding=1, rng=0)
    >>> cc.gradcheck(conv, np.random.default_rng(0).standard_normal((2, 2, 5, 5)))
    True
    """
    if not (callable(getattr(module, "backward", None)) and hasattr(module, "astype")
            and hasattr(module, "parameters")):
        raise TypeError(f"gradcheck needs a convcore.nn.Module (with forward, backward and "
                        f"parameters), got {type(module).__name__}; a plain function has no "
                        f"backward pass to check")
    m = copy.deepcopy(module).astype(np.float64)
    x = np.array(input, dtype=np.float64)
    rng = np.random.default_rng(seed)
    y = m(x)
    r = rng.standard_normal(np.shape(y))
    m.zero_grad()
    for p in m.parameters():
        p.grad = np.zeros_like(p.data)
    gx = m.backward(r)

    def loss():
        return float(np.sum(m(x) * r))

    targets = [("input", x, gx)]
    if check_params:
        targets += [(n, p.data, p.grad.copy()) for n, p in m.named_parameters()]
    for name, arr, grad in targets:
        flat = arr.reshape(-1)
        gflat = np.asarray(grad).reshape(-1)
        idx = np.arange(flat.size) if flat.size <= max_checks else \
            rng.choice(flat.size, max_checks, replace=False)
        for i in idx:
            old = flat[i]
            flat[i] = old + eps
            lp = loss()
            flat[i] = old - eps
            lm = loss()
            flat[i] = old
            num = (lp - lm) / (2 * eps)
            if not abs(num - gflat[i]) <= atol + rtol * abs(num):
                msg = (f"gradient of {name!r} at flat index {int(i)}: backward gives "
                       f"{gflat[i]!r}, central difference {num!r}")
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True
