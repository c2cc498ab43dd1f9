/* Direct forward convolution for small layers (few channels, small images:
 * LeNet, 1-channel first layers), included by conv_impl.h inside its
 * element-type template.
 *
 * No im2col and no BLAS: such a layer's GEMM is too thin for a BLAS to run
 * well, and laying out its columns costs more than the arithmetic.  Each
 * thread takes whole images.  An image is first copied into a zero-padded
 * buffer (so the loops need no bounds checks, and padding meets the weights
 * as zeros exactly as in im2col); the kernel is transposed once into blocks
 * of CC_DKB output channels, wt[kb][tap][CC_DKB] (zero past K).  The
 * micro-kernel keeps CC_DOB output positions x CC_DKB channels of sums in
 * registers while it runs over the taps in a fixed order, so every output
 * element is summed in an order set by the shape alone. */

#define CC_DKB 16   /* output channels per block (a vector) */
#define CC_DOB 6    /* output positions per block (independent accumulators) */

static void FN(direct_wt)(const REAL *w, int64_t K, int64_t CKK, REAL *wt)
{
    const int64_t nkb = (K + CC_DKB - 1) / CC_DKB;
    int64_t kb, r, q;
    for (kb = 0; kb < nkb; ++kb)
        for (r = 0; r < CKK; ++r)
            for (q = 0; q < CC_DKB; ++q) {
                const int64_t k = kb * CC_DKB + q;
                wt[(kb * CKK + r) * CC_DKB + q] = k < K ? w[k * CKK + r] : 0;
            }
}

/* out[j][q] = sum over taps of wt[tap][q] * xpad[c, oh*SH + kh*DH, (ow0+j)*SW + kw*DW].
 * The CC_DKB channels are one vector (GCC/Clang vector extensions: one
 * AVX-512 register, two AVX2 ones, ... on the clone the machine runs), and
 * the CC_DOB positions are independent accumulators. */
typedef REAL FN(vk_t) __attribute__((vector_size(CC_DKB * sizeof(REAL)), aligned(sizeof(REAL))));

CC_CLONES_FMA static void FN(direct_block)(const REAL *CC_RESTRICT xpad, int64_t Hp, int64_t Wpp,
                                       const REAL *CC_RESTRICT wt, const cc_conv_geom *g,
                                       int64_t oh, int64_t ow0, REAL *CC_RESTRICT out)
{
    const int64_t SW = g->SW;
    FN(vk_t) acc[CC_DOB];
    int64_t c, kh, kw;
    int j;
    memset(acc, 0, sizeof acc);
    for (c = 0; c < g->C; ++c) {
        for (kh = 0; kh < g->KH; ++kh) {
            const REAL *xr = xpad + (c * Hp + oh * g->SH + kh * g->DH) * Wpp + ow0 * SW;
            const REAL *wr = wt + (c * g->KH + kh) * g->KW * CC_DKB;
            for (kw = 0; kw < g->KW; ++kw) {
                const REAL *xs = xr + kw * g->DW;
                FN(vk_t) wv;
                memcpy(&wv, wr + kw * CC_DKB, sizeof wv);
                for (j = 0; j < CC_DOB; ++j) acc[j] += xs[j * SW] * wv;
            }
        }
    }
    memcpy(out, acc, sizeof acc);
}

static int FN(fwd_direct)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                          REAL *work, int n_threads, REAL *y)
{
    const int64_t K = g->K, CKK = g->C * g->KH * g->KW, L = g->OH * g->OW;
    const int64_t nkb = (K + CC_DKB - 1) / CC_DKB;
    const int64_t Hp = g->H + 2 * g->PH, Wpp = g->W + 2 * g->PW + CC_DOB * g->SW;
    int64_t n;
    FN(direct_wt)(w, K, CKK, work);
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && g->N > 1) schedule(static)
    for (n = 0; n < g->N; ++n) {
        REAL xpad[CC_DIRECT_MAX_PAD];
        REAL out[CC_DOB * CC_DKB];
        const REAL *xn = x + n * g->C * g->H * g->W;
        REAL *yn = y + n * K * L;
        int64_t c, h, i, oh, ow0, kb;
        for (i = 0; i < g->C * Hp * Wpp; ++i) xpad[i] = 0;
        for (c = 0; c < g->C; ++c)
            for (h = 0; h < g->H; ++h) {
                const REAL *src = xn + (c * g->H + h) * g->W;
                REAL *dst = xpad + (c * Hp + h + g->PH) * Wpp + g->PW;
                for (i = 0; i < g->W; ++i) dst[i] = src[i];
            }
        for (oh = 0; oh < g->OH; ++oh)
            for (ow0 = 0; ow0 < g->OW; ow0 += CC_DOB) {
                const int64_t nj = CC_MIN(CC_DOB, g->OW - ow0);
                for (kb = 0; kb < nkb; ++kb) {
                    const int64_t nq = CC_MIN(CC_DKB, K - kb * CC_DKB);
                    int64_t j, q;
                    FN(direct_block)(xpad, Hp, Wpp, work + kb * CKK * CC_DKB, g, oh, ow0, out);
                    for (q = 0; q < nq; ++q) {
                        const int64_t k = kb * CC_DKB + q;
                        const REAL bk = b ? b[k] : 0;
                        REAL *yr = yn + k * L + oh * g->OW + ow0;
                        for (j = 0; j < nj; ++j) yr[j] = out[j * CC_DKB + q] + bk;
                    }
                }
            }
    }
    return CC_OK;
}

#undef CC_DKB
#undef CC_DOB
