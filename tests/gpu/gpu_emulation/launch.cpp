/* The convcore GPU kernels compiled for the host: one extern "C" entry per
 * kernel and dtype, taking the launch grid first and then the kernel's own
 * arguments, for the test suite to call through ctypes. */
#include "prelude.h"

#include "conv.cu"
#include "pool.cu"

typedef long long i64;

#define GEOM14 i64 N, i64 C, i64 H, i64 W, i64 KH, i64 KW, i64 SH, i64 SW, \
               i64 PH, i64 PW, i64 DH, i64 DW, i64 OH, i64 OW
#define ARGS14 N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW
#define GEOM12 i64 N, i64 C, i64 H, i64 W, i64 KH, i64 KW, i64 SH, i64 SW, \
               i64 PH, i64 PW, i64 OH, i64 OW
#define ARGS12 N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW

#define DEFINE_ENTRIES(T, SFX)                                                      \
extern "C" void emu_im2col_##SFX(unsigned g, unsigned b, const T *x, GEOM14, T *cols) \
{ cc_emu_launch(g, b, [&] { cc_im2col<T>(x, ARGS14, cols); }); }                   \
extern "C" void emu_col2im_##SFX(unsigned g, unsigned b, const T *cols, GEOM14, T *x) \
{ cc_emu_launch(g, b, [&] { cc_col2im<T>(cols, ARGS14, x); }); }                   \
extern "C" void emu_max_pool2d_fwd_##SFX(unsigned g, unsigned b, const T *x, GEOM14, \
                                         T *y, i64 *idx)                            \
{ cc_emu_launch(g, b, [&] { cc_max_pool2d_fwd<T>(x, ARGS14, y, idx); }); }        \
extern "C" void emu_max_pool2d_bwd_##SFX(unsigned g, unsigned b, const T *dy,       \
                                         const i64 *idx, GEOM14, T *dx)             \
{ cc_emu_launch(g, b, [&] { cc_max_pool2d_bwd<T>(dy, idx, ARGS14, dx); }); }      \
extern "C" void emu_max_pool2d_bwd_sorted_##SFX(unsigned g, unsigned b, const T *dy, \
        const i64 *keys, const i64 *order, i64 n_out, i64 n_in, T *dx)             \
{ cc_emu_launch(g, b, [&] {                                                         \
      cc_max_pool2d_bwd_sorted<T>(dy, keys, order, n_out, n_in, dx); }); }          \
extern "C" void emu_avg_pool2d_fwd_##SFX(unsigned g, unsigned b, const T *x, GEOM12, \
                                         i64 cip, i64 div, T *y)                    \
{ cc_emu_launch(g, b, [&] { cc_avg_pool2d_fwd<T>(x, ARGS12, cip, div, y); }); }   \
extern "C" void emu_avg_pool2d_bwd_##SFX(unsigned g, unsigned b, const T *dy, GEOM12, \
                                         i64 cip, i64 div, T *dx)                   \
{ cc_emu_launch(g, b, [&] { cc_avg_pool2d_bwd<T>(dy, ARGS12, cip, div, dx); }); } \
extern "C" void emu_adaptive_avg_pool2d_fwd_##SFX(unsigned g, unsigned b, const T *x, \
        i64 N, i64 C, i64 H, i64 W, i64 OH, i64 OW, T *y)                          \
{ cc_emu_launch(g, b, [&] { cc_adaptive_avg_pool2d_fwd<T>(x, N, C, H, W, OH, OW, y); }); } \
extern "C" void emu_adaptive_avg_pool2d_bwd_##SFX(unsigned g, unsigned b, const T *dy, \
        i64 N, i64 C, i64 H, i64 W, i64 OH, i64 OW, T *dx)                         \
{ cc_emu_launch(g, b, [&] { cc_adaptive_avg_pool2d_bwd<T>(dy, N, C, H, W, OH, OW, dx); }); }

DEFINE_ENTRIES(float, f32)
DEFINE_ENTRIES(double, f64)
