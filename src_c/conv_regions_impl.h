/* Strategy REGIONS: small maps, where the padding is much of every window.
 *
 * A 3x3, padding-1 convolution of a 4x4 map meets the padding in 31 % of
 * its window taps (2x2: 56 %, 7x7: 18 %); im2col writes those zeros and the
 * GEMM multiplies them.  Here each side of the output is cut into runs of
 * positions that see the same live taps (the border positions and the
 * interior), and the plane into the regions those runs make: in a region
 * every position sees the same rectangle of taps and none of them meets the
 * padding, so the region is a convolution without padding by a cropped
 * kernel -- one GEMM over the columns of its live taps only.  Every product
 * of a live tap is made and no other: the sums of the direct convolution,
 * added in another order.
 *
 * Layout: the weights copied tap-major, Wt (K, KH, KW, C), so a region's
 * taps of one kernel row are one block of contiguous columns (its GEMM is
 * one call per kernel row, accumulating); a region's columns have rows
 * (kh, kw, c) over its taps and positions (image, oh, ow) over the chunk,
 * and its GEMM output T (K, positions).  Tiles are fixed by the shape, and
 * every output element is reduced by one tile in a fixed order of regions
 * and kernel rows, so results do not depend on the thread count.
 *
 * A dead tap adds w * 0, which is nothing unless w (forward) or, for dW,
 * dy (backward) holds an Inf or NaN: then the sums must be NaN as the
 * direct ones are, and BATCHED runs instead (the forward sees it while it
 * copies the weights, the dispatcher checks dy: rg_finite).
 *
 * Included by conv_impl.h inside its element-type template; the shape part
 * (the regions, applies? AUTO picks it? workspace) is compiled once. */

#ifndef CC_REGIONS_SHAPE
#define CC_REGIONS_SHAPE
/* runs per side, and the longest side looked at (on longer sides the
 * padding is a small part of the work anyway) */
#define CC_RG_MAX_RUNS 8
#define CC_RG_MAX_SIDE 64
/* GEMM tiles: positions (a region's whole chunk up to CC_LSPLIT_RG) and
 * output channels */
#define CC_LSPLIT_RG 2048
#define CC_LBLOCK_RG 1024
#define CC_KBLOCK_RG 256

typedef struct {
    int64_t oh0, oh1, ow0, ow1; /* output positions [oh0, oh1) x [ow0, ow1) */
    int64_t kh0, kh1, kw0, kw1; /* their live taps */
    int64_t area, taps;         /* positions (one image), live taps */
} cc_rg_region;

typedef struct {
    int n;
    int64_t live; /* live (tap, position) pairs of one image and channel */
    cc_rg_region r[CC_RG_MAX_RUNS * CC_RG_MAX_RUNS];
} cc_rg_map;

typedef struct {
    int64_t o0, o1, k0, k1;
} cc_rg_run;

/* The runs of one side: consecutive outputs with the same live taps
 * [k0, k1) (possibly none); 0 where there are more than CC_RG_MAX_RUNS. */
static int rg_side(int64_t I, int64_t O, int64_t K, int64_t S, int64_t P, int64_t D,
                   cc_rg_run *run)
{
    int n = 0;
    int64_t o;
    for (o = 0; o < O; ++o) {
        const int64_t base = o * S - P; /* the input position of tap 0 */
        int64_t lo = base >= 0 ? 0 : cc_ceil_div(-base, D);
        int64_t hi = I - base <= 0 ? 0 : cc_ceil_div(I - base, D);
        lo = CC_MIN(lo, K);
        hi = CC_MAX(lo, CC_MIN(hi, K));
        if (n > 0 && run[n - 1].k0 == lo && run[n - 1].k1 == hi) {
            run[n - 1].o1 = o + 1;
            continue;
        }
        if (n == CC_RG_MAX_RUNS) return 0;
        run[n].o0 = o, run[n].o1 = o + 1, run[n].k0 = lo, run[n].k1 = hi;
        ++n;
    }
    return n;
}

/* The regions of g, in the order their sums are taken; 0 where g has too
 * many (or is no single-group layer). */
static int rg_map(const cc_conv_geom *g, cc_rg_map *m)
{
    cc_rg_run rh[CC_RG_MAX_RUNS], rw[CC_RG_MAX_RUNS];
    int nh, nw, i, j;
    if (g->groups != 1 || g->OH > CC_RG_MAX_SIDE || g->OW > CC_RG_MAX_SIDE) return 0;
    nh = rg_side(g->H, g->OH, g->KH, g->SH, g->PH, g->DH, rh);
    nw = rg_side(g->W, g->OW, g->KW, g->SW, g->PW, g->DW, rw);
    if (!nh || !nw) return 0;
    m->n = 0;
    m->live = 0;
    for (i = 0; i < nh; ++i)
        for (j = 0; j < nw; ++j) {
            cc_rg_region *r = &m->r[m->n++];
            r->oh0 = rh[i].o0, r->oh1 = rh[i].o1, r->kh0 = rh[i].k0, r->kh1 = rh[i].k1;
            r->ow0 = rw[j].o0, r->ow1 = rw[j].o1, r->kw0 = rw[j].k0, r->kw1 = rw[j].k1;
            r->area = (r->oh1 - r->oh0) * (r->ow1 - r->ow0);
            r->taps = (r->kh1 - r->kh0) * (r->kw1 - r->kw0);
            m->live += r->area * r->taps;
        }
    return 1;
}

/* It runs wherever some position sees a dead tap (elsewhere it would be
 * BATCHED without the padding, nothing gained). */
static int regions_applies(const cc_conv_geom *g)
{
    cc_rg_map m;
    return rg_map(g, &m) && m.live < g->KH * g->KW * g->OH * g->OW;
}

/* AUTO's rule: the forward pass at stride 1, where at least a quarter of the window
 * taps are dead, from 16 input channels (each GEMM reduces over C) and
 * 256 positions in all.  Measured (each side alone, 2 threads, against
 * BATCHED with its columns from padded planes): 1.2-1.4x faster forward on
 * 2x2 and 4x4 maps at batch 64 with 256-512 channels, 0.7-1.0x at batch 8;
 * the backward pass 0.65-1.07x (its dW is a GEMM per tap), and stride 2
 * (2x2 outputs: four regions of short GEMMs) 0.6-0.8x, never picked.
 * For float32 WINOGRAD comes first in the list where it applies. */
#define CC_RG_MIN_DEAD 0.25
#define CC_RG_MIN_C 16
#define CC_RG_MIN_POSITIONS 256
static int regions_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    cc_rg_map m;
    double total;
    (void)elem_size;
    /* (5x5 on 7x7 maps, GoogLeNet's 32 and 48 -> 128 at batch 8, float32:
     * 1.25-1.3x slower than BATCHED) */
    if (g->KH * g->KW > 9) return 0;
    if (backward || g->SH != 1 || g->SW != 1 || g->C < CC_RG_MIN_C ||
        g->N * g->OH * g->OW < CC_RG_MIN_POSITIONS || !rg_map(g, &m))
        return 0;
    total = (double)(g->KH * g->KW) * (double)(g->OH * g->OW);
    return (double)m.live <= (1.0 - CC_RG_MIN_DEAD) * total;
}

/* Fixed: Wt and its gradient (K C KH KW each); per image: the live columns
 * (C live) and T (K L).  The GEMM sizes are 32-bit: positions of a chunk. */
static int64_t rg_need(const cc_conv_geom *g, int64_t chunk)
{
    cc_rg_map m;
    int64_t wsz, cols, t, per;
    if (!rg_map(g, &m)) return -1;
    if (!cc_prod4_ok(2, g->K, g->C, g->KH * g->KW, &wsz)) return -1;
    if (!cc_prod4_ok(chunk, g->C, m.live, 1, &cols) || !cc_prod4_ok(chunk, g->K, g->OH, g->OW, &t))
        return -1;
    if (chunk * g->OH * g->OW > INT_MAX || g->C * g->KH * g->KW > INT_MAX) return -1;
    if (cols > CC_SIZE_MAX - t) return -1;
    per = cols + t;
    return per > CC_SIZE_MAX - wsz ? -1 : per + wsz;
}

/* what a call hands it: room for its own run and for BATCHED's, which it
 * falls back to where a dead tap must give NaN (the larger fixed part plus
 * the larger per-image part) */
static int64_t regions_workspace(const cc_conv_geom *g, int64_t chunk)
{
    return batched_or(g, chunk, rg_need);
}

/* Where each region's columns and T start for nb images, and the prefix
 * sums of its GEMM tiles that map a flat tile number to its region. */
typedef struct {
    int64_t col[CC_RG_MAX_RUNS * CC_RG_MAX_RUNS + 1]; /* column offsets */
    int64_t t[CC_RG_MAX_RUNS * CC_RG_MAX_RUNS + 1];   /* T offsets */
    int64_t tiles[CC_RG_MAX_RUNS * CC_RG_MAX_RUNS + 1]; /* prefix of GEMM tiles */
    int64_t pbs[CC_RG_MAX_RUNS * CC_RG_MAX_RUNS];       /* position block of each */
} cc_rg_layout;

static void rg_layout(const cc_conv_geom *g, const cc_rg_map *m, int64_t nb, cc_rg_layout *o)
{
    const int64_t nkb = cc_nblocks(g->K, CC_KBLOCK_RG, CC_KBLOCK_RG);
    int i;
    o->col[0] = o->t[0] = o->tiles[0] = 0;
    for (i = 0; i < m->n; ++i) {
        const cc_rg_region *r = &m->r[i];
        const int64_t P = nb * r->area;
        o->pbs[i] = cc_blocksize(P, CC_LSPLIT_RG, CC_LBLOCK_RG);
        o->col[i + 1] = o->col[i] + g->C * r->taps * P;
        o->t[i + 1] = o->t[i] + g->K * P;
        o->tiles[i + 1] = o->tiles[i] + cc_nblocks(P, CC_LSPLIT_RG, CC_LBLOCK_RG) * nkb;
    }
}

/* the entry of a prefix-sum array p[0..n] holding index i: p[r] <= i < p[r+1] */
static int rg_find(const int64_t *p, int n, int64_t i)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (p[mid] <= i) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}
#endif

/* Whether every value is finite. */
static int FN(rg_finite)(const REAL *p, int64_t n, int n_threads)
{
    double mx;
    return FN(finite_max)(p, n, n_threads, &mx);   /* (winograd_impl.h) */
}

/* w (K, C, KH, KW) -> Wt (K, KH, KW, C); whether every weight is finite */
static int FN(rg_weights)(const REAL *w, const cc_conv_geom *g, int n_threads, REAL *Wt)
{
    const int64_t C = g->C, T = g->KH * g->KW;
    REAL z = 0;
    int64_t kt;
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1) schedule(static) reduction(+ : z)
    for (kt = 0; kt < g->K * T; ++kt) {
        const int64_t k = kt / T, t = kt % T;
        const REAL *src = w + k * C * T + t;
        REAL *dst = Wt + kt * C;
        int64_t c;
        for (c = 0; c < C; ++c) {
            dst[c] = src[c * T];
            z += dst[c] * 0;
        }
    }
    return z == 0;
}

/* The columns of channel c of image n (of nb), every region's rows of
 * that channel: row (kh, kw, c) of a region, positions (image, oh, ow). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-loop-distribute-patterns")))
#endif
static void FN(rg_im2col_plane)(const REAL *CC_RESTRICT plane, const cc_conv_geom *g,
                                const cc_rg_map *m, const cc_rg_layout *o, int64_t c, int64_t n,
                                int64_t nb, REAL *CC_RESTRICT cols)
{
    const int64_t C = g->C, SW = g->SW;
    int ri;
    for (ri = 0; ri < m->n; ++ri) {
        const cc_rg_region *r = &m->r[ri];
        const int64_t P = nb * r->area, kwn = r->kw1 - r->kw0, aw = r->ow1 - r->ow0;
        int64_t kh, kw, oh, j;
        for (kh = r->kh0; kh < r->kh1; ++kh)
            for (kw = r->kw0; kw < r->kw1; ++kw) {
                const int64_t q = ((kh - r->kh0) * kwn + (kw - r->kw0)) * C + c;
                const int64_t woff = r->ow0 * SW - g->PW + kw * g->DW;
                REAL *dst = cols + o->col[ri] + q * P + n * r->area;
                for (oh = r->oh0; oh < r->oh1; ++oh, dst += aw) {
                    const REAL *src = plane + (oh * g->SH - g->PH + kh * g->DH) * g->W + woff;
                    if (SW == 1)
                        for (j = 0; j < aw; ++j) dst[j] = src[j];
                    else
                        for (j = 0; j < aw; ++j) dst[j] = src[j * SW];
                }
            }
    }
}

static int FN(fwd_regions)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                           REAL *work, int64_t work_elems, int64_t B, int n_threads, GEMM_T gemm,
                           REAL *y)
{
    const int64_t K = g->K, C = g->C, CKK = C * g->KH * g->KW, L = g->OH * g->OW;
    const int64_t nkb = cc_nblocks(K, CC_KBLOCK_RG, CC_KBLOCK_RG);
    const int64_t kbs = cc_blocksize(K, CC_KBLOCK_RG, CC_KBLOCK_RG);
    REAL *Wt = work, *cols = work + 2 * K * CKK;
    cc_rg_map m;
    cc_rg_layout o;
    int64_t n0;
    if (!rg_map(g, &m)) return CC_EINVAL;
    if (!FN(rg_weights)(w, g, n_threads, Wt)) {
        /* an Inf or NaN weight: its dead taps make NaN, as BATCHED's do */
        const int64_t Bb = cc_conv_chunk(g, batched_workspace, NULL, work_elems);
        if (Bb < 1) return CC_EINVAL;
        return FN(fwd_batched)(x, w, b, g, work, Bb, n_threads, gemm, y);
    }
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        REAL *T;
        int64_t i;
        rg_layout(g, &m, nb, &o);
        T = cols + o.col[m.n];
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
#pragma omp for schedule(static)
            for (i = 0; i < nb * C; ++i) {
                const int64_t c = i / nb, n = i % nb;
                FN(rg_im2col_plane)(x + ((n0 + n) * C + c) * g->H * g->W, g, &m, &o, c, n, nb, cols);
            }
#pragma omp for schedule(dynamic, 1)
            for (i = 0; i < o.tiles[m.n]; ++i) {
                const int ri = rg_find(o.tiles, m.n, i);
                const cc_rg_region *r = &m.r[ri];
                const int64_t j = i - o.tiles[ri], kb = j % nkb, pb = j / nkb;
                const int64_t P = nb * r->area, p0 = pb * o.pbs[ri], k0 = kb * kbs;
                const int mm = (int)CC_MIN(o.pbs[ri], P - p0), nn = (int)CC_MIN(kbs, K - k0);
                const int kk = (int)((r->kw1 - r->kw0) * C), lda = (int)P, ldb = (int)CKK, ldc = (int)P;
                REAL *t = T + o.t[ri] + k0 * P + p0;
                int64_t kh;
                if (r->taps == 0) {
                    int64_t a, e;
                    for (a = 0; a < nn; ++a)
                        for (e = 0; e < mm; ++e) t[a * P + e] = 0;
                    continue;
                }
                for (kh = r->kh0; kh < r->kh1; ++kh) {
                    const REAL one = 1, beta = kh == r->kh0 ? 0 : 1;
                    gemm("N", "N", &mm, &nn, &kk, &one, cols + o.col[ri] + (kh - r->kh0) * kk * P + p0,
                         &lda, Wt + k0 * CKK + (kh * g->KW + r->kw0) * C, &ldb, &beta, t, &ldc);
                }
            }
#pragma omp for schedule(static)
            for (i = 0; i < nb * K; ++i) {
                const int64_t n = i / K, k = i % K;
                const REAL bk = b ? b[k] : 0;
                REAL *dst = y + ((n0 + n) * K + k) * L;
                int ri;
                for (ri = 0; ri < m.n; ++ri) {
                    const cc_rg_region *r = &m.r[ri];
                    const REAL *src = T + o.t[ri] + k * nb * r->area + n * r->area;
                    const int64_t aw = r->ow1 - r->ow0;
                    int64_t oh, ow;
                    for (oh = r->oh0; oh < r->oh1; ++oh, src += aw)
                        for (ow = r->ow0; ow < r->ow1; ++ow)
                            dst[oh * g->OW + ow] = src[ow - r->ow0] + bk;
                }
            }
        }
    }
    return CC_OK;
}

static int FN(bwd_regions)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                           REAL *work, int64_t B, int n_threads, GEMM_T gemm, REAL *dx, REAL *dw)
{
    const int64_t K = g->K, C = g->C, KHW = g->KH * g->KW, CKK = C * KHW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t nkb = cc_nblocks(K, CC_KBLOCK_RG, CC_KBLOCK_RG);
    const int64_t kbs = cc_blocksize(K, CC_KBLOCK_RG, CC_KBLOCK_RG);
    const int64_t ncb = cc_nblocks(C, CC_CBLOCK, CC_CBLOCK), cbs = cc_blocksize(C, CC_CBLOCK, CC_CBLOCK);
    REAL *Wt = work, *dWt = work + K * CKK, *cols = work + 2 * K * CKK;
    cc_rg_map m;
    cc_rg_layout o;
    int64_t n0, i;
    if (!rg_map(g, &m)) return CC_EINVAL;
    if (dx) FN(rg_weights)(w, g, n_threads, Wt);
    for (n0 = 0; n0 < g->N; n0 += B) {
        const int64_t nb = CC_MIN(B, g->N - n0);
        /* dX tiles: (region, kernel row, position block, row block) */
        int64_t dxt[CC_RG_MAX_RUNS * CC_RG_MAX_RUNS + 1];
        REAL *T;
        int ri;
        rg_layout(g, &m, nb, &o);
        T = cols + o.col[m.n];
        dxt[0] = 0;
        for (ri = 0; ri < m.n; ++ri) {
            const cc_rg_region *r = &m.r[ri];
            const int64_t P = nb * r->area, rk = (r->kw1 - r->kw0) * C;
            dxt[ri + 1] = dxt[ri] + (r->taps == 0 ? 0 : r->kh1 - r->kh0) * cc_nblocks(P, CC_LSPLIT_RG, CC_LBLOCK_RG) *
                                        cc_nblocks(rk, CC_CBLOCK, CC_CBLOCK);
        }
#pragma omp parallel num_threads(n_threads) if (n_threads > 1)
        {
            /* T: dy regrouped by region */
#pragma omp for schedule(static)
            for (i = 0; i < nb * K; ++i) {
                const int64_t n = i / K, k = i % K;
                const REAL *src = dy + ((n0 + n) * K + k) * L;
                int rj;
                for (rj = 0; rj < m.n; ++rj) {
                    const cc_rg_region *r = &m.r[rj];
                    REAL *dst = T + o.t[rj] + k * nb * r->area + n * r->area;
                    const int64_t aw = r->ow1 - r->ow0;
                    int64_t oh, ow;
                    for (oh = r->oh0; oh < r->oh1; ++oh, dst += aw)
                        for (ow = r->ow0; ow < r->ow1; ++ow) dst[ow - r->ow0] = src[oh * g->OW + ow];
                }
            }
            if (dw) {
#pragma omp for schedule(static)
                for (i = 0; i < nb * C; ++i) {
                    const int64_t c = i / nb, n = i % nb;
                    FN(rg_im2col_plane)(x + ((n0 + n) * C + c) * HW, g, &m, &o, c, n, nb, cols);
                }
                /* dWtᵀ block (channels of one tap x output channels) += the
                 * regions' columns of that tap . Tᵀ, regions in order */
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < KHW * ncb * nkb; ++i) {
                    const int64_t kb = i % nkb, cb = (i / nkb) % ncb, tap = i / (nkb * ncb);
                    const int64_t kh = tap / g->KW, kw = tap % g->KW, c0 = cb * cbs, k0 = kb * kbs;
                    const int mm = (int)CC_MIN(cbs, C - c0), nn = (int)CC_MIN(kbs, K - k0);
                    const int ldc = (int)CKK;
                    REAL *dst = dWt + k0 * CKK + tap * C + c0;
                    int first = 1, rj;
                    for (rj = 0; rj < m.n; ++rj) {
                        const cc_rg_region *r = &m.r[rj];
                        const int64_t P = nb * r->area;
                        const int kk = (int)P, ld = (int)P;
                        const REAL one = 1, beta = first && n0 == 0 ? 0 : 1;
                        int64_t qr;
                        if (P == 0 || kh < r->kh0 || kh >= r->kh1 || kw < r->kw0 || kw >= r->kw1) continue;
                        qr = ((kh - r->kh0) * (r->kw1 - r->kw0) + (kw - r->kw0)) * C + c0;
                        gemm("T", "N", &mm, &nn, &kk, &one, cols + o.col[rj] + qr * P, &ld,
                             T + o.t[rj] + k0 * P, &ld, &beta, dst, &ldc);
                        first = 0;
                    }
                    if (first && n0 == 0) {   /* a tap dead everywhere */
                        int64_t a, e;
                        for (a = 0; a < nn; ++a)
                            for (e = 0; e < mm; ++e) dst[a * CKK + e] = 0;
                    }
                }
            }
            if (dx) {
                /* dcols (the columns' buffer, free now) = Wtᵀ . T, region by
                 * region and kernel row by kernel row */
#pragma omp for schedule(dynamic, 1)
                for (i = 0; i < dxt[m.n]; ++i) {
                    const int rj = rg_find(dxt, m.n, i);
                    const cc_rg_region *r = &m.r[rj];
                    const int64_t P = nb * r->area, rk = (r->kw1 - r->kw0) * C;
                    const int64_t nrb = cc_nblocks(rk, CC_CBLOCK, CC_CBLOCK);
                    const int64_t rbs = cc_blocksize(rk, CC_CBLOCK, CC_CBLOCK);
                    const int64_t npb = cc_nblocks(P, CC_LSPLIT_RG, CC_LBLOCK_RG);
                    const int64_t j = i - dxt[rj], rb = j % nrb, pb = (j / nrb) % npb;
                    const int64_t kh = r->kh0 + j / (nrb * npb), p0 = pb * o.pbs[rj], r0 = rb * rbs;
                    const int mm = (int)CC_MIN(o.pbs[rj], P - p0), nn = (int)CC_MIN(rbs, rk - r0);
                    const int kk = (int)K, lda = (int)P, ldb = (int)CKK, ldc = (int)P;
                    const REAL one = 1, zero = 0;
                    gemm("N", "T", &mm, &nn, &kk, &one, T + o.t[rj] + p0, &lda,
                         Wt + (kh * g->KW + r->kw0) * C + r0, &ldb, &zero,
                         cols + o.col[rj] + ((kh - r->kh0) * rk + r0) * P + p0, &ldc);
                }
                /* col2im: each plane the sum of its entries, regions, taps
                 * and positions in order */
#pragma omp for schedule(static)
                for (i = 0; i < nb * C; ++i) {
                    const int64_t n = i / C, c = i % C;
                    REAL *plane = dx + ((n0 + n) * C + c) * HW;
                    int64_t e;
                    int rj;
                    for (e = 0; e < HW; ++e) plane[e] = 0;
                    for (rj = 0; rj < m.n; ++rj) {
                        const cc_rg_region *r = &m.r[rj];
                        const int64_t P = nb * r->area, kwn = r->kw1 - r->kw0, aw = r->ow1 - r->ow0;
                        int64_t kh, kw, oh, ow;
                        for (kh = r->kh0; kh < r->kh1; ++kh)
                            for (kw = r->kw0; kw < r->kw1; ++kw) {
                                const int64_t q = ((kh - r->kh0) * kwn + (kw - r->kw0)) * C + c;
                                const REAL *src = cols + o.col[rj] + q * P + n * r->area;
                                const int64_t woff = r->ow0 * g->SW - g->PW + kw * g->DW;
                                for (oh = r->oh0; oh < r->oh1; ++oh, src += aw) {
                                    REAL *d = plane + (oh * g->SH - g->PH + kh * g->DH) * g->W + woff;
                                    for (ow = 0; ow < aw; ++ow) d[ow * g->SW] += src[ow];
                                }
                            }
                    }
                }
            }
        }
    }
    if (dw) {
        /* dWt (K, KH, KW, C) -> dw (K, C, KH, KW) */
#pragma omp parallel for num_threads(n_threads) if (n_threads > 1) schedule(static)
        for (i = 0; i < K * C; ++i) {
            const int64_t k = i / C, c = i % C;
            int64_t t;
            for (t = 0; t < KHW; ++t) dw[i * KHW + t] = dWt[(k * KHW + t) * C + c];
        }
    }
    return CC_OK;
}

/* the strategy interface */
static int FN(regions_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                           REAL *work, int64_t work_elems, int64_t B, int n_threads,
                           GEMM_T gemm, REAL *y)
{
    return FN(fwd_regions)(x, w, b, g, work, work_elems, B, n_threads, gemm, y);
}

static int FN(regions_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                           REAL *work, int64_t work_elems, int64_t B, int n_threads,
                           GEMM_T gemm, REAL *dx, REAL *dw)
{
    (void)work_elems;
    return FN(bwd_regions)(dy, x, w, g, work, B, n_threads, gemm, dx, dw);
}
