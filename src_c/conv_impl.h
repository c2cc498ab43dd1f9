/* Body of the convolution family, instantiated once per element type by
 * conv.c with REAL (float/double), SFX (f32/f64) and GEMM_T defined. */

#define CC_CAT2(a, b) a##_##b
#define CC_CAT(a, b) CC_CAT2(a, b)
#define FN(name) CC_CAT(name, SFX)

/* Fixed tile sizes.  They depend on nothing but these constants, so the
 * order in which any output element is reduced is the same for every
 * thread count (see conv2d_bwd). */
#define CC_LBLOCK 1024   /* output positions per GEMM tile */
#define CC_LSPLIT 2048   /* L up to this is one tile */
#define CC_KBLOCK 256    /* output channels per GEMM tile */
#define CC_CBLOCK 256    /* C*KH*KW rows per GEMM tile */

/* im2col of rows [r0, r1) and output positions [l0, l1) of one image.
 *   x   (C, H, W)        [in]  one image
 *   col                  [out] position l of row r at col + r*ldc + (l - l0) */
static void FN(im2col_span)(const REAL *CC_RESTRICT x, const cc_conv_geom *g,
                            int64_t r0, int64_t r1, int64_t l0, int64_t l1,
                            int64_t ldc, REAL *CC_RESTRICT col)
{
    const int64_t H = g->H, W = g->W, OW = g->OW;
    const int64_t KH = g->KH, KW = g->KW;
    int64_t r;
    if (l1 <= l0) return;
    for (r = r0; r < r1; ++r) {
        const int64_t c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        const int64_t hoff = kh * g->DH - g->PH, woff = kw * g->DW - g->PW;
        const REAL *xc = x + c * H * W;
        REAL *row = col + r * ldc;
        int64_t lo, hi, oh;
        cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
        for (oh = l0 / OW; oh * OW < l1; ++oh) {
            /* the positions of output row oh in [l0, l1): ow in [a, e) */
            const int64_t ih = oh * g->SH + hoff, base = oh * OW;
            const int64_t a = CC_MAX(l0 - base, 0), e = CC_MIN(l1 - base, OW);
            const int64_t va = CC_MAX(a, lo), ve = CC_MIN(e, hi);
            REAL *d = row + (base + a - l0);   /* d[ow - a]: position base + ow */
            const REAL *src;
            int64_t ow;
            if (ih < 0 || ih >= H || ve <= va) {
                for (ow = a; ow < e; ++ow) d[ow - a] = 0;
                continue;
            }
            src = xc + ih * W + woff;
            for (ow = a; ow < va; ++ow) d[ow - a] = 0;
            if (g->SW == 1) {
                for (ow = va; ow < ve; ++ow) d[ow - a] = src[ow];
            } else {
                const int64_t SW = g->SW;
                for (ow = va; ow < ve; ++ow) d[ow - a] = src[ow * SW];
            }
            for (ow = ve; ow < e; ++ow) d[ow - a] = 0;
        }
    }
}

/* im2col of rows [r0, r1) of one image, all positions: row r at col + r*ldc */
static void FN(im2col_rows)(const REAL *CC_RESTRICT x, const cc_conv_geom *g,
                            int64_t r0, int64_t r1, int64_t ldc, REAL *CC_RESTRICT col)
{
    FN(im2col_span)(x, g, r0, r1, 0, g->OH * g->OW, ldc, col);
}

/* the vector kernels: direct, pointwise and depthwise */
#include "direct_impl.h"

/* col2im of planes c .. c + nc - 1 of one image (nc 1 or 2): each plane is
 * overwritten with the sum of its column entries, added in the fixed order
 * (kh, kw, oh, ow).
 *   col (C*KH*KW, L) [in] one image, row r at col + r*ldc, readable in
 *   [col_lo, col_end);  x (nc, H, W) [out] planes c .. */
CC_CLONES static void FN(col2im_planes)(const REAL *CC_RESTRICT col, const cc_conv_geom *g,
                                        int64_t c, int64_t nc, int64_t ldc, REAL *CC_RESTRICT x,
                                        const REAL *col_lo, const REAL *col_end)
{
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW;
    const int64_t KH = g->KH, KW = g->KW;
    int64_t kh, kw, i;
    if (g->SW == 1 && KW <= CC_C2I_MAX_KW) {
        FN(col2im_rows_s1)(col, g, c, nc, ldc, x, col_lo, col_end);
        return;
    }
    if (nc > 1) {
        for (i = 0; i < nc; ++i)
            FN(col2im_planes)(col, g, c + i, 1, ldc, x + i * H * W, col_lo, col_end);
        return;
    }
    for (i = 0; i < H * W; ++i) x[i] = 0;
    for (kh = 0; kh < KH; ++kh) {
        const int64_t hoff = kh * g->DH - g->PH;
        int64_t ohlo, ohhi;
        cc_valid_range(H, OH, g->SH, hoff, &ohlo, &ohhi);
        for (kw = 0; kw < KW; ++kw) {
            const int64_t woff = kw * g->DW - g->PW;
            const REAL *src = col + ((c * KH + kh) * KW + kw) * ldc;
            const int64_t SW = g->SW;
            int64_t lo, hi, oh, ow;
            cc_valid_range(W, OW, SW, woff, &lo, &hi);
            for (oh = ohlo; oh < ohhi; ++oh) {
                REAL *dst = x + (oh * g->SH + hoff) * W + woff;
                const REAL *s = src + oh * OW;
                for (ow = lo; ow < hi; ++ow) dst[ow * SW] += s[ow];
            }
        }
    }
}

int FN(cc_im2col)(const REAL *x, const cc_conv_geom *g, int n_threads, REAL *cols)
{
    int64_t CKK, L, total, i;
    if (!x || !cols || n_threads < 1 || cc_conv_geom_check(g) != CC_OK) return CC_EINVAL;
    CKK = g->C * g->KH * g->KW;
    L = g->OH * g->OW;
    total = g->N * CKK;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && total > 1) schedule(static)
    for (i = 0; i < total; ++i) {
        const int64_t n = i / CKK, r = i % CKK;
        FN(im2col_rows)(x + n * g->C * g->H * g->W, g, r, r + 1, L, cols + n * CKK * L);
    }
    return CC_OK;
}

int FN(cc_col2im)(const REAL *cols, const cc_conv_geom *g, int n_threads, REAL *x)
{
    int64_t CKK, L, total, i;
    if (!x || !cols || n_threads < 1 || cc_conv_geom_check(g) != CC_OK) return CC_EINVAL;
    CKK = g->C * g->KH * g->KW;
    L = g->OH * g->OW;
    total = g->N * CC_PAIRS(g->C);
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && total > 1) schedule(static)
    for (i = 0; i < total; ++i) {
        const int64_t n = i / CC_PAIRS(g->C), c = 2 * (i % CC_PAIRS(g->C));
        FN(col2im_planes)(cols + n * CKK * L, g, c, CC_MIN(2, g->C - c), L,
                          x + (n * g->C + c) * g->H * g->W, cols, cols + g->N * CKK * L);
    }
    return CC_OK;
}

/* ------------------------------------------------------------------ */
/* Strategy CC_CONV_TILES: OpenMP over (image, L-block, K-block) tiles, each a
 * sequential GEMM on one image's columns.  Column layout per image
 * (C*KH*KW, L); a chunk of B images takes B*C*KH*KW*L workspace. */

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
                for (i = 0; i < nb * CKK; ++i) {
                    const int64_t n = i / CKK, r = i % CKK;
                    FN(im2col_rows)(x + (n0 + n) * g->C * HW, g, r, r + 1, L, work + n * CKK * L);
                }
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
                    for (i = 0; i < nb * CKK; ++i) {
                        const int64_t n = i / CKK, r = i % CKK;
                        FN(im2col_rows)(x + (n0 + n) * g->C * HW, g, r, r + 1, L, work + n * CKK * L);
                    }
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

/* ------------------------------------------------------------------ */
/* Strategy CC_CONV_BATCHED: the columns of a chunk of nb images side by side,
 * (C*KH*KW, nb*L): row r, image n, position l at r*nb*L + n*L + l, so small
 * images still make long GEMMs.  A second buffer T (K, nb*L) holds the GEMM
 * output (forward) or dy transposed (backward).  The GEMMs are cut into tiles
 * of fixed size, each a sequential BLAS call inside the OpenMP team; no tile
 * splits the reduction dimension.  Workspace per image: (C*KH*KW + K) * L. */

static int FN(fwd_batched)(const REAL *x, const REAL *w, const REAL *b,
                           const cc_conv_geom *g, REAL *work, int64_t B,
                           int n_threads, GEMM_T gemm, REAL *y)
{
    const int64_t G = g->groups, Cg = g->C / G, Kg = g->K / G;
    const int64_t CKK = g->C * g->KH * g->KW, CKKg = Cg * g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    int64_t n0;
    if (G == 1 && cc_conv_product_ok(g)) {
        /* few weights: the product kernel, no BLAS packing; it builds each
         * block of columns itself, from x, and writes y, so it needs no
         * workspace and takes the whole batch */
        REAL *Mt = FN(pw_packed)(w, g->K, CKK, CKK, 1);
        if (Mt) {   /* (else through BLAS below) */
            const int st = FN(pw_images)(Mt, g->K, CKK, x, g->N, L, b, n_threads, y, g);
            free(Mt);
            return st;
        }
    }
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0), nbL = nb * L;
        const int64_t nmb = cc_nblocks(nbL, CC_LSPLIT, CC_LBLOCK), mbs = cc_blocksize(nbL, CC_LSPLIT, CC_LBLOCK);
        const int64_t ntiles = G * nmb * nkb;
        REAL *cols = work, *T = work + CKK * nbL;
        int64_t i;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
#pragma omp for schedule(static)
            for (i = 0; i < nb * CKK; ++i) {
                const int64_t r = i / nb, n = i % nb;
                FN(im2col_rows)(x + (n0 + n) * g->C * HW, g, r, r + 1, nbL, cols + n * L);
            }
#pragma omp for schedule(dynamic, 1)
            for (i = 0; i < ntiles; ++i) {
                const int64_t kb = i % nkb, mb = (i / nkb) % nmb, gi = i / (nkb * nmb);
                const int64_t m0 = mb * mbs, k0 = gi * Kg + kb * kbs;
                const int m = (int)CC_MIN(mbs, nbL - m0), nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                const int kk = (int)CKKg, lda = (int)nbL, ldb = (int)CKKg, ldc = (int)nbL;
                const REAL one = 1, zero = 0;
                gemm("N", "N", &m, &nn, &kk, &one, cols + gi * CKKg * nbL + m0, &lda,
                     w + k0 * CKKg, &ldb, &zero, T + k0 * nbL + m0, &ldc);
            }
#pragma omp for schedule(static)
            for (i = 0; i < nb * g->K; ++i) {
                const int64_t n = i / g->K, k = i % g->K;
                const REAL *src = T + k * nbL + n * L;
                REAL *dst = y + ((n0 + n) * g->K + k) * L;
                const REAL bk = b ? b[k] : 0;
                int64_t l;
                for (l = 0; l < L; ++l) dst[l] = src[l] + bk;
            }
        }
    }
    return CC_OK;
}

/* Column elements a thin dX task keeps (256 KiB of float32: in a core's L2
 * between the product and col2im). */
#define CC_DXT_COL_ELEMS 65536

/* dX of a thin layer (groups 1, K <= CC_PW_DX_MAX_K) with its columns kept in
 * cache.  Each task is a group of gs images: its thread copies their dy into
 * T (K x ldp, ldp = gs*L rounded up to whole product blocks, zero past gs*L),
 * forms dcols = Wᵀ.T (CKK x gs*L) with the product kernel, then col2im's the
 * group's planes from it.  The sums and their order are the batched path's.
 * `work` holds per-thread buffers of `per` elements.  Returns 0 if `avail`
 * elements hold none (the caller takes the batched path). */
static int FN(dx_thin)(const REAL *dy, const REAL *Wt, const cc_conv_geom *g, REAL *work,
                       int64_t avail, int n_threads, REAL *dx)
{
    const int64_t K = g->K, CKK = g->C * g->KH * g->KW, L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t pb = FN(pw_block_positions)();
    /* readable values past the columns: col2im's last pieces read whole
     * vectors (masked) */
    const int64_t tail = g->PW + g->W + pb;
    /* (and at least two tasks a thread where there are images for them) */
    int64_t gs = CC_MAX(1, CC_MIN(CC_DXT_COL_ELEMS / CC_MAX(1, CKK * L), g->N / (2 * n_threads)));
    int64_t ldp, per, ntask, nt, t;
    for (;;) {
        ldp = (gs * L + pb - 1) / pb * pb;
        per = CKK * gs * L + tail + K * ldp + pb;
        if (per <= avail || gs == 1) break;
        gs = (gs + 1) / 2;
    }
    nt = CC_MIN((int64_t)n_threads, avail / per);
    if (nt < 1) return 0;
    ntask = (g->N + gs - 1) / gs;
#pragma omp parallel num_threads((int)nt) if (nt > 1 && ntask > 1)
    {
        REAL *cols = work + CC_THREAD_NUM() * per, *T = cols + CKK * gs * L + tail;
        REAL *scratch = T + K * ldp;
#pragma omp for schedule(static)
        for (t = 0; t < ntask; ++t) {
            const int64_t n0 = t * gs, nb = CC_MIN(gs, g->N - n0), nbL = nb * L;
            int64_t k, n, q, c;
            for (k = 0; k < K; ++k) {
                REAL *dst = T + k * ldp;
                for (n = 0; n < nb; ++n)
                    memcpy(dst + n * L, dy + ((n0 + n) * K + k) * L, (size_t)L * sizeof(REAL));
                for (q = nbL; q < ldp; ++q) dst[q] = 0;
            }
            for (q = 0; q < nbL; q += pb)
                FN(pw_positions)(Wt, CKK, K, T + q, ldp, CC_MIN(pb, nbL - q), cols + q, nbL, scratch);
            for (n = 0; n < nb; ++n)
                for (c = 0; c < g->C; c += 2)
                    FN(col2im_planes)(cols + n * L, g, c, CC_MIN(2, g->C - c), nbL,
                                      dx + ((n0 + n) * g->C + c) * HW, cols, cols + CKK * nbL + tail);
        }
    }
    return 1;
}

static int FN(bwd_batched)(const REAL *dy, const REAL *x, const REAL *w,
                           const cc_conv_geom *g, REAL *work, int64_t B,
                           int n_threads, GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int64_t G = g->groups, Cg = g->C / G, Kg = g->K / G;
    const int64_t CKK = g->C * g->KH * g->KW, CKKg = Cg * g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    const int64_t wcbs = cc_split_block(CKKg, G * nkb, CC_CBLOCK), nwcb = (CKKg + wcbs - 1) / wcbs;
    const int64_t ncb = cc_nblocks(CKKg, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(CKKg, CC_CBLOCK, CC_CBLOCK);
    /* a thin dX product (few output channels to reduce over): the product
     * kernel, no BLAS packing or output clearing */
    REAL *Wt = dx && G == 1 && g->K <= CC_PW_DX_MAX_K && g->K * CKK <= CC_PW_MAX_WEIGHTS
                   ? FN(pw_packed)(w, CKK, g->K, 1, CKK) : NULL;
    int64_t n0;
    (void)n_threads;
    /* the thin dX with its columns in cache where the workspace has room
     * for a thread's buffers, else below, chunk by chunk */
    if (Wt && FN(dx_thin)(dy, Wt, g, work, cc_conv_workspace_elems(g, B, CC_CONV_BATCHED),
                          n_threads, dx)) {
        free(Wt);
        Wt = NULL;
        dx = NULL;
        if (!dw) return CC_OK;
    }
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0), nbL = nb * L;
        const int64_t nmb = cc_nblocks(nbL, CC_LSPLIT, CC_LBLOCK), mbs = cc_blocksize(nbL, CC_LSPLIT, CC_LBLOCK);
        REAL *cols = work, *T = work + CKK * nbL, *partial = T + g->K * nbL;
        const int64_t nsplit = cc_dw_splits(g, nbL);
        int64_t i;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
#pragma omp for schedule(static) nowait
            for (i = 0; i < nb * g->K; ++i) {
                const int64_t n = i / g->K, k = i % g->K;
                const REAL *src = dy + ((n0 + n) * g->K + k) * L;
                REAL *dst = T + k * nbL + n * L;
                int64_t l;
                for (l = 0; l < L; ++l) dst[l] = src[l];
            }
            if (dw) {
#pragma omp for schedule(static)
                for (i = 0; i < nb * CKK; ++i) {
                    const int64_t r = i / nb, n = i % nb;
                    FN(im2col_rows)(x + (n0 + n) * g->C * HW, g, r, r + 1, nbL, cols + n * L);
                }
                /* dW_gᵀ (CKKg x Kg) (+)= cols_g (CKKg x nbL) . T_gᵀ, chunks in order.
                 * With few output tiles and a long reduction, the reduction is cut
                 * into nsplit segments at fixed columns, each into its own partial
                 * buffer, and the partials are summed in segment order. */
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < nsplit * G * nkb * nwcb; ++i) {
                    const int64_t cb = i % nwcb, kb = (i / nwcb) % nkb;
                    const int64_t gi = (i / (nwcb * nkb)) % G, sp = i / (nwcb * nkb * G);
                    const int64_t c0 = cb * wcbs, k0 = gi * Kg + kb * kbs;
                    const int64_t seg = (nbL + nsplit - 1) / nsplit, j0 = sp * seg;
                    const int m = (int)CC_MIN(wcbs, CKKg - c0), nn = (int)CC_MIN(kbs, Kg - kb * kbs);
                    const int kk = (int)CC_MIN(seg, nbL - j0), lda = (int)nbL, ldb = (int)nbL;
                    const int ldc = (int)CKKg;
                    const REAL one = 1;
                    const REAL beta = (nsplit > 1 || n0 == 0) ? 0 : 1;
                    REAL *c = nsplit > 1 ? partial + sp * g->K * CKKg : dw;
                    if (kk <= 0) {
                        int64_t q, r;
                        for (q = 0; q < nn; ++q)
                            for (r = 0; r < m; ++r) c[(k0 + q) * CKKg + c0 + r] = 0;
                        continue;
                    }
                    gemm("T", "N", &m, &nn, &kk, &one, cols + (gi * CKKg + c0) * nbL + j0, &lda,
                         T + k0 * nbL + j0, &ldb, &beta, c + k0 * CKKg + c0, &ldc);
                }
                if (nsplit > 1) {
#pragma omp for schedule(static)
                    for (i = 0; i < g->K * CKKg; ++i) {
                        REAL v = n0 == 0 ? 0 : dw[i];
                        int64_t sp;
                        for (sp = 0; sp < nsplit; ++sp) v += partial[sp * g->K * CKKg + i];
                        dw[i] = v;
                    }
                }
            } else {
#pragma omp barrier
            }
            if (dx && !Wt) {
                /* dcols_g (CKKg x nbL) = W_gᵀ . T_g, over the columns just used */
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < G * nmb * ncb; ++i) {
                    const int64_t cb = i % ncb, mb = (i / ncb) % nmb, gi = i / (ncb * nmb);
                    const int64_t m0 = mb * mbs, c0 = cb * cbs;
                    const int m = (int)CC_MIN(mbs, nbL - m0), nn = (int)CC_MIN(cbs, CKKg - c0);
                    const int kk = (int)Kg, lda = (int)nbL, ldb = (int)CKKg, ldc = (int)nbL;
                    const REAL one = 1, zero = 0;
                    gemm("N", "T", &m, &nn, &kk, &one, T + gi * Kg * nbL + m0, &lda,
                         w + gi * Kg * CKKg + c0, &ldb, &zero, cols + (gi * CKKg + c0) * nbL + m0, &ldc);
                }
#pragma omp for schedule(static)
                for (i = 0; i < nb * CC_PAIRS(g->C); ++i) {
                    const int64_t n = i / CC_PAIRS(g->C), c = 2 * (i % CC_PAIRS(g->C));
                    FN(col2im_planes)(cols + n * L, g, c, CC_MIN(2, g->C - c), nbL,
                                      dx + ((n0 + n) * g->C + c) * HW, cols, cols + CKK * nbL);
                }
            }
        }
        if (Wt) {
            /* dcols (CKK x nbL) = Wᵀ . T (the kernel starts its own team) */
            int64_t i;
            if (FN(pw_images)(Wt, CKK, g->K, T, 1, nbL, NULL, n_threads, cols, NULL) != CC_OK) {
                free(Wt);
                return CC_ENOMEM;
            }
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1) schedule(static)
            for (i = 0; i < nb * CC_PAIRS(g->C); ++i) {
                const int64_t n = i / CC_PAIRS(g->C), c = 2 * (i % CC_PAIRS(g->C));
                FN(col2im_planes)(cols + n * L, g, c, CC_MIN(2, g->C - c), nbL,
                                  dx + ((n0 + n) * g->C + c) * HW, cols, cols + CKK * nbL);
            }
        }
    }
    free(Wt);
    return CC_OK;
}

/* ------------------------------------------------------------------ */
/* Depthwise (C/groups == 1): direct loops, no im2col, no workspace.  Each
 * output plane y[n,k] is the sum over taps of w[k,0,kh,kw] times a shifted,
 * strided view of input plane c = k / (K/groups). */

static void FN(dw_fwd_plane)(const REAL *CC_RESTRICT xc, const REAL *CC_RESTRICT wk,
                             REAL bk, const cc_conv_geom *g, REAL *CC_RESTRICT yp)
{
    const int64_t W = g->W, OH = g->OH, OW = g->OW;
    int64_t kh, kw, oh, ow;
    for (oh = 0; oh < OH; ++oh) {
        REAL *yr = yp + oh * OW;
        for (ow = 0; ow < OW; ++ow) yr[ow] = bk;
        for (kh = 0; kh < g->KH; ++kh) {
            const int64_t ih = oh * g->SH - g->PH + kh * g->DH;
            const int row_inside = ih >= 0 && ih < g->H;
            for (kw = 0; kw < g->KW; ++kw) {
                const int64_t woff = kw * g->DW - g->PW;
                const REAL wv = wk[kh * g->KW + kw];
                const REAL *xr = xc + ih * W + woff;
                int64_t lo, hi;
                cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
                if (!row_inside) lo = hi = 0;
                if (wv - wv != 0) {
                    /* an Inf/NaN tap over the zero padding gives NaN, exactly as
                     * the im2col paths (explicit zeros) and the definition do */
                    const REAL zero = 0;
                    for (ow = 0; ow < lo; ++ow) yr[ow] += wv * zero;
                    for (ow = hi; ow < OW; ++ow) yr[ow] += wv * zero;
                }
                if (!row_inside) continue;
                if (g->SW == 1) {
                    for (ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow];
                } else {
                    const int64_t SW = g->SW;
                    for (ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow * SW];
                }
            }
        }
    }
}


/* Whether every value of p[0..n) is finite. */
static int FN(all_finite)(const REAL *p, int64_t n)
{
    REAL z = 0;
    int64_t i;
    /* p*0 is 0 for finite p and NaN otherwise; any order of the sum will do */
#pragma omp simd reduction(+ : z)
    for (i = 0; i < n; ++i) z += p[i] * 0;
    return z == 0;
}

/* Each thread's padded plane: on the heap, so planes of any size take the
 * vector kernels; where it cannot be had, the bounds-checked loops run. */
static int FN(fwd_depthwise)(const REAL *x, const REAL *w, const REAL *b,
                             const cc_conv_geom *g, int n_threads, REAL *y)
{
    const int64_t Kg = g->K / g->groups, KK = g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t total = g->N * g->K;
    const int64_t pad = cc_dw_pad_elems(g);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && total > 1)
    {
        REAL *xp = (REAL *)malloc((size_t)pad * sizeof(REAL));
        int64_t i;
#pragma omp for schedule(static)
        for (i = 0; i < total; ++i) {
            const int64_t n = i / g->K, k = i % g->K, c = k / Kg;
            if (xp)
                FN(dw_fwd_plane_padded)(x + (n * g->C + c) * HW, w + k * KK, b ? b[k] : 0, g, xp,
                                        y + i * L);
            else
                FN(dw_fwd_plane)(x + (n * g->C + c) * HW, w + k * KK, b ? b[k] : 0, g, y + i * L);
        }
        free(xp);
    }
    return CC_OK;
}

/* dX of one (n, c) plane with one output channel per input channel and
 * stride 1: the forward kernel run over dy with the flipped taps and the
 * complementary padding D (KH-1) - P, which gives H x W.  Needs finite taps
 * (an Inf tap would meet dy's zero padding, which the definition does not
 * have) and P <= D (K-1); returns 0 where it does not apply. */
static int FN(dw_dx_plane_padded)(const REAL *dyp, const REAL *wk, const cc_conv_geom *g,
                                  REAL *xp, REAL *dxp)
{
    REAL wf[CC_DW_MAX_TAPS];
    cc_conv_geom t = *g;
    const int64_t KK = g->KH * g->KW;
    int64_t j;
    if (KK > CC_DW_MAX_TAPS || !FN(all_finite)(wk, KK)) return 0;
    for (j = 0; j < KK; ++j) wf[j] = wk[KK - 1 - j];
    t.H = g->OH, t.W = g->OW, t.OH = g->H, t.OW = g->W;
    t.PH = g->DH * (g->KH - 1) - g->PH, t.PW = g->DW * (g->KW - 1) - g->PW;
    FN(dw_fwd_plane_padded)(dyp, wf, 0, &t, xp, dxp);
    return 1;
}

static int FN(bwd_depthwise)(const REAL *dy, const REAL *x, const REAL *w,
                             const cc_conv_geom *g, int n_threads, REAL *dx, REAL *dw)
{
    const int64_t Kg = g->K / g->groups, KK = g->KH * g->KW;
    const int64_t W = g->W, OH = g->OH, OW = g->OW, L = OH * OW, HW = g->H * g->W;
    int64_t i;
    if (dx) {
        /* each (n, c) plane gathers from its Kg output planes, in a fixed order */
        const int64_t total = g->N * g->C;
        const int vec = Kg == 1 && g->SH == 1 && g->SW == 1 && g->PH <= g->DH * (g->KH - 1) &&
                        g->PW <= g->DW * (g->KW - 1);
        cc_conv_geom t = *g;
        int64_t pad;
        t.H = g->OH, t.W = g->OW, t.PH = g->DH * (g->KH - 1) - g->PH, t.PW = g->DW * (g->KW - 1) - g->PW;
        pad = cc_dw_pad_elems(&t);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && total > 1)
        {
            REAL *buf = vec ? (REAL *)malloc((size_t)pad * sizeof(REAL)) : NULL;
#pragma omp for schedule(static)
            for (i = 0; i < total; ++i) {
            const int64_t n = i / g->C, c = i % g->C;
            REAL *dxp = dx + i * HW;
            int64_t j, m, kh, kw, oh, ow;
            if (buf && FN(dw_dx_plane_padded)(dy + (n * g->K + c) * L, w + c * KK, g, buf, dxp))
                continue;
            for (j = 0; j < HW; ++j) dxp[j] = 0;
            for (m = 0; m < Kg; ++m) {
                const int64_t k = c * Kg + m;
                const REAL *dyp = dy + (n * g->K + k) * L;
                for (kh = 0; kh < g->KH; ++kh) {
                    const int64_t hoff = kh * g->DH - g->PH;
                    int64_t ohlo, ohhi;
                    cc_valid_range(g->H, OH, g->SH, hoff, &ohlo, &ohhi);
                    for (kw = 0; kw < g->KW; ++kw) {
                        const int64_t woff = kw * g->DW - g->PW;
                        const REAL wv = w[k * KK + kh * g->KW + kw];
                        int64_t lo, hi;
                        cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
                        for (oh = ohlo; oh < ohhi; ++oh) {
                            REAL *dst = dxp + (oh * g->SH + hoff) * W + woff;
                            const REAL *s = dyp + oh * OW;
                            if (g->SW == 1) {
                                for (ow = lo; ow < hi; ++ow) dst[ow] += wv * s[ow];
                            } else {
                                const int64_t SW = g->SW;
                                for (ow = lo; ow < hi; ++ow) dst[ow * SW] += wv * s[ow];
                            }
                        }
                    }
                }
            }
            }
            free(buf);
        }
    }
    if (dw && g->SW == 1 && KK <= CC_DW_MAX_TAPS) {
        /* vector sums over padded planes, one output channel per task; a
         * channel with any Inf/NaN in its planes sends the call to the loops
     * below, which sum only the positions inside the plane */
        const int64_t pad = cc_dw_pad_elems(g);
        const int64_t dyn = cc_dw_dy_rows(g) * cc_dw_dy_cols(g), OWV = cc_dw_dy_cols(g);
        int failed = 0;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && g->K > 1) reduction(| : failed)
        {
            REAL *xp = (REAL *)malloc((size_t)(pad + dyn) * sizeof(REAL));
            REAL *dyb = xp ? xp + pad : NULL;
            int64_t k;
            if (!xp) failed = 1;
            if (dyb)
                for (i = 0; i < dyn; ++i) dyb[i] = 0;
#pragma omp for schedule(static)
            for (k = 0; k < g->K; ++k) {
                const int64_t c = k / Kg;
                double part[CC_DW_MAX_TAPS];
                int64_t n, j, oh, ok = xp != NULL;
                for (n = 0; n < g->N && ok; ++n)
                    ok = FN(all_finite)(x + (n * g->C + c) * HW, HW) &&
                         FN(all_finite)(dy + (n * g->K + k) * L, L);
                if (!ok) {
                    failed = 1;
                    continue;
                }
                for (j = 0; j < KK; ++j) part[j] = 0;
                for (n = 0; n < g->N; ++n) {
                    const REAL *dyp = dy + (n * g->K + k) * L;
                    /* the padded input plane, and dy in rows of OWV */
                    FN(dw_fwd_plane_pad)(x + (n * g->C + c) * HW, g, xp);
                    for (oh = 0; oh < OH; ++oh)
                        memcpy(dyb + oh * OWV, dyp + oh * OW, (size_t)OW * sizeof(REAL));
                    FN(dw_wgrad_plane)(xp, dyb, g, part);
                }
                for (j = 0; j < KK; ++j) dw[k * KK + j] = (REAL)part[j];
            }
            free(xp);
        }
        if (!failed) return CC_OK;
        /* (rare: Inf/NaN, or no memory) the loops below redo every channel */
    }
    if (dw) {
        /* dw[k, tap] = sum over n and positions, accumulated per output column
         * into a row of partial sums (vectorisable), then summed in order */
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && g->K > 1)
        {
            int64_t k;
#pragma omp for schedule(static)
            for (k = 0; k < g->K; ++k) {
                const int64_t c = k / Kg;
                int64_t kh, kw;
                for (kh = 0; kh < g->KH; ++kh) {
                    const int64_t hoff = kh * g->DH - g->PH;
                    int64_t ohlo, ohhi;
                    cc_valid_range(g->H, OH, g->SH, hoff, &ohlo, &ohhi);
                    for (kw = 0; kw < g->KW; ++kw) {
                        const int64_t woff = kw * g->DW - g->PW;
                        int64_t lo, hi, n, oh, ow;
                        double total = 0;
                        cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
                        for (n = 0; n < g->N; ++n) {
                            const REAL *dyp = dy + (n * g->K + k) * L;
                            const REAL *xp = x + (n * g->C + c) * HW;
                            for (oh = ohlo; oh < ohhi; ++oh) {
                                const REAL *s = dyp + oh * OW;
                                const REAL *xr = xp + (oh * g->SH + hoff) * W + woff;
                                REAL part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                                ow = lo;
                                if (g->SW == 1) {
                                    for (; ow + 8 <= hi; ow += 8) {
                                        int q;
                                        for (q = 0; q < 8; ++q) part[q] += s[ow + q] * xr[ow + q];
                                    }
                                }
                                for (; ow < hi; ++ow) part[ow & 7] += s[ow] * xr[ow * g->SW];
                                total += (double)(((part[0] + part[1]) + (part[2] + part[3])) +
                                                  ((part[4] + part[5]) + (part[6] + part[7])));
                            }
                        }
                        dw[k * KK + kh * g->KW + kw] = (REAL)total;
                    }
                }
            }
        }
    }
    return CC_OK;
}

/* ------------------------------------------------------------------ */

#include "winograd_impl.h"

/* The strategy a call runs: AUTO resolved from the shape and element type;
 * WINOGRAD where it does not apply, or where the inputs are not tame (see
 * wg_tame), becomes BATCHED. */
static int FN(resolve_strategy)(const cc_conv_geom *g, int strategy, int backward,
                                const REAL *a, int64_t na, const REAL *b, int64_t nb,
                                const REAL *c, int64_t nc, int n_threads)
{
    if (strategy == CC_CONV_AUTO) {
        if (sizeof(REAL) == sizeof(float) && cc_conv_winograd_auto(g)) strategy = CC_CONV_WINOGRAD;
        else if (cc_conv_direct_auto(g)) strategy = CC_CONV_DIRECT;
        else strategy = cc_conv_auto_strategy(g, backward);
    }
    if (strategy == CC_CONV_DIRECT && !cc_conv_direct_ok(g)) return CC_CONV_BATCHED;
    if (strategy == CC_CONV_WINOGRAD) {
        double ma = 0, mb = 0, mc = 0;
        if (!cc_conv_winograd_ok(g)) return CC_CONV_BATCHED;
        if (!FN(wg_tame)(a, na, n_threads, &ma) || !FN(wg_tame)(b, nb, n_threads, &mb) ||
            (c && !FN(wg_tame)(c, nc, n_threads, &mc)))
            return CC_CONV_BATCHED;
        /* the products the sums are made of: a.b (forward: x.w), and for
         * the backward a = dy: dy.x (dW) and dy.w (dX) */
        if (ma * mb > CC_WG_PRODUCT_MAX || (c && ma * mc > CC_WG_PRODUCT_MAX))
            return CC_CONV_BATCHED;
    }
    return strategy;
}

/* Images per chunk that `work` holds (at least 1), or 0 if it holds none. */
static int64_t FN(chunk_images)(const cc_conv_geom *g, int strategy, int64_t work_elems)
{
    const int64_t fixed = cc_conv_workspace_run(g, 0, strategy);
    const int64_t per = cc_conv_workspace_run(g, 1, strategy) - fixed;
    if (per <= 0) return g->N > 0 ? g->N : 1; /* no workspace needed */
    if (work_elems < per + fixed) return 0;
    if (strategy == CC_CONV_WINOGRAD) {
        /* the transforms stream through V and M: a chunk that stays in
         * cache is faster than one long GEMM (shape-only, so deterministic) */
        const int m = g->SH == 2 ? 2 : cc_wg_tile(g->OH, g->OW);   /* outputs a tile side */
        const int64_t T = ((g->OH + m - 1) / m) * ((g->OW + m - 1) / m);
        const int64_t cap = CC_MAX(CC_MAX(1, CC_WG_CHUNK_ELEMS / per), (CC_WG_MIN_TILES + T - 1) / T);
        work_elems = CC_MIN(work_elems, fixed + cap * per);
    }
    return CC_MIN(CC_MAX(g->N, 1), (work_elems - fixed) / per);
}

int FN(cc_conv2d_fwd)(const REAL *x, const REAL *w, const REAL *b,
                      const cc_conv_geom *g, int strategy, REAL *work, int64_t work_elems,
                      int n_threads, GEMM_T gemm, REAL *y)
{
    int64_t B;
    if (!x || !w || !y || !gemm || n_threads < 1 || cc_conv_geom_check(g) != CC_OK)
        return CC_EINVAL;
    if (strategy != CC_CONV_AUTO && strategy != CC_CONV_TILES && strategy != CC_CONV_BATCHED &&
        strategy != CC_CONV_WINOGRAD && strategy != CC_CONV_DIRECT)
        return CC_EINVAL;
    if (g->N == 0) return CC_OK;
    n_threads = cc_conv_team_size(g, n_threads);
    if (cc_conv_is_depthwise(g)) return FN(fwd_depthwise)(x, w, b, g, n_threads, y);
    strategy = FN(resolve_strategy)(g, strategy, 0, x, g->N * g->C * g->H * g->W,
                                    w, g->K * (g->C / g->groups) * g->KH * g->KW, NULL, 0,
                                    n_threads);
    B = FN(chunk_images)(g, strategy, work_elems);
    if (B == 0 || (!work && cc_conv_workspace_run(g, 1, strategy) > 0)) return CC_EINVAL;
    if (strategy == CC_CONV_WINOGRAD)
        return g->KH == 5 ? FN(wg5_run)(x, w, b, g, 0, work, B, n_threads, gemm, y)
                          : FN(fwd_winograd)(x, w, b, g, work, B, n_threads, gemm, y);
    if (strategy == CC_CONV_DIRECT)
        return cc_conv_is_pointwise(g) ? FN(pointwise)(x, w, b, g, 0, n_threads, y)
                                       : FN(fwd_direct)(x, w, b, g, work, n_threads, y);
    if (strategy == CC_CONV_BATCHED) return FN(fwd_batched)(x, w, b, g, work, B, n_threads, gemm, y);
    return FN(fwd_tiles)(x, w, b, g, work, B, n_threads, gemm, y);
}

/* partial sums of a bias gradient (a power of 2) */
#define CC_DB_SUMS 32

int FN(cc_conv2d_bwd)(const REAL *dy, const REAL *x, const REAL *w,
                      const cc_conv_geom *g, int strategy, REAL *work, int64_t work_elems,
                      int n_threads, GEMM_T gemm, REAL *dx, REAL *dw, REAL *db)
{
    int64_t B, k;
    if (!w || !gemm || n_threads < 1 || cc_conv_geom_check(g) != CC_OK) return CC_EINVAL;
    if (strategy != CC_CONV_AUTO && strategy != CC_CONV_TILES && strategy != CC_CONV_BATCHED &&
        strategy != CC_CONV_WINOGRAD && strategy != CC_CONV_DIRECT)
        return CC_EINVAL;
    if (g->N > 0 && (!dy || !x)) return CC_EINVAL;
    n_threads = cc_conv_team_size(g, n_threads);
    if (g->N == 0) {
        if (dw) for (k = 0; k < g->K * (g->C / g->groups) * g->KH * g->KW; ++k) dw[k] = 0;
        if (db) for (k = 0; k < g->K; ++k) db[k] = 0;
        return CC_OK;
    }
    if (db) {
        const int64_t L = g->OH * g->OW;
        int64_t kk;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && g->K > 1) schedule(static)
        for (kk = 0; kk < g->K; ++kk) {
            /* CC_DB_SUMS sums (position mod CC_DB_SUMS in each plane), added
             * in a fixed order at the end: independent vector adds instead of
             * one serial chain */
            double a[CC_DB_SUMS] = {0};
            int64_t n, l;
            int q, h;
            for (n = 0; n < g->N; ++n) {
                const REAL *p = dy + (n * g->K + kk) * L;
                for (l = 0; l + CC_DB_SUMS <= L; l += CC_DB_SUMS)
                    for (q = 0; q < CC_DB_SUMS; ++q) a[q] += p[l + q];
                for (; l < L; ++l) a[l % CC_DB_SUMS] += p[l];
            }
            for (h = CC_DB_SUMS / 2; h > 0; h /= 2)
                for (q = 0; q < h; ++q) a[q] += a[q + h];
            db[kk] = (REAL)a[0];
        }
    }
    if (!dx && !dw) return CC_OK;
    if (cc_conv_is_depthwise(g)) return FN(bwd_depthwise)(dy, x, w, g, n_threads, dx, dw);
    strategy = FN(resolve_strategy)(g, strategy, 1, dy, g->N * g->K * g->OH * g->OW,
                                    x, g->N * g->C * g->H * g->W,
                                    w, g->K * (g->C / g->groups) * g->KH * g->KW, n_threads);
    B = FN(chunk_images)(g, strategy, work_elems);
    if (B == 0 || (!work && cc_conv_workspace_run(g, 1, strategy) > 0)) return CC_EINVAL;
    if (strategy == CC_CONV_WINOGRAD && g->KH == 5) {
        /* 5x5: dW, then dX, each through its split (same workspace) */
        if (dw) FN(wg5_dw)(dy, x, g, work, B, n_threads, gemm, dw);
        return dx ? FN(wg5_run)(dy, w, NULL, g, 1, work, B, n_threads, gemm, dx) : CC_OK;
    }
    if (strategy == CC_CONV_WINOGRAD && g->SH == 2)
        return FN(bwd_winograd_s2)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
    if (strategy == CC_CONV_WINOGRAD)
        return FN(bwd_winograd)(dy, x, w, g, work, B, n_threads, gemm, dx, dw, 1, 1, NULL);
    if (strategy == CC_CONV_DIRECT) {
        /* small layers: dW by the direct loops, then dX through BATCHED
         * (same workspace); pointwise: dW through BATCHED, dX by the product
         * kernel with the weights transposed */
        const int pw = cc_conv_is_pointwise(g);
        if (dw && !pw) FN(dw_direct)(dy, x, g, work, B, n_threads, dw);
        if (!dx && !(dw && pw)) return CC_OK;
        B = FN(chunk_images)(g, CC_CONV_BATCHED, work_elems);
        if (B == 0) return CC_EINVAL;
        if (!pw) return FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, dx, NULL);
        if (dw) {
            const int st = FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, NULL, dw);
            if (st != CC_OK) return st;
        }
        return dx ? FN(pointwise)(dy, w, NULL, g, 1, n_threads, dx) : CC_OK;
    }
    if (strategy == CC_CONV_BATCHED) return FN(bwd_batched)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
    return FN(bwd_tiles)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
}

#undef FN
#undef CC_CAT
#undef CC_CAT2
#undef CC_LBLOCK
#undef CC_LSPLIT
#undef CC_KBLOCK
#undef CC_CBLOCK
