/* Reduced taps: kernel rows and columns that meet only padding.
 *
 * A kernel row kh is dead when, for every output row oh, the input row
 * oh*SH - PH + kh*DH lies in the padding (as for a 3x3, padding-1
 * convolution of a 1x1 map: only the centre tap ever meets the input; or of
 * a 2x2 map at stride 2: the first row and column never do).  Dead rows and
 * columns at either end of the kernel are cropped away and the padding
 * shortened to match, which leaves every output position's sum over the
 * live taps unchanged: the call runs with the cropped geometry (a 1x1 map
 * becomes a pointwise layer, a GEMM with a ninth of the weights), on a
 * cropped copy of the weights in the front of the workspace.  Dead taps add
 * w * 0 to every sum: nothing, unless w is Inf or NaN, which makes every
 * output of that channel NaN (crop_fwd_fix restores it).  Their weight
 * gradient is the sum of dy * 0: zero, or NaN where that channel's dy holds
 * an Inf or NaN (crop_dw_expand).  The planner applies the crop before it
 * picks a strategy, so every strategy runs the smaller problem.
 *
 * Included by conv_impl.h inside its element-type template; the shape part
 * is compiled once. */

#ifndef CC_CROP_SHAPE
#define CC_CROP_SHAPE
/* (kernels longer than this are never cropped: the search is a loop) */
#define CC_CROP_MAX_TAPS 4096

/* The live taps [*k0, *k0 + *kn) of one side and the padding *p that keeps
 * every output position's input rows; 0 where nothing is cropped or the
 * cropped side is no consistent geometry (symmetric padding). */
static int crop_side(int64_t I, int64_t O, int64_t K, int64_t S, int64_t P, int64_t D,
                     int64_t *k0, int64_t *kn, int64_t *p)
{
    int64_t first = -1, last = -1, k;
    if (K > CC_CROP_MAX_TAPS) return 0;
    for (k = 0; k < K; ++k) {
        int64_t lo, hi;
        cc_valid_range(I, O, S, k * D - P, &lo, &hi);
        if (hi > lo) {
            if (first < 0) first = k;
            last = k;
        }
    }
    if (first < 0 || (first == 0 && last == K - 1)) return 0;
    if (P - first * D < 0) return 0;
    if (cc_window_out(I, last - first + 1, S, P - first * D, D, 0) != O) return 0;
    *k0 = first;
    *kn = last - first + 1;
    *p = P - first * D;
    return 1;
}

/* Output positions, summed over the batch and weighted by the fraction of
 * taps dropped, below which the crop is not worth its pass over the weights. */
#define CC_CROP_MIN_SAVED 16

/* Whether g has dead kernel rows or columns: *gc the cropped geometry,
 * (*kh0, *kw0) its first live tap. */
static int cc_conv_crop(const cc_conv_geom *g, cc_conv_geom *gc, int64_t *kh0, int64_t *kw0)
{
    int64_t kn, p;
    int any = 0;
    *gc = *g;
    *kh0 = *kw0 = 0;
    if (crop_side(g->H, g->OH, g->KH, g->SH, g->PH, g->DH, kh0, &kn, &p)) {
        gc->KH = kn, gc->PH = p, any = 1;
    }
    if (crop_side(g->W, g->OW, g->KW, g->SW, g->PW, g->DW, kw0, &kn, &p)) {
        gc->KW = kn, gc->PW = p, any = 1;
    }
    /* The crop checks and copies every weight on each call: it pays only when
     * the products it drops are worth more than that pass (measured at batch
     * 1 on 1x1 and 2x2 maps, the pass alone cost several times the products
     * it saved). */
    if (any && (double)g->N * (double)g->OH * (double)g->OW *
                   (double)(g->KH * g->KW - gc->KH * gc->KW) <
               CC_CROP_MIN_SAVED * (double)(g->KH * g->KW))
        any = 0;
    if (!any || cc_conv_geom_check(gc) != CC_OK) {
        *gc = *g;
        *kh0 = *kw0 = 0;
        return 0;
    }
    return 1;
}

/* Workspace elements of one cropped kernel (rounded up to whole cache lines
 * of float64); the plan keeps two, the weights and their gradient. */
static int64_t cc_crop_elems(const cc_conv_geom *gc)
{
    return (gc->K * (gc->C / gc->groups) * gc->KH * gc->KW + 63) / 64 * 64;
}

/* whether tap (kh, kw) survives the crop */
static int crop_live(const cc_conv_geom *gc, int64_t kh0, int64_t kw0, int64_t kh, int64_t kw)
{
    return kh >= kh0 && kh < kh0 + gc->KH && kw >= kw0 && kw < kw0 + gc->KW;
}
#endif

/* (copies and checks of at least this many weights start a team) */
#define CC_CROP_TEAM_ELEMS 65536

/* wc (K, Cg, KHc, KWc) = the live taps of w (K, Cg, KH, KW); returns 0 when
 * every weight is finite (then no dead tap can change an output), else 1.
 * Each output channel's weights are checked while they are in cache for the
 * copy, so the weights are read from memory once. */
static int FN(crop_weights)(const REAL *w, const cc_conv_geom *g, const cc_conv_geom *gc,
                            int64_t kh0, int64_t kw0, int n_threads, REAL *wc)
{
    const int64_t Cg = g->C / g->groups, KK = g->KH * g->KW, KKc = gc->KH * gc->KW;
    int64_t k;
    int bad = 0;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) reduction(| : bad) \
    if (n_threads > 1 && g->K * Cg * KK >= CC_CROP_TEAM_ELEMS) schedule(static)
    for (k = 0; k < g->K; ++k) {
        const REAL *src = w + k * Cg * KK + kh0 * g->KW + kw0;
        REAL *dst = wc + k * Cg * KKc;
        int64_t c, i, j;
        if (!FN(all_finite)(w + k * Cg * KK, Cg * KK)) bad = 1;
        if (KKc == 1) {
            for (c = 0; c < Cg; ++c) dst[c] = src[c * KK];
            continue;
        }
        for (c = 0; c < Cg; ++c)
            for (i = 0; i < gc->KH; ++i)
                for (j = 0; j < gc->KW; ++j)
                    dst[(c * gc->KH + i) * gc->KW + j] = src[c * KK + i * g->KW + j];
    }
    return bad;
}

/* y[:, k] = NaN for every output channel k with an Inf or NaN dead tap
 * (each channel's weights are first checked as a whole, a vector pass) */
static void FN(crop_fwd_fix)(const REAL *w, const cc_conv_geom *g, const cc_conv_geom *gc,
                             int64_t kh0, int64_t kw0, int n_threads, REAL *y)
{
    const int64_t Cg = g->C / g->groups, KK = g->KH * g->KW, L = g->OH * g->OW;
    int64_t k;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) \
    if (n_threads > 1 && g->K * Cg * KK >= CC_CROP_TEAM_ELEMS) schedule(static)
    for (k = 0; k < g->K; ++k) {
        REAL z = 0;
        int64_t c, kh, kw, n, l;
        if (FN(all_finite)(w + k * Cg * KK, Cg * KK)) continue;
        for (c = 0; c < Cg; ++c)
            for (kh = 0; kh < g->KH; ++kh)
                for (kw = 0; kw < g->KW; ++kw)
                    if (!crop_live(gc, kh0, kw0, kh, kw)) z += w[(k * Cg + c) * KK + kh * g->KW + kw] * 0;
        if (z == 0) continue;
        for (n = 0; n < g->N; ++n)
            for (l = 0; l < L; ++l) y[(n * g->K + k) * L + l] = z;
    }
}

/* dw (K, Cg, KH, KW) from the cropped gradient dwc (K, Cg, KHc, KWc): the
 * dead taps get sum(dy[:, k]) * 0, i.e. 0, or NaN where dy[:, k] is not
 * all finite.  Each output channel's row is filled with that value, then the
 * live taps are stored over it while the row is in cache. */
static void FN(crop_dw_expand)(const REAL *dwc, const REAL *dy, const cc_conv_geom *g,
                               const cc_conv_geom *gc, int64_t kh0, int64_t kw0, int n_threads,
                               REAL *dw)
{
    const int64_t Cg = g->C / g->groups, L = g->OH * g->OW;
    const int64_t KK = g->KH * g->KW, KKc = gc->KH * gc->KW;
    int64_t k;
    (void)n_threads;
#pragma omp parallel for num_threads(n_threads) \
    if (n_threads > 1 && g->K * Cg * KK >= CC_CROP_TEAM_ELEMS) schedule(static)
    for (k = 0; k < g->K; ++k) {
        const REAL *src = dwc + k * Cg * KKc;
        REAL *row = dw + k * Cg * KK, *dst = row + kh0 * g->KW + kw0;
        REAL z = 0;
        int64_t c, i, j, n;
        for (n = 0; n < g->N; ++n) {
            const REAL *p = dy + (n * g->K + k) * L;
            int64_t l;
            for (l = 0; l < L; ++l) z += p[l] * 0;
        }
        if (z == 0) z = 0;   /* (+0, never -0) */
        for (i = 0; i < Cg * KK; ++i) row[i] = z;
        if (KKc == 1) {
            for (c = 0; c < Cg; ++c) dst[c * KK] = src[c];
            continue;
        }
        for (c = 0; c < Cg; ++c)
            for (i = 0; i < gc->KH; ++i)
                for (j = 0; j < gc->KW; ++j)
                    dst[c * KK + i * g->KW + j] = src[(c * gc->KH + i) * gc->KW + j];
    }
}
