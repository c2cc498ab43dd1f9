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

/* dW of a small layer, one tap (c, kh, kw) and one 16-channel block:
 * acc += sum over images n, output positions of x[n, c, ih, iw] * dyT[n][pos],
 * four accumulators over the positions (ow mod 4), summed in a fixed order. */
CC_CLONES_FMA static void FN(direct_dw_tap)(const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT dyT,
                                            int64_t nb, const cc_conv_geom *g, int64_t c,
                                            int64_t kh, int64_t kw, REAL *CC_RESTRICT acc)
{
    const int64_t H = g->H, W = g->W, OW = g->OW, L = g->OH * g->OW, SW = g->SW;
    const int64_t hoff = kh * g->DH - g->PH, woff = kw * g->DW - g->PW;
    int64_t ohlo, ohhi, lo, hi, n, oh, ow;
    FN(vk_t) a0, a1, a2, a3, t;
    memset(&a0, 0, sizeof a0);
    a1 = a0;
    a2 = a0;
    a3 = a0;
    cc_valid_range(H, g->OH, g->SH, hoff, &ohlo, &ohhi);
    cc_valid_range(W, OW, SW, woff, &lo, &hi);
    for (n = 0; n < nb; ++n) {
        const REAL *xc = x + (n * g->C + c) * H * W;
        const REAL *dn = dyT + n * L * CC_DKB;
        for (oh = ohlo; oh < ohhi; ++oh) {
            const REAL *xr = xc + (oh * g->SH + hoff) * W + woff;
            const REAL *dr = dn + oh * OW * CC_DKB;
            FN(vk_t) d0, d1, d2, d3;
            for (ow = lo; ow + 4 <= hi; ow += 4) {
                memcpy(&d0, dr + (ow + 0) * CC_DKB, sizeof d0);
                memcpy(&d1, dr + (ow + 1) * CC_DKB, sizeof d1);
                memcpy(&d2, dr + (ow + 2) * CC_DKB, sizeof d2);
                memcpy(&d3, dr + (ow + 3) * CC_DKB, sizeof d3);
                a0 += xr[(ow + 0) * SW] * d0;
                a1 += xr[(ow + 1) * SW] * d1;
                a2 += xr[(ow + 2) * SW] * d2;
                a3 += xr[(ow + 3) * SW] * d3;
            }
            for (; ow < hi; ++ow) {
                memcpy(&d0, dr + ow * CC_DKB, sizeof d0);
                a0 += xr[ow * SW] * d0;
            }
        }
    }
    memcpy(&t, acc, sizeof t);
    t += (a0 + a1) + (a2 + a3);
    memcpy(acc, &t, sizeof t);
}

/* dW through the direct loops (N in chunks of B images): dy of a chunk is
 * transposed into 16-channel vectors dyT[kb][n][pos][16], then every
 * (block, tap) pair is one unit of parallel work that reduces over the whole
 * chunk in a fixed order, into dwT[kb][tap][16] (kept across chunks). */
static int FN(dw_direct)(const REAL *dy, const REAL *x, const cc_conv_geom *g, REAL *work,
                         int64_t B, int n_threads, REAL *dw)
{
    const int64_t K = g->K, CKK = g->C * g->KH * g->KW, KK = g->KH * g->KW, L = g->OH * g->OW;
    const int64_t nkb = (K + CC_DKB - 1) / CC_DKB;
    REAL *dwT = work, *dyT = work + nkb * CKK * CC_DKB;
    int64_t i, n0;
    for (i = 0; i < nkb * CKK * CC_DKB; ++i) dwT[i] = 0;
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
#pragma omp for schedule(static)
            for (i = 0; i < nkb * nb; ++i) {
                const int64_t kb = i / nb, n = i % nb;
                const REAL *src = dy + ((n0 + n) * K) * L;
                REAL *dst = dyT + (kb * nb + n) * L * CC_DKB;
                int64_t pos, q;
                for (pos = 0; pos < L; ++pos)
                    for (q = 0; q < CC_DKB; ++q) {
                        const int64_t k = kb * CC_DKB + q;
                        dst[pos * CC_DKB + q] = k < K ? src[k * L + pos] : 0;
                    }
            }
#pragma omp for schedule(dynamic, 4)
            for (i = 0; i < nkb * CKK; ++i) {
                const int64_t kb = i / CKK, r = i % CKK;
                const int64_t c = r / KK, kh = (r % KK) / g->KW, kw = r % g->KW;
                FN(direct_dw_tap)(x + n0 * g->C * g->H * g->W, dyT + kb * nb * L * CC_DKB, nb, g,
                                  c, kh, kw, dwT + i * CC_DKB);
            }
        }
    }
    for (i = 0; i < K * CKK; ++i) {
        const int64_t k = i / CKK, r = i % CKK;
        dw[i] = dwT[((k / CC_DKB) * CKK + r) * CC_DKB + k % CC_DKB];
    }
    return CC_OK;
}

/* Depthwise forward of one plane through a zero-padded copy xp of
 * (H + 2PH + CC_DWR SH) x (W + 2PW + 16 SW): no bounds checks, and padding
 * meets the weights as zeros (an Inf/NaN tap there gives NaN, as im2col
 * does).  A run of 16 outputs in each of CC_DWR rows is one vector
 * accumulator; each takes the bias, then every tap in order, then is stored
 * (rows past the output are computed from zeros and dropped). */
#define CC_DWR 4
CC_CLONES_FMA static void FN(dw_fwd_plane_padded)(const REAL *CC_RESTRICT xc,
                                                  const REAL *CC_RESTRICT wk, REAL bk,
                                                  const cc_conv_geom *g, REAL *CC_RESTRICT xp,
                                                  REAL *CC_RESTRICT yp)
{
    const int64_t Hp = g->H + 2 * g->PH + CC_DWR * g->SH, Wp = g->W + 2 * g->PW + CC_DKB * g->SW;
    const int64_t OW = g->OW, SW = g->SW, SH = g->SH;
    int64_t i, h, kh, kw, oh0, ow0;
    for (i = 0; i < Hp * Wp; ++i) xp[i] = 0;
    for (h = 0; h < g->H; ++h)
        memcpy(xp + (h + g->PH) * Wp + g->PW, xc + h * g->W, (size_t)g->W * sizeof(REAL));
    for (oh0 = 0; oh0 < g->OH; oh0 += CC_DWR) {
        const int64_t nr = CC_MIN(CC_DWR, g->OH - oh0);
        for (ow0 = 0; ow0 < OW; ow0 += CC_DKB) {
            const size_t nbytes = (size_t)CC_MIN(CC_DKB, OW - ow0) * sizeof(REAL);
            FN(vk_t) acc[CC_DWR];
            int q, r;
            for (r = 0; r < CC_DWR; ++r)
                for (q = 0; q < CC_DKB; ++q) acc[r][q] = bk;
            for (kh = 0; kh < g->KH; ++kh) {
                const REAL *xr = xp + (oh0 * SH + kh * g->DH) * Wp + ow0 * SW;
                for (kw = 0; kw < g->KW; ++kw) {
                    const REAL wv = wk[kh * g->KW + kw];
                    for (r = 0; r < CC_DWR; ++r) {
                        const REAL *xs = xr + r * SH * Wp + kw * g->DW;
                        FN(vk_t) xv;
                        if (SW == 1) {
                            memcpy(&xv, xs, sizeof xv);
                        } else {
                            for (q = 0; q < CC_DKB; ++q) xv[q] = xs[q * SW];
                        }
                        acc[r] += wv * xv;
                    }
                }
            }
            for (r = 0; r < nr; ++r) memcpy(yp + (oh0 + r) * OW + ow0, &acc[r], nbytes);
        }
    }
}
#undef CC_DWR

#undef CC_DKB
#undef CC_DOB
