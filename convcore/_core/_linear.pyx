# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings of the C linear family (src_c/linear.c): y = x·Wᵀ + b and its
gradients as GEMMs split over the core's OpenMP team.

Only memory-safety checks live here: the functional layer has already
validated every argument, made it 2-D and C-contiguous, and allocated every
output.  SciPy's BLAS is held at one thread during the call (the hold that
the convolution bindings use), and the C core runs with the GIL released.
"""
from cython cimport floating
from libc.stdint cimport int64_t
from scipy.linalg.cython_blas cimport sgemm, dgemm

from convcore._core._conv cimport _blas_enter, _blas_exit

cdef extern from "convcore.h" nogil:
    ctypedef void (*cc_sgemm_t)(const char *, const char *, const int *, const int *,
                                const int *, const float *, const float *, const int *,
                                const float *, const int *, const float *, float *,
                                const int *)
    ctypedef void (*cc_dgemm_t)(const char *, const char *, const int *, const int *,
                                const int *, const double *, const double *, const int *,
                                const double *, const int *, const double *, double *,
                                const int *)
    int CC_OK, CC_EINVAL, CC_ENOMEM
    int cc_linear_fwd_f32(const float *x, const float *w, const float *b, int64_t M,
                          int64_t N, int64_t K, int n_threads, cc_sgemm_t gemm, float *y)
    int cc_linear_fwd_f64(const double *x, const double *w, const double *b, int64_t M,
                          int64_t N, int64_t K, int n_threads, cc_dgemm_t gemm, double *y)
    int cc_linear_bwd_f32(const float *dy, const float *x, const float *w, int64_t M,
                          int64_t N, int64_t K, int accumulate, int n_threads,
                          cc_sgemm_t gemm, float *dx, float *dw, float *db)
    int cc_linear_bwd_f64(const double *dy, const double *x, const double *w, int64_t M,
                          int64_t N, int64_t K, int accumulate, int n_threads,
                          cc_dgemm_t gemm, double *dx, double *dw, double *db)

cdef cc_sgemm_t _sgemm = <cc_sgemm_t>sgemm
cdef cc_dgemm_t _dgemm = <cc_dgemm_t>dgemm

include "_common.pxi"


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                   floating[:, ::1] y, int n_threads):
    """y = x·Wᵀ + b; b may be None."""
    cdef int64_t M = x.shape[0], N = w.shape[0], K = w.shape[1]
    cdef const floating *bp = NULL
    cdef int st
    _need(x.shape[1], K, "x columns")
    _need(y.shape[0], M, "y rows")
    _need(y.shape[1], N, "y columns")
    if b is not None:
        _need(b.shape[0], N, "bias")
        bp = &b[0]
    if M == 0:
        return
    _blas_enter()
    with nogil:
        if floating is float:
            st = cc_linear_fwd_f32(&x[0, 0], &w[0, 0], bp, M, N, K, n_threads, _sgemm,
                                   &y[0, 0])
        else:
            st = cc_linear_fwd_f64(&x[0, 0], &w[0, 0], bp, M, N, K, n_threads, _dgemm,
                                   &y[0, 0])
    _blas_exit()
    _raise(st, "linear forward")


def linear_backward(const floating[:, ::1] dy, const floating[:, ::1] x,
                    const floating[:, ::1] w, floating[:, ::1] dx, floating[:, ::1] dw,
                    floating[::1] db, bint accumulate, int n_threads):
    """dx, dw, db may each be None (not computed); with accumulate, dw and db
    are added to instead of overwritten."""
    cdef int64_t M = x.shape[0], N = w.shape[0], K = w.shape[1]
    cdef const floating *dyp = NULL
    cdef const floating *xp = NULL
    cdef floating *dxp = NULL
    cdef floating *dwp = NULL
    cdef floating *dbp = NULL
    cdef int st
    _need(x.shape[1], K, "x columns")
    _need(dy.shape[0], M, "grad_output rows")
    _need(dy.shape[1], N, "grad_output columns")
    if dx is not None:
        _need(dx.shape[0], M, "grad_input rows")
        _need(dx.shape[1], K, "grad_input columns")
        if M > 0:
            dxp = &dx[0, 0]
    if dw is not None:
        _need(dw.shape[0], N, "grad_weight rows")
        _need(dw.shape[1], K, "grad_weight columns")
        dwp = &dw[0, 0]
    if db is not None:
        _need(db.shape[0], N, "grad_bias")
        dbp = &db[0]
    if M > 0:
        dyp = &dy[0, 0]
        xp = &x[0, 0]
    _blas_enter()
    with nogil:
        if floating is float:
            st = cc_linear_bwd_f32(dyp, xp, &w[0, 0], M, N, K, accumulate, n_threads, _sgemm,
                                   dxp, dwp, dbp)
        else:
            st = cc_linear_bwd_f64(dyp, xp, &w[0, 0], M, N, K, accumulate, n_threads, _dgemm,
                                   dxp, dwp, dbp)
    _blas_exit()
    _raise(st, "linear backward")
