/* Body of the linear family, instantiated once per element type by linear.c
 * with REAL (float/double), SFX (f32/f64) and GEMM_T defined.
 *
 * Row-major arrays are handed to the column-major BLAS as their transposes:
 * a row-major (R, S) matrix is a column-major (S, R) one with leading
 * dimension S. */

#ifndef CC_CAT
#define CC_CAT2(a, b) a##_##b
#define CC_CAT(a, b) CC_CAT2(a, b)
#define FN(name) CC_CAT(name, SFX)
#endif

/* y[m0:m1, n0:n1] = x[m0:m1]·W[n0:n1]ᵀ (+ b[n0:n1]): one sequential GEMM. */
static void FN(fwd_part)(const REAL *x, const REAL *w, const REAL *b, int64_t N, int64_t K,
                         int64_t m0, int64_t m1, int64_t n0, int64_t n1, GEMM_T gemm, REAL *y)
{
    int m = (int)(n1 - n0), n = (int)(m1 - m0), k = (int)K, ldk = (int)K, ldn = (int)N;
    REAL one = 1, beta = 0;
    int64_t r;
    if (m <= 0 || n <= 0) return;
    if (b) {
        for (r = m0; r < m1; ++r) memcpy(y + r * N + n0, b + n0, (size_t)m * sizeof(REAL));
        beta = 1;
    }
    /* column-major: yᵀ(N, M) = W(K, N)ᵀ · xᵀ(K, M) */
    gemm("T", "N", &m, &n, &k, &one, w + n0 * K, &ldk, x + m0 * K, &ldk, &beta,
         y + m0 * N + n0, &ldn);
}

/* y[0:M, n] = x[0:M]·W[n] (+ b[n]) for n in [n0, n1), with M a constant
 * after inlining (1 to CC_LINEAR_FEW): every weight is read once and meets
 * the M rows of x in registers; R rows of W (4 / M, then 2, then 1) are
 * read side by side
 * (more streams in flight for the memory system).  Each sum runs in
 * CC_LINEAR_LANES partial sums (k mod CC_LINEAR_LANES) added pairwise at
 * the end: an order fixed by K alone. */
static inline __attribute__((always_inline)) void FN(few_rows)(
    const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT w, const REAL *CC_RESTRICT b, int64_t N,
    int64_t K, int64_t n0, int64_t n1, REAL *CC_RESTRICT y, const int M)
{
    const int R = M <= 2 ? 4 / M : M <= 4 ? 2 : 1;
    int64_t n, k;
    int m, l, h, r, rr;
    for (n = n0; n < n1; n += R) {
        REAL acc[8][CC_LINEAR_LANES];
        const int nr = (int)CC_MIN((int64_t)R, n1 - n);
        for (r = 0; r < 8; ++r)
            for (l = 0; l < CC_LINEAR_LANES; ++l) acc[r][l] = 0;
        if (nr == R) {
            for (k = 0; k + CC_LINEAR_LANES <= K; k += CC_LINEAR_LANES)
                for (r = 0; r < R; ++r)
                    for (m = 0; m < M; ++m)
                        for (l = 0; l < CC_LINEAR_LANES; ++l)
                            acc[r * M + m][l] += w[(n + r) * K + k + l] * x[m * K + k + l];
        } else {
            for (k = 0; k + CC_LINEAR_LANES <= K; k += CC_LINEAR_LANES)
                for (r = 0; r < nr; ++r)
                    for (m = 0; m < M; ++m)
                        for (l = 0; l < CC_LINEAR_LANES; ++l)
                            acc[r * M + m][l] += w[(n + r) * K + k + l] * x[m * K + k + l];
        }
        for (l = 0; k + l < K; ++l)
            for (r = 0; r < nr; ++r)
                for (m = 0; m < M; ++m)
                    acc[r * M + m][l] += w[(n + r) * K + k + l] * x[m * K + k + l];
        for (r = 0; r < nr; ++r)
            for (m = 0; m < M; ++m) {
                rr = r * M + m;
                for (h = CC_LINEAR_LANES / 2; h > 0; h /= 2)
                    for (l = 0; l < h; ++l) acc[rr][l] += acc[rr][l + h];
                y[m * N + n + r] = b ? acc[rr][0] + b[n + r] : acc[rr][0];
            }
    }
}

CC_LINEAR_CLONES static void FN(fwd_few)(const REAL *x, const REAL *w, const REAL *b, int64_t M,
                                         int64_t N, int64_t K, int64_t n0, int64_t n1, REAL *y)
{
    switch (M) {
    case 1: FN(few_rows)(x, w, b, N, K, n0, n1, y, 1); break;
    case 2: FN(few_rows)(x, w, b, N, K, n0, n1, y, 2); break;
    case 3: FN(few_rows)(x, w, b, N, K, n0, n1, y, 3); break;
    case 4: FN(few_rows)(x, w, b, N, K, n0, n1, y, 4); break;
    case 5: FN(few_rows)(x, w, b, N, K, n0, n1, y, 5); break;
    case 6: FN(few_rows)(x, w, b, N, K, n0, n1, y, 6); break;
    case 7: FN(few_rows)(x, w, b, N, K, n0, n1, y, 7); break;
    default: FN(few_rows)(x, w, b, N, K, n0, n1, y, 8); break;
    }
}

/* Linear forward.
 *   x (M, K) [in], w (N, K) [in], b (N) or NULL [in]
 *   y (M, N) [out, overwritten]: y = x·Wᵀ + b
 * Up to CC_LINEAR_FEW rows of x (batch 1 inference) take fwd_few, split over
 * the output features: a GEMM would first pack all of W, a copy that costs
 * several times the product itself.  Otherwise one GEMM per part, split over
 * the rows of x when there are enough of them, else over the features. */
int FN(cc_linear_fwd)(const REAL *x, const REAL *w, const REAL *b, int64_t M, int64_t N,
                      int64_t K, int n_threads, GEMM_T gemm, REAL *y)
{
    int by_rows, team, st = linear_check(M, N, K, n_threads);
    if (st != CC_OK) return st;
    if (M == 0) return CC_OK;
    if (!x || !w || !y || !gemm) return CC_EINVAL;
    if (M <= CC_LINEAR_FEW) {
        team = linear_team(n_threads, M, N, K, N);
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
        {
            int64_t lo = 0, hi = N;
#ifdef _OPENMP
            linear_part(N, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
#endif
            FN(fwd_few)(x, w, b, M, N, K, lo, hi, y);
        }
        return CC_OK;
    }
    by_rows = M >= (int64_t)CC_LINEAR_ALIGN * n_threads;
    team = linear_team(n_threads, M, N, K, by_rows ? M : N);
    if (team == 1) {
        FN(fwd_part)(x, w, b, N, K, 0, M, 0, N, gemm, y);
        return CC_OK;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(team)
#endif
    {
        int t = 0, nt = 1;
        int64_t lo, hi;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        if (by_rows) {
            linear_part(M, t, nt, &lo, &hi);
            FN(fwd_part)(x, w, b, N, K, lo, hi, 0, N, gemm, y);
        } else {
            linear_part(N, t, nt, &lo, &hi);
            FN(fwd_part)(x, w, b, N, K, 0, M, lo, hi, gemm, y);
        }
    }
    return CC_OK;
}

/* Linear backward.
 * forward: y = x·Wᵀ + b  =>  dx = dy·W, dW = dyᵀ·x, db = Σ_rows dy
 *   dy (M, N) [in], x (M, K) [in], w (N, K) [in]
 *   dx (M, K) or NULL [out, overwritten]
 *   dw (N, K) or NULL [out, overwritten, or accumulated (+=) when accumulate]
 *   db (N) or NULL    [out, overwritten, or accumulated (+=) when accumulate]
 * dW and db are reduced over all M rows in one BLAS call per part (db in
 * double, rows in order): the thread count never changes the reduction. */
int FN(cc_linear_bwd)(const REAL *dy, const REAL *x, const REAL *w, int64_t M, int64_t N,
                      int64_t K, int accumulate, int n_threads, GEMM_T gemm, REAL *dx,
                      REAL *dw, REAL *db)
{
    int dx_rows, team_dx, team_dw, team, st = linear_check(M, N, K, n_threads);
    if (st != CC_OK) return st;
    if (!gemm || (M > 0 && (!dy || ((dx || dw) && !w) || (dw && !x)))) return CC_EINVAL;
    if (M == 0) {
        if (dw && !accumulate) memset(dw, 0, (size_t)(N * K) * sizeof(REAL));
        if (db && !accumulate) memset(db, 0, (size_t)N * sizeof(REAL));
        return CC_OK;
    }
    dx_rows = M >= (int64_t)CC_LINEAR_ALIGN * n_threads;
    team_dx = dx ? linear_team(n_threads, M, N, K, dx_rows ? M : K) : 1;
    team_dw = (dw || db) ? linear_team(n_threads, M, N, K, N) : 1;
    team = CC_MAX(team_dx, team_dw);
#ifdef _OPENMP
#pragma omp parallel num_threads(team) if (team > 1)
#endif
    {
        int t = 0, nt = 1;
        int64_t lo, hi, r, c;
        REAL one = 1, zero = 0;
#ifdef _OPENMP
        t = omp_get_thread_num();
        nt = omp_get_num_threads();
#endif
        if (dx && t < team_dx) {
            /* column-major: dxᵀ(K, M) = W(K, N) · dyᵀ(N, M) */
            int ldk = (int)K, ldn = (int)N, m, n, k = (int)N;
            if (dx_rows) {
                linear_part(M, t, CC_MIN(nt, team_dx), &lo, &hi);
                m = (int)K;
                n = (int)(hi - lo);
                if (n > 0)
                    gemm("N", "N", &m, &n, &k, &one, w, &ldk, dy + lo * N, &ldn, &zero,
                         dx + lo * K, &ldk);
            } else {
                linear_part(K, t, CC_MIN(nt, team_dx), &lo, &hi);
                m = (int)(hi - lo);
                n = (int)M;
                if (m > 0)
                    gemm("N", "N", &m, &n, &k, &one, w + lo, &ldk, dy, &ldn, &zero,
                         dx + lo, &ldk);
            }
        }
        if ((dw || db) && t < team_dw) {
            linear_part(N, t, CC_MIN(nt, team_dw), &lo, &hi);
            if (dw && hi > lo) {
                /* column-major: dWᵀ(K, N) (+)= xᵀ(K, M) · dy(M, N) */
                int m = (int)K, n = (int)(hi - lo), k = (int)M, ldk = (int)K, ldn = (int)N;
                REAL beta = accumulate ? 1 : 0;
                gemm("N", "T", &m, &n, &k, &one, x, &ldk, dy + lo, &ldn, &beta, dw + lo * K,
                     &ldk);
            }
            /* db: rows in order, in double, CC_LINEAR_DB columns at a time */
            for (c = lo; db && c < hi; c += CC_LINEAR_DB) {
                double s[CC_LINEAR_DB];
                int64_t j, w_ = CC_MIN((int64_t)CC_LINEAR_DB, hi - c);
                for (j = 0; j < w_; ++j) s[j] = 0;
                for (r = 0; r < M; ++r) {
                    const REAL *row = dy + r * N + c;
                    for (j = 0; j < w_; ++j) s[j] += (double)row[j];
                }
                for (j = 0; j < w_; ++j)
                    db[c + j] = accumulate ? (REAL)((double)db[c + j] + s[j]) : (REAL)s[j];
            }
        }
    }
    return CC_OK;
}
