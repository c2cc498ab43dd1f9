/* Strategy TILES: im2col per image, then OpenMP over (image, L-block,
 * K-block) tiles, each a sequential GEMM on one image's columns.  Never
 * AUTO's pick (BATCHED was as fast or faster on every measured layer); it
 * stays for memory-tight callers, needing no buffer for the GEMM output.
 * Included by conv_impl.h inside its element-type template; the shape part
 * (applies? workspace) is compiled once. */

#ifndef CC_TILES_SHAPE
#define CC_TILES_SHAPE
static int tiles_applies(const cc_conv_geom *g) { (void)g; return 1; }
static int tiles_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    (void)g, (void)elem_size, (void)backward;
    return 0;
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
    const int64_t nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK), lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    const int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    int64_t n0;
    (void)n_threads;
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
    const int64_t nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK), lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    const int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    const int64_t ncb = cc_nblocks(CKKg, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(CKKg, CC_CBLOCK, CC_CBLOCK);
    int64_t n0;
    (void)n_threads;
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        int64_t i;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
            if (dw) {
                /* dW_g (Kg x CKKg) += dy_n,g (Kg x L) . col_n,gᵀ, one GEMM per
                 * image, images in order: each element sees the same sequence of
                 * calls whatever the thread count or chunk size. */
                const int64_t ntiles = G * nkb * ncb;
                if (!pointwise) {
#pragma omp for schedule(static)
                    for (i = 0; i < FN(im2col_ntasks)(g, nb); ++i)
                        FN(im2col_task)(x + n0 * g->C * HW, g, i, nb, L, CKK * L, work);
                }
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < ntiles; ++i) {
                    const int64_t cb = i % ncb, kb = (i / ncb) % nkb, gi = i / (ncb * nkb);
                    const int64_t c0 = cb * cbs, k0 = gi * Kg + kb * kbs;
                    const int m = (int)CC_MIN(cbs, CKKg - c0);
                    const int nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                    const int kk = (int)L, lda = (int)L, ldb = (int)L, ldc = (int)CKKg;
                    const REAL one = 1;
                    int64_t n;
                    for (n = 0; n < nb; ++n) {
                        const REAL *col = pointwise ? x + (n0 + n) * g->C * HW : work + n * CKK * L;
                        const REAL *a = col + (gi * CKKg + c0) * L;
                        const REAL *bm = dy + ((n0 + n) * g->K + k0) * L;
                        REAL *c = dw + k0 * CKKg + c0;
                        const REAL beta = (n0 + n == 0) ? 0 : 1;
                        gemm("T", "N", &m, &nn, &kk, &one, a, &lda, bm, &ldb, &beta, c, &ldc);
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
