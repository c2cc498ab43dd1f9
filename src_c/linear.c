/* Linear family: the affine map y = x·Wᵀ + b and its gradients, as GEMMs
 * partitioned over convcore's own OpenMP team, each part one sequential BLAS
 * call (instantiated for float32 and float64 from linear_impl.h).
 *
 * Why not one threaded BLAS call: the BLAS's own thread pool is a second pool
 * beside the OpenMP team of the other kernels; on a machine with few cores
 * the two keep spinning against each other between calls.  Here every thread
 * belongs to one team, and the BLAS runs sequentially inside it.
 *
 * The parts split an output dimension only, never the reduction dimension,
 * and their sizes depend on the shapes and the thread count: each output
 * element is one BLAS dot product over the whole reduction. */
#include "convcore.h"
#include "internal.h"

#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* Below this many multiply-adds a GEMM runs on the calling thread alone:
 * waking a team costs more than the second core saves. */
#define CC_LINEAR_SERIAL_MACS ((int64_t)1 << 17)
/* Parts are multiples of this many rows or columns (whole SIMD vectors). */
#define CC_LINEAR_ALIGN 16
/* Columns of the bias gradient summed at once (a row's piece stays in L1). */
#define CC_LINEAR_DB 256
/* Forward passes of at most this many rows read W once, without BLAS
 * (fwd_few), in this many partial sums per dot product. */
#define CC_LINEAR_FEW 8
#define CC_LINEAR_LANES 16
#define CC_LINEAR_CLONES CC_TARGETS_FMA("avx512f", CC_AVX2_FMA, "default")

/* Threads for an M x N x K product: one below CC_LINEAR_SERIAL_MACS, else at
 * most one per CC_LINEAR_ALIGN slice of the dimension being split. */
static int linear_team(int n_threads, int64_t M, int64_t N, int64_t K, int64_t split)
{
    int64_t slices = (split + CC_LINEAR_ALIGN - 1) / CC_LINEAR_ALIGN;
    if ((double)M * (double)N * (double)K < (double)CC_LINEAR_SERIAL_MACS) return 1;
    if (slices < n_threads) return slices < 1 ? 1 : (int)slices;
    return n_threads;
}

/* The range [*lo, *hi) of part t of n parts of a dimension of length len,
 * in multiples of CC_LINEAR_ALIGN (the last part takes the rest). */
static void linear_part(int64_t len, int t, int n, int64_t *lo, int64_t *hi)
{
    int64_t slices = (len + CC_LINEAR_ALIGN - 1) / CC_LINEAR_ALIGN;
    int64_t a = slices * t / n, b = slices * (t + 1) / n;
    *lo = CC_MIN(a * CC_LINEAR_ALIGN, len);
    *hi = CC_MIN(b * CC_LINEAR_ALIGN, len);
}

static int linear_check(int64_t M, int64_t N, int64_t K, int n_threads)
{
    if (M < 0 || N < 1 || K < 1 || n_threads < 1) return CC_EINVAL;
    /* BLAS takes int dimensions and leading dimensions */
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) return CC_EINVAL;
    return CC_OK;
}

#define REAL float
#define SFX f32
#define GEMM_T cc_sgemm_t
#include "linear_impl.h"
#undef REAL
#undef SFX
#undef GEMM_T

#define REAL double
#define SFX f64
#define GEMM_T cc_dgemm_t
#include "linear_impl.h"
#undef REAL
#undef SFX
#undef GEMM_T
