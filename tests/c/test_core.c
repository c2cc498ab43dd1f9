/* Direct tests of the C core, with a naive reference GEMM injected.
 *
 * Built and run by scripts/sanitize.sh under AddressSanitizer and
 * UndefinedBehaviorSanitizer (it also builds without them: any C99 compiler,
 * `cc -std=c99 -Isrc_c tests/c/test_core.c src_c/(all .c files) -lm`).
 *
 * Checks: conv forward/backward, im2col and col2im (and max/average/adaptive
 * pooling, batch norm and ReLU, forward and backward) against direct loops for a
 * grid of geometries (groups, stride, padding, dilation, 1x1, N = 0, chunked
 * workspace); bitwise identical results for every thread count; every
 * malformed argument answered with CC_EINVAL (never a crash or a division by
 * zero); no GEMM call with a size <= 0 or a leading dimension too small.
 * Exit status 0 when everything holds; one line per failure otherwise.
 */
#include "convcore.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0;
static long gemm_calls = 0;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            ++failures;                                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
        }                                                                       \
    } while (0)

/* Column-major C = alpha op(A) op(B) + beta C, the plain triple loop.  Refuses
 * (counts a failure for) any size <= 0 and any leading dimension too small. */
#define NAIVE_GEMM(NAME, REAL)                                                  \
    static void NAME(const char *ta, const char *tb, const int *m, const int *n, \
                     const int *k, const REAL *alpha, const REAL *a,            \
                     const int *lda, const REAL *b, const int *ldb,             \
                     const REAL *beta, REAL *c, const int *ldc)                 \
    {                                                                           \
        const int tA = (*ta == 'T' || *ta == 't'), tB = (*tb == 'T' || *tb == 't'); \
        int i, j, p;                                                            \
        _Pragma("omp atomic") ++gemm_calls;                                     \
        CHECK(*m > 0 && *n > 0 && *k > 0, "gemm with size m=%d n=%d k=%d", *m, *n, *k); \
        CHECK(*lda >= (tA ? *k : *m) && *ldb >= (tB ? *n : *k) && *ldc >= *m,  \
              "gemm leading dimension too small");                              \
        if (*m <= 0 || *n <= 0 || *k <= 0) return;                              \
        for (j = 0; j < *n; ++j)                                                \
            for (i = 0; i < *m; ++i) {                                          \
                double s = 0;                                                   \
                for (p = 0; p < *k; ++p) {                                      \
                    const REAL av = tA ? a[p + (int64_t)i * *lda] : a[i + (int64_t)p * *lda]; \
                    const REAL bv = tB ? b[j + (int64_t)p * *ldb] : b[p + (int64_t)j * *ldb]; \
                    s += (double)av * bv;                                       \
                }                                                               \
                c[i + (int64_t)j * *ldc] = (REAL)(*alpha * s +                  \
                    (*beta == 0 ? 0 : *beta * c[i + (int64_t)j * *ldc]));       \
            }                                                                   \
    }
NAIVE_GEMM(naive_dgemm, double)
NAIVE_GEMM(naive_sgemm, float)

static double urand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / 9007199254740992.0 * 2 - 1;
}

static double *rand_buf(int64_t n, uint64_t *seed)
{
    double *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    int64_t i;
    for (i = 0; i < n; ++i) p[i] = urand(seed);
    return p;
}

static cc_conv_geom geom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K,
                         int64_t KH, int64_t KW, int64_t SH, int64_t SW, int64_t PH,
                         int64_t PW, int64_t DH, int64_t DW, int64_t G)
{
    cc_conv_geom g;
    g.N = N; g.C = C; g.H = H; g.W = W; g.K = K; g.KH = KH; g.KW = KW;
    g.SH = SH; g.SW = SW; g.PH = PH; g.PW = PW; g.DH = DH; g.DW = DW; g.groups = G;
    g.OH = (H + 2 * PH - DH * (KH - 1) - 1) / SH + 1;
    g.OW = (W + 2 * PW - DW * (KW - 1) - 1) / SW + 1;
    return g;
}

/* x value at padded position, 0 in the padding */
static double xat(const double *x, const cc_conv_geom *g, int64_t n, int64_t c, int64_t h,
                  int64_t w)
{
    if (h < 0 || h >= g->H || w < 0 || w >= g->W) return 0;
    return x[((n * g->C + c) * g->H + h) * g->W + w];
}

static void ref_forward(const double *x, const double *w, const double *b,
                        const cc_conv_geom *g, double *y)
{
    const int64_t Cg = g->C / g->groups, Kg = g->K / g->groups;
    int64_t n, k, i, j, c, a, bb;
    for (n = 0; n < g->N; ++n)
        for (k = 0; k < g->K; ++k)
            for (i = 0; i < g->OH; ++i)
                for (j = 0; j < g->OW; ++j) {
                    double s = b ? b[k] : 0;
                    for (c = 0; c < Cg; ++c)
                        for (a = 0; a < g->KH; ++a)
                            for (bb = 0; bb < g->KW; ++bb)
                                s += w[((k * Cg + c) * g->KH + a) * g->KW + bb] *
                                     xat(x, g, n, (k / Kg) * Cg + c,
                                         i * g->SH + a * g->DH - g->PH,
                                         j * g->SW + bb * g->DW - g->PW);
                    y[((n * g->K + k) * g->OH + i) * g->OW + j] = s;
                }
}

static void ref_backward(const double *dy, const double *x, const double *w,
                         const cc_conv_geom *g, double *dx, double *dw, double *db)
{
    const int64_t Cg = g->C / g->groups, Kg = g->K / g->groups;
    int64_t n, k, i, j, c, a, bb;
    memset(dx, 0, sizeof(double) * (size_t)(g->N * g->C * g->H * g->W));
    memset(dw, 0, sizeof(double) * (size_t)(g->K * Cg * g->KH * g->KW));
    memset(db, 0, sizeof(double) * (size_t)g->K);
    for (n = 0; n < g->N; ++n)
        for (k = 0; k < g->K; ++k)
            for (i = 0; i < g->OH; ++i)
                for (j = 0; j < g->OW; ++j) {
                    const double d = dy[((n * g->K + k) * g->OH + i) * g->OW + j];
                    db[k] += d;
                    for (c = 0; c < Cg; ++c)
                        for (a = 0; a < g->KH; ++a)
                            for (bb = 0; bb < g->KW; ++bb) {
                                const int64_t cc_ = (k / Kg) * Cg + c;
                                const int64_t h = i * g->SH + a * g->DH - g->PH;
                                const int64_t ww = j * g->SW + bb * g->DW - g->PW;
                                const int64_t wi = ((k * Cg + c) * g->KH + a) * g->KW + bb;
                                dw[wi] += d * xat(x, g, n, cc_, h, ww);
                                if (h >= 0 && h < g->H && ww >= 0 && ww < g->W)
                                    dx[((n * g->C + cc_) * g->H + h) * g->W + ww] += d * w[wi];
                            }
                }
}

static double maxdiff(const double *a, const double *b, int64_t n)
{
    double m = 0;
    int64_t i;
    for (i = 0; i < n; ++i) {
        double d = fabs(a[i] - b[i]);
        if (d > m || d != d) m = d != d ? INFINITY : d;
    }
    return m;
}

static float *to_f32(const double *a, int64_t n)
{
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof *p);
    int64_t i;
    for (i = 0; i < n; ++i) p[i] = (float)a[i];
    return p;
}

static void check_geometry(const cc_conv_geom *g, uint64_t *seed)
{
    const int64_t nx = g->N * g->C * g->H * g->W, nw = g->K * (g->C / g->groups) * g->KH * g->KW;
    const int64_t ny = g->N * g->K * g->OH * g->OW;
    const int64_t ncol = g->N * g->C * g->KH * g->KW * g->OH * g->OW;
    const int strategies[3] = {CC_CONV_TILES, CC_CONV_BATCHED, CC_CONV_AUTO};
    int si;
    double *x = rand_buf(nx, seed), *w = rand_buf(nw, seed), *b = rand_buf(g->K, seed);
    double *dy = rand_buf(ny, seed);
    double *y = rand_buf(ny, seed), *yr = rand_buf(ny, seed);
    double *dx = rand_buf(nx, seed), *dxr = rand_buf(nx, seed);
    double *dw = rand_buf(nw, seed), *dwr = rand_buf(nw, seed);
    double *db = rand_buf(g->K, seed), *dbr = rand_buf(g->K, seed);
    double *cols = rand_buf(ncol, seed), *xb = rand_buf(nx, seed);
    double *work;
    int64_t wel, chunk, i;
    int st, t;
    char tag[160];
    snprintf(tag, sizeof tag, "N%lld C%lld %lldx%lld K%lld k%lldx%lld s%lld,%lld p%lld,%lld d%lld,%lld g%lld",
             (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W,
             (long long)g->K, (long long)g->KH, (long long)g->KW, (long long)g->SH,
             (long long)g->SW, (long long)g->PH, (long long)g->PW, (long long)g->DH,
             (long long)g->DW, (long long)g->groups);
    CHECK(cc_conv_geom_check(g) == CC_OK, "%s: geometry refused", tag);
    ref_forward(x, w, b, g, yr);
    ref_backward(dy, x, w, g, dxr, dwr, dbr);

    /* every strategy and chunk size: 1 image, 2 images, the whole batch */
    for (si = 0; si < 3; ++si)
    for (chunk = 1; chunk <= (g->N > 2 ? 3 : 2); ++chunk) {
        const int S = strategies[si];
        const int64_t c = chunk == 3 ? g->N : chunk;
        const int64_t per = cc_conv_workspace_elems(g, 1, S);
        CHECK(per >= 0, "%s: workspace size -1", tag);
        wel = cc_conv_workspace_elems(g, c, S);
        work = wel > 0 ? malloc((size_t)wel * sizeof *work) : NULL;
        for (t = 1; t <= 3; ++t) {
            long calls0 = gemm_calls;
            st = cc_conv2d_fwd_f64(x, w, b, g, S, work, wel, t, naive_dgemm, y);
            CHECK(st == CC_OK, "%s: forward status %d", tag, st);
            CHECK(maxdiff(y, yr, ny) < 1e-12, "%s strategy %d chunk %lld threads %d: forward "
                  "off by %g", tag, S, (long long)c, t, maxdiff(y, yr, ny));
            if (g->N == 0) CHECK(gemm_calls == calls0, "%s: GEMM called for N = 0", tag);
            st = cc_conv2d_bwd_f64(dy, x, w, g, S, work, wel, t, naive_dgemm, dx, dw, db);
            CHECK(st == CC_OK, "%s: backward status %d", tag, st);
            CHECK(maxdiff(dx, dxr, nx) < 1e-12 && maxdiff(dw, dwr, nw) < 1e-12 &&
                  maxdiff(db, dbr, g->K) < 1e-12,
                  "%s strategy %d chunk %lld threads %d: backward off (dx %g dw %g db %g)",
                  tag, S, (long long)c, t, maxdiff(dx, dxr, nx), maxdiff(dw, dwr, nw),
                  maxdiff(db, dbr, g->K));
            if (g->N == 0) CHECK(gemm_calls == calls0, "%s: GEMM called for N = 0", tag);
            /* only the wanted gradients */
            st = cc_conv2d_bwd_f64(dy, x, w, g, S, work, wel, t, naive_dgemm, NULL, dw, NULL);
            CHECK(st == CC_OK && maxdiff(dw, dwr, nw) < 1e-12, "%s: dw alone", tag);
            st = cc_conv2d_bwd_f64(dy, x, w, g, S, work, wel, t, naive_dgemm, dx, NULL, NULL);
            CHECK(st == CC_OK && maxdiff(dx, dxr, nx) < 1e-12, "%s: dx alone", tag);
        }
        /* a workspace one element short of one image: refused, or (when the
         * pass needs less than the advertised size) correct, and never read or
         * written past its end (the buffer has exactly per - 1 elements, so
         * ASan sees any overrun) */
        if (per > 1 && g->N > 0) {
            double *shortw = malloc((size_t)(per - 1) * sizeof *shortw);
            st = cc_conv2d_fwd_f64(x, w, b, g, S, shortw, per - 1, 1, naive_dgemm, y);
            CHECK(st == CC_EINVAL || (st == CC_OK && maxdiff(y, yr, ny) < 1e-12),
                  "%s: short workspace: status %d", tag, st);
            st = cc_conv2d_bwd_f64(dy, x, w, g, S, shortw, per - 1, 1, naive_dgemm, dx, dw, db);
            CHECK(st == CC_EINVAL || (st == CC_OK && maxdiff(dx, dxr, nx) < 1e-12 &&
                                      maxdiff(dw, dwr, nw) < 1e-12),
                  "%s: short backward workspace: status %d", tag, st);
            free(shortw);
            /* (AUTO's advertised size covers both passes: its forward may
             * run a strategy that needs none, and then must be right) */
            st = cc_conv2d_fwd_f64(x, w, b, g, S, NULL, 0, 1, naive_dgemm, y);
            CHECK(st == CC_EINVAL ||
                      (S == CC_CONV_AUTO && st == CC_OK && maxdiff(y, yr, ny) < 1e-12),
                  "%s: NULL workspace accepted (%d)", tag, st);
        }
        free(work);
    }

    /* float32: within the rounding bound of the reference */
    if (g->N > 0) {
        float *xf = to_f32(x, nx), *wf = to_f32(w, nw), *bf = to_f32(b, g->K);
        float *yf = malloc((size_t)ny * sizeof *yf), *yf2 = malloc((size_t)ny * sizeof *yf2);
        float *dyf = to_f32(dy, ny);
        float *dxf = malloc((size_t)nx * sizeof *dxf), *dwf = malloc((size_t)nw * sizeof *dwf);
        float *dxf2 = malloc((size_t)nx * sizeof *dxf2), *dwf2 = malloc((size_t)nw * sizeof *dwf2);
        float *dbf = malloc((size_t)g->K * sizeof *dbf), *dbf2 = malloc((size_t)g->K * sizeof *dbf2);
        const int64_t wkn = cc_conv_workspace_elems(g, g->N, CC_CONV_AUTO);
        float *wk = wkn > 0 ? malloc((size_t)wkn * sizeof *wk) : NULL;
        double m = 0;
        ref_forward(x, w, b, g, yr);
        st = cc_conv2d_fwd_f32(xf, wf, bf, g, CC_CONV_AUTO, wk, wkn, 1, naive_sgemm, yf);
        CHECK(st == CC_OK, "%s: f32 forward status %d", tag, st);
        for (i = 0; i < ny; ++i) m = fmax(m, fabs(yf[i] - yr[i]));
        CHECK(m < 1e-4, "%s: f32 forward off by %g", tag, m);
        st = cc_conv2d_bwd_f32(dyf, xf, wf, g, CC_CONV_AUTO, wk, wkn, 1, naive_sgemm, dxf, dwf, dbf);
        CHECK(st == CC_OK, "%s: f32 backward status %d", tag, st);
        for (t = 2; t <= 4; ++t) {   /* bitwise identical for every thread count */
            st = cc_conv2d_fwd_f32(xf, wf, bf, g, CC_CONV_AUTO, wk, wkn, t, naive_sgemm, yf2);
            CHECK(st == CC_OK && !memcmp(yf, yf2, (size_t)ny * sizeof *yf),
                  "%s: f32 forward differs with %d threads", tag, t);
            st = cc_conv2d_bwd_f32(dyf, xf, wf, g, CC_CONV_AUTO, wk, wkn, t, naive_sgemm, dxf2,
                                   dwf2, dbf2);
            CHECK(st == CC_OK && !memcmp(dxf, dxf2, (size_t)nx * sizeof *dxf) &&
                  !memcmp(dwf, dwf2, (size_t)nw * sizeof *dwf) &&
                  !memcmp(dbf, dbf2, (size_t)g->K * sizeof *dbf),
                  "%s: f32 backward differs with %d threads", tag, t);
        }
        free(xf); free(wf); free(bf); free(yf); free(yf2); free(dyf); free(dxf);
        free(dwf); free(dxf2); free(dwf2); free(dbf); free(dbf2); free(wk);
    }

    /* im2col against direct indexing; col2im is its adjoint */
    {
        cc_conv_geom u = *g;
        double lhs = 0, rhs = 0;
        int64_t n, c, a, bb, ii, jj;
        u.K = 1; u.groups = 1;
        st = cc_im2col_f64(x, &u, 2, cols);
        CHECK(st == CC_OK, "%s: im2col status %d", tag, st);
        for (n = 0; n < u.N; ++n)
            for (c = 0; c < u.C; ++c)
                for (a = 0; a < u.KH; ++a)
                    for (bb = 0; bb < u.KW; ++bb)
                        for (ii = 0; ii < u.OH; ++ii)
                            for (jj = 0; jj < u.OW; ++jj) {
                                const int64_t r = (c * u.KH + a) * u.KW + bb;
                                const double want = xat(x, &u, n, c, ii * u.SH + a * u.DH - u.PH,
                                                        jj * u.SW + bb * u.DW - u.PW);
                                const double got = cols[(n * u.C * u.KH * u.KW + r) * u.OH * u.OW +
                                                        ii * u.OW + jj];
                                if (got != want) {
                                    CHECK(0, "%s: im2col wrong at n%lld r%lld", tag,
                                          (long long)n, (long long)r);
                                    goto done_im2col;
                                }
                            }
done_im2col:
        for (i = 0; i < ncol; ++i) cols[i] = urand(seed);
        for (t = 1; t <= 3; ++t) {
            st = cc_col2im_f64(cols, &u, t, xb);
            CHECK(st == CC_OK, "%s: col2im status %d", tag, st);
        }
        /* <im2col(x), c> = <x, col2im(c)>: recompute with a fresh c */
        {
            double *c2 = rand_buf(ncol, seed), *ix = malloc((size_t)(ncol > 0 ? ncol : 1) * sizeof *ix);
            cc_im2col_f64(x, &u, 1, ix);
            cc_col2im_f64(c2, &u, 3, xb);
            for (i = 0; i < ncol; ++i) lhs += ix[i] * c2[i];
            for (i = 0; i < nx; ++i) rhs += x[i] * xb[i];
            CHECK(fabs(lhs - rhs) <= 1e-10 * (1 + fabs(lhs)), "%s: col2im is not the adjoint "
                  "of im2col (%g vs %g)", tag, lhs, rhs);
            free(c2); free(ix);
        }
    }
    free(x); free(w); free(b); free(dy); free(y); free(yr); free(dx); free(dxr);
    free(dw); free(dwr); free(db); free(dbr); free(cols); free(xb);
}

static void check_refusals(void)
{
    double buf[4096] = {0};
    float fbuf[256] = {0};
    cc_conv_geom g = geom(1, 2, 5, 5, 2, 3, 3, 1, 1, 0, 0, 1, 1, 1), b;
    const int64_t BIG = INT64_MAX;
    long calls0 = gemm_calls;
#define REFUSED(expr, what) CHECK((expr) == CC_EINVAL, "not refused: %s", what)
    REFUSED(cc_conv_geom_check(NULL), "NULL geometry");
    REFUSED(cc_conv2d_fwd_f64(NULL, buf, NULL, &g, 0, buf, 4096, 1, naive_dgemm, buf), "NULL x");
    REFUSED(cc_conv2d_fwd_f64(buf, NULL, NULL, &g, 0, buf, 4096, 1, naive_dgemm, buf), "NULL w");
    REFUSED(cc_conv2d_fwd_f64(buf, buf, NULL, &g, 0, buf, 4096, 1, naive_dgemm, NULL), "NULL y");
    REFUSED(cc_conv2d_fwd_f64(buf, buf, NULL, &g, 0, buf, 4096, 1, NULL, buf), "NULL gemm");
    REFUSED(cc_conv2d_fwd_f64(buf, buf, NULL, &g, 0, buf, 4096, 0, naive_dgemm, buf), "0 threads");
    REFUSED(cc_conv2d_fwd_f64(buf, buf, NULL, &g, 0, buf, 4096, -3, naive_dgemm, buf), "-3 threads");
    REFUSED(cc_conv2d_bwd_f64(NULL, buf, buf, &g, 0, buf, 4096, 1, naive_dgemm, buf, buf, buf), "NULL dy");
    REFUSED(cc_im2col_f64(NULL, &g, 1, buf), "im2col NULL x");
    REFUSED(cc_col2im_f64(buf, &g, 1, NULL), "col2im NULL x");
    REFUSED(cc_im2col_f32(fbuf, &g, 0, fbuf), "im2col 0 threads");

    /* malformed geometries: each one is refused by every entry point */
#define BAD(field, value)                                                        \
    do {                                                                        \
        b = g; b.field = value;                                                 \
        REFUSED(cc_conv_geom_check(&b), #field " = " #value);                   \
        REFUSED(cc_conv2d_fwd_f64(buf, buf, NULL, &b, 0, buf, 4096, 1, naive_dgemm, buf), \
                "fwd " #field " = " #value);                                    \
        REFUSED(cc_conv2d_bwd_f64(buf, buf, buf, &b, 1, buf, 4096, 1, naive_dgemm, buf, buf, buf), \
                "bwd " #field " = " #value);                                    \
        REFUSED(cc_im2col_f64(buf, &b, 1, buf), "im2col " #field " = " #value); \
        REFUSED(cc_col2im_f64(buf, &b, 1, buf), "col2im " #field " = " #value); \
        REFUSED(cc_im2col_f32(fbuf, &b, 1, fbuf), "im2col f32 " #field);         \
    } while (0)
    BAD(SH, 0); BAD(SW, 0); BAD(SH, -1); BAD(DH, 0); BAD(DW, -2); BAD(PH, -1);
    BAD(KH, 0); BAD(KW, -1); BAD(C, 0); BAD(H, 0); BAD(W, -5); BAD(K, 0); BAD(N, -1);
    BAD(groups, 0); BAD(groups, -1); BAD(groups, 3); BAD(OH, 4); BAD(OW, 2); BAD(OH, 0);
    BAD(SH, BIG); BAD(PH, BIG); BAD(PW, BIG / 2); BAD(DH, BIG); BAD(KH, BIG);
    BAD(KW, BIG / 2 + 1); BAD(N, BIG); BAD(C, BIG); BAD(H, BIG); BAD(W, BIG / 4);
    BAD(K, BIG); BAD(SW, INT64_MIN); BAD(PW, INT64_MIN); BAD(groups, INT64_MIN);
    /* a consistent geometry whose column matrix needs more than int64 / 16 elements */
    b = geom(1, 1 << 20, 1 << 15, 1 << 15, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1);
    b.N = (int64_t)1 << 40;
    REFUSED(cc_conv_geom_check(&b), "N*C*H*W overflow");
    /* sizes the 32-bit BLAS cannot take */
    b = geom(1, 1, 50000, 50000, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1);
    REFUSED(cc_conv_geom_check(&b), "H*W above INT_MAX");
    b = geom(1, 1 << 16, 256, 256, 1, 256, 256, 1, 1, 0, 0, 1, 1, 1);
    REFUSED(cc_conv_geom_check(&b), "C*KH*KW above INT_MAX");
    CHECK(gemm_calls == calls0, "GEMM called on a refused call");
    CHECK(cc_conv_workspace_elems(&g, INT64_MAX / 2, CC_CONV_TILES) == -1 &&
          cc_conv_workspace_elems(&g, INT64_MAX / 2, CC_CONV_BATCHED) == -1,
          "workspace size overflow not reported");
    REFUSED(cc_conv2d_fwd_f64(buf, buf, NULL, &g, 7, buf, 4096, 1, naive_dgemm, buf),
            "unknown strategy");
    REFUSED(cc_conv2d_bwd_f64(buf, buf, buf, &g, -5, buf, 4096, 1, naive_dgemm, buf, buf, buf),
            "unknown strategy (backward)");
#undef BAD
#undef REFUSED
}

/* ---- pooling ---------------------------------------------------------------- */

static cc_pool_geom pgeom(int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t S,
                          int64_t P, int64_t D, int ceil_mode, int cip, int64_t divisor)
{
    cc_pool_geom g;
    memset(&g, 0, sizeof g);
    g.N = N; g.C = C; g.H = H; g.W = W; g.KH = K; g.KW = K + 1 > 4 ? K : K + 1;
    g.SH = S; g.SW = S; g.PH = P; g.PW = P; g.DH = D; g.DW = D;
    g.ceil_mode = ceil_mode; g.count_include_pad = cip; g.divisor = divisor;
    g.OH = cc_pool_out_size(H, g.KH, S, P, D, ceil_mode);
    g.OW = cc_pool_out_size(W, g.KW, S, P, D, ceil_mode);
    return g;
}

static void check_pool(const cc_pool_geom *g, uint64_t *seed)
{
    const int64_t nx = g->N * g->C * g->H * g->W, ny = g->N * g->C * g->OH * g->OW;
    double *x = rand_buf(nx, seed), *y = rand_buf(ny, seed), *dy = rand_buf(ny, seed);
    double *dx = rand_buf(nx, seed), *ref = rand_buf(nx, seed);
    int64_t *idx = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *idx);
    int64_t p, i, j, a, b;
    int st, t, pass;
    char tag[120];
    snprintf(tag, sizeof tag, "pool N%lld C%lld %lldx%lld k%lldx%lld s%lld p%lld d%lld ceil%d",
             (long long)g->N, (long long)g->C, (long long)g->H, (long long)g->W,
             (long long)g->KH, (long long)g->KW, (long long)g->SH, (long long)g->PH,
             (long long)g->DH, g->ceil_mode);
    for (pass = 0; pass < 2; ++pass) {
        cc_pool_geom q = *g;
        q.generic = pass;      /* fast paths and the generic loop */
        for (t = 1; t <= 3; t += 2) {
            st = cc_max_pool2d_fwd_f64(x, &q, t, y, idx);
            CHECK(st == CC_OK, "%s: max status %d", tag, st);
            for (p = 0; p < g->N * g->C; ++p)
                for (i = 0; i < g->OH; ++i)
                    for (j = 0; j < g->OW; ++j) {
                        double best = -INFINITY;
                        int64_t where = -1;
                        for (a = 0; a < g->KH; ++a)
                            for (b = 0; b < g->KW; ++b) {
                                const int64_t h = i * g->SH - g->PH + a * g->DH;
                                const int64_t w = j * g->SW - g->PW + b * g->DW;
                                if (h < 0 || h >= g->H || w < 0 || w >= g->W) continue;
                                if (where < 0 || x[p * g->H * g->W + h * g->W + w] > best) {
                                    best = x[p * g->H * g->W + h * g->W + w];
                                    where = h * g->W + w;
                                }
                            }
                        const int64_t o = (p * g->OH + i) * g->OW + j;
                        if (y[o] != best || idx[o] != where) {
                            CHECK(0, "%s generic %d: max wrong at plane %lld (%lld, %lld)", tag,
                                  pass, (long long)p, (long long)i, (long long)j);
                            goto next_pass;
                        }
                    }
            /* backward: the scatter by index */
            st = cc_max_pool2d_bwd_f64(dy, idx, g->N, g->C, g->H, g->W, g->OH, g->OW, t, dx);
            CHECK(st == CC_OK, "%s: max backward status %d", tag, st);
            memset(ref, 0, sizeof(double) * (size_t)(nx > 0 ? nx : 1));
            for (p = 0; p < g->N * g->C; ++p)
                for (i = 0; i < g->OH * g->OW; ++i)
                    ref[p * g->H * g->W + idx[p * g->OH * g->OW + i]] += dy[p * g->OH * g->OW + i];
            CHECK(maxdiff(dx, ref, nx) == 0, "%s: max backward differs", tag);
            /* int32 indices: the same maxima, index values and gradient bits,
             * in float64 and (converted input) float32 */
            {
                int32_t *i32 = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *i32);
                int64_t *i64 = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *i64);
                double *y32 = rand_buf(ny, seed), *dx32 = rand_buf(nx, seed);
                float *xf = malloc((size_t)(nx > 0 ? nx : 1) * sizeof *xf);
                float *yf = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *yf);
                float *yf32 = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *yf32);
                float *dyf = malloc((size_t)(ny > 0 ? ny : 1) * sizeof *dyf);
                float *dxf = malloc((size_t)(nx > 0 ? nx : 1) * sizeof *dxf);
                float *dxf32 = malloc((size_t)(nx > 0 ? nx : 1) * sizeof *dxf32);
                int same = 1;
                st = cc_max_pool2d_i32_fwd_f64(x, &q, t, y32, i32);
                CHECK(st == CC_OK, "%s: max int32 status %d", tag, st);
                for (i = 0; i < ny; ++i) same &= y32[i] == y[i] && (int64_t)i32[i] == idx[i];
                CHECK(same, "%s generic %d: int32 indices differ from int64", tag, pass);
                st = cc_max_pool2d_i32_bwd_f64(dy, i32, g->N, g->C, g->H, g->W, g->OH, g->OW,
                                               t, dx32);
                CHECK(st == CC_OK && maxdiff(dx32, dx, nx) == 0,
                      "%s: int32 max backward differs (status %d)", tag, st);
                for (i = 0; i < nx; ++i) xf[i] = (float)x[i];
                for (i = 0; i < ny; ++i) dyf[i] = (float)dy[i];
                st = cc_max_pool2d_fwd_f32(xf, &q, t, yf, i64);
                st |= cc_max_pool2d_i32_fwd_f32(xf, &q, t, yf32, i32);
                CHECK(st == CC_OK, "%s: max f32 status %d", tag, st);
                same = 1;
                for (i = 0; i < ny; ++i) same &= yf32[i] == yf[i] && (int64_t)i32[i] == i64[i];
                CHECK(same, "%s generic %d: f32 int32 indices differ from int64", tag, pass);
                st = cc_max_pool2d_bwd_f32(dyf, i64, g->N, g->C, g->H, g->W, g->OH, g->OW, t,
                                           dxf);
                st |= cc_max_pool2d_i32_bwd_f32(dyf, i32, g->N, g->C, g->H, g->W, g->OH,
                                                g->OW, t, dxf32);
                CHECK(st == CC_OK && memcmp(dxf, dxf32, sizeof(float) * (size_t)nx) == 0,
                      "%s: f32 int32 max backward differs (status %d)", tag, st);
                free(i32); free(i64); free(y32); free(dx32); free(xf); free(yf); free(yf32);
                free(dyf); free(dxf); free(dxf32);
            }
            if (g->DH == 1 && g->DW == 1) {
                double lhs = 0, rhs = 0;
                st = cc_avg_pool2d_fwd_f64(x, &q, t, y);
                CHECK(st == CC_OK, "%s: avg status %d", tag, st);
                st = cc_avg_pool2d_bwd_f64(dy, &q, t, dx);
                CHECK(st == CC_OK, "%s: avg backward status %d", tag, st);
                for (i = 0; i < ny; ++i) lhs += y[i] * dy[i];
                for (i = 0; i < nx; ++i) rhs += x[i] * dx[i];
                CHECK(fabs(lhs - rhs) <= 1e-12 * (1 + fabs(lhs)), "%s: avg backward is not "
                      "the adjoint (%g vs %g)", tag, lhs, rhs);
            }
        }
next_pass:;
    }
    /* indices out of range are refused (the backward never writes out of bounds) */
    if (ny > 0) {
        const int64_t saved = idx[ny - 1];
        idx[ny - 1] = g->H * g->W;
        CHECK(cc_max_pool2d_bwd_f64(dy, idx, g->N, g->C, g->H, g->W, g->OH, g->OW, 2, dx) ==
              CC_EINVAL, "%s: index H*W accepted", tag);
        idx[ny - 1] = -1;
        CHECK(cc_max_pool2d_bwd_f64(dy, idx, g->N, g->C, g->H, g->W, g->OH, g->OW, 1, dx) ==
              CC_EINVAL, "%s: index -1 accepted", tag);
        idx[ny - 1] = INT64_MIN;
        CHECK(cc_max_pool2d_bwd_f64(dy, idx, g->N, g->C, g->H, g->W, g->OH, g->OW, 1, dx) ==
              CC_EINVAL, "%s: index INT64_MIN accepted", tag);
        idx[ny - 1] = saved;
    }
    /* adaptive: adjoint of its backward */
    {
        const int64_t OH = 1 + g->H % 4, OW = 3;
        double *ya = rand_buf(g->N * g->C * OH * OW, seed), *ga = rand_buf(g->N * g->C * OH * OW, seed);
        double lhs = 0, rhs = 0;
        st = cc_adaptive_avg_pool2d_fwd_f64(x, g->N, g->C, g->H, g->W, OH, OW, 2, ya);
        CHECK(st == CC_OK, "%s: adaptive status %d", tag, st);
        st = cc_adaptive_avg_pool2d_bwd_f64(ga, g->N, g->C, g->H, g->W, OH, OW, 2, dx);
        CHECK(st == CC_OK, "%s: adaptive backward status %d", tag, st);
        for (i = 0; i < g->N * g->C * OH * OW; ++i) lhs += ya[i] * ga[i];
        for (i = 0; i < nx; ++i) rhs += x[i] * dx[i];
        CHECK(fabs(lhs - rhs) <= 1e-12 * (1 + fabs(lhs)), "%s: adaptive adjoint", tag);
        free(ya); free(ga);
    }
    free(x); free(y); free(dy); free(dx); free(ref); free(idx);
}

static void check_pool_refusals(void)
{
    double buf[1024] = {0};
    int64_t ibuf[1024] = {0};
    cc_pool_geom g = pgeom(1, 2, 6, 6, 3, 2, 1, 1, 0, 1, 0), b;
#define PREFUSED(expr, what) CHECK((expr) == CC_EINVAL, "pool: not refused: %s", what)
    PREFUSED(cc_pool_geom_check(NULL, CC_POOL_MAX), "NULL geometry");
    PREFUSED(cc_pool_geom_check(&g, 7), "unknown kind");
    PREFUSED(cc_max_pool2d_fwd_f64(NULL, &g, 1, buf, ibuf), "NULL x");
    PREFUSED(cc_max_pool2d_fwd_f64(buf, &g, 0, buf, ibuf), "0 threads");
    PREFUSED(cc_avg_pool2d_fwd_f64(buf, &g, 1, NULL), "NULL y");
#define PBAD(field, value)                                                       \
    do {                                                                         \
        b = g; b.field = value;                                                  \
        PREFUSED(cc_max_pool2d_fwd_f64(buf, &b, 1, buf, ibuf), "max " #field " = " #value); \
        PREFUSED(cc_avg_pool2d_fwd_f64(buf, &b, 1, buf), "avg " #field " = " #value); \
        PREFUSED(cc_avg_pool2d_bwd_f64(buf, &b, 1, buf), "avg bwd " #field " = " #value); \
    } while (0)
    PBAD(SH, 0); PBAD(SW, -1); PBAD(KH, 0); PBAD(KW, -2); PBAD(PH, -1); PBAD(PH, 2);
    PBAD(DH, 0); PBAD(C, 0); PBAD(H, 0); PBAD(N, -1); PBAD(OH, 5); PBAD(OW, 0);
    PBAD(SH, INT64_MAX); PBAD(KH, INT64_MAX); PBAD(PH, INT64_MAX); PBAD(DH, INT64_MAX);
    PBAD(H, INT64_MAX); PBAD(N, INT64_MAX);
    b = g; b.divisor = -1;
    PREFUSED(cc_avg_pool2d_fwd_f64(buf, &b, 1, buf), "avg divisor -1");
    b = g; b.DH = 2;
    b.OH = cc_pool_out_size(b.H, b.KH, b.SH, b.PH, b.DH, 0);
    PREFUSED(cc_avg_pool2d_fwd_f64(buf, &b, 1, buf), "avg with dilation");
    PREFUSED(cc_adaptive_avg_pool2d_fwd_f64(buf, 1, 1, 4, 4, 0, 2, 1, buf), "adaptive OH 0");
    PREFUSED(cc_adaptive_avg_pool2d_fwd_f64(buf, 1, 1, 0, 4, 2, 2, 1, buf), "adaptive H 0");
    PREFUSED(cc_adaptive_avg_pool2d_fwd_f64(buf, -1, 1, 4, 4, 2, 2, 1, buf), "adaptive N -1");
    PREFUSED(cc_adaptive_avg_pool2d_bwd_f64(buf, 1, 1, INT64_MAX, 4, 2, 2, 1, buf),
             "adaptive H huge");
    PREFUSED(cc_max_pool2d_bwd_f64(buf, ibuf, 1, 1, 4, 4, 5, 5, 0, buf), "max bwd 0 threads");
    {
        /* int32 indices only for planes of fewer than 2**31 elements (refused
         * before anything is read or written) */
        int32_t i32buf[4] = {0};
        b = pgeom(1, 1, 65536, 32768, 2, 2, 0, 1, 0, 1, 0);   /* 2**31 elements */
        CHECK(cc_pool_geom_check(&b, CC_POOL_MAX) == CC_OK, "pool: 2**31 plane refused");
        PREFUSED(cc_max_pool2d_i32_fwd_f64(buf, &b, 1, buf, i32buf), "int32, 2**31 plane");
        PREFUSED(cc_max_pool2d_i32_bwd_f64(buf, i32buf, 1, 1, 65536, 32768, 32768, 16384, 1, buf),
                 "int32 backward, 2**31 plane");
    }
    CHECK(cc_pool_out_size(5, 3, 0, 0, 1, 0) == -1 && cc_pool_out_size(INT64_MAX, 3, 1,
          INT64_MAX, 1, 1) == -1 && cc_pool_out_size(2, INT64_MAX, 1, 0, INT64_MAX, 0) == -1,
          "pool: out size overflow not reported");
#undef PBAD
#undef PREFUSED
}

/* Batch norm of (N, C, L) against the formulas by direct loops, float64 and
 * float32, training and eval; bitwise identical for 1, 2 and 3 threads. */
static void norm_ref(const double *x, const double *dy, const double *w, const double *b,
                     const double *rm, const double *rv, int64_t N, int64_t C, int64_t L,
                     double eps, int training, double *y, double *dx, double *dw, double *db,
                     double *scale)
{
    int64_t n, c, l;
    for (c = 0; c < C; ++c) {
        const double M = (double)(N * L);
        double m = 0, v = 0, is, sy = 0, sxy = 0, wc = w ? w[c] : 1, bc = b ? b[c] : 0;
        if (training) {
            for (n = 0; n < N; ++n)
                for (l = 0; l < L; ++l) m += x[(n * C + c) * L + l];
            m /= M;
            for (n = 0; n < N; ++n)
                for (l = 0; l < L; ++l) {
                    const double d = x[(n * C + c) * L + l] - m;
                    v += d * d;
                }
            v /= M;
        } else {
            m = rm[c];
            v = rv[c];
        }
        is = 1 / sqrt(v + eps);
        for (n = 0; n < N; ++n)
            for (l = 0; l < L; ++l) {
                const int64_t i = (n * C + c) * L + l;
                sy += dy[i];
                sxy += dy[i] * (x[i] - m) * is;
            }
        dw[c] = sxy;
        db[c] = sy;
        for (n = 0; n < N; ++n)
            for (l = 0; l < L; ++l) {
                const int64_t i = (n * C + c) * L + l;
                const double xh = (x[i] - m) * is;
                y[i] = xh * wc + bc;
                dx[i] = training ? wc * is * (dy[i] - sy / M - xh * sxy / M) : wc * is * dy[i];
                scale[i] = fabs(xh * wc) + fabs(bc) + fabs(wc * is) * (fabs(dy[i]) +
                           fabs(sy / M) + fabs(xh * sxy / M));
            }
    }
}

static void check_norm(int64_t N, int64_t C, int64_t L, uint64_t *seed)
{
    const int64_t n = N * C * L, we = cc_batch_norm_workspace_elems(N, C, L);
    double *x = rand_buf(n, seed), *dy = rand_buf(n, seed), *w = rand_buf(C, seed);
    double *b = rand_buf(C, seed), *rm = rand_buf(C, seed), *rv = rand_buf(C, seed);
    double *y = rand_buf(n, seed), *dx = rand_buf(n, seed), *dw = rand_buf(C, seed);
    double *db = rand_buf(C, seed), *ry = rand_buf(n, seed), *rdx = rand_buf(n, seed);
    double *rdw = rand_buf(C, seed), *rdb = rand_buf(C, seed), *sc = rand_buf(n, seed);
    double *y1 = rand_buf(n, seed), *dx1 = rand_buf(n, seed), *mean = rand_buf(C, seed);
    double *var = rand_buf(C, seed), *work = rand_buf(we > 0 ? we : 1, seed);
    double *dx2 = rand_buf(n, seed);
    float *xf = to_f32(x, n), *dyf = to_f32(dy, n), *wf, *bf, *rmf, *rvf;
    float *yf = to_f32(y, n), *dxf = to_f32(dx, n), *dwf = to_f32(dw, C), *dbf = to_f32(db, C);
    int64_t i;
    int training, t, st;
    char tag[80];
    for (i = 0; i < n; ++i) x[i] = 3 * x[i] + 2;       /* a mean away from 0 */
    for (i = 0; i < C; ++i) rv[i] = fabs(rv[i]) + 0.5;
    wf = to_f32(w, C); bf = to_f32(b, C); rmf = to_f32(rm, C); rvf = to_f32(rv, C);
    free(xf);
    xf = to_f32(x, n);
    snprintf(tag, sizeof tag, "batch_norm N%lld C%lld L%lld", (long long)N, (long long)C,
             (long long)L);
    CHECK(we > 0, "%s: workspace %lld", tag, (long long)we);
    for (training = 0; training <= 1; ++training) {
        norm_ref(x, dy, w, b, rm, rv, N, C, L, 1e-5, training, ry, rdx, rdw, rdb, sc);
        for (t = 1; t <= 3; ++t) {
            st = cc_batch_norm_fwd_f64(x, w, b, training ? NULL : rm, training ? NULL : rv, N,
                                       C, L, 1e-5, training, work, we, t, y, mean, var);
            CHECK(st == CC_OK, "%s: forward status %d", tag, st);
            st = cc_batch_norm_bwd_f64(dy, x, w, training ? NULL : rm, training ? NULL : rv,
                                       N, C, L, 1e-5, training, work, we, t, dx, dw, db);
            CHECK(st == CC_OK, "%s: backward status %d", tag, st);
            for (i = 0; i < n; ++i) {
                if (fabs(y[i] - ry[i]) > 1e-12 * sc[i] || fabs(dx[i] - rdx[i]) > 1e-12 * sc[i]) {
                    CHECK(0, "%s training %d threads %d: element %lld differs", tag, training,
                          t, (long long)i);
                    break;
                }
            }
            CHECK(maxdiff(dw, rdw, C) <= 1e-10 && maxdiff(db, rdb, C) <= 1e-10,
                  "%s training %d: dw/db differ", tag, training);
            if (training) {   /* given the forward's statistics: one pass, same values */
                st = cc_batch_norm_bwd_saved_f64(dy, x, w, mean, var, N, C, L, 1e-5, work, we,
                                                 t, dx2, dw, db);
                CHECK(st == CC_OK, "%s: saved backward status %d", tag, st);
                for (i = 0; i < n; ++i) {
                    if (fabs(dx2[i] - rdx[i]) > 1e-12 * sc[i]) {
                        CHECK(0, "%s saved threads %d: element %lld differs", tag, t,
                              (long long)i);
                        break;
                    }
                }
                CHECK(maxdiff(dw, rdw, C) <= 1e-10 && maxdiff(db, rdb, C) <= 1e-10,
                      "%s saved: dw/db differ", tag);
                CHECK(cc_batch_norm_bwd_saved_f64(dy, x, w, NULL, var, N, C, L, 1e-5, work, we,
                                                  t, dx2, dw, db) == CC_EINVAL,
                      "%s saved: no mean accepted", tag);
            }
            if (t == 1) {
                memcpy(y1, y, sizeof(double) * (size_t)n);
                memcpy(dx1, dx, sizeof(double) * (size_t)n);
            } else {
                CHECK(memcmp(y1, y, sizeof(double) * (size_t)n) == 0 &&
                      memcmp(dx1, dx, sizeof(double) * (size_t)n) == 0,
                      "%s training %d: %d threads change the bits", tag, training, t);
            }
            st = cc_batch_norm_fwd_f32(xf, wf, bf, training ? NULL : rmf, training ? NULL : rvf,
                                       N, C, L, 1e-5, training, work, we, t, yf, mean, var);
            CHECK(st == CC_OK, "%s: float forward status %d", tag, st);
            st = cc_batch_norm_bwd_f32(dyf, xf, wf, training ? NULL : rmf,
                                       training ? NULL : rvf, N, C, L, 1e-5, training, work,
                                       we, t, dxf, dwf, dbf);
            CHECK(st == CC_OK, "%s: float backward status %d", tag, st);
            for (i = 0; i < n; ++i) {
                /* float inputs: compare with the float64 result of rounded inputs loosely */
                if (fabs(yf[i] - ry[i]) > 1e-5 * (sc[i] + 1) ||
                    fabs(dxf[i] - rdx[i]) > 1e-5 * (sc[i] + 1)) {
                    CHECK(0, "%s training %d: float element %lld differs", tag, training,
                          (long long)i);
                    break;
                }
            }
        }
    }
    free(x); free(dy); free(w); free(b); free(rm); free(rv); free(y); free(dx); free(dw);
    free(db); free(ry); free(rdx); free(rdw); free(rdb); free(sc); free(y1); free(dx1);
    free(dx2);
    free(mean); free(var); free(work); free(xf); free(dyf); free(wf); free(bf); free(rmf);
    free(rvf); free(yf); free(dxf); free(dwf); free(dbf);
}

static void check_norm_refusals(void)
{
    double buf[4096] = {0}, m[8], v[8], zr[8] = {0};
    float fb[64] = {0};
    const int64_t we = cc_batch_norm_workspace_elems(2, 3, 4);
#define NREFUSED(expr, what) CHECK((expr) == CC_EINVAL, "norm: not refused: %s", what)
    CHECK(we > 0 && we < 4096, "norm: workspace %lld", (long long)we);
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, 1e-5, 1, buf, we - 1,
                                   1, buf + 100, m, v), "short workspace");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, 1e-5, 1, NULL, we, 1,
                                   buf + 100, m, v), "NULL workspace");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, -1.0, 1, buf, we, 1,
                                   buf + 100, m, v), "eps < 0");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, NAN, 1, buf, we, 1,
                                   buf + 100, m, v), "eps NaN");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, 1e-5, 0, buf, we, 1,
                                   buf + 100, m, v), "eval without running statistics");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 0, 3, 4, 1e-5, 1, buf, we, 1,
                                   buf + 100, m, v), "training on an empty batch");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 0, 4, 1e-5, 1, buf, we, 1,
                                   buf + 100, m, v), "C = 0");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, -1, 3, 4, 1e-5, 1, buf, we, 1,
                                   buf + 100, m, v), "N < 0");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, 1e-5, 1, buf, we, 0,
                                   buf + 100, m, v), "0 threads");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, 2, 3, 4, 1e-5, 1, buf, we, 1,
                                   buf + 100, NULL, v), "NULL mean");
    NREFUSED(cc_batch_norm_fwd_f64(buf, NULL, NULL, NULL, NULL, INT64_MAX, 3, 4, 1e-5, 1, buf,
                                   we, 1, buf + 100, m, v), "N huge");
    NREFUSED(cc_batch_norm_bwd_f64(NULL, buf, NULL, NULL, NULL, 2, 3, 4, 1e-5, 1, buf, we, 1,
                                   buf + 100, m, v), "NULL dy");
    NREFUSED(cc_batch_norm_bwd_f32(fb, fb, NULL, NULL, NULL, 2, 3, 4, 1e-5, 1, buf, we, 1, NULL,
                                   fb, fb), "NULL dx");
    CHECK(cc_batch_norm_workspace_elems(INT64_MAX, 2, 2) == -1 &&
          cc_batch_norm_workspace_elems(1, 0, 2) == -1 &&
          cc_batch_norm_workspace_elems(1, 2, -1) == -1, "norm: bad workspace sizes accepted");
    /* eval on an empty batch: the running statistics, zero gradients */
    m[0] = v[0] = 7;
    CHECK(cc_batch_norm_fwd_f64(NULL, NULL, NULL, zr, zr, 0, 3, 4, 1e-5, 0, buf + 8,
                                cc_batch_norm_workspace_elems(0, 3, 4), 1, NULL, m, v) == CC_OK
          && m[0] == 0 && v[0] == 0, "norm: eval on an empty batch");
    NREFUSED(cc_relu_fwd_f64(buf, -1, 1, buf), "relu n < 0");
    NREFUSED(cc_relu_fwd_f64(NULL, 4, 1, buf), "relu NULL x");
    NREFUSED(cc_relu_bwd_f32(fb, fb, 4, 0, fb), "relu backward 0 threads");
    CHECK(cc_relu_fwd_f64(NULL, 0, 1, NULL) == CC_OK, "norm: empty relu refused");
#undef NREFUSED
}

static void check_relu(uint64_t *seed)
{
    const int64_t n = 100003;
    double *x = rand_buf(n, seed), *g = rand_buf(n, seed), *y = rand_buf(n, seed);
    double *y1 = rand_buf(n, seed);
    int64_t i;
    int t;
    x[0] = NAN; x[1] = -0.0; x[2] = INFINITY; x[3] = -INFINITY; x[4] = 0.0;
    g[4] = NAN; g[3] = INFINITY; g[0] = NAN;
    for (t = 1; t <= 3; ++t) {
        CHECK(cc_relu_fwd_f64(x, n, t, y) == CC_OK, "relu status");
        for (i = 0; i < n; ++i)
            if (!(x[i] > 0 ? y[i] == x[i] : x[i] != x[i] ? y[i] != y[i]
                  : (y[i] == 0 && !signbit(y[i])))) {
                CHECK(0, "relu forward wrong at %lld", (long long)i);
                break;
            }
        CHECK(cc_relu_bwd_f64(g, x, n, t, y1) == CC_OK, "relu backward status");
        for (i = 0; i < n; ++i)
            if (x[i] > 0 ? memcmp(&y1[i], &g[i], sizeof(double)) != 0
                         : (y1[i] != 0 || signbit(y1[i]))) {
                CHECK(0, "relu backward wrong at %lld", (long long)i);
                break;
            }
    }
    free(x); free(g); free(y); free(y1);
}

/* Linear forward and backward against double loops, every thread count and
 * both the overwrite and the accumulate mode; the GEMM is the naive one, so
 * this checks the partition (every output element written once, nothing
 * outside the outputs touched). */
static void check_linear(int64_t M, int64_t N, int64_t K, uint64_t *seed)
{
    double *x = rand_buf(M * K, seed), *w = rand_buf(N * K, seed), *b = rand_buf(N, seed);
    double *dy = rand_buf(M * N, seed);
    double *y = malloc((size_t)(M * N + 1) * sizeof *y), *dx = malloc((size_t)(M * K + 1) * sizeof *dx);
    double *dw = malloc((size_t)(N * K + 1) * sizeof *dw), *db = malloc((size_t)(N + 1) * sizeof *db);
    int64_t m, n, k;
    int t, acc;
    for (t = 1; t <= 3; ++t) {
        double err = 0;
        y[M * N] = dx[M * K] = dw[N * K] = db[N] = 42;   /* guards past the ends */
        CHECK(cc_linear_fwd_f64(x, w, b, M, N, K, t, naive_dgemm, y) == CC_OK, "linear status");
        for (m = 0; m < M; ++m)
            for (n = 0; n < N; ++n) {
                double s = b[n];
                for (k = 0; k < K; ++k) s += x[m * K + k] * w[n * K + k];
                err = fmax(err, fabs(s - y[m * N + n]));
            }
        CHECK(err < 1e-12, "linear forward %lld %lld %lld t=%d: error %g", (long long)M,
              (long long)N, (long long)K, t, err);
        for (acc = 0; acc <= 1; ++acc) {
            for (n = 0; n < N * K; ++n) dw[n] = acc ? 1.0 : NAN;
            for (n = 0; n < N; ++n) db[n] = acc ? 2.0 : NAN;
            CHECK(cc_linear_bwd_f64(dy, x, w, M, N, K, acc, t, naive_dgemm, dx, dw, db) == CC_OK,
                  "linear backward status");
            err = 0;
            for (m = 0; m < M; ++m)
                for (k = 0; k < K; ++k) {
                    double s = 0;
                    for (n = 0; n < N; ++n) s += dy[m * N + n] * w[n * K + k];
                    err = fmax(err, fabs(s - dx[m * K + k]));
                }
            for (n = 0; n < N; ++n) {
                double sb = acc ? 2.0 : 0.0;
                for (k = 0; k < K; ++k) {
                    double s = acc ? 1.0 : 0.0;
                    for (m = 0; m < M; ++m) s += dy[m * N + n] * x[m * K + k];
                    err = fmax(err, fabs(s - dw[n * K + k]));
                }
                for (m = 0; m < M; ++m) sb += dy[m * N + n];
                err = fmax(err, fabs(sb - db[n]));
            }
            CHECK(err < 1e-12, "linear backward %lld %lld %lld t=%d acc=%d: error %g",
                  (long long)M, (long long)N, (long long)K, t, acc, err);
        }
        CHECK(y[M * N] == 42 && dx[M * K] == 42 && dw[N * K] == 42 && db[N] == 42,
              "linear wrote past an output");
    }
    CHECK(cc_linear_fwd_f64(x, w, b, M, 0, K, 1, naive_dgemm, y) == CC_EINVAL,
          "linear with no features accepted");
    CHECK(cc_linear_bwd_f64(dy, x, w, M, N, K, 0, 0, naive_dgemm, dx, dw, db) == CC_EINVAL,
          "linear backward with 0 threads accepted");
    free(x); free(w); free(b); free(dy); free(y); free(dx); free(dw); free(db);
}

int main(void)
{
    uint64_t seed = 12345;
    /* N C H W K KH KW SH SW PH PW DH DW groups */
    const int64_t grid[][14] = {
        {2, 3, 7, 6, 4, 3, 2, 1, 1, 1, 0, 1, 1, 1},
        {3, 4, 9, 8, 6, 3, 3, 2, 1, 1, 2, 2, 1, 2},
        {1, 1, 5, 5, 1, 5, 5, 1, 1, 0, 0, 1, 1, 1},   /* kernel = input */
        {2, 6, 5, 4, 6, 1, 1, 1, 1, 0, 0, 1, 1, 3},   /* 1x1: GEMM only, groups */
        {2, 2, 4, 5, 3, 1, 1, 2, 2, 0, 0, 1, 1, 1},   /* 1x1 with stride */
        {1, 2, 3, 3, 2, 3, 3, 1, 1, 2, 2, 2, 2, 2},   /* padding larger than the data */
        {0, 3, 6, 5, 4, 3, 2, 2, 1, 1, 1, 1, 1, 1},   /* empty batch */
        {4, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1},   /* all ones */
        {2, 4, 11, 3, 4, 2, 3, 3, 1, 0, 1, 3, 1, 4},  /* depthwise, strided, dilated */
        {1, 3, 40, 60, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* L above one GEMM tile (2048) */
    };
    size_t i;
    for (i = 0; i < sizeof grid / sizeof grid[0]; ++i) {
        const int64_t *q = grid[i];
        cc_conv_geom g = geom(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9],
                              q[10], q[11], q[12], q[13]);
        check_geometry(&g, &seed);
    }
    check_refusals();
    {
        /* N C H W K S P D ceil count_include_pad divisor */
        const int64_t pgrid[][11] = {
            {2, 3, 7, 6, 2, 2, 0, 1, 0, 1, 0}, {1, 2, 9, 8, 3, 2, 1, 1, 1, 0, 0},
            {2, 1, 5, 5, 2, 2, 1, 1, 1, 1, 3}, {1, 2, 8, 7, 3, 1, 1, 2, 0, 1, 0},
            {0, 2, 4, 4, 2, 2, 0, 1, 0, 1, 0}, {3, 1, 1, 2, 1, 1, 0, 1, 1, 1, 0},
            {1, 4, 13, 11, 3, 3, 1, 1, 1, 0, 0}, {1, 1, 6, 7, 1, 2, 0, 1, 1, 1, 0},
        };
        for (i = 0; i < sizeof pgrid / sizeof pgrid[0]; ++i) {
            const int64_t *q = pgrid[i];
            cc_pool_geom g = pgeom(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], (int)q[8],
                                   (int)q[9], q[10]);
            CHECK(cc_pool_geom_check(&g, CC_POOL_MAX) == CC_OK, "pool grid %zu refused", i);
            check_pool(&g, &seed);
        }
        check_pool_refusals();
    }
    {
        /* N C L: short planes, groups of 16 channels, chunks of rows, segments of
         * long planes, an empty batch in eval, enough data for a team */
        const int64_t ngrid[][3] = {
            {2, 3, 5}, {7, 1, 1}, {300, 17, 1}, {5, 33, 31}, {4, 2, 32}, {9, 3, 100},
            {2, 2, 2048}, {3, 2, 5000}, {64, 20, 257},
        };
        for (i = 0; i < sizeof ngrid / sizeof ngrid[0]; ++i)
            check_norm(ngrid[i][0], ngrid[i][1], ngrid[i][2], &seed);
        check_norm_refusals();
        check_relu(&seed);
    }
    {
        /* M N K: batch 1 (split over features), rows over one slice per thread,
         * slices that do not divide, tiny (serial), an empty batch */
        const int64_t lgrid[][3] = {{1, 300, 64}, {70, 9, 40}, {33, 65, 17}, {2, 3, 4},
                                    {0, 5, 3}, {48, 48, 80}, {40, 130, 50}, {1, 2000, 80},
                                    {3, 70, 700}};
        for (i = 0; i < sizeof lgrid / sizeof lgrid[0]; ++i)
            check_linear(lgrid[i][0], lgrid[i][1], lgrid[i][2], &seed);
    }
    if (failures) {
        fprintf(stderr, "test_core: %d failures\n", failures);
        return 1;
    }
    printf("test_core: all checks passed (%zu conv, 8 pooling and 9 batch-norm shapes, %ld GEMM calls, "
           "OpenMP %s)\n",
           sizeof grid / sizeof grid[0], gemm_calls, cc_openmp_enabled() ? "on" : "off");
    return 0;
}
