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

/* -1: from the CPU (on first use); 0 or 1: set by cc_set_wide_vectors */
static int cc_wide_mode = -1;

int cc_wide_vectors(void)
{
    int v = cc_wide_mode;
    if (v < 0) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
        v = 1;
#endif
        cc_wide_mode = v;   /* (every thread computes the same value) */
    }
    return v;
}

void cc_set_wide_vectors(int mode)
{
    cc_wide_mode = mode < 0 ? -1 : mode > 0;
}

int cc_avx2_fma(void)
{
    static int v = -1;
    if (v < 0) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
        v = 0;
#endif
    }
    return v;
}

int cc_product_kernel(void)
{
    return cc_wide_vectors() || cc_avx2_fma();
}

int cc_avx2_kernels(void)
{
    return !cc_wide_vectors() && cc_avx2_fma();
}

int cc_conv_is_depthwise(const cc_conv_geom *g)
{
    /* one input channel per group, in a grouped convolution: a single-channel
     * input with groups = 1 (a first layer) is an ordinary GEMM instead */
    return g->groups > 1 && g->C == g->groups;
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

