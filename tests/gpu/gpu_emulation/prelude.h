/* Host-C++ stand-ins for the CUDA keywords and built-ins that the convcore
 * kernels use, so the very same .cu files compile with g++ and run on the
 * CPU.  A launch runs every (block, thread) of the grid one after another;
 * that is exact for kernels with no shared memory, barriers or atomics,
 * which is the subset convcore's kernels are written in. */
#ifndef CONVCORE_EMULATION_PRELUDE_H
#define CONVCORE_EMULATION_PRELUDE_H

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict

struct cc_emu_dim3 {
    unsigned int x, y, z;
};

/* Built-in indices: thread-local globals that the launch loop sets. */
static thread_local cc_emu_dim3 blockIdx, threadIdx, blockDim, gridDim;

/* Runs f() once for every thread of a 1-D grid of `grid` blocks of `block`
 * threads. */
template <typename F>
static void cc_emu_launch(unsigned int grid, unsigned int block, F f)
{
    gridDim = cc_emu_dim3{grid, 1, 1};
    blockDim = cc_emu_dim3{block, 1, 1};
    for (unsigned int b = 0; b < grid; ++b) {
        for (unsigned int t = 0; t < block; ++t) {
            blockIdx = cc_emu_dim3{b, 0, 0};
            threadIdx = cc_emu_dim3{t, 0, 0};
            f();
        }
    }
}

#endif /* CONVCORE_EMULATION_PRELUDE_H */
