"""Fuzz cases for the crash-isolated tests (run inside a child Python).

A case is a JSON dict: the op, the array shapes and dtypes, the options (any
JSON value, valid or not), a memory layout and a value pattern.  ``run_case``
builds the arrays, calls convcore, and checks the documented contract against
an independent model of the rules written here:

- options the documentation allows: the result has the documented shape and
  matches the naive float64 reference (within the sound float32 bound);
- anything else: ValueError or TypeError (OverflowError/MemoryError are also
  accepted for sizes beyond any machine).

It returns None when the contract held, else a message.
"""
from __future__ import annotations

import numpy as np

from reference.conv import col2im_naive, conv2d_naive, im2col_naive, out_len

try:  # pooling oracles (independent loops in tests/)
    from reference.pool import (adaptive_avg_naive, avg_pool_naive, max_pool_naive,
                                pool_out)
except ImportError:  # pragma: no cover - before pooling existed
    pool_out = None

BIG = 2**31 - 1


class Invalid(Exception):
    """The documented rules refuse these arguments."""


class TooBig(Exception):
    """Documented as valid, but a size beyond what the library supports."""


def _int(v, minimum):
    if isinstance(v, bool) or not isinstance(v, int):
        raise Invalid(f"not an int: {v!r}")
    if v < minimum:
        raise Invalid(f"{v} < {minimum}")
    if v > BIG:
        raise TooBig(v)
    return v


def _pair(v, minimum=1):
    if isinstance(v, list):
        if len(v) != 2:
            raise Invalid(f"not a pair: {v!r}")
        return _int(v[0], minimum), _int(v[1], minimum)
    v = _int(v, minimum)
    return v, v


def _dtype(name):
    if name not in ("float32", "float64"):
        raise Invalid(f"dtype {name}")
    return np.dtype(name)


def _array(shape, dtype, pattern, layout, rng):
    dt = np.dtype(dtype)
    if dt.kind == "c":
        a = rng.standard_normal(shape) + 1j
    elif dt.kind in "iub":
        a = rng.integers(0, 3, size=shape)
    else:
        a = rng.standard_normal(shape)
    a = a.astype(dt)
    if dt.kind == "f" and a.size:
        flat = a.reshape(-1)
        if pattern == "nan":
            flat[rng.integers(0, a.size, 1 + a.size // 7)] = np.nan
        elif pattern == "inf":
            flat[rng.integers(0, a.size, 1 + a.size // 7)] = np.inf
            flat[rng.integers(0, a.size, 1 + a.size // 9)] = -np.inf
        elif pattern == "tiny":
            flat *= np.asarray(1e-40 if dt == np.float32 else 1e-310, dtype=dt)
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "reversed" and a.ndim:
        a = np.ascontiguousarray(a[..., ::-1])[..., ::-1]
    elif layout == "strided" and a.ndim:
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), dtype=dt)
        big[..., ::2] = a
        a = big[..., ::2]
    elif layout == "readonly":
        a.setflags(write=False)
    return a


def _close(y, ref, bound, dtype):
    """Same NaN/Inf pattern and the sound error bound (docs/contributing.rst)."""
    y = np.asarray(y, dtype=np.float64)
    if y.shape != ref.shape:
        return f"shape {y.shape} != {ref.shape}"
    fin = np.isfinite(ref)
    if not np.array_equal(np.isnan(y), np.isnan(ref)):
        return "NaN pattern differs from the float64 reference"
    if not np.array_equal(y[np.isinf(ref)], ref[np.isinf(ref)]):
        return "Inf pattern differs from the float64 reference"
    eps = 2.0**-24 if dtype == np.float32 else 2.0**-53
    k = 1 + bound[1]
    # each term may also underflow by up to one subnormal step (tiny inputs)
    tol = 2 * k * eps * bound[0][fin] + 2 * k * float(np.finfo(dtype).smallest_subnormal)
    err = np.abs(y[fin] - ref[fin])
    # a finite reference can overflow to inf in float32: allowed only then
    bad = (err > tol) & ~(np.isinf(y[fin]) & (np.abs(ref[fin]) > 1e38))
    if bad.any():
        return f"{int(bad.sum())} elements off the reference (max err {err.max():.3g})"
    return None


def _expect_conv(c, x, w, b):
    """Documented output shape of conv2d, or Invalid/TooBig."""
    if x.ndim not in (3, 4) or w.ndim != 4:
        raise Invalid("ndim")
    dt = _dtype(str(x.dtype))
    if w.dtype != dt or (b is not None and b.dtype != dt):
        raise Invalid("dtype mismatch")
    x4 = x if x.ndim == 4 else x[None]
    N, C, H, W = x4.shape
    K, Cg, KH, KW = w.shape
    groups = _int(c["groups"], 1)
    stride, dilation = _pair(c["stride"]), _pair(c["dilation"])
    pad = c["padding"]
    if pad == "valid":
        pad = [0, 0]
    elif pad == "same":
        if stride != (1, 1):
            raise Invalid("same with stride")
        pad = "same"
    elif isinstance(pad, str):
        raise Invalid("padding string")
    if min(K, Cg, KH, KW, C, H, W) == 0:
        raise Invalid("zero size")
    if C % groups or K % groups or Cg * groups != C:
        raise Invalid("groups/channels")
    if b is not None and b.shape != (K,):
        raise Invalid("bias shape")
    if pad == "same":
        oh, ow = H, W
        ph = pw = None
    else:
        ph, pw = _pair(pad, 0)
        oh = out_len(H, KH, stride[0], ph, dilation[0])
        ow = out_len(W, KW, stride[1], pw, dilation[1])
        if oh <= 0 or ow <= 0:
            raise Invalid("kernel larger than padded input")
    shape = (N, K, oh, ow) if x.ndim == 4 else (K, oh, ow)
    _not_huge(shape)
    return shape, (stride, (ph, pw), dilation, groups)


def _not_huge(shape):
    """Valid, but too big to build or check here: any of result/VE/MemoryError."""
    if float(np.prod([float(v) for v in shape])) > 2**22:
        raise TooBig(shape)


def _same_pads(k, d):
    total = d * (k - 1)
    return total // 2, total - total // 2


def _conv_reference(x4, w, b, stride, pads, dilation, groups, padding_opt):
    if padding_opt == "same":
        (t0, t1), (l0, l1) = _same_pads(w.shape[2], dilation[0]), _same_pads(w.shape[3],
                                                                            dilation[1])
        xp = np.pad(np.asarray(x4, np.float64), ((0, 0), (0, 0), (t0, t1), (l0, l1)))
        pads = (0, 0)
    else:
        xp = np.asarray(x4, np.float64)
    ref = conv2d_naive(xp, w, b, stride, pads, dilation, groups)
    bound = conv2d_naive(np.abs(xp), np.abs(w), None if b is None else np.abs(b),
                         stride, pads, dilation, groups)
    return ref, xp, (bound, w.shape[1] * w.shape[2] * w.shape[3])


def run_case(c):
    import convcore as cc

    rng = np.random.default_rng(c.get("seed", 0))
    pat, lay = c.get("pattern", "normal"), c.get("layout", "c")
    op = c["op"]
    if op == "_selftest_crash":  # proves the harness names the case that crashed
        import os
        import signal
        os.kill(os.getpid(), signal.SIGSEGV)
    if op == "_selftest_wrong":  # proves the harness reports a broken contract
        return "deliberately wrong"
    allowed = (ValueError, TypeError)
    try:
        if op in ("conv2d", "conv2d_backward"):
            x = _array(c["x"], c["dtype"], pat, lay, rng)
            w = _array(c["w"], c.get("wdtype", c["dtype"]), pat, lay, rng)
            b = None
            if c.get("bias") is not None:
                b = _array(c["bias"], c.get("bdtype", c["dtype"]), "normal", "c", rng)
            try:
                shape, (stride, pads, dilation, groups) = _expect_conv(c, x, w, b)
                expect = "ok"
            except Invalid as e:
                expect, why = "error", str(e)
            except TooBig:
                expect, allowed = "any", allowed + (OverflowError, MemoryError)
            kw = dict(stride=c["stride"], padding=c["padding"], dilation=c["dilation"],
                      groups=c["groups"])
            if op == "conv2d":
                call = lambda: cc.conv2d(x, w, b, **kw)  # noqa: E731
            else:
                if expect == "ok":
                    dy = _array(shape, c["dtype"], "normal", lay, rng)
                else:
                    dy = _array(c.get("dy", [1, 1, 1, 1]), c["dtype"], "normal", lay, rng)
                call = lambda: cc.conv2d_backward(dy, x, w, **kw)  # noqa: E731
        elif op == "im2col":
            x = _array(c["x"], c["dtype"], pat, lay, rng)
            kw = dict(kernel_size=c["kernel_size"], stride=c["stride"],
                      padding=c["padding"], dilation=c["dilation"])
            try:
                if x.ndim not in (3, 4):
                    raise Invalid("ndim")
                _dtype(str(x.dtype))
                x4 = x if x.ndim == 4 else x[None]
                N, C, H, W = x4.shape
                k, s, d = _pair(c["kernel_size"]), _pair(c["stride"]), _pair(c["dilation"])
                p = _pair(c["padding"], 0)
                if min(C, H, W) == 0:
                    raise Invalid("zero size")
                oh, ow = out_len(H, k[0], s[0], p[0], d[0]), out_len(W, k[1], s[1], p[1], d[1])
                if oh <= 0 or ow <= 0:
                    raise Invalid("kernel larger than padded input")
                shape = (N, C * k[0] * k[1], oh * ow)
                _not_huge(shape)
                shape = shape if x.ndim == 4 else shape[1:]
                expect = "ok"
            except Invalid as e:
                expect, why = "error", str(e)
            except TooBig:
                expect, allowed = "any", allowed + (OverflowError, MemoryError)
            call = lambda: cc.im2col(x, **kw)  # noqa: E731
        elif op == "col2im":
            cols = _array(c["cols"], c["dtype"], pat, lay, rng)
            kw = dict(output_size=c["output_size"], kernel_size=c["kernel_size"],
                      stride=c["stride"], padding=c["padding"], dilation=c["dilation"])
            try:
                if cols.ndim not in (2, 3):
                    raise Invalid("ndim")
                _dtype(str(cols.dtype))
                c3 = cols if cols.ndim == 3 else cols[None]
                N, R, L = c3.shape
                H, W = _pair(c["output_size"])
                k, s, d = _pair(c["kernel_size"]), _pair(c["stride"]), _pair(c["dilation"])
                p = _pair(c["padding"], 0)
                if R == 0 or R % (k[0] * k[1]):
                    raise Invalid("rows")
                oh, ow = out_len(H, k[0], s[0], p[0], d[0]), out_len(W, k[1], s[1], p[1], d[1])
                if oh <= 0 or ow <= 0 or L != oh * ow:
                    raise Invalid("windows")
                shape = (N, R // (k[0] * k[1]), H, W)
                _not_huge(shape)
                shape = shape if cols.ndim == 3 else shape[1:]
                expect = "ok"
            except Invalid as e:
                expect, why = "error", str(e)
            except TooBig:
                expect, allowed = "any", allowed + (OverflowError, MemoryError)
            call = lambda: cc.col2im(cols, **kw)  # noqa: E731
        elif op in ("max_pool2d", "avg_pool2d", "adaptive_avg_pool2d"):
            return _run_pool(cc, c, rng, pat, lay)
        else:
            return f"unknown op {op}"
    except Invalid:
        return None  # the case could not even be built (e.g. negative shape)

    try:
        out = call()
    except allowed as e:
        if expect == "ok":
            return f"documented as valid (shape {shape}) but raised {type(e).__name__}: {e}"
        return None
    except BaseException as e:
        return f"raised {type(e).__name__} (only ValueError/TypeError allowed): {e}"
    if expect == "error":
        return f"should have raised ValueError/TypeError ({why}), returned a result"
    if expect == "any":
        return None

    # documented as valid: check shape and values against the naive reference
    outs = out if isinstance(out, tuple) else (out,)
    for o in outs:
        if not isinstance(o, np.ndarray):
            return f"returned {type(o).__name__}, not an ndarray"
    if op == "conv2d":
        if out.shape != shape:
            return f"shape {out.shape}, documented {shape}"
        if out.dtype != x.dtype:
            return f"dtype {out.dtype}, input {x.dtype}"
        if out.size == 0:
            # (an empty batch: nothing to compare, and the reference would pad
            # the empty input by up to the dilation -- 2**31 -- a side)
            return None
        x4 = x if x.ndim == 4 else x[None]
        ref, _, bound = _conv_reference(x4, w, b, stride, pads, dilation, groups,
                                        c["padding"])
        return _close(out if x.ndim == 4 else out[None], ref, bound, x.dtype)
    if op == "conv2d_backward":
        gx, gw, gb = out
        if gx.shape != x.shape or gw.shape != w.shape or gb.shape != (w.shape[0],):
            return f"gradient shapes {gx.shape, gw.shape, gb.shape}"
        if pat != "normal":
            return None
        # adjoint identity in float64: <conv(x, w), dy> = <x, dX(dy)> = <w, dW(dy)>
        x4 = x if x.ndim == 4 else x[None]
        ref, _, _ = _conv_reference(x4, w, None, stride, pads, dilation, groups, c["padding"])
        dy4 = np.asarray(dy if x.ndim == 4 else dy[None], np.float64)
        lhs = float((ref * dy4).sum())
        tol = (1e-4 if x.dtype == np.float32 else 1e-10) * (
            1 + float((np.abs(ref) * np.abs(dy4)).sum()))
        if abs(lhs - float((np.asarray(x, np.float64) * gx).sum())) > tol:
            return "adjoint identity for grad_input fails"
        if abs(lhs - float((np.asarray(w, np.float64) * gw).sum())) > tol:
            return "adjoint identity for grad_weight fails"
        if not np.allclose(gb, dy4.sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4):
            return "grad_bias is not the sum of grad_output"
        return None
    if op == "im2col":
        if out.shape != shape:
            return f"shape {out.shape}, documented {shape}"
        x4 = x if x.ndim == 4 else x[None]
        ref = im2col_naive(x4, k, s, p, d)
        o = out if x.ndim == 4 else out[None]
        if not np.array_equal(o, ref, equal_nan=True):
            return "im2col differs from the naive windows"
        return None
    if op == "col2im":
        if out.shape != shape:
            return f"shape {out.shape}, documented {shape}"
        ref = col2im_naive(c3, (H, W), k, s, p, d)
        o = out if cols.ndim == 3 else out[None]
        bound = col2im_naive(np.abs(np.asarray(c3, np.float64)), (H, W), k, s, p, d)
        return _close(o, ref, (bound, k[0] * k[1]), cols.dtype)
    return None


def _flag(v):
    """A bool, or the ints 0 and 1 (as Python's own flags)."""
    if isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)):
        return bool(v)
    raise Invalid(f"flag {v!r}")


def _run_pool(cc, c, rng, pat, lay):
    """Pooling: arguments the rules refuse must raise ValueError/TypeError; any
    success must have the documented shape and match the naive reference (the
    rules on padding vs kernel and empty windows are the library's to refuse)."""
    op = c["op"]
    x = _array(c["x"], c["dtype"], pat, lay, rng)
    allowed = (ValueError, TypeError)
    ref = shape = None
    try:
        if x.ndim not in (3, 4):
            raise Invalid("ndim")
        _dtype(str(x.dtype))
        x4 = x if x.ndim == 4 else x[None]
        N, C, H, W = x4.shape
        if min(C, H, W) == 0:
            raise Invalid("zero size")
        if op == "adaptive_avg_pool2d":
            o = c["output_size"]
            oh, ow = (o, o) if not isinstance(o, list) else (o + [None, None])[:2]
            if isinstance(o, list) and len(o) != 2:
                raise Invalid("output_size")
            oh = H if oh is None else _int(oh, 1)
            ow = W if ow is None else _int(ow, 1)
            _not_huge((N, C, oh, ow))
            shape = (N, C, oh, ow)
            call = lambda: cc.adaptive_avg_pool2d(x, c["output_size"])  # noqa: E731
            reference = lambda: adaptive_avg_naive(x4, oh, ow)  # noqa: E731
        else:
            k = _pair(c["kernel_size"])
            st_ = c.get("stride")
            # None or an empty sequence: the kernel size (as PyTorch)
            s_ = k if st_ is None or st_ == [] else _pair(st_)
            p_ = _pair(c["padding"], 0)
            ceil = _flag(c["ceil_mode"])
            if op == "max_pool2d":
                d = _pair(c["dilation"])
                kw = dict(kernel_size=c["kernel_size"], stride=c.get("stride"),
                          padding=c["padding"], dilation=c["dilation"], ceil_mode=ceil,
                          return_indices=True)
            else:
                d = (1, 1)
                cip = _flag(c["count_include_pad"])
                div = c["divisor_override"]
                if div is not None:
                    div = _int(div, 1)
                kw = dict(kernel_size=c["kernel_size"], stride=c.get("stride"),
                          padding=c["padding"], ceil_mode=ceil, count_include_pad=cip,
                          divisor_override=div)
            oh = pool_out(H, k[0], s_[0], p_[0], d[0], ceil)
            ow = pool_out(W, k[1], s_[1], p_[1], d[1], ceil)
            shape = (N, C, oh, ow)
            if oh > 0 and ow > 0:
                _not_huge(shape)
            fn = getattr(cc, op)
            call = lambda: fn(x, **kw)  # noqa: E731
            if op == "max_pool2d":
                reference = lambda: max_pool_naive(x4, k, s_, p_, d, ceil)  # noqa: E731
            else:
                reference = lambda: avg_pool_naive(x4, k, s_, p_, ceil, cip, div)  # noqa: E731
        expect = "maybe"
    except Invalid as e:
        expect, why = "error", str(e)
    except TooBig:
        expect, allowed = "any", allowed + (OverflowError, MemoryError)
    if expect in ("error", "any"):
        kw_all = {key: c[key] for key in ("kernel_size", "stride", "padding", "dilation",
                                           "ceil_mode", "count_include_pad",
                                           "divisor_override", "output_size") if key in c}
        if op == "avg_pool2d":
            kw_all.pop("dilation", None)
        if op == "adaptive_avg_pool2d":
            call = lambda: cc.adaptive_avg_pool2d(x, c["output_size"])  # noqa: E731
        else:
            kw_all.pop("output_size", None)
            call = lambda: getattr(cc, op)(x, **kw_all)  # noqa: E731
    try:
        out = call()
    except allowed:
        return None
    except BaseException as e:
        return f"raised {type(e).__name__} (only ValueError/TypeError allowed): {e}"
    if expect == "error":
        return f"should have raised ValueError/TypeError ({why}), returned a result"
    if expect == "any":
        return None
    y = out[0] if isinstance(out, tuple) else out
    want = shape if x.ndim == 4 else shape[1:]
    if y.shape != want:
        return f"shape {y.shape}, documented {want}"
    y4 = y if x.ndim == 4 else y[None]
    ref = reference()
    if op == "max_pool2d":
        ry, ridx = ref
        idx = out[1] if x.ndim == 4 else out[1][None]
        if not np.array_equal(y4, ry, equal_nan=True):
            return "max pool values differ from the naive reference"
        if not np.array_equal(idx, ridx):
            return "max pool indices differ from the naive reference"
        return None
    if not np.array_equal(np.isnan(y4), np.isnan(ref)):
        return "NaN pattern differs from the reference"
    fin = np.isfinite(ref)
    tol = (1e-5 if x.dtype == np.float32 else 1e-12) * (1 + np.abs(ref[fin]))
    if np.any(np.abs(y4[fin] - ref[fin]) > tol):
        return "average differs from the naive reference"
    return None
