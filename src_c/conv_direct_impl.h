/* Strategy DIRECT: small layers (cc_conv_direct_ok).  The forward pass runs
 * as direct loops over a padded copy of each image, no im2col and no BLAS
 * (fwd_direct in direct_impl.h); a pointwise layer (1x1, stride 1, no
 * padding) as the product kernel over x itself.  The backward pass: dW by
 * the direct loops (pointwise: through BATCHED), dX through BATCHED
 * (pointwise: the product kernel with the weights transposed), in the same
 * workspace.  Included by conv_impl.h inside its element-type template; the
 * shape part is compiled once. */

#ifndef CC_DIRECT_SHAPE
#define CC_DIRECT_SHAPE
int cc_conv_direct_ok(const cc_conv_geom *g)
{
    /* pointwise: the product kernel (direct_impl.h), no padded copy */
    if (cc_conv_is_pointwise(g)) return g->groups == 1 && g->K * g->C <= CC_PW_MAX_WEIGHTS;
    /* the padded copy: C x (H + 2PH) x (W + 2PW), bounded here with 6 SW
     * columns to spare */
    const int64_t wpp = g->W + 2 * g->PW + 6 * g->SW, hp = g->H + 2 * g->PH;
    return g->groups == 1 && g->K <= CC_DIRECT_MAX_K && wpp <= CC_DIRECT_MAX_PAD &&
           hp <= CC_DIRECT_MAX_PAD && g->C * hp * wpp <= CC_DIRECT_MAX_PAD;
}

/* The 16-channel kernel's rule, as first measured (2 threads): LeNet's
 * second layer (16 channels) 2x faster than BATCHED; with fewer than 12
 * output channels most of a 16-channel vector idles and BATCHED is as
 * fast; wider layers are faster through BLAS.  (The backward pass's rule.) */
static int direct_channels_auto(const cc_conv_geom *g)
{
    if (cc_conv_is_pointwise(g)) return cc_conv_direct_ok(g);
    return cc_conv_direct_ok(g) && g->K >= 12 && g->K * g->C * g->KH * g->KW <= CC_DIRECT_AUTO_WEIGHTS;
}

/* Whether the forward pass runs along the output rows (fwd_planes): few
 * output channels and rows that fill at least 3/4 of the 32 columns of a
 * block.  Measured at batch 64 and 1000 (forward, 2 threads): LeNet's
 * 1 -> 6 5x5 on 28x28 1.5x faster than BATCHED, 3 -> 6..8 on 32x32 1.3-1.7x;
 * from 16 output channels, or on rows of 10-14, BATCHED was faster. */
static int direct_rows_pick(const cc_conv_geom *g)
{
    return !cc_conv_is_pointwise(g) && cc_conv_direct_ok(g) && cc_direct_planes_ok(g) &&
           g->K < 16 && g->OW >= 24;
}

int cc_conv_direct_auto(const cc_conv_geom *g)
{
    /* the 16-channel kernel lost to BATCHED (0.5-0.7x) on rows of 28-32
     * with at most 27 values per column (3 -> 16..64 3x3 on 32x32, 1 -> 32
     * 3x3 on 28x28): there the columns are cheap to build */
    const int64_t CKK = g->C * g->KH * g->KW;
    return direct_rows_pick(g) ||
           (direct_channels_auto(g) && (cc_conv_is_pointwise(g) || g->OW < 24 || CKK >= 64));
}

static int direct_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    (void)elem_size;
    return backward ? direct_channels_auto(g) : cc_conv_direct_auto(g);
}

/* what the direct loops use: fixed, the kernel (forward) or its gradient
 * (dW) in 16-channel blocks; per image, dy transposed into 16-channel
 * vectors (dW) */
static int64_t direct_need(const cc_conv_geom *g, int64_t chunk)
{
    const int64_t k16 = (g->K + 15) / 16 * 16;
    int64_t fixed, per;
    if (!cc_prod4_ok(k16, g->C, g->KH, g->KW, &fixed) || !cc_prod4_ok(chunk, k16, g->OH, g->OW, &per) ||
        per > CC_SIZE_MAX - fixed)
        return -1;
    return fixed + per;
}

/* what a call hands it: BATCHED's workspace, which holds the above too
 * (the backward pass runs its dX, or a pointwise dW, through BATCHED) */
static int64_t direct_workspace(const cc_conv_geom *g, int64_t chunk)
{
    return batched_workspace(g, chunk);
}
#endif

/* the strategy interface */
static int FN(direct_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *y)
{
    (void)work_elems, (void)B, (void)gemm;
    if (cc_conv_is_pointwise(g)) return FN(pointwise)(x, w, b, g, 0, n_threads, y);
    if (direct_rows_pick(g)) return FN(fwd_planes)(x, w, b, g, n_threads, y);
    return FN(fwd_direct)(x, w, b, g, work, n_threads, y);
}

static int FN(direct_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *dx, REAL *dw)
{
    /* small layers: dW by the direct loops, then dX through BATCHED (same
     * workspace); pointwise: dW through BATCHED, dX by the product kernel
     * with the weights transposed */
    const int pw = cc_conv_is_pointwise(g);
    if (dw && !pw) FN(dw_direct)(dy, x, g, work, B, n_threads, dw);
    if (!dx && !(dw && pw)) return CC_OK;
    B = cc_conv_chunk(g, batched_workspace, NULL, work_elems);
    if (B == 0) return CC_EINVAL;
    if (!pw) return FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, dx, NULL);
    if (dw) {
        const int st = FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, NULL, dw);
        if (st != CC_OK) return st;
    }
    return dx ? FN(pointwise)(dy, w, NULL, g, 1, n_threads, dx) : CC_OK;
}
