/* The convolution family for one element type, instantiated by conv.c with
 * REAL (float/double), SFX (f32/f64) and GEMM_T defined.
 *
 * One header per strategy, each with the same interface: a shape part
 * compiled once (applies? does AUTO pick it? workspace), and forward and
 * backward for the element type.  The planner (conv_plan_impl.h) lists them
 * in priority order and is the only place a call's strategy, chunking and
 * workspace are decided:
 *
 *   conv_depthwise_impl.h  DEPTHWISE  one input channel per group: direct loops
 *   winograd_impl.h        WINOGRAD   3x3 (stride 1, 2) and 5x5: fewer products
 *   conv_direct_impl.h     DIRECT     small layers: register-blocked loops
 *   conv_regions_impl.h    REGIONS    small maps: a GEMM per region of the
 *                                     plane over its live taps only
 *   conv_unrolled_impl.h   UNROLLED   maps smaller than the kernel: the layer as
 *                                     one matrix (image -> output), one product
 *   conv_batched_impl.h    BATCHED    im2col of a chunk of images + GEMM tiles
 *   conv_tiles_impl.h      TILES      im2col per image + GEMM tiles
 *   conv_crop_impl.h       (before any of them) kernel rows/columns that meet
 *                          only padding are cropped away
 *   conv_packed_gemm_impl.h  (eval mode) forward from weights packed once for
 *                          a GEMM kernel: large layers at batch 1-2
 *
 * Shared building blocks: conv_im2col_impl.h, direct_impl.h (the vector
 * kernels), conv_col2im_impl.h. */

#define CC_CAT2(a, b) a##_##b
#define CC_CAT(a, b) CC_CAT2(a, b)
#define FN(name) CC_CAT(name, SFX)

/* Fixed tile sizes.  They depend on nothing but these constants, so the
 * order in which any output element is reduced is the same for every
 * thread count (see conv2d_bwd). */
#define CC_LBLOCK 1024   /* output positions per GEMM tile */
#define CC_LSPLIT 2048   /* L up to this is one tile */
#define CC_KBLOCK 256    /* output channels per GEMM tile */
#define CC_CBLOCK 256    /* C*KH*KW rows per GEMM tile */

#ifndef CC_CHUNK_SHAPE
#define CC_CHUNK_SHAPE
/* Images per chunk that `avail` elements of workspace hold for a strategy
 * needing need(g, chunk) (affine in chunk), at most cap(g, per) where cap
 * is given; at least 1, or 0 if `avail` holds none.  Shape-only, so the
 * chunking, like the tiles, never depends on the thread count. */
static int64_t cc_conv_chunk(const cc_conv_geom *g, int64_t (*need)(const cc_conv_geom *, int64_t),
                             int64_t (*cap)(const cc_conv_geom *, int64_t), int64_t avail)
{
    const int64_t fixed = need(g, 0), one = need(g, 1);
    int64_t per;
    if (fixed < 0 || one < 0) return 0;
    per = one - fixed;
    if (per <= 0) return g->N > 0 ? g->N : 1; /* no workspace per image */
    if (avail < per + fixed) return 0;
    if (cap) avail = CC_MIN(avail, fixed + cap(g, per) * per);
    return CC_MIN(CC_MAX(g->N, 1), (avail - fixed) / per);
}
#endif

#include "conv_im2col_impl.h"
#include "direct_impl.h"
#include "conv_col2im_impl.h"
#include "conv_tiles_impl.h"
#include "conv_batched_impl.h"
#include "conv_depthwise_impl.h"
#include "conv_direct_impl.h"
#include "winograd_impl.h"
#include "conv_regions_impl.h"
#include "conv_unrolled_impl.h"
#include "conv_crop_impl.h"
#include "conv_packed_gemm_impl.h"
#include "conv_plan_impl.h"

#undef FN
#undef CC_CAT
#undef CC_CAT2
#undef CC_LBLOCK
#undef CC_LSPLIT
#undef CC_KBLOCK
#undef CC_CBLOCK
