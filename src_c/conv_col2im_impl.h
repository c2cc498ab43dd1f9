/* col2im (the adjoint of im2col) and the public im2col/col2im kernels;
 * included by conv_impl.h inside its element-type template, after the
 * vector kernels of direct_impl.h (col2im_rows_s1). */


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

/* The col2im of a chunk of nb images whose columns lie side by side (image
 * n's at cols + n*L, row r at r*ldc) into their planes of dx (image n at dx
 * + n*C*H*W), cut into tasks for a parallel loop: a channel of every image
 * each where cc_pw_by_channel (a copy: row c is plane c), else a pair of
 * planes of one image each. */
static int64_t FN(col2im_ntasks)(const cc_conv_geom *g, int64_t nb)
{
    return cc_pw_by_channel(g) ? g->C : nb * CC_PAIRS(g->C);
}

static void FN(col2im_task)(const REAL *cols, const cc_conv_geom *g, int64_t i, int64_t nb,
                            int64_t ldc, REAL *dx)
{
    const int64_t HW = g->H * g->W, L = g->OH * g->OW;
    if (cc_pw_by_channel(g)) {
        const REAL *src = cols + i * ldc;
        REAL *dst = dx + i * HW;
        int64_t m, l;
        for (m = 0; m < nb; ++m)
            for (l = 0; l < HW; ++l) dst[m * g->C * HW + l] = src[m * L + l];
    } else {
        const int64_t n = i / CC_PAIRS(g->C), c = 2 * (i % CC_PAIRS(g->C));
        FN(col2im_planes)(cols + n * L, g, c, CC_MIN(2, g->C - c), ldc, dx + (n * g->C + c) * HW,
                          cols, cols + g->C * g->KH * g->KW * ldc);
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

