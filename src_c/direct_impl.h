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

/* A matrix M (O x I, M[o][i] at M + o*so + i*si) in blocks of bs rows,
 * row-interleaved: Mt[ob][i][q] = M[ob*bs + q][i], zero past O. */
static void FN(pack_blocks)(const REAL *M, int64_t O, int64_t I, int64_t so, int64_t si,
                            int64_t bs, REAL *Mt)
{
    const int64_t nob = (O + bs - 1) / bs;
    int64_t ob, i, q;
    for (ob = 0; ob < nob; ++ob)
        for (i = 0; i < I; ++i)
            for (q = 0; q < bs; ++q) {
                const int64_t o = ob * bs + q;
                Mt[(ob * I + i) * bs + q] = o < O ? M[o * so + i * si] : 0;
            }
}

/* the kernel in blocks of CC_DKB output channels, wt[kb][tap][CC_DKB] */
static void FN(direct_wt)(const REAL *w, int64_t K, int64_t CKK, REAL *wt)
{
    FN(pack_blocks)(w, K, CKK, CKK, 1, CC_DKB, wt);
}

/* out[j][q] = sum over taps of wt[tap][q] * xpad[c, kh*DH, kw*DW + po[j]], where
 * po[j] is the offset in a channel of xpad of output position j's window.
 * The CC_DKB channels are one vector (GCC/Clang vector extensions: one
 * AVX-512 register, two AVX2 ones, ... on the clone the machine runs), and
 * the CC_DOB positions are independent accumulators. */
typedef REAL FN(vk_t) __attribute__((vector_size(CC_DKB * sizeof(REAL)), aligned(sizeof(REAL))));
/* lane masks: the signed integers as wide as REAL, as a vector like vk_t */
typedef __typeof__(((FN(vk_t)){0} < (FN(vk_t)){0})[0]) FN(mask_elem_t);
typedef FN(mask_elem_t) FN(mk_t)
    __attribute__((vector_size(CC_DKB * sizeof(REAL)), aligned(sizeof(REAL))));
/* the 32-byte vectors of the kernels' versions for CPUs without AVX-512
 * (one AVX2 register), and their lane masks */
typedef REAL FN(vn_t) __attribute__((vector_size(32), aligned(sizeof(REAL))));
typedef FN(mask_elem_t) FN(mn_t) __attribute__((vector_size(32), aligned(sizeof(REAL))));

/* CC_DKB values at p (aligned as REAL) as a vector, and back.  (The kernels
 * below load and store through these rather than copying into a local whose
 * address is taken: such a local may be given a 64-byte alignment that
 * instrumented builds cannot always honour.) */
#define CC_VLOAD(p) (*(const FN(vk_t) *)(const void *)(p))
#define CC_VSTORE(p, v) (*(FN(vk_t) *)(void *)(p) = (v))
/* the first n (<= CC_DKB) values of v to dst, a part through the heap
 * scratch (CC_DKB values), not through a vector local's lanes */
#define CC_VSTORE_N(dst, v, n, scratch)                                           \
    do {                                                                          \
        if ((n) == CC_DKB) {                                                      \
            CC_VSTORE(dst, v);                                                    \
        } else {                                                                  \
            int64_t q_;                                                           \
            CC_VSTORE(scratch, v);                                                \
            for (q_ = 0; q_ < (n); ++q_) (dst)[q_] = (scratch)[q_];               \
        }                                                                         \
    } while (0)

CC_CLONES_FMA static void FN(direct_block)(const REAL *CC_RESTRICT xpad, int64_t Hp, int64_t Wpp,
                                           const REAL *CC_RESTRICT wt, const cc_conv_geom *g,
                                           const int64_t *CC_RESTRICT po, REAL *CC_RESTRICT out)
{
    FN(vk_t) acc[CC_DOB];
    int64_t c, kh, kw;
    int j;
    memset(acc, 0, sizeof acc);
    for (c = 0; c < g->C; ++c) {
        for (kh = 0; kh < g->KH; ++kh) {
            const REAL *xr = xpad + (c * Hp + kh * g->DH) * Wpp;
            const REAL *wr = wt + (c * g->KH + kh) * g->KW * CC_DKB;
            for (kw = 0; kw < g->KW; ++kw) {
                const REAL *xs = xr + kw * g->DW;
                FN(vk_t) wv;
                memcpy(&wv, wr + kw * CC_DKB, sizeof wv);
                for (j = 0; j < CC_DOB; ++j) acc[j] += xs[po[j]] * wv;
            }
        }
    }
    memcpy(out, acc, sizeof acc);
}

/* direct_block for CPUs with AVX2 and FMA but not AVX-512 (see pw_block8):
 * each 16-channel accumulator as two 32-byte halves, 12 for the CC_DOB (6)
 * positions, in registers; the taps in direct_block's order with fused
 * multiply-adds, so the same results.  (float32: a double's 16 channels
 * would take 24 registers) */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__)
#define CC_DIRECT8_HAVE 1
typedef float FN(d8_t) __attribute__((vector_size(32), aligned(sizeof(float))));
__attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
static void FN(direct_block8)(const float *CC_RESTRICT xpad, int64_t Hp, int64_t Wpp,
                              const float *CC_RESTRICT wt, const cc_conv_geom *g,
                              const int64_t *CC_RESTRICT po, float *CC_RESTRICT out)
{
    FN(d8_t) a0 = {0}, b0 = {0}, a1 = {0}, b1 = {0}, a2 = {0}, b2 = {0}, a3 = {0}, b3 = {0},
             a4 = {0}, b4 = {0}, a5 = {0}, b5 = {0};
    const int64_t p0 = po[0], p1 = po[1], p2 = po[2], p3 = po[3], p4 = po[4], p5 = po[5];
    int64_t c, kh, kw;
    for (c = 0; c < g->C; ++c)
        for (kh = 0; kh < g->KH; ++kh) {
            const float *xr = xpad + (c * Hp + kh * g->DH) * Wpp;
            const float *wr = wt + (c * g->KH + kh) * g->KW * 16;
            for (kw = 0; kw < g->KW; ++kw) {
                const float *xs = xr + kw * g->DW;
                const FN(d8_t) wl = *(const FN(d8_t) *)(const void *)(wr + kw * 16);
                const FN(d8_t) wh = *(const FN(d8_t) *)(const void *)(wr + kw * 16 + 8);
                a0 += xs[p0] * wl, b0 += xs[p0] * wh;
                a1 += xs[p1] * wl, b1 += xs[p1] * wh;
                a2 += xs[p2] * wl, b2 += xs[p2] * wh;
                a3 += xs[p3] * wl, b3 += xs[p3] * wh;
                a4 += xs[p4] * wl, b4 += xs[p4] * wh;
                a5 += xs[p5] * wl, b5 += xs[p5] * wh;
            }
        }
#define CC_D8_OUT(j, lo, hi)                                                   \
    (*(FN(d8_t) *)(void *)(out + (j) * 16) = (lo),                             \
     *(FN(d8_t) *)(void *)(out + (j) * 16 + 8) = (hi))
    CC_D8_OUT(0, a0, b0);
    CC_D8_OUT(1, a1, b1);
    CC_D8_OUT(2, a2, b2);
    CC_D8_OUT(3, a3, b3);
    CC_D8_OUT(4, a4, b4);
    CC_D8_OUT(5, a5, b5);
#undef CC_D8_OUT
}
#endif

/* direct_block on this CPU (see pw_block_any) */
static void FN(direct_block_any)(const REAL *CC_RESTRICT xpad, int64_t Hp, int64_t Wpp,
                                 const REAL *CC_RESTRICT wt, const cc_conv_geom *g,
                                 const int64_t *CC_RESTRICT po, REAL *CC_RESTRICT out)
{
#ifdef CC_DIRECT8_HAVE
    if (sizeof(REAL) == sizeof(float) && cc_avx2_kernels()) {
        FN(direct_block8)((const float *)(const void *)xpad, Hp, Wpp,
                          (const float *)(const void *)wt, g, po, (float *)(void *)out);
        return;
    }
#endif
    FN(direct_block)(xpad, Hp, Wpp, wt, g, po, out);
}

/* The output positions are taken CC_DOB at a time in row-major order (a
 * block may span rows), so a narrow output (LeNet's 10 columns) keeps every
 * accumulator busy; the last block repeats its last position. */
static int FN(fwd_direct)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                          REAL *work, int n_threads, REAL *y)
{
    const int64_t K = g->K, CKK = g->C * g->KH * g->KW, L = g->OH * g->OW;
    const int64_t nkb = (K + CC_DKB - 1) / CC_DKB;
    const int64_t Hp = g->H + 2 * g->PH, Wpp = g->W + 2 * g->PW;
    int64_t n;
    FN(direct_wt)(w, K, CKK, work);
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && g->N > 1) schedule(static)
    for (n = 0; n < g->N; ++n) {
        REAL xpad[CC_DIRECT_MAX_PAD];
        REAL out[CC_DOB * CC_DKB];
        int64_t po[CC_DOB];
        const REAL *xn = x + n * g->C * g->H * g->W;
        REAL *yn = y + n * K * L;
        int64_t c, h, i, p0, kb;
        for (i = 0; i < g->C * Hp * Wpp; ++i) xpad[i] = 0;
        for (c = 0; c < g->C; ++c)
            for (h = 0; h < g->H; ++h) {
                const REAL *src = xn + (c * g->H + h) * g->W;
                REAL *dst = xpad + (c * Hp + h + g->PH) * Wpp + g->PW;
                for (i = 0; i < g->W; ++i) dst[i] = src[i];
            }
        for (p0 = 0; p0 < L; p0 += CC_DOB) {
            const int64_t nj = CC_MIN(CC_DOB, L - p0);
            int64_t j, q;
            for (j = 0; j < CC_DOB; ++j) {
                const int64_t p = p0 + CC_MIN(j, nj - 1);
                po[j] = p / g->OW * g->SH * Wpp + p % g->OW * g->SW;
            }
            for (kb = 0; kb < nkb; ++kb) {
                const int64_t nq = CC_MIN(CC_DKB, K - kb * CC_DKB);
                FN(direct_block_any)(xpad, Hp, Wpp, work + kb * CKK * CC_DKB, g, po, out);
                for (q = 0; q < nq; ++q) {
                    const int64_t k = kb * CC_DKB + q;
                    const REAL bk = b ? b[k] : 0;
                    REAL *yr = yn + k * L + p0;
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

/* dW of a small layer, all R x R taps of input channel c (R = KH = KW, 3 or
 * 5) and one 16-channel block: acc[tap] += sum over images n and output
 * positions of xpad[ih][iw] * dyT[n][pos], with xpad plane c of image n
 * zero-padded into xp.  One accumulator per tap (R*R vectors in registers)
 * takes the positions in order, so each dyT vector is loaded once for all
 * the taps. */
static inline __attribute__((always_inline)) void FN(dw_chan_body)(
    const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT dyT, int64_t nb, const cc_conv_geom *g,
    int64_t c, REAL *CC_RESTRICT xp, REAL *CC_RESTRICT acc, const int R, const int unit_dw)
{
    const int64_t H = g->H, W = g->W, Wp = W + 2 * g->PW, Hp = H + 2 * g->PH;
    const int64_t OW = g->OW, L = g->OH * g->OW, SH = g->SH, SW = g->SW;
    /* (a unit width dilation as a constant: the taps of a row are then
     * fixed displacements from one address, not R*R offsets in registers) */
    const int64_t dh = g->DH * Wp, dw = unit_dw ? 1 : g->DW;
    const FN(vk_t) zero = {0};
    FN(vk_t) a[25];
    int64_t n, oh, ow, i;
    int t;
    for (t = 0; t < R * R; ++t) a[t] = zero;
    for (i = 0; i < Hp * Wp; ++i) xp[i] = 0;
    for (n = 0; n < nb; ++n) {
        const REAL *xc = x + (n * g->C + c) * H * W;
        const REAL *dn = dyT + n * L * CC_DKB;
        for (i = 0; i < H; ++i) {
            int64_t j;
            for (j = 0; j < W; ++j) xp[(i + g->PH) * Wp + g->PW + j] = xc[i * W + j];
        }
        for (oh = 0; oh < g->OH; ++oh) {
            const REAL *xr = xp + oh * SH * Wp;
            const REAL *dr = dn + oh * OW * CC_DKB;
            for (ow = 0; ow < OW; ++ow) {
                const FN(vk_t) v = CC_VLOAD(dr + ow * CC_DKB);
                const REAL *xs = xr + ow * SW;
                int kh, kw;
#pragma GCC unroll 5
                for (kh = 0; kh < R; ++kh) {
                    const REAL *xk = xs + kh * dh;
#pragma GCC unroll 5
                    for (kw = 0; kw < R; ++kw) a[kh * R + kw] += xk[kw * dw] * v;
                }
            }
        }
    }
    for (t = 0; t < R * R; ++t) CC_VSTORE(acc + t * CC_DKB, CC_VLOAD(acc + t * CC_DKB) + a[t]);
}

/* channel units for R = 3 or 5, unit width dilation (u) or any */
#define CC_DW_CHAN(name, R, unit)                                                          \
    CC_CLONES_FMA static void FN(name)(const REAL *x, const REAL *dyT, int64_t nb,           \
                                       const cc_conv_geom *g, int64_t c, REAL *xp, REAL *acc) \
    {                                                                                      \
        FN(dw_chan_body)(x, dyT, nb, g, c, xp, acc, R, unit);                              \
    }
CC_DW_CHAN(dw_chan3, 3, 0)
CC_DW_CHAN(dw_chan5, 5, 0)
CC_DW_CHAN(dw_chan3u, 3, 1)
CC_DW_CHAN(dw_chan5u, 5, 1)
#undef CC_DW_CHAN

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
    /* 3x3 and 5x5 kernels with enough channel units for a team take whole
     * channels (a choice by shape alone: the sums' order must not depend
     * on the thread count) */
    const int chan = g->KH == g->KW && (g->KH == 3 || g->KH == 5) && nkb * g->C >= 4 &&
                     (g->H + 2 * g->PH) * (g->W + 2 * g->PW) <= CC_DIRECT_MAX_PAD;
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
                /* (a channel at a time: contiguous reads, and the image's
                 * vectors stay in cache across the channels) */
                for (q = 0; q < CC_DKB; ++q) {
                    const int64_t k = kb * CC_DKB + q;
                    if (k < K)
                        for (pos = 0; pos < L; ++pos) dst[pos * CC_DKB + q] = src[k * L + pos];
                    else
                        for (pos = 0; pos < L; ++pos) dst[pos * CC_DKB + q] = 0;
                }
            }
            if (chan) {
                /* whole channels: every tap of channel c per unit */
                REAL xp[CC_DIRECT_MAX_PAD];
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < nkb * g->C; ++i) {
                    const int64_t kb = i / g->C, c = i % g->C;
                    REAL *acc = dwT + (kb * CKK + c * KK) * CC_DKB;
                    const REAL *dyk = dyT + kb * nb * L * CC_DKB;
                    const REAL *xn = x + n0 * g->C * g->H * g->W;
                    if (g->DW == 1) {
                        if (g->KH == 3) FN(dw_chan3u)(xn, dyk, nb, g, c, xp, acc);
                        else FN(dw_chan5u)(xn, dyk, nb, g, c, xp, acc);
                    } else {
                        if (g->KH == 3) FN(dw_chan3)(xn, dyk, nb, g, c, xp, acc);
                        else FN(dw_chan5)(xn, dyk, nb, g, c, xp, acc);
                    }
                }
            } else {
#pragma omp for schedule(dynamic, 4)
                for (i = 0; i < nkb * CKK; ++i) {
                    const int64_t kb = i / CKK, r = i % CKK;
                    const int64_t c = r / KK, kh = (r % KK) / g->KW, kw = r % g->KW;
                    FN(direct_dw_tap)(x + n0 * g->C * g->H * g->W, dyT + kb * nb * L * CC_DKB, nb, g,
                                      c, kh, kw, dwT + i * CC_DKB);
                }
            }
        }
    }
    for (i = 0; i < K * CKK; ++i) {
        const int64_t k = i / CKK, r = i % CKK;
        dw[i] = dwT[((k / CC_DKB) * CKK + r) * CC_DKB + k % CC_DKB];
    }
    return CC_OK;
}

/* Pointwise (1x1, stride 1, no padding) products with a small matrix:
 * out[o, p] = sum over i of M[o, i] * in[i, p] for each image, with M the
 * weights (forward, O = K, I = C) or their transpose (dX, O = C, I = K).
 * Such a product is thin (few rows of M), so a BLAS spends as long packing
 * the image as multiplying.  Here each image stays where it is: a block of
 * CC_PWO rows of M x CC_PWP positions is 2 CC_PWO vector accumulators, and
 * the loop over i reads two vectors of `in` and CC_PWO values of Mt (M in
 * blocks of CC_PWO rows, row-interleaved, zero past O).  Every sum runs over
 * i in order, so results do not depend on the thread count. */
#define CC_PWO 8
#define CC_PWP (2 * CC_DKB)
#define CC_PW_SPAN 4   /* position blocks a task builds at once from x */

/* rows [o0, o0 + no) x positions [0, np) of out (row stride ldo) from the
 * block mt of Mt and CC_PWP positions of in (row stride ldi), plus bias */
CC_CLONES_FMA static void FN(pw_block)(const REAL *CC_RESTRICT mt, const REAL *CC_RESTRICT in,
                                       int64_t ldi, int64_t I, const REAL *bias, int64_t no,
                                       int64_t np, REAL *CC_RESTRICT out, int64_t ldo,
                                       REAL *CC_RESTRICT scratch)
{
    const FN(vk_t) zero = {0};
    FN(vk_t) a00 = zero, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71;
    const int64_t n0 = CC_MIN(CC_DKB, np), n1 = CC_MAX(0, np - CC_DKB);
    int64_t i, o;
    a01 = a10 = a11 = a20 = a21 = a30 = a31 = a00;
    a40 = a41 = a50 = a51 = a60 = a61 = a70 = a71 = a00;
    for (i = 0; i < I; ++i) {
        const REAL *m = mt + i * CC_PWO;
        const FN(vk_t) x0 = CC_VLOAD(in + i * ldi), x1 = CC_VLOAD(in + i * ldi + CC_DKB);
        a00 += m[0] * x0, a01 += m[0] * x1;
        a10 += m[1] * x0, a11 += m[1] * x1;
        a20 += m[2] * x0, a21 += m[2] * x1;
        a30 += m[3] * x0, a31 += m[3] * x1;
        a40 += m[4] * x0, a41 += m[4] * x1;
        a50 += m[5] * x0, a51 += m[5] * x1;
        a60 += m[6] * x0, a61 += m[6] * x1;
        a70 += m[7] * x0, a71 += m[7] * x1;
    }
    for (o = 0; o < no; ++o) {
        FN(vk_t) v0, v1;
        REAL *r = out + o * ldo;
        const REAL bo = bias ? bias[o] : 0;
        switch (o) {
        case 0: v0 = a00, v1 = a01; break;
        case 1: v0 = a10, v1 = a11; break;
        case 2: v0 = a20, v1 = a21; break;
        case 3: v0 = a30, v1 = a31; break;
        case 4: v0 = a40, v1 = a41; break;
        case 5: v0 = a50, v1 = a51; break;
        case 6: v0 = a60, v1 = a61; break;
        default: v0 = a70, v1 = a71; break;
        }
        v0 += bo;
        v1 += bo;
        CC_VSTORE_N(r, v0, n0, scratch);
        CC_VSTORE_N(r + CC_DKB, v1, n1, scratch);
    }
}

/* pw_block for CPUs with AVX2 and FMA but not AVX-512, where a 16-value
 * vector has no register (cc_wide_vectors): the same block in 32-byte
 * vectors, CC_PW8_ROWS rows x 2 vectors of positions a pass (8 accumulators,
 * in registers), the passes over the block's rows and positions.  Each sum
 * still runs over i in order with fused multiply-adds, as the AVX-512 clone
 * does: the same results. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__ELF__)
#ifndef CC_PW8_SHAPE
#define CC_PW8_SHAPE
#define CC_PW8_ROWS 4
#define CC_PW8_HAVE 1
#endif
__attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
static void FN(pw_block8)(const REAL *CC_RESTRICT mt, const REAL *CC_RESTRICT in, int64_t ldi,
                          int64_t I, const REAL *bias, int64_t no, int64_t np,
                          REAL *CC_RESTRICT out, int64_t ldo)
{
    enum { V = 32 / sizeof(REAL) };   /* values a vector */
    int64_t r0, p0, i;
    for (r0 = 0; r0 < no; r0 += CC_PW8_ROWS)
        for (p0 = 0; p0 < np; p0 += 2 * V) {
            FN(vn_t) a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0}, c0 = {0}, c1 = {0}, d0 = {0},
                     d1 = {0};
            REAL t[2 * V];
            int64_t o, q;
            for (i = 0; i < I; ++i) {
                const REAL *m = mt + i * CC_PWO + r0;
                const FN(vn_t) x0 = *(const FN(vn_t) *)(const void *)(in + i * ldi + p0);
                const FN(vn_t) x1 = *(const FN(vn_t) *)(const void *)(in + i * ldi + p0 + V);
                a0 += m[0] * x0, a1 += m[0] * x1;
                b0 += m[1] * x0, b1 += m[1] * x1;
                c0 += m[2] * x0, c1 += m[2] * x1;
                d0 += m[3] * x0, d1 += m[3] * x1;
            }
            for (o = r0; o < CC_MIN(no, r0 + CC_PW8_ROWS); ++o) {
                const REAL bo = bias ? bias[o] : 0;
                const int64_t n = CC_MIN(2 * V, np - p0);
                FN(vn_t) v0, v1;
                switch (o - r0) {
                case 0: v0 = a0, v1 = a1; break;
                case 1: v0 = b0, v1 = b1; break;
                case 2: v0 = c0, v1 = c1; break;
                default: v0 = d0, v1 = d1; break;
                }
                v0 += bo;
                v1 += bo;
                *(FN(vn_t) *)(void *)t = v0;
                *(FN(vn_t) *)(void *)(t + V) = v1;
                for (q = 0; q < n; ++q) out[o * ldo + p0 + q] = t[q];
            }
        }
}
#endif

/* the product kernel's block on this CPU: the 16-value vectors with
 * AVX-512 (or where there is no other), else the 32-byte ones */
static void FN(pw_block_any)(const REAL *CC_RESTRICT mt, const REAL *CC_RESTRICT in,
                             int64_t ldi, int64_t I, const REAL *bias, int64_t no, int64_t np,
                             REAL *CC_RESTRICT out, int64_t ldo, REAL *CC_RESTRICT scratch)
{
#ifdef CC_PW8_HAVE
    if (cc_avx2_kernels()) {
        FN(pw_block8)(mt, in, ldi, I, bias, no, np, out, ldo);
        return;
    }
#endif
    FN(pw_block)(mt, in, ldi, I, bias, no, np, out, ldo, scratch);
}

/* The weight gradient's product C = A . Bᵀ (+ C with `accumulate`) where B
 * has few rows: C[r + k*ldc] = sum over l < len of A[r*lda + l] *
 * B[k*ldb + l], r < m (the columns' rows, C*KH*KW), k < n (output
 * channels), l over the positions: the BLAS's gemm("T", "N") in the weight
 * gradients of dw_streamed, BATCHED, TILES and the pointwise path.  A BLAS
 * packs the long A for every call and its kernel then does little with it
 * (LeNet-5's first layer spent 70 % of its dW in the packing); here each sum is a dot product along the rows as they lie,
 * CC_DOT_ROWS x CC_DOT_COLS sums a pass, each in a 32-byte vector of
 * partial sums (fused multiply-adds in l order), then its lanes added in a
 * fixed order and the last len % V terms one by one: the order depends on
 * len alone, not on the blocking, the thread or the call. */
#ifdef CC_PW8_HAVE
#ifndef CC_DOT_SHAPE
#define CC_DOT_SHAPE
#define CC_DOT_ROWS 4
#define CC_DOT_COLS 3
/* at most this many output channels and at least this many positions:
 * wider products amortise the BLAS's packing, and on shorter rows the
 * lanes' final sums cost more than it (GoogLeNet's 832 -> 32 1x1 on 7x7
 * maps at batch 8, dW an image at a time: 0.27 ms through the BLAS, 0.45
 * as dot products; its 192 -> 16 on 28x28: 0.61 against 0.36) */
#define CC_DOT_MAX_N 32
#define CC_DOT_MIN_LEN 128
#endif

/* the lanes of v added in a fixed order, then the tail's terms */
static inline __attribute__((always_inline)) REAL FN(dot_finish)(
    const FN(vn_t) *v, const REAL *a, const REAL *b, int64_t tail)
{
    enum { V = 32 / sizeof(REAL) };
    REAL t[V], s;
    int64_t w, l;
    memcpy(t, v, sizeof t);
    for (w = V / 2; w >= 1; w /= 2)   /* (halves folded onto each other) */
        for (l = 0; l < w; ++l) t[l] += t[l + w];
    s = t[0];
    for (l = 0; l < tail; ++l)
        s = sizeof(REAL) == sizeof(float) ? (REAL)__builtin_fmaf((float)a[l], (float)b[l], (float)s)
                                          : (REAL)__builtin_fma(a[l], b[l], s);
    return s;
}

__attribute__((target("avx2,fma"), optimize("fp-contract=fast")))
static void FN(dot_tn8)(int64_t m, int64_t n, int64_t len, const REAL *CC_RESTRICT A,
                        int64_t lda, const REAL *CC_RESTRICT B, int64_t ldb, int accumulate,
                        REAL *CC_RESTRICT C, int64_t ldc)
{
    enum { V = 32 / sizeof(REAL) };
#define CC_DOT_LD(p) (*(const FN(vn_t) *)(const void *)(p))
    const int64_t lv = len / V * V, tail = len - lv;
    int64_t r0, k0, l, r, k;
    for (k0 = 0; k0 < n; k0 += CC_DOT_COLS) {
        const int64_t nk = CC_MIN(CC_DOT_COLS, n - k0);
        for (r0 = 0; r0 < m; r0 += CC_DOT_ROWS) {
            const int64_t nr = CC_MIN(CC_DOT_ROWS, m - r0);
            if (nr == CC_DOT_ROWS && nk == CC_DOT_COLS) {
                const REAL *a0 = A + r0 * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
                const REAL *b0 = B + k0 * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb;
                FN(vn_t) s00 = {0}, s01 = {0}, s02 = {0}, s10 = {0}, s11 = {0}, s12 = {0};
                FN(vn_t) s20 = {0}, s21 = {0}, s22 = {0}, s30 = {0}, s31 = {0}, s32 = {0};
                for (l = 0; l < lv; l += V) {
                    const FN(vn_t) y0 = CC_DOT_LD(b0 + l), y1 = CC_DOT_LD(b1 + l);
                    const FN(vn_t) y2 = CC_DOT_LD(b2 + l);
                    FN(vn_t) x = CC_DOT_LD(a0 + l);
                    s00 += x * y0, s01 += x * y1, s02 += x * y2;
                    x = CC_DOT_LD(a1 + l);
                    s10 += x * y0, s11 += x * y1, s12 += x * y2;
                    x = CC_DOT_LD(a2 + l);
                    s20 += x * y0, s21 += x * y1, s22 += x * y2;
                    x = CC_DOT_LD(a3 + l);
                    s30 += x * y0, s31 += x * y1, s32 += x * y2;
                }
                {
                    const FN(vn_t) acc[4][3] = {{s00, s01, s02}, {s10, s11, s12},
                                                {s20, s21, s22}, {s30, s31, s32}};
                    for (r = 0; r < 4; ++r)
                        for (k = 0; k < 3; ++k) {
                            const REAL v = FN(dot_finish)(&acc[r][k], A + (r0 + r) * lda + lv,
                                                          B + (k0 + k) * ldb + lv, tail);
                            REAL *c = C + (r0 + r) + (k0 + k) * ldc;
                            *c = accumulate ? *c + v : v;
                        }
                }
                continue;
            }
            /* (the edges: one sum at a time, the same arithmetic) */
            for (k = k0; k < k0 + nk; ++k)
                for (r = r0; r < r0 + nr; ++r) {
                    const REAL *a = A + r * lda, *b = B + k * ldb;
                    FN(vn_t) acc = {0};
                    REAL v, *c = C + r + k * ldc;
                    for (l = 0; l < lv; l += V) acc += CC_DOT_LD(a + l) * CC_DOT_LD(b + l);
                    v = FN(dot_finish)(&acc, a + lv, b + lv, tail);
                    *c = accumulate ? *c + v : v;
                }
        }
    }
#undef CC_DOT_LD
}
#endif

/* gemm("T", "N", m, n, len, 1, A, lda, B, ldb, accumulate ? 1 : 0, C, ldc):
 * the dot-product kernel above on CPUs with AVX2 and FMA but not AVX-512
 * where n is small, else the BLAS */
static void FN(gemm_tn)(GEMM_T gemm, int m, int n, int len, const REAL *A, int lda,
                        const REAL *B, int ldb, int accumulate, REAL *C, int ldc)
{
    const REAL one = 1, zero = 0;
#ifdef CC_PW8_HAVE
    if (n <= CC_DOT_MAX_N && len >= CC_DOT_MIN_LEN && cc_avx2_kernels()) {
        FN(dot_tn8)(m, n, len, A, lda, B, ldb, accumulate, C, ldc);
        return;
    }
#endif
    gemm("T", "N", &m, &n, &len, &one, A, &lda, B, &ldb, accumulate ? &one : &zero, C, &ldc);
}

/* out (N, O, P) = M . in (N, I, P) per image, + bias (or none); Mt packed.
 * Tasks are (image, block of CC_PWP positions).  Each block is first copied
 * into a per-thread buffer of I x CC_PWP (zero past the end of a row): the
 * row blocks of M then read it contiguously, from cache, instead of I rows
 * a whole image apart.  With g, `in` is the layer's input x (N, C, H, W) and
 * each block is its im2col columns (I = C*KH*KW, P = OH*OW), built straight
 * into the buffer. */
static int FN(pw_images)(const REAL *Mt, int64_t O, int64_t I, const REAL *in, int64_t N,
                         int64_t P, const REAL *bias, int n_threads, REAL *out,
                         const cc_conv_geom *g)
{
    /* positions a task: im2col pays a little per row and span, so from x
     * it builds CC_PW_SPAN blocks at once */
    const int64_t bw = g ? CC_PW_SPAN * CC_PWP : CC_PWP;
    const int64_t npb = (P + bw - 1) / bw, nob = (O + CC_PWO - 1) / CC_PWO;
    const int64_t tasks = N * npb;
    int failed = 0;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && tasks > 1) reduction(| : failed)
    {
        REAL *blk = (REAL *)malloc((size_t)(I * bw + CC_DKB) * sizeof(REAL));
        int64_t t;
        if (!blk) failed = 1;
#pragma omp for schedule(static)
        for (t = 0; t < tasks; ++t) {
            const int64_t n = t / npb, p0 = (t % npb) * bw, np = CC_MIN(bw, P - p0);
            const REAL *src = in + n * I * P + p0;
            int64_t i, j, ob, q;
            if (!blk) continue;
            if (g) {
                FN(im2col_span)(in + n * g->C * g->H * g->W, g, 0, I, p0, p0 + np, bw, blk);
                for (i = 0; i < I; ++i)
                    for (j = np; j < (np + CC_PWP - 1) / CC_PWP * CC_PWP; ++j) blk[i * bw + j] = 0;
            } else if (np == CC_PWP) {
                for (i = 0; i < I; ++i) memcpy(blk + i * CC_PWP, src + i * P, CC_PWP * sizeof(REAL));
            } else {
                for (i = 0; i < I; ++i)
                    for (j = 0; j < CC_PWP; ++j) blk[i * CC_PWP + j] = j < np ? src[i * P + j] : 0;
            }
            for (q = 0; q < np; q += CC_PWP)
                for (ob = 0; ob < nob; ++ob) {
                    const int64_t o0 = ob * CC_PWO;
                    FN(pw_block_any)(Mt + ob * I * CC_PWO, blk + q, bw, I, bias ? bias + o0 : NULL,
                                 CC_MIN(CC_PWO, O - o0), CC_MIN(CC_PWP, np - q),
                                 out + (n * O + o0) * P + p0 + q, P, blk + I * bw);
                }
        }
        free(blk);
    }
    return failed ? CC_ENOMEM : CC_OK;
}
/* M (O x I, M[o][i] at M + o*so + i*si) packed for pw_images, on the heap
 * (NULL if there is no memory: the caller takes its BLAS path). */
static REAL *FN(pw_packed)(const REAL *M, int64_t O, int64_t I, int64_t so, int64_t si)
{
    REAL *Mt = (REAL *)malloc((size_t)((O + CC_PWO - 1) / CC_PWO * CC_PWO * I) * sizeof(REAL));
    if (Mt) FN(pack_blocks)(M, O, I, so, si, CC_PWO, Mt);
    return Mt;
}

/* Forward (M = W, K x C) or dX (M = Wᵀ, C x K) of a pointwise layer. */
static int FN(pointwise)(const REAL *in, const REAL *w, const REAL *b, const cc_conv_geom *g,
                         int transpose, int n_threads, REAL *out)
{
    const int64_t O = transpose ? g->C : g->K, I = transpose ? g->K : g->C;
    REAL *Mt = FN(pw_packed)(w, O, I, transpose ? 1 : g->C, transpose ? g->C : 1);
    int st;
    if (!Mt) return CC_ENOMEM;
    st = FN(pw_images)(Mt, O, I, in, g->N, g->H * g->W, b, n_threads, out, NULL);
    free(Mt);
    return st;
}
/* out (O x np) = M . in for np <= pw_block_positions() positions, in with
 * rows ldi apart (read as whole blocks: up to that many values past np in
 * each row must be readable), out rows ldo apart; Mt from pw_packed */
static void FN(pw_positions)(const REAL *Mt, int64_t O, int64_t I, const REAL *in, int64_t ldi,
                             int64_t np, REAL *out, int64_t ldo, REAL *scratch)
{
    int64_t o0;
    for (o0 = 0; o0 < O; o0 += CC_PWO)
        FN(pw_block_any)(Mt + o0 * I, in, ldi, I, NULL, CC_MIN(CC_PWO, O - o0), np, out + o0 * ldo,
                     ldo, scratch);
}

static int64_t FN(pw_block_positions)(void) { return CC_PWP; }

#undef CC_PWO
#undef CC_PWP

/* Depthwise forward of one plane through a zero-padded copy xp of
 * (H + 2PH + CC_DEPTHWISE_ROWS SH) x (W + 2PW + CC_DEPTHWISE_COLS SW) elements
 * (cc_depthwise_pad_rows/cols):
 * no bounds checks, and padding meets the weights as zeros (an Inf/NaN tap
 * there gives NaN, as im2col does).  A block of CC_DEPTHWISE_ROWS rows x CC_DEPTHWISE_COLS columns
 * of outputs is CC_DEPTHWISE_ROWS x 2 vector accumulators, held in registers; each
 * takes the bias, then every tap in order, then is stored (outputs past the
 * plane are computed from zeros and dropped). */
#define CC_DEPTHWISE_ROWS 4
#define CC_DEPTHWISE_COLS (2 * CC_DKB)

#ifndef CC_DEPTHWISE_SHAPES
#define CC_DEPTHWISE_SHAPES
/* taps of the kernels that keep per-tap sums or a flipped copy on the stack */
#define CC_DEPTHWISE_MAX_TAPS 64
static int64_t cc_depthwise_pad_rows(const cc_conv_geom *g)
{
    return g->H + 2 * g->PH + CC_DEPTHWISE_ROWS * g->SH;
}
static int64_t cc_depthwise_pad_cols(const cc_conv_geom *g)
{
    return g->W + 2 * g->PW + CC_DEPTHWISE_COLS * g->SW;
}
/* a padded plane's buffer: the plane, then CC_DKB values of scratch */
static int64_t cc_depthwise_pad_elems(const cc_conv_geom *g)
{
    return cc_depthwise_pad_rows(g) * cc_depthwise_pad_cols(g) + CC_DKB;
}
/* dy of the weight gradient: rows rounded up to 2, columns to CC_DEPTHWISE_COLS */
static int64_t cc_depthwise_dy_rows(const cc_conv_geom *g) { return (g->OH + 1) / 2 * 2; }
static int64_t cc_depthwise_dy_cols(const cc_conv_geom *g)
{
    return (g->OW + CC_DEPTHWISE_COLS - 1) / CC_DEPTHWISE_COLS * CC_DEPTHWISE_COLS;
}
#endif

/* The plane xc (H x W) into xp, zero around it. */
static void FN(depthwise_fwd_plane_pad)(const REAL *CC_RESTRICT xc, const cc_conv_geom *g,
                                 REAL *CC_RESTRICT xp)
{
    const int64_t Hp = cc_depthwise_pad_rows(g), Wp = cc_depthwise_pad_cols(g);
    int64_t h, i;
    for (i = 0; i < g->PH * Wp; ++i) xp[i] = 0;
    for (h = 0; h < g->H; ++h) {
        REAL *r = xp + (h + g->PH) * Wp;
        for (i = 0; i < g->PW; ++i) r[i] = 0;
        memcpy(r + g->PW, xc + h * g->W, (size_t)g->W * sizeof(REAL));
        for (i = g->PW + g->W; i < Wp; ++i) r[i] = 0;
    }
    for (i = (g->H + g->PH) * Wp; i < Hp * Wp; ++i) xp[i] = 0;
}

/* The blocks of one output plane: depthwise_blocks_impl.h, in 16-value
 * vectors (FN(depthwise_fwd_blocks)) and in 32-byte ones
 * (FN(depthwise_fwd_blocks_narrow)); FN(depthwise_fwd_blocks_any) takes the
 * narrow ones without cc_wide_vectors. */
#define DWB_NAME FN(depthwise_fwd_blocks)
#define DWB_VL CC_DKB
#define DWB_V FN(vk_t)
#include "depthwise_blocks_impl.h"

#define DWB_NAME FN(depthwise_fwd_blocks_narrow)
#define DWB_VL (32 / (int64_t)sizeof(REAL))
#define DWB_V FN(vn_t)
#include "depthwise_blocks_impl.h"

static inline __attribute__((always_inline)) void FN(depthwise_fwd_blocks_any)(
    const REAL *CC_RESTRICT xp, const REAL *CC_RESTRICT wk, REAL bk, const cc_conv_geom *g,
    const int64_t SW, const int64_t nc, const int64_t ps, REAL *CC_RESTRICT scratch,
    REAL *CC_RESTRICT yp)
{
    if (cc_wide_vectors()) FN(depthwise_fwd_blocks)(xp, wk, bk, g, SW, nc, ps, scratch, yp);
    else FN(depthwise_fwd_blocks_narrow)(xp, wk, bk, g, SW, nc, ps, scratch, yp);
}

CC_CLONES_FMA static void FN(depthwise_fwd_plane_padded)(const REAL *CC_RESTRICT xc,
                                                  const REAL *CC_RESTRICT wk, REAL bk,
                                                  const cc_conv_geom *g, REAL *CC_RESTRICT xp,
                                                  REAL *CC_RESTRICT yp)
{
    REAL *scratch = xp + cc_depthwise_pad_rows(g) * cc_depthwise_pad_cols(g);
    FN(depthwise_fwd_plane_pad)(xc, g, xp);
    if (g->SW == 1)
        FN(depthwise_fwd_blocks_any)(xp, wk, bk, g, 1, 1, 0, scratch, yp);
    else
        FN(depthwise_fwd_blocks_any)(xp, wk, bk, g, g->SW, 1, 0, scratch, yp);
}

/* Forward of a layer with few input channels at width stride 1 (a first
 * layer: LeNet's 1 -> 6): the depthwise kernel's blocks of 4 rows x 32
 * columns of one output plane, over all C padded planes of the image, so
 * the vectors run along the output rows instead of over 16 output channels
 * (which such a layer does not have).  A task is an image and a range of
 * output channels; its C planes are padded once into a stack buffer
 * (cc_direct_planes_ok bounds it). */
#ifndef CC_PLANES_SHAPE
#define CC_PLANES_SHAPE
#define CC_PLANES_BUF CC_DIRECT_MAX_PAD
static int cc_direct_planes_ok(const cc_conv_geom *g)
{
    return g->groups == 1 && g->SW == 1 &&
           g->C * cc_depthwise_pad_rows(g) * cc_depthwise_pad_cols(g) + CC_DKB <= CC_PLANES_BUF;
}
#endif

/* max over each 2x2 window (stride 2, floor) of the plane s (OH x OW, with
 * 2 * CC_DKB readable values past its end), then ReLU, into out (OH/2 x
 * OW/2): the comparisons of max pooling's row kernel in its order (a
 * strictly greater value or a NaN takes over), and ReLU's select.  ReLU is
 * monotone and keeps NaN, so this is bit for bit the max pool of the ReLU.
 * Pieces of up to 32 outputs go through tmp in whole groups of 8 (the
 * loops then vectorise with no scalar tail, whose selects GCC leaves as
 * branches); the ReLU is a second loop, as in one loop its select kept GCC
 * from vectorising. */
#define CC_TAKES2(v, m) (((v) > (m)) | ((v) != (v)))
CC_TARGETS("avx2", "default") static void FN(pool2_relu_plane)(
    const REAL *CC_RESTRICT s, int64_t OH, int64_t OW, REAL *CC_RESTRICT out)
{
    const int64_t POH = OH / 2, POW = OW / 2;
    REAL tmp[32];
    int64_t i, j, j0;
    for (i = 0; i < POH; ++i) {
        for (j0 = 0; j0 < POW; j0 += 32) {
            const REAL *CC_RESTRICT r0 = s + 2 * i * OW + 2 * j0;
            const REAL *CC_RESTRICT r1 = r0 + OW;
            const int64_t cnt = CC_MIN(32, POW - j0), n8 = (cnt + 7) / 8 * 8;
            for (j = 0; j < n8; ++j) {
                REAL m = r0[2 * j], v;
                v = r0[2 * j + 1]; m = CC_TAKES2(v, m) ? v : m;
                v = r1[2 * j];     m = CC_TAKES2(v, m) ? v : m;
                v = r1[2 * j + 1]; m = CC_TAKES2(v, m) ? v : m;
                tmp[j] = m;
            }
            for (j = 0; j < n8; ++j) {
                const REAL m = tmp[j];
                tmp[j] = ((m > 0) | (m != m)) ? m : (REAL)0;
            }
            memcpy(out + i * POW + j0, tmp, (size_t)cnt * sizeof(REAL));
        }
    }
}
#undef CC_TAKES2

/* Output channels [k0, k1) of image xn: into yn (K planes of OH x OW), or,
 * with `plane` (OH x OW of scratch), each plane through it, max-pooled 2x2
 * and rectified into pooled (K planes of OH/2 x OW/2). */
CC_CLONES_FMA static void FN(planes_task)(const REAL *CC_RESTRICT xn, const REAL *CC_RESTRICT w,
                                          const REAL *CC_RESTRICT b, const cc_conv_geom *g,
                                          int64_t k0, int64_t k1, REAL *CC_RESTRICT xp,
                                          REAL *CC_RESTRICT yn, REAL *CC_RESTRICT plane,
                                          REAL *CC_RESTRICT pooled)
{
    const int64_t ps = cc_depthwise_pad_rows(g) * cc_depthwise_pad_cols(g);
    const int64_t CKK = g->C * g->KH * g->KW, L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t PL = (g->OH / 2) * (g->OW / 2);
    REAL *scratch = xp + g->C * ps;
    int64_t c, k;
    for (c = 0; c < g->C; ++c) FN(depthwise_fwd_plane_pad)(xn + c * HW, g, xp + c * ps);
    for (k = k0; k < k1; ++k) {
        FN(depthwise_fwd_blocks_any)(xp, w + k * CKK, b ? b[k] : 0, g, 1, g->C, ps, scratch,
                                 plane ? plane : yn + k * L);
        if (plane) FN(pool2_relu_plane)(plane, g->OH, g->OW, pooled + k * PL);
    }
}

static int FN(fwd_planes)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                          int n_threads, REAL *y)
{
    /* few images: split the output channels too, so each thread has work */
    const int64_t kparts = CC_MIN(g->K, CC_MAX(1, (2 * n_threads + g->N - 1) / g->N));
    const int64_t ntask = g->N * kparts, L = g->OH * g->OW;
    int64_t t;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && ntask > 1) schedule(static)
    for (t = 0; t < ntask; ++t) {
        REAL xp[CC_PLANES_BUF];
        const int64_t n = t / kparts, part = t % kparts;
        const int64_t k0 = part * g->K / kparts, k1 = (part + 1) * g->K / kparts;
        FN(planes_task)(x + n * g->C * g->H * g->W, w, b, g, k0, k1, xp, y + n * g->K * L, NULL,
                        NULL);
    }
    return CC_OK;
}

/* fwd_planes with each output plane max-pooled 2x2 / stride 2 and rectified
 * on the way out (cc_conv2d_relu_pool2_fwd): y is (N, K, OH/2, OW/2). */
static int FN(fwd_planes_pool2)(const REAL *x, const REAL *w, const REAL *b,
                                const cc_conv_geom *g, int n_threads, REAL *y)
{
    const int64_t kparts = CC_MIN(g->K, CC_MAX(1, (2 * n_threads + g->N - 1) / g->N));
    const int64_t ntask = g->N * kparts, PL = (g->OH / 2) * (g->OW / 2);
    int64_t t;
    int failed = 0;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && ntask > 1) reduction(| : failed)
    {
        /* (with the vectors pool2_relu_plane reads past the plane) */
        REAL *plane = (REAL *)calloc((size_t)(g->OH * g->OW + 2 * CC_DKB), sizeof(REAL));
        if (!plane) failed = 1;
#pragma omp for schedule(static)
        for (t = 0; t < ntask; ++t) {
            REAL xp[CC_PLANES_BUF];
            const int64_t n = t / kparts, part = t % kparts;
            const int64_t k0 = part * g->K / kparts, k1 = (part + 1) * g->K / kparts;
            if (plane)
                FN(planes_task)(x + n * g->C * g->H * g->W, w, b, g, k0, k1, xp, NULL, plane,
                                y + n * g->K * PL);
        }
        free(plane);
    }
    return failed ? CC_ENOMEM : CC_OK;
}

/* Depthwise weight gradient of one (image, channel) pair, stride-1 columns:
 * part[tap] += sum over outputs of dy * x under the tap.  xp: the input plane
 * zero-padded as for the forward; dyp: dy copied into cc_depthwise_dy_rows(g) rows
 * of cc_depthwise_dy_cols(g) columns, zero past the plane (the sums then add
 * 0 * finite = 0).  Four vector accumulators take 2 rows x 2 column blocks in
 * a fixed order; at the end their lanes are summed in double. */
CC_CLONES_FMA static void FN(depthwise_wgrad_plane)(REAL *CC_RESTRICT xp, const REAL *CC_RESTRICT dyp,
                                             const cc_conv_geom *g, double *CC_RESTRICT part)
{
    /* (the lanes are summed through the scratch behind the padded plane) */
    REAL *scratch = xp + cc_depthwise_pad_rows(g) * cc_depthwise_pad_cols(g);
    const int64_t Wp = cc_depthwise_pad_cols(g), OHE = cc_depthwise_dy_rows(g), OWV = cc_depthwise_dy_cols(g);
    const int64_t RS = g->SH * Wp;
    int64_t kh, kw, oh, c0;
    for (kh = 0; kh < g->KH; ++kh) {
        for (kw = 0; kw < g->KW; ++kw) {
            const REAL *xt = xp + kh * g->DH * Wp + kw * g->DW;
            const FN(vk_t) zero = {0};
            FN(vk_t) a0 = zero, a1 = zero, a2 = zero, a3 = zero;
            double s = 0;
            int q;
            for (oh = 0; oh < OHE; oh += 2) {
                const REAL *d0 = dyp + oh * OWV, *d1 = d0 + OWV;
                const REAL *x0 = xt + oh * RS, *x1 = x0 + RS;
                for (c0 = 0; c0 < OWV; c0 += CC_DEPTHWISE_COLS) {
                    a0 += CC_VLOAD(d0 + c0) * CC_VLOAD(x0 + c0);
                    a1 += CC_VLOAD(d0 + c0 + CC_DKB) * CC_VLOAD(x0 + c0 + CC_DKB);
                    a2 += CC_VLOAD(d1 + c0) * CC_VLOAD(x1 + c0);
                    a3 += CC_VLOAD(d1 + c0 + CC_DKB) * CC_VLOAD(x1 + c0 + CC_DKB);
                }
            }
            CC_VSTORE(scratch, (a0 + a1) + (a2 + a3));
            for (q = 0; q < CC_DKB; ++q) s += (double)scratch[q];
            part[kh * g->KW + kw] += s;
        }
    }
}

/* The sums of depthwise_wgrad_plane for CC_WGK output channels at once
 * (stride 1, unit dilation, KW a constant, 3 or 5; their dy planes dyn
 * apart in dyb): for each kernel row, CC_WGK x KW vector accumulators take
 * the rows in order, each vector of x under a tap loaded once for the
 * CC_WGK channels and each vector of dy once for the KW taps (one channel
 * and one tap at a time loaded both for every product); at the end each
 * sum's lanes are added in double into part[k*ldp + tap] for the first nk
 * channels. */
#define CC_WGK 3
static inline __attribute__((always_inline)) void FN(wgrad_kblock_body)(
    const REAL *CC_RESTRICT xp, const REAL *CC_RESTRICT dyb, int64_t dyn, int64_t nk,
    const cc_conv_geom *g, double *CC_RESTRICT part, int64_t ldp, const int KW)
{
    REAL *scratch = (REAL *)xp + cc_depthwise_pad_rows(g) * cc_depthwise_pad_cols(g);
    const int64_t Wp = cc_depthwise_pad_cols(g), OWV = cc_depthwise_dy_cols(g);
    int64_t kh, oh, c0;
    int k, kw, q;
    for (kh = 0; kh < g->KH; ++kh) {
        FN(vk_t) a[CC_WGK * 5];
        for (k = 0; k < CC_WGK * KW; ++k) a[k] = (FN(vk_t)){0};
        for (oh = 0; oh < g->OH; ++oh) {
            const REAL *xr = xp + (oh + kh) * Wp, *d = dyb + oh * OWV;
            for (c0 = 0; c0 < OWV; c0 += CC_DKB) {
                FN(vk_t) xv[5];
                for (kw = 0; kw < KW; ++kw) xv[kw] = CC_VLOAD(xr + c0 + kw);
                for (k = 0; k < CC_WGK; ++k) {
                    const FN(vk_t) dv = CC_VLOAD(d + k * dyn + c0);
                    for (kw = 0; kw < KW; ++kw) a[k * KW + kw] += dv * xv[kw];
                }
            }
        }
        for (k = 0; k < nk; ++k)
            for (kw = 0; kw < KW; ++kw) {
                double s = 0;
                CC_VSTORE(scratch, a[k * KW + kw]);
                for (q = 0; q < CC_DKB; ++q) s += (double)scratch[q];
                part[k * ldp + kh * KW + kw] += s;
            }
    }
}

/* wgrad_kblock_body for KW = 5 or 3 */
CC_CLONES_FMA static void FN(planes_wgrad_k)(const REAL *CC_RESTRICT xp, const REAL *CC_RESTRICT dyb,
                                             int64_t dyn, int64_t nk, const cc_conv_geom *g,
                                             double *CC_RESTRICT part, int64_t ldp)
{
    if (g->KW == 5) FN(wgrad_kblock_body)(xp, dyb, dyn, nk, g, part, ldp, 5);
    else FN(wgrad_kblock_body)(xp, dyb, dyn, nk, g, part, ldp, 3);
}
#undef CC_DEPTHWISE_ROWS
#undef CC_DEPTHWISE_COLS

/* col2im of one plane for a unit width stride: col2im_s1_impl.h, in
 * 16-value vectors (FN(col2im_pieces_s1)) and in 32-byte ones
 * (FN(col2im_pieces_s1_narrow), chosen without cc_wide_vectors).  KW at
 * most CC_C2I_MAX_KW. */
#define CC_C2I_MAX_KW 16
#define C2I_NAME FN(col2im_pieces_s1)
#define C2I_VL CC_DKB
#define C2I_V FN(vk_t)
#define C2I_M FN(mk_t)
#include "col2im_s1_impl.h"

#define C2I_NAME FN(col2im_pieces_s1_narrow)
#define C2I_VL (32 / (int64_t)sizeof(REAL))
#define C2I_V FN(vn_t)
#define C2I_M FN(mn_t)
#include "col2im_s1_impl.h"

/* col2im (SW = 1) of planes c .. c + nc - 1 (nc 1 or 2; the second at
 * x + H*W): together where every read of theirs is inside [col_lo,
 * col_end), else one by one, checking each read. */
static inline __attribute__((always_inline)) void FN(col2im_rows_s1)(
    const REAL *CC_RESTRICT col, const cc_conv_geom *g, int64_t c, int64_t nc, int64_t ldc,
    REAL *CC_RESTRICT x, const REAL *col_lo, const REAL *col_end)
{
    /* tap (kh, kw) of plane c + i reads row ((c + i) KH + kh) KW + kw from
     * PW - kw DW + oh OW on, a whole vector a piece */
    const int64_t KK = g->KH * g->KW, shift = (g->KW - 1) * (ldc - g->DW);
    const int64_t lo = c * KK * ldc + CC_MIN(0, shift) + g->PW;
    const int64_t hi = ((c + nc) * KK - g->KW) * ldc + CC_MAX(0, shift) + g->PW +
                       (g->OH - 1) * g->OW + (g->W + CC_DKB - 1) / CC_DKB * CC_DKB;
    int64_t i;
    const int wide = cc_wide_vectors();
    if (col + lo >= col_lo && hi <= col_end - col) {
        if (!wide) {
            if (nc == 2) FN(col2im_pieces_s1_narrow)(col, g, c, ldc, x, col_lo, col_end, 1, 1);
            else FN(col2im_pieces_s1_narrow)(col, g, c, ldc, x, col_lo, col_end, 1, 0);
        } else if (nc == 2) {
            FN(col2im_pieces_s1)(col, g, c, ldc, x, col_lo, col_end, 1, 1);
        } else {
            FN(col2im_pieces_s1)(col, g, c, ldc, x, col_lo, col_end, 1, 0);
        }
        return;
    }
    for (i = 0; i < nc; ++i) {
        REAL *xi = x + i * g->H * g->W;
        if (!wide) FN(col2im_pieces_s1_narrow)(col, g, c + i, ldc, xi, col_lo, col_end, 0, 0);
        else FN(col2im_pieces_s1)(col, g, c + i, ldc, xi, col_lo, col_end, 0, 0);
    }
}

#undef CC_DKB
#undef CC_DOB
#undef CC_VLOAD
#undef CC_VSTORE
#undef CC_VSTORE_N
