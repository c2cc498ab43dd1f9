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

/* Grid-stride loop over [0, total) with index type I: each thread starts at
 * its global id and steps by the number of threads in the grid. */
#define CC_GRID_LOOP(I, i, total)                                          \
    for (I i = (I)blockIdx.x * (I)blockDim.x + (I)threadIdx.x; i < (total); \
         i += (I)blockDim.x * (I)gridDim.x)

/* Index arithmetic (divisions above all) is several times cheaper in 32
 * bits, so every kernel body is a template on its index type I and the
 * kernel picks int when every offset it can form, plus one grid stride,
 * stays below CC_I32_LIMIT, and 64-bit otherwise.  The tests build the
 * emulation a second time with CC_I32_LIMIT 0 to run the 64-bit bodies. */
#ifndef CC_I32_LIMIT
#define CC_I32_LIMIT (1LL << 30)
#endif

__device__ __forceinline__ bool cc_fits32(cc_i64 a, cc_i64 b)
{
    return a < CC_I32_LIMIT && b < CC_I32_LIMIT;
}

/* Whether a sliding-window geometry's indexing fits in int: both tensors'
 * sizes, and every term of a tap's coordinate o*S - P + k*D (each below
 * 2^30, so no sum of two overflows). */
__device__ __forceinline__ bool cc_window_fits32(cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                                 cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                                                 cc_i64 PH, cc_i64 PW, cc_i64 DH, cc_i64 DW,
                                                 cc_i64 OH, cc_i64 OW, cc_i64 rows)
{
    return cc_fits32(N * C * H * W, N * C * OH * OW * rows) &&
           cc_fits32(OH * SH + KH * DH, OW * SW + KW * DW) && cc_fits32(PH, PW) &&
           cc_fits32(H + PH, W + PW);
}

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

template <typename I>
__device__ __forceinline__ I cc_min(I a, I b) { return a < b ? a : b; }
template <typename I>
__device__ __forceinline__ I cc_max(I a, I b) { return a > b ? a : b; }

/* floor(a / b) for b > 0 and any sign of a. */
template <typename I>
__device__ __forceinline__ I cc_floordiv(I a, I b)
{
    I q = a / b;
    return (q * b > a) ? q - 1 : q;
}

#endif /* CONVCORE_KERNELS_COMMON_CUH */
