/* col2im of one plane for a unit width stride (SW = 1), in vectors of
 * C2I_VL values; included by direct_impl.h twice, for the 16-value vectors
 * (one AVX-512 register) and for 32-byte ones (CPUs without AVX-512, where
 * a 16-value vector and its masks would live on the stack).  Defined before
 * inclusion: C2I_NAME (the function), C2I_VL (lanes, at most 16), C2I_V and
 * C2I_M (the value and lane-mask vector types).  The order of every sum is
 * the same for either width, so are the results.
 *
 * Row by row: each C2I_VL-column piece of a row of x sums, in a register,
 * the column-matrix rows of every tap that reaches it, in the order
 * (kh, kw), then is stored once.  (The order in which each element receives its terms is the scatter
 * loop's (kh, kw, oh): for SW = 1 a tap reaches an element at most once.)
 * A piece's masks, set by kw alone, are found once for all its rows.
 * Reads of col stay inside [col_lo, col_end), writes inside the plane:
 * `inside` says every whole-vector read falls in that range (the caller
 * checked), otherwise a tap that cannot read a whole vector there goes
 * through lanes.  With `two` (inside only), plane c + 1 at x + H*W is summed
 * alongside, as an independent chain.  KW at most CC_C2I_MAX_KW.  Inlined
 * into its caller's instruction-set clones. */
#define C2I_LOAD(p) (*(const C2I_V *)(const void *)(p))
#define C2I_STORE(p, v) (*(C2I_V *)(void *)(p) = (v))
static inline __attribute__((always_inline)) void C2I_NAME(
    const REAL *CC_RESTRICT col, const cc_conv_geom *g, int64_t c, int64_t ldc,
    REAL *CC_RESTRICT x, const REAL *col_lo, const REAL *col_end, const int inside,
    const int two)
{
    /* the mask of lanes l >= k (0 <= k <= C2I_VL <= 16): C2I_VL values at
     * ge + 16 - k */
    static const FN(mask_elem_t) ge[32] = {
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, KH = g->KH, KW = g->KW;
    const int64_t SH = g->SH, KK = KH * KW, HW = H * W;
    const C2I_V zero = {0};
    REAL buf[C2I_VL];
    int64_t lo[CC_C2I_MAX_KW], hi[CC_C2I_MAX_KW];
    int64_t ih, j0, kh, kw, l;
    /* (pieces from the last: a whole-vector store of a row's last piece
     * runs into the next row's first piece, written afterwards) */
    for (j0 = (W - 1) / C2I_VL * C2I_VL; j0 >= 0; j0 -= C2I_VL) {
        /* tap kw reaches lanes [lo, hi) of this piece (none if hi <= lo) */
        for (kw = 0; kw < KW; ++kw) {
            const int64_t woff = kw * g->DW - g->PW;
            lo[kw] = CC_MAX(j0, woff) - j0;
            hi[kw] = CC_MAX(lo[kw], CC_MIN(CC_MIN(j0 + C2I_VL, W), OW + woff) - j0);
        }
        for (ih = 0; ih < H; ++ih) {
            C2I_V acc0 = zero, acc1 = zero;
            REAL *out = x + ih * W + j0;
            for (kh = 0; kh < KH; ++kh) {
                const int64_t t = ih + g->PH - kh * g->DH;
                int64_t oh = t;
                const REAL *row;
                if (t < 0) break; /* (t falls with kh) */
                if (SH != 1) {
                    if (t % SH) continue;
                    oh = t / SH;
                }
                if (oh >= OH) continue;
                /* column j takes src[j - woff] for ow = j - woff in [0, OW) */
                row = col + (c * KK + kh * KW) * ldc + oh * OW + g->PW + j0;
                for (kw = 0; kw < KW; ++kw) {
                    const REAL *src = row + kw * (ldc - g->DW);
                    C2I_M in;
                    if (hi[kw] <= lo[kw]) continue;
                    if (!inside && (src < col_lo || src + C2I_VL > col_end)) {
                        for (l = 0; l < C2I_VL; ++l) buf[l] = l >= lo[kw] && l < hi[kw] ? src[l] : 0;
                        acc0 += C2I_LOAD(buf);
                        continue;
                    }
                    in = *(const C2I_M *)(const void *)(ge + 16 - lo[kw]) &
                         ~*(const C2I_M *)(const void *)(ge + 16 - hi[kw]);
                    acc0 += (C2I_V)((C2I_M)C2I_LOAD(src) & in);
                    if (two) acc1 += (C2I_V)((C2I_M)C2I_LOAD(src + KK * ldc) & in);
                }
            }
            if (out + C2I_VL <= x + HW) {
                /* (lanes past the row land in the next row, written after) */
                C2I_STORE(out, acc0);
                if (two) C2I_STORE(out + HW, acc1);
            } else {
                C2I_STORE(buf, acc0);
                for (l = 0; l < CC_MIN(C2I_VL, W - j0); ++l) out[l] = buf[l];
                if (two) {
                    C2I_STORE(buf, acc1);
                    for (l = 0; l < CC_MIN(C2I_VL, W - j0); ++l) out[HW + l] = buf[l];
                }
            }
        }
    }
}

#undef C2I_LOAD
#undef C2I_STORE
#undef C2I_NAME
#undef C2I_VL
#undef C2I_V
#undef C2I_M
