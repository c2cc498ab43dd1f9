/* Normalisation family: batch normalisation, local response normalisation and
 * ReLU, forward and backward,
 * instantiated for float32 and float64 from norm_impl.h. */
#include "convcore.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The streaming loops are compiled twice on x86-64 with GCC: for the baseline
 * (SSE2) and for AVX2, picked once at load time (ifunc).  Same C, same
 * operation order, no FMA contraction (-std=c99): identical results. */
#define CC_CLONES CC_TARGETS("avx2", "default")
/* The exponentials of a softmax row (cc_exp_le0f's polynomial) also for
 * AVX-512 and for AVX2 + FMA, with fused multiply-adds: a dependent chain of
 * half the latency (8 x 1000 logits 8.9 -> 5.0 us).  Their last bits then
 * depend on the machine's instruction set (as the convolution kernels'
 * do), never on the thread count. */
#define CC_CLONES_FMA CC_TARGETS_FMA("avx512f", CC_AVX2_FMA, "default")

/* e^x for x <= 0 (or -0), as a float within about 2 ulp of e^x for the
 * double x given (a logit's distance below its row's maximum, exact in
 * double; rounded to float first, it would cost up to 1e-6 relative at
 * x = -16): the reduction by ln 2 in double, a degree-6 polynomial in float.
 * The clamp and the cut-off are integer operations on the bits (for x <= 0
 * a larger magnitude is a larger unsigned pattern), so the loops over it
 * vectorize -- GCC keeps floating-point selects as branches under the
 * default -ftrapping-math -- where libm's exp is a call per element (a
 * softmax row of float32 logits).  Below -87.33 (results under the smallest
 * normal float, -Inf included) it gives +0: the sums it serves hold a term
 * of 1.  (2^n stays a normal float: n >= -126 down to -87.33.) */
#define CC_EXP_CUT_BITS ((int64_t)0xC055D51EB851EB85ull)   /* -87.33 */
static inline float cc_exp_le0f(double x)
{
    int64_t bx, bc, c;
    uint32_t by, keep;
    double xc, n;
    float r, z, p, scale, y;
    int32_t e;
    memcpy(&bx, &x, sizeof bx);
    /* (as signed integers the patterns of x <= 0 are +0's 0, or run from
     * -0's INT64_MIN upward with the magnitude, to -Inf's 0xFFF0...) */
    c = -(int64_t)((bx < 0) & (bx > CC_EXP_CUT_BITS));   /* all ones below the cut */
    keep = (uint32_t)((bx >= 0) | (bx <= CC_EXP_CUT_BITS)) * 0xFFFFFFFFu;
    bc = (CC_EXP_CUT_BITS & c) | (bx & ~c);   /* (masks, not a select: see above) */
    memcpy(&xc, &bc, sizeof xc);
    n = (double)(int32_t)(xc * 1.4426950408889634 - 0.5);   /* round(x / ln 2) */
    r = (float)(xc - n * 0.6931471805599453);
    z = r * r;
    p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * z + r + 1.0f;
    e = ((int32_t)n + 127) << 23;
    memcpy(&scale, &e, sizeof scale);
    y = p * scale;
    memcpy(&by, &y, sizeof by);
    by &= keep;
    memcpy(&y, &by, sizeof y);
    return y;
}

/* Four doubles operated on lane by lane: GCC's vector extensions (with them
 * the reductions vectorise reliably), else a struct.  Both give the same
 * bits: every operation is the IEEE operation on each lane.  The vector
 * versions are macros, so no vector crosses a function boundary. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9 && !defined(CC_NO_VECTOR_EXT)
typedef double v4d __attribute__((vector_size(32)));
typedef double v4d_u __attribute__((vector_size(32), aligned(sizeof(double))));
typedef float v4f_u __attribute__((vector_size(16), aligned(sizeof(float))));
#define v4_zero() ((v4d){0, 0, 0, 0})
#define v4_splat(a) ((v4d){(a), (a), (a), (a)})
#define v4_add(a, b) ((a) + (b))
#define v4_sub(a, b) ((a) - (b))
#define v4_mul(a, b) ((a) * (b))
#define v4_lane(a, i) ((a)[i])
#define v4_load_f32(p) __builtin_convertvector(*(const v4f_u *)(const void *)(p), v4d)
#define v4_load_f64(p) ((v4d)(*(const v4d_u *)(const void *)(p)))
#else
typedef struct { double v[4]; } v4d;
static inline v4d v4_zero(void) { v4d r = {{0, 0, 0, 0}}; return r; }
static inline v4d v4_splat(double a) { v4d r = {{a, a, a, a}}; return r; }
#define CC_V4_OP(name, op)                                        \
    static inline v4d name(v4d a, v4d b)                          \
    {                                                             \
        v4d r;                                                    \
        int i;                                                    \
        for (i = 0; i < 4; ++i) r.v[i] = a.v[i] op b.v[i];        \
        return r;                                                 \
    }
CC_V4_OP(v4_add, +)
CC_V4_OP(v4_sub, -)
CC_V4_OP(v4_mul, *)
static inline double v4_lane(v4d a, int i) { return a.v[i]; }
static inline v4d v4_load_f32(const float *p)
{
    v4d r = {{p[0], p[1], p[2], p[3]}};
    return r;
}
static inline v4d v4_load_f64(const double *p)
{
    v4d r = {{p[0], p[1], p[2], p[3]}};
    return r;
}
#endif

/* Sum of 16 lanes held in four vectors, in a fixed tree. */
#define v4_sum4(a, b, c, d) v4_tree(v4_add(v4_add(a, c), v4_add(b, d)))
#define v4_tree(s) ((v4_lane(s, 0) + v4_lane(s, 2)) + (v4_lane(s, 1) + v4_lane(s, 3)))

/* How batch norm cuts x (N, C, L) into tasks; it depends on the shape alone,
 * never on the thread count.
 *   - The reduction axis (n, l) of every channel is cut into J chunks: rows
 *     in blocks of G planes (G*L about CC_BN_CHUNK values per channel), or,
 *     for planes longer than CC_BN_CHUNK, one plane in segments of SEG.  A
 *     chunk is small enough to stay in L1 for its two passes (its mean, then
 *     the deviations from it).
 *   - Channels are taken CC_BN_GROUP at a time.
 * A task is one chunk of one channel group: a nearly contiguous stretch of
 * memory.  Each task writes the moments of its chunk, one per channel, to
 * the workspace; a channel's moments are then merged in chunk order.  So every
 * statistic is the same for every thread count, and memory is swept in
 * order (sweeping one channel at a time, across planes, was twice as slow). */
#define CC_BN_CHUNK 2048
#define CC_BN_GROUP 16
/* Planes at least this long are reduced with 16 lanes per channel; shorter
 * ones with one accumulator per channel of the group. */
#define CC_BN_MIN_L 32
/* Workspace: J*C moments (6 doubles each), then C coefficient sets (4). */
#define CC_BN_MOM 6
#define CC_BN_COEF 4

typedef struct {
    int64_t N, C, L;
    int64_t G, SEG, nseg, J, ngroups, tasks;
} bn_plan;

static void bn_plan_make(int64_t N, int64_t C, int64_t L, bn_plan *p)
{
    p->N = N;
    p->C = C;
    p->L = L;
    p->SEG = L > CC_BN_CHUNK ? CC_BN_CHUNK : CC_MAX(L, 1);
    p->nseg = L > 0 ? (L + p->SEG - 1) / p->SEG : 0;
    p->G = L >= CC_BN_CHUNK ? 1 : CC_BN_CHUNK / CC_MAX(L, 1);
    p->J = (N + p->G - 1) / p->G * p->nseg;
    p->ngroups = (C + CC_BN_GROUP - 1) / CC_BN_GROUP;
    p->tasks = p->J * p->ngroups;
}

/* Bounds of task t: rows [n0, n1), elements [l0, l1), channels [c0, c1), chunk j. */
typedef struct {
    int64_t n0, n1, l0, l1, c0, c1, j;
} bn_task;

static bn_task bn_task_at(const bn_plan *p, int64_t t)
{
    bn_task k;
    const int64_t g = t % p->ngroups, j = t / p->ngroups;
    const int64_t rb = j / p->nseg, sg = j % p->nseg;
    k.j = j;
    k.n0 = rb * p->G;
    k.n1 = CC_MIN(p->N, k.n0 + p->G);
    k.l0 = sg * p->SEG;
    k.l1 = CC_MIN(p->L, k.l0 + p->SEG);
    k.c0 = g * CC_BN_GROUP;
    k.c1 = CC_MIN(p->C, k.c0 + CC_BN_GROUP);
    return k;
}

int64_t cc_batch_norm_workspace_elems(int64_t N, int64_t C, int64_t L)
{
    bn_plan p;
    int64_t t, u;
    if (N < 0 || C < 1 || L < 0 || !cc_prod4_ok(N, C, L, 1, &t)) return -1;
    bn_plan_make(N, C, L, &p);
    if (!cc_prod4_ok(p.J, C, CC_BN_MOM, 1, &t) || !cc_mul_ok(C, CC_BN_COEF, &u)) return -1;
    return t + u;
}

/* Moments of a set of (x, dy) pairs: count, means, plain sum of dy, and the
 * centred sums mxx = sum (x - mx)^2, mxy = sum (x - mx)(dy - my).  Stored in
 * the workspace as CC_BN_MOM doubles in this order. */
typedef struct {
    double n, mx, my, sy, mxx, mxy;
} bn_moments;

static inline void mom_store(double *w, const bn_moments *m)
{
    w[0] = m->n;
    w[1] = m->mx;
    w[2] = m->my;
    w[3] = m->sy;
    w[4] = m->mxx;
    w[5] = m->mxy;
}

/* a <- moments of a and the set stored at w (the pairwise update of the mean
 * and the centred sums: exact in exact arithmetic, and stable). */
static inline void mom_merge(bn_moments *a, const double *w)
{
    const double bn = w[0], n = a->n + bn;
    const double dx = w[1] - a->mx, dy = w[2] - a->my;
    const double f = bn / n, c = a->n * f;
    a->mx += dx * f;
    a->my += dy * f;
    a->sy += w[3];
    a->mxx += w[4] + dx * dx * c;
    a->mxy += w[5] + dx * dy * c;
    a->n = n;
}

/* Channel c's moments: its J chunks merged in order. */
static void mom_channel(const double *work, int64_t J, int64_t C, int64_t c, bn_moments *a)
{
    int64_t j;
    const double *w = work + c * CC_BN_MOM;
    a->n = w[0];
    a->mx = w[1];
    a->my = w[2];
    a->sy = w[3];
    a->mxx = w[4];
    a->mxy = w[5];
    for (j = 1; j < J; ++j) mom_merge(a, work + (j * C + c) * CC_BN_MOM);
}

/* Whether training batch norm runs one channel at a time (channel_fused):
 * where x (and dy) are too large to stay in L2 between the statistics pass
 * and the per-element pass, and one channel's planes are small enough to
 * (arrays: how many of x and dy the statistics read).  Each thread then
 * reads a channel's planes from memory once, for its statistics, and again
 * from cache to write its output, instead of sweeping the whole array twice.
 * The same chunks, merged in the same order: the same bits either way.
 * Measured inside the training steps (alternating builds): ResNet-50 at
 * batch 4, 4 x 256 x 56 x 56 forward 1.30 -> 0.93 ms, backward 2.43 -> 1.85;
 * ResNet-18 at batch 16, 16 x 64 x 112 x 112 forward 9.2 -> 6.9, backward
 * 11.6 -> 8.2; batch norm's share of ResNet-50's step 45 -> 41 ms.  Planes
 * of at least CC_BN_FUSE_MIN_L only: with shorter ones (28 x 28, 14 x 14) a
 * channel is a few short runs far apart, and 16 x 128 x 28 x 28's backward
 * took 1.5x as long; channels enough for every thread. */
#define CC_BN_FUSE_BYTES ((int64_t)2 << 20)
#define CC_BN_FUSE_CHANNEL_BYTES ((int64_t)2 << 20)
#define CC_BN_FUSE_MIN_L 2048
static int bn_fused(const bn_plan *p, int team, int arrays, size_t elem_size)
{
    const double channel = (double)p->N * (double)p->L * (double)elem_size * arrays;
    return p->L >= CC_BN_FUSE_MIN_L && p->C >= 2 * team &&
           channel * (double)p->C >= (double)CC_BN_FUSE_BYTES &&
           channel <= (double)CC_BN_FUSE_CHANNEL_BYTES;
}

/* Threads for a job that moves `bytes` bytes: one below CC_NORM_SERIAL_BYTES,
 * where starting a team costs more than the second core saves.  Depends on the
 * sizes only, and the results never depend on the thread count anyway. */
#define CC_NORM_SERIAL_BYTES ((int64_t)2 << 20)
static int norm_team(int n_threads, int64_t elems, int64_t passes, size_t elem_size)
{
    return (double)elems * (double)passes * (double)elem_size < (double)CC_NORM_SERIAL_BYTES
               ? 1 : n_threads;
}

static int bn_check(const void *x, const void *rmean, const void *rvar, int64_t N, int64_t C,
                    int64_t L, double eps, int training, const double *work,
                    int64_t work_elems, int n_threads, const void *y, const void *o1,
                    const void *o2)
{
    int64_t t, need;
    if (n_threads < 1 || N < 0 || C < 1 || L < 0 || !(eps >= 0)) return CC_EINVAL;
    if (!cc_prod4_ok(N, C, L, 1, &t)) return CC_EINVAL;
    if (training && N * L < 1) return CC_EINVAL;
    if (!o1 || !o2) return CC_EINVAL;
    if (t > 0 && (!x || !y)) return CC_EINVAL;
    if (!training && (!rmean || !rvar)) return CC_EINVAL;
    need = cc_batch_norm_workspace_elems(N, C, L);
    if (need < 0 || work_elems < need || !work) return CC_EINVAL;
    return CC_OK;
}

/* Elements per ReLU task (any split of an elementwise map gives the same
 * bits), and the bytes moved from which the ReLU passes start a team: an
 * elementwise pass over a few hundred KiB (the networks' 7x7 and 14x14
 * maps: 256 x 7 x 7 at batch 8 is 0.4 MB) takes 5-10 us on one core, a team
 * a microsecond or two on a warm pool. */
#define CC_RELU_BLOCK 8192
#define CC_RELU_SERIAL_BYTES ((int64_t)512 << 10)
static int relu_team(int n_threads, int64_t elems, int64_t passes, size_t elem_size)
{
    return (double)elems * (double)passes * (double)elem_size < (double)CC_RELU_SERIAL_BYTES
               ? 1 : n_threads;
}

#define REAL float
#define SFX f32
#define CC_SQRT sqrtf
#define CC_POW powf
#define CC_BITS int32_t   /* (a REAL's bits as a signed and an unsigned integer) */
#define CC_UBITS uint32_t
#include "norm_impl.h"
#undef REAL
#undef SFX
#undef CC_SQRT
#undef CC_POW
#undef CC_BITS
#undef CC_UBITS

#define REAL double
#define SFX f64
#define CC_SQRT sqrt
#define CC_POW pow
#define CC_BITS int64_t
#define CC_UBITS uint64_t
#include "norm_impl.h"
#undef REAL
#undef SFX
#undef CC_SQRT
#undef CC_POW
#undef CC_BITS
#undef CC_UBITS
