/* Convolution family: im2col, col2im, conv2d forward and backward,
 * instantiated for float32 and float64 from conv_impl.h (which lists the
 * strategies, one header each, and the planner). */
#include "convcore.h"
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* The direct kernels for small layers are compiled for AVX-512, AVX2 and the
 * baseline on x86-64 with GCC, picked once at load time (ifunc).  The choice
 * depends on the machine, never on the thread count. */
#define CC_CLONES CC_TARGETS("avx512f", "avx2", "default")
/* ... and the vector micro-kernels fuse their multiply-adds where the clone
 * has FMA (AVX-512, and AVX2 + FMA: CC_AVX2_FMA in internal.h). */
#define CC_CLONES_FMA CC_TARGETS_FMA("avx512f", CC_AVX2_FMA, "default")

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
