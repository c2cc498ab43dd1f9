/* Body of the normalisation family, instantiated once per element type by
 * norm.c with REAL (float/double) and SFX (f32/f64) defined.
 *
 * Batch norm runs in up to three phases inside one OpenMP team (see bn_plan
 * in norm.c): the moments of every (chunk, channel) into the workspace, in
 * parallel over tasks; each channel's chunks merged in order into its
 * statistics and per-element coefficients, in parallel over channels; the
 * per-element pass, in parallel over tasks.  On large maps training runs a
 * channel at a time instead, the three steps on one channel's planes while
 * they stay in cache (bn_fused in norm.c; the same chunks and order, the same
 * bits).  Statistics are accumulated in double; the per-element pass works
 * in REAL, with the rounding of the mean folded into the shift, so it costs
 * no accuracy where mean >> std. */

#ifndef CC_CAT
#define CC_CAT2(a, b) a##_##b
#define CC_CAT(a, b) CC_CAT2(a, b)
#define FN(name) CC_CAT(name, SFX)
#endif

#define V4_LOAD CC_CAT(v4_load, SFX)

/* ------------------------------------------------------------ statistics */

/* Moments of one chunk of x: planes [0, np) of len elements, plane p at
 * x + p*stride.  Two passes (the chunk is in L1 for the second), each in 16
 * lanes with the plane's tail after them in order: the mean, then the
 * squared deviations from it.  Stored to w (bn_moments order). */
CC_CLONES static void FN(chunk_x)(const REAL *CC_RESTRICT x, int64_t stride, int64_t np,
                                  int64_t len, double *w)
{
    v4d s0 = v4_zero(), s1 = v4_zero(), s2 = v4_zero(), s3 = v4_zero();
    v4d q0 = v4_zero(), q1 = v4_zero(), q2 = v4_zero(), q3 = v4_zero(), M;
    const double cnt = (double)(np * len);
    double st = 0, qt = 0, m;
    bn_moments r;
    int64_t p, i;
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        for (i = 0; i + 16 <= len; i += 16) {
            s0 = v4_add(s0, V4_LOAD(v + i));
            s1 = v4_add(s1, V4_LOAD(v + i + 4));
            s2 = v4_add(s2, V4_LOAD(v + i + 8));
            s3 = v4_add(s3, V4_LOAD(v + i + 12));
        }
        for (; i < len; ++i) st += (double)v[i];
    }
    m = (v4_sum4(s0, s1, s2, s3) + st) / cnt;
    M = v4_splat(m);
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        for (i = 0; i + 16 <= len; i += 16) {
            v4d d;
            d = v4_sub(V4_LOAD(v + i), M);
            q0 = v4_add(q0, v4_mul(d, d));
            d = v4_sub(V4_LOAD(v + i + 4), M);
            q1 = v4_add(q1, v4_mul(d, d));
            d = v4_sub(V4_LOAD(v + i + 8), M);
            q2 = v4_add(q2, v4_mul(d, d));
            d = v4_sub(V4_LOAD(v + i + 12), M);
            q3 = v4_add(q3, v4_mul(d, d));
        }
        for (; i < len; ++i) {
            const double d = (double)v[i] - m;
            qt += d * d;
        }
    }
    r.n = cnt;
    r.mx = m;
    r.my = 0;
    r.sy = 0;
    r.mxx = v4_sum4(q0, q1, q2, q3) + qt;
    r.mxy = 0;
    mom_store(w, &r);
}

/* As chunk_x for the pairs (x, dy): also the sum of dy and the centred cross
 * sum sum (x - mx)(dy - my). */
CC_CLONES static void FN(chunk_xy)(const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT dy,
                                   int64_t stride, int64_t np, int64_t len, double *w)
{
    v4d s0 = v4_zero(), s1 = v4_zero(), s2 = v4_zero(), s3 = v4_zero();
    v4d t0 = v4_zero(), t1 = v4_zero(), t2 = v4_zero(), t3 = v4_zero();
    v4d q0 = v4_zero(), q1 = v4_zero(), q2 = v4_zero(), q3 = v4_zero();
    v4d r0 = v4_zero(), r1 = v4_zero(), r2 = v4_zero(), r3 = v4_zero(), MX, MY;
    const double cnt = (double)(np * len);
    double st = 0, tt = 0, qt = 0, rt = 0, mx, my, sy;
    bn_moments r;
    int64_t p, i;
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        const REAL *CC_RESTRICT g = dy + p * stride;
        for (i = 0; i + 16 <= len; i += 16) {
            s0 = v4_add(s0, V4_LOAD(v + i));
            s1 = v4_add(s1, V4_LOAD(v + i + 4));
            s2 = v4_add(s2, V4_LOAD(v + i + 8));
            s3 = v4_add(s3, V4_LOAD(v + i + 12));
            t0 = v4_add(t0, V4_LOAD(g + i));
            t1 = v4_add(t1, V4_LOAD(g + i + 4));
            t2 = v4_add(t2, V4_LOAD(g + i + 8));
            t3 = v4_add(t3, V4_LOAD(g + i + 12));
        }
        for (; i < len; ++i) {
            st += (double)v[i];
            tt += (double)g[i];
        }
    }
    mx = (v4_sum4(s0, s1, s2, s3) + st) / cnt;
    sy = v4_sum4(t0, t1, t2, t3) + tt;
    my = sy / cnt;
    MX = v4_splat(mx);
    MY = v4_splat(my);
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        const REAL *CC_RESTRICT g = dy + p * stride;
        for (i = 0; i + 16 <= len; i += 16) {
            v4d d, e;
            d = v4_sub(V4_LOAD(v + i), MX);
            e = v4_sub(V4_LOAD(g + i), MY);
            q0 = v4_add(q0, v4_mul(d, d));
            r0 = v4_add(r0, v4_mul(d, e));
            d = v4_sub(V4_LOAD(v + i + 4), MX);
            e = v4_sub(V4_LOAD(g + i + 4), MY);
            q1 = v4_add(q1, v4_mul(d, d));
            r1 = v4_add(r1, v4_mul(d, e));
            d = v4_sub(V4_LOAD(v + i + 8), MX);
            e = v4_sub(V4_LOAD(g + i + 8), MY);
            q2 = v4_add(q2, v4_mul(d, d));
            r2 = v4_add(r2, v4_mul(d, e));
            d = v4_sub(V4_LOAD(v + i + 12), MX);
            e = v4_sub(V4_LOAD(g + i + 12), MY);
            q3 = v4_add(q3, v4_mul(d, d));
            r3 = v4_add(r3, v4_mul(d, e));
        }
        for (; i < len; ++i) {
            const double d = (double)v[i] - mx, e = (double)g[i] - my;
            qt += d * d;
            rt += d * e;
        }
    }
    r.n = cnt;
    r.mx = mx;
    r.my = my;
    r.sy = sy;
    r.mxx = v4_sum4(q0, q1, q2, q3) + qt;
    r.mxy = v4_sum4(r0, r1, r2, r3) + rt;
    mom_store(w, &r);
}

/* The training backward's sums of one chunk when the forward's statistics
 * are at hand (m: the channel's batch mean): sum dy and sum dy (x - m), one
 * pass in 16 lanes (dy's lanes as chunk_xy's).  Stored with mx = my = 0, so
 * the chunks merge by plain addition. */
CC_CLONES static void FN(chunk_dy)(const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT dy,
                                   int64_t stride, int64_t np, int64_t len, double m,
                                   double *w)
{
    v4d t0 = v4_zero(), t1 = v4_zero(), t2 = v4_zero(), t3 = v4_zero();
    v4d r0 = v4_zero(), r1 = v4_zero(), r2 = v4_zero(), r3 = v4_zero();
    const v4d M = v4_splat(m);
    double tt = 0, rt = 0;
    bn_moments r;
    int64_t p, i;
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        const REAL *CC_RESTRICT g = dy + p * stride;
        for (i = 0; i + 16 <= len; i += 16) {
            v4d e;
            e = V4_LOAD(g + i);
            t0 = v4_add(t0, e);
            r0 = v4_add(r0, v4_mul(e, v4_sub(V4_LOAD(v + i), M)));
            e = V4_LOAD(g + i + 4);
            t1 = v4_add(t1, e);
            r1 = v4_add(r1, v4_mul(e, v4_sub(V4_LOAD(v + i + 4), M)));
            e = V4_LOAD(g + i + 8);
            t2 = v4_add(t2, e);
            r2 = v4_add(r2, v4_mul(e, v4_sub(V4_LOAD(v + i + 8), M)));
            e = V4_LOAD(g + i + 12);
            t3 = v4_add(t3, e);
            r3 = v4_add(r3, v4_mul(e, v4_sub(V4_LOAD(v + i + 12), M)));
        }
        for (; i < len; ++i) {
            const double e = (double)g[i];
            tt += e;
            rt += e * ((double)v[i] - m);
        }
    }
    r.n = (double)(np * len);
    r.mx = r.my = r.mxx = 0;
    r.sy = v4_sum4(t0, t1, t2, t3) + tt;
    r.mxy = v4_sum4(r0, r1, r2, r3) + rt;
    mom_store(w, &r);
}

/* Moments of channels [0, nc) over planes [0, np) (short planes, L <
 * CC_BN_MIN_L): row p of channel c is the L elements at x + p*stride + c*L.
 * The group's nc*L values of a plane are contiguous, so each position (c, l)
 * gets its own sum over the planes, in vectors across the positions; a
 * channel's sum is then its L positions' sums added in order (the order is
 * fixed by the shape).  Two passes: the means, then the deviations from
 * them.  dy may be NULL.  Channel c's moments go to w + c*CC_BN_MOM.
 * (Summing a channel's values one by one ran scalar, one add waiting on the
 * last: 32 x 128 x 4 x 4's training backward took 0.12 ms.) */
#define CC_BN_GROUP_POS (CC_BN_GROUP * CC_BN_MIN_L)
CC_CLONES static void FN(chunk_group)(const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT dy,
                                      int64_t stride, int64_t np, int64_t nc, int64_t L,
                                      double *w)
{
    double s[CC_BN_GROUP_POS], t[CC_BN_GROUP_POS], ex[CC_BN_GROUP_POS], ey[CC_BN_GROUP_POS];
    double mx[CC_BN_GROUP], my[CC_BN_GROUP], sy[CC_BN_GROUP], q[CC_BN_GROUP], r[CC_BN_GROUP];
    const double cnt = (double)(np * L);
    const int64_t n = nc * L;
    int64_t p, c, l, i;
    for (i = 0; i < n; ++i) s[i] = t[i] = 0;
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        for (i = 0; i < n; ++i) s[i] += (double)v[i];
        if (dy) {
            const REAL *CC_RESTRICT g = dy + p * stride;
            for (i = 0; i < n; ++i) t[i] += (double)g[i];
        }
    }
    for (c = 0; c < nc; ++c) {
        double a = 0, b = 0;
        for (l = 0; l < L; ++l) {
            a += s[c * L + l];
            b += t[c * L + l];
        }
        mx[c] = a / cnt;
        my[c] = b / cnt;
        sy[c] = b;
        for (l = 0; l < L; ++l) {
            ex[c * L + l] = mx[c];
            ey[c * L + l] = my[c];
        }
    }
    for (i = 0; i < n; ++i) s[i] = t[i] = 0;
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        if (dy) {
            const REAL *CC_RESTRICT g = dy + p * stride;
            for (i = 0; i < n; ++i) {
                const double d = (double)v[i] - ex[i];
                s[i] += d * d;
                t[i] += d * ((double)g[i] - ey[i]);
            }
        } else {
            for (i = 0; i < n; ++i) {
                const double d = (double)v[i] - ex[i];
                s[i] += d * d;
            }
        }
    }
    for (c = 0; c < nc; ++c) {
        bn_moments m;
        q[c] = r[c] = 0;
        for (l = 0; l < L; ++l) {
            q[c] += s[c * L + l];
            r[c] += t[c * L + l];
        }
        m.n = cnt;
        m.mx = mx[c];
        m.my = my[c];
        m.sy = sy[c];
        m.mxx = q[c];
        m.mxy = r[c];
        mom_store(w + c * CC_BN_MOM, &m);
    }
}

/* chunk_dy for a group of channels with short planes (as chunk_group: a sum
 * per position over the planes, then a channel's positions in order); mean:
 * the group's batch means. */
CC_CLONES static void FN(chunk_group_dy)(const REAL *CC_RESTRICT x, const REAL *CC_RESTRICT dy,
                                         int64_t stride, int64_t np, int64_t nc, int64_t L,
                                         const double *mean, double *w)
{
    double t[CC_BN_GROUP_POS], r[CC_BN_GROUP_POS], ex[CC_BN_GROUP_POS];
    const int64_t n = nc * L;
    int64_t p, c, l, i;
    for (c = 0; c < nc; ++c)
        for (l = 0; l < L; ++l) ex[c * L + l] = mean[c];
    for (i = 0; i < n; ++i) t[i] = r[i] = 0;
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT v = x + p * stride;
        const REAL *CC_RESTRICT g = dy + p * stride;
        for (i = 0; i < n; ++i) {
            const double e = (double)g[i];
            t[i] += e;
            r[i] += e * ((double)v[i] - ex[i]);
        }
    }
    for (c = 0; c < nc; ++c) {
        bn_moments m;
        m.n = (double)(np * L);
        m.mx = m.my = m.mxx = 0;
        m.sy = m.mxy = 0;
        for (l = 0; l < L; ++l) {
            m.sy += t[c * L + l];
            m.mxy += r[c * L + l];
        }
        mom_store(w + c * CC_BN_MOM, &m);
    }
}

/* Moments of task t's chunk, one record per channel of its group, to
 * work[(j*C + c)*CC_BN_MOM].  dy may be NULL (forward). */
static void FN(stats_task)(const REAL *x, const REAL *dy, const double *smean,
                           const bn_plan *p, int64_t t, double *work)
{
    const bn_task k = bn_task_at(p, t);
    const int64_t S = p->C * p->L;
    int64_t c;
    if (p->L >= CC_BN_MIN_L) {
        for (c = k.c0; c < k.c1; ++c) {
            const int64_t off = k.n0 * S + c * p->L + k.l0;
            double *w = work + (k.j * p->C + c) * CC_BN_MOM;
            if (smean)
                FN(chunk_dy)(x + off, dy + off, S, k.n1 - k.n0, k.l1 - k.l0, smean[c], w);
            else if (dy)
                FN(chunk_xy)(x + off, dy + off, S, k.n1 - k.n0, k.l1 - k.l0, w);
            else
                FN(chunk_x)(x + off, S, k.n1 - k.n0, k.l1 - k.l0, w);
        }
    } else {
        const int64_t off = k.n0 * S + k.c0 * p->L;
        double *w = work + (k.j * p->C + k.c0) * CC_BN_MOM;
        if (smean)
            FN(chunk_group_dy)(x + off, dy + off, S, k.n1 - k.n0, k.c1 - k.c0, p->L,
                               smean + k.c0, w);
        else
            FN(chunk_group)(x + off, dy ? dy + off : NULL, S, k.n1 - k.n0, k.c1 - k.c0, p->L,
                            w);
    }
}

/* ------------------------------------------------------ per-element passes */

/* The coefficients of task t's channel group, as REAL. */
static void FN(group_coef)(const double *coef, const bn_task *k, REAL *a, REAL *b, REAL *c,
                           REAL *d)
{
    int64_t i;
    for (i = 0; i < k->c1 - k->c0; ++i) {
        const double *q = coef + (k->c0 + i) * CC_BN_COEF;
        a[i] = (REAL)q[0];
        b[i] = (REAL)q[1];
        c[i] = (REAL)q[2];
        d[i] = (REAL)q[3];
    }
}

/* y = (x - mh) * s + sh over n elements. */
CC_CLONES static void FN(fwd_span)(const REAL *CC_RESTRICT x, int64_t n, REAL mh, REAL s,
                                   REAL sh, REAL *CC_RESTRICT y)
{
    int64_t i;
    for (i = 0; i < n; ++i) y[i] = (x[i] - mh) * s + sh;
}

/* dx = s * ((dy - a) - k * (x - mh)) over n elements. */
CC_CLONES static void FN(bwd_span)(const REAL *CC_RESTRICT dy, const REAL *CC_RESTRICT x,
                                   int64_t n, REAL mh, REAL s, REAL a, REAL k,
                                   REAL *CC_RESTRICT dx)
{
    int64_t i;
    for (i = 0; i < n; ++i) dx[i] = s * ((dy[i] - a) - k * (x[i] - mh));
}

/* Forward per-element pass of task t (coefficients mh, s, sh per channel). */
static void FN(fwd_task)(const REAL *x, const bn_plan *p, int64_t t, const double *coef,
                         REAL *y)
{
    const bn_task k = bn_task_at(p, t);
    const int64_t S = p->C * p->L, L = p->L, nc = k.c1 - k.c0;
    REAL mh[CC_BN_GROUP], s[CC_BN_GROUP], sh[CC_BN_GROUP], unused[CC_BN_GROUP];
    int64_t n, c, l;
    FN(group_coef)(coef, &k, mh, s, sh, unused);
    for (n = k.n0; n < k.n1; ++n) {
        const REAL *CC_RESTRICT xr = x + n * S + k.c0 * L;
        REAL *CC_RESTRICT yr = y + n * S + k.c0 * L;
        if (L >= CC_BN_MIN_L) {
            for (c = 0; c < nc; ++c)
                FN(fwd_span)(xr + c * L + k.l0, k.l1 - k.l0, mh[c], s[c], sh[c],
                             yr + c * L + k.l0);
        } else {
            for (c = 0; c < nc; ++c)
                for (l = 0; l < L; ++l)
                    yr[c * L + l] = (xr[c * L + l] - mh[c]) * s[c] + sh[c];
        }
    }
}

/* Training backward per-element pass of task t (coefficients mh, s, a, k). */
static void FN(bwd_task)(const REAL *dy, const REAL *x, const bn_plan *p, int64_t t,
                         const double *coef, REAL *dx)
{
    const bn_task k = bn_task_at(p, t);
    const int64_t S = p->C * p->L, L = p->L, nc = k.c1 - k.c0;
    REAL mh[CC_BN_GROUP], s[CC_BN_GROUP], a[CC_BN_GROUP], kk[CC_BN_GROUP];
    int64_t n, c, l;
    FN(group_coef)(coef, &k, mh, s, a, kk);
    for (n = k.n0; n < k.n1; ++n) {
        const int64_t off = n * S + k.c0 * L;
        const REAL *CC_RESTRICT gr = dy + off;
        const REAL *CC_RESTRICT xr = x + off;
        REAL *CC_RESTRICT o = dx + off;
        if (L >= CC_BN_MIN_L) {
            for (c = 0; c < nc; ++c)
                FN(bwd_span)(gr + c * L + k.l0, xr + c * L + k.l0, k.l1 - k.l0, mh[c], s[c],
                             a[c], kk[c], o + c * L + k.l0);
        } else {
            for (c = 0; c < nc; ++c)
                for (l = 0; l < L; ++l)
                    o[c * L + l] =
                        s[c] * ((gr[c * L + l] - a[c]) - kk[c] * (xr[c * L + l] - mh[c]));
        }
    }
}

/* Eval backward of one chunk of one channel: dx = dy * s, and the sums
 * sum dy and sum dy (x - m) (chunk_dy's, stored as sy and mxy of w; the
 * chunk is in cache for the second pass). */
CC_CLONES static void FN(eval_chunk)(const REAL *CC_RESTRICT dy, const REAL *CC_RESTRICT x,
                                     int64_t stride, int64_t np, int64_t len, REAL m, REAL s,
                                     REAL *CC_RESTRICT dx, double *w)
{
    int64_t p, i;
    FN(chunk_dy)(x, dy, stride, np, len, (double)m, w);
    for (p = 0; p < np; ++p) {
        const REAL *CC_RESTRICT g = dy + p * stride;
        REAL *CC_RESTRICT o = dx + p * stride;
        for (i = 0; i < len; ++i) o[i] = g[i] * s;
    }
}

/* Eval backward of task t: dx, and the chunk's sums per channel to the
 * workspace (coefficients: m, s). */
static void FN(eval_task)(const REAL *dy, const REAL *x, const bn_plan *p, int64_t t,
                          const double *coef, REAL *dx, double *work)
{
    const bn_task k = bn_task_at(p, t);
    const int64_t S = p->C * p->L, L = p->L, nc = k.c1 - k.c0;
    REAL m[CC_BN_GROUP], s[CC_BN_GROUP], u1[CC_BN_GROUP], u2[CC_BN_GROUP];
    int64_t n, c, l;
    FN(group_coef)(coef, &k, m, s, u1, u2);
    if (L >= CC_BN_MIN_L) {
        for (c = 0; c < nc; ++c) {
            const int64_t off = k.n0 * S + (k.c0 + c) * L + k.l0;
            FN(eval_chunk)(dy + off, x + off, S, k.n1 - k.n0, k.l1 - k.l0, m[c], s[c],
                           dx + off, work + (k.j * p->C + k.c0 + c) * CC_BN_MOM);
        }
        return;
    }
    {
        /* (short planes: chunk_group_dy's sums about the running means) */
        double md[CC_BN_GROUP] = {0};
        for (c = 0; c < nc; ++c) md[c] = (double)m[c];
        FN(chunk_group_dy)(x + k.n0 * S + k.c0 * L, dy + k.n0 * S + k.c0 * L, S, k.n1 - k.n0,
                           nc, L, md, work + (k.j * p->C + k.c0) * CC_BN_MOM);
        for (n = k.n0; n < k.n1; ++n) {
            const int64_t off = n * S + k.c0 * L;
            const REAL *CC_RESTRICT gr = dy + off;
            REAL *CC_RESTRICT o = dx + off;
            for (c = 0; c < nc; ++c)
                for (l = 0; l < L; ++l) o[c * L + l] = gr[c * L + l] * s[c];
        }
    }
}

/* ------------------------------------------------------ per-channel steps */

/* Channel c's forward coefficients (mh, s, sh: y = (x - mh) s + sh) from its
 * merged moments (training) or the running statistics, and its statistics. */
static void FN(fwd_coef)(const bn_plan *p, const double *work, const REAL *rmean,
                         const REAL *rvar, const REAL *w, const REAL *b, double eps,
                         int training, int64_t c, double *coef, double *mean, double *var)
{
    double m, v, sd, *q = coef + c * CC_BN_COEF;
    REAL mh;
    if (training) {
        bn_moments a;
        mom_channel(work, p->J, p->C, c, &a);
        m = a.mx;
        v = a.mxx / a.n;
    } else {
        m = (double)rmean[c];
        v = (double)rvar[c];
    }
    mean[c] = m;
    var[c] = v;
    sd = 1.0 / sqrt(v + eps);
    if (w) sd *= (double)w[c];
    /* y = (x - m) s + b = (x - mh) s + (b - (m - mh) s), mh = m rounded */
    mh = (REAL)m;
    q[0] = (double)mh;
    q[1] = sd;
    q[2] = (b ? (double)b[c] : 0.0) - (m - (double)mh) * sd;
    q[3] = 0;
}

/* Channel c's training-backward coefficients (mh, s, a, k: dx = s ((dy - a)
 * - k (x - mh))) from its merged moments, and its dw and db. */
static void FN(bwd_coef)(const bn_plan *p, const double *work, const double *smean,
                         const double *svar, const REAL *w, double eps, int64_t c,
                         double *coef, REAL *dw, REAL *db)
{
    /* forward: y = xhat w + b, xhat = (x - mean) is, is = 1/sqrt(var + eps)
     * =>  db = sum dy, dw = sum dy xhat = is sum dy (x - mean),
     *     dx = w is (dy - db/M - xhat dw/M)
     * (with the forward's statistics, smean and svar, the moments hold sum dy
     * and sum dy (x - mean) alone: chunk_dy) */
    bn_moments a;
    double is, gw, sd, k, *q = coef + c * CC_BN_COEF;
    REAL mh;
    mom_channel(work, p->J, p->C, c, &a);
    if (smean) {
        a.mx = smean[c];
        is = 1.0 / sqrt(svar[c] + eps);
    } else {
        is = 1.0 / sqrt(a.mxx / a.n + eps);
    }
    gw = is * a.mxy;
    sd = w ? is * (double)w[c] : is;
    k = is * gw / a.n;
    dw[c] = (REAL)gw;
    db[c] = (REAL)a.sy;
    /* dy - a - k (x - m) = (dy - (a - k (m - mh))) - k (x - mh) */
    mh = (REAL)a.mx;
    q[0] = (double)mh;
    q[1] = sd;
    q[2] = a.sy / a.n - k * (a.mx - (double)mh);
    q[3] = k;
}

/* Training forward of channel c alone, start to end: its chunks' moments
 * (stats_task's, in the same chunks), its coefficients, then its elements.
 * The same values in the same order as the three phases give -- the same
 * bits -- but the channel's planes are read the second time from cache
 * (see CC_BN_FUSE_BYTES).  dy may be NULL; with dy the training backward's
 * three steps, dx to out. */
static void FN(channel_fused)(const REAL *x, const REAL *dy, const double *smean,
                              const double *svar, const bn_plan *p, int64_t c, const REAL *w,
                              const REAL *b, double eps, double *work, double *coef,
                              double *mean, double *var, REAL *dw, REAL *db, REAL *out)
{
    const int64_t S = p->C * p->L, L = p->L;
    const double *q = coef + c * CC_BN_COEF;
    int64_t j, n;
    for (j = 0; j < p->J; ++j) {
        const bn_task k = bn_task_at(p, j * p->ngroups + c / CC_BN_GROUP);
        const int64_t off = k.n0 * S + c * L + k.l0;
        double *m = work + (j * p->C + c) * CC_BN_MOM;
        if (smean)
            FN(chunk_dy)(x + off, dy + off, S, k.n1 - k.n0, k.l1 - k.l0, smean[c], m);
        else if (dy)
            FN(chunk_xy)(x + off, dy + off, S, k.n1 - k.n0, k.l1 - k.l0, m);
        else
            FN(chunk_x)(x + off, S, k.n1 - k.n0, k.l1 - k.l0, m);
    }
    if (dy) {
        FN(bwd_coef)(p, work, smean, svar, w, eps, c, coef, dw, db);
        for (n = 0; n < p->N; ++n)
            FN(bwd_span)(dy + n * S + c * L, x + n * S + c * L, L, (REAL)q[0], (REAL)q[1],
                         (REAL)q[2], (REAL)q[3], out + n * S + c * L);
    } else {
        FN(fwd_coef)(p, work, NULL, NULL, w, b, eps, 1, c, coef, mean, var);
        for (n = 0; n < p->N; ++n)
            FN(fwd_span)(x + n * S + c * L, L, (REAL)q[0], (REAL)q[1], (REAL)q[2],
                         out + n * S + c * L);
    }
}

/* ---------------------------------------------------------------- kernels */

int FN(cc_batch_norm_fwd)(const REAL *x, const REAL *w, const REAL *b, const REAL *rmean,
                          const REAL *rvar, int64_t N, int64_t C, int64_t L, double eps,
                          int training, double *work, int64_t work_elems, int n_threads,
                          REAL *y, double *mean, double *var)
{
    bn_plan p;
    double *coef;
    int team;
    if (bn_check(x, rmean, rvar, N, C, L, eps, training, work, work_elems, n_threads, y, mean,
                 var) != CC_OK)
        return CC_EINVAL;
    bn_plan_make(N, C, L, &p);
    coef = work + p.J * C * CC_BN_MOM;
    team = norm_team(n_threads, N * C * L, training ? 3 : 2, sizeof(REAL));
    if (training && bn_fused(&p, team, 1, sizeof(REAL))) {
        int64_t c;
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
        for (c = 0; c < C; ++c)
            FN(channel_fused)(x, NULL, NULL, NULL, &p, c, w, b, eps, work, coef, mean, var, NULL,
                              NULL, y);
        return CC_OK;
    }
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int64_t t, c;
        if (training) {
#pragma omp for schedule(static)
            for (t = 0; t < p.tasks; ++t) FN(stats_task)(x, NULL, NULL, &p, t, work);
        }
#pragma omp for schedule(static)
        for (c = 0; c < C; ++c) FN(fwd_coef)(&p, work, rmean, rvar, w, b, eps, training, c, coef,
                                             mean, var);
#pragma omp for schedule(static)
        for (t = 0; t < p.tasks; ++t) FN(fwd_task)(x, &p, t, coef, y);
    }
    return CC_OK;
}

static int FN(bn_bwd)(const REAL *dy, const REAL *x, const REAL *w, const REAL *rmean,
                      const REAL *rvar, const double *smean, const double *svar, int64_t N,
                      int64_t C, int64_t L, double eps, int training, double *work,
                      int64_t work_elems, int n_threads, REAL *dx, REAL *dw, REAL *db)
{
    bn_plan p;
    double *coef;
    int team;
    if (bn_check(x, rmean, rvar, N, C, L, eps, training, work, work_elems, n_threads, dx, dw,
                 db) != CC_OK)
        return CC_EINVAL;
    if (N * C * L > 0 && !dy) return CC_EINVAL;
    bn_plan_make(N, C, L, &p);
    coef = work + p.J * C * CC_BN_MOM;
    team = norm_team(n_threads, N * C * L, training ? 5 : 3, sizeof(REAL));
    if (training && bn_fused(&p, team, 2, sizeof(REAL))) {
        int64_t c;
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
        for (c = 0; c < C; ++c)
            FN(channel_fused)(x, dy, smean, svar, &p, c, w, NULL, eps, work, coef, NULL, NULL,
                              dw, db, dx);
        return CC_OK;
    }
    if (training) {
#pragma omp parallel num_threads(team) if (team > 1)
        {
            int64_t t, c;
#pragma omp for schedule(static)
            for (t = 0; t < p.tasks; ++t) FN(stats_task)(x, dy, smean, &p, t, work);
#pragma omp for schedule(static)
            for (c = 0; c < C; ++c) FN(bwd_coef)(&p, work, smean, svar, w, eps, c, coef, dw, db);
#pragma omp for schedule(static)
            for (t = 0; t < p.tasks; ++t) FN(bwd_task)(dy, x, &p, t, coef, dx);
        }
        return CC_OK;
    }
    /* forward (eval): y = (x - rmean) is w + b, constants  =>  dx = w is dy,
     * dw = is sum dy (x - rmean), db = sum dy */
#pragma omp parallel num_threads(team) if (team > 1)
    {
        int64_t t, c, j;
#pragma omp for schedule(static)
        for (c = 0; c < C; ++c) {
            double *q = coef + c * CC_BN_COEF;
            const double is = 1.0 / sqrt((double)rvar[c] + eps);
            q[0] = (double)rmean[c];
            q[1] = w ? is * (double)w[c] : is;
            q[2] = is;
            q[3] = 0;
        }
#pragma omp for schedule(static)
        for (t = 0; t < p.tasks; ++t) FN(eval_task)(dy, x, &p, t, coef, dx, work);
#pragma omp for schedule(static)
        for (c = 0; c < C; ++c) {
            double sy = 0, sxy = 0;
            for (j = 0; j < p.J; ++j) {
                const double *r = work + (j * C + c) * CC_BN_MOM;
                sy += r[3];
                sxy += r[5];
            }
            dw[c] = (REAL)(coef[c * CC_BN_COEF + 2] * sxy);
            db[c] = (REAL)sy;
        }
    }
    return CC_OK;
}

int FN(cc_batch_norm_bwd)(const REAL *dy, const REAL *x, const REAL *w, const REAL *rmean,
                          const REAL *rvar, int64_t N, int64_t C, int64_t L, double eps,
                          int training, double *work, int64_t work_elems, int n_threads,
                          REAL *dx, REAL *dw, REAL *db)
{
    return FN(bn_bwd)(dy, x, w, rmean, rvar, NULL, NULL, N, C, L, eps, training, work,
                      work_elems, n_threads, dx, dw, db);
}

int FN(cc_batch_norm_bwd_saved)(const REAL *dy, const REAL *x, const REAL *w,
                                const double *mean, const double *var, int64_t N, int64_t C,
                                int64_t L, double eps, double *work, int64_t work_elems,
                                int n_threads, REAL *dx, REAL *dw, REAL *db)
{
    if (C > 0 && (!mean || !var)) return CC_EINVAL;
    return FN(bn_bwd)(dy, x, w, NULL, NULL, mean, var, N, C, L, eps, 1, work, work_elems,
                      n_threads, dx, dw, db);
}

/* ------------------------------------------------------------------- relu */

CC_CLONES static void FN(relu_span)(const REAL *CC_RESTRICT x, int64_t n, REAL *CC_RESTRICT y)
{
    int64_t i;
    for (i = 0; i < n; ++i) {
        const REAL v = x[i];
        /* selects, not branches; NaN passes through, -0 becomes +0 */
        y[i] = ((v > 0) | (v != v)) ? v : (REAL)0;
    }
}

CC_CLONES static void FN(relu_bwd_span)(const REAL *CC_RESTRICT dy, const REAL *CC_RESTRICT x,
                                        int64_t n, REAL *CC_RESTRICT dx)
{
    int64_t i;
    for (i = 0; i < n; ++i) dx[i] = x[i] > 0 ? dy[i] : (REAL)0;
}

/* the same, in place (one pointer: no aliasing question) */
CC_CLONES static void FN(relu_inplace_span)(REAL *x, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; ++i) {
        const REAL v = x[i];
        x[i] = ((v > 0) | (v != v)) ? v : (REAL)0;
    }
}

/* y = relu(x); y may be x (in place) or must not overlap it. */
int FN(cc_relu_fwd)(const REAL *x, int64_t n, int n_threads, REAL *y)
{
    return FN(cc_relu_fwd_rows)(x, n, 1, n, n_threads, y, n);   /* (one row) */
}

int FN(cc_relu_bwd)(const REAL *dy, const REAL *x, int64_t n, int n_threads, REAL *dx)
{
    return FN(cc_relu_bwd_rows)(dy, n, x, n, 1, n, n_threads, dx, n);
}

/* The two above over `rows` rows of `len` elements, row r of an array at
 * p + r * (its stride) elements: a channel slice of a batch (a branch's part
 * of a concatenation), whose images' parts lie apart.  Tasks are (row,
 * block) pairs; the arrays must not overlap, except y = x (same stride) in
 * the forward pass: in place. */
int FN(cc_relu_fwd_rows)(const REAL *x, int64_t xs, int64_t rows, int64_t len, int n_threads,
                         REAL *y, int64_t ys)
{
    int64_t nb, i;
    int team;
    if (n_threads < 1 || rows < 0 || len < 0 || xs < len || ys < len) return CC_EINVAL;
    if (rows > 0 && len > CC_SIZE_MAX / rows) return CC_EINVAL;
    if (rows * len > 0 && (!x || !y)) return CC_EINVAL;
    nb = (len + CC_RELU_BLOCK - 1) / CC_RELU_BLOCK;
    team = relu_team(n_threads, rows * len, 2, sizeof(REAL));
#pragma omp parallel for num_threads(team) if (team > 1 && rows * nb > 1) schedule(static)
    for (i = 0; i < rows * nb; ++i) {
        const int64_t r = i / nb, o = (i % nb) * CC_RELU_BLOCK;
        if (x == y && xs == ys)
            FN(relu_inplace_span)(y + r * ys + o, CC_MIN(CC_RELU_BLOCK, len - o));
        else
            FN(relu_span)(x + r * xs + o, CC_MIN(CC_RELU_BLOCK, len - o), y + r * ys + o);
    }
    return CC_OK;
}

int FN(cc_relu_bwd_rows)(const REAL *dy, int64_t dys, const REAL *x, int64_t xs, int64_t rows,
                         int64_t len, int n_threads, REAL *dx, int64_t dxs)
{
    int64_t nb, i;
    int team;
    if (n_threads < 1 || rows < 0 || len < 0 || dys < len || xs < len || dxs < len)
        return CC_EINVAL;
    if (rows > 0 && len > CC_SIZE_MAX / rows) return CC_EINVAL;
    if (rows * len > 0 && (!dy || !x || !dx)) return CC_EINVAL;
    nb = (len + CC_RELU_BLOCK - 1) / CC_RELU_BLOCK;
    team = relu_team(n_threads, rows * len, 3, sizeof(REAL));
#pragma omp parallel for num_threads(team) if (team > 1 && rows * nb > 1) schedule(static)
    for (i = 0; i < rows * nb; ++i) {
        const int64_t r = i / nb, o = (i % nb) * CC_RELU_BLOCK;
        FN(relu_bwd_span)(dy + r * dys + o, x + r * xs + o, CC_MIN(CC_RELU_BLOCK, len - o),
                          dx + r * dxs + o);
    }
    return CC_OK;
}

/* h = relu(h + s): a residual block's sum and ReLU in one pass */
CC_CLONES static void FN(add_relu_span)(REAL *CC_RESTRICT h, const REAL *CC_RESTRICT s, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; ++i) {
        const REAL v = h[i] + s[i];
        h[i] = ((v > 0) | (v != v)) ? v : (REAL)0;
    }
}

CC_CLONES static void FN(add_span)(REAL *CC_RESTRICT a, const REAL *CC_RESTRICT b, int64_t n)
{
    int64_t i;
    for (i = 0; i < n; ++i) a[i] += b[i];
}

/* a += b, then a = relu(a) if `relu`, in one pass */
int FN(cc_add)(REAL *a, const REAL *b, int64_t n, int relu, int n_threads)
{
    int64_t nb, i;
    int team;
    if (n_threads < 1 || n < 0 || n > CC_SIZE_MAX) return CC_EINVAL;
    if (n > 0 && (!a || !b)) return CC_EINVAL;
    nb = (n + CC_RELU_BLOCK - 1) / CC_RELU_BLOCK;
    team = relu_team(n_threads, n, 3, sizeof(REAL));
#pragma omp parallel for num_threads(team) if (team > 1 && nb > 1) schedule(static)
    for (i = 0; i < nb; ++i) {
        const int64_t len = CC_MIN(CC_RELU_BLOCK, n - i * CC_RELU_BLOCK);
        if (relu)
            FN(add_relu_span)(a + i * CC_RELU_BLOCK, b + i * CC_RELU_BLOCK, len);
        else
            FN(add_span)(a + i * CC_RELU_BLOCK, b + i * CC_RELU_BLOCK, len);
    }
    return CC_OK;
}

/* y = relu(x) and mask = (y > 0) in one pass; y may be x (in place), so
 * neither is restrict. */
CC_CLONES static void FN(relu_mask_span)(const REAL *x, int64_t n, REAL *y,
                                         uint8_t *CC_RESTRICT mask)
{
    int64_t i;
    for (i = 0; i < n; ++i) {
        const REAL v = x[i];
        const int pos = v > 0;
        y[i] = (pos | (v != v)) ? v : (REAL)0;
        mask[i] = (uint8_t)pos;
    }
}

/* dx = mask ? dy : 0 (exactly 0 where the mask is clear, even for a NaN or
 * Inf dy); dx may be dy. */
CC_CLONES static void FN(relu_bwd_mask_span)(const REAL *dy, const uint8_t *CC_RESTRICT mask,
                                             int64_t n, REAL *dx)
{
    int64_t i;
    for (i = 0; i < n; ++i) dx[i] = mask[i] ? dy[i] : (REAL)0;
}

int FN(cc_relu_fwd_mask)(const REAL *x, int64_t n, int n_threads, REAL *y, uint8_t *mask)
{
    int64_t nb, i;
    int team;
    if (n_threads < 1 || n < 0 || n > CC_SIZE_MAX) return CC_EINVAL;
    if (n > 0 && (!x || !y || !mask)) return CC_EINVAL;
    nb = (n + CC_RELU_BLOCK - 1) / CC_RELU_BLOCK;
    team = relu_team(n_threads, n, 2, sizeof(REAL));
#pragma omp parallel for num_threads(team) if (team > 1 && nb > 1) schedule(static)
    for (i = 0; i < nb; ++i)
        FN(relu_mask_span)(x + i * CC_RELU_BLOCK, CC_MIN(CC_RELU_BLOCK, n - i * CC_RELU_BLOCK),
                           y + i * CC_RELU_BLOCK, mask + i * CC_RELU_BLOCK);
    return CC_OK;
}

int FN(cc_relu_bwd_mask)(const REAL *dy, const uint8_t *mask, int64_t n, int n_threads,
                         REAL *dx)
{
    int64_t nb, i;
    int team;
    if (n_threads < 1 || n < 0 || n > CC_SIZE_MAX) return CC_EINVAL;
    if (n > 0 && (!dy || !mask || !dx)) return CC_EINVAL;
    nb = (n + CC_RELU_BLOCK - 1) / CC_RELU_BLOCK;
    team = relu_team(n_threads, n, 2, sizeof(REAL));
#pragma omp parallel for num_threads(team) if (team > 1 && nb > 1) schedule(static)
    for (i = 0; i < nb; ++i)
        FN(relu_bwd_mask_span)(dy + i * CC_RELU_BLOCK, mask + i * CC_RELU_BLOCK,
                               CC_MIN(CC_RELU_BLOCK, n - i * CC_RELU_BLOCK),
                               dx + i * CC_RELU_BLOCK);
    return CC_OK;
}

/* ---------------------------------------------------- local response norm */

/* Positions of one image a task takes: a task's rows of every channel (its
 * d^-beta and, backward, its t) stay in a core's L1/L2. */
#define CC_LRN_BLOCK 64

/* p[j] = d[j]^-beta for n values; beta 0.75 (AlexNet's and GoogLeNet's) as
 * 1 / (sqrt(d) sqrt(sqrt(d))), which vectorises (pow does not) and is
 * within a few ulp of it; d = 0 gives Inf and a negative d NaN, as pow does. */
CC_CLONES static void FN(lrn_pow)(const REAL *CC_RESTRICT d, int64_t n, REAL beta,
                                  REAL *CC_RESTRICT p)
{
    int64_t j;
    if (beta == (REAL)0.75) {
        for (j = 0; j < n; ++j) {
            const REAL r = CC_SQRT(d[j]);
            p[j] = (REAL)1 / (r * CC_SQRT(r));
        }
    } else {
        for (j = 0; j < n; ++j) p[j] = CC_POW(d[j], -beta);
    }
}

/* d (C x nl, row c at d + c*nl) = k + alpha/size * the sum of x^2 over
 * channels c - before .. c + after (zeros outside), for nl positions of one
 * image whose channel c starts at x + c*L. */
CC_CLONES static void FN(lrn_base)(const REAL *CC_RESTRICT x, int64_t C, int64_t L, int64_t nl,
                                   int64_t before, int64_t after, REAL scale, REAL k,
                                   REAL *CC_RESTRICT d)
{
    int64_t c, q, j;
    for (c = 0; c < C; ++c) {
        const int64_t lo = CC_MAX(0, c - before), hi = CC_MIN(C - 1, c + after);
        REAL *CC_RESTRICT dc = d + c * nl;
        for (j = 0; j < nl; ++j) dc[j] = 0;
        for (q = lo; q <= hi; ++q) {
            const REAL *CC_RESTRICT xq = x + q * L;
            for (j = 0; j < nl; ++j) dc[j] += xq[j] * xq[j];
        }
        for (j = 0; j < nl; ++j) dc[j] = k + scale * dc[j];
    }
}

/* Per-thread buffers of a task: 2 (C x CC_LRN_BLOCK). */
static REAL *FN(lrn_buffers)(int64_t C)
{
    int64_t t;
    if (!cc_mul_ok(2 * C, CC_LRN_BLOCK, &t)) return NULL;
    return (REAL *)malloc((size_t)t * sizeof(REAL));
}

int FN(cc_lrn_fwd)(const REAL *x, int64_t N, int64_t C, int64_t L, int64_t size, double alpha,
                   double beta, double k, int n_threads, REAL *y)
{
    const int64_t before = size / 2, after = (size - 1) / 2;
    int64_t nlb, ntask, t, e;
    int team, fail = 0;
    if (n_threads < 1 || N < 0 || C < 0 || L < 0 || size < 1) return CC_EINVAL;
    if (!cc_prod4_ok(N, C, L, 1, &e)) return CC_EINVAL;
    if (e == 0) return CC_OK;
    if (!x || !y) return CC_EINVAL;
    nlb = (L + CC_LRN_BLOCK - 1) / CC_LRN_BLOCK;
    ntask = N * nlb;
    team = norm_team(n_threads, e, 2 + size, sizeof(REAL));
#pragma omp parallel num_threads(team) if (team > 1 && ntask > 1) reduction(| : fail)
    {
        REAL *d = FN(lrn_buffers)(C), *p = d ? d + C * CC_LRN_BLOCK : NULL;
        if (!d) fail = 1;
#pragma omp for schedule(static)
        for (t = 0; t < ntask; ++t) {
            const int64_t n = t / nlb, l0 = (t % nlb) * CC_LRN_BLOCK;
            const int64_t nl = CC_MIN(CC_LRN_BLOCK, L - l0);
            const REAL *xn = x + n * C * L + l0;
            REAL *yn = y + n * C * L + l0;
            int64_t c, j;
            if (!d) continue;
            FN(lrn_base)(xn, C, L, nl, before, after, (REAL)(alpha / (double)size), (REAL)k, d);
            FN(lrn_pow)(d, C * nl, (REAL)beta, p);
            for (c = 0; c < C; ++c)
                for (j = 0; j < nl; ++j) yn[c * L + j] = xn[c * L + j] * p[c * nl + j];
        }
        free(d);
    }
    return fail ? CC_ENOMEM : CC_OK;
}

int FN(cc_lrn_bwd)(const REAL *dy, const REAL *x, int64_t N, int64_t C, int64_t L, int64_t size,
                   double alpha, double beta, double k, int n_threads, REAL *dx)
{
    const int64_t before = size / 2, after = (size - 1) / 2;
    const REAL coef = (REAL)(2.0 * beta * alpha / (double)size);
    int64_t nlb, ntask, t, e;
    int team, fail = 0;
    if (n_threads < 1 || N < 0 || C < 0 || L < 0 || size < 1) return CC_EINVAL;
    if (!cc_prod4_ok(N, C, L, 1, &e)) return CC_EINVAL;
    if (e == 0) return CC_OK;
    if (!dy || !x || !dx) return CC_EINVAL;
    nlb = (L + CC_LRN_BLOCK - 1) / CC_LRN_BLOCK;
    ntask = N * nlb;
    team = norm_team(n_threads, e, 4 + 2 * size, sizeof(REAL));
#pragma omp parallel num_threads(team) if (team > 1 && ntask > 1) reduction(| : fail)
    {
        REAL *d = FN(lrn_buffers)(C), *p = d ? d + C * CC_LRN_BLOCK : NULL;
        if (!d) fail = 1;
#pragma omp for schedule(static)
        for (t = 0; t < ntask; ++t) {
            const int64_t n = t / nlb, l0 = (t % nlb) * CC_LRN_BLOCK;
            const int64_t nl = CC_MIN(CC_LRN_BLOCK, L - l0);
            const REAL *xn = x + n * C * L + l0, *gn = dy + n * C * L + l0;
            REAL *out = dx + n * C * L + l0;
            int64_t c, q, j;
            if (!d) continue;
            /* p = d^-beta, then d becomes t = dy x d^-beta / d */
            FN(lrn_base)(xn, C, L, nl, before, after, (REAL)(alpha / (double)size), (REAL)k, d);
            FN(lrn_pow)(d, C * nl, (REAL)beta, p);
            for (c = 0; c < C; ++c)
                for (j = 0; j < nl; ++j)
                    d[c * nl + j] = gn[c * L + j] * xn[c * L + j] * (p[c * nl + j] / d[c * nl + j]);
            /* dx_i = dy_i p_i - coef x_i (sum of t over channels i - after .. i + before) */
            for (c = 0; c < C; ++c) {
                const int64_t lo = CC_MAX(0, c - after), hi = CC_MIN(C - 1, c + before);
                REAL *CC_RESTRICT o = out + c * L;
                const REAL *CC_RESTRICT xc = xn + c * L, *CC_RESTRICT gc = gn + c * L;
                const REAL *CC_RESTRICT pc = p + c * nl;
                REAL acc[CC_LRN_BLOCK];
                for (j = 0; j < nl; ++j) acc[j] = 0;
                for (q = lo; q <= hi; ++q)
                    for (j = 0; j < nl; ++j) acc[j] += d[q * nl + j];
                for (j = 0; j < nl; ++j) o[j] = gc[j] * pc[j] - coef * xc[j] * acc[j];
            }
        }
        free(d);
    }
    return fail ? CC_ENOMEM : CC_OK;
}

/* --------------------------------------------------------- cross-entropy */

/* One row of logits: its log-sum-exp in double, from the row's maximum
 * (NaN anywhere gives NaN, as an infinite maximum does). */
/* The largest of x[0..K) (K >= 1), NaN if any is NaN, in a loop that
 * vectorizes: each value's bits as a signed integer key ordered as the
 * values are (a negative value's magnitude bits flipped: -0 below +0), then
 * an integer maximum -- GCC keeps a floating-point one as a branch under the
 * default -ftrapping-math.  (The key map is its own inverse.) */
#define CC_BITS_KEY(b) ((b) ^ (CC_BITS)((CC_UBITS)((b) >> (8 * sizeof(CC_BITS) - 1)) >> 1))
CC_CLONES static double FN(ce_max)(const REAL *CC_RESTRICT x, int64_t K)
{
    CC_BITS best = 0, b;
    int bad = 0;
    REAL m;
    int64_t k;
    memcpy(&best, x, sizeof best);
    best = CC_BITS_KEY(best);
    for (k = 0; k < K; ++k) {
        memcpy(&b, x + k, sizeof b);
        b = CC_BITS_KEY(b);
        best = b > best ? b : best;
        bad |= x[k] != x[k];
    }
    best = CC_BITS_KEY(best);
    memcpy(&m, &best, sizeof m);
    return bad ? (double)NAN : (double)m;
}
#undef CC_BITS_KEY

/* e[k] = e^(x[k] - m) for a row whose maximum m is finite: float32 rows
 * through cc_exp_le0f (float accuracy, a loop that vectorizes: through
 * libm's exp, a call per element, 8000 logits cost about 40 us), float64
 * rows through libm's exp. */
CC_CLONES_FMA static void FN(ce_exps)(const REAL *CC_RESTRICT x, int64_t K, REAL m,
                                  REAL *CC_RESTRICT e)
{
    const double md = (double)m;
    int64_t k;
    if (sizeof(REAL) == sizeof(float)) {
#pragma omp simd
        for (k = 0; k < K; ++k) e[k] = (REAL)cc_exp_le0f((double)x[k] - md);
    } else {
        for (k = 0; k < K; ++k) e[k] = (REAL)exp((double)(x[k] - m));
    }
}

/* sum of e[0..K) in double: eight partial sums, added in a fixed order */
CC_CLONES static double FN(ce_sum)(const REAL *CC_RESTRICT e, int64_t K)
{
    double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t k, l;
    for (k = 0; k + 8 <= K; k += 8)
        for (l = 0; l < 8; ++l) s[l] += (double)e[k + l];
    for (l = 0; k < K; ++k, ++l) s[l] += (double)e[k];
    return ((s[0] + s[4]) + (s[2] + s[6])) + ((s[1] + s[5]) + (s[3] + s[7]));
}

/* sum over k of e^(x[k] - m) (m the row's finite maximum), each term kept in
 * e[k]; with e NULL, in blocks through a buffer of its own */
#define CC_CE_BLOCK 256
static double FN(ce_sumexp)(const REAL *x, int64_t K, double m, REAL *e)
{
    REAL buf[CC_CE_BLOCK];
    double s = 0;
    int64_t k0;
    if (e) {
        FN(ce_exps)(x, K, (REAL)m, e);
        return FN(ce_sum)(e, K);
    }
    for (k0 = 0; k0 < K; k0 += CC_CE_BLOCK) {
        const int64_t n = CC_MIN(CC_CE_BLOCK, K - k0);
        FN(ce_exps)(x + k0, n, (REAL)m, buf);
        s += FN(ce_sum)(buf, n);
    }
    return s;
}

/* log sum exp of a row, NaN for a NaN logit, +Inf for a +Inf one (libm's
 * exp where the maximum is not finite) */
static double FN(ce_lse)(const REAL *x, int64_t K)
{
    const double m = FN(ce_max)(x, K);
    double s = 0;
    int64_t k;
    if (m != m) return m;
    if (m - m != 0) {   /* (an infinite maximum: the definition's exps) */
        for (k = 0; k < K; ++k) s += exp((double)x[k] - m);
        return m + log(s);
    }
    return m + log(FN(ce_sumexp)(x, K, m, NULL));
}
/* Cross-entropy of logits against class indices, and its gradient.
 *   logits (N, K), target (N) in [0, K)      [in]
 *   scale (N) or NULL: the gradient's factor per row (NULL: scale0 for all)
 *   loss (N) or NULL    [out] -log_softmax(logits)[n, target[n]], in double
 *   grad (N, K) or NULL [out, overwritten] (softmax(logits[n]) - onehot) * scale[n]
 * CC_EINVAL (before anything is written) when a target lies outside [0, K). */
int FN(cc_cross_entropy)(const REAL *logits, const int64_t *target, int64_t N, int64_t K,
                         const double *scale, double scale0, int n_threads, double *loss,
                         REAL *grad)
{
    int64_t n, t;
    int team;
    if (n_threads < 1 || N < 0 || K < 1 || !cc_mul_ok(N, K, &t)) return CC_EINVAL;
    if (N > 0 && (!logits || !target)) return CC_EINVAL;
    for (n = 0; n < N; ++n)
        if (target[n] < 0 || target[n] >= K) return CC_EINVAL;
    team = norm_team(n_threads, t, grad ? 3 : 1, sizeof(REAL));
#pragma omp parallel for num_threads(team) if (team > 1) schedule(static)
    for (n = 0; n < N; ++n) {
        const REAL *x = logits + n * K;
        if (!grad) {
            loss[n] = FN(ce_lse)(x, K) - (double)x[target[n]];
        } else {
            /* exp(x - max) once per element, kept in the gradient's row */
            const double f = scale ? scale[n] : scale0;
            REAL *g = grad + n * K;
            const double m = FN(ce_max)(x, K);
            double s = 0, r;
            int64_t k;
            if (m - m == 0) {
                s = FN(ce_sumexp)(x, K, m, g);
            } else {   /* (NaN or an infinite maximum: the definition's exps) */
                for (k = 0; k < K; ++k) {
                    const double e = exp((double)x[k] - m);
                    s += e;
                    g[k] = (REAL)e;
                }
            }
            if (loss) loss[n] = m + log(s) - (double)x[target[n]];
            r = f / s;
            for (k = 0; k < K; ++k) g[k] = (REAL)((double)g[k] * r);
            /* (p - 1) f from p in double: no cancellation when p is near 1 */
            g[target[n]] = (REAL)((exp((double)x[target[n]] - m) / s - 1.0) * f);
        }
    }
    return CC_OK;
}

#undef V4_LOAD
