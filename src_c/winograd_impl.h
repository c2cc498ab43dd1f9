/* Winograd F(2x2, 3x3) convolution, included by conv_impl.h inside its
 * element-type template (REAL, SFX, GEMM_T, FN are defined there).
 *
 * For a 3x3 kernel g, stride 1 and dilation 1, each 2x2 block of outputs is
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
 * where d is the 4x4 input patch under the block and
 *     Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]
 *     G  = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
 *     Aᵀ = [1 1 1 0; 0 1 -1 -1].
 * Summed over input channels, the 16 elementwise products become 16 GEMMs
 * U[xi] (Kout x Cin) . V[xi] (Cin x P) over the P tiles of a chunk of images:
 * 16 multiplications per 2x2 outputs instead of 36, i.e. 2.25x fewer.
 *
 * The backward passes use the same identity.  dX is the forward transform of
 * dy with the flipped, transposed kernel and padding 2 - p.  dW is its
 * adjoint: dU[xi] = sum over tiles of (A dy Aᵀ)[xi] ⊙ V[xi] (one GEMM per xi,
 * reducing over the tiles), then dW = Gᵀ dU G.
 *
 * Layouts: V[xi][c][p], M[xi][k][p] with p = n*T + ty*tw + tx over the chunk,
 * U[xi][k][c].  GEMM tiles are fixed by the shape and never split the
 * reduction, so results do not depend on the thread count. */

/* The 16 matrices of U, V and M lie this far apart: a multiple of 4 KiB
 * would put all 16 streams of a transform in the same cache sets. */
#define WG_PAD 32
#define WG_STRIDE(n) ((n) + WG_PAD)
/* (a vector's values: the product kernel's scratch for partial stores) */
#define CC_WG_LANES 16

/* The tiles: 2 (F(2x2, 3x3)), 4 (F(4x4, 3x3)) and WG_S2 (stride 2, see
 * wgs_in_phased); the outputs a tile side and the transformed values a tile. */
#define WG_S2 (-2)
#define WG_SIDE(m) ((m) == WG_S2 ? 2 : (m))
#define WG_POINTS(m) ((m) == WG_S2 ? 25 : ((m) + 2) * ((m) + 2))
/* (A's rows 0, 1, 2, 3, 4 for the stride-2 tile are its rows 0, 1, 2, 0, 2) */
#define WGS_DY(a) ((a) == 3 ? 0 : (a) == 4 ? 2 : (a))
#define WGS_DY_XI(xi) (WGS_DY((xi) / 5) * 3 + WGS_DY((xi) % 5))

/* Workspace elements per chunk (V and M) that keep a chunk in cache. */
#define CC_WG_CHUNK_ELEMS (1 << 20)
/* ... but at least this many tiles, so the GEMMs stay long enough. */
#define CC_WG_MIN_TILES 512

/* Input transform of one plane (Hin, Win) padded by (ph, pw) into the tiles
 * of an output of th x tw blocks: v[xi * s + ty * tw + tx].  Interior tiles
 * (the whole 4x4 patch inside the plane) run as a SIMD loop over tx. */
#define WG_ROW(i, r)                                                              \
    const REAL d##i##0 = (r)[o], d##i##1 = (r)[o + 1], d##i##2 = (r)[o + 2],      \
               d##i##3 = (r)[o + 3];                                              \
    const REAL t##i##0 = d##i##0 - d##i##2, t##i##1 = d##i##1 + d##i##2,          \
               t##i##2 = d##i##2 - d##i##1, t##i##3 = d##i##1 - d##i##3
#define WG_COL(j)                                                                 \
    vo[(0 + j) * s + tx] = t0##j - t2##j;                                         \
    vo[(4 + j) * s + tx] = t1##j + t2##j;                                         \
    vo[(8 + j) * s + tx] = t2##j - t1##j;                                         \
    vo[(12 + j) * s + tx] = t1##j - t3##j

/* Elements of the zero-padded copy of a plane that wg_in_plane transforms
 * through when some of its tiles cross the plane's edge: (2 th + 2) x (2 tw
 * + 2), every tile then inside it and taken by the SIMD loop -- on rows of
 * at least CC_WG_IN_PAD_MIN_TW tiles (64 -> 64 on 16x16 maps at batch 64,
 * each side's best of 60: forward 2.51 -> 2.18 ms, backward 5.60 -> 4.97;
 * on 8x8 and 4x4 maps, rows of 4 and 2 tiles, the copy cost more than the
 * short SIMD loop saved: 5-10 % slower; on 28x28 maps, a quarter of the
 * tiles at the edge, no faster). */
#define CC_WG_IN_PAD_MAX 676
#define CC_WG_IN_PAD_MIN_TW 8

CC_CLONES static void FN(wg_in_plane)(const REAL *CC_RESTRICT xp, int64_t Hin, int64_t Win,
                            int64_t ph, int64_t pw, int64_t th, int64_t tw,
                            int64_t s, REAL *CC_RESTRICT v)
{
    /* tiles whose 4 columns 2tx-pw .. 2tx-pw+3 all lie inside [0, Win) */
    int64_t txa = (pw + 1) / 2, txb = Win - 4 + pw >= 0 ? (Win - 4 + pw) / 2 + 1 : 0;
    int64_t ty, tx;
    if (txa < 0) txa = 0;   /* (a negative padding: the 5x5 split input) */
    if (txb > tw) txb = tw;
    if (txa > tw) txa = tw;
    if (txb < txa) txb = txa;
    if ((txa > 0 || txb < tw || ph > 0 || 2 * th + 1 - ph >= Hin) && tw >= CC_WG_IN_PAD_MIN_TW &&
        (2 * th + 2) * (2 * tw + 2) <= CC_WG_IN_PAD_MAX) {
        /* the copy: row r, column c hold the plane's (r - ph, c - pw), or 0 */
        REAL buf[CC_WG_IN_PAD_MAX];
        const int64_t Hp = 2 * th + 2, Wp = 2 * tw + 2;
        int64_t r, c;
        for (r = 0; r < Hp; ++r) {
            const int64_t ih = r - ph;
            REAL *CC_RESTRICT d = buf + r * Wp;
            if (ih < 0 || ih >= Hin) {
                for (c = 0; c < Wp; ++c) d[c] = 0;
                continue;
            }
            for (c = 0; c < Wp; ++c) {
                const int64_t iw = c - pw;
                d[c] = iw >= 0 && iw < Win ? xp[ih * Win + iw] : 0;
            }
        }
        FN(wg_in_plane)(buf, Hp, Wp, 0, 0, th, tw, s, v);
        return;
    }
    for (ty = 0; ty < th; ++ty) {
        const int64_t ih0 = 2 * ty - ph;
        const int rows_inside = ih0 >= 0 && ih0 + 3 < Hin;
        const int64_t a = rows_inside ? txa : tw, b = rows_inside ? txb : tw;
        REAL *CC_RESTRICT vo = v + ty * tw;
        if (a < b) {
            const REAL *r0 = xp + ih0 * Win, *r1 = r0 + Win, *r2 = r1 + Win, *r3 = r2 + Win;
#pragma omp simd
            for (tx = a; tx < b; ++tx) {
                const int64_t o = 2 * tx - pw;
                WG_ROW(0, r0);
                WG_ROW(1, r1);
                WG_ROW(2, r2);
                WG_ROW(3, r3);
                WG_COL(0);
                WG_COL(1);
                WG_COL(2);
                WG_COL(3);
            }
        }
        /* border tiles: the patch gathered with zeros past the edges, then
         * the same transform (offset o = 0 into the gathered rows) */
        for (tx = 0; tx < tw; ++tx) {
            REAL d[16];
            const int64_t o = 0;
            int i, j;
            if (tx == a && a < b) {
                tx = b - 1;
                continue;
            }
            for (i = 0; i < 4; ++i) {
                const int64_t ih = ih0 + i;
                for (j = 0; j < 4; ++j) {
                    const int64_t iw = 2 * tx - pw + j;
                    d[i * 4 + j] = (ih >= 0 && ih < Hin && iw >= 0 && iw < Win) ? xp[ih * Win + iw] : 0;
                }
            }
            {
                WG_ROW(0, d);
                WG_ROW(1, d + 4);
                WG_ROW(2, d + 8);
                WG_ROW(3, d + 12);
                WG_COL(0);
                WG_COL(1);
                WG_COL(2);
                WG_COL(3);
            }
        }
    }
}
#undef WG_ROW
#undef WG_COL

/* Output transform of one plane: m[xi * s + ty * tw + tx] -> out (Hout, Wout)
 * plus bias.  Full 2x2 blocks run as a SIMD loop over tx.  s2: the stride-2
 * tile's 25 values (see wgs_in_phased), else F(2x2, 3x3)'s 16. */
#define WG_OUT(tx)                                                                \
    REAL o00, o01, o10, o11;                                                      \
    if (s2) {                                                                     \
        const REAL s00 = mo[0 * s + tx] + mo[5 * s + tx] + mo[15 * s + tx];       \
        const REAL s01 = mo[1 * s + tx] + mo[6 * s + tx] + mo[16 * s + tx];       \
        const REAL s02 = mo[2 * s + tx] + mo[7 * s + tx] + mo[17 * s + tx];       \
        const REAL s03 = mo[3 * s + tx] + mo[8 * s + tx] + mo[18 * s + tx];       \
        const REAL s04 = mo[4 * s + tx] + mo[9 * s + tx] + mo[19 * s + tx];       \
        const REAL s10 = mo[5 * s + tx] + mo[10 * s + tx] + mo[20 * s + tx];      \
        const REAL s11 = mo[6 * s + tx] + mo[11 * s + tx] + mo[21 * s + tx];      \
        const REAL s12 = mo[7 * s + tx] + mo[12 * s + tx] + mo[22 * s + tx];      \
        const REAL s13 = mo[8 * s + tx] + mo[13 * s + tx] + mo[23 * s + tx];      \
        const REAL s14 = mo[9 * s + tx] + mo[14 * s + tx] + mo[24 * s + tx];      \
        o00 = s00 + s01 + s03 + bias;                                             \
        o01 = s01 + s02 + s04 + bias;                                             \
        o10 = s10 + s11 + s13 + bias;                                             \
        o11 = s11 + s12 + s14 + bias;                                             \
    } else {                                                                      \
        const REAL s00 = mo[0 * s + tx] + mo[4 * s + tx] + mo[8 * s + tx];        \
        const REAL s01 = mo[1 * s + tx] + mo[5 * s + tx] + mo[9 * s + tx];        \
        const REAL s02 = mo[2 * s + tx] + mo[6 * s + tx] + mo[10 * s + tx];       \
        const REAL s03 = mo[3 * s + tx] + mo[7 * s + tx] + mo[11 * s + tx];       \
        const REAL s10 = mo[4 * s + tx] - mo[8 * s + tx] - mo[12 * s + tx];       \
        const REAL s11 = mo[5 * s + tx] - mo[9 * s + tx] - mo[13 * s + tx];       \
        const REAL s12 = mo[6 * s + tx] - mo[10 * s + tx] - mo[14 * s + tx];      \
        const REAL s13 = mo[7 * s + tx] - mo[11 * s + tx] - mo[15 * s + tx];      \
        o00 = s00 + s01 + s02 + bias;                                             \
        o01 = s01 - s02 - s03 + bias;                                             \
        o10 = s10 + s11 + s12 + bias;                                             \
        o11 = s11 - s12 - s13 + bias;                                             \
    }

static inline __attribute__((always_inline)) void FN(wg_out_body)(
    const REAL *CC_RESTRICT m, int64_t s, int64_t th, int64_t tw, REAL bias, int64_t Hout,
    int64_t Wout, REAL *CC_RESTRICT out, const int s2)
{
    const int64_t full = Wout / 2;   /* blocks with both columns inside */
    int64_t ty, tx;
    for (ty = 0; ty < th; ++ty) {
        const REAL *CC_RESTRICT mo = m + ty * tw;
        REAL *CC_RESTRICT y0 = out + 2 * ty * Wout;
        REAL *CC_RESTRICT y1 = y0 + Wout;
        if (2 * ty + 1 < Hout) {
#pragma omp simd
            for (tx = 0; tx < full; ++tx) {
                WG_OUT(tx);
                y0[2 * tx] = o00;
                y0[2 * tx + 1] = o01;
                y1[2 * tx] = o10;
                y1[2 * tx + 1] = o11;
            }
            for (tx = full; tx < tw; ++tx) {
                WG_OUT(tx);
                (void)o01;
                (void)o11;
                y0[2 * tx] = o00;
                y1[2 * tx] = o10;
            }
        } else {
            for (tx = 0; tx < tw; ++tx) {
                WG_OUT(tx);
                (void)o10;
                (void)o11;
                y0[2 * tx] = o00;
                if (tx < full) y0[2 * tx + 1] = o01;
            }
        }
    }
}
#undef WG_OUT

CC_CLONES static void FN(wg_out_plane)(const REAL *CC_RESTRICT m, int64_t s, int64_t th, int64_t tw,
                                       REAL bias, int64_t Hout, int64_t Wout, REAL *CC_RESTRICT out)
{
    FN(wg_out_body)(m, s, th, tw, bias, Hout, Wout, out, 0);
}

CC_CLONES static void FN(wgs_out_plane)(const REAL *CC_RESTRICT m, int64_t s, int64_t th, int64_t tw,
                                        REAL bias, int64_t Hout, int64_t Wout, REAL *CC_RESTRICT out)
{
    FN(wg_out_body)(m, s, th, tw, bias, Hout, Wout, out, 1);
}

/* A g Aᵀ of the 2x2 blocks of one dy plane (OH, OW), zero past the edges:
 * m[xi * s + ty * tw + tx]; s2: the stride-2 tile's A (see wgs_in_phased),
 * whose 25 values are 9 distinct ones: m[(WGS_DY(a) * 3 + WGS_DY(b)) * s + ...]
 * holds value (a, b). */
#define WG_DY(g00, g01, g10, g11)                                                 \
    do {                                                                          \
        if (s2) {   /* (rows 3, 4 of A repeat rows 0, 2: 9 distinct values) */  \
            const REAL a0 = (g00), a1 = (g01), b0 = (g00) + (g10), b1 = (g01) + (g11); \
            const REAL c0 = (g10), c1 = (g11);                                    \
            mo[0 * s + tx] = a0;  mo[1 * s + tx] = a0 + a1;  mo[2 * s + tx] = a1;  \
            mo[3 * s + tx] = b0;  mo[4 * s + tx] = b0 + b1;  mo[5 * s + tx] = b1;  \
            mo[6 * s + tx] = c0;  mo[7 * s + tx] = c0 + c1;  mo[8 * s + tx] = c1;  \
        } else {                                                                  \
            const REAL a0 = (g00), a1 = (g01), b0 = (g00) + (g10), b1 = (g01) + (g11); \
            const REAL c0 = (g00) - (g10), c1 = (g01) - (g11), e0 = -(g10), e1 = -(g11); \
            mo[0 * s + tx] = a0;  mo[1 * s + tx] = a0 + a1;                       \
            mo[2 * s + tx] = a0 - a1;  mo[3 * s + tx] = -a1;                      \
            mo[4 * s + tx] = b0;  mo[5 * s + tx] = b0 + b1;                       \
            mo[6 * s + tx] = b0 - b1;  mo[7 * s + tx] = -b1;                      \
            mo[8 * s + tx] = c0;  mo[9 * s + tx] = c0 + c1;                       \
            mo[10 * s + tx] = c0 - c1;  mo[11 * s + tx] = -c1;                    \
            mo[12 * s + tx] = e0;  mo[13 * s + tx] = e0 + e1;                     \
            mo[14 * s + tx] = e0 - e1;  mo[15 * s + tx] = -e1;                    \
        }                                                                         \
    } while (0)

static inline __attribute__((always_inline)) void FN(wg_dy_body)(
    const REAL *CC_RESTRICT dy, int64_t OH, int64_t OW, int64_t th, int64_t tw, int64_t s,
    REAL *CC_RESTRICT m, const int s2)
{
    const int64_t full = OW / 2;
    int64_t ty, tx;
    for (ty = 0; ty < th; ++ty) {
        const REAL *r0 = dy + 2 * ty * OW, *r1 = r0 + OW;
        REAL *CC_RESTRICT mo = m + ty * tw;
        if (2 * ty + 1 < OH) {
#pragma omp simd
            for (tx = 0; tx < full; ++tx)
                WG_DY(r0[2 * tx], r0[2 * tx + 1], r1[2 * tx], r1[2 * tx + 1]);
            for (tx = full; tx < tw; ++tx) WG_DY(r0[2 * tx], (REAL)0, r1[2 * tx], (REAL)0);
        } else {
            for (tx = 0; tx < tw; ++tx)
                WG_DY(r0[2 * tx], tx < full ? r0[2 * tx + 1] : (REAL)0, (REAL)0, (REAL)0);
        }
    }
}
#undef WG_DY

CC_CLONES static void FN(wg_dy_plane)(const REAL *CC_RESTRICT dy, int64_t OH, int64_t OW,
                                      int64_t th, int64_t tw, int64_t s, REAL *CC_RESTRICT m)
{
    FN(wg_dy_body)(dy, OH, OW, th, tw, s, m, 0);
}

CC_CLONES static void FN(wgs_dy_plane)(const REAL *CC_RESTRICT dy, int64_t OH, int64_t OW,
                                       int64_t th, int64_t tw, int64_t s, REAL *CC_RESTRICT m)
{
    FN(wg_dy_body)(dy, OH, OW, th, tw, s, m, 1);
}

/* U[xi][o][i] = (G g Gᵀ)[xi] for the kernel of output channel o, input
 * channel i: g = w[o][i] (forward), or the flipped w[i][o] (flip: dX). */
static void FN(wg_weights)(const REAL *w, int64_t K, int64_t C, int flip, int n_threads,
                           REAL *U)
{
    const int64_t O = flip ? C : K, I = flip ? K : C, OI = WG_STRIDE(O * I);
    /* kernel (o, i) starts at w + o*os + i*is; flip reads it backwards */
    const int64_t os = flip ? 9 : C * 9, is = flip ? C * 9 : 9;
    int64_t o;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && O * I > 4096) schedule(static)
    for (o = 0; o < O; ++o) {
        REAL *CC_RESTRICT u = U + o * I;
        int64_t i;
#pragma omp simd
        for (i = 0; i < I; ++i) {
            const REAL *src = w + o * os + i * is;
#define WG_G(a) (flip ? src[8 - (a)] : src[(a)])
            /* G g (4 x 3), column b: rows r0b..r3b */
            const REAL r00 = WG_G(0), r01 = WG_G(1), r02 = WG_G(2);
            const REAL r30 = WG_G(6), r31 = WG_G(7), r32 = WG_G(8);
            const REAL r10 = (REAL)0.5 * (WG_G(0) + WG_G(3) + WG_G(6));
            const REAL r11 = (REAL)0.5 * (WG_G(1) + WG_G(4) + WG_G(7));
            const REAL r12 = (REAL)0.5 * (WG_G(2) + WG_G(5) + WG_G(8));
            const REAL r20 = (REAL)0.5 * (WG_G(0) - WG_G(3) + WG_G(6));
            const REAL r21 = (REAL)0.5 * (WG_G(1) - WG_G(4) + WG_G(7));
            const REAL r22 = (REAL)0.5 * (WG_G(2) - WG_G(5) + WG_G(8));
#undef WG_G
            /* (G g) Gᵀ, row a */
#define WG_U(a, x0, x1, x2)                                                       \
            u[(a * 4 + 0) * OI + i] = x0;                                         \
            u[(a * 4 + 1) * OI + i] = (REAL)0.5 * (x0 + x1 + x2);                  \
            u[(a * 4 + 2) * OI + i] = (REAL)0.5 * (x0 - x1 + x2);                  \
            u[(a * 4 + 3) * OI + i] = x2
            WG_U(0, r00, r01, r02);
            WG_U(1, r10, r11, r12);
            WG_U(2, r20, r21, r22);
            WG_U(3, r30, r31, r32);
#undef WG_U
        }
    }
}

/* dw[k][c] = Gᵀ dU[.][k][c] G (3 x 3). */
static void FN(wg_weights_back)(const REAL *dU, int64_t K, int64_t C, int n_threads, REAL *dw)
{
    int64_t t;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && K * C > 4096) schedule(static)
    for (t = 0; t < K * C; ++t) {
        double u[16], r[12];
        int a, b;
        for (a = 0; a < 16; ++a) u[a] = (double)dU[a * WG_STRIDE(K * C) + t];
        for (b = 0; b < 4; ++b) {   /* Gᵀ dU: 3 x 4 */
            r[0 * 4 + b] = u[b] + 0.5 * (u[4 + b] + u[8 + b]);
            r[1 * 4 + b] = 0.5 * (u[4 + b] - u[8 + b]);
            r[2 * 4 + b] = 0.5 * (u[4 + b] + u[8 + b]) + u[12 + b];
        }
        for (a = 0; a < 3; ++a) {   /* (Gᵀ dU) G: 3 x 3 */
            dw[t * 9 + a * 3 + 0] = (REAL)(r[a * 4] + 0.5 * (r[a * 4 + 1] + r[a * 4 + 2]));
            dw[t * 9 + a * 3 + 1] = (REAL)(0.5 * (r[a * 4 + 1] - r[a * 4 + 2]));
            dw[t * 9 + a * 3 + 2] = (REAL)(0.5 * (r[a * 4 + 1] + r[a * 4 + 2]) + r[a * 4 + 3]);
        }
    }
}

/* ------------------------------------------------------------------ */
/* F(4x4, 3x3): each 4x4 block of outputs from the 6x6 input patch under it,
 *     Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A   with the interpolation points
 * 0, ±1, ±2 and infinity:
 *     Bᵀ = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0;
 *           0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1]
 *     G  = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6;
 *           1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1]
 *     Aᵀ = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
 * 36 products per 4x4 outputs against F(2x2, 3x3)'s 64 (16 per 2x2): 4x
 * fewer than the direct sum instead of 2.25x, for larger transform
 * constants (the error bound grows with them; see the tests).  When asked
 * for (CONVCORE_WINOGRAD_TILE=4), the forward and dX take it on planes
 * where it needs at most 2/3 of F(2x2, 3x3)'s products (cc_wg_tile); dW
 * keeps F(2x2, 3x3).  The same layouts with 36 matrices. */
#define W4_ROW(i, r)                                                              \
    const REAL d##i##0 = (r)[W4_AT(0)], d##i##1 = (r)[W4_AT(1)],                  \
               d##i##2 = (r)[W4_AT(2)], d##i##3 = (r)[W4_AT(3)],                  \
               d##i##4 = (r)[W4_AT(4)], d##i##5 = (r)[W4_AT(5)];                  \
    const REAL t##i##0 = (4 * d##i##0 - 5 * d##i##2) + d##i##4,                    \
               t##i##1 = (d##i##3 + d##i##4) - 4 * (d##i##1 + d##i##2),            \
               t##i##2 = (d##i##4 - d##i##3) + 4 * (d##i##1 - d##i##2),            \
               t##i##3 = (d##i##4 - d##i##2) + 2 * (d##i##3 - d##i##1),            \
               t##i##4 = (d##i##4 - d##i##2) - 2 * (d##i##3 - d##i##1),            \
               t##i##5 = (4 * d##i##1 - 5 * d##i##3) + d##i##5
#define W4_COL(j)                                                                 \
    vo[(0 + j) * s + tx] = (4 * t0##j - 5 * t2##j) + t4##j;                        \
    vo[(6 + j) * s + tx] = (t3##j + t4##j) - 4 * (t1##j + t2##j);                  \
    vo[(12 + j) * s + tx] = (t4##j - t3##j) + 4 * (t1##j - t2##j);                 \
    vo[(18 + j) * s + tx] = (t4##j - t2##j) + 2 * (t3##j - t1##j);                 \
    vo[(24 + j) * s + tx] = (t4##j - t2##j) - 2 * (t3##j - t1##j);                 \
    vo[(30 + j) * s + tx] = (4 * t1##j - 5 * t3##j) + t5##j
#define W4_ALL(rows)                                                              \
    W4_ROW(0, rows(0)); W4_ROW(1, rows(1)); W4_ROW(2, rows(2));                  \
    W4_ROW(3, rows(3)); W4_ROW(4, rows(4)); W4_ROW(5, rows(5));                  \
    W4_COL(0); W4_COL(1); W4_COL(2); W4_COL(3); W4_COL(4); W4_COL(5)

/* The input transform of one plane, from its zero-padded copy in phase
 * layout (see wg4_pad_plane): row r holds the columns 4t + k of the padded
 * plane at k (tw + 1) + t, so tile tx reads its six values at unit stride
 * and every tile takes the SIMD loop. */
#define W4_AT(j) ((j) < 4 ? (j) * (tw + 1) + tx : ((j) - 4) * (tw + 1) + tx + 1)
CC_CLONES static void FN(wg4_in_phased)(const REAL *CC_RESTRICT ph4, int64_t th, int64_t tw,
                                        int64_t s, REAL *CC_RESTRICT v)
{
    const int64_t rs = 4 * (tw + 1);
    int64_t ty, tx;
    for (ty = 0; ty < th; ++ty) {
        const REAL *r0 = ph4 + 4 * ty * rs;
        REAL *CC_RESTRICT vo = v + ty * tw;
#define W4_PHASED_ROW(i) (r0 + (i) * rs)
#pragma omp simd
        for (tx = 0; tx < tw; ++tx) {
            W4_ALL(W4_PHASED_ROW);
        }
#undef W4_PHASED_ROW
    }
}
#undef W4_AT
#undef W4_ROW
#undef W4_COL
#undef W4_ALL

/* Output transform of one plane: m[xi * s + ty * tw + tx] -> out (Hout, Wout)
 * plus bias; the 4x4 block of tile (ty, tx) in o[a][b]. */
#define W4_A(m0, m1, m2, m3, m4, m5, r0, r1, r2, r3)                              \
    do {                                                                          \
        const REAL p_ = (m1) + (m2), q_ = (m1) - (m2), u_ = (m3) + (m4), v_ = (m3) - (m4); \
        r0 = ((m0) + p_) + u_;                                                    \
        r1 = q_ + 2 * v_;                                                         \
        r2 = p_ + 4 * u_;                                                         \
        r3 = (q_ + 8 * v_) + (m5);                                                \
    } while (0)
#define W4_CJ(j)                                                                  \
    REAL c0##j, c1##j, c2##j, c3##j;                                              \
    W4_A(mo[(j) * s + tx], mo[(6 + j) * s + tx], mo[(12 + j) * s + tx],           \
         mo[(18 + j) * s + tx], mo[(24 + j) * s + tx], mo[(30 + j) * s + tx],     \
         c0##j, c1##j, c2##j, c3##j)
#define W4_OA(a)                                                                  \
    REAL o##a##0, o##a##1, o##a##2, o##a##3;                                      \
    W4_A(c##a##0, c##a##1, c##a##2, c##a##3, c##a##4, c##a##5,                    \
         o##a##0, o##a##1, o##a##2, o##a##3)
#define W4_OUT(tx)                                                                \
    W4_CJ(0); W4_CJ(1); W4_CJ(2); W4_CJ(3); W4_CJ(4); W4_CJ(5);                   \
    W4_OA(0); W4_OA(1); W4_OA(2); W4_OA(3)
#define W4_STORE(y, a)                                                            \
    (y)[4 * tx] = o##a##0 + bias; (y)[4 * tx + 1] = o##a##1 + bias;               \
    (y)[4 * tx + 2] = o##a##2 + bias; (y)[4 * tx + 3] = o##a##3 + bias

CC_CLONES static void FN(wg4_out_plane)(const REAL *CC_RESTRICT m, int64_t s, int64_t th, int64_t tw,
                              REAL bias, int64_t Hout, int64_t Wout, REAL *CC_RESTRICT out)
{
    const int64_t full = Wout / 4;   /* blocks with all four columns inside */
    int64_t ty, tx;
    for (ty = 0; ty < th; ++ty) {
        const REAL *CC_RESTRICT mo = m + ty * tw;
        REAL *CC_RESTRICT y0 = out + 4 * ty * Wout;
        const int64_t rows = CC_MIN(4, Hout - 4 * ty);
        if (rows == 4) {
            REAL *CC_RESTRICT y1 = y0 + Wout, *CC_RESTRICT y2 = y1 + Wout, *CC_RESTRICT y3 = y2 + Wout;
#pragma omp simd
            for (tx = 0; tx < full; ++tx) {
                W4_OUT(tx);
                W4_STORE(y0, 0);
                W4_STORE(y1, 1);
                W4_STORE(y2, 2);
                W4_STORE(y3, 3);
            }
        }
        for (tx = rows == 4 ? full : 0; tx < tw; ++tx) {
            const int64_t cols = CC_MIN(4, Wout - 4 * tx);
            int64_t a, b;
            W4_OUT(tx);
            {
                const REAL o[4][4] = {{o00, o01, o02, o03}, {o10, o11, o12, o13},
                                      {o20, o21, o22, o23}, {o30, o31, o32, o33}};
                for (a = 0; a < rows; ++a)
                    for (b = 0; b < cols; ++b) y0[a * Wout + 4 * tx + b] = o[a][b] + bias;
            }
        }
    }
}
#undef W4_OUT
#undef W4_STORE
#undef W4_OA
#undef W4_CJ
#undef W4_A

/* U[xi][o][i] = (G g Gᵀ)[xi] as wg_weights, for F(4x4, 3x3): computed in
 * double and rounded once (1/6, 1/12 and 1/24 are not floats). */
static void FN(wg4_weights)(const REAL *w, int64_t K, int64_t C, int flip, int n_threads,
                            REAL *U)
{
    const int64_t O = flip ? C : K, I = flip ? K : C, OI = WG_STRIDE(O * I);
    const int64_t os = flip ? 9 : C * 9, is = flip ? C * 9 : 9;
    int64_t t;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && O * I > 1024) schedule(static)
    for (t = 0; t < O * I; ++t) {
        const int64_t o = t / I, i = t % I;
        const REAL *src = w + o * os + i * is;
        double gg[9], r[6][3];
        int a, b;
        for (a = 0; a < 9; ++a) gg[a] = (double)(flip ? src[8 - a] : src[a]);
#define W4_G(x0, x1, x2, y)                                                       \
        y[0] = (x0) / 4;                                                          \
        y[1] = -((x0) + (x1) + (x2)) / 6;                                         \
        y[2] = -((x0) - (x1) + (x2)) / 6;                                         \
        y[3] = (x0) / 24 + (x1) / 12 + (x2) / 6;                                  \
        y[4] = (x0) / 24 - (x1) / 12 + (x2) / 6;                                  \
        y[5] = (x2)
        for (b = 0; b < 3; ++b) {   /* G g: column b */
            double col[6];
            W4_G(gg[b], gg[3 + b], gg[6 + b], col);
            for (a = 0; a < 6; ++a) r[a][b] = col[a];
        }
        for (a = 0; a < 6; ++a) {   /* (G g) Gᵀ: row a */
            double row[6];
            W4_G(r[a][0], r[a][1], r[a][2], row);
            for (b = 0; b < 6; ++b) U[(a * 6 + b) * OI + o * I + i] = (REAL)row[b];
        }
#undef W4_G
    }
}

/* ------------------------------------------------------------------ */
/* Stride 2.  Each 2x2 block of outputs of a 3x3 kernel at stride 2 reads a
 * 5x5 input patch (tiles 4 apart, overlapping by one row and column).  Per
 * axis, the even taps g0, g2 meet the even inputs d0, d2, d4 as a 2-tap
 * correlation, F(2, 2) with three products, and the odd tap g1 meets d1 and
 * d3 directly:
 *     m0 = (d0 - d2) g0,  m1 = d2 (g0 + g2),  m2 = (d4 - d2) g2,
 *     m3 = d1 g1,  m4 = d3 g1;   y0 = m0 + m1 + m3,  y1 = m1 + m2 + m4,
 * i.e. Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A with
 *     Bᵀ = [1 0 -1 0 0; 0 0 1 0 0; 0 0 -1 0 1; 0 1 0 0 0; 0 0 0 1 0]
 *     G  = [1 0 0; 1 0 1; 0 0 1; 0 1 0; 0 1 0]
 *     Aᵀ = [1 1 0 1 0; 0 1 1 0 1].
 * 25 multiplications per 2x2 outputs instead of 36 (1.44x fewer), and every
 * coefficient is 0 or ±1.  The forward and dW run as for the stride-1 tiles
 * (WG_S2 in wg_conv_chunk and bwd_winograd_s2).  dX is the adjoint of the
 * forward: dy through A, the GEMMs with Uᵀ, then each tile's B (.) Bᵀ added
 * into the plane, tiles in a fixed order. */

/* the input transform of one plane from its phase-layout copy (wg4_pad_plane):
 * column 4t + k of padded row r at r * 4(tw+1) + k(tw+1) + t, so the five
 * columns 4tx .. 4tx + 4 of a tile are at unit stride over tx */
#define S2_ROW(i, r)                                                              \
    const REAL c##i##0 = (r)[tx], c##i##2 = (r)[2 * W1 + tx], c##i##4 = (r)[tx + 1]; \
    const REAL t##i##0 = c##i##0 - c##i##2, t##i##1 = c##i##2,                      \
               t##i##2 = c##i##4 - c##i##2, t##i##3 = (r)[W1 + tx],                 \
               t##i##4 = (r)[3 * W1 + tx]
#define S2_COL(j)                                                                 \
    vo[(0 + j) * s + tx] = t0##j - t2##j;                                         \
    vo[(5 + j) * s + tx] = t2##j;                                                 \
    vo[(10 + j) * s + tx] = t4##j - t2##j;                                        \
    vo[(15 + j) * s + tx] = t1##j;                                                \
    vo[(20 + j) * s + tx] = t3##j
CC_CLONES static void FN(wgs_in_phased)(const REAL *CC_RESTRICT ph4, int64_t th, int64_t tw,
                                        int64_t s, REAL *CC_RESTRICT v)
{
    const int64_t W1 = tw + 1, rs = 4 * W1;
    int64_t ty, tx;
    for (ty = 0; ty < th; ++ty) {
        const REAL *r0 = ph4 + 4 * ty * rs, *r1 = r0 + rs, *r2 = r1 + rs, *r3 = r2 + rs,
                   *r4 = r3 + rs;
        REAL *CC_RESTRICT vo = v + ty * tw;
#pragma omp simd
        for (tx = 0; tx < tw; ++tx) {
            S2_ROW(0, r0);
            S2_ROW(1, r1);
            S2_ROW(2, r2);
            S2_ROW(3, r3);
            S2_ROW(4, r4);
            S2_COL(0);
            S2_COL(1);
            S2_COL(2);
            S2_COL(3);
            S2_COL(4);
        }
    }
}
#undef S2_ROW
#undef S2_COL

/* U[xi][o][i] = (G g Gᵀ)[xi] for kernel w[o][i] (3 x 3), in double and
 * rounded once (g0 + g2 and its 2-D sums round in float otherwise) */
static void FN(wgs_weights)(const REAL *w, int64_t K, int64_t C, int n_threads, REAL *U)
{
    const int64_t OI = WG_STRIDE(K * C);
    int64_t o;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && K * C > 4096) schedule(static)
    for (o = 0; o < K; ++o) {
        int64_t i;
        for (i = 0; i < C; ++i) {
            const REAL *src = w + (o * C + i) * 9;
            double r[5][3];
            int a, j;
            for (j = 0; j < 3; ++j) {   /* G g: 5 x 3 */
                r[0][j] = (double)src[j];
                r[1][j] = (double)src[j] + (double)src[6 + j];
                r[2][j] = (double)src[6 + j];
                r[3][j] = r[4][j] = (double)src[3 + j];
            }
            for (a = 0; a < 5; ++a) {   /* (G g) Gᵀ, row a */
                REAL *u = U + (a * 5) * OI + o * C + i;
                u[0 * OI] = (REAL)r[a][0];
                u[1 * OI] = (REAL)(r[a][0] + r[a][2]);
                u[2 * OI] = (REAL)r[a][2];
                u[3 * OI] = u[4 * OI] = (REAL)r[a][1];
            }
        }
    }
}

/* dw[k][c] = Gᵀ dU[.][k][c] G (3 x 3), in double */
static void FN(wgs_weights_back)(const REAL *dU, int64_t K, int64_t C, int n_threads, REAL *dw)
{
    int64_t t;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && K * C > 4096) schedule(static)
    for (t = 0; t < K * C; ++t) {
        double u[25], r[3][5];
        int a, b;
        for (a = 0; a < 25; ++a) u[a] = (double)dU[a * WG_STRIDE(K * C) + t];
        for (b = 0; b < 5; ++b) {   /* Gᵀ dU: 3 x 5 */
            r[0][b] = u[b] + u[5 + b];
            r[1][b] = u[15 + b] + u[20 + b];
            r[2][b] = u[5 + b] + u[10 + b];
        }
        for (a = 0; a < 3; ++a) {   /* (Gᵀ dU) G: 3 x 3 */
            dw[t * 9 + a * 3 + 0] = (REAL)(r[a][0] + r[a][1]);
            dw[t * 9 + a * 3 + 1] = (REAL)(r[a][3] + r[a][4]);
            dw[t * 9 + a * 3 + 2] = (REAL)(r[a][1] + r[a][2]);
        }
    }
}

/* dX of one plane: z[xi * s + ty * tw + tx] (the GEMMs' Uᵀ M) through
 * B (.) Bᵀ, each tile's 5x5 patch added at padded (4ty, 4tx), then the padding
 * cut off into dx (H, W).  The patches go to `acc`, (4th + 2) rows of five
 * phases (column 4t + k at k(tw+1) + t for k < 4, the fifth column 4t + 4 at
 * 4(tw+1) + t), so no two tiles of a row write one place; rows that two tile
 * rows share are added in the order of ty. */
#define S2_ADJ(a0, a1, a2, a3, a4, o0, o1, o2, o3, o4)                            \
    const REAL o0 = (a0), o1 = (a3), o2 = (a1) - (a0) - (a2), o3 = (a4), o4 = (a2)
/* column b of the tile: B down the rows, e<i><b> */
#define S2_DCOL(b)                                                                \
    S2_ADJ(zo[(0 + b) * s + tx], zo[(5 + b) * s + tx], zo[(10 + b) * s + tx],     \
           zo[(15 + b) * s + tx], zo[(20 + b) * s + tx], e0##b, e1##b, e2##b, e3##b, e4##b)
/* row i of the patch: B along the row, added into the five phases */
#define S2_DROW(i)                                                                \
    do {                                                                          \
        S2_ADJ(e##i##0, e##i##1, e##i##2, e##i##3, e##i##4, d0, d1, d2, d3, d4);  \
        REAL *CC_RESTRICT row = ar + (i) * rs;                                    \
        row[0 * W1 + tx] += d0;                                                   \
        row[1 * W1 + tx] += d1;                                                   \
        row[2 * W1 + tx] += d2;                                                   \
        row[3 * W1 + tx] += d3;                                                   \
        row[4 * W1 + tx] += d4;                                                   \
    } while (0)
CC_CLONES static void FN(wgs_dx_plane)(const REAL *CC_RESTRICT z, int64_t s, int64_t th,
                                       int64_t tw, int64_t H, int64_t W, int64_t ph, int64_t pw,
                                       REAL *CC_RESTRICT acc, REAL *CC_RESTRICT dx)
{
    const int64_t W1 = tw + 1, rs = 5 * W1, Hp = 4 * th + 2;
    /* tiles t whose columns 4t .. 4t + 3 (less pw) all lie inside [0, W) */
    const int64_t ta = (pw + 3) / 4, tb = CC_MAX(ta, CC_MIN(tw + 1, (W + pw - 3 + 3) / 4));
    int64_t ty, tx, r, ih;
    for (r = 0; r < Hp * rs; ++r) acc[r] = 0;
    for (ty = 0; ty < th; ++ty) {
        const REAL *CC_RESTRICT zo = z + ty * tw;
        REAL *CC_RESTRICT ar = acc + 4 * ty * rs;
#pragma omp simd
        for (tx = 0; tx < tw; ++tx) {
            S2_DCOL(0);
            S2_DCOL(1);
            S2_DCOL(2);
            S2_DCOL(3);
            S2_DCOL(4);
            S2_DROW(0);
            S2_DROW(1);
            S2_DROW(2);
            S2_DROW(3);
            S2_DROW(4);
        }
    }
    for (ih = 0; ih < H; ++ih) {
        const int64_t pr = ih + ph;
        const REAL *CC_RESTRICT p0 = acc + pr * rs, *CC_RESTRICT p1 = p0 + W1,
                                *CC_RESTRICT p2 = p1 + W1, *CC_RESTRICT p3 = p2 + W1,
                                *CC_RESTRICT p4 = p3 + W1;
        REAL *CC_RESTRICT out = dx + ih * W;
        int64_t iw, t;
        if (pr >= Hp) {
            for (iw = 0; iw < W; ++iw) out[iw] = 0;
            continue;
        }
        /* padded column q = iw + pw = 4t + k: phase k at t, plus the fifth
         * column of tile t - 1 when k = 0 */
        for (iw = 0; iw < W && iw + pw < 4 * ta; ++iw) {
            const int64_t q = iw + pw;
            t = q / 4;
            out[iw] = p0[(q % 4) * W1 + t] + (q % 4 == 0 && t > 0 ? p4[t - 1] : 0);
        }
#pragma omp simd
        for (t = ta; t < tb; ++t) {
            REAL *CC_RESTRICT o = out + 4 * t - pw;
            o[0] = p0[t] + (t > 0 ? p4[t - 1] : 0);
            o[1] = p1[t];
            o[2] = p2[t];
            o[3] = p3[t];
        }
        for (iw = CC_MAX(4 * tb - pw, 0); iw < W; ++iw) {
            const int64_t q = iw + pw;
            t = q / 4;
            out[iw] = t > tw ? 0 : p0[(q % 4) * W1 + t] + (q % 4 == 0 && t > 0 ? p4[t - 1] : 0);
        }
    }
}
#undef S2_ADJ
#undef S2_DCOL
#undef S2_DROW

/* One chunk of nb images through the forward transform:
 * in (nb, Cin, Hin, Win) padded by (ph, pw) -> out (nb, Kout, Hout, Wout),
 * with U (16, Kout, Cin) and scratch V (16, Cin, P), M (16, Kout, P). */
static const int FN(wg5_off)[4][2];
static void FN(wg5_live)(int64_t xi, int m, int64_t *lo, int64_t *hi);

/* Input transform of channel c of image n of a chunk of Cin channels into v.
 * split = 0: plane n*Cin + c of in.  split > 0: a 5x5 layer's split input
 * (see below): in holds `split` planes per image, and channel (q, cc) is
 * plane cc read from the q-th offset, the padding less that offset (possibly
 * negative). */
/* The plane (Hin, Win) padded by (ph, pw), either side possibly negative,
 * as the 4th + 2 rows of 4tw + 2 values the 4x4 tiles read, zeros past the
 * edges, each row in phase layout: column 4t + k at k (tw + 1) + t (4 (tw + 1)
 * values a row; see wg4_in_phased). */
static void FN(wg4_pad_plane)(const REAL *CC_RESTRICT xp, int64_t Hin, int64_t Win, int64_t ph,
                              int64_t pw, int64_t th, int64_t tw, REAL *CC_RESTRICT out)
{
    const int64_t Hp = 4 * th + 2, W1 = tw + 1;
    int64_t r, k, t;
    for (r = 0; r < Hp; ++r) {
        const int64_t ih = r - ph;
        REAL *CC_RESTRICT o = out + r * 4 * W1;
        if (ih < 0 || ih >= Hin) {
            for (t = 0; t < 4 * W1; ++t) o[t] = 0;
            continue;
        }
        for (k = 0; k < 4; ++k) {
            /* columns 4t + k - pw inside [0, Win): t in [t0, t1) */
            const int64_t lo = pw - k, hi = Win + pw - k;   /* 4t in [lo, hi) */
            int64_t t0 = lo > 0 ? (lo + 3) / 4 : 0, t1 = hi > 0 ? (hi + 3) / 4 : 0;
            const REAL *CC_RESTRICT src = xp + ih * Win + k - pw;
            REAL *CC_RESTRICT dst = o + k * W1;
            if (t0 > W1) t0 = W1;
            if (t1 > W1) t1 = W1;
            if (t1 < t0) t1 = t0;
            for (t = 0; t < t0; ++t) dst[t] = 0;
            for (t = t0; t < t1; ++t) dst[t] = src[4 * t];
            for (t = t1; t < W1; ++t) dst[t] = 0;
        }
    }
}

/* The input transform of a plane (Hin, Win) padded by (ph, pw) into the
 * th x tw tiles of the tile m (scratch: room for wg4_pad_plane's copy when
 * m is 4 or WG_S2) */
static void FN(wg_in_tiles)(const REAL *plane, int64_t Hin, int64_t Win, int64_t ph, int64_t pw,
                            int64_t th, int64_t tw, int64_t s, int m, REAL *scratch, REAL *v)
{
    if (m == 4 || m == WG_S2) {
        FN(wg4_pad_plane)(plane, Hin, Win, ph, pw, th, tw, scratch);
        if (m == 4) FN(wg4_in_phased)(scratch, th, tw, s, v);
        else FN(wgs_in_phased)(scratch, th, tw, s, v);
    } else {
        FN(wg_in_plane)(plane, Hin, Win, ph, pw, th, tw, s, v);
    }
}

/* (scratch: room for wg4_pad_plane's copy when m = 4) */
static void FN(wg_in_channel)(const REAL *in, int64_t n, int64_t c, int64_t Cin, int64_t split,
                              int64_t Hin, int64_t Win, int64_t ph, int64_t pw, int64_t th,
                              int64_t tw, int64_t s, int m, REAL *scratch, REAL *v)
{
    const REAL *plane = in + (n * Cin + c) * Hin * Win;
    if (split) {
        const int64_t q = c / split, cc = c % split;
        plane = in + (n * split + cc) * Hin * Win;
        ph -= FN(wg5_off)[q][0];
        pw -= FN(wg5_off)[q][1];
    }
    FN(wg_in_tiles)(plane, Hin, Win, ph, pw, th, tw, s, m, scratch, v);
}

/* The GEMM path's blocks of positions (M's and V's columns), fixed by the
 * shape alone so that no thread count changes a product's size (BLAS may
 * round a small product differently from a large one): groups of `gi`
 * whole images of about CC_WG_BLOCK_MIN positions, or, where one image
 * has more than CC_LSPLIT tiles, even blocks of at most CC_LBLOCK within
 * each image. */
#ifndef CC_WG_GRID_SHAPE
#define CC_WG_GRID_SHAPE
#define CC_WG_BLOCK_MIN 256
typedef struct {
    int64_t gi;    /* images a group: the threads of wg_conv_images take whole groups */
    int64_t G;     /* groups in the chunk */
    int64_t per;   /* blocks an image (gi = 1) or a group */
    int64_t bs;    /* positions a block, the last of an image or of the chunk shorter */
} cc_wg_grid;

static cc_wg_grid cc_wg_grid_of(int64_t nb, int64_t T)
{
    cc_wg_grid q;
    if (T > CC_LSPLIT) {
        q.gi = 1;
        q.per = cc_nblocks(T, CC_LSPLIT, CC_LBLOCK);
        q.bs = cc_blocksize(T, CC_LSPLIT, CC_LBLOCK);
    } else {
        /* an even number of groups of equal size where there are images
         * for it: 8 images of 49 tiles made groups of 6 and 2, which left
         * one of two threads idle for most of the layer */
        int64_t G;
        q.gi = CC_MIN(nb, CC_MAX(1, (CC_WG_BLOCK_MIN + T - 1) / T));
        G = (nb + q.gi - 1) / q.gi;
        if (G > 1 && (G & 1) && G < nb) ++G;
        q.gi = (nb + G - 1) / G;
        q.per = 1;
        q.bs = q.gi * T;
    }
    q.G = (nb + q.gi - 1) / q.gi;
    return q;
}

/* block b's first position and length */
static void cc_wg_block(const cc_wg_grid *q, int64_t nb, int64_t T, int64_t b, int64_t *p0,
                        int64_t *len)
{
    const int64_t grp = b / q->per, j = b % q->per;
    const int64_t start = grp * q->gi * T + j * q->bs;
    const int64_t end = q->gi == 1 ? grp * T + T : CC_MIN(nb * T, start + q->bs);
    *p0 = start;
    *len = CC_MIN(q->bs, end - start);
}
#endif

/* Output transform of channel k of image n of a chunk (M's p = n*T + tile) */
/* The output transform of the th x tw tiles of the tile m (z[xi * s + ty *
 * tw + tx]) into a plane (Hout, Wout), plus b */
static void FN(wg_out_tiles)(const REAL *z, int64_t s, int64_t th, int64_t tw, REAL b,
                             int64_t Hout, int64_t Wout, int m, REAL *o)
{
    if (m == 4) FN(wg4_out_plane)(z, s, th, tw, b, Hout, Wout, o);
    else if (m == WG_S2) FN(wgs_out_plane)(z, s, th, tw, b, Hout, Wout, o);
    else FN(wg_out_plane)(z, s, th, tw, b, Hout, Wout, o);
}

static void FN(wg_out_channel)(const REAL *M, int64_t n, int64_t k, int64_t Kout, int64_t P,
                               int64_t T, int64_t sM, int64_t th, int64_t tw, const REAL *bias,
                               int64_t Hout, int64_t Wout, int m, REAL *out)
{
    FN(wg_out_tiles)(M + k * P + n * T, sM, th, tw, bias ? bias[k] : 0, Hout, Wout, m,
                     out + (n * Kout + k) * Hout * Wout);
}

/* Ut[xi] = U's point xi (Kout x Cin) packed for the product kernel, for the
 * NP points; on failure none is left allocated */
static int FN(wg_pack_points)(const REAL *U, int64_t Kout, int64_t Cin, int64_t NP, REAL **Ut)
{
    int64_t i;
    for (i = 0; i < NP; ++i) {
        Ut[i] = FN(pw_packed)(U + i * WG_STRIDE(Kout * Cin), Kout, Cin, Cin, 1);
        if (!Ut[i]) {
            while (i-- > 0) {
                free(Ut[i]);
                Ut[i] = NULL;
            }
            return CC_ENOMEM;
        }
    }
    return CC_OK;
}

/* One thread's image groups [g0, g1) (cc_wg_grid) of wg_conv_chunk's chunk
 * through the input transform, the products (its columns p of V and M: the
 * grid's GEMM blocks, or product-kernel blocks) and the output transform.
 * Each output element is the same sum as in the shared-out steps. */
static void FN(wg_conv_images)(const REAL *in, int64_t g0, int64_t g1, int64_t nb, int64_t Cin,
                               int64_t Hin, int64_t Win, int64_t ph, int64_t pw, const REAL *U,
                               REAL *const *Ut, int64_t Kout, int64_t Hout, int64_t Wout,
                               const REAL *bias, REAL *V, REAL *M, GEMM_T gemm, REAL *out,
                               int64_t split, int m, int64_t split_out, int small, REAL *own,
                               REAL *lanes)
{
    const int side = WG_SIDE(m);
    const int64_t th = (Hout + side - 1) / side, tw = (Wout + side - 1) / side, T = th * tw;
    const cc_wg_grid q = cc_wg_grid_of(nb, T);
    const int64_t gi = small ? 1 : q.gi;   /* (the product kernel: groups of one image) */
    const int64_t n0 = CC_MIN(nb, g0 * gi), n1 = CC_MIN(nb, g1 * gi);
    const int64_t P = nb * T, NP = WG_POINTS(m), pa = n0 * T, pz = n1 * T;
    const int64_t sU = WG_STRIDE(Kout * Cin), sV = WG_STRIDE(Cin * P), sM = WG_STRIDE(Kout * P);
    const int64_t pwp = FN(pw_block_positions)();
    const int64_t kbs = cc_blocksize(Kout, CC_KBLOCK, CC_KBLOCK);
    int64_t n, c, k, xi, p0, bi;
    if (n1 <= n0) return;
    for (n = n0; n < n1; ++n)
        for (c = 0; c < Cin; ++c)
            FN(wg_in_channel)(in, n, c, Cin, split, Hin, Win, ph, pw, th, tw, sV, m, own,
                              V + c * P + n * T);
    for (xi = 0; xi < NP; ++xi) {
        if (small) {
            /* (V's rows end in WG_PAD readable values: whole blocks; past
             * pz the block reads values it does not use) */
            for (p0 = pa; p0 < pz; p0 += pwp)
                FN(pw_positions)(Ut[xi], Kout, Cin, V + xi * sV + p0, P, CC_MIN(pwp, pz - p0),
                                 M + xi * sM + p0, P, lanes);
            continue;
        }
        for (bi = g0 * q.per; bi < g1 * q.per; ++bi) {
            int64_t lo = 0, hi = 4, c0 = 0, c1 = Cin, k0, len;
            const int lda = (int)P, ldb = (int)Cin, ldc = (int)P;
            const REAL one = 1, zero = 0;
            int mm;
            cc_wg_block(&q, nb, T, bi, &p0, &len);
            mm = (int)len;
            if (split || split_out) FN(wg5_live)(xi, m, &lo, &hi);
            if (split) {
                c0 = lo * split;
                c1 = hi * split;
            }
            for (k0 = 0; k0 < Kout; k0 += kbs) {
                int64_t a = k0, b = CC_MIN(k0 + kbs, Kout);
                if (split_out) {   /* rows of dead pieces are zero */
                    const int64_t la = CC_MAX(a, lo * split_out), lb = CC_MIN(b, hi * split_out);
                    for (k = a; k < b; ++k) {
                        if (k >= la && k < lb) continue;
                        memset(M + xi * sM + k * P + p0, 0, sizeof(REAL) * (size_t)mm);
                    }
                    a = la;
                    b = lb;
                }
                if (b > a) {
                    const int nn = (int)(b - a), kk = (int)(c1 - c0);
                    gemm("N", "N", &mm, &nn, &kk, &one, V + xi * sV + c0 * P + p0, &lda,
                         U + xi * sU + a * Cin + c0, &ldb, &zero, M + xi * sM + a * P + p0, &ldc);
                }
            }
        }
    }
    for (n = n0; n < n1; ++n)
        for (k = 0; k < Kout; ++k)
            FN(wg_out_channel)(M, n, k, Kout, P, T, sM, th, tw, bias, Hout, Wout, m, out);
}

/* ------------------------------------------------------------------ */
/* Bands.  A chunk of a large map holds one image, whose V and M (its
 * transformed input and products, 16 values a tile for every input and
 * output channel) then run to tens of MiB: VGG's first layers at 224x224
 * hold 100 MiB an image, and each step of wg_conv_chunk streams them
 * through memory.  There the product kernel's layers run on bands of tile
 * rows of one image instead, each band taken by one thread from input
 * transform to output transform in buffers of its own of at most a few MiB
 * (64 -> 64 on 224x224 at batch 1: forward 9.5 -> 6.3 ms, backward 19.7 ->
 * 16.6; 128 -> 128 on 112x112 5.3 -> 4.8 ms).  On 56x56 maps (6 MiB an
 * image) whole images were faster while the machine was quiet (1.27 against
 * 1.36-1.44 ms at batch 4), bands while other work loaded its memory (1.6
 * against 2.2-2.3); BLAS products of bands (over 128 outputs) were slower on
 * 256 -> 256 on 56x56 (5.0 -> 5.4 ms): those keep whole images.  The
 * product kernel's sums do not depend on how the positions are split, so
 * bands give the same bits as whole images, for any thread count.
 *
 * A band's tiles are a whole plane's rows, so the input transform reads
 * them as a plane starting at the band's first input row (rows above it as
 * padding only where the plane has none) and the output transform writes
 * them as a plane starting at the band's first output row. */
#ifndef CC_WG_BAND_SHAPE
#define CC_WG_BAND_SHAPE
/* An image's V and M above this many bytes: bands of at most ... */
#define CC_WG_BAND_IMAGE_BYTES ((int64_t)16 << 20)
/* ... this many bytes of V and M (but at least CC_WG_BAND_MIN_TILES
 * tiles), cut into as few of the product kernel's blocks of
 * CC_WG_BAND_ALIGN positions as such bands allow (a band's last block is
 * computed whole: on 56x56 maps, bands of 196 tiles, 6.1 blocks, ran 13 %
 * slower than bands of 224, 7 blocks) */
#define CC_WG_BAND_MAX_BYTES ((int64_t)2 << 20)
#define CC_WG_BAND_MIN_TILES 64
#define CC_WG_BAND_ALIGN 32

/* the product kernel's blocks over one image's th x tw tiles in bands of r
 * rows (the last band the rest) */
static int64_t cc_wg_band_blocks(int64_t th, int64_t tw, int64_t r)
{
    const int64_t nbands = (th + r - 1) / r, last = th - (nbands - 1) * r;
    return (nbands - 1) * ((r * tw + CC_WG_BAND_ALIGN - 1) / CC_WG_BAND_ALIGN) +
           (last * tw + CC_WG_BAND_ALIGN - 1) / CC_WG_BAND_ALIGN;
}

/* tile rows a band of a large map (the last band of an image the rest), or
 * 0: whole images.  Of the rows with the fewest blocks the fewest (64 -> 64
 * on 56x56: bands of 8 rows ran 10-15 % faster than of 9, as many blocks). */
static int64_t cc_wg_band_rows(int64_t Cin, int64_t Kout, int64_t th, int64_t tw, int m,
                               int elem_size)
{
    const double per_row = (double)WG_POINTS(m) * (double)(Cin + Kout) * (double)tw * elem_size;
    const int64_t lo = (CC_WG_BAND_MIN_TILES + tw - 1) / tw;
    int64_t hi, r, best = 0, bb = 0;
    if (per_row * (double)th <= (double)CC_WG_BAND_IMAGE_BYTES) return 0;
    /* (wide rows of many channels: bands of `lo` rows, over the bytes) */
    hi = CC_MIN(CC_MAX(lo, (int64_t)((double)CC_WG_BAND_MAX_BYTES / per_row)), th / 2);
    for (r = lo; r <= hi; ++r) {
        const int64_t blocks = cc_wg_band_blocks(th, tw, r);
        if (best == 0 || blocks < bb) {
            best = r;
            bb = blocks;
        }
    }
    return best;
}
#endif

/* The input transform of tile rows [ty0, ty0 + thb) of one plane into v */
static void FN(wg_in_band)(const REAL *plane, int64_t Hin, int64_t Win, int64_t ph, int64_t pw,
                           int64_t ty0, int64_t thb, int64_t tw, int64_t s, int m,
                           REAL *scratch, REAL *v)
{
    /* input rows a tile row: 2 (F(2x2, 3x3)), 4 (F(4x4, 3x3) and stride 2) */
    const int64_t r0 = (m == 2 ? 2 : 4) * ty0 - ph;   /* the band's first input row */
    const REAL *xp = plane;
    int64_t H = Hin, p = ph;
    if (r0 >= Hin) {
        H = 0;                          /* (only padding below the plane) */
        p = 0;
    } else if (r0 >= 0) {
        xp = plane + r0 * Win;
        H = Hin - r0;
        p = 0;
    } else {
        p = -r0;
    }
    FN(wg_in_tiles)(xp, H, Win, p, pw, thb, tw, s, m, scratch, v);
}

/* wg_conv_chunk's work in bands of `rows` tile rows (cc_wg_band_rows),
 * the products by the product kernel; work (work_elems) is the chunk's V
 * and M */
static int FN(wg_conv_bands)(const REAL *in, int64_t nb, int64_t Cin, int64_t Hin, int64_t Win,
                              int64_t ph, int64_t pw, const REAL *U, int64_t Kout,
                              int64_t Hout, int64_t Wout, const REAL *bias, REAL *work,
                              int64_t work_elems, int n_threads, REAL *out, int m, int64_t rows)
{
    const int side = WG_SIDE(m);
    const int64_t th = (Hout + side - 1) / side, tw = (Wout + side - 1) / side;
    const int64_t NP = WG_POINTS(m), nbands = (th + rows - 1) / rows, tasks = nb * nbands;
    const int64_t Pb = rows * tw;
    const int64_t sV = WG_STRIDE(Cin * Pb), sM = WG_STRIDE(Kout * Pb);
    /* per thread: V, M, F(4x4)'s and stride 2's padded copy, a vector's lanes */
    const int64_t pad = m != 2 ? (4 * rows + 2) * 4 * (tw + 1) : 0;
    const int64_t per = NP * (sV + sM) + pad + CC_WG_LANES;
    const int64_t pwp = FN(pw_block_positions)();
    /* the buffers in the chunk's V and M where they fit (they hold at
     * least one image's), else on the heap */
    const int own_work = per * n_threads <= work_elems;
    REAL *Ut[36] = {NULL};
    int64_t i;
    int failed = 0;
    if (FN(wg_pack_points)(U, Kout, Cin, NP, Ut) != CC_OK) return CC_ENOMEM;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && tasks > 1) reduction(| : failed)
    {
        REAL *V = own_work ? work + per * CC_THREAD_NUM() : (REAL *)malloc(sizeof(REAL) * (size_t)per);
        REAL *M = V + NP * sV, *scratch = M + NP * sM, *lanes = scratch + pad;
        int64_t t;
        if (!V) failed = 1;
#pragma omp for schedule(dynamic, 1)
        for (t = 0; t < tasks; ++t) {
            /* every image's full bands, then their last bands (which may be
             * shorter: taken last, they even out the threads' shares) */
            const int64_t n = t < nb * (nbands - 1) ? t / (nbands - 1) : t - nb * (nbands - 1);
            const int64_t ty0 = (t < nb * (nbands - 1) ? t % (nbands - 1) : nbands - 1) * rows;
            const int64_t thb = CC_MIN(rows, th - ty0), P = thb * tw;
            const int64_t oh0 = ty0 * side, hb = CC_MIN(thb * side, Hout - oh0);
            int64_t c, k, xi, p0;
            if (!V) continue;
            /* (V's and M's matrices hold P = thb tw columns, rows P apart) */
            for (c = 0; c < Cin; ++c)
                FN(wg_in_band)(in + (n * Cin + c) * Hin * Win, Hin, Win, ph, pw, ty0, thb, tw,
                               sV, m, scratch, V + c * P);
            /* (whole blocks: the reads past P stay inside V's matrix and
             * its WG_PAD values) */
            for (xi = 0; xi < NP; ++xi)
                for (p0 = 0; p0 < P; p0 += pwp)
                    FN(pw_positions)(Ut[xi], Kout, Cin, V + xi * sV + p0, P, CC_MIN(pwp, P - p0),
                                     M + xi * sM + p0, P, lanes);
            for (k = 0; k < Kout; ++k)
                FN(wg_out_tiles)(M + k * P, sM, thb, tw, bias ? bias[k] : 0, hb, Wout, m,
                                 out + ((n * Kout + k) * Hout + oh0) * Wout);
        }
        if (!own_work) free(V);
    }
    for (i = 0; i < NP; ++i) free(Ut[i]);
    return failed ? CC_ENOMEM : CC_OK;
}

/* (split: as for wg_in_channel; m: the tile, 2 or 4 outputs a side or WG_S2
 * (stride 2), with U transformed for it: wg_weights, wg4_weights or wgs_weights) */
static int FN(wg_conv_chunk)(const REAL *in, int64_t nb, int64_t Cin, int64_t Hin, int64_t Win,
                              int64_t ph, int64_t pw, const REAL *U, int64_t Kout,
                              int64_t Hout, int64_t Wout, const REAL *bias, REAL *V, REAL *M,
                              int n_threads, GEMM_T gemm, REAL *out, int64_t split, int m,
                              int64_t split_out)
{
    const int side = WG_SIDE(m);
    const int64_t th = (Hout + side - 1) / side, tw = (Wout + side - 1) / side, T = th * tw, P = nb * T;
    const int64_t NP = WG_POINTS(m);
    const cc_wg_grid q = cc_wg_grid_of(nb, T);
    const int64_t npb = q.G * q.per;
    const int64_t nkb = cc_nblocks(Kout, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(Kout, CC_KBLOCK, CC_KBLOCK);
    const int64_t sU = WG_STRIDE(Kout * Cin), sV = WG_STRIDE(Cin * P), sM = WG_STRIDE(Kout * P);
    /* F(4x4, 3x3) and stride 2 read each plane from a zero-padded copy, one
     * per thread */
    const int64_t per = (m != 2 ? (4 * th + 2) * 4 * (tw + 1) : 0) + CC_WG_LANES;
    REAL *scratch;
    /* Few channels: each point's product through the product kernel (the
     * transformed kernel packed once), which writes M once; BLAS would
     * first clear M and pack V (memory passes that dominate such layers). */
    const int small = !split && !split_out && Kout <= CC_PW_MAX_K && Kout * Cin <= CC_PW_MAX_WEIGHTS &&
                      cc_product_kernel();
    const int64_t pwp = FN(pw_block_positions)(), npp = (P + pwp - 1) / pwp;
    /* Enough images for every thread: each takes its own share of them
     * through all three steps (wg_conv_images), so a thread's tiles stay in
     * its own core's cache from transform to product to output; with the
     * steps shared out over channels and points instead, each step reads
     * what the other threads wrote, and on 2 cores such a layer ran no
     * faster than on 1.  The sums are the same either way. */
    const int64_t units = small ? nb : q.G;   /* (the product kernel: any images) */
    const int by_image = n_threads > 1 && units >= n_threads &&
                         (units % n_threads == 0 || units >= 4 * (int64_t)n_threads);
    REAL *Ut[36] = {NULL};
    int64_t i;
    if (small) {
        /* (V and M are one block: M follows V's NP matrices) */
        const int64_t rows = cc_wg_band_rows(Cin, Kout, th, tw, m, (int)sizeof(REAL));
        if (rows > 0)
            return FN(wg_conv_bands)(in, nb, Cin, Hin, Win, ph, pw, U, Kout, Hout, Wout, bias,
                                     V, NP * (sV + sM), n_threads, out, m, rows);
    }
    scratch = (REAL *)malloc(sizeof(REAL) * (size_t)(per * n_threads));
    if (!scratch) return CC_ENOMEM;
    if (small && FN(wg_pack_points)(U, Kout, Cin, NP, Ut) != CC_OK) {
        free(scratch);
        return CC_ENOMEM;
    }
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
    {
        REAL *own = scratch + per * CC_THREAD_NUM();
        if (by_image) {
            /* this thread's images through all three steps, no barrier */
            const int64_t nt = CC_TEAM_THREADS(), t = CC_THREAD_NUM();
            const int64_t gs = small ? nb : q.G;   /* (small: groups of one image) */
            FN(wg_conv_images)(in, gs * t / nt, gs * (t + 1) / nt, nb, Cin, Hin, Win, ph, pw, U, Ut, Kout, Hout, Wout,
                               bias, V, M, gemm, out, split, m, split_out, small, own,
                               own + per - CC_WG_LANES);
        }
#pragma omp for schedule(static)
        for (i = 0; i < (by_image ? 0 : nb * Cin); ++i) {
            const int64_t n = i / Cin, c = i % Cin;
            FN(wg_in_channel)(in, n, c, Cin, split, Hin, Win, ph, pw, th, tw, sV, m, own,
                              V + c * P + n * T);
        }
#pragma omp for schedule(static)
        for (i = 0; i < (small && !by_image ? NP * npp : 0); ++i) {
            /* (V's rows end in WG_PAD readable values: whole blocks) */
            const int64_t xi = i / npp, p0 = (i % npp) * pwp;
            FN(pw_positions)(Ut[xi], Kout, Cin, V + xi * sV + p0, P, CC_MIN(pwp, P - p0),
                             M + xi * sM + p0, P, own + per - CC_WG_LANES);
        }
#pragma omp for schedule(dynamic, 1)
        for (i = 0; i < (small || by_image ? 0 : NP * npb * nkb); ++i) {
            const int64_t kb = i % nkb, pb = (i / nkb) % npb, xi = i / (nkb * npb);
            int64_t p0, len;
            int mm;
            const int lda = (int)P, ldb = (int)Cin, ldc = (int)P;
            const REAL one = 1, zero = 0;
            /* a 5x5 layer's split side: only the live pieces (wg5_live) */
            int64_t lo = 0, hi = 4, c0 = 0, c1 = Cin, k0 = kb * kbs, k1 = CC_MIN(k0 + kbs, Kout), k;
            cc_wg_block(&q, nb, T, pb, &p0, &len);
            mm = (int)len;
            if (split || split_out) FN(wg5_live)(xi, m, &lo, &hi);
            if (split) {
                c0 = lo * split;
                c1 = hi * split;
            }
            if (split_out) {   /* rows of dead pieces are zero */
                const int64_t a = CC_MAX(k0, lo * split_out), b = CC_MIN(k1, hi * split_out);
                for (k = k0; k < k1; ++k) {
                    if (k >= a && k < b) continue;
                    memset(M + xi * sM + k * P + p0, 0, sizeof(REAL) * (size_t)mm);
                }
                k0 = a;
                k1 = b;
            }
            if (k1 > k0) {
                const int nn = (int)(k1 - k0), kk = (int)(c1 - c0);
                gemm("N", "N", &mm, &nn, &kk, &one, V + xi * sV + c0 * P + p0, &lda,
                     U + xi * sU + k0 * Cin + c0, &ldb, &zero, M + xi * sM + k0 * P + p0, &ldc);
            }
        }
#pragma omp for schedule(static)
        for (i = 0; i < (by_image ? 0 : nb * Kout); ++i)
            FN(wg_out_channel)(M, i / Kout, i % Kout, Kout, P, T, sM, th, tw, bias, Hout, Wout, m,
                               out);
    }
    for (i = 0; i < NP; ++i) free(Ut[i]);
    free(scratch);
    return CC_OK;
}

/* (p[0 .. n): the largest magnitude into *mx and the sum of p*0 into *z --
 * 0 for finite p, NaN for Inf or NaN -- the max ignoring NaN) */
CC_CLONES static void FN(finite_max_span)(const REAL *CC_RESTRICT p, int64_t n, REAL *mx_out,
                                       REAL *z_out)
{
    REAL mx = 0, z = 0;
    int64_t i;
#pragma omp simd reduction(max : mx) reduction(+ : z)
    for (i = 0; i < n; ++i) {
        const REAL a = p[i] < 0 ? -p[i] : p[i];
        mx = a > mx ? a : mx;
        z += p[i] * 0;
    }
    *mx_out = mx;
    *z_out = z;
}

/* Values a block of finite_max's scan holds, and the fewest values from which
 * it runs on the team (64 -> 64 channels on 8x8 maps at batch 64, a 1 MiB
 * input: WINOGRAD's forward pass 1.00 -> 0.77 ms with both). */
#define CC_WG_TAME_BLOCK 16384
#define CC_WG_TAME_TEAM 65536

/* Whether every value of p[0 .. n) is finite, and (into *maxabs) the
 * largest magnitude. */
static int FN(finite_max)(const REAL *p, int64_t n, int n_threads, double *maxabs)
{
    REAL mx = 0, z = 0;
    const int64_t nblk = (n + CC_WG_TAME_BLOCK - 1) / CC_WG_TAME_BLOCK;
    int64_t b;
    /* (the max is exact and the sum is 0 or NaN in any order: the same
     * answer for every thread count) */
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && n >= CC_WG_TAME_TEAM) \
    reduction(max : mx) reduction(+ : z) schedule(static)
    for (b = 0; b < nblk; ++b) {
        REAL bm, bz;
        FN(finite_max_span)(p + b * CC_WG_TAME_BLOCK, CC_MIN(CC_WG_TAME_BLOCK, n - b * CC_WG_TAME_BLOCK),
                         &bm, &bz);
        mx = bm > mx ? bm : mx;
        z += bz;
    }
    *maxabs = (double)mx;
    return z == 0;
}

/* Whether every value is finite and at most 1e30 in magnitude, and the
 * largest magnitude.  Inf or NaN give the direct path its exact IEEE
 * pattern; huge values keep the transforms from overflowing. */
static int FN(wg_tame)(const REAL *p, int64_t n, int n_threads, double *maxabs)
{
    return FN(finite_max)(p, n, n_threads, maxabs) && *maxabs <= 1e30;
}

/* Products of magnitudes up to this stay far from float overflow even
 * after the transforms (factors up to 16 for F(2x2, 3x3), 100 x 361 for
 * F(4x4, 3x3)) and long sums. */
#define CC_WG_PRODUCT_MAX 1e24

/* U for the tile m (2 or 4): see wg_weights */
static void FN(wg_weights_m)(const REAL *w, int64_t K, int64_t C, int flip, int n_threads, int m,
                             REAL *U)
{
    if (m == WG_S2) FN(wgs_weights)(w, K, C, n_threads, U);   /* (never flipped) */
    else if (m == 4) FN(wg4_weights)(w, K, C, flip, n_threads, U);
    else FN(wg_weights)(w, K, C, flip, n_threads, U);
}

/* (packed: U made beforehand by cc_conv2d_pack, or NULL: U made here, in
 * the workspace's first part, which a packed call leaves unused) */
static int FN(fwd_winograd)(const REAL *x, const REAL *w, const REAL *packed, const REAL *b,
                            const cc_conv_geom *g, REAL *work, int64_t B,
                            int n_threads, GEMM_T gemm, REAL *y)
{
    const int m = g->SH == 2 ? WG_S2 : cc_wg_tile(g->OH, g->OW), NP = WG_POINTS(m), e = WG_SIDE(m);
    const int64_t T = ((g->OH + e - 1) / e) * ((g->OW + e - 1) / e);
    REAL *V = work + NP * WG_STRIDE(g->K * g->C);
    const REAL *U = packed ? packed : work;
    int64_t n0;
    if (!packed) FN(wg_weights_m)(w, g->K, g->C, 0, n_threads, m, work);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        REAL *M = V + NP * WG_STRIDE(g->C * nb * T);
        const int st = FN(wg_conv_chunk)(x + n0 * g->C * g->H * g->W, nb, g->C, g->H, g->W,
                                         g->PH, g->PW, U, g->K, g->OH, g->OW, b, V, M,
                                         n_threads, gemm, y + n0 * g->K * g->OH * g->OW, 0, m, 0);
        if (st != CC_OK) return st;
    }
    return CC_OK;
}

/* One chunk of dW's work, called by every thread of a team: the input
 * transform into V, dy through A into M, then dU[xi]ᵀ (C x K) (+)= V[xi]
 * (C x P) . M[xi]ᵀ over the whole chunk per GEMM (from zero when
 * zero_first).  s2: the stride-2 tile (25 points, M its 9 distinct
 * matrices), else F(2x2, 3x3); own: the thread's scratch for the stride-2
 * copy.  gi, split: the input as wg_in_channel reads it; g5 (or NULL): the
 * 5x5 layer whose split input g is.  With dw = 0 only M is made. */
static void FN(wg_dU_team)(const REAL *xc, const cc_conv_geom *gi, int64_t split,
                           const REAL *dyc, const cc_conv_geom *g, int64_t nb, int s2, int dw,
                           REAL *own, REAL *V, REAL *M, REAL *dU, int zero_first, GEMM_T gemm,
                           const cc_conv_geom *g5)
{
    const int64_t K = g->K, C = g->C, NP = s2 ? 25 : 16;
    const int64_t th = (g->OH + 1) / 2, tw = (g->OW + 1) / 2, T = th * tw, P = nb * T;
    const int64_t nkb = cc_nblocks(K, CC_KBLOCK, CC_KBLOCK), kbs = cc_blocksize(K, CC_KBLOCK, CC_KBLOCK);
    const int64_t ncb = cc_nblocks(C, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(C, CC_CBLOCK, CC_CBLOCK);
    const int64_t sU = WG_STRIDE(K * C), sV = WG_STRIDE(C * P), sM = WG_STRIDE(K * P);
    int64_t i;
#pragma omp for schedule(static) nowait
    for (i = 0; i < (dw ? nb * C : 0); ++i) {
        const int64_t n = i / C, c = i % C;
        FN(wg_in_channel)(xc, n, c, C, split, gi->H, gi->W, gi->PH, gi->PW, th, tw, sV,
                          s2 ? WG_S2 : 2, own, V + c * P + n * T);
    }
#pragma omp for schedule(static)
    for (i = 0; i < nb * K; ++i) {
        const int64_t n = i / K, k = i % K;
        if (s2)
            FN(wgs_dy_plane)(dyc + i * g->OH * g->OW, g->OH, g->OW, th, tw, sM, M + k * P + n * T);
        else
            FN(wg_dy_plane)(dyc + i * g->OH * g->OW, g->OH, g->OW, th, tw, sM, M + k * P + n * T);
    }
#pragma omp for schedule(dynamic, 1)
    for (i = 0; i < (dw ? NP * nkb * ncb : 0); ++i) {
        const int64_t cb = i % ncb, kb = (i / ncb) % nkb, xi = i / (ncb * nkb);
        const int64_t k0 = kb * kbs, mi = s2 ? WGS_DY_XI(xi) : xi;
        const int nn = (int)CC_MIN(kbs, K - k0);
        const int kk = (int)P, lda = (int)P, ldb = (int)P, ldc = (int)C;
        const REAL one = 1, beta = zero_first ? 0 : 1;
        int64_t c0 = cb * cbs, c1 = CC_MIN(c0 + cbs, C);
        if (g5) {
            /* only the live pieces' part of dU (wg5_live); the rest feeds
             * only the dropped sixth row and column of dW, and stays zero */
            int64_t lo, hi, k, c;
            FN(wg5_live)(xi, 2, &lo, &hi);
            if (beta == 0)
                for (k = k0; k < k0 + nn; ++k)
                    for (c = c0; c < c1; ++c)
                        if (c < lo * g5->C || c >= hi * g5->C) dU[xi * sU + k * C + c] = 0;
            c0 = CC_MAX(c0, lo * g5->C);
            c1 = CC_MIN(c1, hi * g5->C);
            if (c1 <= c0) continue;
        }
        {
            const int m = (int)(c1 - c0);
            gemm("T", "N", &m, &nn, &kk, &one, V + xi * sV + c0 * P, &lda, M + mi * sM + k0 * P,
                 &ldb, &beta, dU + xi * sU + k0 * C + c0, &ldc);
        }
    }
}

/* dW, then dX, over the chunks.  dU (in work) starts from zero when
 * dU_zero, else it adds to the previous call's (same work), and dW = Gᵀ dU G
 * is written when dU_done: a caller may spread one dW over several calls.
 * g5 (or NULL): the 5x5 layer whose split input g is; x then holds that
 * layer's input, transformed straight from its planes (dW only).
 * dW's dU and dX's transformed kernel take the same front of the workspace,
 * one after the other (dU is done with once dW is written), and each pass's
 * per-chunk buffers follow its own: a layer's touched workspace is the
 * larger of the two passes', not their sum (512 -> 512 channels: 16 MiB
 * less).  Each pass adds in the same order as when they alternated chunk by
 * chunk, so the bits are the same. */
static int FN(bwd_winograd)(const REAL *dy, const REAL *x, const REAL *w,
                            const cc_conv_geom *g, REAL *work, int64_t B,
                            int n_threads, GEMM_T gemm, REAL *dx, REAL *dw,
                            int dU_zero, int dU_done, const cc_conv_geom *g5)
{
    const int64_t K = g->K, C = g->C;
    const int64_t T = ((g->OH + 1) / 2) * ((g->OW + 1) / 2);
    const int64_t sU = WG_STRIDE(K * C);
    /* dX: the tile its output (the input's size) takes; dW: F(2x2, 3x3) */
    const int mx = cc_wg_tile(g->H, g->W), NPx = (mx + 2) * (mx + 2);
    int64_t n0;
    /* (dX would overwrite a dU that a later call still adds to) */
    if (dx && dw && !dU_done) return CC_EINVAL;
    if (dw) {
        REAL *dU = work, *buf = dU + 16 * sU;
        for (n0 = 0; n0 < g->N; n0 += B) {
            const int64_t nb = CC_MIN(B, g->N - n0), P = nb * T;
            const REAL *dyc = dy + n0 * K * g->OH * g->OW;
            const int64_t sV = WG_STRIDE(C * P);
            REAL *V = buf, *Mt = buf + 16 * sV;
            /* (the input as given: this layer's, or the 5x5 layer's it splits) */
            const cc_conv_geom *gi = g5 ? g5 : g;
            const REAL *xc = x + n0 * gi->C * gi->H * gi->W;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
            FN(wg_dU_team)(xc, gi, g5 ? g5->C : 0, dyc, g, nb, 0, 1, NULL, V, Mt, dU,
                           n0 == 0 && dU_zero, gemm, g5);
        }
        if (dU_done) FN(wg_weights_back)(dU, K, C, n_threads, dw);
    }
    if (dx) {
        REAL *Ud = work, *buf = Ud + NPx * sU;
        const int64_t Th = ((g->H + mx - 1) / mx) * ((g->W + mx - 1) / mx);
        FN(wg_weights_m)(w, K, C, 1, n_threads, mx, Ud);
        for (n0 = 0; n0 < g->N; n0 += B) {
            const int64_t nb = CC_MIN(B, g->N - n0);
            const REAL *dyc = dy + n0 * K * g->OH * g->OW;
            REAL *Vd = buf, *Md = buf + NPx * WG_STRIDE(K * nb * Th);
            const int st = FN(wg_conv_chunk)(dyc, nb, K, g->OH, g->OW, 2 - g->PH, 2 - g->PW, Ud,
                                             C, g->H, g->W, NULL, Vd, Md, n_threads, gemm,
                                             dx + n0 * C * g->H * g->W, 0, mx, 0);
            if (st != CC_OK) return st;
        }
    }
    return CC_OK;
}

/* dX and dW of a stride-2 layer, over the chunks: dy through A once for
 * both; dU[xi]ᵀ (+)= V[xi] Mᵀ[xi] as in bwd_winograd; Z[xi] (C x P) =
 * U[xi]ᵀ M[xi] in V's place, then each plane through wgs_dx_plane. */
static int FN(bwd_winograd_s2)(const REAL *dy, const REAL *x, const REAL *w,
                               const cc_conv_geom *g, REAL *work, int64_t B,
                               int n_threads, GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int64_t K = g->K, C = g->C;
    const int64_t th = (g->OH + 1) / 2, tw = (g->OW + 1) / 2, T = th * tw;
    const int64_t ncb = cc_nblocks(C, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(C, CC_CBLOCK, CC_CBLOCK);
    const int64_t sU = WG_STRIDE(K * C);
    /* per thread: a plane's phase-layout copy (dW) or its dX accumulator */
    const int64_t per = (4 * th + 2) * 5 * (tw + 1);
    REAL *U = work, *dU = U + 25 * sU, *buf = dU + 25 * sU;
    REAL *scratch = (REAL *)malloc(sizeof(REAL) * (size_t)(per * n_threads));
    int64_t n0;
    if (!scratch) return CC_ENOMEM;
    if (dx) FN(wgs_weights)(w, K, C, n_threads, U);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0), P = nb * T;
        const int64_t sV = WG_STRIDE(C * P), sM = WG_STRIDE(K * P);
        const int64_t npb = cc_nblocks(P, CC_LSPLIT, CC_LBLOCK), pbs = cc_blocksize(P, CC_LSPLIT, CC_LBLOCK);
        const REAL *dyc = dy + n0 * K * g->OH * g->OW;
        const REAL *xc = x + n0 * C * g->H * g->W;
        REAL *V = buf, *M = buf + 25 * sV;   /* (M: 9 distinct matrices, WGS_DY_XI) */
        int64_t i;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
            REAL *own = scratch + per * CC_THREAD_NUM();
            /* dW's work, and dy through A for both */
            FN(wg_dU_team)(xc, g, 0, dyc, g, nb, 1, dw != NULL, own, V, M, dU, n0 == 0, gemm, NULL);
            /* Z[xi]ᵀ (P x C) = M[xi]ᵀ (P x K) . U[xi] (K x C), into V */
#pragma omp for schedule(dynamic, 1)
            for (i = 0; i < (dx ? 25 * npb * ncb : 0); ++i) {
                const int64_t cb = i % ncb, pb = (i / ncb) % npb, xi = i / (ncb * npb);
                const int64_t c0 = cb * cbs, p0 = pb * pbs;
                const int m = (int)CC_MIN(pbs, P - p0), nn = (int)CC_MIN(cbs, C - c0);
                const int kk = (int)K, lda = (int)P, ldb = (int)C, ldc = (int)P;
                const REAL one = 1, zero = 0;
                gemm("N", "T", &m, &nn, &kk, &one, M + WGS_DY_XI(xi) * sM + p0, &lda,
                     U + xi * sU + c0, &ldb, &zero, V + xi * sV + c0 * P + p0, &ldc);
            }
#pragma omp for schedule(static)
            for (i = 0; i < (dx ? nb * C : 0); ++i) {
                const int64_t n = i / C, c = i % C;
                FN(wgs_dx_plane)(V + c * P + n * T, sV, th, tw, g->H, g->W, g->PH, g->PW, own,
                                 dx + ((n0 + n) * C + c) * g->H * g->W);
            }
        }
    }
    free(scratch);
    if (dw) FN(wgs_weights_back)(dU, K, C, n_threads, dw);
    return CC_OK;
}

/* ------------------------------------------------------------------ */
/* 5x5 layers.  The kernel, zero-extended to 6x6, is four 3x3 pieces w_q at
 * offsets (a_q, b_q) in {0, 3}^2, so with xp the padded input
 *     y[oh, ow] = sum over q, r, s < 3 of w_q[r][s] . xp[oh + a_q + r][ow + b_q + s],
 * a sum of four 3x3 correlations that F(2x2, 3x3) runs with 16 products per
 * 2x2 outputs per piece, less those of the zero sixth row and column
 * (wg5_live): 49 per 2x2 outputs and channel pair against 100, 2.04x fewer,
 * at the price of transforming four times the channels on one side.
 * cc_wg5_geom picks the side with fewer channels:
 *   split input:  4I channels, channel (q, i) = xp shifted by the q-th
 *                 offset (OH+2 x OW+2), kernel (o, (q, i)) = w_q of (o, i);
 *   split output: 4O channels z_(q, o) = xp correlated with w_q of (o, .)
 *                 over OH+3 x OW+3, then y[o] = sum over q of z_(q, o)
 *                 shifted by the q-th offset, in q order, plus the bias.
 * dX is the same with dy as the input (padding 4 - p) and the flipped,
 * transposed kernel; dW is the adjoint of the forward with its input split. */
static const int FN(wg5_off)[4][2] = {{0, 3}, {0, 0}, {3, 0}, {3, 3}};

/* The pieces whose transformed kernel can be nonzero at point xi of the tile
 * m: [*lo, *hi) in the order of wg5_off.  A piece whose last column (the
 * sixth of the 6x6 kernel) is zero has U = 0 in the last point column, as
 * G's last row is (0, 0, 1); likewise for the last row.  The order above
 * keeps each live set contiguous, so the GEMMs skip the rest: 49 of 64
 * products per 2x2 outputs for F(2x2, 3x3). */
static void FN(wg5_live)(int64_t xi, int m, int64_t *lo, int64_t *hi)
{
    const int n = m + 2, last_row = xi / n == n - 1, last_col = xi % n == n - 1;
    /* zero last column: pieces 0 (0, 3) and 3 (3, 3); zero last row: 2 and 3 */
    *lo = last_col ? 1 : 0;
    *hi = last_row ? 2 : last_col ? 3 : 4;
}

/* y (nb, O, OHf, OWf) = sum over q of z (nb, 4O, OHf+3, OWf+3) shifted, + bias */
static void FN(wg5_merge_out)(const REAL *z, int64_t nb, int64_t O, int64_t OHf, int64_t OWf,
                              const REAL *bias, int n_threads, REAL *y)
{
    const int64_t H3 = OHf + 3, W3 = OWf + 3, P3 = H3 * W3;
    int64_t i;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1) schedule(static)
    for (i = 0; i < nb * O; ++i) {
        const int64_t n = i / O, o = i % O;
        const REAL *z0 = z + (n * 4 * O + o) * P3, *z1 = z0 + O * P3, *z2 = z1 + O * P3,
                   *z3 = z2 + O * P3;
        const REAL bo = bias ? bias[o] : 0;
        REAL *yo = y + i * OHf * OWf;
        int64_t r, sx;
        for (r = 0; r < OHf; ++r) {
            const REAL *a = z0 + (r + FN(wg5_off)[0][0]) * W3 + FN(wg5_off)[0][1],
                       *b = z1 + (r + FN(wg5_off)[1][0]) * W3 + FN(wg5_off)[1][1],
                       *c = z2 + (r + FN(wg5_off)[2][0]) * W3 + FN(wg5_off)[2][1],
                       *d = z3 + (r + FN(wg5_off)[3][0]) * W3 + FN(wg5_off)[3][1];
            REAL *yr = yo + r * OWf;
            for (sx = 0; sx < OWf; ++sx) yr[sx] = (((a[sx] + b[sx]) + c[sx]) + d[sx]) + bo;
        }
    }
}

/* The four 3x3 pieces of a 5x5 kernel (cc_wg5_geom): split input
 * w4[o][q*I + i][r][s], split output w4[q*O + o][i][r][s] = tap (a_q + r,
 * b_q + s) of kernel (o, i), zero in the sixth row and column; dX (dx = 1):
 * of w[i][o] flipped. */
static void FN(wg5_pieces)(const REAL *w, const cc_conv_geom *g, int dx, int split_out,
                           int n_threads, REAL *w4)
{
    const int64_t O = dx ? g->C : g->K, I = dx ? g->K : g->C;
    int64_t t;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && O * I > 4096) schedule(static)
    for (t = 0; t < O * I; ++t) {
        const int64_t o = t / I, c = t % I;
        const REAL *src = dx ? w + (c * g->C + o) * 25 : w + (o * g->C + c) * 25;
        int q, r, sx;
        for (q = 0; q < 4; ++q) {
            REAL *dst = w4 + (split_out ? ((q * O + o) * I + c) : ((o * 4 + q) * I + c)) * 9;
            for (r = 0; r < 3; ++r)
                for (sx = 0; sx < 3; ++sx) {
                    const int kh = FN(wg5_off)[q][0] + r, kw = FN(wg5_off)[q][1] + sx;
                    REAL v = 0;
                    if (kh < 5 && kw < 5) v = dx ? src[(4 - kh) * 5 + (4 - kw)] : src[kh * 5 + kw];
                    dst[r * 3 + sx] = v;
                }
        }
    }
}

/* The transformed pieces of a 5x5 layer's forward pass (U of its split
 * geometry, tile m), as wg5_run makes them; w4: room for the pieces. */
static void FN(wg5_weights)(const REAL *w, const cc_conv_geom *g, int n_threads, int m, REAL *w4,
                            REAL *U)
{
    cc_conv_geom g3;
    const int split_out = cc_wg5_geom(g, 0, g->N, &g3);
    FN(wg5_pieces)(w, g, 0, split_out, n_threads, w4);
    FN(wg_weights_m)(w4, g3.K, g3.C, 0, n_threads, m, U);
}

/* out = the 5x5 correlation of in: the forward (dx = 0: in = x, out = y)
 * or dX (dx = 1: in = dy, out = dx), B images at a time.  packed (forward
 * only, or NULL): the transformed pieces made by cc_conv2d_pack, which
 * leaves the workspace's pieces and U unused. */
static int FN(wg5_run)(const REAL *in, const REAL *w, const REAL *bias, const cc_conv_geom *g,
                       int dx, const REAL *packed, REAL *work, int64_t B, int n_threads,
                       GEMM_T gemm, REAL *out)
{
    cc_conv_geom g3;
    const int64_t Hin = dx ? g->OH : g->H, Win = dx ? g->OW : g->W;
    const int64_t ph = dx ? 4 - g->PH : g->PH, pw = dx ? 4 - g->PW : g->PW;
    const int64_t O = dx ? g->C : g->K, I = dx ? g->K : g->C;
    const int64_t OHf = dx ? g->H : g->OH, OWf = dx ? g->W : g->OW;
    const int split_out = cc_wg5_geom(g, dx, B, &g3);
    REAL *w4 = work, *buf = work + 4 * O * I * 9;
    int64_t n0;
    if (!packed) FN(wg5_pieces)(w, g, dx, split_out, n_threads, w4);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        const REAL *inc = in + n0 * I * Hin * Win;
        REAL *outc = out + n0 * O * OHf * OWf;
        cc_conv_geom gc;
        cc_wg5_geom(g, dx, nb, &gc);
        const int m = cc_wg_tile(gc.OH, gc.OW), NP = (m + 2) * (m + 2);
        const int64_t T = ((gc.OH + m - 1) / m) * ((gc.OW + m - 1) / m);
        if (split_out) {
            /* z = buf (nb, 4O, OHf+3, OWf+3); U, V, M behind room for B images */
            REAL *U = buf + B * gc.K * gc.OH * gc.OW, *V = U + NP * WG_STRIDE(gc.K * I);
            REAL *M = V + NP * WG_STRIDE(I * nb * T);
            if (n0 == 0 && !packed) FN(wg_weights_m)(w4, gc.K, I, 0, n_threads, m, U);
            const int st = FN(wg_conv_chunk)(inc, nb, I, Hin, Win, ph, pw, packed ? packed : U,
                                             gc.K, gc.OH, gc.OW,
                                             NULL, V, M, n_threads, gemm, buf, 0, m, O);
            if (st != CC_OK) return st;
            FN(wg5_merge_out)(buf, nb, O, OHf, OWf, bias, n_threads, outc);
        } else {
            /* the split input is transformed straight from the planes */
            REAL *U = buf, *V = U + NP * WG_STRIDE(O * 4 * I);
            REAL *M = V + NP * WG_STRIDE(4 * I * nb * T);
            if (n0 == 0 && !packed) FN(wg_weights_m)(w4, O, 4 * I, 0, n_threads, m, U);
            const int st = FN(wg_conv_chunk)(inc, nb, 4 * I, Hin, Win, ph, pw, packed ? packed : U,
                                             O, OHf, OWf,
                                             bias, V, M, n_threads, gemm, outc, I, m, 0);
            if (st != CC_OK) return st;
        }
    }
    return CC_OK;
}

/* dW of a 5x5 layer: dW of the split-input 3x3 correlation (bwd_winograd
 * over the split input, its dU summed over the chunks in order) into dw4
 * (K, 4C, 3, 3);
 * each tap (kh, kw) of the 5x5 kernel is then read from the one piece q
 * that holds it (the sixth row and column are dropped). */
static int FN(wg5_dw)(const REAL *dy, const REAL *x, const cc_conv_geom *g, REAL *work, int64_t B,
                      int n_threads, GEMM_T gemm, REAL *dw)
{
    cc_conv_geom g3;
    const int64_t K = g->K, C = g->C;
    REAL *dw4 = work, *rest = dw4 + K * 4 * C * 9;   /* (fixed: dU stays put across chunks) */
    int64_t i, n0;
    cc_wg5_geom(g, 2, B, &g3);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        cc_conv_geom gc = g3;
        gc.N = nb;
        FN(bwd_winograd)(dy + n0 * K * g->OH * g->OW, x + n0 * C * g->H * g->W, NULL, &gc, rest,
                         nb, n_threads, gemm, NULL, dw4, n0 == 0, n0 + nb >= g->N, g);
    }
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && K * C > 4096) schedule(static)
    for (i = 0; i < K * C * 25; ++i) {
        const int64_t kc = i / 25, kh = (i % 25) / 5, kw = i % 5;
        const int64_t k = kc / C, c = kc % C;
        int64_t q = 0;
        while (FN(wg5_off)[q][0] != (kh >= 3 ? 3 : 0) || FN(wg5_off)[q][1] != (kw >= 3 ? 3 : 0)) ++q;
        dw[i] = dw4[((k * 4 + q) * C + c) * 9 + (kh % 3) * 3 + kw % 3];
    }
    return CC_OK;
}

/* ------------------------------------------------------------------ */
/* Strategy WINOGRAD: applies? workspace (the shape part, compiled once),
 * forward and backward. */
#ifndef CC_WINOGRAD_SHAPE
#define CC_WINOGRAD_SHAPE
int cc_conv_winograd_ok(const cc_conv_geom *g)
{
    /* 3x3 at stride 1 or 2, or 5x5 at stride 1 cut into four 3x3 pieces
     * (cc_wg5_geom) */
    const int k3 = g->KH == 3 && g->KW == 3 && g->PH <= 2 && g->PW <= 2 &&
                   ((g->SH == 1 && g->SW == 1) || (g->SH == 2 && g->SW == 2));
    const int k5 = g->KH == 5 && g->KW == 5 && g->PH <= 4 && g->PW <= 4 && g->SH == 1 && g->SW == 1;
    return (k3 || k5) && g->DH == 1 && g->DW == 1 && g->groups == 1;
}

#define CC_WG5_WIDE_PLANE (28 * 28)
int cc_conv_winograd_auto(const cc_conv_geom *g)
{
    /* The transforms cost memory passes proportional to C + K per tile; the
     * GEMMs save 20 of every 36 multiplications per channel pair.  Below
     * about 32 channels on either side the saving does not pay. */
    /* (5x5 transforms four times the channels on one side: twice the bar) */
    const int64_t min = g->KH == 5 ? 2 * CC_WG_MIN_CHANNELS : CC_WG_MIN_CHANNELS;
    /* Stride 2 saves 11 of 36 multiplications.  Measured (fwd+bwd, 2
     * threads, against BATCHED): 1.2-1.4x faster on outputs of 14x14 to
     * 28x28 from 16 channels on, 0.85-1.08x on 8x8 outputs, 0.73-0.98x on
     * 7x7 ones (few tiles, short GEMMs). */
    if (g->SH == 2 && (g->OH < CC_WG_S2_MIN_SIDE || g->OW < CC_WG_S2_MIN_SIDE)) return 0;
    /* 5x5 from 32 input channels on planes of at least 28x28 outputs
     * (measured, each side alone, 2 threads: GoogLeNet's 32 -> 96 on 28x28
     * 1.4-1.6x faster than BATCHED both ways at batch 8, 1.15x forward at
     * batch 1; on 14x14 and 7x7 planes with 16-48 inputs 0.6-1.0x) */
    if (g->KH == 5 && g->C >= CC_WG_MIN_CHANNELS && g->K >= min &&
        g->OH * g->OW >= CC_WG5_WIDE_PLANE && cc_conv_winograd_ok(g))
        return 1;
    return cc_conv_winograd_ok(g) && g->C >= min && g->K >= min;
}


/* (planes of fewer than CC_WG_B1_MIN_TILES F(2x2, 3x3) tiles: the fewest
 * tiles in the batch, twice that on odd planes; below CC_WG_FEW_TILES in
 * the batch, the fewest channel pairs forward and backward; at stride 2,
 * the fewest 2x2 output tiles in the batch) */
#define CC_WG_MIN_BATCH_TILES 64
#define CC_WG_B1_MIN_TILES 25
#define CC_WG_FEW_TILES 100
#define CC_WG_FEW_TILES_FWD_WEIGHTS (128 * 256)
#define CC_WG_FEW_TILES_BWD_WEIGHTS (256 * 256)
#define CC_WG_S2_MIN_TILES 384

static int winograd_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    /* float64 never takes it unless asked: its rounding is a float32 trade */
    if (elem_size != (int)sizeof(float) || !cc_conv_winograd_auto(g)) return 0;
    if (g->KH == 3 && g->SH == 1) {
        const int64_t tiles = ((g->OH + 1) / 2) * ((g->OW + 1) / 2);
        /* Planes of under 5x5 tiles (7x7 and smaller outputs) need enough
         * tiles in the batch for the products to pay for the transforms
         * (each side alone, 2 threads, against BATCHED).  Under 64 in all:
         * on 2x2 and 4x4 outputs 1.15-1.3x slower both ways at batch 8 or
         * less, the border tiles being most of the work; on 7x7 and 8x8
         * outputs, with OpenBLAS's AVX-512 kernels (which it picks for such
         * a CPU itself; BATCHED's products run 1.7x faster with them than
         * with the Haswell ones), 1.3-1.9x slower forward at batch 1 with
         * 128 to 320 channels, 1.8x at batch 2 with 512, 1.1-1.4x backward.
         * From 64 tiles in all (4x4 and 2x2 maps at batch 64, 128 to 512
         * channels; 8x8 maps at batch 4) 1.1-1.8x faster both ways.  Odd
         * planes (7x7: a quarter of the tiles' outputs past the plane) need
         * 128: at batch 4 1.15-1.25x slower both ways with 512 -> 512 and
         * 832 -> 384 channels, even at batch 8. */
        if (tiles < CC_WG_B1_MIN_TILES &&
            g->N * tiles < ((g->OH % 2 || g->OW % 2) ? 2 : 1) * CC_WG_MIN_BATCH_TILES)
            return 0;
        /* Fewer than 100 tiles in all (batch 1 and 2 on 14x14 and 16x16
         * outputs, 49 and 64 tiles an image): forward 1.1-1.4x slower with
         * up to 25,000 channel pairs, 1.1-1.2x faster from 32,768 on;
         * backward 1.1-1.4x slower below 65,536 pairs, 1.1x faster at
         * 65,536. */
        if (g->N * tiles < CC_WG_FEW_TILES &&
            g->K * g->C < (backward ? CC_WG_FEW_TILES_BWD_WEIGHTS : CC_WG_FEW_TILES_FWD_WEIGHTS))
            return 0;
        /* ... and odd planes (a tile row and column half past the plane)
         * need 64 tiles in all whatever the channels: AlexNet's 13x13
         * layers at batch 1 (49 tiles, 256 to 384 channels) ran 1.2-1.5x
         * slower forward and 1.1-1.3x backward; at batch 2 they were as
         * fast or faster. */
        if ((g->OH % 2 || g->OW % 2) && g->N * tiles < CC_WG_MIN_BATCH_TILES) return 0;
    }
    /* 5x5 at batch 1, backward: 1.3-1.5x slower than BATCHED (AlexNet's
     * 96 -> 256 on 27x27, GoogLeNet's 32 -> 96 on 28x28) */
    if (g->KH == 5 && backward && g->N < 2) return 0;
    /* Stride 2 (each side alone, 2 threads, against BATCHED, ResNet's
     * downsampling layers of 64 to 256 channels): from about 400 tiles of
     * 2x2 outputs in the chunk, as fast forward and 1.1-1.4x faster
     * backward; with fewer (batch 1 on 28x28 and 14x14 outputs, batch 2 on
     * 14x14) 1.1-1.4x slower forward and up to 1.4x backward, the products
     * being too short for the transforms to pay. */
    if (g->SH == 2 && g->N * ((g->OH + 1) / 2) * ((g->OW + 1) / 2) < CC_WG_S2_MIN_TILES) return 0;
    return 1;
}

/* Winograd workspace: fixed 2 x 16*K*C (transformed weights, dU), per image
 * 16*(C+K) values per 2x2 tile of the larger of the output and the input. */
static int64_t wg3_workspace(const cc_conv_geom *g, int64_t chunk);

/* A 5x5 layer's Winograd workspace, the largest of its forward, dX and dW:
 * the split kernel (4 O I 9) or the split dW (as large), a chunk of split
 * outputs (a split input is transformed straight from the planes), and the
 * 3x3 workspace of the split geometry. */
static int64_t wg5_workspace(const cc_conv_geom *g, int64_t chunk)
{
    int64_t best = 0;
    int dx;
    for (dx = 0; dx < 3; ++dx) {
        cc_conv_geom g3;
        int64_t wk, in, rest;
        const int out = cc_wg5_geom(g, dx, chunk, &g3);
        rest = wg3_workspace(&g3, chunk);
        if (rest < 0 || !cc_prod4_ok(g3.K, g3.C, 9, 1, &wk) ||
            !cc_prod4_ok(out ? chunk : 0, g3.K, g3.OH, g3.OW, &in) || wk > CC_SIZE_MAX - in ||
            wk + in > CC_SIZE_MAX - rest)
            return -1;
        best = CC_MAX(best, wk + in + rest);
    }
    return best;
}

/* transformed values per image: the more of F(2x2, 3x3)'s and F(4x4, 3x3)'s
 * tiles over the output (forward, dW) and over the input (dX) */
static int64_t wg_points(int64_t H, int64_t W)
{
    const int64_t t2 = 16 * ((H + 1) / 2) * ((W + 1) / 2);
    const int64_t t4 = 36 * ((H + 3) / 4) * ((W + 3) / 4);
    return t2 > t4 ? t2 : t4;
}

static int64_t wg3_workspace(const cc_conv_geom *g, int64_t chunk)
{
    /* (stride 2: 25 values per 2x2 tile of the output, for every pass) */
    const int64_t T = g->SH == 2 ? 25 * ((g->OH + 1) / 2) * ((g->OW + 1) / 2) : wg_points(g->OH, g->OW);
    const int64_t Th = g->SH == 2 ? 0 : wg_points(g->H, g->W);
    const int64_t pts = T > Th ? T : Th;
    int64_t fixed, t;
    /* fixed: the dX kernel (36 matrices at most) and dU (16); (+ padding
     * of 32 elements behind each of the at most 36 matrices of four
     * buffers, see WG_STRIDE in winograd_impl.h) */
    if (!cc_prod4_ok(52, g->K, g->C, 1, &fixed) || fixed > CC_SIZE_MAX - 4 * 36 * 32) return -1;
    fixed += 4 * 36 * 32;
    if (!cc_prod4_ok(chunk, 1, g->C + g->K, pts, &t)) return -1;
    /* a chunk's tiles are one BLAS dimension: 32-bit sizes */
    if (chunk * (pts / 16) > INT_MAX || t > CC_SIZE_MAX - fixed) return -1;
    return t + fixed;
}

static int64_t wg_workspace(const cc_conv_geom *g, int64_t chunk)
{
    return g->KH == 5 ? wg5_workspace(g, chunk) : wg3_workspace(g, chunk);
}


/* what a call hands it: room for its own run and for BATCHED's, which it
 * falls back to where the inputs are not tame (wg_tame): the larger fixed
 * part plus the larger per-image part (affine in chunk) */
static int64_t winograd_workspace(const cc_conv_geom *g, int64_t chunk)
{
    return batched_or(g, chunk, wg_workspace);
}

/* the transforms stream through V and M: a chunk that stays in cache is
 * faster than one long GEMM (shape-only, so deterministic) */
static int64_t winograd_cap(const cc_conv_geom *g, int64_t per)
{
    const int m = g->SH == 2 ? 2 : cc_wg_tile(g->OH, g->OW);   /* outputs a tile side */
    const int64_t T = ((g->OH + m - 1) / m) * ((g->OW + m - 1) / m);
    return CC_MAX(CC_MAX(1, CC_WG_CHUNK_ELEMS / per), (CC_WG_MIN_TILES + T - 1) / T);
}
#endif

/* the strategy interface */
static int FN(winograd_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                            REAL *work, int64_t work_elems, int64_t B, int n_threads,
                            GEMM_T gemm, REAL *y)
{
    (void)work_elems;
    return g->KH == 5 ? FN(wg5_run)(x, w, b, g, 0, NULL, work, B, n_threads, gemm, y)
                      : FN(fwd_winograd)(x, w, NULL, b, g, work, B, n_threads, gemm, y);
}

static int FN(winograd_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                            REAL *work, int64_t work_elems, int64_t B, int n_threads,
                            GEMM_T gemm, REAL *dx, REAL *dw)
{
    (void)work_elems;
    if (g->KH == 5) {
        /* 5x5: dW, then dX, each through its split (same workspace) */
        if (dw) FN(wg5_dw)(dy, x, g, work, B, n_threads, gemm, dw);
        return dx ? FN(wg5_run)(dy, w, NULL, g, 1, NULL, work, B, n_threads, gemm, dx) : CC_OK;
    }
    if (g->SH == 2) return FN(bwd_winograd_s2)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
    return FN(bwd_winograd)(dy, x, w, g, work, B, n_threads, gemm, dx, dw, 1, 1, NULL);
}
