# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings of the C pooling family (src_c/pool.c).

Only memory-safety checks live here: the functional layer has already
validated every argument and allocated every output.  The C core is called
with the GIL released; its status code becomes an exception afterwards.
"""
from cython cimport floating
from libc.stdint cimport int32_t, int64_t

cdef extern from "convcore.h" nogil:
    ctypedef struct cc_pool_geom:
        int64_t N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW
        int ceil_mode, count_include_pad
        int64_t divisor
        int generic
    int CC_OK, CC_EINVAL, CC_ENOMEM, CC_POOL_MAX, CC_POOL_AVG
    int cc_pool_geom_check(const cc_pool_geom *g, int kind)
    int cc_max_pool2d_fwd_f32(const float *x, const cc_pool_geom *g, int n_threads,
                              float *y, int64_t *idx)
    int cc_max_pool2d_fwd_f64(const double *x, const cc_pool_geom *g, int n_threads,
                              double *y, int64_t *idx)
    int cc_max_pool2d_bwd_f32(const float *dy, const int64_t *idx, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, int n_threads,
                              float *dx)
    int cc_max_pool2d_bwd_f64(const double *dy, const int64_t *idx, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, int n_threads,
                              double *dx)
    int cc_max_pool2d_i32_fwd_f32(const float *x, const cc_pool_geom *g, int n_threads,
                                  float *y, int32_t *idx)
    int cc_max_pool2d_i32_fwd_f64(const double *x, const cc_pool_geom *g, int n_threads,
                                  double *y, int32_t *idx)
    int cc_max_pool2d_i32_bwd_f32(const float *dy, const int32_t *idx, int64_t N, int64_t C,
                                  int64_t H, int64_t W, int64_t OH, int64_t OW,
                                  int n_threads, float *dx)
    int cc_max_pool2d_i32_bwd_f64(const double *dy, const int32_t *idx, int64_t N, int64_t C,
                                  int64_t H, int64_t W, int64_t OH, int64_t OW,
                                  int n_threads, double *dx)
    int cc_avg_pool2d_fwd_f32(const float *x, const cc_pool_geom *g, int n_threads, float *y)
    int cc_avg_pool2d_fwd_f64(const double *x, const cc_pool_geom *g, int n_threads, double *y)
    int cc_avg_pool2d_bwd_f32(const float *dy, const cc_pool_geom *g, int n_threads, float *dx)
    int cc_avg_pool2d_bwd_f64(const double *dy, const cc_pool_geom *g, int n_threads,
                              double *dx)
    int cc_adaptive_avg_pool2d_fwd_f32(const float *x, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t OH, int64_t OW, int n_threads,
                                       float *y)
    int cc_adaptive_avg_pool2d_fwd_f64(const double *x, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t OH, int64_t OW, int n_threads,
                                       double *y)
    int cc_adaptive_avg_pool2d_bwd_f32(const float *dy, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t OH, int64_t OW, int n_threads,
                                       float *dx)
    int cc_adaptive_avg_pool2d_bwd_f64(const double *dy, int64_t N, int64_t C, int64_t H,
                                       int64_t W, int64_t OH, int64_t OW, int n_threads,
                                       double *dx)

# the geometry: a convcore._geometry.PoolGeom


cdef cc_pool_geom _geom(object geom, int kind) except *:
    """The C struct of a PoolGeom (or any 18-tuple in its field order)."""
    cdef cc_pool_geom g
    cdef tuple t
    if not isinstance(geom, tuple) or len(<tuple>geom) != 18:
        raise TypeError(f"expected a PoolGeom, got {geom!r}")
    t = <tuple>geom
    g.N, g.C, g.H, g.W = t[0], t[1], t[2], t[3]
    g.KH, g.KW, g.SH, g.SW, g.PH, g.PW = t[4], t[5], t[6], t[7], t[8], t[9]
    g.DH, g.DW, g.OH, g.OW = t[10], t[11], t[12], t[13]
    g.ceil_mode, g.count_include_pad, g.divisor, g.generic = t[14], t[15], t[16], t[17]
    if cc_pool_geom_check(&g, kind) != CC_OK:
        raise ValueError(f"inconsistent or oversized pooling geometry {geom}")
    return g


include "_common.pxi"

# Indices: int64 (PyTorch's, the functional API) or int32 (the layers' compact
# copy, for planes of fewer than 2**31 elements).
ctypedef fused index_t:
    int32_t
    int64_t


def geom_ok(geom, bint average):
    """Whether the C core accepts this geometry (see cc_pool_geom_check)."""
    cdef cc_pool_geom g
    (g.N, g.C, g.H, g.W, g.KH, g.KW, g.SH, g.SW, g.PH, g.PW, g.DH, g.DW, g.OH, g.OW,
     g.ceil_mode, g.count_include_pad, g.divisor, g.generic) = geom
    return cc_pool_geom_check(&g, CC_POOL_AVG if average else CC_POOL_MAX) == CC_OK


def max_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                       index_t[:, :, :, ::1] idx, bint with_indices, geom,
                       int n_threads):
    cdef cc_pool_geom g = _geom(geom, CC_POOL_MAX)
    cdef index_t *ip = NULL
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(y.size, g.N * g.C * g.OH * g.OW, "y")
    if with_indices:
        _need(idx.size, y.size, "indices")
        if index_t is int32_t and g.H * g.W > 2147483647:
            raise ValueError(f"int32 indices need planes of fewer than 2**31 elements, got "
                             f"{g.H}x{g.W}")
    if g.N == 0:
        return
    if with_indices:
        ip = &idx[0, 0, 0, 0]
    with nogil:
        if index_t is int64_t:
            if floating is float:
                st = cc_max_pool2d_fwd_f32(&x[0, 0, 0, 0], &g, n_threads, &y[0, 0, 0, 0], ip)
            else:
                st = cc_max_pool2d_fwd_f64(&x[0, 0, 0, 0], &g, n_threads, &y[0, 0, 0, 0], ip)
        else:
            if floating is float:
                st = cc_max_pool2d_i32_fwd_f32(&x[0, 0, 0, 0], &g, n_threads, &y[0, 0, 0, 0],
                                               ip)
            else:
                st = cc_max_pool2d_i32_fwd_f64(&x[0, 0, 0, 0], &g, n_threads, &y[0, 0, 0, 0],
                                               ip)
    _raise(st, "max_pool2d forward")


def max_pool2d_backward(const floating[:, :, :, ::1] dy, const index_t[:, :, :, ::1] idx,
                        floating[:, :, :, ::1] dx, int n_threads):
    cdef int64_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int64_t OH = dy.shape[2], OW = dy.shape[3]
    cdef int st
    if dy.shape[0] != N or dy.shape[1] != C:
        raise ValueError("grad_output and grad_input disagree on (N, C)")
    _need(idx.size, dy.size, "indices")
    if index_t is int32_t and H * W > 2147483647:
        raise ValueError(f"int32 indices need planes of fewer than 2**31 elements, got "
                         f"{H}x{W}")
    if N == 0:
        return
    with nogil:
        if index_t is int64_t:
            if floating is float:
                st = cc_max_pool2d_bwd_f32(&dy[0, 0, 0, 0], &idx[0, 0, 0, 0], N, C, H, W, OH,
                                           OW, n_threads, &dx[0, 0, 0, 0])
            else:
                st = cc_max_pool2d_bwd_f64(&dy[0, 0, 0, 0], &idx[0, 0, 0, 0], N, C, H, W, OH,
                                           OW, n_threads, &dx[0, 0, 0, 0])
        else:
            if floating is float:
                st = cc_max_pool2d_i32_bwd_f32(&dy[0, 0, 0, 0], &idx[0, 0, 0, 0], N, C, H, W,
                                               OH, OW, n_threads, &dx[0, 0, 0, 0])
            else:
                st = cc_max_pool2d_i32_bwd_f64(&dy[0, 0, 0, 0], &idx[0, 0, 0, 0], N, C, H, W,
                                               OH, OW, n_threads, &dx[0, 0, 0, 0])
    if st == CC_EINVAL:
        raise ValueError(f"indices must lie in [0, H*W) = [0, {H * W}) for input planes "
                         f"of {H}x{W}; got an index outside that range")
    _raise(st, "max_pool2d backward")


def avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                       geom, int n_threads):
    cdef cc_pool_geom g = _geom(geom, CC_POOL_AVG)
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(y.size, g.N * g.C * g.OH * g.OW, "y")
    if g.N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_avg_pool2d_fwd_f32(&x[0, 0, 0, 0], &g, n_threads, &y[0, 0, 0, 0])
        else:
            st = cc_avg_pool2d_fwd_f64(&x[0, 0, 0, 0], &g, n_threads, &y[0, 0, 0, 0])
    _raise(st, "avg_pool2d forward")


def avg_pool2d_backward(const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                        geom, int n_threads):
    cdef cc_pool_geom g = _geom(geom, CC_POOL_AVG)
    cdef int st
    _need(dy.size, g.N * g.C * g.OH * g.OW, "grad_output")
    _need(dx.size, g.N * g.C * g.H * g.W, "grad_input")
    if g.N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_avg_pool2d_bwd_f32(&dy[0, 0, 0, 0], &g, n_threads, &dx[0, 0, 0, 0])
        else:
            st = cc_avg_pool2d_bwd_f64(&dy[0, 0, 0, 0], &g, n_threads, &dx[0, 0, 0, 0])
    _raise(st, "avg_pool2d backward")


def adaptive_avg_pool2d_forward(const floating[:, :, :, ::1] x, floating[:, :, :, ::1] y,
                                int n_threads):
    cdef int64_t N = x.shape[0], C = x.shape[1], H = x.shape[2], W = x.shape[3]
    cdef int64_t OH = y.shape[2], OW = y.shape[3]
    cdef int st
    if y.shape[0] != N or y.shape[1] != C:
        raise ValueError("x and y disagree on (N, C)")
    if N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_adaptive_avg_pool2d_fwd_f32(&x[0, 0, 0, 0], N, C, H, W, OH, OW,
                                                n_threads, &y[0, 0, 0, 0])
        else:
            st = cc_adaptive_avg_pool2d_fwd_f64(&x[0, 0, 0, 0], N, C, H, W, OH, OW,
                                                n_threads, &y[0, 0, 0, 0])
    _raise(st, "adaptive_avg_pool2d forward")


def adaptive_avg_pool2d_backward(const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                                 int n_threads):
    cdef int64_t N = dx.shape[0], C = dx.shape[1], H = dx.shape[2], W = dx.shape[3]
    cdef int64_t OH = dy.shape[2], OW = dy.shape[3]
    cdef int st
    if dy.shape[0] != N or dy.shape[1] != C:
        raise ValueError("grad_output and grad_input disagree on (N, C)")
    if N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_adaptive_avg_pool2d_bwd_f32(&dy[0, 0, 0, 0], N, C, H, W, OH, OW,
                                                n_threads, &dx[0, 0, 0, 0])
        else:
            st = cc_adaptive_avg_pool2d_bwd_f64(&dy[0, 0, 0, 0], N, C, H, W, OH, OW,
                                                n_threads, &dx[0, 0, 0, 0])
    _raise(st, "adaptive_avg_pool2d backward")
