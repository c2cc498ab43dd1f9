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

static int relu_pool2_applies(const cc_conv_geom *g)
{
    return cc_conv_geom_check(g) == CC_OK && direct_rows_pick(g) && g->OH >= 2 && g->OW >= 2;
}

/* (where the fused kernel runs in registers: 16-value vectors with
 * AVX-512, 32-byte ones with AVX2 and FMA) */
int cc_conv_relu_pool2_ok(const cc_conv_geom *g)
{
    return relu_pool2_applies(g) && (cc_wide_vectors() || cc_avx2_fma());
}

int cc_conv_direct_auto(const cc_conv_geom *g)
{
    /* the 16-channel kernel lost to BATCHED (0.5-0.7x) on rows of 28-32
     * with at most 27 values per column (3 -> 16..64 3x3 on 32x32, 1 -> 32
     * 3x3 on 28x28): there the columns are cheap to build */
    const int64_t CKK = g->C * g->KH * g->KW;
    /* (without AVX-512 the kernels that have AVX2 versions: the channel
     * and product kernels, direct_block8 and pw_block8, and the rows
     * kernel, depthwise_fwd_blocks_narrow) */
    if (!cc_wide_vectors() && !cc_avx2_fma()) return 0;
    return direct_rows_pick(g) ||
           (direct_channels_auto(g) && (cc_conv_is_pointwise(g) || g->OW < 24 || CKK >= 64));
}

/* BATCHED's columns (bytes) from which the rows kernel's layers take dW by
 * per-plane sums (dw_planes): measured (dW only, 2 threads) on LeNet's first
 * layer, BATCHED ran 0.13 / 0.23 ms at batch 32 / 64 (5 MB of columns,
 * dw_planes 0.16 / 0.30) and then fell off a cliff as its columns left the
 * cache: 0.64 ms at batch 80, 3.8 ms at 256 (dw_planes 0.38, 1.17).  Since
 * dw_planes sums three output channels at once (planes_wgrad_k), 5x5
 * kernels take it at any batch (dW and db, 2 threads: LeNet's first layer
 * at batch 4 / 16 / 64 0.023 / 0.070 / 0.149 ms against BATCHED's 0.024 /
 * 0.096 / 0.178; 3 -> 6 on 32x32 at 64 0.35 against 0.42).  3x3 kernels,
 * with fewer products a load, keep the threshold, as first measured on 5x5
 * ones (not re-measured for 3x3: 3 -> 8 on 32x32 at batch 64, past it, ran
 * 0.31 against BATCHED's 0.25). */
#define CC_PLANES_DW_COLS_BYTES ((int64_t)11 << 19)   /* 5.5 MiB */

static int direct_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    /* (small 1x1 layers: the product kernel's forward pass on maps of
     * CC_PW_GEMM_MIN_L positions or more, TILES or BATCHED elsewhere: see
     * tiles_pick) */
    if (cc_conv_is_pointwise(g) && backward) return 0;
    /* (without AVX-512: the forward pass's AVX2 kernels, float32 unless
     * pointwise; see cc_conv_direct_auto) */
    if (!cc_wide_vectors() &&
        (backward || (elem_size != (int)sizeof(float) && !cc_conv_is_pointwise(g))))
        return 0;
    if (tiles_pick(g, elem_size, backward)) return 0;
    if (!backward) return cc_conv_direct_auto(g);
    return direct_channels_auto(g) ||
           (direct_rows_pick(g) &&
            ((g->KH == 5 && g->KW == 5 && g->SH == 1 && g->DH == 1 && g->DW == 1) ||
             (double)g->C * g->KH * g->KW * g->N * g->OH * g->OW * elem_size >=
                 (double)CC_PLANES_DW_COLS_BYTES));
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

/* Images a task of dw_planes takes (its x planes and dy then stay in cache
 * while every (k, c) pair is summed over them). */
#define CC_PLANES_DW_IMAGES 8

/* dW of a layer the rows kernel runs (few output channels, wide rows,
 * stride 1), by the depthwise kernel's per-plane sums: dW[k][c] = sum over
 * images n of the sums of dy[n, k] times x[n, c] padded, under each tap.
 * Tasks are fixed chunks of images; each sums into its own double slots,
 * which are then added in task order, so the result does not depend on the
 * thread count.  The padded rows and columns meet zeros, so x and dy must be
 * finite (an Inf there would make a NaN the definition does not have): the
 * caller has checked.  Returns 0 if memory cannot be had: the caller then
 * sums otherwise. */
static int FN(dw_planes)(const REAL *dy, const REAL *x, const cc_conv_geom *g, int n_threads,
                         REAL *dw)
{
    const int64_t KK = g->KH * g->KW, CKK = g->C * KK, HW = g->H * g->W;
    /* each padded plane followed by the vector scratch its sums use */
    const int64_t ps = cc_depthwise_pad_elems(g);
    const int64_t OWV = cc_depthwise_dy_cols(g), dyn = cc_depthwise_dy_rows(g) * OWV;
    const int64_t ntask = (g->N + CC_PLANES_DW_IMAGES - 1) / CC_PLANES_DW_IMAGES;
    /* CC_WGK output channels at a time (planes_wgrad_k) where the kernel
     * has its shapes, else one at a time (depthwise_wgrad_plane); dy of
     * every channel of an image copied first (the last block's missing
     * channels zero) */
    const int kblock = g->SH == 1 && g->DH == 1 && g->DW == 1 && (g->KW == 3 || g->KW == 5);
    const int64_t nky = (g->K + CC_WGK - 1) / CC_WGK * CC_WGK;
    double *parts;
    int64_t t, i;
    int failed = 0;
    if (KK > CC_DEPTHWISE_MAX_TAPS) return 0;
    parts = (double *)calloc((size_t)(ntask * g->K * CKK), sizeof(double));
    if (!parts) return 0;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && ntask > 1) reduction(| : failed)
    {
        REAL *xp = (REAL *)malloc((size_t)(g->C * ps + nky * dyn) * sizeof(REAL));
        REAL *dyb = xp ? xp + g->C * ps : NULL;
        if (!xp) failed = 1;
        if (dyb)
            for (i = 0; i < nky * dyn; ++i) dyb[i] = 0;   /* rows and columns past dy stay 0 */
#pragma omp for schedule(dynamic, 1)
        for (t = 0; t < ntask; ++t) {
            double *part = parts + t * g->K * CKK;
            const int64_t n1 = CC_MIN(g->N, (t + 1) * CC_PLANES_DW_IMAGES);
            int64_t n, c, k, oh;
            if (!xp) continue;
            for (n = t * CC_PLANES_DW_IMAGES; n < n1; ++n) {
                for (c = 0; c < g->C; ++c)
                    FN(depthwise_fwd_plane_pad)(x + (n * g->C + c) * HW, g, xp + c * ps);
                for (k = 0; k < g->K; ++k)
                    for (oh = 0; oh < g->OH; ++oh)
                        memcpy(dyb + k * dyn + oh * OWV, dy + ((n * g->K + k) * g->OH + oh) * g->OW,
                               (size_t)g->OW * sizeof(REAL));
                for (k = 0; k < g->K; k += kblock ? CC_WGK : 1)
                    for (c = 0; c < g->C; ++c) {
                        double *pk = part + k * CKK + c * KK;
                        if (kblock)
                            FN(planes_wgrad_k)(xp + c * ps, dyb + k * dyn, dyn,
                                               CC_MIN(CC_WGK, g->K - k), g, pk, CKK);
                        else
                            FN(depthwise_wgrad_plane)(xp + c * ps, dyb + k * dyn, g, pk);
                    }
            }
        }
        free(xp);
    }
    if (!failed)
        for (i = 0; i < g->K * CKK; ++i) {
            double s = 0;
            for (t = 0; t < ntask; ++t) s += parts[t * g->K * CKK + i];
            dw[i] = (REAL)s;
        }
    free(parts);
    return !failed;
}

static int FN(direct_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *dx, REAL *dw)
{
    /* small layers: dW by the direct loops, then dX through BATCHED (same
     * workspace); pointwise: dW through BATCHED, dX by the product kernel
     * with the weights transposed */
    const int pw = cc_conv_is_pointwise(g);
    REAL *dw_batched = NULL;
    if (dw && !pw) {
        /* dW by per-plane sums (the rows kernel's layers) or the direct
         * loops; with Inf/NaN in x or dy by BATCHED's products, whose zeros
         * of the padding meet dy as the definition's do (the loops skip
         * them, and the plane sums add zeros past the plane) */
        if (!FN(all_finite)(x, g->N * g->C * g->H * g->W) ||
            !FN(all_finite)(dy, g->N * g->K * g->OH * g->OW))
            dw_batched = dw;
        else if (!(direct_rows_pick(g) && FN(dw_planes)(dy, x, g, n_threads, dw)))
            FN(dw_direct)(dy, x, g, work, B, n_threads, dw);
    }
    if (!dx && !(dw && pw) && !dw_batched) return CC_OK;
    B = cc_conv_chunk(g, batched_workspace, NULL, work_elems);
    if (B == 0) return CC_EINVAL;
    if (!pw) return FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, dx, dw_batched);
    if (dw) {
        const int st = FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, NULL, dw);
        if (st != CC_OK) return st;
    }
    return dx ? FN(pointwise)(dy, w, NULL, g, 1, n_threads, dx) : CC_OK;
}

int FN(cc_conv2d_relu_pool2_fwd)(const REAL *x, const REAL *w, const REAL *b,
                                 const cc_conv_geom *g, int n_threads, REAL *y)
{
    if (!x || !w || !y || n_threads < 1 || !relu_pool2_applies(g)) return CC_EINVAL;
    if (g->N == 0) return CC_OK;
    return FN(fwd_planes_pool2)(x, w, b, g, n_threads, y);
}
