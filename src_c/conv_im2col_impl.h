/* im2col of spans of one image, the building block of the column (GEMM)
 * strategies and of the direct paths; included by conv_impl.h inside its
 * element-type template. */


/* im2col of rows [r0, r1) and output positions [l0, l1) of one image.
 *   x   (C, H, W)        [in]  one image
 *   col                  [out] position l of row r at col + r*ldc + (l - l0)
 * (cloned: a stride-2 row's gather vectorizes as AVX2/AVX-512 shuffles;
 * ResNet's 7x7/2 stem at batch 1 0.664-0.673 -> 0.651-0.655 ms forward) */
CC_CLONES static void FN(im2col_span)(const REAL *CC_RESTRICT x, const cc_conv_geom *g,
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
            } else if (g->SW == 2) {   /* (a constant stride: vector shuffles) */
                for (ow = va; ow < ve; ++ow) d[ow - a] = src[2 * ow];
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


#ifndef CC_I2C_PLANE_SHAPE
#define CC_I2C_PLANE_SHAPE
/* Elements of a zero-padded plane im2col_plane copies to its stack. */
#define CC_I2C_PLANE_MAX 4096
/* Whether a plane's im2col goes through its padded copy: planes that fit,
 * with outputs narrower than CC_I2C_PLANE_MAX_OW (on wider rows the spans'
 * block copies are as fast, without the extra pass). */
#define CC_I2C_PLANE_MAX_OW 32
static int cc_im2col_by_plane(const cc_conv_geom *g)
{
    return (g->H + 2 * g->PH) * (g->W + 2 * g->PW) <= CC_I2C_PLANE_MAX && g->OW < CC_I2C_PLANE_MAX_OW;
}
#endif

/* im2col of channel c of one image, all its KH*KW rows (row (c*KH + kh)*KW
 * + kw at col + row*ldc), through a zero-padded copy of the plane: no bounds
 * checks and no library calls per output row, which on small maps cost more
 * than the copies.  xc is the channel's plane; needs cc_im2col_by_plane. */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void FN(im2col_plane)(const REAL *CC_RESTRICT xc, const cc_conv_geom *g, int64_t c,
                             int64_t ldc, REAL *CC_RESTRICT col)
{
    REAL pad[CC_I2C_PLANE_MAX];
    const int64_t H = g->H, W = g->W, PH = g->PH, PW = g->PW, Wp = W + 2 * PW, Hp = H + 2 * PH;
    const int64_t OH = g->OH, OW = g->OW, SH = g->SH, SW = g->SW;
    int64_t i, j, kh, kw, oh, ow;
    for (i = 0; i < Hp; ++i) {
        REAL *d = pad + i * Wp;
        if (i < PH || i >= PH + H) {
            for (j = 0; j < Wp; ++j) d[j] = 0;
            continue;
        }
        for (j = 0; j < PW; ++j) d[j] = 0;
        for (j = 0; j < W; ++j) d[PW + j] = xc[(i - PH) * W + j];
        for (j = PW + W; j < Wp; ++j) d[j] = 0;
    }
    for (kh = 0; kh < g->KH; ++kh)
        for (kw = 0; kw < g->KW; ++kw) {
            REAL *row = col + ((c * g->KH + kh) * g->KW + kw) * ldc;
            for (oh = 0; oh < OH; ++oh) {
                const REAL *s = pad + (oh * SH + kh * g->DH) * Wp + kw * g->DW;
                REAL *d = row + oh * OW;
                if (SW == 1)
                    for (ow = 0; ow < OW; ++ow) d[ow] = s[ow];
                else if (SW == 2)   /* (a constant stride: vector shuffles) */
                    for (ow = 0; ow < OW; ++ow) d[ow] = s[2 * ow];
                else
                    for (ow = 0; ow < OW; ++ow) d[ow] = s[ow * SW];
            }
        }
}

#ifndef CC_I2C_PW_SHAPE
#define CC_I2C_PW_SHAPE
/* A pointwise layer's map (H*W elements) below which its columns are copied
 * a channel at a time across the chunk's images (row c of the columns is
 * plane c of every image side by side) rather than an (image, channel)
 * plane at a time: on 2x2 and 4x4 maps a library call per 16- or 64-byte
 * plane and the scattered order of the reads cost more than the GEMM's
 * packing (1024 -> 256 on 2x2 maps at batch 64: a third of the forward
 * pass's time). */
#define CC_I2C_PW_MAX_HW 32
static int cc_pw_by_channel(const cc_conv_geom *g)
{
    return cc_conv_is_pointwise(g) && g->H * g->W < CC_I2C_PW_MAX_HW;
}
#endif

/* The im2col of nb images cut into tasks for a parallel loop: a channel of
 * every image each where cc_pw_by_channel, a plane each where
 * cc_im2col_by_plane, else a row each. */
static int64_t FN(im2col_ntasks)(const cc_conv_geom *g, int64_t nb)
{
    if (cc_pw_by_channel(g)) return g->C;
    return nb * (cc_im2col_by_plane(g) ? g->C : g->C * g->KH * g->KW);
}

/* Task i of FN(im2col_ntasks) of nb images of x (image n at x + n*C*H*W):
 * image n's columns start at cols + n*nstride, row r at r*ldc from there. */
static void FN(im2col_task)(const REAL *x, const cc_conv_geom *g, int64_t i, int64_t nb,
                            int64_t ldc, int64_t nstride, REAL *cols)
{
    const int64_t n = i % nb, HW = g->H * g->W;
    if (cc_pw_by_channel(g)) {
        /* channel i of every image (1x1, stride 1, no padding: row c is
         * plane c) */
        const REAL *src = x + i * HW;
        REAL *dst = cols + i * ldc;
        int64_t m, l;
        for (m = 0; m < nb; ++m)
            for (l = 0; l < HW; ++l) dst[m * nstride + l] = src[m * g->C * HW + l];
    } else if (cc_conv_is_pointwise(g)) {
        const int64_t c = i / nb;
        memcpy(cols + n * nstride + c * ldc, x + (n * g->C + c) * HW, (size_t)HW * sizeof(REAL));
    } else if (cc_im2col_by_plane(g)) {
        const int64_t c = i / nb;
        FN(im2col_plane)(x + (n * g->C + c) * HW, g, c, ldc, cols + n * nstride);
    } else {
        const int64_t r = i / nb;
        FN(im2col_rows)(x + n * g->C * HW, g, r, r + 1, ldc, cols + n * nstride);
    }
}
