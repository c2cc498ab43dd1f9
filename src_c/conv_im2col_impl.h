/* im2col of spans of one image, the building block of the column (GEMM)
 * strategies and of the direct paths; included by conv_impl.h inside its
 * element-type template. */


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

