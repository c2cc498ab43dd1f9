/* Strategy TILES: im2col per image, then OpenMP over (image, L-block,
 * K-block) tiles, each a sequential GEMM on one image's columns (a 1x1
 * stride-1 layer's columns are x itself: no copy).  AUTO's pick for 1x1
 * layers (tiles_pick); it also serves memory-tight callers, needing no buffer
 * for the GEMM output.  Included by conv_impl.h inside its element-type
 * template; the shape part (applies? workspace) is compiled once. */

#ifndef CC_TILES_SHAPE
#define CC_TILES_SHAPE
static int tiles_applies(const cc_conv_geom *g) { (void)g; return 1; }

/* Fewest positions an image for BATCHED's per-image products of a 1x1
 * layer (pointwise_gemm_ok), and below which the product kernel's forward
 * pass yields to TILES (tiles_pick).  With BLAS kernels that pack all the
 * weights again for each image's product (OpenBLAS's Haswell ones), on 1x1
 * to 4x4 maps (ResNet-50 on 32x32 inputs, batch 64) the side-by-side
 * columns, whose copy is a plane memcpy, were 2.4-6.6x faster forward and
 * backward; on 7x7 maps they tied forward and were 5-10 % faster backward;
 * from 8x8 maps on the per-image products won by 5-15 %. */
#define CC_PW_GEMM_MIN_L 64

/* Fewest positions an image from which a 1x1 layer of many weights takes its
 * backward pass per image (half as many for the product kernel's small
 * layers): each image's dW product reduces over its L positions only, and
 * below this the side-by-side columns' one long reduction won (4x4 maps at
 * batch 64: 2.3 against 3.9 ms, 512 -> 256; 1x1 maps at batch 64: 0.09
 * against 0.11 ms, 64 -> 512). */
#define CC_TILES_BWD_MIN_L 32

/* Weight bytes from which a 1x1 layer of many weights on maps of fewer than
 * CC_PW_GEMM_MIN_L positions keeps the side-by-side columns beyond batch 1:
 * each image's product reads (and packs) all the weights again, from memory
 * once they no longer stay in cache.  Inside ResNet-50's training step at
 * batch 4, its 7x7 layers of 4 MiB weights (2048 -> 512, 512 -> 2048, 1024
 * -> 2048 1x1/2) ran 10-25 % slower per image than side by side, while on
 * their own (the weights in cache) they had been as fast; 1024 -> 256 on 2x2
 * maps at batch 64 (1 MiB) ran 1.3-1.5 ms per image against 0.5-0.8. */
#define CC_TILES_MAX_WEIGHT_BYTES ((int64_t)1 << 20)

/* AUTO takes TILES for 1x1 layers of one group and no padding (stride 1 or
 * 2).  Measured with OpenBLAS's AVX-512 kernels, each strategy timed alone
 * on every such layer of ResNet-18/50 (224x224 and 32x32 inputs) and
 * GoogLeNet at batches 1, 8 and 64 (2 threads): per-image products read x
 * and write y where they lie, and the BLAS's small-matrix kernels no longer
 * pack the weights for each image, so
 * - the product kernel's small layers (DIRECT) lost their backward pass
 *   everywhere (480 -> 16 on 14x14 at batch 8: 0.24 against 0.45 ms; 128 ->
 *   512 on 28x28: 4.6 against 6.9; on 1x1 maps 4-5x) and their forward pass
 *   on maps of fewer than CC_PW_GEMM_MIN_L positions (512 -> 128 on 4x4 at
 *   batch 64: 0.46 against 0.75 ms; 8 -> 512 on 1x1 at batch 32: 0.027
 *   against 0.14); from that size on the forward passes tied;
 * - the side-by-side columns lost the forward pass on 2x2 to 7x7 maps (832
 *   -> 192 on 7x7 at batch 8: 0.37 against 0.49 ms; 256 -> 1024 on 2x2 at
 *   batch 64: 0.40 against 0.55) except on 1x1 maps from batch 16, where
 *   each image's product is a matrix-vector one that reads every weight
 *   (2048 -> 512 at batch 64: 1.5 against 0.8-1.1 ms), and the backward pass
 *   from CC_TILES_BWD_MIN_L positions (832 -> 192 on 7x7 at batch 8: 0.87
 *   against 1.0 ms; 256 -> 1024 on 14x14: 4.3 against 4.7-5.1);
 * - strided 1x1 layers ran 5-25 % faster per image both ways (128 -> 256
 *   1x1/2 on 28x28 at batch 8: 0.37 against 0.49 ms forward). */
static int tiles_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    const int64_t L = g->OH * g->OW;
    if (g->groups != 1 || g->KH != 1 || g->KW != 1 || g->PH || g->PW) return 0;
    if (cc_conv_is_pointwise(g) && cc_conv_direct_ok(g))   /* (the product kernel's) */
        return backward ? L >= CC_TILES_BWD_MIN_L / 2 : L < CC_PW_GEMM_MIN_L;
    if (L < CC_PW_GEMM_MIN_L && g->N > 1 &&
        (double)g->K * g->C * elem_size >= (double)CC_TILES_MAX_WEIGHT_BYTES)
        return 0;
    if (backward) return L >= CC_TILES_BWD_MIN_L;
    return !(L == 1 && g->N >= 16);
}
/* a chunk of images' columns (C*KH*KW, L) each; none for a 1x1/stride-1/pad-0
 * layer, whose columns are x itself */
static int64_t tiles_workspace(const cc_conv_geom *g, int64_t chunk)
{
    int64_t t;
    if (cc_conv_is_pointwise(g)) return 0;
    if (!cc_prod4_ok(chunk, g->C * g->KH * g->KW, g->OH, g->OW, &t)) return -1;
    return t;
}
#endif

static int FN(fwd_tiles)(const REAL *x, const REAL *w, const REAL *b,
                         const cc_conv_geom *g, REAL *work, int64_t B,
                         int n_threads, GEMM_T gemm, REAL *y)
{
    const int pointwise = cc_conv_is_pointwise(g);
    const int64_t G = g->groups, Cg = g->C / G, Kg = g->K / G;
    const int64_t CKK = g->C * g->KH * g->KW, CKKg = Cg * g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    int64_t nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK), lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    int64_t n0;
    (void)n_threads;
    /* (a batch-1 layer whose positions and channels each fit one tile would
     * multiply on one thread: 1024 -> 256 1x1 on 14x14 ran 1.5x slower) */
    cc_min_tiles(g->N * G, L, &nlb, &lbs, Kg, &nkb, &kbs);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        const int64_t ntiles = nb * G * nlb * nkb;
        int64_t i;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
            if (!pointwise) {
#pragma omp for schedule(static)
                for (i = 0; i < FN(im2col_ntasks)(g, nb); ++i)
                    FN(im2col_task)(x + n0 * g->C * HW, g, i, nb, L, CKK * L, work);
            }
#pragma omp for schedule(dynamic, 1)
            for (i = 0; i < ntiles; ++i) {
                const int64_t kb = i % nkb, lb = (i / nkb) % nlb;
                const int64_t gi = (i / (nkb * nlb)) % G, n = i / (nkb * nlb * G);
                const int64_t l0 = lb * lbs, k0 = gi * Kg + kb * kbs;
                const int m = (int)CC_MIN(lbs, L - l0);
                const int nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                const int kk = (int)CKKg, lda = (int)L, ldb = (int)CKKg, ldc = (int)L;
                const REAL *col = pointwise ? x + (n0 + n) * g->C * HW : work + n * CKK * L;
                const REAL *a = col + gi * CKKg * L + l0;
                const REAL *bm = w + k0 * CKKg;
                REAL *c = y + ((n0 + n) * g->K + k0) * L + l0;
                const REAL one = 1;
                REAL beta = 0;
                if (b) {
                    int64_t k, l;
                    for (k = 0; k < nn; ++k)
                        for (l = 0; l < m; ++l) c[k * L + l] = b[k0 + k];
                    beta = 1;
                }
                gemm("N", "N", &m, &nn, &kk, &one, a, &lda, bm, &ldb, &beta, c, &ldc);
            }
        }
    }
    return CC_OK;
}

static int FN(bwd_tiles)(const REAL *dy, const REAL *x, const REAL *w,
                         const cc_conv_geom *g, REAL *work, int64_t B,
                         int n_threads, GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int pointwise = cc_conv_is_pointwise(g);
    const int64_t G = g->groups, Cg = g->C / G, Kg = g->K / G;
    const int64_t CKK = g->C * g->KH * g->KW, CKKg = Cg * g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    /* dW's tiles: input rows cut for about 8 tiles in all (a 256 -> 256
     * layer's gradient was one tile: one thread summed every image) */
    const int64_t wcbs = cc_split_block(CKKg, G * nkb, CC_CBLOCK), nwcb = (CKKg + wcbs - 1) / wcbs;
    /* dX's tiles: (image, positions block, input rows block), at least
     * CC_MIN_GEMM_TILES at batch 1 */
    int64_t nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK), lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    int64_t ncb = cc_nblocks(CKKg, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(CKKg, CC_CBLOCK, CC_CBLOCK);
    int64_t n0;
    (void)n_threads;
    cc_min_tiles(g->N * G, L, &nlb, &lbs, CKKg, &ncb, &cbs);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        int64_t i;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
            if (dw) {
                /* dW_g (Kg x CKKg) += dy_n,g (Kg x L) . col_n,gᵀ, one GEMM per
                 * image, images in order: each element sees the same sequence of
                 * calls whatever the thread count or chunk size. */
                const int64_t ntiles = G * nkb * nwcb;
                if (!pointwise) {
#pragma omp for schedule(static)
                    for (i = 0; i < FN(im2col_ntasks)(g, nb); ++i)
                        FN(im2col_task)(x + n0 * g->C * HW, g, i, nb, L, CKK * L, work);
                }
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < ntiles; ++i) {
                    const int64_t cb = i % nwcb, kb = (i / nwcb) % nkb, gi = i / (nwcb * nkb);
                    const int64_t c0 = cb * wcbs, k0 = gi * Kg + kb * kbs;
                    const int m = (int)CC_MIN(wcbs, CKKg - c0);
                    const int nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                    int64_t n;
                    for (n = 0; n < nb; ++n) {
                        const REAL *col = pointwise ? x + (n0 + n) * g->C * HW : work + n * CKK * L;
                        const REAL *a = col + (gi * CKKg + c0) * L;
                        const REAL *bm = dy + ((n0 + n) * g->K + k0) * L;
                        REAL *c = dw + k0 * CKKg + c0;
                        FN(gemm_tn)(gemm, m, nn, (int)L, a, (int)L, bm, (int)L, n0 + n > 0, c,
                                    (int)CKKg);
                    }
                }
            }
            if (dx) {
                /* dcol_n,g (CKKg x L) = W_gᵀ . dy_n,g, then col2im per plane */
                const int64_t ntiles = nb * G * nlb * ncb;
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < ntiles; ++i) {
                    const int64_t cb = i % ncb, lb = (i / ncb) % nlb;
                    const int64_t gi = (i / (ncb * nlb)) % G, n = i / (ncb * nlb * G);
                    const int64_t l0 = lb * lbs, c0 = cb * cbs;
                    const int m = (int)CC_MIN(lbs, L - l0);
                    const int nn = (int)CC_MIN(cbs, CKKg - c0);
                    const int kk = (int)Kg, lda = (int)L, ldb = (int)CKKg, ldc = (int)L;
                    const REAL one = 1, zero = 0;
                    REAL *dcol = pointwise ? dx + (n0 + n) * g->C * HW : work + n * CKK * L;
                    const REAL *a = dy + ((n0 + n) * g->K + gi * Kg) * L + l0;
                    const REAL *bm = w + gi * Kg * CKKg + c0;
                    REAL *c = dcol + (gi * CKKg + c0) * L + l0;
                    gemm("N", "T", &m, &nn, &kk, &one, a, &lda, bm, &ldb, &zero, c, &ldc);
                }
                if (!pointwise) {
#pragma omp for schedule(static)
                    for (i = 0; i < nb * CC_PAIRS(g->C); ++i) {
                        const int64_t n = i / CC_PAIRS(g->C), c = 2 * (i % CC_PAIRS(g->C));
                        FN(col2im_planes)(work + n * CKK * L, g, c, CC_MIN(2, g->C - c), L,
                                          dx + ((n0 + n) * g->C + c) * HW, work, work + nb * CKK * L);
                    }
                }
            }
        }
    }
    return CC_OK;
}


/* the strategy interface */
static int FN(tiles_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *y)
{
    (void)work_elems;
    return FN(fwd_tiles)(x, w, b, g, work, B, n_threads, gemm, y);
}

static int FN(tiles_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                          REAL *work, int64_t work_elems, int64_t B, int n_threads,
                          GEMM_T gemm, REAL *dx, REAL *dw)
{
    (void)work_elems;
    return FN(bwd_tiles)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
}
