/* Geometry checks and OpenMP queries shared by every kernel family. */
#include "convcore.h"
#include "internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int cc_mul_ok(int64_t a, int64_t b, int64_t *out)
{
    if (a < 0 || b < 0) return 0;
    if (a != 0 && b > CC_SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

int cc_prod4_ok(int64_t a, int64_t b, int64_t c, int64_t d, int64_t *out)
{
    int64_t ab, abc;
    return cc_mul_ok(a, b, &ab) && cc_mul_ok(ab, c, &abc) && cc_mul_ok(abc, d, out);
}

int64_t cc_window_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode)
{
    /* floor or ceil of (in + 2p - d(k-1) - 1) / s, plus one; with ceil_mode
     * the last window must start inside the input or the left padding */
    int64_t eff, span, o;
    if (in <= 0 || k <= 0 || s <= 0 || p < 0 || d <= 0) return -1;
    if (k - 1 > CC_SIZE_MAX / d) return -1;
    eff = d * (k - 1) + 1;
    if (p > (CC_SIZE_MAX - in) / 2 || s > CC_SIZE_MAX / 2) return -1;
    span = in + 2 * p;
    if (span < eff) return -1;
    o = (ceil_mode ? (span - eff + s - 1) / s : (span - eff) / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) --o;
    return o;
}

int cc_conv_geom_check(const cc_conv_geom *g)
{
    int64_t t;
    if (!g) return CC_EINVAL;
    if (g->N < 0 || g->C <= 0 || g->H <= 0 || g->W <= 0 || g->K <= 0) return CC_EINVAL;
    if (g->groups <= 0 || g->C % g->groups || g->K % g->groups) return CC_EINVAL;
    if (g->OH != cc_window_out(g->H, g->KH, g->SH, g->PH, g->DH, 0)) return CC_EINVAL;
    if (g->OW != cc_window_out(g->W, g->KW, g->SW, g->PW, g->DW, 0)) return CC_EINVAL;
    if (g->OH <= 0 || g->OW <= 0) return CC_EINVAL;
    if (!cc_prod4_ok(1, g->C, g->H, g->W, &t)) return CC_EINVAL;
    if (!cc_prod4_ok(1, g->K, g->OH, g->OW, &t)) return CC_EINVAL;
    if (!cc_prod4_ok(g->N, g->C, g->H, g->W, &t)) return CC_EINVAL;
    if (!cc_prod4_ok(g->N, g->K, g->OH, g->OW, &t)) return CC_EINVAL;
    if (!cc_prod4_ok(g->C, g->KH, g->KW, g->OH * 1, &t)) return CC_EINVAL;
    if (!cc_mul_ok(t, g->OW, &t)) return CC_EINVAL;
    if (!cc_prod4_ok(g->K, g->C / g->groups, g->KH, g->KW, &t)) return CC_EINVAL;
    /* BLAS takes 32-bit sizes and leading dimensions */
    if (g->OH * g->OW > INT_MAX || g->C * g->KH * g->KW > INT_MAX || g->K > INT_MAX)
        return CC_EINVAL;
    if (g->H * g->W > INT_MAX) return CC_EINVAL;
    return CC_OK;
}

int cc_conv_is_pointwise(const cc_conv_geom *g)
{
    return g->KH == 1 && g->KW == 1 && g->SH == 1 && g->SW == 1 &&
           g->PH == 0 && g->PW == 0;
}

int cc_conv_is_depthwise(const cc_conv_geom *g)
{
    /* one input channel per group, in a grouped convolution: a single-channel
     * input with groups = 1 (a first layer) is an ordinary GEMM instead */
    return g->groups > 1 && g->C == g->groups;
}

int cc_conv_auto_strategy(const cc_conv_geom *g, int backward)
{
    /* Measured on the layer set of BENCHMARKS.md (interleaved, 2 threads):
     * side-by-side columns were as fast as per-image tiles or faster on every
     * layer, forward and backward (per-image tiles lost most on first layers
     * and 1x1 convolutions: 0.6-0.8x).  Tiles stay for memory-tight callers:
     * they need no buffer for the GEMM output. */
    (void)g;
    (void)backward;
    return CC_CONV_BATCHED;
}

int cc_conv_winograd_ok(const cc_conv_geom *g)
{
    /* 3x3 at stride 1 or 2, or 5x5 at stride 1 cut into four 3x3 pieces
     * (cc_wg5_geom) */
    const int k3 = g->KH == 3 && g->KW == 3 && g->PH <= 2 && g->PW <= 2 &&
                   ((g->SH == 1 && g->SW == 1) || (g->SH == 2 && g->SW == 2));
    const int k5 = g->KH == 5 && g->KW == 5 && g->PH <= 4 && g->PW <= 4 && g->SH == 1 && g->SW == 1;
    return (k3 || k5) && g->DH == 1 && g->DW == 1 && g->groups == 1;
}

int cc_wg5_geom(const cc_conv_geom *g, int dx, int64_t nb, cc_conv_geom *g3)
{
    const int t = dx == 1;
    const int64_t I = t ? g->K : g->C, O = t ? g->C : g->K;
    const int64_t OHf = t ? g->H : g->OH, OWf = t ? g->W : g->OW;
    *g3 = *g;
    g3->N = nb;
    g3->KH = g3->KW = 3;
    if (I <= O || dx == 2) {   /* split input: 4I channels of OHf+2 x OWf+2, no padding */
        g3->C = 4 * I;
        g3->K = O;
        g3->H = OHf + 2;
        g3->W = OWf + 2;
        g3->PH = g3->PW = 0;
        g3->OH = OHf;
        g3->OW = OWf;
        return 0;
    }
    /* split output: 4O channels of OHf+3 x OWf+3 over the padded input */
    g3->C = I;
    g3->K = 4 * O;
    g3->H = t ? g->OH : g->H;
    g3->W = t ? g->OW : g->W;
    g3->PH = t ? 4 - g->PH : g->PH;
    g3->PW = t ? 4 - g->PW : g->PW;
    g3->OH = OHf + 3;
    g3->OW = OWf + 3;
    return 1;
}

int cc_conv_winograd_auto(const cc_conv_geom *g)
{
    /* The transforms cost memory passes proportional to C + K per tile; the
     * GEMMs save 20 of every 36 multiplications per channel pair.  Below
     * about 32 channels on either side the saving does not pay. */
    /* (5x5 transforms four times the channels on one side: twice the bar) */
    const int64_t min = g->KH == 5 ? 2 * CC_WG_MIN_CHANNELS : CC_WG_MIN_CHANNELS;
    /* Stride 2 saves 11 of 36 multiplications.  Measured (fwd+bwd, 2
     * threads, against BATCHED): 1.2-1.4x faster on outputs of 14x14 to
     * 28x28 from 16 channels on, 0.85-1.08x on 8x8 outputs, 0.73-0.98x on
     * 7x7 ones (few tiles, short GEMMs). */
    if (g->SH == 2 && (g->OH < CC_WG_S2_MIN_SIDE || g->OW < CC_WG_S2_MIN_SIDE)) return 0;
    return cc_conv_winograd_ok(g) && g->C >= min && g->K >= min;
}

int cc_conv_product_ok(const cc_conv_geom *g)
{
    /* the product kernel (direct_impl.h) on im2col columns: measured faster
     * than BLAS, whose packing of the columns costs as much as the
     * multiplications when the weights are few */
    return g->groups == 1 && g->K * g->C * g->KH * g->KW <= CC_PW_MAX_WEIGHTS && g->K <= CC_PW_MAX_K;
}

int cc_conv_direct_ok(const cc_conv_geom *g)
{
    /* pointwise: the product kernel (direct_impl.h), no padded copy */
    if (cc_conv_is_pointwise(g)) return g->groups == 1 && g->K * g->C <= CC_PW_MAX_WEIGHTS;
    /* the padded copy: C x (H + 2PH) x (W + 2PW), bounded here with 6 SW
     * columns to spare */
    const int64_t wpp = g->W + 2 * g->PW + 6 * g->SW, hp = g->H + 2 * g->PH;
    return g->groups == 1 && g->K <= CC_DIRECT_MAX_K && wpp <= CC_DIRECT_MAX_PAD &&
           hp <= CC_DIRECT_MAX_PAD && g->C * hp * wpp <= CC_DIRECT_MAX_PAD;
}

int cc_conv_direct_auto(const cc_conv_geom *g)
{
    /* measured (forward, 2 threads): LeNet's second layer (16 channels)
     * 2x faster than BATCHED; with fewer than 12 output channels most of a
     * 16-channel vector idles and BATCHED is as fast; wider layers are
     * faster through BLAS */
    if (cc_conv_is_pointwise(g)) return cc_conv_direct_ok(g);
    return cc_conv_direct_ok(g) && g->K >= 12 && g->K * g->C * g->KH * g->KW <= CC_DIRECT_AUTO_WEIGHTS;
}

/* Winograd workspace: fixed 2 x 16*K*C (transformed weights, dU), per image
 * 16*(C+K) values per 2x2 tile of the larger of the output and the input. */
static int64_t wg3_workspace(const cc_conv_geom *g, int64_t chunk);

/* A 5x5 layer's Winograd workspace, the largest of its forward, dX and dW:
 * the split kernel (4 O I 9) or the split dW (as large), a chunk of split
 * outputs (a split input is transformed straight from the planes), and the
 * 3x3 workspace of the split geometry. */
static int64_t wg5_workspace(const cc_conv_geom *g, int64_t chunk)
{
    int64_t best = 0;
    int dx;
    for (dx = 0; dx < 3; ++dx) {
        cc_conv_geom g3;
        int64_t wk, in, rest;
        const int out = cc_wg5_geom(g, dx, chunk, &g3);
        rest = wg3_workspace(&g3, chunk);
        if (rest < 0 || !cc_prod4_ok(g3.K, g3.C, 9, 1, &wk) ||
            !cc_prod4_ok(out ? chunk : 0, g3.K, g3.OH, g3.OW, &in) || wk > CC_SIZE_MAX - in ||
            wk + in > CC_SIZE_MAX - rest)
            return -1;
        best = CC_MAX(best, wk + in + rest);
    }
    return best;
}

/* (below this, few 4x4 tiles lie inside the plane) */
#define CC_WG4_MIN_SIDE 24

int cc_wg_tile(int64_t OH, int64_t OW)
{
    /* F(4x4, 3x3) only when asked for: its rounding error is 5-10x
     * F(2x2, 3x3)'s (relative norm error 2-3e-6 against 2-5e-7 on VGG-like
     * layers), above the agreement to float rounding promised by default */
    const char *opt = getenv("CONVCORE_WINOGRAD_TILE");
    if (!opt || strcmp(opt, "4") != 0) return 2;
    /* products per plane pair: 16 per 2x2 tile, or 36 per 4x4 tile.  On
     * small planes most 4x4 tiles cross the border (a scalar gather) and the
     * GEMMs get short: measured (2 threads) F(4x4, 3x3) 20-30 % slower on
     * 13x13 and 14x14 outputs, where it saves 27 % of the products, and
     * 25-30 % faster on 27x27 and larger, where it saves 36-44 %. */
    const int64_t t2 = 16 * ((OH + 1) / 2) * ((OW + 1) / 2);
    const int64_t t4 = 36 * ((OH + 3) / 4) * ((OW + 3) / 4);
    return 3 * t4 <= 2 * t2 && OH >= CC_WG4_MIN_SIDE && OW >= CC_WG4_MIN_SIDE ? 4 : 2;
}

/* transformed values per image: the more of F(2x2, 3x3)'s and F(4x4, 3x3)'s
 * tiles over the output (forward, dW) and over the input (dX) */
static int64_t wg_points(int64_t H, int64_t W)
{
    const int64_t t2 = 16 * ((H + 1) / 2) * ((W + 1) / 2);
    const int64_t t4 = 36 * ((H + 3) / 4) * ((W + 3) / 4);
    return t2 > t4 ? t2 : t4;
}

static int64_t wg3_workspace(const cc_conv_geom *g, int64_t chunk)
{
    /* (stride 2: 25 values per 2x2 tile of the output, for every pass) */
    const int64_t T = g->SH == 2 ? 25 * ((g->OH + 1) / 2) * ((g->OW + 1) / 2) : wg_points(g->OH, g->OW);
    const int64_t Th = g->SH == 2 ? 0 : wg_points(g->H, g->W);
    const int64_t pts = T > Th ? T : Th;
    int64_t fixed, t;
    /* fixed: the dX kernel (36 matrices at most) and dU (16); (+ padding
     * of 32 elements behind each of the at most 36 matrices of four
     * buffers, see WG_STRIDE in winograd_impl.h) */
    if (!cc_prod4_ok(52, g->K, g->C, 1, &fixed) || fixed > CC_SIZE_MAX - 4 * 36 * 32) return -1;
    fixed += 4 * 36 * 32;
    if (!cc_prod4_ok(chunk, 1, g->C + g->K, pts, &t)) return -1;
    /* a chunk's tiles are one BLAS dimension: 32-bit sizes */
    if (chunk * (pts / 16) > INT_MAX || t > CC_SIZE_MAX - fixed) return -1;
    return t + fixed;
}

static int64_t wg_workspace(const cc_conv_geom *g, int64_t chunk)
{
    return g->KH == 5 ? wg5_workspace(g, chunk) : wg3_workspace(g, chunk);
}

int64_t cc_conv_workspace_elems(const cc_conv_geom *g, int64_t chunk, int strategy)
{
    int64_t t;
    if (cc_conv_is_depthwise(g)) return 0;
    /* WINOGRAD may fall back to BATCHED (untame inputs): room for both */
    if (strategy == CC_CONV_AUTO || (strategy == CC_CONV_WINOGRAD && cc_conv_winograd_ok(g))) {
        /* enough for whichever strategy the call resolves to: the larger
         * fixed part plus the larger per-image part (affine in chunk) */
        const int64_t b0 = cc_conv_workspace_elems(g, 0, CC_CONV_BATCHED);
        const int64_t b1 = cc_conv_workspace_elems(g, 1, CC_CONV_BATCHED);
        int64_t w0, w1, fixed, per;
        if (strategy == CC_CONV_AUTO && !cc_conv_winograd_auto(g))
            return cc_conv_workspace_elems(g, chunk, CC_CONV_BATCHED);
        w0 = wg_workspace(g, 0);
        w1 = wg_workspace(g, 1);
        if (b0 < 0 || b1 < 0 || w0 < 0 || w1 < 0) return -1;
        if (cc_conv_workspace_elems(g, chunk, CC_CONV_BATCHED) < 0 || wg_workspace(g, chunk) < 0)
            return -1;
        fixed = CC_MAX(b0, w0);
        per = CC_MAX(b1 - b0, w1 - w0);
        if (!cc_mul_ok(chunk, per, &t) || t > CC_SIZE_MAX - fixed) return -1;
        return t + fixed;
    }
    /* WINOGRAD that does not apply runs BATCHED; DIRECT runs dW as BATCHED,
     * whose fixed part (CC_DW_SPLIT_MAX * K*C*KH*KW) holds its kernel copy */
    if (strategy == CC_CONV_WINOGRAD || strategy == CC_CONV_DIRECT) strategy = CC_CONV_BATCHED;
    if (strategy == CC_CONV_BATCHED) {
        /* per image: columns and T; fixed: dW partials of a split reduction */
        /* (at least the direct path's blocked kernel copy, which a request
         * for it, or AUTO, may take instead: 16 channels per block) */
        const int64_t fixed = CC_DW_SPLIT_MAX * ((g->K + 15) / 16 * 16) * (g->C / g->groups) * g->KH * g->KW;
        /* (per image at least 16-channel blocks of dy, for the direct dW) */
        const int64_t rows = CC_MAX(g->C * g->KH * g->KW + g->K, (g->K + 15) / 16 * 16);
        if (!cc_prod4_ok(chunk, rows, g->OH, g->OW, &t)) return -1;
        /* the whole chunk's columns are one BLAS operand: 32-bit sizes */
        if (chunk * g->OH * g->OW > INT_MAX) return -1;
        return t + fixed;
    }
    if (cc_conv_is_pointwise(g)) return 0;
    if (!cc_prod4_ok(chunk, g->C * g->KH * g->KW, g->OH, g->OW, &t)) return -1;
    return t;
}

int cc_openmp_enabled(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int cc_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

int64_t cc_conv_workspace_run(const cc_conv_geom *g, int64_t chunk, int strategy)
{
    if (strategy == CC_CONV_WINOGRAD && !cc_conv_is_depthwise(g)) return wg_workspace(g, chunk);
    if (strategy == CC_CONV_DIRECT && !cc_conv_is_depthwise(g)) {
        /* fixed: the kernel (forward) or its gradient (dW) in 16-channel
         * blocks; per image: dy transposed into 16-channel vectors (dW) */
        const int64_t k16 = (g->K + 15) / 16 * 16;
        return k16 * g->C * g->KH * g->KW + chunk * k16 * g->OH * g->OW;
    }
    return cc_conv_workspace_elems(g, chunk, strategy);
}
