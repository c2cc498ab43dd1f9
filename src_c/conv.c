/* Convolution family: im2col, col2im, conv2d forward and backward,
 * instantiated for float32 and float64 from conv_impl.h. */
#include "convcore.h"
#include "internal.h"

#include <stdlib.h>
#include <string.h>

/* The direct kernels for small layers are compiled for AVX-512, AVX2 and the
 * baseline on x86-64 with GCC, picked once at load time (ifunc).  The choice
 * depends on the machine, never on the thread count. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    defined(__ELF__) && !defined(CC_NO_CLONES)
#define CC_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
/* ... and the direct micro-kernel fuses its multiply-adds where the clone has
 * FMA (AVX-512; "arch=haswell" is AVX2 + FMA): one rounding instead of two. */
#define CC_CLONES_FMA \
    __attribute__((target_clones("avx512f", "arch=haswell", "default"), optimize("fp-contract=fast")))
#else
#define CC_CLONES
#define CC_CLONES_FMA
#endif

#define REAL float
#define SFX f32
#define GEMM_T cc_sgemm_t
#include "conv_impl.h"
#undef REAL
#undef SFX
#undef GEMM_T

#define REAL double
#define SFX f64
#define GEMM_T cc_dgemm_t
#include "conv_impl.h"
#undef REAL
#undef SFX
#undef GEMM_T
