# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Bindings of the C normalisation family (src_c/norm.c): batch norm and ReLU.

Only memory-safety checks live here: the functional layer has already
validated every argument and allocated every output.  The C core is called
with the GIL released; its status code becomes an exception afterwards.
Batch-norm tensors arrive as (N, C, L) views, ReLU tensors flattened.
"""
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t

cdef extern from "convcore.h" nogil:
    int CC_OK, CC_EINVAL, CC_ENOMEM
    int64_t cc_batch_norm_workspace_elems(int64_t N, int64_t C, int64_t L)
    int cc_batch_norm_fwd_f32(const float *x, const float *w, const float *b,
                              const float *rmean, const float *rvar, int64_t N, int64_t C,
                              int64_t L, double eps, int training, double *work,
                              int64_t work_elems, int n_threads, float *y, double *mean,
                              double *var)
    int cc_batch_norm_fwd_f64(const double *x, const double *w, const double *b,
                              const double *rmean, const double *rvar, int64_t N, int64_t C,
                              int64_t L, double eps, int training, double *work,
                              int64_t work_elems, int n_threads, double *y, double *mean,
                              double *var)
    int cc_batch_norm_bwd_f32(const float *dy, const float *x, const float *w,
                              const float *rmean, const float *rvar, int64_t N, int64_t C,
                              int64_t L, double eps, int training, double *work,
                              int64_t work_elems, int n_threads, float *dx, float *dw,
                              float *db)
    int cc_batch_norm_bwd_f64(const double *dy, const double *x, const double *w,
                              const double *rmean, const double *rvar, int64_t N, int64_t C,
                              int64_t L, double eps, int training, double *work,
                              int64_t work_elems, int n_threads, double *dx, double *dw,
                              double *db)
    int cc_batch_norm_bwd_saved_f32(const float *dy, const float *x, const float *w,
                                    const double *mean, const double *var, int64_t N,
                                    int64_t C, int64_t L, double eps, double *work,
                                    int64_t work_elems, int n_threads, float *dx, float *dw,
                                    float *db)
    int cc_batch_norm_bwd_saved_f64(const double *dy, const double *x, const double *w,
                                    const double *mean, const double *var, int64_t N,
                                    int64_t C, int64_t L, double eps, double *work,
                                    int64_t work_elems, int n_threads, double *dx,
                                    double *dw, double *db)
    int cc_cross_entropy_f32(const float *logits, const int64_t *target, int64_t N, int64_t K,
                             const double *scale, double scale0, int n_threads, double *loss,
                             float *grad)
    int cc_cross_entropy_f64(const double *logits, const int64_t *target, int64_t N,
                             int64_t K, const double *scale, double scale0, int n_threads,
                             double *loss, double *grad)
    int cc_lrn_fwd_f32(const float *x, int64_t N, int64_t C, int64_t L, int64_t size,
                       double alpha, double beta, double k, int n_threads, float *y)
    int cc_lrn_fwd_f64(const double *x, int64_t N, int64_t C, int64_t L, int64_t size,
                       double alpha, double beta, double k, int n_threads, double *y)
    int cc_lrn_bwd_f32(const float *dy, const float *x, int64_t N, int64_t C, int64_t L,
                       int64_t size, double alpha, double beta, double k, int n_threads,
                       float *dx)
    int cc_lrn_bwd_f64(const double *dy, const double *x, int64_t N, int64_t C, int64_t L,
                       int64_t size, double alpha, double beta, double k, int n_threads,
                       double *dx)
    int cc_add_f32(float *a, const float *b, int64_t n, int relu, int n_threads)
    int cc_add_f64(double *a, const double *b, int64_t n, int relu, int n_threads)
    int cc_relu_fwd_f32(const float *x, int64_t n, int n_threads, float *y)
    int cc_relu_fwd_f64(const double *x, int64_t n, int n_threads, double *y)
    int cc_relu_bwd_f32(const float *dy, const float *x, int64_t n, int n_threads, float *dx)
    int cc_relu_fwd_rows_f32(const float *x, int64_t xs, int64_t rows, int64_t len,
                             int n_threads, float *y, int64_t ys)
    int cc_relu_fwd_rows_f64(const double *x, int64_t xs, int64_t rows, int64_t len,
                             int n_threads, double *y, int64_t ys)
    int cc_relu_bwd_rows_f32(const float *dy, int64_t dys, const float *x, int64_t xs,
                             int64_t rows, int64_t len, int n_threads, float *dx, int64_t dxs)
    int cc_relu_bwd_rows_f64(const double *dy, int64_t dys, const double *x, int64_t xs,
                             int64_t rows, int64_t len, int n_threads, double *dx, int64_t dxs)
    int cc_relu_bwd_f64(const double *dy, const double *x, int64_t n, int n_threads,
                        double *dx)
    int cc_relu_fwd_mask_f32(const float *x, int64_t n, int n_threads, float *y,
                             uint8_t *mask)
    int cc_relu_fwd_mask_f64(const double *x, int64_t n, int n_threads, double *y,
                             uint8_t *mask)
    int cc_relu_bwd_mask_f32(const float *dy, const uint8_t *mask, int64_t n, int n_threads,
                             float *dx)
    int cc_relu_bwd_mask_f64(const double *dy, const uint8_t *mask, int64_t n, int n_threads,
                             double *dx)


include "_common.pxi"


cdef inline const floating *_opt(const floating[::1] a, bint present, int64_t C,
                                 str name) except? NULL:
    """Pointer to a per-channel array of C elements, or NULL when absent."""
    if not present:
        return NULL
    _need(a.shape[0], C, name)
    if C == 0:
        return NULL
    return &a[0]


cdef double *_work(double[::1] work, int64_t N, int64_t C, int64_t L) except NULL:
    """The workspace's pointer, once it is known to be large enough."""
    if work.shape[0] < workspace_elems(N, C, L) or work.shape[0] == 0:
        raise ValueError(f"batch_norm workspace has {work.shape[0]} elements, expected at "
                         f"least {workspace_elems(N, C, L)}")
    return &work[0]


def workspace_elems(int64_t N, int64_t C, int64_t L):
    """Doubles of workspace batch_norm_forward/backward need for x (N, C, L)."""
    cdef int64_t n = cc_batch_norm_workspace_elems(N, C, L)
    if n < 0:
        raise ValueError(f"batch_norm: input of shape ({N}, {C}, {L}) is too large")
    return n


def batch_norm_forward(const floating[:, :, ::1] x, const floating[::1] w,
                       const floating[::1] b, const floating[::1] rmean,
                       const floating[::1] rvar, bint has_w, bint has_b, bint training,
                       double eps, double[::1] work, floating[:, :, ::1] y,
                       double[::1] mean, double[::1] var, int n_threads):
    """y, and the statistics used in mean and var (see cc_batch_norm_fwd)."""
    cdef int64_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef const floating *wp = _opt(w, has_w, C, "weight")
    cdef const floating *bp = _opt(b, has_b, C, "bias")
    cdef const floating *mp = _opt(rmean, not training, C, "running_mean")
    cdef const floating *vp = _opt(rvar, not training, C, "running_var")
    cdef const floating *xp = NULL
    cdef floating *yp = NULL
    cdef double *wk
    cdef int st
    if y.shape[0] != N or y.shape[1] != C or y.shape[2] != L:
        raise ValueError("x and y disagree on their shape")
    _need(mean.shape[0], C, "mean")
    _need(var.shape[0], C, "var")
    if C == 0:
        return
    wk = _work(work, N, C, L)
    if N * L > 0:
        xp = &x[0, 0, 0]
        yp = &y[0, 0, 0]
    with nogil:
        if floating is float:
            st = cc_batch_norm_fwd_f32(xp, wp, bp, mp, vp, N, C, L, eps, training, wk,
                                       work.shape[0], n_threads, yp, &mean[0], &var[0])
        else:
            st = cc_batch_norm_fwd_f64(xp, wp, bp, mp, vp, N, C, L, eps, training, wk,
                                       work.shape[0], n_threads, yp, &mean[0], &var[0])
    _raise(st, "batch_norm forward")


def batch_norm_backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                        const floating[::1] w, const floating[::1] rmean,
                        const floating[::1] rvar, bint has_w, bint training, double eps,
                        double[::1] work, floating[:, :, ::1] dx, floating[::1] dw,
                        floating[::1] db, int n_threads, const double[::1] smean=None,
                        const double[::1] svar=None):
    """dx, dw, db (see cc_batch_norm_bwd); in training, with the forward's
    float64 batch statistics smean and svar, cc_batch_norm_bwd_saved."""
    cdef int64_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef const floating *wp = _opt(w, has_w, C, "weight")
    cdef const floating *mp = _opt(rmean, not training, C, "running_mean")
    cdef const floating *vp = _opt(rvar, not training, C, "running_var")
    cdef const floating *xp = NULL
    cdef const floating *gp = NULL
    cdef floating *op = NULL
    cdef double *wk
    cdef int st
    if (dy.shape[0] != N or dy.shape[1] != C or dy.shape[2] != L or dx.shape[0] != N
            or dx.shape[1] != C or dx.shape[2] != L):
        raise ValueError("x, grad_output and grad_input disagree on their shape")
    _need(dw.shape[0], C, "grad_weight")
    _need(db.shape[0], C, "grad_bias")
    if C == 0:
        return
    wk = _work(work, N, C, L)
    if N * L > 0:
        xp = &x[0, 0, 0]
        gp = &dy[0, 0, 0]
        op = &dx[0, 0, 0]
    cdef const double *smp = NULL
    cdef const double *svp = NULL
    if training and smean is not None and svar is not None:
        _need(smean.shape[0], C, "saved mean")
        _need(svar.shape[0], C, "saved var")
        smp = &smean[0]
        svp = &svar[0]
    with nogil:
        if smp != NULL:
            if floating is float:
                st = cc_batch_norm_bwd_saved_f32(gp, xp, wp, smp, svp, N, C, L, eps, wk,
                                                 work.shape[0], n_threads, op, &dw[0], &db[0])
            else:
                st = cc_batch_norm_bwd_saved_f64(gp, xp, wp, smp, svp, N, C, L, eps, wk,
                                                 work.shape[0], n_threads, op, &dw[0], &db[0])
        elif floating is float:
            st = cc_batch_norm_bwd_f32(gp, xp, wp, mp, vp, N, C, L, eps, training, wk,
                                       work.shape[0], n_threads, op, &dw[0], &db[0])
        else:
            st = cc_batch_norm_bwd_f64(gp, xp, wp, mp, vp, N, C, L, eps, training, wk,
                                       work.shape[0], n_threads, op, &dw[0], &db[0])
    _raise(st, "batch_norm backward")


def lrn_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, int64_t size, double alpha,
                double beta, double k, int n_threads):
    """Local response normalisation of x (N, C, L) into y."""
    cdef int64_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef int st
    if y.shape[0] != N or y.shape[1] != C or y.shape[2] != L:
        raise ValueError("x and y disagree on their shape")
    if N * C * L == 0:
        return
    with nogil:
        if floating is float:
            st = cc_lrn_fwd_f32(&x[0, 0, 0], N, C, L, size, alpha, beta, k, n_threads,
                                &y[0, 0, 0])
        else:
            st = cc_lrn_fwd_f64(&x[0, 0, 0], N, C, L, size, alpha, beta, k, n_threads,
                                &y[0, 0, 0])
    _raise(st, "local response norm forward")


def lrn_backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
                 floating[:, :, ::1] dx, int64_t size, double alpha, double beta, double k,
                 int n_threads):
    """The gradient of lrn_forward with respect to x, into dx."""
    cdef int64_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef int st
    if (dy.shape[0] != N or dy.shape[1] != C or dy.shape[2] != L or dx.shape[0] != N
            or dx.shape[1] != C or dx.shape[2] != L):
        raise ValueError("x, grad_output and grad_input disagree on their shape")
    if N * C * L == 0:
        return
    with nogil:
        if floating is float:
            st = cc_lrn_bwd_f32(&dy[0, 0, 0], &x[0, 0, 0], N, C, L, size, alpha, beta, k,
                                n_threads, &dx[0, 0, 0])
        else:
            st = cc_lrn_bwd_f64(&dy[0, 0, 0], &x[0, 0, 0], N, C, L, size, alpha, beta, k,
                                n_threads, &dx[0, 0, 0])
    _raise(st, "local response norm backward")


def relu_forward(const floating[::1] x, floating[::1] y, int n_threads):
    """y = relu(x); y may be x itself (in place) but not overlap it otherwise."""
    cdef int64_t n = x.shape[0]
    cdef int st
    _need(y.shape[0], n, "y")
    if n == 0:
        return
    if (<const void *>&x[0] != <const void *>&y[0] and <const char *>&x[0] < <const char *>&y[n - 1] + sizeof(y[0])
            and <const char *>&y[0] < <const char *>&x[n - 1] + sizeof(x[0])):
        raise ValueError("relu forward: y overlaps x without being x")
    with nogil:
        if floating is float:
            st = cc_relu_fwd_f32(&x[0], n, n_threads, &y[0])
        else:
            st = cc_relu_fwd_f64(&x[0], n, n_threads, &y[0])
    _raise(st, "relu forward")


def relu_backward(const floating[::1] dy, const floating[::1] x, floating[::1] dx,
                  int n_threads):
    cdef int64_t n = x.shape[0]
    cdef int st
    _need(dy.shape[0], n, "grad_output")
    _need(dx.shape[0], n, "grad_input")
    if n == 0:
        return
    with nogil:
        if floating is float:
            st = cc_relu_bwd_f32(&dy[0], &x[0], n, n_threads, &dx[0])
        else:
            st = cc_relu_bwd_f64(&dy[0], &x[0], n, n_threads, &dx[0])
    _raise(st, "relu backward")


cdef inline int64_t _row_stride(Py_ssize_t stride, Py_ssize_t inner, Py_ssize_t item,
                                Py_ssize_t rows, Py_ssize_t n) except -1:
    """A (rows, n) view's row stride in elements; its rows must be
    contiguous, in order and apart (a whole number of elements, at least n)."""
    if rows == 1:
        stride = n * item
    if inner != item or stride < n * item or stride % item:
        raise ValueError("rows must be contiguous, in order and not overlapping, a whole "
                         "number of elements apart")
    return stride // item


def relu_forward_rows(const floating[:, :] x, floating[:, :] y, int n_threads):
    """y = relu(x) for two (rows, len) arrays whose rows lie apart (a channel
    slice of a batch, as a 2-D view); they must not overlap."""
    cdef int64_t rows = x.shape[0], n = x.shape[1], xs, ys
    cdef int st
    if y.shape[0] != rows or y.shape[1] != n:
        raise ValueError("x and y differ in shape")
    if rows == 0 or n == 0:
        return
    xs = _row_stride(x.strides[0], x.strides[1], sizeof(floating), rows, n)
    ys = _row_stride(y.strides[0], y.strides[1], sizeof(floating), rows, n)
    with nogil:
        if floating is float:
            st = cc_relu_fwd_rows_f32(&x[0, 0], xs, rows, n, n_threads, &y[0, 0], ys)
        else:
            st = cc_relu_fwd_rows_f64(&x[0, 0], xs, rows, n, n_threads, &y[0, 0], ys)
    _raise(st, "relu forward")


def relu_backward_rows(const floating[:, :] dy, const floating[:, :] x,
                       floating[:, :] dx, int n_threads):
    """relu_backward for (rows, len) arrays whose rows lie apart; dx must
    overlap neither."""
    cdef int64_t rows = x.shape[0], n = x.shape[1], gs, xs, os
    cdef int st
    if (dy.shape[0] != rows or dy.shape[1] != n or dx.shape[0] != rows or dx.shape[1] != n):
        raise ValueError("grad_output, x and grad_input differ in shape")
    if rows == 0 or n == 0:
        return
    gs = _row_stride(dy.strides[0], dy.strides[1], sizeof(floating), rows, n)
    xs = _row_stride(x.strides[0], x.strides[1], sizeof(floating), rows, n)
    os = _row_stride(dx.strides[0], dx.strides[1], sizeof(floating), rows, n)
    with nogil:
        if floating is float:
            st = cc_relu_bwd_rows_f32(&dy[0, 0], gs, &x[0, 0], xs, rows, n, n_threads,
                                      &dx[0, 0], os)
        else:
            st = cc_relu_bwd_rows_f64(&dy[0, 0], gs, &x[0, 0], xs, rows, n, n_threads,
                                      &dx[0, 0], os)
    _raise(st, "relu backward")


def add(floating[::1] a, const floating[::1] b, bint relu, int n_threads):
    """a += b in place, then a = relu(a) if ``relu``; b may not overlap a."""
    cdef int64_t n = a.shape[0]
    cdef int st
    _need(b.shape[0], n, "b")
    if n == 0:
        return
    if (<const char *>&a[0] < <const char *>&b[n - 1] + sizeof(b[0])
            and <const char *>&b[0] < <const char *>&a[n - 1] + sizeof(a[0])):
        raise ValueError("add: the operands overlap")
    with nogil:
        if floating is float:
            st = cc_add_f32(&a[0], &b[0], n, relu, n_threads)
        else:
            st = cc_add_f64(&a[0], &b[0], n, relu, n_threads)
    _raise(st, "add")


def relu_forward_mask(const floating[::1] x, floating[::1] y, uint8_t[::1] mask,
                      int n_threads):
    """y = relu(x) (y may be x) and mask = y > 0, in one pass."""
    cdef int64_t n = x.shape[0]
    cdef int st
    _need(y.shape[0], n, "y")
    _need(mask.shape[0], n, "mask")
    if n == 0:
        return
    with nogil:
        if floating is float:
            st = cc_relu_fwd_mask_f32(&x[0], n, n_threads, &y[0], &mask[0])
        else:
            st = cc_relu_fwd_mask_f64(&x[0], n, n_threads, &y[0], &mask[0])
    _raise(st, "relu forward")


def relu_backward_mask(const floating[::1] dy, const uint8_t[::1] mask, floating[::1] dx,
                       int n_threads):
    """dx = dy where mask, else exactly 0 (dx may be dy)."""
    cdef int64_t n = mask.shape[0]
    cdef int st
    _need(dy.shape[0], n, "grad_output")
    _need(dx.shape[0], n, "grad_input")
    if n == 0:
        return
    with nogil:
        if floating is float:
            st = cc_relu_bwd_mask_f32(&dy[0], &mask[0], n, n_threads, &dx[0])
        else:
            st = cc_relu_bwd_mask_f64(&dy[0], &mask[0], n, n_threads, &dx[0])
    _raise(st, "relu backward")


def cross_entropy(const floating[:, ::1] logits, const int64_t[::1] target,
                  const double[::1] scale, double scale0, double[::1] loss,
                  floating[:, ::1] grad, int n_threads):
    """Per-row losses into loss and/or the gradient into grad (each may be
    None); scale (per row) may be None.  Returns False, writing nothing, when
    a target lies outside [0, K)."""
    cdef int64_t N = logits.shape[0], K = logits.shape[1]
    cdef const double *sp = NULL
    cdef double *lp = NULL
    cdef floating *gp = NULL
    cdef const floating *xp = NULL
    cdef const int64_t *tp = NULL
    cdef int st
    _need(target.shape[0], N, "target")
    if scale is not None:
        _need(scale.shape[0], N, "scale")
        if N > 0:
            sp = &scale[0]
    if loss is not None:
        _need(loss.shape[0], N, "loss")
        if N > 0:
            lp = &loss[0]
    if grad is not None:
        _need(grad.shape[0] * grad.shape[1], N * K, "grad")
        if N > 0:
            gp = &grad[0, 0]
    if N > 0:
        xp = &logits[0, 0]
        tp = &target[0]
    with nogil:
        if floating is float:
            st = cc_cross_entropy_f32(xp, tp, N, K, sp, scale0, n_threads, lp, gp)
        else:
            st = cc_cross_entropy_f64(xp, tp, N, K, sp, scale0, n_threads, lp, gp)
    if st == CC_EINVAL:
        return False
    _raise(st, "cross_entropy")
    return True
