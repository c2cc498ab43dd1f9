/* Strategy DEPTHWISE (C/groups == 1, groups > 1): direct loops, no im2col,
 * no workspace.  Each output plane y[n,k] is the sum over taps of
 * w[k,0,kh,kw] times a shifted, strided view of input plane c = k / (K/groups).
 * First in the planner's list: a depthwise layer always runs here, whatever
 * strategy was asked for.  Included by conv_impl.h inside its element-type
 * template; the shape part is compiled once. */

#ifndef CC_DEPTHWISE_SHAPE
#define CC_DEPTHWISE_SHAPE
static int depthwise_applies(const cc_conv_geom *g) { return cc_conv_is_depthwise(g); }
static int depthwise_pick(const cc_conv_geom *g, int elem_size, int backward)
{
    (void)g, (void)elem_size, (void)backward;
    return 1;
}
static int64_t depthwise_workspace(const cc_conv_geom *g, int64_t chunk) { (void)g; (void)chunk; return 0; }
#endif

static void FN(depthwise_fwd_plane)(const REAL *CC_RESTRICT xc, const REAL *CC_RESTRICT wk,
                             REAL bk, const cc_conv_geom *g, REAL *CC_RESTRICT yp)
{
    const int64_t W = g->W, OH = g->OH, OW = g->OW;
    int64_t kh, kw, oh, ow;
    for (oh = 0; oh < OH; ++oh) {
        REAL *yr = yp + oh * OW;
        for (ow = 0; ow < OW; ++ow) yr[ow] = bk;
        for (kh = 0; kh < g->KH; ++kh) {
            const int64_t ih = oh * g->SH - g->PH + kh * g->DH;
            const int row_inside = ih >= 0 && ih < g->H;
            for (kw = 0; kw < g->KW; ++kw) {
                const int64_t woff = kw * g->DW - g->PW;
                const REAL wv = wk[kh * g->KW + kw];
                const REAL *xr = xc + ih * W + woff;
                int64_t lo, hi;
                cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
                if (!row_inside) lo = hi = 0;
                if (wv - wv != 0) {
                    /* an Inf/NaN tap over the zero padding gives NaN, exactly as
                     * the im2col paths (explicit zeros) and the definition do */
                    const REAL zero = 0;
                    for (ow = 0; ow < lo; ++ow) yr[ow] += wv * zero;
                    for (ow = hi; ow < OW; ++ow) yr[ow] += wv * zero;
                }
                if (!row_inside) continue;
                if (g->SW == 1) {
                    for (ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow];
                } else {
                    const int64_t SW = g->SW;
                    for (ow = lo; ow < hi; ++ow) yr[ow] += wv * xr[ow * SW];
                }
            }
        }
    }
}


/* Whether every value of p[0..n) is finite. */
CC_CLONES static int FN(all_finite)(const REAL *p, int64_t n)
{
    REAL z = 0;
    int64_t i;
    /* p*0 is 0 for finite p and NaN otherwise; any order of the sum will do */
#pragma omp simd reduction(+ : z)
    for (i = 0; i < n; ++i) z += p[i] * 0;
    return z == 0;
}

/* Each thread's padded plane: on the heap, so planes of any size take the
 * vector kernels; where it cannot be had, the bounds-checked loops run. */
static int FN(fwd_depthwise)(const REAL *x, const REAL *w, const REAL *b,
                             const cc_conv_geom *g, int n_threads, REAL *y)
{
    const int64_t Kg = g->K / g->groups, KK = g->KH * g->KW;
    const int64_t L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t total = g->N * g->K;
    const int64_t pad = cc_depthwise_pad_elems(g);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && total > 1)
    {
        REAL *xp = (REAL *)malloc((size_t)pad * sizeof(REAL));
        int64_t i;
#pragma omp for schedule(static)
        for (i = 0; i < total; ++i) {
            const int64_t n = i / g->K, k = i % g->K, c = k / Kg;
            if (xp)
                FN(depthwise_fwd_plane_padded)(x + (n * g->C + c) * HW, w + k * KK,
                                               b ? b[k] : 0, g, xp, y + i * L);
            else
                FN(depthwise_fwd_plane)(x + (n * g->C + c) * HW, w + k * KK, b ? b[k] : 0, g,
                                        y + i * L);
        }
        free(xp);
    }
    return CC_OK;
}

/* dX of one (n, c) plane with one output channel per input channel and
 * stride 1: the forward kernel run over dy with the flipped taps and the
 * complementary padding D (KH-1) - P, which gives H x W.  Needs finite taps
 * (an Inf tap would meet dy's zero padding, which the definition does not
 * have) and P <= D (K-1); returns 0 where it does not apply. */
static int FN(depthwise_dx_plane_padded)(const REAL *dyp, const REAL *wk, const cc_conv_geom *g,
                                  REAL *xp, REAL *dxp)
{
    REAL wf[CC_DEPTHWISE_MAX_TAPS];
    cc_conv_geom t = *g;
    const int64_t KK = g->KH * g->KW;
    int64_t j;
    if (KK > CC_DEPTHWISE_MAX_TAPS || !FN(all_finite)(wk, KK)) return 0;
    for (j = 0; j < KK; ++j) wf[j] = wk[KK - 1 - j];
    t.H = g->OH, t.W = g->OW, t.OH = g->H, t.OW = g->W;
    t.PH = g->DH * (g->KH - 1) - g->PH, t.PW = g->DW * (g->KW - 1) - g->PW;
    FN(depthwise_fwd_plane_padded)(dyp, wf, 0, &t, xp, dxp);
    return 1;
}

static int FN(bwd_depthwise)(const REAL *dy, const REAL *x, const REAL *w,
                             const cc_conv_geom *g, int n_threads, REAL *dx, REAL *dw)
{
    const int64_t Kg = g->K / g->groups, KK = g->KH * g->KW;
    const int64_t W = g->W, OH = g->OH, OW = g->OW, L = OH * OW, HW = g->H * g->W;
    int64_t i;
    if (dx) {
        /* each (n, c) plane gathers from its Kg output planes, in a fixed order */
        const int64_t total = g->N * g->C;
        const int vec = Kg == 1 && g->SH == 1 && g->SW == 1 && g->PH <= g->DH * (g->KH - 1) &&
                        g->PW <= g->DW * (g->KW - 1);
        cc_conv_geom t = *g;
        int64_t pad;
        t.H = g->OH, t.W = g->OW, t.PH = g->DH * (g->KH - 1) - g->PH, t.PW = g->DW * (g->KW - 1) - g->PW;
        pad = cc_depthwise_pad_elems(&t);
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && total > 1)
        {
            REAL *buf = vec ? (REAL *)malloc((size_t)pad * sizeof(REAL)) : NULL;
#pragma omp for schedule(static)
            for (i = 0; i < total; ++i) {
            const int64_t n = i / g->C, c = i % g->C;
            REAL *dxp = dx + i * HW;
            int64_t j, m, kh, kw, oh, ow;
            if (buf && FN(depthwise_dx_plane_padded)(dy + (n * g->K + c) * L, w + c * KK, g, buf,
                                                     dxp))
                continue;
            for (j = 0; j < HW; ++j) dxp[j] = 0;
            for (m = 0; m < Kg; ++m) {
                const int64_t k = c * Kg + m;
                const REAL *dyp = dy + (n * g->K + k) * L;
                for (kh = 0; kh < g->KH; ++kh) {
                    const int64_t hoff = kh * g->DH - g->PH;
                    int64_t ohlo, ohhi;
                    cc_valid_range(g->H, OH, g->SH, hoff, &ohlo, &ohhi);
                    for (kw = 0; kw < g->KW; ++kw) {
                        const int64_t woff = kw * g->DW - g->PW;
                        const REAL wv = w[k * KK + kh * g->KW + kw];
                        int64_t lo, hi;
                        cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
                        for (oh = ohlo; oh < ohhi; ++oh) {
                            REAL *dst = dxp + (oh * g->SH + hoff) * W + woff;
                            const REAL *s = dyp + oh * OW;
                            if (g->SW == 1) {
                                for (ow = lo; ow < hi; ++ow) dst[ow] += wv * s[ow];
                            } else {
                                const int64_t SW = g->SW;
                                for (ow = lo; ow < hi; ++ow) dst[ow * SW] += wv * s[ow];
                            }
                        }
                    }
                }
            }
            }
            free(buf);
        }
    }
    if (dw && g->SW == 1 && KK <= CC_DEPTHWISE_MAX_TAPS) {
        /* vector sums over padded planes, one output channel per task; a
         * channel with any Inf/NaN in its planes sends the call to the loops
     * below, which sum only the positions inside the plane */
        const int64_t pad = cc_depthwise_pad_elems(g);
        const int64_t OWV = cc_depthwise_dy_cols(g), dyn = cc_depthwise_dy_rows(g) * OWV;
        int failed = 0;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && g->K > 1) reduction(| : failed)
        {
            REAL *xp = (REAL *)malloc((size_t)(pad + dyn) * sizeof(REAL));
            REAL *dyb = xp ? xp + pad : NULL;
            int64_t k;
            if (!xp) failed = 1;
            if (dyb)
                for (i = 0; i < dyn; ++i) dyb[i] = 0;
#pragma omp for schedule(static)
            for (k = 0; k < g->K; ++k) {
                const int64_t c = k / Kg;
                double part[CC_DEPTHWISE_MAX_TAPS];
                int64_t n, j, oh, ok = xp != NULL;
                for (n = 0; n < g->N && ok; ++n)
                    ok = FN(all_finite)(x + (n * g->C + c) * HW, HW) &&
                         FN(all_finite)(dy + (n * g->K + k) * L, L);
                if (!ok) {
                    failed = 1;
                    continue;
                }
                for (j = 0; j < KK; ++j) part[j] = 0;
                for (n = 0; n < g->N; ++n) {
                    const REAL *dyp = dy + (n * g->K + k) * L;
                    /* the padded input plane, and dy in rows of OWV */
                    FN(depthwise_fwd_plane_pad)(x + (n * g->C + c) * HW, g, xp);
                    for (oh = 0; oh < OH; ++oh)
                        memcpy(dyb + oh * OWV, dyp + oh * OW, (size_t)OW * sizeof(REAL));
                    FN(depthwise_wgrad_plane)(xp, dyb, g, part);
                }
                for (j = 0; j < KK; ++j) dw[k * KK + j] = (REAL)part[j];
            }
            free(xp);
        }
        if (!failed) return CC_OK;
        /* (rare: Inf/NaN, or no memory) the loops below redo every channel */
    }
    if (dw) {
        /* dw[k, tap] = sum over n and positions, accumulated per output column
         * into a row of partial sums (vectorisable), then summed in order */
#pragma omp parallel num_threads(n_threads) if (n_threads > 1 && g->K > 1)
        {
            int64_t k;
#pragma omp for schedule(static)
            for (k = 0; k < g->K; ++k) {
                const int64_t c = k / Kg;
                int64_t kh, kw;
                for (kh = 0; kh < g->KH; ++kh) {
                    const int64_t hoff = kh * g->DH - g->PH;
                    int64_t ohlo, ohhi;
                    cc_valid_range(g->H, OH, g->SH, hoff, &ohlo, &ohhi);
                    for (kw = 0; kw < g->KW; ++kw) {
                        const int64_t woff = kw * g->DW - g->PW;
                        int64_t lo, hi, n, oh, ow;
                        double total = 0;
                        cc_valid_range(W, OW, g->SW, woff, &lo, &hi);
                        for (n = 0; n < g->N; ++n) {
                            const REAL *dyp = dy + (n * g->K + k) * L;
                            const REAL *xp = x + (n * g->C + c) * HW;
                            for (oh = ohlo; oh < ohhi; ++oh) {
                                const REAL *s = dyp + oh * OW;
                                const REAL *xr = xp + (oh * g->SH + hoff) * W + woff;
                                REAL part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
                                ow = lo;
                                if (g->SW == 1) {
                                    for (; ow + 8 <= hi; ow += 8) {
                                        int q;
                                        for (q = 0; q < 8; ++q) part[q] += s[ow + q] * xr[ow + q];
                                    }
                                }
                                for (; ow < hi; ++ow) part[ow & 7] += s[ow] * xr[ow * g->SW];
                                total += (double)(((part[0] + part[1]) + (part[2] + part[3])) +
                                                  ((part[4] + part[5]) + (part[6] + part[7])));
                            }
                        }
                        dw[k * KK + kh * g->KW + kw] = (REAL)total;
                    }
                }
            }
        }
    }
    return CC_OK;
}


/* the strategy interface */
static int FN(depthwise_fwd)(const REAL *x, const REAL *w, const REAL *b, const cc_conv_geom *g,
                             REAL *work, int64_t work_elems, int64_t B, int n_threads,
                             GEMM_T gemm, REAL *y)
{
    (void)work, (void)work_elems, (void)B, (void)gemm;
    return FN(fwd_depthwise)(x, w, b, g, n_threads, y);
}

static int FN(depthwise_bwd)(const REAL *dy, const REAL *x, const REAL *w, const cc_conv_geom *g,
                             REAL *work, int64_t work_elems, int64_t B, int n_threads,
                             GEMM_T gemm, REAL *dx, REAL *dw)
{
    (void)work, (void)work_elems, (void)B, (void)gemm;
    return FN(bwd_depthwise)(dy, x, w, g, n_threads, dx, dw);
}
