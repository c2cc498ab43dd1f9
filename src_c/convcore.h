/* convcore C core: convolution and pooling kernels for NCHW tensors.
 *
 * Conventions (see STYLE.md):
 *   - sizes: N C H W (input), K (output channels), KH KW (kernel), SH SW
 *     (stride), PH PW (padding), DH DW (dilation), OH OW (output);
 *   - argument order: const inputs, sizes and hyper-parameters, workspace,
 *     n_threads, BLAS pointer, outputs;
 *   - every kernel returns CC_OK or an error code; none prints or exits;
 *   - the caller validates arguments; kernels only re-check what would make
 *     them read or write out of bounds.
 *
 * GEMM is never linked: the caller hands in a Fortran-ABI sgemm/dgemm pointer
 * (scipy.linalg.cython_blas at run time, a naive reference in C tests).  The
 * core calls it from inside its own OpenMP teams, so the BLAS it is given
 * must run sequentially during the call.
 */
#ifndef CONVCORE_H
#define CONVCORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CC_OK 0
#define CC_EINVAL 1
#define CC_ENOMEM 2

typedef void (*cc_sgemm_t)(const char *transa, const char *transb,
                           const int *m, const int *n, const int *k,
                           const float *alpha, const float *a, const int *lda,
                           const float *b, const int *ldb,
                           const float *beta, float *c, const int *ldc);
typedef void (*cc_dgemm_t)(const char *transa, const char *transb,
                           const int *m, const int *n, const int *k,
                           const double *alpha, const double *a, const int *lda,
                           const double *b, const int *ldb,
                           const double *beta, double *c, const int *ldc);

/* Geometry of one convolution, shared by conv and im2col/col2im.
 * Cg = C / groups input channels and Kg = K / groups output channels per group. */
typedef struct {
    int64_t N, C, H, W;
    int64_t K, KH, KW;
    int64_t SH, SW, PH, PW, DH, DW;
    int64_t OH, OW;
    int64_t groups;
} cc_conv_geom;

/* Checks that a geometry is self-consistent (positive sizes, OH/OW follow
 * from the others, no 64-bit overflow of any buffer size).  CC_OK or CC_EINVAL. */
int cc_conv_geom_check(const cc_conv_geom *g);

/* How a convolution is cut into work for the threads.  All parallelism is
 * OpenMP over tiles whose sizes depend on the shapes alone, each tile a
 * sequential BLAS call that never splits the reduction dimension, so every
 * output element is reduced in the same order for any thread count.  (A BLAS
 * threading one large GEMM itself changes its blocking with the thread count.)
 *   CC_CONV_TILES    per image: columns (C*KH*KW, L), GEMM tiles of one image;
 *                    the 1x1/stride-1/pad-0 case reads x directly.
 *   CC_CONV_BATCHED  a chunk of nb images side by side, columns (C*KH*KW, nb*L),
 *                    so that small images still make long GEMMs.
 *   CC_CONV_AUTO     chosen from the shape (cc_conv_auto_strategy). */
#define CC_CONV_AUTO (-1)
#define CC_CONV_TILES 0
#define CC_CONV_BATCHED 1

/* The strategy CC_CONV_AUTO picks for the forward (backward = 0) or backward
 * (backward = 1) pass. */
int cc_conv_auto_strategy(const cc_conv_geom *g, int backward);

/* Elements of workspace needed to process `chunk` images at once with
 * `strategy` (an affine function of chunk: chunk 0 gives its fixed part),
 * 0 when none is needed (depthwise, or 1x1 tiles), -1 on overflow. */
int64_t cc_conv_workspace_elems(const cc_conv_geom *g, int64_t chunk, int strategy);

/* Whether the 1x1 / stride 1 / padding 0 path (no im2col) applies to tiles. */
int cc_conv_is_pointwise(const cc_conv_geom *g);

/* Whether the direct depthwise path applies (C / groups == 1). */
int cc_conv_is_depthwise(const cc_conv_geom *g);

/* im2col, NCHW, torch `unfold` layout.
 *   x    (N, C, H, W)                 [in]
 *   cols (N, C*KH*KW, OH*OW)          [out, overwritten]; padding reads as 0 */
int cc_im2col_f32(const float *x, const cc_conv_geom *g, int n_threads, float *cols);
int cc_im2col_f64(const double *x, const cc_conv_geom *g, int n_threads, double *cols);

/* col2im, torch `fold` layout; the adjoint of im2col.
 *   cols (N, C*KH*KW, OH*OW)          [in]
 *   x    (N, C, H, W)                 [out, overwritten] sum of every column
 *                                      entry that im2col copied from it
 * Parallel over (n, c) planes only; each plane is summed in a fixed order. */
int cc_col2im_f32(const float *cols, const cc_conv_geom *g, int n_threads, float *x);
int cc_col2im_f64(const double *cols, const cc_conv_geom *g, int n_threads, double *x);

/* Convolution forward (cross-correlation), NCHW.
 *   x    (N, C, H, W)                 [in]
 *   w    (K, C/groups, KH, KW)        [in]
 *   b    (K) or NULL                  [in]
 *   work workspace of work_elems >= cc_conv_workspace_elems(g, 1, strategy)
 *   y    (N, K, OH, OW)               [out, overwritten]
 * y[n,k] = b[k] + sum_{c in group(k), kh, kw} w[k,c,kh,kw] * xpad[n,c,oh*SH+kh*DH,ow*SW+kw*DW]
 * The batch is processed in chunks of as many images as `work` holds.
 * Depthwise convolutions (C/groups == 1) take a direct path without workspace. */
int cc_conv2d_fwd_f32(const float *x, const float *w, const float *b,
                      const cc_conv_geom *g, int strategy, float *work, int64_t work_elems,
                      int n_threads, cc_sgemm_t gemm, float *y);
int cc_conv2d_fwd_f64(const double *x, const double *w, const double *b,
                      const cc_conv_geom *g, int strategy, double *work, int64_t work_elems,
                      int n_threads, cc_dgemm_t gemm, double *y);

/* Convolution backward.
 * forward: y = W·col(x) + b  =>  dW = dy·colᵀ, dcol = Wᵀ·dy, dx = col2im(dcol), db = Σ dy
 *   dy   (N, K, OH, OW)               [in]
 *   x    (N, C, H, W)                 [in]
 *   w    (K, C/groups, KH, KW)        [in]
 *   dx   (N, C, H, W) or NULL         [out, overwritten]
 *   dw   (K, C/groups, KH, KW) or NULL [out, overwritten]
 *   db   (K) or NULL                  [out, overwritten]
 * Every output element is reduced in an order fixed by the shapes alone, so
 * results are identical for every thread count and every repeat. */
int cc_conv2d_bwd_f32(const float *dy, const float *x, const float *w,
                      const cc_conv_geom *g, int strategy, float *work, int64_t work_elems,
                      int n_threads, cc_sgemm_t gemm,
                      float *dx, float *dw, float *db);
int cc_conv2d_bwd_f64(const double *dy, const double *x, const double *w,
                      const cc_conv_geom *g, int strategy, double *work, int64_t work_elems,
                      int n_threads, cc_dgemm_t gemm,
                      double *dx, double *dw, double *db);

/* Threads OpenMP offers (1 when built without OpenMP). */
int cc_openmp_enabled(void);
int cc_max_threads(void);

#ifdef __cplusplus
}
#endif
#endif /* CONVCORE_H */
