/* The planner: the list of strategies in priority order, and the one place
 * where a call's strategy, kernel crop, chunk of images and workspace are
 * decided.  As in oneDNN's implementation list, each strategy declines the
 * geometries it does not handle (applies), and AUTO takes the first one
 * whose heuristic (pick) accepts the shape; a strategy asked for by name
 * runs where it applies, BATCHED elsewhere.  A depthwise layer always runs
 * DEPTHWISE.  Before choosing, dead kernel rows and columns are cropped
 * away (conv_crop_impl.h), so every strategy sees the reduced problem --
 * except one that skips the dead taps itself (`uncropped`: UNROLLED, whose
 * matrix holds only the live taps), which, where it takes the layer, takes
 * it as it is.
 *
 * Included by conv_impl.h inside its element-type template, after every
 * strategy; the shape part is compiled once. */

#ifndef CC_PLAN_SHAPE
#define CC_PLAN_SHAPE
typedef struct {
    int id;
    const char *name;
    int (*applies)(const cc_conv_geom *g);          /* can it run this shape? */
    int (*pick)(const cc_conv_geom *g, int elem_size, int backward); /* AUTO takes it? */
    int64_t (*need)(const cc_conv_geom *g, int64_t chunk);      /* workspace it runs in */
    int64_t (*workspace)(const cc_conv_geom *g, int64_t chunk); /* ... a call hands it */
    int64_t (*cap)(const cc_conv_geom *g, int64_t per);         /* most images a chunk, or NULL */
    int uncropped; /* runs the layer as it is: its own layout skips the dead taps */
} cc_conv_strategy;

/* in priority order */
static const cc_conv_strategy cc_conv_strategies[] = {
    {CC_CONV_DEPTHWISE, "depthwise", depthwise_applies, depthwise_pick, depthwise_workspace,
     depthwise_workspace, NULL, 0},
    {CC_CONV_UNROLLED, "unrolled", unrolled_applies, unrolled_pick, unr_need, unrolled_workspace,
     NULL, 1},
    {CC_CONV_WINOGRAD, "winograd", cc_conv_winograd_ok, winograd_pick, wg_workspace,
     winograd_workspace, winograd_cap, 0},
    {CC_CONV_DIRECT, "direct", cc_conv_direct_ok, direct_pick, direct_need, direct_workspace, NULL,
     0},
    {CC_CONV_REGIONS, "regions", regions_applies, regions_pick, rg_need, regions_workspace, NULL,
     0},
    {CC_CONV_BATCHED, "batched", batched_applies, batched_pick, batched_workspace,
     batched_workspace, batched_cap, 0},
    {CC_CONV_TILES, "tiles", tiles_applies, tiles_pick, tiles_workspace, tiles_workspace, NULL, 0},
};
#define CC_CONV_NLIST ((int)(sizeof(cc_conv_strategies) / sizeof(cc_conv_strategies[0])))

static const cc_conv_strategy *cc_conv_strategy_of(int id)
{
    int i;
    for (i = 0; i < CC_CONV_NLIST; ++i)
        if (cc_conv_strategies[i].id == id) return &cc_conv_strategies[i];
    return NULL;
}

/* The strategy for a shape and a request (before WINOGRAD's look at the
 * data: see the dispatcher). */
static const cc_conv_strategy *cc_conv_choose(const cc_conv_geom *g, int request, int elem_size,
                                              int backward)
{
    int i;
    for (i = 0; i < CC_CONV_NLIST; ++i) {
        const cc_conv_strategy *s = &cc_conv_strategies[i];
        if (!s->applies(g)) continue;
        if (s->id == CC_CONV_DEPTHWISE) return s;
        if (request == CC_CONV_AUTO ? s->pick(g, elem_size, backward) : request == s->id) return s;
    }
    return cc_conv_strategy_of(CC_CONV_BATCHED);
}

typedef struct {
    const cc_conv_strategy *s;
    cc_conv_geom g;       /* the geometry the strategy runs: the call's, cropped */
    int cropped;
    int64_t kh0, kw0;     /* the first live tap */
    int64_t extra;        /* workspace in front: cropped weights and their gradient */
} cc_conv_plan;

static void cc_conv_plan_make(const cc_conv_geom *g, int request, int elem_size, int backward,
                              cc_conv_plan *p)
{
    int i;
    for (i = 0; i < CC_CONV_NLIST; ++i) {
        /* a strategy that skips the dead taps itself takes the layer
         * uncropped (no pass over the weights for the crop) */
        const cc_conv_strategy *s = &cc_conv_strategies[i];
        if (s->uncropped && s->applies(g) &&
            (request == s->id || (request == CC_CONV_AUTO && s->pick(g, elem_size, backward)))) {
            p->cropped = 0;
            p->g = *g;
            p->kh0 = p->kw0 = 0;
            p->extra = 0;
            p->s = s;
            return;
        }
    }
    p->cropped = cc_conv_crop(g, &p->g, &p->kh0, &p->kw0);
    p->extra = p->cropped ? 2 * cc_crop_elems(&p->g) : 0;
    p->s = cc_conv_choose(&p->g, request, elem_size, backward);
}

/* workspace a call with this plan needs for `chunk` images (affine in
 * chunk), -1 on overflow */
static int64_t cc_conv_plan_workspace(const cc_conv_plan *p, int64_t chunk)
{
    const int64_t t = p->s->workspace(&p->g, chunk);
    if (t < 0 || t > CC_SIZE_MAX - p->extra) return -1;
    return t + p->extra;
}

/* ... for both passes of a layer (which share one buffer): the larger */
static int64_t cc_conv_layer_workspace(const cc_conv_geom *g, int request, int elem_size,
                                       int64_t chunk)
{
    cc_conv_plan f, b;
    int64_t tf, tb;
    cc_conv_plan_make(g, request, elem_size, 0, &f);
    cc_conv_plan_make(g, request, elem_size, 1, &b);
    tf = cc_conv_plan_workspace(&f, chunk);
    tb = cc_conv_plan_workspace(&b, chunk);
    return tf < 0 || tb < 0 ? -1 : CC_MAX(tf, tb);
}

int cc_conv_request_ok(int request)
{
    return request == CC_CONV_AUTO || cc_conv_strategy_of(request) != NULL;
}

int64_t cc_conv_workspace_elems(const cc_conv_geom *g, int64_t chunk, int strategy)
{
    /* (float32's choice: it needs at least as much as float64's) */
    return cc_conv_layer_workspace(g, strategy, (int)sizeof(float), chunk);
}

int cc_conv_auto_strategy(const cc_conv_geom *g, int backward)
{
    cc_conv_plan p;
    cc_conv_plan_make(g, CC_CONV_AUTO, (int)sizeof(float), backward, &p);
    return p.s->id;
}

int cc_conv_plan_query(const cc_conv_geom *g, int request, int elem_size, int backward,
                       int64_t budget, int *strategy, int *cropped, int64_t *chunk_out,
                       int64_t *work_elems)
{
    /* the workspace for as many images as `budget` elements hold (at least
     * one), halving the chunk where a size would overflow */
    cc_conv_plan p;
    int64_t fixed, per, chunk, total;
    if (!g || !cc_conv_request_ok(request) || (elem_size != 4 && elem_size != 8)) return CC_EINVAL;
    cc_conv_plan_make(g, request, elem_size, backward, &p);
    if (strategy) *strategy = p.s->id;
    if (cropped) *cropped = p.cropped;
    fixed = cc_conv_layer_workspace(g, request, elem_size, 0);
    per = cc_conv_layer_workspace(g, request, elem_size, 1);
    if (fixed < 0 || per < 0) return CC_EINVAL;
    per -= fixed;
    if (per <= 0 && fixed == 0) {
        if (chunk_out) *chunk_out = CC_MAX(g->N, 1);
        *work_elems = 0;
        return CC_OK;
    }
    chunk = per > 0 && budget > fixed ? (budget - fixed) / per : 1;
    chunk = CC_MAX(1, CC_MIN(CC_MAX(g->N, 1), chunk));
    while (chunk > 1 && cc_conv_layer_workspace(g, request, elem_size, chunk) < 0) chunk /= 2;
    total = cc_conv_layer_workspace(g, request, elem_size, chunk);
    if (total < 0) return CC_EINVAL;
    if (chunk_out) *chunk_out = chunk;
    *work_elems = total;
    return CC_OK;
}

/* Channel pairs (K*C) from which a 3x3 stride-1 forward pass runs WINOGRAD
 * from packed weights where AUTO, which transforms the weights at every
 * call, takes another strategy.  Measured at batch 1 (2 threads, against
 * what AUTO ran): 128 -> 128 on 28x28 0.70 against 0.78 ms, 256 -> 256 on
 * 13x13 0.49 against 0.77, 384 -> 384 on 13x13 0.99 against 1.41, 512 ->
 * 512 on 7x7 0.71 against 0.80; 64 -> 64 on 56x56 (4,096 pairs) 0.71
 * against 0.62.  Stride 2 stays unpacked: its tiles' products are too
 * short to pay even without the transform (0.47-0.69 against BATCHED's
 * 0.42-0.43 ms on ResNet's downsampling layers at batch 1), and so do
 * planes of one tile: a 1x1 output (512 -> 512: 0.12 against 0.07 ms) and
 * 2x2 outputs beyond CC_WG_PACKED_ONE_TILE_BATCH images (0.57 against 0.51
 * at batch 8; 0.13 against 0.20 at batch 1). */
#define CC_WG_PACKED_MIN_PAIRS 16384
#define CC_WG_PACKED_ONE_TILE_BATCH 4

/* WINOGRAD's packed form (its elements; *m its tile) where it runs faster
 * than AUTO, else 0 */
static int64_t wg_pack_elems(const cc_conv_geom *g, const cc_conv_plan *p, int *m)
{
    if (g->KH != g->KW || (g->KH != 3 && g->KH != 5) || g->SH != 1 || g->SW != 1 ||
        !cc_conv_winograd_auto(g))
        return 0;
    if (p->cropped) return 0;   /* (taps that meet only padding: a smaller kernel runs) */
    if (g->KH == 5) {
        /* 5x5 where AUTO takes WINOGRAD: its four 3x3 pieces (cc_wg5_geom),
         * transformed */
        cc_conv_geom g3;
        if (p->s->id != CC_CONV_WINOGRAD) return 0;
        cc_wg5_geom(g, 0, g->N, &g3);
        *m = cc_wg_tile(g3.OH, g3.OW);
        if (g3.K * g3.C > (CC_SIZE_MAX - 1) / WG_POINTS(*m) - WG_PAD) return 0;
        return WG_POINTS(*m) * WG_STRIDE(g3.K * g3.C) + 1;
    }
    if (((g->OH + 1) / 2) * ((g->OW + 1) / 2) == 1 &&
        (g->OH * g->OW == 1 || g->N > CC_WG_PACKED_ONE_TILE_BATCH))
        return 0;
    if (p->s->id != CC_CONV_WINOGRAD &&
        (p->s->id == CC_CONV_UNROLLED || p->s->id == CC_CONV_DEPTHWISE ||
         g->K * g->C < CC_WG_PACKED_MIN_PAIRS))
        return 0;
    *m = cc_wg_tile(g->OH, g->OW);
    if (g->K * g->C > (CC_SIZE_MAX - 1) / WG_POINTS(*m) - WG_PAD) return 0;
    /* the points' matrices, then the weights' largest magnitude (-1: not
     * tame, see wg_tame) */
    return WG_POINTS(*m) * WG_STRIDE(g->K * g->C) + 1;
}

/* Whether a layer runs from GEMM-packed weights (conv_packed_gemm_impl.h):
 * float32 on a machine with AVX-512 (the micro-kernel's 28 accumulators
 * are registers there), ungrouped, a batch of up to CC_PG_MAX_IMAGES, at
 * least CC_PG_MIN_WEIGHTS weights and a map of at least one block of
 * positions, AUTO running it through a GEMM (TILES, BATCHED, DIRECT's
 * pointwise product or WINOGRAD), with no kernel taps cropped -- and where
 * WINOGRAD would run from its packed form (wg_m its tile), only if its
 * tiles save less than CC_PG_WG_SAVING of the products: their weights are
 * 16/9 of the layer's (F(2x2)), read from memory at every call in a
 * network.  Measured at batch 1 (2 threads, weights cold / warm): 512 ->
 * 512 on 7x7 (F(2x2) saves 1.7x) 0.69-0.71 ms against WINOGRAD's 0.96-1.04
 * / 0.52-0.58 against 0.50-0.52; 256 -> 384 on 13x13 (1.9x) 0.81-0.83
 * against 0.73-0.75 / 0.75-0.77 against 0.52-0.53. */
#define CC_PG_WG_SAVING 1.8
static int pg_pick(const cc_conv_geom *g, const cc_conv_plan *p, int wg_m)
{
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
    if (!cc_wide_vectors()) return 0;
#else
    return 0;
#endif
    if (wg_m) {
        const int64_t tiles = ((g->OH + wg_m - 1) / wg_m) * ((g->OW + wg_m - 1) / wg_m);
        if (g->KH != 3 || 9.0 * g->OH * g->OW >= CC_PG_WG_SAVING * tiles * WG_POINTS(wg_m))
            return 0;
    }
    return g->groups == 1 && g->N <= CC_PG_MAX_IMAGES && g->OH * g->OW >= CC_PGP &&
           g->K * g->C * g->KH * g->KW >= CC_PG_MIN_WEIGHTS && !p->cropped &&
           (p->s->id == CC_CONV_TILES || p->s->id == CC_CONV_BATCHED ||
            p->s->id == CC_CONV_WINOGRAD ||
            (p->s->id == CC_CONV_DIRECT && cc_conv_is_pointwise(g)));
}

int64_t cc_conv_pack_elems(const cc_conv_geom *g, int elem_size, int *kind)
{
    cc_conv_plan p;
    int m = 0;
    int64_t n;
    if (kind) *kind = 0;
    if (!g || cc_conv_geom_check(g) != CC_OK || elem_size != (int)sizeof(float)) return 0;
    cc_conv_plan_make(g, CC_CONV_AUTO, elem_size, 0, &p);
    n = wg_pack_elems(g, &p, &m);
    if (pg_pick(g, &p, n ? m : 0)) {
        if (kind) *kind = CC_PACK_GEMM;
        return (g->K + CC_PGK - 1) / CC_PGK * CC_PGK * g->C * g->KH * g->KW;
    }
    if (n && kind) *kind = m;
    return n;
}

const char *cc_conv_strategy_name(int id)
{
    const cc_conv_strategy *s = cc_conv_strategy_of(id);
    return id == CC_CONV_AUTO ? "auto" : s ? s->name : "";
}
#endif

/* ------------------------------------------------------------------ */
/* the element type's half of the list: forward and backward */
typedef int (*FN(fwd_t))(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                         REAL *work, int64_t work_elems, int64_t B, int n_threads,
                         GEMM_T gemm, REAL *y);
typedef int (*FN(bwd_t))(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                         REAL *work, int64_t work_elems, int64_t B, int n_threads,
                         GEMM_T gemm, REAL *dx, REAL *dw);
static const struct {
    FN(fwd_t) fwd;
    FN(bwd_t) bwd;
} FN(conv_impl)[CC_CONV_NSTRATEGIES] = {
    [CC_CONV_TILES] = {FN(tiles_fwd), FN(tiles_bwd)},
    [CC_CONV_BATCHED] = {FN(batched_fwd), FN(batched_bwd)},
    [CC_CONV_WINOGRAD] = {FN(winograd_fwd), FN(winograd_bwd)},
    [CC_CONV_DIRECT] = {FN(direct_fwd), FN(direct_bwd)},
    [CC_CONV_DEPTHWISE] = {FN(depthwise_fwd), FN(depthwise_bwd)},
    [CC_CONV_REGIONS] = {FN(regions_fwd), FN(regions_bwd)},
    [CC_CONV_UNROLLED] = {FN(unrolled_fwd), FN(unrolled_bwd)},
};

/* WINOGRAD runs BATCHED where the inputs are not tame (see wg_tame): Inf or
 * NaN get the direct sum's exact IEEE pattern, huge magnitudes no overflow
 * in the transforms. */
static const cc_conv_strategy *FN(data_check)(const cc_conv_strategy *s, const REAL *a, int64_t na,
                                              const REAL *b, int64_t nb, const REAL *c,
                                              int64_t nc, int n_threads)
{
    double ma = 0, mb = 0, mc = 0;
    if (s->id == CC_CONV_REGIONS) {
        /* dW's dy * 0 at a dead tap is NaN for an Inf or NaN gradient
         * (backward: a holds dy; the forward checks its weights itself) */
        if (!c || FN(rg_finite)(a, na, n_threads)) return s;
        return cc_conv_strategy_of(CC_CONV_BATCHED);
    }
    if (s->id == CC_CONV_UNROLLED) {
        /* products of Wu's zeros with an Inf or NaN (forward: a holds x,
         * and the weights are checked while Wu is written; backward: dy, x
         * and w) */
        if (FN(rg_finite)(a, na, n_threads) &&
            (!c || (FN(rg_finite)(b, nb, n_threads) && FN(rg_finite)(c, nc, n_threads))))
            return s;
        return cc_conv_strategy_of(CC_CONV_BATCHED);
    }
    if (s->id != CC_CONV_WINOGRAD) return s;
    if (!FN(wg_tame)(a, na, n_threads, &ma) || !FN(wg_tame)(b, nb, n_threads, &mb) ||
        (c && !FN(wg_tame)(c, nc, n_threads, &mc)))
        return cc_conv_strategy_of(CC_CONV_BATCHED);
    /* the products the sums are made of: a.b (forward: x.w), and for the
     * backward a = dy: dy.x (dW) and dy.w (dX) */
    if (ma * mb > CC_WG_PRODUCT_MAX || (c && ma * mc > CC_WG_PRODUCT_MAX))
        return cc_conv_strategy_of(CC_CONV_BATCHED);
    return s;
}

int FN(cc_conv2d_fwd)(const REAL *x, const REAL *w, const REAL *b,
                      const cc_conv_geom *g, int strategy, REAL *work, int64_t work_elems,
                      int n_threads, GEMM_T gemm, REAL *y)
{
    cc_conv_plan p;
    const cc_conv_strategy *s;
    const REAL *wrun = w;
    int64_t B;
    int st, bad = 0;
    if (!x || !w || !y || !gemm || n_threads < 1 || cc_conv_geom_check(g) != CC_OK)
        return CC_EINVAL;
    if (!cc_conv_request_ok(strategy) || work_elems < 0) return CC_EINVAL;
    if (g->N == 0) return CC_OK;
    cc_conv_plan_make(g, strategy, (int)sizeof(REAL), 0, &p);
    n_threads = cc_conv_team_size(&p.g, n_threads);
    if (p.cropped) {
        if (!work || work_elems < p.extra) return CC_EINVAL;
        bad = FN(crop_weights)(w, g, &p.g, p.kh0, p.kw0, n_threads, work);
        wrun = work;
        work += p.extra;
        work_elems -= p.extra;
    }
    s = FN(data_check)(p.s, x, g->N * g->C * g->H * g->W, wrun,
                       g->K * (g->C / g->groups) * p.g.KH * p.g.KW, NULL, 0, n_threads);
    B = cc_conv_chunk(&p.g, s->need, s->cap, work_elems);
    if (B == 0 || (!work && s->need(&p.g, 1) > 0)) return CC_EINVAL;
    st = FN(conv_impl)[s->id].fwd(x, wrun, b, &p.g, work, work_elems, B, n_threads, gemm, y);
    if (st == CC_OK && bad) FN(crop_fwd_fix)(w, g, &p.g, p.kh0, p.kw0, n_threads, y);
    return st;
}

int FN(cc_conv2d_pack)(const REAL *w, const cc_conv_geom *g, int n_threads, REAL *packed)
{
    int m;
    const int64_t n = cc_conv_pack_elems(g, (int)sizeof(REAL), &m);
    double mw;
    if (!w || !packed || n_threads < 1 || n == 0) return CC_EINVAL;
    if (m == CC_PACK_GEMM) {
        FN(pg_pack)(w, g, packed);
        return CC_OK;
    }
    if (g->KH == 5) {
        REAL *w4 = (REAL *)malloc((size_t)(4 * g->K * g->C * 9) * sizeof(REAL));
        if (!w4) return CC_ENOMEM;
        FN(wg5_weights)(w, g, n_threads, m, w4, packed);
        free(w4);
    } else {
        FN(wg_weights_m)(w, g->K, g->C, 0, n_threads, m, packed);
    }
    packed[n - 1] = FN(wg_tame)(w, g->K * g->C * g->KH * g->KW, n_threads, &mw) ? (REAL)mw : (REAL)-1;
    return CC_OK;
}

int FN(cc_conv2d_fwd_packed)(const REAL *x, const REAL *w, const REAL *packed, const REAL *b,
                             const cc_conv_geom *g, REAL *work, int64_t work_elems,
                             int n_threads, GEMM_T gemm, REAL *y)
{
    int m;
    const int64_t n = cc_conv_pack_elems(g, (int)sizeof(REAL), &m);
    double mx;
    int64_t B;
    if (!x || !w || !packed || !y || !gemm || n_threads < 1 || n == 0 || work_elems < 0)
        return CC_EINVAL;
    if (g->N == 0) return CC_OK;
    n_threads = cc_conv_team_size(g, n_threads);
    if (m == CC_PACK_GEMM) {
        if (work_elems < pg_cols(g)) return CC_EINVAL;
        return FN(pg_fwd)(x, packed, b, g, work, n_threads, y);
    }
    /* weights or inputs that are not tame: the unpacked call, whose data
     * check runs BATCHED (the same bits as AUTO's WINOGRAD would give) */
    if (packed[n - 1] < 0 || !FN(wg_tame)(x, g->N * g->C * g->H * g->W, n_threads, &mx) ||
        mx * (double)packed[n - 1] > CC_WG_PRODUCT_MAX)
        return FN(cc_conv2d_fwd)(x, w, b, g, CC_CONV_WINOGRAD, work, work_elems, n_threads, gemm, y);
    B = cc_conv_chunk(g, wg_workspace, winograd_cap, work_elems);
    if (B == 0 || !work) return CC_EINVAL;
    return g->KH == 5 ? FN(wg5_run)(x, w, b, g, 0, packed, work, B, n_threads, gemm, y)
                      : FN(fwd_winograd)(x, w, packed, b, g, work, B, n_threads, gemm, y);
}

/* partial sums of a bias gradient (a power of 2) */
#define CC_DB_SUMS 32

int FN(cc_conv2d_bwd)(const REAL *dy, const REAL *x, const REAL *w,
                      const cc_conv_geom *g, int strategy, REAL *work, int64_t work_elems,
                      int n_threads, GEMM_T gemm, REAL *dx, REAL *dw, REAL *db)
{
    cc_conv_plan p;
    const cc_conv_strategy *s;
    const REAL *wrun = w;
    REAL *dwrun = dw;
    int64_t B, k;
    int st;
    if (!w || !gemm || n_threads < 1 || cc_conv_geom_check(g) != CC_OK) return CC_EINVAL;
    if (!cc_conv_request_ok(strategy) || work_elems < 0) return CC_EINVAL;
    if (g->N > 0 && (!dy || !x)) return CC_EINVAL;
    cc_conv_plan_make(g, strategy, (int)sizeof(REAL), 1, &p);
    n_threads = cc_conv_team_size(&p.g, n_threads);
    if (g->N == 0) {
        if (dw) for (k = 0; k < g->K * (g->C / g->groups) * g->KH * g->KW; ++k) dw[k] = 0;
        if (db) for (k = 0; k < g->K; ++k) db[k] = 0;
        return CC_OK;
    }
    if (db) {
        const int64_t L = g->OH * g->OW;
        int64_t kk;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1 && g->K > 1) schedule(static)
        for (kk = 0; kk < g->K; ++kk) {
            /* CC_DB_SUMS sums (position mod CC_DB_SUMS in each plane), added
             * in a fixed order at the end: independent vector adds instead of
             * one serial chain */
            double a[CC_DB_SUMS] = {0};
            int64_t n, l;
            int q, h;
            for (n = 0; n < g->N; ++n) {
                const REAL *pp = dy + (n * g->K + kk) * L;
                for (l = 0; l + CC_DB_SUMS <= L; l += CC_DB_SUMS)
                    for (q = 0; q < CC_DB_SUMS; ++q) a[q] += pp[l + q];
                for (; l < L; ++l) a[l % CC_DB_SUMS] += pp[l];
            }
            for (h = CC_DB_SUMS / 2; h > 0; h /= 2)
                for (q = 0; q < h; ++q) a[q] += a[q + h];
            db[kk] = (REAL)a[0];
        }
    }
    if (!dx && !dw) return CC_OK;
    if (p.cropped) {
        if (!work || work_elems < p.extra) return CC_EINVAL;
        FN(crop_weights)(w, g, &p.g, p.kh0, p.kw0, n_threads, work);
        wrun = work;
        if (dw) dwrun = work + p.extra / 2;
        work += p.extra;
        work_elems -= p.extra;
    }
    s = FN(data_check)(p.s, dy, g->N * g->K * g->OH * g->OW, x, g->N * g->C * g->H * g->W, wrun,
                       g->K * (g->C / g->groups) * p.g.KH * p.g.KW, n_threads);
    B = cc_conv_chunk(&p.g, s->need, s->cap, work_elems);
    if (B == 0 || (!work && s->need(&p.g, 1) > 0)) return CC_EINVAL;
    st = FN(conv_impl)[s->id].bwd(dy, x, wrun, &p.g, work, work_elems, B, n_threads, gemm, dx, dwrun);
    if (st == CC_OK && p.cropped && dw) FN(crop_dw_expand)(dwrun, dy, g, &p.g, p.kh0, p.kw0, n_threads, dw);
    return st;
}

#undef CC_DB_SUMS
