/* Strategy UNROLLED: maps smaller than the kernel, as one matrix product.
 *
 * On a map of fewer pixels than the kernel has taps (a 3x3, padding-1
 * convolution of a 2x2 map: 4 pixels, 9 taps) every output position sees
 * the whole input image through only some of its taps, and im2col's columns
 * are mostly padding: BATCHED multiplies 9 taps per position where 4 meet
 * data.  Here the layer is what it is on such a map, a linear map from an
 * image (C H W values) to its output (K OH OW values): its matrix
 *
 *     Wu[(k, oh, ow), (c, ih, iw)] = w[k, c, kh, kw]  where ih = oh SH - PH + kh DH
 *                                                     and iw = ow SW - PW + kw DW,
 *                                    0                where no tap joins them,
 *
 * so that y (N, K OH OW) = x (N, C H W) . Wu^T, with x and y in their own
 * layout (no im2col, no col2im), one product of OH OW H W (instead of
 * OH OW KH KW) multiplications per output and input channel pair.  The
 * backward pass is two more products: dx = dy . Wu, and dWu = dy^T . x,
 * whose entries are summed back into the taps they belong to.
 *
 * Work is cut into blocks of output channels (Wu's rows and its product,
 * dWu and its fold) and, for dx, blocks of input channels (Wu's columns),
 * sizes fixed by the shape: every output element is reduced by one product
 * of a fixed size, whatever the thread count.  Each block's rows of Wu are
 * written by the thread that multiplies them.
 *
 * A pair that no tap joins adds w * 0 in BATCHED's sums over the padding,
 * which is NaN where w is Inf or NaN; Wu's zero entries instead multiply
 * real inputs, which an Inf or NaN input would turn to NaN where the direct
 * sum has no such product.  So every value must be finite: the forward
 * checks the weights while it writes Wu, the dispatcher checks x (and dy
 * for the backward, with the weights), and BATCHED runs otherwise.
 *
 * Included by conv_impl.h inside its element-type template, after
 * conv_regions_impl.h (rg_finite); the shape part is compiled once. */

#ifndef CC_UNROLLED_SHAPE
#define CC_UNROLLED_SHAPE
/* output (and, for dx, input) channels per block */
#define CC_UNR_KBLOCK 32
#define CC_UNR_CBLOCK 32
/* the largest image side it takes, and the most elements of Wu it writes */
#define CC_UNR_MAX_PIXELS 64
#define CC_UNR_MAX_ELEMS (1 << 26)

/* entries of Wu (or -1 on overflow) */
static int64_t unr_elems(const cc_conv_geom *g)
{
    int64_t e;
    return cc_prod4_ok(g->K * g->OH * g->OW, g->C, g->H * g->W, 1, &e) ? e : -1;
}

static int unrolled_applies(const cc_conv_geom *g)
{
    const int64_t e = unr_elems(g);
    return g->groups == 1 && g->H * g->W <= CC_UNR_MAX_PIXELS &&
           g->OH * g->OW <= CC_UNR_MAX_PIXELS && e > 0 && e <= CC_UNR_MAX_ELEMS &&
           g->N <= INT_MAX && g->C * g->H * g->W <= INT_MAX && g->K * g->OH * g->OW <= INT_MAX;
}

/* AUTO's rule: fewer pixels than taps (so fewer products than BATCHED
 * makes), and a batch large enough that the products, not writing and
 * reading Wu, are the work.  Measured (float32, 3x3 on 2x2 maps, each
 * strategy alone in its own process, 2 threads, best of 3 rounds; forward /
 * backward ms, BATCHED -> UNROLLED): 256 -> 256 channels (Wu 4 MiB) at
 * batch 8 0.32 / 0.78 -> 0.70 / 1.32, batch 32 1.14 / 2.36 -> 0.97 / 1.86,
 * batch 64 2.06 / 4.52 -> 1.32 / 2.60; 512 -> 512 (Wu 16 MiB, no longer in
 * cache) at batch 32 3.83 / 8.79 -> 4.11 / 9.08, batch 64 7.50 / 15.60 ->
 * 5.57 / 11.95. */
#define CC_UNR_MIN_C 16
#define CC_UNR_CACHED_BYTES (4 << 20)
#define CC_UNR_CACHED_MIN_BATCH 24
#define CC_UNR_AUTO_BYTES (16 << 20)
#define CC_UNR_MIN_BATCH 64
#define CC_UNR_PIXEL_MIN_BATCH 8
static int unrolled_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    const double bytes = (double)unr_elems(g) * elem_size;
    if (g->H * g->W >= g->KH * g->KW || g->C < CC_UNR_MIN_C) return 0;
    /* one pixel in, one out (a padded 3x3 on a 1x1 map): Wu is the centre
     * taps, a ninth of the weights.  Measured as above, 512 -> 512, forward
     * / backward ms, AUTO before (BATCHED, cropped from batch 18 on) ->
     * UNROLLED: batch 1 0.11 / 4.7 -> 0.31 / 2.1, batch 8 0.70 / 6.3 -> 0.33
     * / 2.0, batch 32 0.71 / 2.9 -> 0.49 / 2.5 (the planner then skips the
     * crop: cc_conv_plan_make) */
    if (g->H * g->W == 1 && g->OH * g->OW == 1)
        return backward || g->N >= CC_UNR_PIXEL_MIN_BATCH;
    return (bytes <= CC_UNR_CACHED_BYTES && g->N >= CC_UNR_CACHED_MIN_BATCH) ||
           (bytes <= CC_UNR_AUTO_BYTES && g->N >= CC_UNR_MIN_BATCH);
}

/* fixed: Wu and its gradient; nothing per image */
static int64_t unr_need(const cc_conv_geom *g, int64_t chunk)
{
    const int64_t e = unr_elems(g);
    (void)chunk;
    return e < 0 || e > CC_SIZE_MAX / 2 ? -1 : 2 * e;
}

/* what a call hands it: room for BATCHED too, which it falls back to where
 * a value is not finite */
static int64_t unrolled_workspace(const cc_conv_geom *g, int64_t chunk)
{
    return batched_or(g, chunk, unr_need);
}

/* For each output position p and input pixel i, the tap joining them
 * (kh KW + kw), or -1. */
static void unr_taps(const cc_conv_geom *g, int *tap)
{
    const int64_t P = g->OH * g->OW, HW = g->H * g->W;
    int64_t p, i;
    for (p = 0; p < P; ++p) {
        const int64_t oh = p / g->OW, ow = p % g->OW;
        for (i = 0; i < HW; ++i) {
            const int64_t dh = i / g->W - (oh * g->SH - g->PH);
            const int64_t dw = i % g->W - (ow * g->SW - g->PW);
            const int64_t kh = dh / g->DH, kw = dw / g->DW;
            tap[p * HW + i] = dh >= 0 && dw >= 0 && dh % g->DH == 0 && dw % g->DW == 0 &&
                                      kh < g->KH && kw < g->KW
                                  ? (int)(kh * g->KW + kw)
                                  : -1;
        }
    }
}
#endif

/* Rows of Wu for output channels [k0, k1); whether every weight is finite.
 * A row (k, p) is written one pixel at a time over the channels: its reads
 * (w[k], stride KH KW) and writes (stride H W) stay in the first-level cache. */
static int FN(unr_expand)(const REAL *CC_RESTRICT w, const cc_conv_geom *g, const int *tap,
                          int64_t k0, int64_t k1, REAL *CC_RESTRICT Wu)
{
    const int64_t P = g->OH * g->OW, HW = g->H * g->W, C = g->C, T = g->KH * g->KW;
    REAL z = 0;
    int64_t k, p, c, i;
    const REAL *wk = w + k0 * C * T;
#pragma omp simd reduction(+ : z)
    for (c = 0; c < (k1 - k0) * C * T; ++c) z += wk[c] * 0;
    for (k = k0; k < k1; ++k)
        for (p = 0; p < P; ++p) {
            const int *tp = tap + p * HW;
            const REAL *src = w + k * C * T;
            REAL *row = Wu + (k * P + p) * C * HW;
            for (i = 0; i < HW; ++i) {
                const int t = tp[i];
                if (t < 0)
                    for (c = 0; c < C; ++c) row[c * HW + i] = 0;
                else
                    for (c = 0; c < C; ++c) row[c * HW + i] = src[c * T + t];
            }
        }
    return z == 0;
}

/* dw for output channels [k0, k1) from their rows of dWu: each tap's
 * entries summed in the order of positions and pixels; a tap that joins no
 * pair gets 0. */
static void FN(unr_fold)(const REAL *CC_RESTRICT dWu, const cc_conv_geom *g, const int *tap,
                         int64_t k0, int64_t k1, REAL *CC_RESTRICT dw)
{
    const int64_t P = g->OH * g->OW, HW = g->H * g->W, C = g->C, T = g->KH * g->KW;
    int64_t k, c, p, i;
    for (c = 0; c < (k1 - k0) * C * T; ++c) dw[k0 * C * T + c] = 0;
    for (k = k0; k < k1; ++k)
        for (p = 0; p < P; ++p) {
            const int *tp = tap + p * HW;
            const REAL *row = dWu + (k * P + p) * C * HW;
            REAL *dst = dw + k * C * T;
            for (i = 0; i < HW; ++i) {
                const int t = tp[i];
                if (t >= 0)
                    for (c = 0; c < C; ++c) dst[c * T + t] += row[c * HW + i];
            }
        }
}

static int FN(unrolled_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                            REAL *work, int64_t work_elems, int64_t B, int n_threads,
                            GEMM_T gemm, REAL *y)
{
    const int64_t P = g->OH * g->OW, KP = g->K * P, CHW = g->C * g->H * g->W;
    const int64_t nkb = cc_ceil_div(g->K, CC_UNR_KBLOCK);
    int tap[CC_UNR_MAX_PIXELS * CC_UNR_MAX_PIXELS];
    REAL bad = 0;
    int64_t kb;
    (void)B;
    unr_taps(g, tap);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && nkb > 1)
    {
#pragma omp for schedule(static) reduction(+ : bad)
        for (kb = 0; kb < nkb; ++kb) {
            const int64_t k0 = kb * CC_UNR_KBLOCK, k1 = CC_MIN(g->K, k0 + CC_UNR_KBLOCK);
            if (!FN(unr_expand)(w, g, tap, k0, k1, work)) bad += 1;
        }
        /* (the same static schedule: each thread multiplies the rows it wrote) */
#pragma omp for schedule(static)
        for (kb = 0; kb < nkb; ++kb) {
            const int64_t k0 = kb * CC_UNR_KBLOCK, k1 = CC_MIN(g->K, k0 + CC_UNR_KBLOCK);
            const int m = (int)((k1 - k0) * P), nn = (int)g->N, kk = (int)CHW;
            const int lda = (int)CHW, ldc = (int)KP;
            const REAL one = 1, zero = 0;
            int64_t n, k, p;
            if (bad != 0) continue;
            /* y (N, KP): its block of columns = x . (rows k0 P .. k1 P of Wu)^T */
            gemm("T", "N", &m, &nn, &kk, &one, work + k0 * P * CHW, &lda, x, &lda, &zero,
                 y + k0 * P, &ldc);
            if (b)
                for (n = 0; n < g->N; ++n)
                    for (k = k0; k < k1; ++k) {
                        REAL *yy = y + n * KP + k * P;
                        for (p = 0; p < P; ++p) yy[p] += b[k];
                    }
        }
    }
    if (bad != 0) {
        /* an Inf or NaN weight: its products with the padding make NaN */
        const int64_t Bb = cc_conv_chunk(g, batched_workspace, NULL, work_elems);
        if (Bb < 1) return CC_EINVAL;
        return FN(fwd_batched)(x, w, b, g, work, Bb, n_threads, gemm, y);
    }
    return CC_OK;
}

static int FN(unrolled_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                            REAL *work, int64_t work_elems, int64_t B, int n_threads,
                            GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int64_t P = g->OH * g->OW, KP = g->K * P, HW = g->H * g->W, CHW = g->C * HW;
    const int64_t nkb = cc_ceil_div(g->K, CC_UNR_KBLOCK);
    const int64_t ncb = cc_ceil_div(g->C, CC_UNR_CBLOCK);
    REAL *Wu = work, *dWu = work + KP * CHW;
    int tap[CC_UNR_MAX_PIXELS * CC_UNR_MAX_PIXELS];
    int64_t kb, cb;
    (void)work_elems;
    (void)B;
    unr_taps(g, tap);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
    {
#pragma omp for schedule(static)
        for (kb = 0; kb < nkb; ++kb) {
            const int64_t k0 = kb * CC_UNR_KBLOCK, k1 = CC_MIN(g->K, k0 + CC_UNR_KBLOCK);
            if (dx) FN(unr_expand)(w, g, tap, k0, k1, Wu); /* (finite: checked) */
            if (dw) {
                /* rows k0 P .. k1 P of dWu = (dy's columns of the block)^T . x */
                const int m = (int)CHW, nn = (int)((k1 - k0) * P), kk = (int)g->N;
                const int lda = (int)CHW, ldb = (int)KP, ldc = (int)CHW;
                const REAL one = 1, zero = 0;
                gemm("N", "T", &m, &nn, &kk, &one, x, &lda, dy + k0 * P, &ldb, &zero,
                     dWu + k0 * P * CHW, &ldc);
                FN(unr_fold)(dWu, g, tap, k0, k1, dw);
            }
        }
        if (dx) {
            /* dx (N, CHW): its block of columns = dy . (columns c0 HW .. c1 HW of Wu) */
#pragma omp for schedule(static)
            for (cb = 0; cb < ncb; ++cb) {
                const int64_t c0 = cb * CC_UNR_CBLOCK, c1 = CC_MIN(g->C, c0 + CC_UNR_CBLOCK);
                const int m = (int)((c1 - c0) * HW), nn = (int)g->N, kk = (int)KP;
                const int lda = (int)CHW, ldb = (int)KP, ldc = (int)CHW;
                const REAL one = 1, zero = 0;
                gemm("N", "N", &m, &nn, &kk, &one, Wu + c0 * HW, &lda, dy, &ldb, &zero,
                     dx + c0 * HW, &ldc);
            }
        }
    }
    return CC_OK;
}
