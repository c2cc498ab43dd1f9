/* Shared helpers of the convcore GPU kernels.
 *
 * Every kernel here is written in the subset of CUDA that is also valid host
 * C++: one thread per output element in a grid-stride loop, no shared memory,
 * no barriers, no atomics, no host headers (NVRTC has none).  The test suite
 * compiles these same files with the host C++ compiler through a small
 * prelude that defines the CUDA keywords and built-in indices, so the kernels'
 * indexing is checked on every run without a GPU.
 *
 * Sizes and offsets are 64-bit (`cc_i64`); scalars arrive as int64 from the
 * Python side (numpy.int64), so no product of sizes can wrap.
 */
#ifndef CONVCORE_KERNELS_COMMON_CUH
#define CONVCORE_KERNELS_COMMON_CUH

typedef long long cc_i64;

/* Grid-stride loop over [0, total): each thread starts at its global id and
 * steps by the number of threads in the grid. */
#define CC_GRID_LOOP(i, total)                                                   \
    for (cc_i64 i = (cc_i64)blockIdx.x * (cc_i64)blockDim.x + (cc_i64)threadIdx.x; \
         i < (total); i += (cc_i64)blockDim.x * (cc_i64)gridDim.x)

/* -infinity without the INFINITY macro (no <math.h> under NVRTC): the
 * product overflows, which IEEE arithmetic rounds to -inf. */
__device__ __forceinline__ float cc_neg_inf(float)
{
    float big = 3.0e38f;
    return -big * 10.0f;
}
__device__ __forceinline__ double cc_neg_inf(double)
{
    double big = 1.0e308;
    return -big * 10.0;
}

/* NaN is the only value that differs from itself (valid without fast-math,
 * which neither NVRTC nor the host build enables). */
template <typename T>
__device__ __forceinline__ bool cc_isnan(T v)
{
    return v != v;
}

__device__ __forceinline__ cc_i64 cc_min64(cc_i64 a, cc_i64 b) { return a < b ? a : b; }
__device__ __forceinline__ cc_i64 cc_max64(cc_i64 a, cc_i64 b) { return a > b ? a : b; }

/* floor(a / b) for b > 0 and any sign of a. */
__device__ __forceinline__ cc_i64 cc_floordiv(cc_i64 a, cc_i64 b)
{
    cc_i64 q = a / b;
    return (q * b > a) ? q - 1 : q;
}

#endif /* CONVCORE_KERNELS_COMMON_CUH */
