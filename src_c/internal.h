/* Helpers shared between the kernel families; not part of the public header. */
#ifndef CONVCORE_INTERNAL_H
#define CONVCORE_INTERNAL_H

#include <stdint.h>

/* Largest element count any buffer may have: keeps byte counts of float64
 * buffers inside int64 as well. */
#define CC_SIZE_MAX (INT64_MAX / 16)

#if defined(__GNUC__) || defined(__clang__)
#define CC_RESTRICT __restrict__
#else
#define CC_RESTRICT
#endif

/* Kernels compiled once per instruction set and picked once at load time
 * (ifunc), where the toolchain can: x86-64, GCC, ELF.  Each kernel family
 * names its own targets; CC_TARGETS_FMA also lets the compiler fuse
 * multiply-adds (one rounding instead of two). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__ELF__) && !defined(CC_NO_CLONES)
#define CC_TARGETS(...) __attribute__((target_clones(__VA_ARGS__)))
#define CC_TARGETS_FMA(...) \
    __attribute__((target_clones(__VA_ARGS__), optimize("fp-contract=fast")))
#else
#define CC_TARGETS(...)
#define CC_TARGETS_FMA(...)
#endif

/* The AVX2 + FMA target of the fused kernels' clones.  It must name features,
 * not a processor: a clone for "arch=haswell" is taken only on a CPU that
 * identifies as Haswell, so every other AVX2 machine (AMD's among them) ran
 * the baseline SSE2 clone, several times slower.  "arch=x86-64-v3" (GCC 11+)
 * is the AVX2 + FMA feature level; older GCCs get "fma" (AVX + FMA). */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#define CC_AVX2_FMA "arch=x86-64-v3"
#else
#define CC_AVX2_FMA "fma"
#endif

#define CC_MIN(a, b) ((a) < (b) ? (a) : (b))
/* pairs that n items make (the last one may be single) */
#define CC_PAIRS(n) (((n) + 1) / 2)
#define CC_MAX(a, b) ((a) > (b) ? (a) : (b))

/* a * b into *out when it fits below CC_SIZE_MAX; 0 otherwise. */
int cc_mul_ok(int64_t a, int64_t b, int64_t *out);
int cc_prod4_ok(int64_t a, int64_t b, int64_t c, int64_t d, int64_t *out);

/* Output length of a sliding window (floor, or PyTorch's ceil_mode rule),
 * or -1 when no window fits.  The one formula of the C core. */
int64_t cc_window_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode);

/* ceil(a / b) for b > 0 and any sign of a. */
static inline int64_t cc_ceil_div(int64_t a, int64_t b)
{
    return a >= 0 ? (a + b - 1) / b : -((-a) / b);
}

/* The range [*lo, *hi) of output positions o in [0, O) whose input position
 * o*S + off lies in [0, I). */
static inline void cc_valid_range(int64_t I, int64_t O, int64_t S, int64_t off,
                                  int64_t *lo, int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : cc_ceil_div(-off, S);
    int64_t b = I - off <= 0 ? 0 : cc_ceil_div(I - off, S);
    if (a > O) a = O;
    if (b > O) b = O;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

/* Blocks of at most `block` covering `n` (one block when n <= split): an
 * even number of them, of equal size up to a multiple of 16.  Blocks of
 * exactly `block` left a short last one (3136 positions: 3 x 1024 + 64),
 * and an odd count leaves a thread idle for a whole block at the end; both
 * depend on the shape alone. */
static inline int64_t cc_blocksize(int64_t n, int64_t split, int64_t block)
{
    int64_t nb, bs;
    if (n <= split) return n;
    nb = (n + block - 1) / block;
    nb += nb & 1;
    bs = (n + nb - 1) / nb;
    bs = (bs + 15) / 16 * 16;
    return bs < block ? bs : block;
}
static inline int64_t cc_nblocks(int64_t n, int64_t split, int64_t block)
{
    const int64_t bs = cc_blocksize(n, split, block);
    return bs > 0 ? (n + bs - 1) / bs : 1;
}

/* Block size that cuts n into enough blocks for `tiles_other` other tiles to
 * make about 8 tiles in all (blocks of 32..maxblock, multiples of 16).  It
 * depends on the shape alone. */
static inline int64_t cc_split_block(int64_t n, int64_t tiles_other, int64_t maxblock)
{
    int64_t want = (8 + tiles_other - 1) / tiles_other, bs;
    if (want <= 1) return n < maxblock ? n : maxblock;
    bs = (n + want - 1) / want;
    bs = (bs + 15) / 16 * 16;
    if (bs < 32) bs = 32;
    if (bs > maxblock) bs = maxblock;
    return bs < n ? bs : n;
}

/* Fewest GEMM tiles a forward product is cut into where its shape allows
 * (shape-only, so the same for every thread count). */
#define CC_MIN_GEMM_TILES 4

/* Block size (a multiple of 16, at most n) that cuts n into about `want`
 * blocks. */
static inline int64_t cc_cut_block(int64_t n, int64_t want)
{
    int64_t bs = (n + want - 1) / want;
    bs = (bs + 15) / 16 * 16;
    return bs < n ? bs : n;
}

/* A product of G groups cut into nm x nn tiles (blocks of ms of its M
 * positions, of ns of its N columns): where that makes fewer than
 * CC_MIN_GEMM_TILES tiles, the longer side is cut into about
 * CC_MIN_GEMM_TILES / G blocks instead (each tile packs the other side's
 * operand whole), so that a batch-1 product does not run on one thread. */
static inline void cc_min_tiles(int64_t G, int64_t M, int64_t *nm, int64_t *ms, int64_t N,
                                int64_t *nn, int64_t *ns)
{
    const int64_t want = (CC_MIN_GEMM_TILES + G - 1) / G;
    if (G * *nm * *nn >= CC_MIN_GEMM_TILES) return;
    if (M >= N) {
        *ms = cc_cut_block(M, want);
        *nm = (M + *ms - 1) / *ms;
    } else {
        *ns = cc_cut_block(N, want);
        *nn = (N + *ns - 1) / *ns;
    }
}

/* Segments the batched dW reduction over nbL columns is cut into: more than
 * one only when the output gives too few tiles (small C*KH*KW and K, as in a
 * first layer) and the reduction is long.  Shape-only, so deterministic. */
#define CC_DW_SPLIT_MAX 8
static inline int64_t cc_dw_splits_n(int64_t out_elems, int64_t nbL)
{
    int64_t s;
    if (out_elems > 64 * 256 || nbL < 8192) return 1;
    s = nbL / 4096;
    return s < CC_DW_SPLIT_MAX ? s : CC_DW_SPLIT_MAX;
}
#define cc_dw_splits(g, nbL) cc_dw_splits_n((g)->K * ((g)->C / (g)->groups) * (g)->KH * (g)->KW, (nbL))

/* Threads worth starting for a convolution: a team costs microseconds on an
 * idle machine and whole scheduler time slices on a busy one, so work below
 * about 2^21 multiply-accumulates runs on the calling thread.  Results never
 * depend on the thread count, so this changes speed only. */
/* The 3x3 geometry a 5x5 WINOGRAD layer runs as, for nb images, forward
 * (dx = 0), dX (dx = 1) or dW (dx = 2: the forward with its input split),
 * with I inputs and O outputs.  Returns 0 where the input is split (I <= O: 4I channels of the shifted padded input, OH+2 x
 * OW+2, no padding) and 1 where the output is (4O channels of OH+3 x OW+3
 * over the padded input, summed shifted afterwards); see winograd_impl.h. */
int cc_wg5_geom(const cc_conv_geom *g, int dx, int64_t nb, cc_conv_geom *g3);

/* The Winograd tile a 3x3 correlation with an OH x OW output runs with: 4
 * (F(4x4, 3x3)) where it needs fewer products than 2 (F(2x2, 3x3)). */
int cc_wg_tile(int64_t OH, int64_t OW);

/* This thread's number in the enclosing parallel region (0 outside one),
 * and the region's team size (1 outside one). */
#ifdef _OPENMP
#include <omp.h>
#define CC_THREAD_NUM() omp_get_thread_num()
#define CC_TEAM_THREADS() omp_get_num_threads()
#else
#define CC_THREAD_NUM() 0
#define CC_TEAM_THREADS() 1
#endif

#define CC_TEAM_MIN_MACS 2097152.0
#define cc_conv_team_size(g, n_threads)                                                  \
    ((double)(g)->N * (double)(g)->K * (double)((g)->OH * (g)->OW) *                      \
     (double)((g)->C / (g)->groups) * (double)((g)->KH * (g)->KW) < CC_TEAM_MIN_MACS      \
         ? 1 : (n_threads))

#endif
