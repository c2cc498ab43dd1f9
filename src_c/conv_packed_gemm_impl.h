/* Forward pass from weights packed once for a GEMM kernel of our own
 * (inference: a folded layer in eval mode, see cc_conv_pack_elems).
 * Included by conv_impl.h inside its element-type template, after the
 * im2col and vector-kernel headers.
 *
 * At batch 1 a layer with large weights (ResNet's 3x3 on 7x7 and 14x14,
 * its 1x1 layers with 1024-2048 channels) reads more weight bytes than it
 * does arithmetic per byte, and across a network those weights come from
 * memory, not the cache.  A BLAS packs them at every call: a pass that
 * streams them from memory, then the products from the packed copy.  Here
 * the weights are in the kernel's layout from the start, Wp[kb][i][64]
 * (blocks of 64 output channels, row i = c*KH*KW + kh*KW + kw, zero past
 * K), and the products read them in one stream while they multiply.
 *
 * The micro-kernel keeps 64 output channels (4 vectors) x 7 positions in
 * 28 registers; each step loads 4 vectors of Wp and broadcasts 7 values of
 * one row of the columns (im2col of the image, positions contiguous; a
 * pointwise layer's image itself).  Every output is the sum, in order, of
 * chains of multiply-adds over CC_PG_ROWS rows of i each (shorter chains
 * round less than one over all of i), plus the bias at the end, so the
 * result depends on neither the thread count nor how the work is split. */

#ifndef CC_PG_SHAPE
#define CC_PG_SHAPE
#define CC_PGV 16                      /* values a vector (FN(vk_t)) */
#define CC_PGK (4 * CC_PGV)            /* output channels a block: 4 vectors */
#define CC_PGP 7                       /* positions a micro-kernel call */
#define CC_PG_ROWS 256                 /* rows of the columns a pass: one chain */
#define CC_PG_GROUP (16 * CC_PGP)      /* positions a group (per-thread sums) */

/* Layers that run from GEMM-packed weights (float32, measured at batch 1,
 * 2 threads, in whole networks where the weights come from memory):
 * ungrouped, up to CC_PG_MAX_IMAGES images, at least CC_PG_MIN_WEIGHTS
 * weights (smaller ones stay in the cache between calls, where the BLAS's
 * packing costs little). */
#define CC_PG_MAX_IMAGES 2
#define CC_PG_MIN_WEIGHTS ((int64_t)1 << 18)

/* columns one image needs (rows x positions, plus the micro-kernel's
 * reads past the last position of the last row), or 0 for a pointwise
 * layer on a map of whole micro-kernel blocks (the image is read as is) */
static int64_t pg_cols(const cc_conv_geom *g)
{
    const int64_t L = g->OH * g->OW;
    if (cc_conv_is_pointwise(g) && L % CC_PGP == 0) return 0;
    return g->C * g->KH * g->KW * L + CC_PGP;
}
#endif

/* t (CC_PGP positions x CC_PGK channels, position-major) += Wp rows [0, ni)
 * x col rows [0, ni), CC_PGP positions each (row stride ldc): each sum a
 * chain of ni multiply-adds, then added to t. */
#define CC_VLOAD(p) (*(const FN(vk_t) *)(const void *)(p))
#define CC_VSTORE(p, v) (*(FN(vk_t) *)(void *)(p) = (v))
#define CC_PG_ACC(j) FN(vk_t) a##j##0, a##j##1, a##j##2, a##j##3
#define CC_PG_ZERO(j) a##j##0 = a##j##1 = a##j##2 = a##j##3 = zero
#define CC_PG_FMA(j)                                                        \
    do {                                                                    \
        const REAL c_ = c[j];                                               \
        a##j##0 += w0 * c_, a##j##1 += w1 * c_, a##j##2 += w2 * c_, a##j##3 += w3 * c_; \
    } while (0)
#define CC_PG_ADD(p, v) CC_VSTORE(p, CC_VLOAD(p) + (v))
#define CC_PG_STORE(j)                                                                  \
    CC_PG_ADD(t + (j) * CC_PGK, a##j##0), CC_PG_ADD(t + (j) * CC_PGK + CC_PGV, a##j##1), \
        CC_PG_ADD(t + (j) * CC_PGK + 2 * CC_PGV, a##j##2),                              \
        CC_PG_ADD(t + (j) * CC_PGK + 3 * CC_PGV, a##j##3)
CC_CLONES_FMA static void FN(pg_block)(const REAL *CC_RESTRICT wp, const REAL *CC_RESTRICT col,
                                       int64_t ldc, int64_t ni, REAL *CC_RESTRICT t)
{
    CC_PG_ACC(0); CC_PG_ACC(1); CC_PG_ACC(2); CC_PG_ACC(3); CC_PG_ACC(4); CC_PG_ACC(5);
    CC_PG_ACC(6);
    const FN(vk_t) zero = {0};
    int64_t i;
    CC_PG_ZERO(0); CC_PG_ZERO(1); CC_PG_ZERO(2); CC_PG_ZERO(3); CC_PG_ZERO(4); CC_PG_ZERO(5);
    CC_PG_ZERO(6);
    for (i = 0; i < ni; ++i) {
        const REAL *w = wp + i * CC_PGK, *c = col + i * ldc;
        const FN(vk_t) w0 = CC_VLOAD(w), w1 = CC_VLOAD(w + CC_PGV), w2 = CC_VLOAD(w + 2 * CC_PGV),
                       w3 = CC_VLOAD(w + 3 * CC_PGV);
        CC_PG_FMA(0); CC_PG_FMA(1); CC_PG_FMA(2); CC_PG_FMA(3); CC_PG_FMA(4); CC_PG_FMA(5);
        CC_PG_FMA(6);
    }
    CC_PG_STORE(0); CC_PG_STORE(1); CC_PG_STORE(2); CC_PG_STORE(3); CC_PG_STORE(4);
    CC_PG_STORE(5); CC_PG_STORE(6);
}
#undef CC_PG_ACC
#undef CC_PG_ZERO
#undef CC_PG_ADD
#undef CC_PG_FMA
#undef CC_PG_STORE
#undef CC_VLOAD
#undef CC_VSTORE

/* Wp from the weights w (K x C*KH*KW) */
static void FN(pg_pack)(const REAL *w, const cc_conv_geom *g, REAL *packed)
{
    const int64_t CKK = g->C * g->KH * g->KW;
    FN(pack_blocks)(w, g->K, CKK, CKK, 1, CC_PGK, packed);
}

/* Outputs [p0, p1) of channel block kb of one image: col (I rows of ldc,
 * readable CC_PGP - 1 values past p1 in the last row) -> y (K planes of L),
 * bias (or NULL) added at the end.  t: CC_PG_GROUP * CC_PGK of scratch. */
static void FN(pg_task)(const REAL *wp, const REAL *col, int64_t ldc, int64_t I, int64_t K,
                        int64_t L, int64_t kb, int64_t p0, int64_t p1, const REAL *b, REAL *y,
                        REAL *t)
{
    const int64_t k0 = kb * CC_PGK, nk = CC_MIN(CC_PGK, K - k0);
    int64_t q0;
    for (q0 = p0; q0 < p1; q0 += CC_PG_GROUP) {
        const int64_t np = CC_MIN(CC_PG_GROUP, p1 - q0), nb = (np + CC_PGP - 1) / CC_PGP;
        int64_t i0, j, k;
        memset(t, 0, (size_t)(nb * CC_PGP * CC_PGK) * sizeof(REAL));
        for (i0 = 0; i0 < I; i0 += CC_PG_ROWS) {
            const int64_t ni = CC_MIN(CC_PG_ROWS, I - i0);
            for (j = 0; j < nb; ++j)
                FN(pg_block)(wp + (kb * I + i0) * CC_PGK, col + i0 * ldc + q0 + j * CC_PGP, ldc,
                             ni, t + j * CC_PGP * CC_PGK);
        }
        for (k = 0; k < nk; ++k) {
            REAL *yk = y + (k0 + k) * L + q0;
            const REAL bk = b ? b[k0 + k] : 0;
            for (j = 0; j < np; ++j) yk[j] = t[j * CC_PGK + k] + bk;
        }
    }
}

/* The forward pass from Wp: one image at a time, its columns built by the
 * team (rows split), then tasks of (channel block, positions) -- as many
 * position parts as give every thread a task.  work: pg_cols(g) elements
 * (none where that is 0). */
static int FN(pg_fwd)(const REAL *x, const REAL *wp, const REAL *b, const cc_conv_geom *g,
                      REAL *work, int n_threads, REAL *y)
{
    const int64_t I = g->C * g->KH * g->KW, L = g->OH * g->OW, HW = g->H * g->W;
    const int64_t nkb = (g->K + CC_PGK - 1) / CC_PGK, nblk = (L + CC_PGP - 1) / CC_PGP;
    const int64_t parts = CC_MIN(nblk, CC_MAX(1, (2 * n_threads + nkb - 1) / nkb));
    const int64_t ntask = nkb * parts, ncol = pg_cols(g);
    int failed = 0;
    if (ncol > 0 && !work) return CC_EINVAL;
#pragma omp parallel num_threads(n_threads) if (n_threads > 1) reduction(| : failed)
    {
        REAL *t = (REAL *)malloc((size_t)(CC_PG_GROUP * CC_PGK) * sizeof(REAL));
        int64_t i, n;
        if (!t) failed = 1;
        for (n = 0; n < g->N; ++n) {
            const REAL *xn = x + n * g->C * HW, *col = xn;
            if (ncol > 0) {
#pragma omp for schedule(static)
                for (i = 0; i < I; i += 64)
                    FN(im2col_span)(xn, g, i, CC_MIN(I, i + 64), 0, L, L, work);
#pragma omp single
                for (i = I * L; i < ncol; ++i) work[i] = 0;
                col = work;
            }
#pragma omp for schedule(static)
            for (i = 0; i < ntask; ++i) {
                const int64_t kb = i / parts, part = i % parts;
                const int64_t p0 = part * nblk / parts * CC_PGP;
                const int64_t p1 = CC_MIN(L, (part + 1) * nblk / parts * CC_PGP);
                if (t) FN(pg_task)(wp, col, L, I, g->K, L, kb, p0, p1, b, y + n * g->K * L, t);
            }
            /* (the implicit barrier: the columns are rewritten for the next
             * image only after every task of this one) */
        }
        free(t);
    }
    return failed ? CC_ENOMEM : CC_OK;
}
