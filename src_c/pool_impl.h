/* Body of the pooling family, instantiated once per element type by pool.c
 * with REAL (float/double) and SFX (f32/f64) defined.
 *
 * Every kernel works on one (n, c) plane at a time and the planes are shared
 * among the OpenMP threads, so no two threads ever write one element and each
 * element is computed in an order fixed by the shapes alone.  The fast paths
 * (2x2 and 3x3 windows at stride 2) evaluate exactly the same expressions in
 * the same order as the generic loops, so they give the same bits. */

#ifndef CC_CAT
#define CC_CAT2(a, b) a##_##b
#define CC_CAT(a, b) CC_CAT2(a, b)
#define FN(name) CC_CAT(name, SFX)
#endif

/* m <- v when v > m or v is NaN (PyTorch's rule: a NaN wins, and a later NaN
 * replaces an earlier one).  Bitwise | keeps the select branch-free. */
#define CC_TAKES(v, m) (((v) > (m)) | ((v) != (v)))

/* t ? v : m (t is 0 or 1) as a select of bits, for the 2x2 row kernel:
 * its scalar tails -- all of a row shorter than a vector (4x4, 2x2 maps) --
 * then take no branch on the data (GCC left `t ? v : m` there as jumps,
 * which random data mispredicts: 64 x 512 x 4 x 4 took 2.2 ms, now 1.0),
 * and the vectorised loop stays vectorised.  (The 3x3 kernels keep the
 * branches: after the first taps of a window the maximum seldom changes,
 * and there the selects of bits measured slower, 0.17 -> 0.40 ms on
 * 512 x 14 x 14.) */
static inline REAL FN(pick)(int t, REAL v, REAL m)
{
    CODE_T a, b;
    const CODE_T k = -(CODE_T)t;
    memcpy(&a, &v, sizeof a);
    memcpy(&b, &m, sizeof b);
    a = (a & k) | (b & ~k);
    memcpy(&v, &a, sizeof v);
    return v;
}

/* ------------------------------------------------------------------ max */

/* Max over the window of output (oh, ow); *arg gets its flat index. */
static inline REAL FN(max_at)(const REAL *CC_RESTRICT x, const cc_pool_geom *g,
                              int64_t oh, int64_t ow, int64_t *arg)
{
    const int64_t W = g->W;
    int64_t hs, he, ws, we, h, w, best_i;
    REAL best = -(REAL)INFINITY;
    max_span(oh, g->SH, g->PH, g->KH, g->DH, g->H, &hs, &he);
    max_span(ow, g->SW, g->PW, g->KW, g->DW, W, &ws, &we);
    best_i = hs * W + ws;
    for (h = hs; h < he; h += g->DH)
        for (w = ws; w < we; w += g->DW) {
            /* selects, not branches: random data mispredicts every other one */
            const REAL v = x[h * W + w];
            const int t = CC_TAKES(v, best);
            best = t ? v : best;
            best_i = t ? h * W + w : best_i;
        }
    *arg = best_i;
    return best;
}

/* The rest of max pooling (row kernels, planes, forward, backward) once per
 * index type: int64_t (PyTorch's indices, the public functions) and int32_t
 * (the layers' compact indices, for planes of fewer than 2**31 elements). */
#define IDX_T int64_t
#define IDX_LIMIT INT64_MAX
#define IFN(name) CC_CAT(CC_CAT(name, i64), SFX)
#define MAX_FWD FN(cc_max_pool2d_fwd)
#define MAX_BWD FN(cc_max_pool2d_bwd)
#include "pool_max_impl.h"
#undef IDX_T
#undef IDX_LIMIT
#undef IFN
#undef MAX_FWD
#undef MAX_BWD

#define IDX_T int32_t
#define IDX_LIMIT INT32_MAX
#define IFN(name) CC_CAT(CC_CAT(name, i32), SFX)
#define MAX_FWD FN(cc_max_pool2d_i32_fwd)
#define MAX_BWD FN(cc_max_pool2d_i32_bwd)
#include "pool_max_impl.h"
#undef IDX_T
#undef IDX_LIMIT
#undef IFN
#undef MAX_FWD
#undef MAX_BWD

/* ------------------------------------------------------------- average */

static inline int64_t FN(avg_divisor)(const cc_pool_geom *g, int64_t fh, int64_t fw,
                                      int64_t vh, int64_t vw)
{
    if (g->divisor) return g->divisor;
    return g->count_include_pad ? fh * fw : vh * vw;
}

/* Average over the window of output (oh, ow). */
static inline REAL FN(avg_at)(const REAL *CC_RESTRICT x, const cc_pool_geom *g,
                              int64_t oh, int64_t ow)
{
    const int64_t W = g->W;
    int64_t hs, he, fh, ws, we, fw, h, w;
    REAL s = 0;
    avg_span(oh, g->SH, g->PH, g->KH, g->H, &hs, &he, &fh);
    avg_span(ow, g->SW, g->PW, g->KW, W, &ws, &we, &fw);
    if (hs >= he || ws >= we) return 0;
    for (h = hs; h < he; ++h)
        for (w = ws; w < we; ++w) s += x[h * W + w];
    return s / (REAL)FN(avg_divisor)(g, fh, fw, he - hs, we - ws);
}

/* Interior windows of a 2x2 / stride 2 average pool (as max2_row). */
CC_CLONES static void FN(avg2_row)(const REAL *CC_RESTRICT r0, int64_t W, int64_t lo,
                                   int64_t hi, REAL div, REAL *CC_RESTRICT y)
{
    const REAL *CC_RESTRICT r1 = r0 + W;
    int64_t j;
    for (j = lo; j < hi; ++j) {
        REAL s = 0;
        s += r0[2 * j];
        s += r0[2 * j + 1];
        s += r1[2 * j];
        s += r1[2 * j + 1];
        y[j] = s / div;
    }
}

static void FN(avg_plane)(const REAL *CC_RESTRICT x, const cc_pool_geom *g,
                          REAL *CC_RESTRICT y)
{
    const int64_t W = g->W, OH = g->OH, OW = g->OW;
    int64_t hlo = 0, hhi = 0, wlo = 0, whi = 0, oh, ow;
    const int fast2 = !g->generic && g->KH == 2 && g->KW == 2 && g->SH == 2 && g->SW == 2;
    const REAL div = (REAL)(g->divisor ? g->divisor : 4);
    if (fast2) {
        inner_range(g->H, OH, 2, g->PH, 2, &hlo, &hhi);
        inner_range(W, OW, 2, g->PW, 2, &wlo, &whi);
    }
    for (oh = 0; oh < OH; ++oh) {
        REAL *CC_RESTRICT yr = y + oh * OW;
        const int fast = fast2 && oh >= hlo && oh < hhi && wlo < whi;
        const int64_t a = fast ? wlo : OW, b = fast ? whi : OW;
        for (ow = 0; ow < a; ++ow) yr[ow] = FN(avg_at)(x, g, oh, ow);
        if (fast)
            FN(avg2_row)(x + (oh * 2 - g->PH) * W + 2 * a - g->PW, W, 0, b - a, div, yr + a);
        for (ow = b; ow < OW; ++ow) yr[ow] = FN(avg_at)(x, g, oh, ow);
    }
}

int FN(cc_avg_pool2d_fwd)(const REAL *x, const cc_pool_geom *g, int n_threads, REAL *y)
{
    int64_t P, HW, OHW, i;
    if (!x || !y || n_threads < 1 || cc_pool_geom_check(g, CC_POOL_AVG) != CC_OK)
        return CC_EINVAL;
    P = g->N * g->C;
    HW = g->H * g->W;
    OHW = g->OH * g->OW;
    n_threads = cc_pool_team(n_threads, P * (HW + OHW), sizeof(REAL));
    /* (planes of equal work: a static share of them per thread) */
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && P > 1) schedule(static)
    for (i = 0; i < P; ++i) FN(avg_plane)(x + i * HW, g, y + i * OHW);
    return CC_OK;
}

/* dx plane += dy/div over the window of output (oh, ow). */
static inline void FN(avg_scatter)(const REAL dyv, const cc_pool_geom *g, int64_t oh,
                                   int64_t ow, REAL *CC_RESTRICT dx)
{
    const int64_t W = g->W;
    int64_t hs, he, fh, ws, we, fw, h, w;
    REAL delta;
    avg_span(oh, g->SH, g->PH, g->KH, g->H, &hs, &he, &fh);
    avg_span(ow, g->SW, g->PW, g->KW, W, &ws, &we, &fw);
    if (hs >= he || ws >= we) return;
    delta = dyv / (REAL)FN(avg_divisor)(g, fh, fw, he - hs, we - ws);
    for (h = hs; h < he; ++h)
        for (w = ws; w < we; ++w) dx[h * W + w] += delta;
}

static void FN(avg_bwd_plane)(const REAL *CC_RESTRICT dy, const cc_pool_geom *g,
                              REAL *CC_RESTRICT dx)
{
    const int64_t H = g->H, W = g->W, OH = g->OH, OW = g->OW;
    int64_t oh, ow, h, w, rows = 0, cols = 0;
    if (!g->generic && g->KH == 2 && g->KW == 2 && g->SH == 2 && g->SW == 2 &&
        g->PH == 0 && g->PW == 0) {
        /* non-overlapping windows: the interior ones are written directly
         * (0 + dy/div, the same bits as the scatter), the rest is zeroed and
         * the border windows are scattered into it */
        const REAL div = (REAL)(g->divisor ? g->divisor : 4);
        rows = CC_MIN(OH, H / 2);
        cols = CC_MIN(OW, W / 2);
        for (oh = 0; oh < rows; ++oh) {
            const REAL *CC_RESTRICT d = dy + oh * OW;
            REAL *CC_RESTRICT r0 = dx + 2 * oh * W;
            REAL *CC_RESTRICT r1 = r0 + W;
            for (ow = 0; ow < cols; ++ow) {
                const REAL v = d[ow] / div;
                r0[2 * ow] = v;
                r0[2 * ow + 1] = v;
                r1[2 * ow] = v;
                r1[2 * ow + 1] = v;
            }
            for (w = 2 * cols; w < W; ++w) r0[w] = r1[w] = 0;
        }
        if (2 * rows < H) memset(dx + 2 * rows * W, 0, (size_t)((H - 2 * rows) * W) * sizeof(REAL));
    } else {
        memset(dx, 0, (size_t)(H * W) * sizeof(REAL));
    }
    for (oh = 0; oh < OH; ++oh)
        for (ow = (oh < rows ? cols : 0); ow < OW; ++ow)
            FN(avg_scatter)(dy[oh * OW + ow], g, oh, ow, dx);
    (void)h;
}

int FN(cc_avg_pool2d_bwd)(const REAL *dy, const cc_pool_geom *g, int n_threads, REAL *dx)
{
    /* forward: y[o] = sum_{i in win(o)} x[i] / div(o)  =>  dx[i] = sum_o dy[o] / div(o) */
    int64_t P, HW, OHW, i;
    if (!dy || !dx || n_threads < 1 || cc_pool_geom_check(g, CC_POOL_AVG) != CC_OK)
        return CC_EINVAL;
    P = g->N * g->C;
    HW = g->H * g->W;
    OHW = g->OH * g->OW;
    n_threads = cc_pool_team(n_threads, P * (HW + OHW), sizeof(REAL));
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && P > 1) schedule(static)
    for (i = 0; i < P; ++i) FN(avg_bwd_plane)(dy + i * OHW, g, dx + i * HW);
    return CC_OK;
}

/* ------------------------------------------------------------ adaptive */

/* Global average of planes [p0, p1): each plane of n contiguous elements is
 * summed in a fixed order, 8 interleaved partial sums (so the compiler keeps
 * them in vector registers) combined pairwise. */
CC_CLONES static void FN(global_avg)(const REAL *CC_RESTRICT x, int64_t n, int64_t p0,
                                     int64_t p1, REAL *CC_RESTRICT y)
{
    const REAL div = (REAL)n;
    int64_t p;
    for (p = p0; p < p1; ++p) {
        const REAL *CC_RESTRICT v = x + p * n;
        REAL s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t i, l;
        for (i = 0; i + 8 <= n; i += 8)
            for (l = 0; l < 8; ++l) s[l] += v[i + l];
        for (l = 0; i < n; ++i, ++l) s[l] += v[i];
        y[p] = (((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]))) / div;
    }
}

/* The windows of an adaptive pooling, computed once for all planes: output
 * row oh covers input rows [h[oh], h[OH + oh]), output column ow columns
 * [w[ow], w[OW + ow]) (adaptive_span).  One block (free *h); NULL if none. */
static int64_t *FN(adaptive_spans)(int64_t H, int64_t OH, int64_t W, int64_t OW, int64_t **w)
{
    int64_t *h = (int64_t *)malloc(sizeof(int64_t) * (size_t)(2 * (OH + OW))), o;
    if (!h) return NULL;
    *w = h + 2 * OH;
    for (o = 0; o < OH; ++o) adaptive_span(o, H, OH, h + o, h + OH + o);
    for (o = 0; o < OW; ++o) adaptive_span(o, W, OW, *w + o, *w + OW + o);
    return h;
}

static void FN(adaptive_plane)(const REAL *CC_RESTRICT x, int64_t W, int64_t OH, int64_t OW,
                               const int64_t *hsp, const int64_t *wsp, REAL *CC_RESTRICT y)
{
    int64_t oh, ow, h, w;
    if (hsp[2 * OH - 1] == 1 && wsp[2 * OW - 1] == 1) {   /* (H = W = 1) */
        /* a 1x1 plane (VGG's 7x7 pooling of a 32x32 input): every window is
         * that element (0 + x, as the sum below gives it: -0 becomes +0) */
        const REAL v = x[0] + (REAL)0;
        for (h = 0; h < OH * OW; ++h) y[h] = v;
        return;
    }
    for (oh = 0; oh < OH; ++oh) {
        const int64_t hs = hsp[oh], he = hsp[OH + oh];
        for (ow = 0; ow < OW; ++ow) {
            const int64_t ws = wsp[ow], we = wsp[OW + ow];
            REAL s = 0;
            for (h = hs; h < he; ++h)
                for (w = ws; w < we; ++w) s += x[h * W + w];
            y[oh * OW + ow] = s / (REAL)((he - hs) * (we - ws));
        }
    }
}

int FN(cc_adaptive_avg_pool2d_fwd)(const REAL *x, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t OH, int64_t OW, int n_threads,
                                   REAL *y)
{
    int64_t P, i, *hsp, *wsp;
    if (n_threads < 1 || adaptive_check(N, C, H, W, OH, OW) != CC_OK) return CC_EINVAL;
    if (N > 0 && (!x || !y)) return CC_EINVAL;
    P = N * C;
    if (OH == 1 && OW == 1) {
        /* global average: planes in blocks of a fixed size.  Each plane's
         * sum ends in a reduction across lanes, so the work per byte is
         * several times a copy's: two threads from CC_GLOBAL_AVG_TEAM_BYTES
         * (ResNet-50's 8 x 2048 x 7 x 7 input, 3 MiB: 0.067 ms on one
         * thread, below PyTorch's) */
        const int64_t B = 64, nb = (P + B - 1) / B;
        n_threads = P * H * W * (int64_t)sizeof(REAL) < CC_GLOBAL_AVG_TEAM_BYTES ? 1 : n_threads;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && nb > 1) schedule(static)
        for (i = 0; i < nb; ++i) FN(global_avg)(x, H * W, i * B, CC_MIN(P, i * B + B), y);
        return CC_OK;
    }
    n_threads = cc_pool_team(n_threads, P * (H * W + OH * OW), sizeof(REAL));
    /* (planes of a few outputs each, e.g. 1x1 -> 7x7: a static share of
     * planes per thread; one dynamic task a plane cost more than the plane) */
    if (!(hsp = FN(adaptive_spans)(H, OH, W, OW, &wsp))) return CC_ENOMEM;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && P > 1) schedule(static)
    for (i = 0; i < P; ++i) FN(adaptive_plane)(x + i * H * W, W, OH, OW, hsp, wsp, y + i * OH * OW);
    free(hsp);
    return CC_OK;
}

static void FN(adaptive_bwd_plane)(const REAL *CC_RESTRICT dy, int64_t H, int64_t W,
                                   int64_t OH, int64_t OW, const int64_t *hsp,
                                   const int64_t *wsp, REAL *CC_RESTRICT dx)
{
    int64_t oh, ow, h, w;
    if (OH == 1 && OW == 1) {
        const REAL v = dy[0] / (REAL)(H * W);
        for (h = 0; h < H * W; ++h) dx[h] = v;
        return;
    }
    if (H == 1 && W == 1) {
        /* every window is the one element: its gradient sums dy in output
         * order (dy / 1 is dy) */
        REAL s = 0;
        for (h = 0; h < OH * OW; ++h) s += dy[h];
        dx[0] = s;
        return;
    }
    memset(dx, 0, (size_t)(H * W) * sizeof(REAL));
    for (oh = 0; oh < OH; ++oh) {
        const int64_t hs = hsp[oh], he = hsp[OH + oh];
        for (ow = 0; ow < OW; ++ow) {
            const int64_t ws = wsp[ow], we = wsp[OW + ow];
            const REAL delta = dy[oh * OW + ow] / (REAL)((he - hs) * (we - ws));
            for (h = hs; h < he; ++h)
                for (w = ws; w < we; ++w) dx[h * W + w] += delta;
        }
    }
}

int FN(cc_adaptive_avg_pool2d_bwd)(const REAL *dy, int64_t N, int64_t C, int64_t H,
                                   int64_t W, int64_t OH, int64_t OW, int n_threads,
                                   REAL *dx)
{
    /* forward: y[o] = mean of x over win(o)  =>  dx[i] = sum_{o : i in win(o)} dy[o] / |win(o)| */
    int64_t P, i, *hsp, *wsp;
    if (n_threads < 1 || adaptive_check(N, C, H, W, OH, OW) != CC_OK) return CC_EINVAL;
    if (N > 0 && (!dy || !dx)) return CC_EINVAL;
    P = N * C;
    n_threads = cc_pool_team(n_threads, P * (H * W + OH * OW), sizeof(REAL));
    if (!(hsp = FN(adaptive_spans)(H, OH, W, OW, &wsp))) return CC_ENOMEM;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && P > 1) schedule(static)
    for (i = 0; i < P; ++i)
        FN(adaptive_bwd_plane)(dy + i * OH * OW, H, W, OH, OW, hsp, wsp, dx + i * H * W);
    free(hsp);
    return CC_OK;
}
