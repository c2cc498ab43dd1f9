/* Max, average and adaptive-average pooling for NCHW, forward and backward,
 * mirroring the C core's pooling semantics (PyTorch's):
 *
 * - max: padding acts as -inf (padded taps are never visited); the first
 *   maximum in (h, w) scan order wins a tie; a NaN wins over any number (the
 *   last NaN when a window holds several, as PyTorch); a window of all -inf still returns the index of
 *   its first in-image tap.  Indices are int64, flat h*W + w in the plane.
 * - avg: the divisor is divisor_override when non-zero; otherwise the window
 *   clipped to the padded image (the ceil_mode overhang is never counted),
 *   further clipped to the image when count_include_pad is 0.
 * - adaptive avg: window rows [floor(i*H/OH), ceil((i+1)*H/OH)), likewise
 *   for columns.
 *
 * Every backward pass is a gather: one thread per input pixel adds the
 * gradients of the windows that reach it in a fixed order, with no atomics.
 */
#include "common.cuh"

#define CC_POOL_PARAMS(I) I N, I C, I H, I W, I KH, I KW, I SH, I SW, \
                          I PH, I PW, I DH, I DW, I OH, I OW
#define CC_POOL_ARGS(I) (I)N, (I)C, (I)H, (I)W, (I)KH, (I)KW, (I)SH, (I)SW, \
                        (I)PH, (I)PW, (I)DH, (I)DW, (I)OH, (I)OW
#define CC_AVG_PARAMS(I) I N, I C, I H, I W, I KH, I KW, I SH, I SW, \
                         I PH, I PW, I OH, I OW
#define CC_AVG_ARGS(I) (I)N, (I)C, (I)H, (I)W, (I)KH, (I)KW, (I)SH, (I)SW, \
                       (I)PH, (I)PW, (I)OH, (I)OW

/* ------------------------------------------------------------------ max */
/* Geometry order: N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW. */
template <typename T, typename I>
__device__ __forceinline__ void cc_max_pool2d_fwd_body(const T *__restrict__ x,
                                                       CC_POOL_PARAMS(I),
                                                       T *__restrict__ y,
                                                       cc_i64 *__restrict__ idx)
{
    const I total = N * C * OH * OW;
    CC_GRID_LOOP(I, i, total) {
        const I ow = i % OW;
        const I oh = (i / OW) % OH;
        const I nc = i / (OH * OW);
        const T *plane = x + nc * H * W;
        I hs = oh * SH - PH, ws = ow * SW - PW;
        const I he = cc_min<I>(hs + (KH - 1) * DH + 1, H);
        const I we = cc_min<I>(ws + (KW - 1) * DW + 1, W);
        while (hs < 0) hs += DH;
        while (ws < 0) ws += DW;
        /* first in-image tap (clamped for a window that has none, which
         * the functional layer's checks rule out) */
        I best = cc_min<I>(hs, H - 1) * W + cc_min<I>(ws, W - 1);
        T m = cc_neg_inf((T)0);
        for (I h = hs; h < he; h += DH) {
            for (I w = ws; w < we; w += DW) {
                const T v = plane[h * W + w];
                if (v > m || cc_isnan(v)) {
                    m = v;
                    best = h * W + w;
                }
            }
        }
        y[i] = m;
        idx[i] = (cc_i64)best;
    }
}

template <typename T>
__global__ void cc_max_pool2d_fwd(const T *__restrict__ x, CC_POOL_PARAMS(cc_i64),
                                  T *__restrict__ y, cc_i64 *__restrict__ idx)
{
    if (cc_window_fits32(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, 1))
        cc_max_pool2d_fwd_body<T, int>(x, CC_POOL_ARGS(int), y, idx);
    else
        cc_max_pool2d_fwd_body<T, cc_i64>(x, CC_POOL_ARGS(cc_i64), y, idx);
}

/* Gather with the pooling geometry: for input pixel (h, w) and tap (kh, kw)
 * at most one window (oh, ow) covers it; its gradient is added when that
 * window's argmax is this pixel.  Windows are visited in (kh, kw) order. */
template <typename T, typename I>
__device__ __forceinline__ void cc_max_pool2d_bwd_body(const T *__restrict__ dy,
                                                       const cc_i64 *__restrict__ idx,
                                                       CC_POOL_PARAMS(I),
                                                       T *__restrict__ dx)
{
    const I total = N * C * H * W;
    CC_GRID_LOOP(I, i, total) {
        const I w = i % W;
        const I h = (i / W) % H;
        const I nc = i / (H * W);
        const cc_i64 me = (cc_i64)(h * W + w);
        const T *g = dy + nc * OH * OW;
        const cc_i64 *ix = idx + nc * OH * OW;
        T acc = (T)0;
        for (I kh = 0; kh < KH; ++kh) {
            const I th = h + PH - kh * DH;
            if (th < 0) break;
            if (th % SH != 0) continue;
            const I oh = th / SH;
            if (oh >= OH) continue;
            for (I kw = 0; kw < KW; ++kw) {
                const I tw = w + PW - kw * DW;
                if (tw < 0) break;
                if (tw % SW != 0) continue;
                const I ow = tw / SW;
                if (ow >= OW) continue;
                const I o = oh * OW + ow;
                if (ix[o] == me) acc += g[o];
            }
        }
        dx[i] = acc;
    }
}

template <typename T>
__global__ void cc_max_pool2d_bwd(const T *__restrict__ dy, const cc_i64 *__restrict__ idx,
                                  CC_POOL_PARAMS(cc_i64), T *__restrict__ dx)
{
    if (cc_window_fits32(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, 1))
        cc_max_pool2d_bwd_body<T, int>(dy, idx, CC_POOL_ARGS(int), dx);
    else
        cc_max_pool2d_bwd_body<T, cc_i64>(dy, idx, CC_POOL_ARGS(cc_i64), dx);
}

/* Gather without the pooling geometry (only the indices are known):
 * `keys` holds nc*H*W + idx of every output, sorted, and `order` the output
 * positions in that order (ascending within equal keys).  Each input pixel
 * binary-searches its run of equal keys and adds those gradients in output
 * order.  Always 64-bit: the keys are. */
template <typename T>
__global__ void cc_max_pool2d_bwd_sorted(const T *__restrict__ dy,
                                         const cc_i64 *__restrict__ keys,
                                         const cc_i64 *__restrict__ order,
                                         cc_i64 n_out, cc_i64 n_in,
                                         T *__restrict__ dx)
{
    CC_GRID_LOOP(cc_i64, i, n_in) {
        cc_i64 lo = 0, hi = n_out;           /* first key >= i */
        while (lo < hi) {
            const cc_i64 mid = lo + (hi - lo) / 2;
            if (keys[mid] < i) lo = mid + 1; else hi = mid;
        }
        T acc = (T)0;
        for (cc_i64 j = lo; j < n_out && keys[j] == i; ++j) acc += dy[order[j]];
        dx[i] = acc;
    }
}

/* ------------------------------------------------------------------ avg */
/* Divisor of average-pool window (oh, ow); never 0 for a valid geometry
 * (every window holds at least one padded-image tap). */
template <typename I>
__device__ __forceinline__ I cc_avg_divisor(I oh, I ow, I H, I W, I KH, I KW, I SH, I SW,
                                            I PH, I PW, I count_include_pad,
                                            I divisor_override)
{
    if (divisor_override != 0) return divisor_override;
    const I hs = oh * SH - PH, ws = ow * SW - PW;
    const I he = cc_min<I>(hs + KH, H + PH), we = cc_min<I>(ws + KW, W + PW);
    if (count_include_pad) return (he - hs) * (we - ws);
    return (cc_min<I>(he, H) - cc_max<I>(hs, 0)) * (cc_min<I>(we, W) - cc_max<I>(ws, 0));
}

/* Geometry order: N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, then
 * count_include_pad (0/1) and divisor_override (0 = none). */
template <typename T, typename I>
__device__ __forceinline__ void cc_avg_pool2d_fwd_body(const T *__restrict__ x,
                                                       CC_AVG_PARAMS(I), I cip, I div,
                                                       T *__restrict__ y)
{
    const I total = N * C * OH * OW;
    CC_GRID_LOOP(I, i, total) {
        const I ow = i % OW;
        const I oh = (i / OW) % OH;
        const I nc = i / (OH * OW);
        const T *plane = x + nc * H * W;
        const I hs = cc_max<I>(oh * SH - PH, 0), ws = cc_max<I>(ow * SW - PW, 0);
        const I he = cc_min<I>(oh * SH - PH + KH, H);
        const I we = cc_min<I>(ow * SW - PW + KW, W);
        T acc = (T)0;
        for (I h = hs; h < he; ++h)
            for (I w = ws; w < we; ++w) acc += plane[h * W + w];
        const I d = cc_avg_divisor<I>(oh, ow, H, W, KH, KW, SH, SW, PH, PW, cip, div);
        y[i] = acc / (T)d;
    }
}

template <typename T>
__global__ void cc_avg_pool2d_fwd(const T *__restrict__ x, CC_AVG_PARAMS(cc_i64),
                                  cc_i64 count_include_pad, cc_i64 divisor_override,
                                  T *__restrict__ y)
{
    if (cc_window_fits32(N, C, H, W, KH, KW, SH, SW, PH, PW, 1, 1, OH, OW, 1) &&
        cc_fits32(divisor_override, (KH + PH) * (KW + PW)))
        cc_avg_pool2d_fwd_body<T, int>(x, CC_AVG_ARGS(int), (int)count_include_pad,
                                       (int)divisor_override, y);
    else
        cc_avg_pool2d_fwd_body<T, cc_i64>(x, CC_AVG_ARGS(cc_i64), count_include_pad,
                                          divisor_override, y);
}

template <typename T, typename I>
__device__ __forceinline__ void cc_avg_pool2d_bwd_body(const T *__restrict__ dy,
                                                       CC_AVG_PARAMS(I), I cip, I div,
                                                       T *__restrict__ dx)
{
    const I total = N * C * H * W;
    CC_GRID_LOOP(I, i, total) {
        const I w = i % W;
        const I h = (i / W) % H;
        const I nc = i / (H * W);
        const T *g = dy + nc * OH * OW;
        /* windows with oh*SH - PH <= h < oh*SH - PH + KH */
        const I oh0 = cc_max<I>(cc_floordiv<I>(h + PH - KH, SH) + 1, 0);
        const I oh1 = cc_min<I>(cc_floordiv<I>(h + PH, SH), OH - 1);
        const I ow0 = cc_max<I>(cc_floordiv<I>(w + PW - KW, SW) + 1, 0);
        const I ow1 = cc_min<I>(cc_floordiv<I>(w + PW, SW), OW - 1);
        T acc = (T)0;
        for (I oh = oh0; oh <= oh1; ++oh)
            for (I ow = ow0; ow <= ow1; ++ow) {
                const I d = cc_avg_divisor<I>(oh, ow, H, W, KH, KW, SH, SW, PH, PW, cip, div);
                acc += g[oh * OW + ow] / (T)d;
            }
        dx[i] = acc;
    }
}

template <typename T>
__global__ void cc_avg_pool2d_bwd(const T *__restrict__ dy, CC_AVG_PARAMS(cc_i64),
                                  cc_i64 count_include_pad, cc_i64 divisor_override,
                                  T *__restrict__ dx)
{
    if (cc_window_fits32(N, C, H, W, KH, KW, SH, SW, PH, PW, 1, 1, OH, OW, 1) &&
        cc_fits32(divisor_override, (KH + PH) * (KW + PW)))
        cc_avg_pool2d_bwd_body<T, int>(dy, CC_AVG_ARGS(int), (int)count_include_pad,
                                       (int)divisor_override, dx);
    else
        cc_avg_pool2d_bwd_body<T, cc_i64>(dy, CC_AVG_ARGS(cc_i64), count_include_pad,
                                          divisor_override, dx);
}

/* ------------------------------------------------------------- adaptive */
/* Geometry N, C, H, W, OH, OW. */
template <typename T, typename I>
__device__ __forceinline__ void cc_adaptive_avg_pool2d_fwd_body(const T *__restrict__ x,
                                                                I N, I C, I H, I W,
                                                                I OH, I OW,
                                                                T *__restrict__ y)
{
    const I total = N * C * OH * OW;
    CC_GRID_LOOP(I, i, total) {
        const I ow = i % OW;
        const I oh = (i / OW) % OH;
        const I nc = i / (OH * OW);
        const T *plane = x + nc * H * W;
        const I hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
        const I ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
        T acc = (T)0;
        for (I h = hs; h < he; ++h)
            for (I w = ws; w < we; ++w) acc += plane[h * W + w];
        y[i] = acc / (T)((he - hs) * (we - ws));
    }
}

/* Every product of the adaptive window rule, such as (i + 1) * H + OH - 1,
 * stays below 2^31 when (OH + 1) * (H + 1) is below 2^30 (likewise W). */
__device__ __forceinline__ bool cc_adaptive_fits32(cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                                   cc_i64 OH, cc_i64 OW)
{
    return cc_fits32(N * C * H * W, N * C * OH * OW) &&
           cc_fits32((OH + 1) * (H + 1), (OW + 1) * (W + 1));
}

template <typename T>
__global__ void cc_adaptive_avg_pool2d_fwd(const T *__restrict__ x,
                                           cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                           cc_i64 OH, cc_i64 OW, T *__restrict__ y)
{
    if (cc_adaptive_fits32(N, C, H, W, OH, OW))
        cc_adaptive_avg_pool2d_fwd_body<T, int>(x, (int)N, (int)C, (int)H, (int)W,
                                                (int)OH, (int)OW, y);
    else
        cc_adaptive_avg_pool2d_fwd_body<T, cc_i64>(x, N, C, H, W, OH, OW, y);
}

template <typename T, typename I>
__device__ __forceinline__ void cc_adaptive_avg_pool2d_bwd_body(const T *__restrict__ dy,
                                                                I N, I C, I H, I W,
                                                                I OH, I OW,
                                                                T *__restrict__ dx)
{
    const I total = N * C * H * W;
    CC_GRID_LOOP(I, i, total) {
        const I w = i % W;
        const I h = (i / W) % H;
        const I nc = i / (H * W);
        const T *g = dy + nc * OH * OW;
        /* windows whose [start, end) holds h: oh in
         * [floor(h*OH/H), ceil((h+1)*OH/H) - 1], checked exactly below */
        const I oh0 = (h * OH) / H, oh1 = ((h + 1) * OH + H - 1) / H;
        const I ow0 = (w * OW) / W, ow1 = ((w + 1) * OW + W - 1) / W;
        T acc = (T)0;
        for (I oh = oh0; oh < oh1 && oh < OH; ++oh) {
            const I hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
            if (h < hs || h >= he) continue;
            for (I ow = ow0; ow < ow1 && ow < OW; ++ow) {
                const I ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
                if (w < ws || w >= we) continue;
                acc += g[oh * OW + ow] / (T)((he - hs) * (we - ws));
            }
        }
        dx[i] = acc;
    }
}

template <typename T>
__global__ void cc_adaptive_avg_pool2d_bwd(const T *__restrict__ dy,
                                           cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                           cc_i64 OH, cc_i64 OW, T *__restrict__ dx)
{
    if (cc_adaptive_fits32(N, C, H, W, OH, OW))
        cc_adaptive_avg_pool2d_bwd_body<T, int>(dy, (int)N, (int)C, (int)H, (int)W,
                                                (int)OH, (int)OW, dx);
    else
        cc_adaptive_avg_pool2d_bwd_body<T, cc_i64>(dy, N, C, H, W, OH, OW, dx);
}
