# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings of the C convolution family (src_c/conv.c).

Only memory-safety checks live here: the functional layer has already
validated every argument and allocated every output.  The C core is called
with the GIL released; its status code becomes an exception afterwards.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from libc.stdlib cimport getenv
from libc.string cimport strcmp
from scipy.linalg.cython_blas cimport sgemm, dgemm

cdef extern from "convcore.h" nogil:
    ctypedef struct cc_conv_geom:
        int64_t N, C, H, W, K, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, groups
    ctypedef void (*cc_sgemm_t)(const char *, const char *, const int *, const int *,
                                const int *, const float *, const float *, const int *,
                                const float *, const int *, const float *, float *,
                                const int *)
    ctypedef void (*cc_dgemm_t)(const char *, const char *, const int *, const int *,
                                const int *, const double *, const double *, const int *,
                                const double *, const int *, const double *, double *,
                                const int *)
    int CC_OK, CC_EINVAL, CC_ENOMEM, CC_CONV_AUTO, CC_CONV_TILES, CC_CONV_BATCHED, CC_CONV_WINOGRAD, CC_CONV_DIRECT
    int CC_CONV_DEPTHWISE
    int CC_CONV_REGIONS
    int CC_CONV_UNROLLED
    int cc_conv_request_ok(int request)
    int cc_conv_plan_query(const cc_conv_geom *g, int request, int elem_size, int backward,
                           int64_t budget, int *strategy, int *cropped, int64_t *chunk,
                           int64_t *work_elems)
    const char *cc_conv_strategy_name(int id)
    int cc_conv_geom_check(const cc_conv_geom *g)
    int cc_im2col_f32(const float *x, const cc_conv_geom *g, int n_threads, float *cols)
    int cc_im2col_f64(const double *x, const cc_conv_geom *g, int n_threads, double *cols)
    int cc_col2im_f32(const float *cols, const cc_conv_geom *g, int n_threads, float *x)
    int cc_col2im_f64(const double *cols, const cc_conv_geom *g, int n_threads, double *x)
    int cc_conv2d_fwd_f32(const float *x, const float *w, const float *b,
                          const cc_conv_geom *g, int strategy, float *work, int64_t work_elems,
                          int n_threads, cc_sgemm_t gemm, float *y)
    int cc_conv2d_fwd_f64(const double *x, const double *w, const double *b,
                          const cc_conv_geom *g, int strategy, double *work, int64_t work_elems,
                          int n_threads, cc_dgemm_t gemm, double *y)
    int cc_conv2d_bwd_f32(const float *dy, const float *x, const float *w,
                          const cc_conv_geom *g, int strategy, float *work, int64_t work_elems,
                          int n_threads, cc_sgemm_t gemm,
                          float *dx, float *dw, float *db)
    int cc_conv2d_bwd_f64(const double *dy, const double *x, const double *w,
                          const cc_conv_geom *g, int strategy, double *work, int64_t work_elems,
                          int n_threads, cc_dgemm_t gemm,
                          double *dx, double *dw, double *db)
    int CC_PACK_GEMM
    int64_t cc_conv_pack_elems(const cc_conv_geom *g, int elem_size, int *kind)
    int cc_conv2d_pack_f32(const float *w, const cc_conv_geom *g, int n_threads, float *packed)
    int cc_conv2d_pack_f64(const double *w, const cc_conv_geom *g, int n_threads,
                           double *packed)
    int cc_conv2d_fwd_packed_f32(const float *x, const float *w, const float *packed,
                                 const float *b, const cc_conv_geom *g, float *work,
                                 int64_t work_elems, int n_threads, cc_sgemm_t gemm, float *y)
    int cc_conv2d_fwd_packed_f64(const double *x, const double *w, const double *packed,
                                 const double *b, const cc_conv_geom *g, double *work,
                                 int64_t work_elems, int n_threads, cc_dgemm_t gemm, double *y)
    int cc_conv_relu_pool2_ok(const cc_conv_geom *g)
    int cc_conv2d_relu_pool2_fwd_f32(const float *x, const float *w, const float *b,
                                     const cc_conv_geom *g, int n_threads, float *y)
    int cc_conv2d_relu_pool2_fwd_f64(const double *x, const double *w, const double *b,
                                     const cc_conv_geom *g, int n_threads, double *y)
    int cc_openmp_enabled()
    int cc_max_threads()
    int cc_wide_vectors()
    void cc_set_wide_vectors(int mode)
    int cc_avx2_fma()

cdef cc_sgemm_t _sgemm = <cc_sgemm_t>sgemm
cdef cc_dgemm_t _dgemm = <cc_dgemm_t>dgemm

# The core calls the BLAS from inside its own OpenMP teams, so SciPy's BLAS
# must run single-threaded during a call.  The backend hands over the BLAS's
# own set/get-num-threads functions once; every call then holds the BLAS at
# one thread and restores it when the last concurrent caller leaves.  The
# counter is only touched with the GIL held.
ctypedef void (*_set_threads_t)(int) noexcept nogil
ctypedef int (*_get_threads_t)() noexcept nogil
cdef _set_threads_t _blas_set = NULL
cdef _get_threads_t _blas_get = NULL
cdef int _blas_depth = 0
cdef int _blas_saved = 1


def set_blas_thread_functions(size_t set_addr, size_t get_addr):
    """Addresses of the BLAS's set_num_threads(int) and get_num_threads()."""
    global _blas_set, _blas_get
    if _blas_depth != 0:
        raise RuntimeError("cannot change the BLAS thread functions during a call")
    _blas_set = <_set_threads_t>set_addr
    _blas_get = <_get_threads_t>get_addr


def has_blas_thread_functions():
    return _blas_set != NULL


cdef void _blas_enter() noexcept:
    global _blas_depth, _blas_saved
    if _blas_set == NULL:
        return
    if _blas_depth == 0:
        _blas_saved = _blas_get()
        if _blas_saved != 1:
            _blas_set(1)
    _blas_depth += 1


cdef void _blas_exit() noexcept:
    global _blas_depth
    if _blas_set == NULL:
        return
    _blas_depth -= 1
    if _blas_depth == 0 and _blas_saved > 1:
        _blas_set(_blas_saved)


cdef cc_conv_geom _geom(object geom) except *:
    """The C struct of a ConvGeom (or any 16-tuple in its field order)."""
    cdef cc_conv_geom c
    cdef tuple g
    if not isinstance(geom, tuple) or len(<tuple>geom) != 16:
        raise TypeError(f"expected a ConvGeom, got {geom!r}")
    g = <tuple>geom
    c.N, c.C, c.H, c.W = g[0], g[1], g[2], g[3]
    c.K, c.KH, c.KW, c.SH, c.SW = g[4], g[5], g[6], g[7], g[8]
    c.PH, c.PW, c.DH, c.DW = g[9], g[10], g[11], g[12]
    c.OH, c.OW, c.groups = g[13], g[14], g[15]
    if cc_conv_geom_check(&c) != CC_OK:
        raise ValueError(f"inconsistent or oversized convolution geometry {geom}")
    return c


include "_common.pxi"


def openmp_enabled():
    return bool(cc_openmp_enabled())


def max_threads():
    return cc_max_threads()


def wide_vectors():
    """Whether AUTO runs the 16-value vector kernels (cc_wide_vectors)."""
    return bool(cc_wide_vectors())


def avx2_fma():
    """Whether the CPU has AVX2 and FMA (the 32-byte kernels' condition)."""
    return bool(cc_avx2_fma())


def set_wide_vectors(mode):
    """Fix wide_vectors() to 0 or 1 (tests), or -1: the CPU's answer.  The
    caller drops its cached plans."""
    cc_set_wide_vectors(int(mode))


AUTO = CC_CONV_AUTO
TILES = CC_CONV_TILES
BATCHED = CC_CONV_BATCHED
WINOGRAD = CC_CONV_WINOGRAD
DIRECT = CC_CONV_DIRECT
DEPTHWISE = CC_CONV_DEPTHWISE
REGIONS = CC_CONV_REGIONS
UNROLLED = CC_CONV_UNROLLED
#: pack_elems' kind of the GEMM-packed weights (WINOGRAD's kinds are its tile, 2 or 4)
PACK_GEMM = CC_PACK_GEMM
#: the strategies by name, in the planner's priority order
STRATEGIES = {"depthwise": CC_CONV_DEPTHWISE, "unrolled": CC_CONV_UNROLLED,
              "winograd": CC_CONV_WINOGRAD,
              "direct": CC_CONV_DIRECT, "regions": CC_CONV_REGIONS, "batched": CC_CONV_BATCHED,
              "tiles": CC_CONV_TILES}


def env_strategy():
    """The strategy CONVCORE_CONV_STRATEGY names in the process environment
    (which writes to os.environ reach): AUTO when it is unset or names none.
    Read on every call, for a fraction of os.environ's cost."""
    cdef const char *v = getenv(b"CONVCORE_CONV_STRATEGY")
    if v == NULL:
        return CC_CONV_AUTO
    if strcmp(v, b"tiles") == 0:
        return CC_CONV_TILES
    if strcmp(v, b"batched") == 0:
        return CC_CONV_BATCHED
    if strcmp(v, b"winograd") == 0:
        return CC_CONV_WINOGRAD
    if strcmp(v, b"direct") == 0:
        return CC_CONV_DIRECT
    if strcmp(v, b"depthwise") == 0:
        return CC_CONV_DEPTHWISE
    if strcmp(v, b"regions") == 0:
        return CC_CONV_REGIONS
    if strcmp(v, b"unrolled") == 0:
        return CC_CONV_UNROLLED
    return CC_CONV_AUTO


def make_plan(geom, int itemsize, int request, bint backward, int64_t budget):
    """The planner's decision for a call on `geom` (a ConvGeom) with elements
    of `itemsize` bytes and the strategy request `request` (AUTO or one of
    STRATEGIES' values): ``(strategy, cropped, chunk, work_elems)`` -- the
    strategy the forward pass (or the backward with `backward`) runs, whether
    kernel taps that meet only padding are cropped away, and the workspace
    (elements) for `chunk` images at once, as many as `budget` elements
    hold, at least one.  (WINOGRAD still runs BATCHED when the data hold
    Inf, NaN or huge values.)  ValueError where one image's workspace is
    too large."""
    cdef cc_conv_geom g = _geom(geom)
    cdef int s = 0, cropped = 0
    cdef int64_t chunk = 0, total = 0
    if not cc_conv_request_ok(request) or itemsize not in (4, 8):
        raise ValueError(f"unknown convolution strategy {request} or element size {itemsize}")
    if cc_conv_plan_query(&g, request, itemsize, backward, budget, &s, &cropped, &chunk,
                          &total) != CC_OK:
        raise ValueError(f"convolution too large for one image: geometry {geom}")
    return s, bool(cropped), chunk, total


def strategy_name(int strategy):
    """'tiles', 'batched', 'winograd', 'direct', 'depthwise', 'regions', 'unrolled'
    or 'auto'."""
    return cc_conv_strategy_name(strategy).decode()


def plan(geom, dtype="float32", strategy="auto", bint backward=False):
    """The name of the strategy a call on `geom` runs (e.g. 'batched'), with
    '+crop' appended where kernel taps that meet only padding are cropped
    away: :func:`make_plan` for a dtype and a strategy named as
    CONVCORE_CONV_STRATEGY names it ('auto' or a key of STRATEGIES)."""
    import numpy as _np
    if isinstance(strategy, str):
        if strategy != "auto" and strategy not in STRATEGIES:
            raise ValueError(f"strategy must be 'auto' or one of {sorted(STRATEGIES)}, "
                             f"got {strategy!r}")
        req = CC_CONV_AUTO if strategy == "auto" else STRATEGIES[strategy]
    else:
        req = strategy
    s, cropped, _, _ = make_plan(geom, _np.dtype(dtype).itemsize, req, backward, 0)
    name = strategy_name(s)
    return name + "+crop" if cropped else name


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, geom,
           int n_threads):
    cdef cc_conv_geom g = _geom(geom)
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(cols.size, g.N * g.C * g.KH * g.KW * g.OH * g.OW, "cols")
    if g.N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_im2col_f32(&x[0, 0, 0, 0], &g, n_threads, &cols[0, 0, 0])
        else:
            st = cc_im2col_f64(&x[0, 0, 0, 0], &g, n_threads, &cols[0, 0, 0])
    _raise(st, "im2col")


def col2im(const floating[:, :, ::1] cols, floating[:, :, :, ::1] x, geom,
           int n_threads):
    cdef cc_conv_geom g = _geom(geom)
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(cols.size, g.N * g.C * g.KH * g.KW * g.OH * g.OW, "cols")
    if g.N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_col2im_f32(&cols[0, 0, 0], &g, n_threads, &x[0, 0, 0, 0])
        else:
            st = cc_col2im_f64(&cols[0, 0, 0], &g, n_threads, &x[0, 0, 0, 0])
    _raise(st, "col2im")


def conv2d_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                   const floating[::1] b, bint has_bias, int strategy, floating[::1] work,
                   floating[:, :, :, ::1] y, geom, int n_threads):
    cdef cc_conv_geom g = _geom(geom)
    cdef const floating *bp = NULL
    cdef floating *wp = NULL
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(w.size, g.K * (g.C // g.groups) * g.KH * g.KW, "weight")
    _need(y.size, g.N * g.K * g.OH * g.OW, "y")
    if has_bias:
        _need(b.shape[0], g.K, "bias")
        bp = &b[0]
    if work.shape[0] > 0:
        wp = &work[0]
    if g.N == 0:
        return
    _blas_enter()
    with nogil:
        if floating is float:
            st = cc_conv2d_fwd_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, strategy, wp,
                                   work.shape[0], n_threads, _sgemm, &y[0, 0, 0, 0])
        else:
            st = cc_conv2d_fwd_f64(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, strategy, wp,
                                   work.shape[0], n_threads, _dgemm, &y[0, 0, 0, 0])
    _blas_exit()
    _raise(st, "conv2d forward")


def pack_elems(geom, int itemsize):
    """``(elements, kind)`` of the packed weights the forward pass of `geom`
    runs faster from (see cc_conv_pack_elems), ``(0, 0)`` where none."""
    cdef cc_conv_geom g = _geom(geom)
    cdef int kind = 0
    cdef int64_t n = cc_conv_pack_elems(&g, itemsize, &kind)
    return n, kind


def pack(const floating[:, :, :, ::1] w, geom, floating[::1] packed, int n_threads):
    """Writes the packed form of the weights `w` for `geom` into `packed`
    (pack_elems' size)."""
    cdef cc_conv_geom g = _geom(geom)
    cdef int st
    _need(w.size, g.K * (g.C // g.groups) * g.KH * g.KW, "weight")
    _need(packed.shape[0], cc_conv_pack_elems(&g, sizeof(floating), NULL), "packed")
    with nogil:
        if floating is float:
            st = cc_conv2d_pack_f32(&w[0, 0, 0, 0], &g, n_threads, &packed[0])
        else:
            st = cc_conv2d_pack_f64(&w[0, 0, 0, 0], &g, n_threads, &packed[0])
    _raise(st, "conv2d pack")


def conv2d_forward_packed(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                          const floating[::1] packed, const floating[::1] b, bint has_bias,
                          floating[::1] work, floating[:, :, :, ::1] y, geom, int n_threads):
    """conv2d_forward from the packed weights (see cc_conv2d_fwd_packed);
    the workspace is WINOGRAD's, or BATCHED's for the GEMM form."""
    cdef cc_conv_geom g = _geom(geom)
    cdef const floating *bp = NULL
    cdef floating *wp = NULL
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(w.size, g.K * (g.C // g.groups) * g.KH * g.KW, "weight")
    _need(packed.shape[0], cc_conv_pack_elems(&g, sizeof(floating), NULL), "packed")
    _need(y.size, g.N * g.K * g.OH * g.OW, "y")
    if has_bias:
        _need(b.shape[0], g.K, "bias")
        bp = &b[0]
    if work.shape[0] > 0:
        wp = &work[0]
    if g.N == 0:
        return
    _blas_enter()
    with nogil:
        if floating is float:
            st = cc_conv2d_fwd_packed_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &packed[0], bp, &g,
                                          wp, work.shape[0], n_threads, _sgemm,
                                          &y[0, 0, 0, 0])
        else:
            st = cc_conv2d_fwd_packed_f64(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &packed[0], bp, &g,
                                          wp, work.shape[0], n_threads, _dgemm,
                                          &y[0, 0, 0, 0])
    _blas_exit()
    _raise(st, "conv2d forward (packed)")


def relu_pool2_ok(geom):
    """Whether conv2d_relu_pool2_forward takes `geom` (a ConvGeom)."""
    cdef cc_conv_geom g = _geom(geom)
    return bool(cc_conv_relu_pool2_ok(&g))


def conv2d_relu_pool2_forward(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                              const floating[::1] b, bint has_bias, floating[:, :, :, ::1] y,
                              geom, int n_threads):
    """y = max_pool2d(relu(conv2d(x, w, b)), 2, 2) in one pass (DIRECT's rows
    kernel; see cc_conv2d_relu_pool2_fwd)."""
    cdef cc_conv_geom g = _geom(geom)
    cdef const floating *bp = NULL
    cdef int st
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(w.size, g.K * g.C * g.KH * g.KW, "weight")
    _need(y.size, g.N * g.K * (g.OH // 2) * (g.OW // 2), "y")
    if has_bias:
        _need(b.shape[0], g.K, "bias")
        bp = &b[0]
    if g.N == 0:
        return
    with nogil:
        if floating is float:
            st = cc_conv2d_relu_pool2_fwd_f32(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, n_threads,
                                              &y[0, 0, 0, 0])
        else:
            st = cc_conv2d_relu_pool2_fwd_f64(&x[0, 0, 0, 0], &w[0, 0, 0, 0], bp, &g, n_threads,
                                              &y[0, 0, 0, 0])
    _raise(st, "conv2d + relu + max_pool2d forward")


def conv2d_backward(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                    const floating[:, :, :, ::1] w, int strategy, floating[::1] work,
                    floating[:, :, :, ::1] dx, floating[:, :, :, ::1] dw,
                    floating[::1] db, geom, int n_threads):
    """dx, dw, db may each be None: that gradient is not computed."""
    cdef cc_conv_geom g = _geom(geom)
    cdef floating *wp = NULL
    cdef floating *dxp = NULL
    cdef floating *dwp = NULL
    cdef floating *dbp = NULL
    cdef const floating *dyp = NULL
    cdef const floating *xp = NULL
    cdef int st
    _need(dy.size, g.N * g.K * g.OH * g.OW, "grad_output")
    _need(x.size, g.N * g.C * g.H * g.W, "x")
    _need(w.size, g.K * (g.C // g.groups) * g.KH * g.KW, "weight")
    if dx is not None:
        _need(dx.size, g.N * g.C * g.H * g.W, "grad_input")
        if g.N > 0:
            dxp = &dx[0, 0, 0, 0]
    if dw is not None:
        _need(dw.size, w.size, "grad_weight")
        dwp = &dw[0, 0, 0, 0]
    if db is not None:
        _need(db.shape[0], g.K, "grad_bias")
        dbp = &db[0]
    if work is not None and work.shape[0] > 0:
        wp = &work[0]
    if g.N > 0:
        dyp = &dy[0, 0, 0, 0]
        xp = &x[0, 0, 0, 0]
    _blas_enter()
    with nogil:
        if floating is float:
            st = cc_conv2d_bwd_f32(dyp, xp, &w[0, 0, 0, 0], &g, strategy, wp,
                                   work.shape[0] if wp != NULL else 0, n_threads,
                                   _sgemm, dxp, dwp, dbp)
        else:
            st = cc_conv2d_bwd_f64(dyp, xp, &w[0, 0, 0, 0], &g, strategy, wp,
                                   work.shape[0] if wp != NULL else 0, n_threads,
                                   _dgemm, dxp, dwp, dbp)
    _blas_exit()
    _raise(st, "conv2d backward")
