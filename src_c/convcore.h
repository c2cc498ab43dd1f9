/* convcore C core: convolution, pooling and normalisation kernels for NCHW tensors.
 *
 * Conventions (see docs/contributing.rst):
 *   - sizes: N C H W (input), K (output channels), KH KW (kernel), SH SW
 *     (stride), PH PW (padding), DH DW (dilation), OH OW (output);
 *   - argument order: const inputs, sizes and hyper-parameters, workspace,
 *     n_threads, BLAS pointer, outputs;
 *   - gradients are d<name>: dx, dy, and dw, always the weight gradient
 *     (depthwise convolution is spelled out: depthwise_*);
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
 *   CC_CONV_WINOGRAD 3x3 at stride 1 or 2 (padding <= 2), or 5x5 at stride 1
 *                    (padding <= 4); dilation 1, groups 1 (cc_conv_winograd_ok;
 *                    other shapes fall back to BATCHED).  Stride 1: Winograd
 *                    F(2x2, 3x3), 16 GEMMs over the 2x2 output tiles of a
 *                    chunk of images, 2.25x fewer multiplications (5x5: four
 *                    3x3 pieces).  Stride 2: 25 GEMMs per 2x2 output tile read
 *                    from its 5x5 input patch, 1.44x fewer.  Its
 *                    rounding differs from a direct sum (the transforms add
 *                    a few roundings per term); inputs with Inf/NaN or
 *                    magnitudes near overflow take the BATCHED path.
 *   CC_CONV_AUTO     chosen from the shape, dtype and pass by the planner's
 *                    heuristics (cc_conv_auto_strategy); for float32 also
 *                    WINOGRAD where its heuristic says it pays (not on maps
 *                    of under 3x3 tiles, nor for a batch-1 forward
 *                    of a small plane with many channels).
 *                    float64 never uses WINOGRAD unless asked. */
#define CC_CONV_AUTO (-1)
#define CC_CONV_TILES 0
#define CC_CONV_BATCHED 1
#define CC_CONV_WINOGRAD 2
/*   CC_CONV_DIRECT   small layers only (cc_conv_direct_ok; others fall back to
 *                    BATCHED): the forward pass as direct loops over a padded
 *                    copy of each image, no im2col and no BLAS (vectors over
 *                    16 output channels, or along the output rows for a
 *                    layer of few output channels and wide rows); the
 *                    backward pass is BATCHED's. */
#define CC_CONV_DIRECT 3
/*   CC_CONV_DEPTHWISE one input channel per group (groups > 1): direct loops,
 *                    no workspace.  A depthwise layer always takes it, whatever
 *                    was asked for.
 * The strategies are listed, in the order AUTO tries them, by the planner
 * (conv_plan_impl.h); each lives in its own header (conv_impl.h lists them).
 * Before choosing, the planner crops kernel rows and columns that meet only
 * padding for every output position (conv_crop_impl.h): a 3x3 convolution
 * with padding 1 of a 1x1 map runs as a 1x1 one.  The cropped kernel and
 * its gradient take the front of the workspace. */
#define CC_CONV_DEPTHWISE 4
/*   CC_CONV_REGIONS  small maps (groups 1): the output plane cut into regions
 *                    whose positions see the same live taps, each a GEMM over
 *                    the columns of those taps only, so no product meets the
 *                    padding.  Sums of the direct convolution in another
 *                    order; weights (forward) or dy (backward) holding Inf or
 *                    NaN take the BATCHED path, whose dead taps make NaN. */
#define CC_CONV_REGIONS 5
/*   CC_CONV_UNROLLED maps of fewer pixels than the kernel has taps (groups 1,
 *                    at most 64 pixels in and out): the layer as the matrix
 *                    of its linear map from an image to its output, so that
 *                    the forward pass and both gradients are one product
 *                    each over whole images, with no product meeting the
 *                    padding.  Any Inf or NaN among the values takes the
 *                    BATCHED path. */
#define CC_CONV_UNROLLED 6
#define CC_CONV_NSTRATEGIES 7

/* Limits of the direct path: groups 1, a padded image of at most
 * CC_DIRECT_MAX_PAD elements (a per-thread stack buffer), at most
 * CC_DIRECT_MAX_K output channels. */
#define CC_DIRECT_MAX_K 64
#define CC_DIRECT_MAX_PAD 8192
/* AUTO takes the direct path (forward) up to this many weights (K*C*KH*KW)
 * (cc_conv_direct_auto: the forward pass's rule). */
#define CC_DIRECT_AUTO_WEIGHTS 4096
/* Pointwise layers (1x1, stride 1, no padding, groups 1) take the direct
 * product kernel, forward and dX, up to this many weights (K*C); dW stays a
 * GEMM.  Beyond it the weights no longer stay in cache. */
#define CC_PW_MAX_WEIGHTS 65536
/* BATCHED forward runs its GEMM through the same kernel up to that many
 * weights and CC_PW_MAX_K output channels (cc_conv_product_ok). */
#define CC_PW_MAX_K 128
/* BATCHED dX runs its product Wᵀ.dy through that kernel too up to that many
 * weights and CC_PW_DX_MAX_K output channels (the product's reduction). */
#define CC_PW_DX_MAX_K 32
int cc_conv_product_ok(const cc_conv_geom *g);
int cc_conv_direct_ok(const cc_conv_geom *g);
int cc_conv_direct_auto(const cc_conv_geom *g);

/* Fewest input and output channels for which AUTO picks WINOGRAD, and the
 * smallest output side for which it does at stride 2. */
#define CC_WG_MIN_CHANNELS 32
#define CC_WG_S2_MIN_SIDE 12

/* Whether WINOGRAD applies to the shape, and whether AUTO picks it (float32). */
int cc_conv_winograd_ok(const cc_conv_geom *g);
int cc_conv_winograd_auto(const cc_conv_geom *g);

/* The strategy CC_CONV_AUTO picks for float32 for the forward (backward = 0)
 * or backward (backward = 1) pass, for the shape alone (WINOGRAD may still
 * run BATCHED where the inputs hold Inf, NaN or huge values). */
int cc_conv_auto_strategy(const cc_conv_geom *g, int backward);

/* Weights packed for a layer's forward passes (inference: weights that stay
 * the same over many calls).  cc_conv_pack_elems gives the elements of the
 * packed form where the forward pass of `g` in this element size runs
 * faster from it, else 0 (float32 only); *kind (may be NULL) names the form:
 *   CC_PACK_GEMM  the weights in the layout of a GEMM kernel of our own
 *                 (AVX-512 machines; ungrouped layers of at least 2^18
 *                 weights at batch 1-2 that AUTO runs through a GEMM, 3x3
 *                 stride-1 ones only where Winograd's tiles save little);
 *   2 or 4        WINOGRAD's transformed weights (its tile): 3x3 at stride
 *                 1 where AUTO takes WINOGRAD or the layer has many channel
 *                 pairs, 5x5 at stride 1 where AUTO takes WINOGRAD.
 * The form depends on the layer's weights and on kind alone, so one packed
 * array serves every input size with the same kind.  cc_conv2d_pack writes
 * it (CC_EINVAL where the size is 0); cc_conv2d_fwd_packed is cc_conv2d_fwd
 * from it, `w` being the weights it was packed from.  WINOGRAD's forms: the
 * call falls back to `w` where x holds Inf, NaN or huge values, as WINOGRAD
 * does, takes the workspace of cc_conv2d_fwd with CC_CONV_WINOGRAD and gives
 * WINOGRAD's bits.  The GEMM form: the workspace of CC_CONV_BATCHED, and
 * sums of chains of 256 products in order, the same for every thread count
 * (float rounding from the other strategies' bits). */
#define CC_PACK_GEMM 1   /* kind of the GEMM-packed form; WINOGRAD's are 2, 4 (its tile) */
int64_t cc_conv_pack_elems(const cc_conv_geom *g, int elem_size, int *kind);
int cc_conv2d_pack_f32(const float *w, const cc_conv_geom *g, int n_threads, float *packed);
int cc_conv2d_pack_f64(const double *w, const cc_conv_geom *g, int n_threads, double *packed);
int cc_conv2d_fwd_packed_f32(const float *x, const float *w, const float *packed,
                             const float *b, const cc_conv_geom *g, float *work,
                             int64_t work_elems, int n_threads, cc_sgemm_t gemm, float *y);
int cc_conv2d_fwd_packed_f64(const double *x, const double *w, const double *packed,
                             const double *b, const cc_conv_geom *g, double *work,
                             int64_t work_elems, int n_threads, cc_dgemm_t gemm, double *y);

/* Elements of workspace needed to process `chunk` images at once with
 * `strategy` in float32 or float64 (an affine function of chunk: chunk 0
 * gives its fixed part), 0 when none is needed (depthwise, or 1x1 tiles),
 * -1 on overflow. */
int64_t cc_conv_workspace_elems(const cc_conv_geom *g, int64_t chunk, int strategy);

/* Whether `request` names a strategy (or CC_CONV_AUTO). */
int cc_conv_request_ok(int request);

/* The planner's answer for a call with elements of elem_size bytes (4 or
 * 8): the strategy its forward (backward = 0) or backward pass runs
 * (*strategy; for WINOGRAD, unless the data send it to BATCHED), whether
 * its kernel is cropped (*cropped), how many images one chunk holds
 * (*chunk: as many as `budget` elements of workspace hold, at least one, at
 * most N) and the workspace for either pass of that chunk (*work_elems).
 * strategy, cropped and chunk may be NULL.  CC_EINVAL where one image's
 * workspace overflows. */
int cc_conv_plan_query(const cc_conv_geom *g, int request, int elem_size, int backward,
                       int64_t budget, int *strategy, int *cropped, int64_t *chunk,
                       int64_t *work_elems);

/* "tiles", "batched", "winograd", "direct", "depthwise", "auto", or "". */
const char *cc_conv_strategy_name(int id);

/* Whether the 1x1 / stride 1 / padding 0 path (no im2col) applies to tiles. */
int cc_conv_is_pointwise(const cc_conv_geom *g);

/* Whether the direct depthwise path applies (C / groups == 1, groups > 1). */
int cc_conv_is_depthwise(const cc_conv_geom *g);

/* Whether AUTO runs the kernels of our own that keep 16-value vectors in
 * registers (the direct and product kernels, the packed GEMM, the fused
 * convolution + ReLU + pooling): 1 where the CPU has AVX-512 (or is not
 * x86-64), 0 elsewhere.  Without AVX-512 such a vector has no register to
 * live in: the compiler keeps it on the stack and the kernels ran 5-20x
 * slower than the GEMM paths, so AUTO takes those instead.  A strategy
 * asked for by name still runs its kernels.  cc_set_wide_vectors(0 or 1)
 * fixes the answer (for tests), -1 returns it to the CPU's; plans made
 * before a change are stale (the workspace sizes may differ). */
int cc_wide_vectors(void);
void cc_set_wide_vectors(int mode);
/* Whether the CPU has AVX2 and FMA (x86-64 with GCC; 0 elsewhere). */
int cc_avx2_fma(void);
/* Whether AUTO runs the product kernel (few weights: a thin product with
 * no BLAS packing): with the wide vectors, or in 32-byte ones where the
 * CPU has AVX2 and FMA (pw_block8 in direct_impl.h). */
int cc_product_kernel(void);
/* Whether the kernels with 32-byte versions run them: AVX2 and FMA but no
 * wide vectors (pw_block8, direct_block8, dot_tn8 in direct_impl.h). */
int cc_avx2_kernels(void);

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
 * Depthwise convolutions (C/groups == 1, groups > 1) take a direct path
 * without workspace. */
int cc_conv2d_fwd_f32(const float *x, const float *w, const float *b,
                      const cc_conv_geom *g, int strategy, float *work, int64_t work_elems,
                      int n_threads, cc_sgemm_t gemm, float *y);
int cc_conv2d_fwd_f64(const double *x, const double *w, const double *b,
                      const cc_conv_geom *g, int strategy, double *work, int64_t work_elems,
                      int n_threads, cc_dgemm_t gemm, double *y);

/* Convolution, ReLU and 2x2 / stride-2 max pooling (floor) in one pass, for
 * the layers DIRECT runs along the output rows (cc_conv_relu_pool2_ok: few
 * output channels, rows of at least 24 outputs, stride 1 -- LeNet's first
 * layer): each output plane is made in a per-thread buffer and pooled from
 * there, so the full-size output is never written.
 *   x (N, C, H, W), w (K, C, KH, KW), b (K) or NULL   [in]
 *   y (N, K, OH/2, OW/2)                              [out, overwritten]
 * The bits of DIRECT's forward pass, then ReLU, then max_pool2d(2, 2).
 * CC_EINVAL where cc_conv_relu_pool2_ok(g) is false; CC_ENOMEM. */
int cc_conv_relu_pool2_ok(const cc_conv_geom *g);
int cc_conv2d_relu_pool2_fwd_f32(const float *x, const float *w, const float *b,
                                 const cc_conv_geom *g, int n_threads, float *y);
int cc_conv2d_relu_pool2_fwd_f64(const double *x, const double *w, const double *b,
                                 const cc_conv_geom *g, int n_threads, double *y);

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

/* Geometry of one window pooling (max or average), NCHW.
 * OH/OW follow PyTorch's rule: floor((H + 2PH - DH(KH-1) - 1) / SH) + 1, or
 * the ceiling with ceil_mode, less one if the last window would start in the
 * bottom/right padding.  Padding is at most half the kernel (PH <= KH/2).
 * Average pooling needs DH = DW = 1. */
typedef struct {
    int64_t N, C, H, W;
    int64_t KH, KW, SH, SW, PH, PW, DH, DW;
    int64_t OH, OW;
    int ceil_mode;          /* OH/OW were computed with ceil_mode */
    int count_include_pad;  /* average: padding counts in the divisor */
    int64_t divisor;        /* average: divisor_override, 0 for none */
    int generic;            /* 1: skip the fast paths (tests compare both) */
} cc_pool_geom;

#define CC_POOL_MAX 0
#define CC_POOL_AVG 1

/* Checks a pooling geometry for `kind` (CC_POOL_MAX or CC_POOL_AVG): positive
 * sizes, OH/OW as above, padding at most half the kernel, for max pooling
 * every window holds at least one input element, no 64-bit overflow of any
 * buffer size.  CC_OK or CC_EINVAL. */
int cc_pool_geom_check(const cc_pool_geom *g, int kind);

/* Output length of one pooling dimension (PyTorch's rule above), or -1 when
 * the arguments are invalid or no window fits. */
int64_t cc_pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d,
                         int ceil_mode);

/* Max-pool forward, NCHW.
 *   x   (N, C, H, W)    [in]
 *   y   (N, C, OH, OW)  [out, overwritten]
 *   idx (N, C, OH, OW)  [out, overwritten] or NULL: flat h*W+w of the max
 *                        within its input plane, for the backward pass
 * Padding acts as -inf (it is never selected).  Ties: the first maximum in
 * row-major window order wins; a NaN always wins (the last NaN when a window
 * holds several, as PyTorch); a window of -inf returns -inf and the index of
 * its first element inside the input.  Parallel over (n, c) planes. */
int cc_max_pool2d_fwd_f32(const float *x, const cc_pool_geom *g, int n_threads,
                          float *y, int64_t *idx);
int cc_max_pool2d_fwd_f64(const double *x, const cc_pool_geom *g, int n_threads,
                          double *y, int64_t *idx);

/* Max-pool backward.
 * forward: y[o] = x[idx[o]]  =>  dx[i] = sum of dy[o] over every o with idx[o] = i
 *   dy  (N, C, OH, OW)  [in]
 *   idx (N, C, OH, OW)  [in] flat h*W+w within the plane, in [0, H*W)
 *   dx  (N, C, H, W)    [out, overwritten]
 * Each plane is summed by one thread in output order: identical results for
 * every thread count.  CC_EINVAL (dx partly written) if an index lies outside
 * [0, H*W). */
int cc_max_pool2d_bwd_f32(const float *dy, const int64_t *idx, int64_t N, int64_t C,
                          int64_t H, int64_t W, int64_t OH, int64_t OW, int n_threads,
                          float *dx);
int cc_max_pool2d_bwd_f64(const double *dy, const int64_t *idx, int64_t N, int64_t C,
                          int64_t H, int64_t W, int64_t OH, int64_t OW, int n_threads,
                          double *dx);

/* Max pooling with int32_t indices (half the memory of int64_t): as
 * cc_max_pool2d_fwd / cc_max_pool2d_bwd, the same maxima and the same index
 * values, for planes of fewer than 2**31 elements (H*W <= INT32_MAX; CC_EINVAL
 * otherwise).  The layers keep these for their backward pass; the public
 * functional API speaks int64_t, as PyTorch. */
int cc_max_pool2d_i32_fwd_f32(const float *x, const cc_pool_geom *g, int n_threads,
                              float *y, int32_t *idx);
int cc_max_pool2d_i32_fwd_f64(const double *x, const cc_pool_geom *g, int n_threads,
                              double *y, int32_t *idx);
int cc_max_pool2d_i32_bwd_f32(const float *dy, const int32_t *idx, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, int n_threads,
                              float *dx);
int cc_max_pool2d_i32_bwd_f64(const double *dy, const int32_t *idx, int64_t N, int64_t C,
                              int64_t H, int64_t W, int64_t OH, int64_t OW, int n_threads,
                              double *dx);

/* Average-pool forward, NCHW.
 *   x (N, C, H, W)    [in]
 *   y (N, C, OH, OW)  [out, overwritten]
 * y = (sum of the window's input elements) / divisor, summed in row-major
 * window order.  The window is [o*S - P, o*S - P + K) cut at H + PH (the
 * ceil_mode overhang past the padding never counts); the divisor is
 * g->divisor if set, else that window's size with count_include_pad, else
 * the number of input elements in it. */
int cc_avg_pool2d_fwd_f32(const float *x, const cc_pool_geom *g, int n_threads, float *y);
int cc_avg_pool2d_fwd_f64(const double *x, const cc_pool_geom *g, int n_threads, double *y);

/* Average-pool backward.
 * forward: y[o] = sum_{i in win(o)} x[i] / div(o)  =>  dx[i] = sum_{o : i in win(o)} dy[o] / div(o)
 *   dy (N, C, OH, OW)  [in]
 *   dx (N, C, H, W)    [out, overwritten]
 * Each plane is summed by one thread in output order. */
int cc_avg_pool2d_bwd_f32(const float *dy, const cc_pool_geom *g, int n_threads, float *dx);
int cc_avg_pool2d_bwd_f64(const double *dy, const cc_pool_geom *g, int n_threads, double *dx);

/* Adaptive average pooling forward, NCHW.
 *   x (N, C, H, W)    [in]
 *   y (N, C, OH, OW)  [out, overwritten]
 * Output row i averages input rows [floor(i*H/OH), ceil((i+1)*H/OH)), columns
 * likewise (PyTorch's rule).  OH = OW = 1 is global average pooling. */
int cc_adaptive_avg_pool2d_fwd_f32(const float *x, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t OH, int64_t OW, int n_threads,
                                   float *y);
int cc_adaptive_avg_pool2d_fwd_f64(const double *x, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t OH, int64_t OW, int n_threads,
                                   double *y);

/* Adaptive average pooling backward.
 * forward: y[o] = mean of x over win(o)  =>  dx[i] = sum_{o : i in win(o)} dy[o] / |win(o)|
 *   dy (N, C, OH, OW)  [in]
 *   dx (N, C, H, W)    [out, overwritten]
 * Each plane is summed by one thread in output order. */
int cc_adaptive_avg_pool2d_bwd_f32(const float *dy, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t OH, int64_t OW, int n_threads,
                                   float *dx);
int cc_adaptive_avg_pool2d_bwd_f64(const double *dy, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t OH, int64_t OW, int n_threads,
                                   double *dx);

/* Batch normalisation of x viewed as (N, C, L): every axis but the channel
 * axis (L = H*W for NCHW, 1 for (N, C)).  Each channel's N*L values are cut
 * into chunks fixed by the shape; the moments of every chunk (two passes over
 * the cache-resident chunk, in double) go to the workspace and are merged per
 * channel in chunk order (the pairwise mean/variance update).  Threads share
 * chunks, channels and the per-element pass, and every result is identical
 * for every thread count.  The per-element pass is in the input's precision.
 *
 * Doubles of workspace the batch-norm kernels need, -1 for bad sizes. */
int64_t cc_batch_norm_workspace_elems(int64_t N, int64_t C, int64_t L);

/* Batch normalisation forward.
 *   x           (N, C, L)        [in]
 *   w, b        (C) or NULL      [in] affine weight and bias (1 and 0 when NULL)
 *   rmean, rvar (C)              [in] running statistics, read when !training
 *                                     (may be NULL in training)
 *   work        work_elems >= cc_batch_norm_workspace_elems(N, C, L) doubles
 *   y           (N, C, L)        [out, overwritten]
 *   mean, var   (C), double      [out, overwritten] the statistics used: in
 *                                     training the batch mean and biased variance
 *                                     (N*L values per channel), else rmean, rvar
 * y = (x - mean) / sqrt(var + eps) * w + b.  Training needs N*L >= 1. */
int cc_batch_norm_fwd_f32(const float *x, const float *w, const float *b,
                          const float *rmean, const float *rvar, int64_t N, int64_t C,
                          int64_t L, double eps, int training, double *work,
                          int64_t work_elems, int n_threads, float *y, double *mean,
                          double *var);
int cc_batch_norm_fwd_f64(const double *x, const double *w, const double *b,
                          const double *rmean, const double *rvar, int64_t N, int64_t C,
                          int64_t L, double eps, int training, double *work,
                          int64_t work_elems, int n_threads, double *y, double *mean,
                          double *var);

/* Batch normalisation backward.
 * forward: y = xhat*w + b, xhat = (x - mean)*invstd, invstd = 1/sqrt(var + eps)
 *   =>  db = sum dy,  dw = sum dy*xhat,
 *       dx = w*invstd*(dy - db/M - xhat*dw/M)   (training: mean, var of x, M = N*L)
 *       dx = w*invstd*dy                        (eval: running statistics)
 *   dy, x       (N, C, L)        [in]
 *   w           (C) or NULL      [in] (1 when NULL)
 *   rmean, rvar (C)              [in] read when !training (may be NULL in training)
 *   work        as for the forward pass
 *   dx          (N, C, L)        [out, overwritten]
 *   dw, db      (C)              [out, overwritten] */
int cc_batch_norm_bwd_f32(const float *dy, const float *x, const float *w,
                          const float *rmean, const float *rvar, int64_t N, int64_t C,
                          int64_t L, double eps, int training, double *work,
                          int64_t work_elems, int n_threads, float *dx, float *dw,
                          float *db);
int cc_batch_norm_bwd_f64(const double *dy, const double *x, const double *w,
                          const double *rmean, const double *rvar, int64_t N, int64_t C,
                          int64_t L, double eps, int training, double *work,
                          int64_t work_elems, int n_threads, double *dx, double *dw,
                          double *db);

/* Training backward given the forward's batch statistics (mean, var: the
 * float64 values cc_batch_norm_fwd returned for this x): sum dy and
 * sum dy (x - mean) in one pass instead of the statistics again.  Same
 * arguments and results as cc_batch_norm_bwd with training = 1, within
 * float rounding of it. */
int cc_batch_norm_bwd_saved_f32(const float *dy, const float *x, const float *w,
                                const double *mean, const double *var, int64_t N, int64_t C,
                                int64_t L, double eps, double *work, int64_t work_elems,
                                int n_threads, float *dx, float *dw, float *db);
int cc_batch_norm_bwd_saved_f64(const double *dy, const double *x, const double *w,
                                const double *mean, const double *var, int64_t N, int64_t C,
                                int64_t L, double eps, double *work, int64_t work_elems,
                                int n_threads, double *dx, double *dw, double *db);

/* ReLU forward, any layout (n elements).
 *   x (n) [in];  y (n) [out, overwritten; may be x itself, else not overlapping it]
 * y = x where x > 0 or x is NaN, else +0 (as max(x, 0) with NaN propagating). */
int cc_relu_fwd_f32(const float *x, int64_t n, int n_threads, float *y);
int cc_relu_fwd_f64(const double *x, int64_t n, int n_threads, double *y);

/* ReLU backward.
 * forward: y = max(x, 0)  =>  dx = dy where x > 0, else exactly 0 (even where
 * dy is NaN or Inf; a NaN x gives 0).
 *   dy, x (n) [in];  dx (n) [out, overwritten] */
int cc_relu_bwd_f32(const float *dy, const float *x, int64_t n, int n_threads, float *dx);
int cc_relu_bwd_f64(const double *dy, const double *x, int64_t n, int n_threads, double *dx);
/* The same two over `rows` rows of `len` elements, row r of each array at
 * its pointer + r * its stride (elements, each at least len): a channel
 * slice of a batch.  The arrays must not overlap (the forward pass's y may
 * be x itself, with its stride: in place). */
int cc_relu_fwd_rows_f32(const float *x, int64_t xs, int64_t rows, int64_t len, int n_threads,
                         float *y, int64_t ys);
int cc_relu_fwd_rows_f64(const double *x, int64_t xs, int64_t rows, int64_t len,
                         int n_threads, double *y, int64_t ys);
int cc_relu_bwd_rows_f32(const float *dy, int64_t dys, const float *x, int64_t xs, int64_t rows,
                         int64_t len, int n_threads, float *dx, int64_t dxs);
int cc_relu_bwd_rows_f64(const double *dy, int64_t dys, const double *x, int64_t xs,
                         int64_t rows, int64_t len, int n_threads, double *dx, int64_t dxs);
/* The same pair with the backward pass's state as a byte mask (y > 0), a
 * quarter of a float32 output: forward writes y (may be x: in place) and
 * mask; backward dx = mask ? dy : 0 (dx may be dy). */
int cc_relu_fwd_mask_f32(const float *x, int64_t n, int n_threads, float *y, uint8_t *mask);
int cc_relu_fwd_mask_f64(const double *x, int64_t n, int n_threads, double *y, uint8_t *mask);
int cc_relu_bwd_mask_f32(const float *dy, const uint8_t *mask, int64_t n, int n_threads,
                         float *dx);
int cc_relu_bwd_mask_f64(const double *dy, const uint8_t *mask, int64_t n, int n_threads,
                         double *dx);

/* A residual block's sum, in place, with or without the ReLU after it:
 *   a (n) [in/out]: a = a + b, then a = relu(a) if relu is nonzero (NaN
 *   propagates, -0 becomes +0);  b (n) [in] must not overlap a. */
int cc_add_f32(float *a, const float *b, int64_t n, int relu, int n_threads);
int cc_add_f64(double *a, const double *b, int64_t n, int relu, int n_threads);

/* Local response normalisation across channels (PyTorch's formula), x and y
 * (N, C, L) contiguous:
 *   d_c = k + alpha/size * sum of x^2 over channels c - size/2 .. c + (size-1)/2
 *   y_c = x_c d_c^-beta
 * and its gradient dx_i = dy_i d_i^-beta - 2 beta alpha/size x_i
 * sum_{c : i in window(c)} dy_c x_c d_c^(-beta-1).  d^-0.75 is computed by
 * square roots (a few ulp from pow).  CC_ENOMEM if a thread's buffers
 * (2 C x 64 values) cannot be had. */
int cc_lrn_fwd_f32(const float *x, int64_t N, int64_t C, int64_t L, int64_t size, double alpha,
                   double beta, double k, int n_threads, float *y);
int cc_lrn_fwd_f64(const double *x, int64_t N, int64_t C, int64_t L, int64_t size, double alpha,
                   double beta, double k, int n_threads, double *y);
int cc_lrn_bwd_f32(const float *dy, const float *x, int64_t N, int64_t C, int64_t L, int64_t size,
                   double alpha, double beta, double k, int n_threads, float *dx);
int cc_lrn_bwd_f64(const double *dy, const double *x, int64_t N, int64_t C, int64_t L,
                   int64_t size, double alpha, double beta, double k, int n_threads, double *dx);

/* Cross-entropy of logits (N, K) against class indices (N) in [0, K):
 * per-row losses (double) and/or the gradient (softmax - onehot) * scale[n]
 * (scale NULL: scale0 for every row); CC_EINVAL for a target out of range. */
int cc_cross_entropy_f32(const float *logits, const int64_t *target, int64_t N, int64_t K,
                         const double *scale, double scale0, int n_threads, double *loss,
                         float *grad);
int cc_cross_entropy_f64(const double *logits, const int64_t *target, int64_t N, int64_t K,
                         const double *scale, double scale0, int n_threads, double *loss,
                         double *grad);

/* Linear layer, row-major: y = x·Wᵀ + b.  GEMMs partitioned over the OpenMP
 * team (output rows or features), each part a sequential BLAS call.
 *   x (M, K), w (N, K), b (N) or NULL      [in]
 *   y (M, N)                               [out, overwritten] */
int cc_linear_fwd_f32(const float *x, const float *w, const float *b, int64_t M, int64_t N,
                      int64_t K, int n_threads, cc_sgemm_t gemm, float *y);
int cc_linear_fwd_f64(const double *x, const double *w, const double *b, int64_t M,
                      int64_t N, int64_t K, int n_threads, cc_dgemm_t gemm, double *y);

/* Linear backward.
 * forward: y = x·Wᵀ + b  =>  dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy
 *   dy (M, N), x (M, K), w (N, K)          [in]
 *   dx (M, K) or NULL                      [out, overwritten]
 *   dw (N, K), db (N) or NULL              [out, overwritten; added to (+=)
 *                                           when accumulate is nonzero] */
int cc_linear_bwd_f32(const float *dy, const float *x, const float *w, int64_t M, int64_t N,
                      int64_t K, int accumulate, int n_threads, cc_sgemm_t gemm, float *dx,
                      float *dw, float *db);
int cc_linear_bwd_f64(const double *dy, const double *x, const double *w, int64_t M,
                      int64_t N, int64_t K, int accumulate, int n_threads, cc_dgemm_t gemm,
                      double *dx, double *dw, double *db);

/* Threads OpenMP offers (1 when built without OpenMP). */
int cc_openmp_enabled(void);
int cc_max_threads(void);

/* ---- memory: a cache of large freed blocks (mem.c) ---- */
/* Keep freed blocks of at least min_bytes, up to budget_bytes in all (a
 * budget of 0: keep none, releasing what is kept). */
void cc_mem_configure(size_t min_bytes, size_t budget_bytes);
/* A kept block of exactly `size` bytes, or NULL. */
void *cc_mem_take(size_t size);
/* Keep p (a malloc'd block of `size` bytes) for a later cc_mem_take: 1, or
 * 0 if it is not kept (the caller frees it). */
int cc_mem_keep(void *p, size_t size);
/* What is kept, and the large requests served from it and not. */
void cc_mem_stats(size_t *kept_bytes, int *blocks, unsigned long long *n_hits,
                  unsigned long long *n_misses);
/* Fault in the whole pages of [p, p + size) for writing in one call (Linux
 * 5.14+): 1 if done, 0 if not (the first writes fault them in as usual). */
int cc_mem_populate(void *p, size_t size);

#ifdef __cplusplus
}
#endif
#endif /* CONVCORE_H */
