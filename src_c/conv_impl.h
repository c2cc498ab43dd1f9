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
#define CC_KBLOCK 128    /* output channels per GEMM tile */
#define CC_CBLOCK 256    /* C*KH*KW rows per GEMM tile */

/* im2col of rows [r0, r1) of one image.
 *   x   (C, H, W)        [in]  one image
 *   col (C*KH*KW, L)     [out] rows r0..r1-1 overwritten */
static void FN(im2col_rows)(const REAL *CC_RESTRICT x, const cc_conv_geom *g,
                            int64_t r0, int64_t r1, REAL *CC_RESTRICT col)
{
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW;
    const int64_t KH = g->KH, KW = g->KW;
    int64_t r;
    for (r = r0; r < r1; ++r) {
        const int64_t c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        const int64_t hoff = kh * g->DH - g->PH, woff = kw * g->DW - g->PW;
        const REAL *xc = x + c * H * W;
        REAL *dst = col + r * OH * OW;
        int64_t lo, hi, oh, ow;
        cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
        for (oh = 0; oh < OH; ++oh, dst += OW) {
            const int64_t ih = oh * g->SH + hoff;
            const REAL *src;
            if (ih < 0 || ih >= H) {
                for (ow = 0; ow < OW; ++ow) dst[ow] = 0;
                continue;
            }
            src = xc + ih * W + woff;
            for (ow = 0; ow < lo; ++ow) dst[ow] = 0;
            if (g->SW == 1) {
                for (ow = lo; ow < hi; ++ow) dst[ow] = src[ow];
            } else {
                const int64_t SW = g->SW;
                for (ow = lo; ow < hi; ++ow) dst[ow] = src[ow * SW];
            }
            for (ow = hi; ow < OW; ++ow) dst[ow] = 0;
        }
    }
}

/* col2im of one (n, c) plane: the plane is overwritten with the sum of its
 * column entries, added in the fixed order (kh, kw, oh, ow).
 *   col (C*KH*KW, L) [in] one image;  x (H, W) [out] plane c */
static void FN(col2im_plane)(const REAL *CC_RESTRICT col, const cc_conv_geom *g,
                             int64_t c, REAL *CC_RESTRICT x)
{
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW;
    const int64_t KH = g->KH, KW = g->KW;
    int64_t kh, kw, i;
    for (i = 0; i < H * W; ++i) x[i] = 0;
    for (kh = 0; kh < KH; ++kh) {
        const int64_t hoff = kh * g->DH - g->PH;
        int64_t ohlo, ohhi;
        cc_valid_range(H, OH, g->SH, hoff, &ohlo, &ohhi);
        for (kw = 0; kw < KW; ++kw) {
            const int64_t woff = kw * g->DW - g->PW;
            const REAL *src = col + ((c * KH + kh) * KW + kw) * OH * OW;
            int64_t lo, hi, oh, ow;
            cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
            for (oh = ohlo; oh < ohhi; ++oh) {
                REAL *dst = x + (oh * g->SH + hoff) * W + woff;
                const REAL *s = src + oh * OW;
                if (g->SW == 1) {
                    for (ow = lo; ow < hi; ++ow) dst[ow] += s[ow];
                } else {
                    const int64_t SW = g->SW;
                    for (ow = lo; ow < hi; ++ow) dst[ow * SW] += s[ow];
                }
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
        FN(im2col_rows)(x + n * g->C * g->H * g->W, g, r, r + 1, cols + n * CKK * L);
    }
    return CC_OK;
}

int FN(cc_col2im)(const REAL *cols, const cc_conv_geom *g, int n_threads, REAL *x)
{
    int64_t CKK, L, total, i;
    if (!x || !cols || n_threads < 1 || cc_conv_geom_check(g) != CC_OK) return CC_EINVAL;
    CKK = g->C * g->KH * g->KW;
    L = g->OH * g->OW;
    total = g->N * g->C;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && total > 1) schedule(static)
    for (i = 0; i < total; ++i) {
        const int64_t n = i / g->C, c = i % g->C;
        FN(col2im_plane)(cols + n * CKK * L, g, c, x + i * g->H * g->W);
    }
    return CC_OK;
}

/* Images per chunk that `work` holds (at least 1), or 0 if it holds none. */
static int64_t FN(chunk_images)(const cc_conv_geom *g, int64_t work_elems)
{
    int64_t per = cc_conv_workspace_elems(g, 1);
    if (per <= 0) return g->N > 0 ? g->N : 1; /* pointwise: no workspace */
    if (work_elems < per) return 0;
    return CC_MIN(CC_MAX(g->N, 1), work_elems / per);
}

int FN(cc_conv2d_fwd)(const REAL *x, const REAL *w, const REAL *b,
                      const cc_conv_geom *g, REAL *work, int64_t work_elems,
                      int n_threads, GEMM_T gemm, REAL *y)
{
    const int pointwise = cc_conv_is_pointwise(g);
    int64_t G, Cg, Kg, CKK, CKKg, L, HW, B, n0;
    int64_t nlb, lbs, nkb, kbs;
    if (!x || !w || !y || !gemm || n_threads < 1 || cc_conv_geom_check(g) != CC_OK)
        return CC_EINVAL;
    if (g->N == 0) return CC_OK;
    if (!pointwise && !work) return CC_EINVAL;
    B = FN(chunk_images)(g, work_elems);
    if (B == 0) return CC_EINVAL;
    G = g->groups; Cg = g->C / G; Kg = g->K / G;
    CKK = g->C * g->KH * g->KW; CKKg = Cg * g->KH * g->KW;
    L = g->OH * g->OW; HW = g->H * g->W;
    nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK); lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK); kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
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
                    FN(im2col_rows)(x + (n0 + n) * g->C * HW, g, r, r + 1, work + n * CKK * L);
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

int FN(cc_conv2d_bwd)(const REAL *dy, const REAL *x, const REAL *w,
                      const cc_conv_geom *g, REAL *work, int64_t work_elems,
                      int n_threads, GEMM_T gemm, REAL *dx, REAL *dw, REAL *db)
{
    const int pointwise = cc_conv_is_pointwise(g);
    int64_t G, Cg, Kg, CKK, CKKg, L, HW, B, n0, k;
    int64_t nlb, lbs, nkb, kbs, ncb, cbs;
    if (!w || !gemm || n_threads < 1 || cc_conv_geom_check(g) != CC_OK) return CC_EINVAL;
    if (g->N > 0 && (!dy || !x)) return CC_EINVAL;
    G = g->groups; Cg = g->C / G; Kg = g->K / G;
    CKK = g->C * g->KH * g->KW; CKKg = Cg * g->KH * g->KW;
    L = g->OH * g->OW; HW = g->H * g->W;
    if (g->N == 0) {
        if (dw) for (k = 0; k < g->K * CKKg; ++k) dw[k] = 0;
        if (db) for (k = 0; k < g->K; ++k) db[k] = 0;
        return CC_OK;
    }
    if (!pointwise && !work) return CC_EINVAL;
    B = FN(chunk_images)(g, work_elems);
    if (B == 0) return CC_EINVAL;
    nlb = cc_nblocks(L, CC_LSPLIT, CC_LBLOCK); lbs = cc_blocksize(L, CC_LSPLIT, CC_LBLOCK);
    nkb = cc_nblocks(Kg, CC_KBLOCK, CC_KBLOCK); kbs = cc_blocksize(Kg, CC_KBLOCK, CC_KBLOCK);
    ncb = cc_nblocks(CKKg, CC_CBLOCK, CC_CBLOCK); cbs = cc_blocksize(CKKg, CC_CBLOCK, CC_CBLOCK);
    (void)n_threads;

    if (db) {
        int64_t kk;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && g->K > 1) schedule(static)
        for (kk = 0; kk < g->K; ++kk) {
            double s = 0;
            int64_t n, l;
            for (n = 0; n < g->N; ++n) {
                const REAL *p = dy + (n * g->K + kk) * L;
                for (l = 0; l < L; ++l) s += p[l];
            }
            db[kk] = (REAL)s;
        }
    }
    if (!dx && !dw) return CC_OK;

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
                        FN(im2col_rows)(x + (n0 + n) * g->C * HW, g, r, r + 1, work + n * CKK * L);
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
                    for (i = 0; i < nb * g->C; ++i) {
                        const int64_t n = i / g->C, c = i % g->C;
                        FN(col2im_plane)(work + n * CKK * L, g, c, dx + ((n0 + n) * g->C + c) * HW);
                    }
                }
            }
        }
    }
    return CC_OK;
}

#undef FN
#undef CC_CAT
#undef CC_CAT2
#undef CC_LBLOCK
#undef CC_LSPLIT
#undef CC_KBLOCK
#undef CC_CBLOCK
