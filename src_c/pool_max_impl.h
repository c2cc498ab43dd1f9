/* Max pooling's row kernels, planes, forward and backward, included by
 * pool_impl.h once per element type (REAL, SFX) and index type:
 *   IDX_T      int64_t or int32_t, the type of the saved indices
 *   IDX_LIMIT  its largest value: a plane of more elements is refused
 *   IFN(name)  the name of a static helper for this pair of types
 *   MAX_FWD, MAX_BWD  the names of the public forward and backward.
 * Both index types run the same expressions in the same order: identical
 * maxima and identical index values. */

/* CC_PV outputs [j, j + CC_PV) of a KxK / stride 2 row kernel (K = 2 or
 * 3, a constant), in vectors: each row's taps are the even values of the
 * row from 2j on, the odd ones, and (K = 3) the odd ones from 2j + 1 on
 * (shuffles of pairs of loads, which read [2j, 2j + 2 CC_PV + K - 3]: no
 * further than the scalar loop over those outputs), and the K*K taps are
 * taken in the generic window's order with its rule, so the maxima -- and,
 * where idx is not NULL, their flat indices (base: output 0's window's
 * first element; W below 2^30) -- are the scalar loop's. */
typedef REAL IFN(pv_t) __attribute__((vector_size(CC_PV * sizeof(REAL)), aligned(sizeof(REAL))));
typedef CODE_T IFN(pm_t) __attribute__((vector_size(CC_PV * sizeof(REAL)), aligned(sizeof(REAL))));
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void IFN(maxs2_vec)(const REAL *CC_RESTRICT r0, int64_t W, int64_t base,
                                  int64_t j, REAL *CC_RESTRICT y, IDX_T *CC_RESTRICT idx,
                                  const int K)
{
#if CC_PV == 8
    const IFN(pm_t) ev = {0, 2, 4, 6, 8, 10, 12, 14}, od = {1, 3, 5, 7, 9, 11, 13, 15};
#else
    const IFN(pm_t) ev = {0, 2, 4, 6}, od = {1, 3, 5, 7};
#endif
    IFN(pv_t) m, v;
    IFN(pm_t) k = {0}, t;
    int r;
    /* (the rule, lane by lane: m <- v and k <- the tap's code where v > m
     * or v is NaN) */
#define CC_VTAKE(code)                                                   \
    (t = (v > m) | (v != v),                                             \
     m = (IFN(pv_t))(((IFN(pm_t))v & t) | ((IFN(pm_t))m & ~t)),          \
     k = ((CODE_T)(code) & t) | (k & ~t))
    for (r = 0; r < K; ++r) {
        const REAL *q = r0 + r * W + 2 * j;
        IFN(pv_t) a, b, a2, b2;
        memcpy(&a, q, sizeof a);
        memcpy(&b, q + CC_PV, sizeof b);
        v = __builtin_shuffle(a, b, ev);
        if (r == 0) m = v;
        else CC_VTAKE(4 * r);
        v = __builtin_shuffle(a, b, od);
        CC_VTAKE(4 * r + 1);
        if (K == 2) continue;
        memcpy(&a2, q + 1, sizeof a2);
        memcpy(&b2, q + 1 + CC_PV, sizeof b2);
        v = __builtin_shuffle(a2, b2, od);
        CC_VTAKE(4 * r + 2);
    }
#undef CC_VTAKE
    memcpy(y, &m, sizeof m);
    if (idx) {
        /* base + 2 (j + lane) + col + row W, straight from registers
         * (codes parked in a buffer and read back stalled the loads -- 2x
         * the pool's time in LeNet's training step); ev is 2 lane */
        const IFN(pm_t) off = ev + (k & 3) + (k >> 2) * (CODE_T)W;
        int l;
        if (sizeof(IDX_T) == sizeof(CODE_T)) {
            const IFN(pm_t) u = off + (CODE_T)(base + 2 * j);
            memcpy(idx, &u, sizeof u);
        } else {
            for (l = 0; l < CC_PV; ++l) idx[l] = (IDX_T)(base + 2 * j + (int64_t)off[l]);
        }
    }
}

#define CC_CHUNK 256
#ifndef CC_MAX_ROWS_TASK
#define CC_MAX_ROWS_TASK 4096   /* outputs a task of whole rows takes, about */
#endif
/* Interior windows of a 2x2 / stride 2 max pool, outputs [lo, hi) of a row;
 * r0 points at the top-left input element of output 0, base is its flat
 * index.  Rows of at least CC_PV outputs go through maxs2_vec in blocks, the
 * last one ending at hi (rewriting some outputs); shorter ones through the
 * scalar loops, where with indices a first loop finds each maximum and a
 * code row<<2|col of its position and a second turns the codes into flat
 * indices, CC_CHUNK outputs at a time. */
CC_CLONES static void IFN(max2_row)(const REAL *CC_RESTRICT r0, int64_t W, int64_t base,
                         int64_t lo, int64_t hi, REAL *CC_RESTRICT y,
                         IDX_T *CC_RESTRICT idx)
{
    const REAL *CC_RESTRICT r1 = r0 + W;
    int64_t j, j0;
    CODE_T code[CC_CHUNK];
    if (!idx) {
        j = lo;
        if (hi - lo >= CC_PV) {   /* (blocks as in max3_rows) */
            for (; j + CC_PV <= hi; j += CC_PV) IFN(maxs2_vec)(r0, W, 0, j, y + j, NULL, 2);
            if (j < hi) IFN(maxs2_vec)(r0, W, 0, hi - CC_PV, y + hi - CC_PV, NULL, 2);
            j = hi;
        }
        for (; j < hi; ++j) {
            REAL m = r0[2 * j], v;
            v = r0[2 * j + 1]; m = FN(pick)(CC_TAKES(v, m), v, m);
            v = r1[2 * j];     m = FN(pick)(CC_TAKES(v, m), v, m);
            v = r1[2 * j + 1]; m = FN(pick)(CC_TAKES(v, m), v, m);
            y[j] = m;
        }
        return;
    }
    if (hi - lo >= CC_PV && W < ((int64_t)1 << 30)) {   /* (blocks, as above) */
        for (j = lo; j + CC_PV <= hi; j += CC_PV) IFN(maxs2_vec)(r0, W, base, j, y + j, idx + j, 2);
        if (j < hi) IFN(maxs2_vec)(r0, W, base, hi - CC_PV, y + hi - CC_PV, idx + hi - CC_PV, 2);
        return;
    }
    for (j0 = lo; j0 < hi; j0 += CC_CHUNK) {
        const int64_t n = CC_MIN(CC_CHUNK, hi - j0);
        REAL *CC_RESTRICT yc = y + j0;
        const REAL *CC_RESTRICT a = r0 + 2 * j0, *CC_RESTRICT b = r1 + 2 * j0;
        IDX_T *CC_RESTRICT ic = idx + j0;
        for (j = 0; j < n; ++j) {
            REAL m = a[2 * j], v;
            CODE_T k = 0, t;
            v = a[2 * j + 1]; t = CC_TAKES(v, m); m = FN(pick)(t, v, m); k = t ? 1 : k;
            v = b[2 * j];     t = CC_TAKES(v, m); m = FN(pick)(t, v, m); k = t ? 4 : k;
            v = b[2 * j + 1]; t = CC_TAKES(v, m); m = FN(pick)(t, v, m); k = t ? 5 : k;
            yc[j] = m;
            code[j] = k;
        }
        for (j = 0; j < n; ++j)
            ic[j] = (IDX_T)(base + 2 * (j0 + j) + (int64_t)(code[j] & 3) +
                           (int64_t)(code[j] >> 2) * W);
    }
}

/* Interior windows of a 3x3 max pool at stride S (1 or 2; as max2_row):
 * the generic window's comparisons in its (row-major) order, so ties and
 * NaN resolve alike.  Inlined into each stride's clones, S a constant.  At
 * stride 2, rows of at least CC_PV outputs go through maxs2_vec in blocks,
 * the last one ending at the row's end. */
#if defined(__GNUC__)
__attribute__((always_inline))
#endif
static inline void IFN(max3_rows)(const REAL *CC_RESTRICT r0, int64_t W, int64_t base,
                                  int64_t lo, int64_t hi, REAL *CC_RESTRICT y,
                                  IDX_T *CC_RESTRICT idx, const int64_t S)
{
    const REAL *CC_RESTRICT r1 = r0 + W;
    const REAL *CC_RESTRICT r2 = r1 + W;
    int64_t j, j0;
    CODE_T code[CC_CHUNK];
    if (!idx) {
        j = lo;
        if (S == 2 && hi - lo >= CC_PV) {
            for (; j + CC_PV <= hi; j += CC_PV) IFN(maxs2_vec)(r0, W, 0, j, y + j, NULL, 3);
            /* (the rest: a block ending at hi, rewriting some outputs) */
            if (j < hi) IFN(maxs2_vec)(r0, W, 0, hi - CC_PV, y + hi - CC_PV, NULL, 3);
            j = hi;
        }
        for (; j < hi; ++j) {
            const int64_t c = S * j;
            REAL m = r0[c], v;
            v = r0[c + 1]; m = CC_TAKES(v, m) ? v : m;
            v = r0[c + 2]; m = CC_TAKES(v, m) ? v : m;
            v = r1[c];     m = CC_TAKES(v, m) ? v : m;
            v = r1[c + 1]; m = CC_TAKES(v, m) ? v : m;
            v = r1[c + 2]; m = CC_TAKES(v, m) ? v : m;
            v = r2[c];     m = CC_TAKES(v, m) ? v : m;
            v = r2[c + 1]; m = CC_TAKES(v, m) ? v : m;
            v = r2[c + 2]; m = CC_TAKES(v, m) ? v : m;
            y[j] = m;
        }
        return;
    }
    if (S == 2 && hi - lo >= CC_PV && W < ((int64_t)1 << 30)) {
        for (j = lo; j + CC_PV <= hi; j += CC_PV) IFN(maxs2_vec)(r0, W, base, j, y + j, idx + j, 3);
        if (j < hi) IFN(maxs2_vec)(r0, W, base, hi - CC_PV, y + hi - CC_PV, idx + hi - CC_PV, 3);
        return;
    }
    for (j0 = lo; j0 < hi; j0 += CC_CHUNK) {
        const int64_t n = CC_MIN(CC_CHUNK, hi - j0);
        REAL *CC_RESTRICT yc = y + j0;
        const REAL *CC_RESTRICT a = r0 + S * j0, *CC_RESTRICT b = r1 + S * j0;
        const REAL *CC_RESTRICT d = r2 + S * j0;
        IDX_T *CC_RESTRICT ic = idx + j0;
        for (j = 0; j < n; ++j) {
            const int64_t c = S * j;
            REAL m = a[c], v;
            CODE_T k = 0, t;
            v = a[c + 1]; t = CC_TAKES(v, m); m = t ? v : m; k = t ? 1 : k;
            v = a[c + 2]; t = CC_TAKES(v, m); m = t ? v : m; k = t ? 2 : k;
            v = b[c];     t = CC_TAKES(v, m); m = t ? v : m; k = t ? 4 : k;
            v = b[c + 1]; t = CC_TAKES(v, m); m = t ? v : m; k = t ? 5 : k;
            v = b[c + 2]; t = CC_TAKES(v, m); m = t ? v : m; k = t ? 6 : k;
            v = d[c];     t = CC_TAKES(v, m); m = t ? v : m; k = t ? 8 : k;
            v = d[c + 1]; t = CC_TAKES(v, m); m = t ? v : m; k = t ? 9 : k;
            v = d[c + 2]; t = CC_TAKES(v, m); m = t ? v : m; k = t ? 10 : k;
            yc[j] = m;
            code[j] = k;
        }
        for (j = 0; j < n; ++j)
            ic[j] = (IDX_T)(base + S * (j0 + j) + (int64_t)(code[j] & 3) +
                           (int64_t)(code[j] >> 2) * W);
    }
}

/* 3x3 / stride 2 (the networks' downsampling pools) */
CC_CLONES static void IFN(max3_row)(const REAL *CC_RESTRICT r0, int64_t W, int64_t base,
                         int64_t lo, int64_t hi, REAL *CC_RESTRICT y,
                         IDX_T *CC_RESTRICT idx)
{
    IFN(max3_rows)(r0, W, base, lo, hi, y, idx, 2);
}

/* 3x3 / stride 1 (the Inception blocks' pooling branch) */
CC_CLONES static void IFN(max3s1_row)(const REAL *CC_RESTRICT r0, int64_t W, int64_t base,
                           int64_t lo, int64_t hi, REAL *CC_RESTRICT y,
                           IDX_T *CC_RESTRICT idx)
{
    IFN(max3_rows)(r0, W, base, lo, hi, y, idx, 1);
}

/* The row kernel that takes a geometry's interior windows, if any: window
 * kfast (0: none) at stride sfast, for output rows [hlo, hhi) and columns
 * [wlo, whi). */
static void IFN(max_fast_kind)(const cc_pool_geom *g, int64_t *kfast, int64_t *sfast,
                               int64_t *hlo, int64_t *hhi, int64_t *wlo, int64_t *whi)
{
    *kfast = 0, *sfast = 2, *hlo = *hhi = *wlo = *whi = 0;
    if (!g->generic && g->SH == 2 && g->SW == 2 && g->DH == 1 && g->DW == 1 &&
        g->KH == g->KW && (g->KH == 2 || g->KH == 3)) {
        *kfast = g->KH;
        inner_range(g->H, g->OH, 2, g->PH, *kfast, hlo, hhi);
        inner_range(g->W, g->OW, 2, g->PW, *kfast, wlo, whi);
    } else if (!g->generic && g->SH == 1 && g->SW == 1 && g->DH == 1 && g->DW == 1 &&
               g->KH == 3 && g->KW == 3) {
        *kfast = 3;
        *sfast = 1;
        inner_range(g->H, g->OH, 1, g->PH, *kfast, hlo, hhi);
        inner_range(g->W, g->OW, 1, g->PW, *kfast, wlo, whi);
    }
}

/* Output rows [r0, r1) of the planes' list (row r: plane r / OH, row r % OH)
 * of a 2x2 / stride 2 max pool with every window inside its plane, rows of
 * fewer than CC_MAX2_NARROW outputs: max2_row's comparisons, in its order. */
#define CC_MAX2_NARROW 8
CC_CLONES static void IFN(max2_narrow)(const REAL *CC_RESTRICT x, const cc_pool_geom *g, int64_t r0,
                             int64_t r1, REAL *CC_RESTRICT y, IDX_T *CC_RESTRICT idx)
{
    const int64_t W = g->W, OH = g->OH, OW = g->OW, HW = g->H * g->W;
    int64_t r, j, p = r0 / OH, oh = r0 % OH;
    for (r = r0; r < r1; ++r) {
        const int64_t off = 2 * oh * W;
        const REAL *CC_RESTRICT a = x + p * HW + off, *CC_RESTRICT b = a + W;
        REAL *CC_RESTRICT yr = y + r * OW;
        IDX_T *CC_RESTRICT ir = idx ? idx + r * OW : NULL;
        for (j = 0; j < OW; ++j) {
            /* (selects of bits, no branch on the data: see FN(pick)) */
            REAL m = a[2 * j], v;
            CODE_T k = 0, t;
            v = a[2 * j + 1]; t = CC_TAKES(v, m); m = FN(pick)(t, v, m); k ^= (k ^ 1) & -t;
            v = b[2 * j];     t = CC_TAKES(v, m); m = FN(pick)(t, v, m); k ^= (k ^ 4) & -t;
            v = b[2 * j + 1]; t = CC_TAKES(v, m); m = FN(pick)(t, v, m); k ^= (k ^ 5) & -t;
            yr[j] = m;
            if (ir) ir[j] = (IDX_T)(off + 2 * j + (int64_t)(k & 3) + (int64_t)(k >> 2) * W);
        }
        if (++oh == OH) {
            oh = 0;
            ++p;
        }
    }
}

/* Output columns [0, n) of one row by the row kernel (kfast, sfast); base is
 * the flat index of the row's first window's top-left element. */
static void IFN(max_fast_row)(const REAL *CC_RESTRICT x, int64_t W, int64_t base, int64_t kfast,
                              int64_t sfast, int64_t n, REAL *CC_RESTRICT yr,
                              IDX_T *CC_RESTRICT ir)
{
    if (sfast == 1)
        IFN(max3s1_row)(x + base, W, base, 0, n, yr, ir);
    else if (kfast == 2)
        IFN(max2_row)(x + base, W, base, 0, n, yr, ir);
    else
        IFN(max3_row)(x + base, W, base, 0, n, yr, ir);
}

/* One plane of max pooling: x (H, W) -> y (OH, OW), idx (OH, OW) or NULL. */
static void IFN(max_plane)(const REAL *CC_RESTRICT x, const cc_pool_geom *g,
                          REAL *CC_RESTRICT y, IDX_T *CC_RESTRICT idx)
{
    const int64_t W = g->W, OH = g->OH, OW = g->OW;
    int64_t kfast, sfast, hlo, hhi, wlo, whi, oh, ow, arg;
    IFN(max_fast_kind)(g, &kfast, &sfast, &hlo, &hhi, &wlo, &whi);
    for (oh = 0; oh < OH; ++oh) {
        REAL *yr = y + oh * OW;
        IDX_T *ir = idx ? idx + oh * OW : NULL;
        const int fast = kfast && oh >= hlo && oh < hhi && wlo < whi;
        const int64_t a = fast ? wlo : OW, b = fast ? whi : OW;
        for (ow = 0; ow < a; ++ow) {
            yr[ow] = FN(max_at)(x, g, oh, ow, &arg);
            if (ir) ir[ow] = (IDX_T)arg;
        }
        if (fast) {
            /* flat index of the first interior window's top-left element */
            const int64_t base = (oh * sfast - g->PH) * W + sfast * a - g->PW;
            IFN(max_fast_row)(x, W, base, kfast, sfast, b - a, yr + a, ir ? ir + a : NULL);
        }
        for (ow = b; ow < OW; ++ow) {
            yr[ow] = FN(max_at)(x, g, oh, ow, &arg);
            if (ir) ir[ow] = (IDX_T)arg;
        }
    }
}

/* Rows and columns of the -inf padded copy of a plane that holds every
 * window of the row kernel (kfast, sfast). */
static int64_t IFN(max_pad_rows)(const cc_pool_geom *g, int64_t kfast, int64_t sfast)
{
    return (g->OH - 1) * sfast + kfast;
}
static int64_t IFN(max_pad_cols)(const cc_pool_geom *g, int64_t kfast, int64_t sfast)
{
    return (g->OW - 1) * sfast + kfast;
}

/* The indices of one output row of max_plane_padded, from the padded
 * plane's (wi) to the plane's (ir), and whether a maximum is -inf.  Output
 * ow's window starts at q0 + s*ow of the padded plane; its maximum lies at
 * q = wi[ow] - that, in the window's row dr = (q >= Wp) + (q >= 2 Wp)
 * (rows Wp apart; a 2x2 window's q stays below Wp + 2 <= 2 Wp); the plane's
 * index is then wi[ow] + c - dr * d, with c the row's constant and d = Wp -
 * W.  Compares, selects and adds only: vectorized (the loop with a row
 * search per output was most of a 3x3/1 pool's time with indices). */
CC_CLONES static int IFN(max_pad_remap)(const IDX_T *CC_RESTRICT wi, const REAL *CC_RESTRICT wr,
                                        int64_t OW, int64_t Wp, int64_t s, int64_t q0, int64_t c,
                                        int64_t d, IDX_T *CC_RESTRICT ir)
{
    const REAL ninf = -(REAL)INFINITY;
    int64_t ow;
    int any = 0;
    for (ow = 0; ow < OW; ++ow) {
        const int64_t v = (int64_t)wi[ow], q = v - q0 - s * ow;
        ir[ow] = (IDX_T)(v + c - (q >= Wp ? d : 0) - (q >= 2 * Wp ? d : 0));
    }
    for (ow = 0; ow < OW; ++ow) any |= wr[ow] == ninf;
    return any;
}

/* One plane whose padding puts windows at its border (the Inception blocks'
 * 3x3/1 pools: half the windows of a 7x7 map; the 3x3/2 p1 downsampling
 * pools), all through the row kernel: the plane is copied into buf with
 * -inf around it, which no real value loses to (the comparisons take a
 * strictly greater value or NaN), so the maxima are the generic loop's bits.
 * The padded plane's rows, Wp apart, are then one long row: output (oh, ow)
 * is window oh*Wp + ow of it (its top-left element at sfast times that), so
 * one call of the row kernel takes the whole plane -- the windows past each
 * row's end it also computes (Wp - OW of them a row) are dropped -- into
 * wide (and wide_idx), and the plane's outputs are picked from there.  One
 * call a row cost more than the windows themselves on 7x7 and 14x14 maps.
 * Indices come out in the padded plane's coordinates and are mapped back; a
 * window whose maximum is -inf may have pointed at the padding, so it is
 * redone by the generic loop (which points at its first element inside the
 * plane). */
static void IFN(max_plane_padded)(const REAL *CC_RESTRICT x, const cc_pool_geom *g,
                                  int64_t kfast, int64_t sfast, REAL *CC_RESTRICT buf,
                                  REAL *CC_RESTRICT wide, IDX_T *CC_RESTRICT wide_idx,
                                  REAL *CC_RESTRICT y, IDX_T *CC_RESTRICT idx)
{
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW, PH = g->PH, PW = g->PW;
    const int64_t Hp = IFN(max_pad_rows)(g, kfast, sfast), Wp = IFN(max_pad_cols)(g, kfast, sfast);
    const int64_t ncopy = CC_MAX(0, CC_MIN(W, Wp - PW));
    const REAL ninf = -(REAL)INFINITY;
    int64_t r, c, oh, ow, arg;
    for (r = 0; r < Hp; ++r) {
        REAL *CC_RESTRICT dst = buf + r * Wp;
        const int64_t h = r - PH;
        if (h < 0 || h >= H) {
            for (c = 0; c < Wp; ++c) dst[c] = ninf;
            continue;
        }
        for (c = 0; c < PW; ++c) dst[c] = ninf;
        memcpy(dst + PW, x + h * W, (size_t)ncopy * sizeof(REAL));
        for (c = PW + ncopy; c < Wp; ++c) dst[c] = ninf;
    }
    if (sfast == 1 || OW < 16) {
        IFN(max_fast_row)(buf, Wp, 0, kfast, sfast, (OH - 1) * Wp + OW, wide,
                          idx ? wide_idx : NULL);
    } else {   /* (long rows at stride 2: half the wide row's windows would be dropped) */
        for (oh = 0; oh < OH; ++oh)
            IFN(max_fast_row)(buf, Wp, oh * sfast * Wp, kfast, sfast, OW, wide + oh * Wp,
                              idx ? wide_idx + oh * Wp : NULL);
    }
    for (oh = 0; oh < OH; ++oh) {
        const REAL *CC_RESTRICT wr = wide + oh * Wp;
        const IDX_T *CC_RESTRICT wi = wide_idx + oh * Wp;
        REAL *CC_RESTRICT yr = y + oh * OW;
        IDX_T *CC_RESTRICT ir = idx ? idx + oh * OW : NULL;
        int any = 0;
        memcpy(yr, wr, (size_t)OW * sizeof(REAL));
        if (!ir) continue;
        any = IFN(max_pad_remap)(wi, wr, OW, Wp, sfast, sfast * oh * Wp,
                                 (oh * sfast - PH) * W - PW - sfast * oh * Wp, Wp - W, ir);
        if (any)
            for (ow = 0; ow < OW; ++ow)
                if (wr[ow] == ninf) {
                    yr[ow] = FN(max_at)(x, g, oh, ow, &arg);
                    ir[ow] = (IDX_T)arg;
                }
    }
}

int MAX_FWD(const REAL *x, const cc_pool_geom *g, int n_threads, REAL *y, IDX_T *idx)
{
    int64_t P, HW, OHW, i;
    if (!x || !y || n_threads < 1 || cc_pool_geom_check(g, CC_POOL_MAX) != CC_OK)
        return CC_EINVAL;
    P = g->N * g->C;
    HW = g->H * g->W;
    OHW = g->OH * g->OW;
    if (idx && HW > (int64_t)IDX_LIMIT) return CC_EINVAL;   /* a plane too large for IDX_T */
    /* (planes of at most 16 elements: a window's compares and index cost
     * several times a copy's work per byte, as in MAX_BWD; 64x512x4x4 with
     * indices 0.85 -> 0.44 ms) */
    n_threads = HW <= 16 && P * (HW + OHW) * (int64_t)sizeof(REAL) >= CC_GLOBAL_AVG_TEAM_BYTES
                    ? n_threads : cc_pool_team(n_threads, P * (HW + OHW * g->KH * g->KW / 4),
                                               sizeof(REAL));
    {
        int64_t kfast, sfast, hlo, hhi, wlo, whi;
        IFN(max_fast_kind)(g, &kfast, &sfast, &hlo, &hhi, &wlo, &whi);
        if (kfast && hlo == 0 && hhi == g->OH && wlo == 0 && whi == g->OW) {
            /* every window is interior (no padding): the planes' output rows
             * are one list, cut into tasks of about CC_MAX_ROWS_TASK outputs
             * (small planes -- LeNet's 10x10 -- would otherwise cost a task
             * and a row call or two each) */
            const int64_t R = P * g->OH, rb = CC_MAX(1, CC_MAX_ROWS_TASK / g->OW);
            const int64_t ntask = (R + rb - 1) / rb;
            if (kfast == 2 && g->OW < CC_MAX2_NARROW) {
                /* rows of a few outputs (VGG's 4x4 and 2x2 maps on 32x32
                 * inputs): the row kernel's comparisons written out here,
                 * a call a row cost more than the row */
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && ntask > 1) schedule(static)
                for (i = 0; i < ntask; ++i)
                    IFN(max2_narrow)(x, g, i * rb, CC_MIN(R, (i + 1) * rb), y, idx);
                return CC_OK;
            }
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && ntask > 1) schedule(static)
            for (i = 0; i < ntask; ++i) {
                int64_t r;
                for (r = i * rb; r < CC_MIN(R, (i + 1) * rb); ++r) {
                    const int64_t p = r / g->OH, oh = r % g->OH;
                    IFN(max_fast_row)(x + p * HW, g->W, (oh * sfast - g->PH) * g->W - g->PW, kfast,
                                      sfast, g->OW, y + r * g->OW, idx ? idx + r * g->OW : NULL);
                }
            }
            return CC_OK;
        }
        if (kfast && whi > wlo && hhi > hlo) {
            /* windows at the border: through a padded copy of each plane
             * (where the copy's indices fit IDX_T and it can be had) */
            const int64_t Hp = IFN(max_pad_rows)(g, kfast, sfast), Wp = IFN(max_pad_cols)(g, kfast, sfast);
            /* (the padded plane, and the wide row's maxima and indices) */
            const int64_t nwide = (g->OH - 1) * Wp + g->OW;
            if (Hp > 0 && Wp > 0 && Hp <= (int64_t)IDX_LIMIT / Wp && Hp * Wp <= CC_SIZE_MAX / 4) {
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && P > 1)
                {
                    /* (a thread that cannot have one runs the plane path; the
                     * indices first, an even count of them, so that both
                     * arrays are aligned for their types) */
                    const int64_t nidx = (nwide + 1) / 2 * 2;
                    IDX_T *wide_idx = (IDX_T *)malloc((size_t)nidx * sizeof(IDX_T) +
                                                      (size_t)(Hp * Wp + nwide) * sizeof(REAL));
                    REAL *buf = wide_idx ? (REAL *)(wide_idx + nidx) : NULL;
                    REAL *wide = buf ? buf + Hp * Wp : NULL;
#pragma omp for schedule(static)
                    for (i = 0; i < P; ++i) {
                        if (buf)
                            IFN(max_plane_padded)(x + i * HW, g, kfast, sfast, buf, wide, wide_idx,
                                                  y + i * OHW, idx ? idx + i * OHW : NULL);
                        else
                            IFN(max_plane)(x + i * HW, g, y + i * OHW, idx ? idx + i * OHW : NULL);
                    }
                    free(wide_idx);
                }
                return CC_OK;
            }
        }
    }
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && P > 1) schedule(static)
    for (i = 0; i < P; ++i)
        IFN(max_plane)(x + i * HW, g, y + i * OHW, idx ? idx + i * OHW : NULL);
    return CC_OK;
}

int MAX_BWD(const REAL *dy, const IDX_T *idx, int64_t N, int64_t C, int64_t H, int64_t W,
            int64_t OH, int64_t OW, int n_threads, REAL *dx)
{
    /* forward: y[o] = x[idx[o]]  =>  dx[idx[o]] += dy[o], one plane per thread */
    int64_t P, HW, OHW, i, t;
    int bad = 0;
    if (!dx || n_threads < 1 || N < 0 || C <= 0 || H <= 0 || W <= 0 || OH <= 0 || OW <= 0)
        return CC_EINVAL;
    if (!cc_prod4_ok(N, C, H, W, &t) || !cc_prod4_ok(N, C, OH, OW, &t)) return CC_EINVAL;
    if (N > 0 && (!dy || !idx)) return CC_EINVAL;
    P = N * C;
    HW = H * W;
    if (HW > (int64_t)IDX_LIMIT) return CC_EINVAL;
    OHW = OH * OW;
    /* (each output a scattered add behind a bounds check, each plane a
     * clear: on planes of at most 16 elements several times a copy's work
     * per byte, so two threads from CC_GLOBAL_AVG_TEAM_BYTES there (pool.c)
     * -- VGG's 4x4 and 2x2 maps on 32x32 inputs at batch 64, 2.5 and 0.6
     * MiB: 0.19 -> 0.045 and 0.17 -> 0.09 ms) */
    n_threads = HW <= 16 && P * (HW + OHW) * (int64_t)sizeof(REAL) >= CC_GLOBAL_AVG_TEAM_BYTES
                    ? n_threads : cc_pool_team(n_threads, P * (HW + OHW), sizeof(REAL));
    /* (planes of equal work: a static share each; one dynamic task a plane
     * cost more than a small plane -- VGG's 2x2 maps on 32x32 inputs) */
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && P > 1) schedule(static) reduction(|:bad)
    for (i = 0; i < P; ++i) {
        const REAL *CC_RESTRICT d = dy + i * OHW;
        const IDX_T *CC_RESTRICT k = idx + i * OHW;
        REAL *CC_RESTRICT out = dx + i * HW;
        int64_t o;
        if (HW < 16)   /* (tiny planes: no call a plane) */
            for (o = 0; o < HW; ++o) out[o] = 0;
        else
            memset(out, 0, (size_t)HW * sizeof(REAL));
        for (o = 0; o < OHW; ++o) {
            const int64_t j = k[o];
            if ((uint64_t)j >= (uint64_t)HW) {
                bad = 1;
                break;
            }
            out[j] += d[o];
        }
    }
    return bad ? CC_EINVAL : CC_OK;
}
