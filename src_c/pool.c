/* Pooling family: max, average and adaptive average pooling, forward and
 * backward, instantiated for float32 and float64 from pool_impl.h. */
#include "convcore.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The hot row kernels are compiled twice on x86-64 with GCC: for the baseline
 * (SSE2) and for AVX2, picked once at load time (ifunc).  Same C, same
 * operation order, no FMA contraction (-std=c99): identical results.  (An
 * AVX-512 clone was tried: GCC then vectorized the scalar row loops into
 * code 3x slower.) */
#define CC_CLONES CC_TARGETS("avx2", "default")

int64_t cc_pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d,
                         int ceil_mode)
{
    return cc_window_out(in, k, s, p, d, ceil_mode);
}

/* Threads for a job that reads and writes `elems` elements: one below
 * CC_SERIAL_BYTES, where a team's start and join cost more than the second
 * core saves (a few microseconds on an idle machine, milliseconds on a busy
 * one).  Depends on the sizes only, and every kernel gives the same bits for
 * every thread count anyway.  (It was 4 MiB, set on a busy machine; on an
 * idle one, where the team's threads wait spinning, 2 threads halved the
 * jobs between 256 KiB and 4 MiB, 2 threads against 1: LeNet's pools at
 * batch 64 0.120 -> 0.037 ms forward (with the vector blocks), 0.048 ->
 * 0.028 backward, AlexNet's 8x256x13x13 3x3/2 0.58 -> 0.28, GoogLeNet's
 * 8x832x7x7 3x3/1 1.07 -> 0.52, average pooling alike; LeNet-5's training
 * step 1.24 -> 1.18 ms.) */
#define CC_SERIAL_BYTES ((int64_t)256 << 10)
/* (the threshold of jobs with several times a copy's work per byte: global
 * average pooling, max pooling of planes of at most 16 elements) */
#define CC_GLOBAL_AVG_TEAM_BYTES ((int64_t)256 << 10)
static int cc_pool_team(int n_threads, int64_t elems, size_t elem_size)
{
    return elems < CC_SERIAL_BYTES / (int64_t)elem_size ? 1 : n_threads;
}

/* First tap [*lo] and end [*hi) of a dilated max window along one dimension;
 * taps are lo, lo + d, ... below hi.  Empty when *lo >= *hi. */
static inline void max_span(int64_t o, int64_t S, int64_t P, int64_t K, int64_t D,
                            int64_t I, int64_t *lo, int64_t *hi)
{
    int64_t s = o * S - P;
    int64_t e = CC_MIN(s + (K - 1) * D + 1, I);
    if (s < 0) s += cc_ceil_div(-s, D) * D;
    *lo = s;
    *hi = e;
}

/* Average window along one dimension: [*lo, *hi) inside the input and the
 * length *full of the window cut at I + P (the divisor with padding). */
static inline void avg_span(int64_t o, int64_t S, int64_t P, int64_t K, int64_t I,
                            int64_t *lo, int64_t *hi, int64_t *full)
{
    int64_t s = o * S - P;
    int64_t e = CC_MIN(s + K, I + P);
    *full = e - s;
    *lo = CC_MAX(s, 0);
    *hi = CC_MIN(e, I);
}

/* Outputs [*lo, *hi) whose whole window [o*S - P, o*S - P + E) lies in [0, I). */
static inline void inner_range(int64_t I, int64_t O, int64_t S, int64_t P, int64_t E,
                               int64_t *lo, int64_t *hi)
{
    int64_t a = cc_ceil_div(P, S);
    int64_t b = I + P - E >= 0 ? (I + P - E) / S + 1 : 0;
    if (a > O) a = O;
    if (b > O) b = O;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Adaptive window [floor(o*I/O), ceil((o+1)*I/O)). */
static inline void adaptive_span(int64_t o, int64_t I, int64_t O, int64_t *lo, int64_t *hi)
{
    *lo = (o * I) / O;
    *hi = ((o + 1) * I + O - 1) / O;
}

static int windows_nonempty(int64_t I, int64_t O, int64_t S, int64_t P, int64_t K,
                            int64_t D)
{
    /* only windows starting in the left padding can miss the input: the
     * output-size rule makes every window start before I */
    int64_t o, lo, hi;
    for (o = 0; o < O && o * S - P < 0; ++o) {
        max_span(o, S, P, K, D, I, &lo, &hi);
        if (lo >= hi) return 0;
    }
    return 1;
}

int cc_pool_geom_check(const cc_pool_geom *g, int kind)
{
    int64_t t;
    if (!g) return CC_EINVAL;
    if (g->N < 0 || g->C <= 0 || g->H <= 0 || g->W <= 0) return CC_EINVAL;
    if (g->KH <= 0 || g->KW <= 0 || g->SH <= 0 || g->SW <= 0) return CC_EINVAL;
    if (g->DH <= 0 || g->DW <= 0 || g->PH < 0 || g->PW < 0) return CC_EINVAL;
    if (g->PH > g->KH / 2 || g->PW > g->KW / 2) return CC_EINVAL;
    if (kind == CC_POOL_AVG && (g->DH != 1 || g->DW != 1 || g->divisor < 0)) return CC_EINVAL;
    if (kind != CC_POOL_AVG && kind != CC_POOL_MAX) return CC_EINVAL;
    if (g->OH != cc_pool_out_size(g->H, g->KH, g->SH, g->PH, g->DH, g->ceil_mode))
        return CC_EINVAL;
    if (g->OW != cc_pool_out_size(g->W, g->KW, g->SW, g->PW, g->DW, g->ceil_mode))
        return CC_EINVAL;
    if (g->OH <= 0 || g->OW <= 0) return CC_EINVAL;
    if (!cc_prod4_ok(g->N, g->C, g->H, g->W, &t)) return CC_EINVAL;
    if (!cc_prod4_ok(g->N, g->C, g->OH, g->OW, &t)) return CC_EINVAL;
    if (!cc_mul_ok(g->KH, g->KW, &t)) return CC_EINVAL;
    if (kind == CC_POOL_MAX &&
        (!windows_nonempty(g->H, g->OH, g->SH, g->PH, g->KH, g->DH) ||
         !windows_nonempty(g->W, g->OW, g->SW, g->PW, g->KW, g->DW)))
        return CC_EINVAL;
    return CC_OK;
}

static int adaptive_check(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH,
                          int64_t OW)
{
    int64_t t;
    if (N < 0 || C <= 0 || H <= 0 || W <= 0 || OH <= 0 || OW <= 0) return CC_EINVAL;
    if (!cc_prod4_ok(N, C, H, W, &t) || !cc_prod4_ok(N, C, OH, OW, &t)) return CC_EINVAL;
    if (!cc_mul_ok(OH + 1, H, &t) || !cc_mul_ok(OW + 1, W, &t)) return CC_EINVAL;
    return CC_OK;
}

/* (CC_PV: values of REAL in a 32-byte vector, the widest every clone's
 * compares and selects take whole) */
#define REAL float
#define CODE_T int32_t
#define SFX f32
#define CC_PV 8
#include "pool_impl.h"
#undef REAL
#undef CODE_T
#undef SFX
#undef CC_PV

#define REAL double
#define CODE_T int64_t
#define SFX f64
#define CC_PV 4
#include "pool_impl.h"
#undef REAL
#undef CODE_T
#undef SFX
#undef CC_PV
