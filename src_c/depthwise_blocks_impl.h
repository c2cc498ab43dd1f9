/* The depthwise kernel's blocks of one output plane (also the rows kernel
 * of a layer with few input channels, fwd_planes), in vectors of DWB_VL
 * values; included by direct_impl.h twice, for the 16-value vectors (one
 * AVX-512 register: blocks of 4 rows x 32 columns, 8 accumulators) and for
 * 32-byte ones (CPUs without AVX-512, where 8 accumulators of 16 values
 * would spill: blocks of 4 rows x 2 vectors).  Defined before inclusion:
 * DWB_NAME (the function), DWB_VL (lanes, at most CC_DKB) and DWB_V (the
 * vector type).  Every output sums the bias and then its taps in the same
 * order in either width: the same results.  The padded planes are sized for
 * the wide blocks, which cover the narrow ones. */
/* acc += wv * (DWB_VL values from xs, SW apart) */
#define DWB_FMA(acc, wv, xs, SW)                                                  \
    do {                                                                          \
        if ((SW) == 1) {                                                          \
            (acc) += (wv) * *(const DWB_V *)(const void *)(xs);                   \
        } else {                                                                  \
            DWB_V v_;                                                             \
            int q_;                                                               \
            for (q_ = 0; q_ < DWB_VL; ++q_) v_[q_] = (xs)[q_ * (SW)];             \
            (acc) += (wv) * v_;                                                   \
        }                                                                         \
    } while (0)
/* the first n (<= DWB_VL) values of v to dst, a part through scratch */
#define DWB_STORE_N(dst, v, n, scratch)                                           \
    do {                                                                          \
        if ((n) == DWB_VL) {                                                      \
            *(DWB_V *)(void *)(dst) = (v);                                        \
        } else if ((n) > 0) {                                                     \
            int64_t q_;                                                           \
            *(DWB_V *)(void *)(scratch) = (v);                                    \
            for (q_ = 0; q_ < (n); ++q_) (dst)[q_] = (scratch)[q_];               \
        }                                                                         \
    } while (0)

/* The blocks of one output plane from nc padded input planes (ps values
 * apart; kernel wk[c][kh][kw]), the taps in the order c, kh, kw; SW is a
 * parameter so that the stride-1 call compiles to plain vector loads. */
static inline __attribute__((always_inline)) void DWB_NAME(
    const REAL *CC_RESTRICT xp, const REAL *CC_RESTRICT wk, REAL bk, const cc_conv_geom *g,
    const int64_t SW, const int64_t nc, const int64_t ps, REAL *CC_RESTRICT scratch,
    REAL *CC_RESTRICT yp)
{
    const int64_t Wp = cc_depthwise_pad_cols(g), OW = g->OW, RS = g->SH * Wp;
    const int64_t KK = g->KH * g->KW;
    int64_t c, kh, kw, oh0, ow0;
    for (oh0 = 0; oh0 < g->OH; oh0 += CC_DEPTHWISE_ROWS) {
        const int64_t nr = CC_MIN(CC_DEPTHWISE_ROWS, g->OH - oh0);
        for (ow0 = 0; ow0 < OW; ow0 += (2 * DWB_VL)) {
            const int64_t n0 = CC_MIN(DWB_VL, OW - ow0), n1 = CC_MAX(0, CC_MIN(DWB_VL, OW - ow0 - DWB_VL));
            const DWB_V zero = {0};
            DWB_V a00 = zero + bk, a01, a10, a11, a20, a21, a30, a31;
            REAL *yr = yp + oh0 * OW + ow0;
            a01 = a10 = a11 = a20 = a21 = a30 = a31 = a00;
            for (c = 0; c < nc; ++c)
            for (kh = 0; kh < g->KH; ++kh) {
                const REAL *xr = xp + c * ps + (oh0 * g->SH + kh * g->DH) * Wp + ow0 * SW;
                for (kw = 0; kw < g->KW; ++kw) {
                    const REAL wv = wk[c * KK + kh * g->KW + kw];
                    const REAL *xs = xr + kw * g->DW, *xt = xs + DWB_VL * SW;
                    DWB_FMA(a00, wv, xs, SW);
                    DWB_FMA(a01, wv, xt, SW);
                    DWB_FMA(a10, wv, xs + RS, SW);
                    DWB_FMA(a11, wv, xt + RS, SW);
                    DWB_FMA(a20, wv, xs + 2 * RS, SW);
                    DWB_FMA(a21, wv, xt + 2 * RS, SW);
                    DWB_FMA(a30, wv, xs + 3 * RS, SW);
                    DWB_FMA(a31, wv, xt + 3 * RS, SW);
                }
            }
            DWB_STORE_N(yr, a00, n0, scratch);
            DWB_STORE_N(yr + DWB_VL, a01, n1, scratch);
            if (nr > 1) {
                DWB_STORE_N(yr + OW, a10, n0, scratch);
                DWB_STORE_N(yr + OW + DWB_VL, a11, n1, scratch);
            }
            if (nr > 2) {
                DWB_STORE_N(yr + 2 * OW, a20, n0, scratch);
                DWB_STORE_N(yr + 2 * OW + DWB_VL, a21, n1, scratch);
            }
            if (nr > 3) {
                DWB_STORE_N(yr + 3 * OW, a30, n0, scratch);
                DWB_STORE_N(yr + 3 * OW + DWB_VL, a31, n1, scratch);
            }
        }
    }
}

#undef DWB_FMA
#undef DWB_STORE_N
#undef DWB_NAME
#undef DWB_VL
#undef DWB_V
