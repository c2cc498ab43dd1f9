/* Convolution family: im2col, col2im, conv2d forward and backward,
 * instantiated for float32 and float64 from conv_impl.h. */
#include "convcore.h"
#include "internal.h"

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
