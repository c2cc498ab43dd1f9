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

/* Geometry order: N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW. */
template <typename T>
__global__ void cc_max_pool2d_fwd(const T *__restrict__ x,
                                  cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                  cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                                  cc_i64 PH, cc_i64 PW, cc_i64 DH, cc_i64 DW,
                                  cc_i64 OH, cc_i64 OW,
                                  T *__restrict__ y, cc_i64 *__restrict__ idx)
{
    const cc_i64 total = N * C * OH * OW;
    CC_GRID_LOOP(i, total) {
        const cc_i64 ow = i % OW;
        const cc_i64 oh = (i / OW) % OH;
        const cc_i64 nc = i / (OH * OW);
        const T *plane = x + nc * H * W;
        cc_i64 hs = oh * SH - PH, ws = ow * SW - PW;
        const cc_i64 he = cc_min64(hs + (KH - 1) * DH + 1, H);
        const cc_i64 we = cc_min64(ws + (KW - 1) * DW + 1, W);
        while (hs < 0) hs += DH;
        while (ws < 0) ws += DW;
        /* first in-image tap (clamped for a window that has none, which
         * the functional layer's checks rule out) */
        cc_i64 best = cc_min64(hs, H - 1) * W + cc_min64(ws, W - 1);
        T m = cc_neg_inf((T)0);
        for (cc_i64 h = hs; h < he; h += DH) {
            for (cc_i64 w = ws; w < we; w += DW) {
                const T v = plane[h * W + w];
                if (v > m || cc_isnan(v)) {
                    m = v;
                    best = h * W + w;
                }
            }
        }
        y[i] = m;
        idx[i] = best;
    }
}

/* Gather with the pooling geometry: for input pixel (h, w) and tap (kh, kw)
 * at most one window (oh, ow) covers it; its gradient is added when that
 * window's argmax is this pixel.  Windows are visited in (kh, kw) order. */
template <typename T>
__global__ void cc_max_pool2d_bwd(const T *__restrict__ dy,
                                  const cc_i64 *__restrict__ idx,
                                  cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                  cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                                  cc_i64 PH, cc_i64 PW, cc_i64 DH, cc_i64 DW,
                                  cc_i64 OH, cc_i64 OW, T *__restrict__ dx)
{
    const cc_i64 total = N * C * H * W;
    CC_GRID_LOOP(i, total) {
        const cc_i64 w = i % W;
        const cc_i64 h = (i / W) % H;
        const cc_i64 nc = i / (H * W);
        const cc_i64 me = h * W + w;
        const T *g = dy + nc * OH * OW;
        const cc_i64 *ix = idx + nc * OH * OW;
        T acc = (T)0;
        for (cc_i64 kh = 0; kh < KH; ++kh) {
            const cc_i64 th = h + PH - kh * DH;
            if (th < 0) break;
            if (th % SH != 0) continue;
            const cc_i64 oh = th / SH;
            if (oh >= OH) continue;
            for (cc_i64 kw = 0; kw < KW; ++kw) {
                const cc_i64 tw = w + PW - kw * DW;
                if (tw < 0) break;
                if (tw % SW != 0) continue;
                const cc_i64 ow = tw / SW;
                if (ow >= OW) continue;
                const cc_i64 o = oh * OW + ow;
                if (ix[o] == me) acc += g[o];
            }
        }
        dx[i] = acc;
    }
}

/* Gather without the pooling geometry (only the indices are known):
 * `keys` holds nc*H*W + idx of every output, sorted stably, and `order`
 * the output positions in that order.  Each input pixel binary-searches its
 * run of equal keys and adds those gradients in output order. */
template <typename T>
__global__ void cc_max_pool2d_bwd_sorted(const T *__restrict__ dy,
                                         const cc_i64 *__restrict__ keys,
                                         const cc_i64 *__restrict__ order,
                                         cc_i64 n_out, cc_i64 n_in,
                                         T *__restrict__ dx)
{
    CC_GRID_LOOP(i, n_in) {
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

/* Divisor of average-pool window (oh, ow); 0 never occurs for valid
 * geometry (every window holds at least one padded-image tap). */
__device__ __forceinline__ cc_i64 cc_avg_divisor(cc_i64 oh, cc_i64 ow,
                                                 cc_i64 H, cc_i64 W,
                                                 cc_i64 KH, cc_i64 KW,
                                                 cc_i64 SH, cc_i64 SW,
                                                 cc_i64 PH, cc_i64 PW,
                                                 cc_i64 count_include_pad,
                                                 cc_i64 divisor_override)
{
    if (divisor_override != 0) return divisor_override;
    const cc_i64 hs = oh * SH - PH, ws = ow * SW - PW;
    const cc_i64 he = cc_min64(hs + KH, H + PH), we = cc_min64(ws + KW, W + PW);
    if (count_include_pad) return (he - hs) * (we - ws);
    return (cc_min64(he, H) - cc_max64(hs, 0)) * (cc_min64(we, W) - cc_max64(ws, 0));
}

/* Geometry order: N, C, H, W, KH, KW, SH, SW, PH, PW, OH, OW, then
 * count_include_pad (0/1) and divisor_override (0 = none). */
template <typename T>
__global__ void cc_avg_pool2d_fwd(const T *__restrict__ x,
                                  cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                  cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                                  cc_i64 PH, cc_i64 PW, cc_i64 OH, cc_i64 OW,
                                  cc_i64 count_include_pad, cc_i64 divisor_override,
                                  T *__restrict__ y)
{
    const cc_i64 total = N * C * OH * OW;
    CC_GRID_LOOP(i, total) {
        const cc_i64 ow = i % OW;
        const cc_i64 oh = (i / OW) % OH;
        const cc_i64 nc = i / (OH * OW);
        const T *plane = x + nc * H * W;
        const cc_i64 hs = cc_max64(oh * SH - PH, 0), ws = cc_max64(ow * SW - PW, 0);
        const cc_i64 he = cc_min64(oh * SH - PH + KH, H);
        const cc_i64 we = cc_min64(ow * SW - PW + KW, W);
        T acc = (T)0;
        for (cc_i64 h = hs; h < he; ++h)
            for (cc_i64 w = ws; w < we; ++w) acc += plane[h * W + w];
        const cc_i64 d = cc_avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW,
                                        count_include_pad, divisor_override);
        y[i] = acc / (T)d;
    }
}

template <typename T>
__global__ void cc_avg_pool2d_bwd(const T *__restrict__ dy,
                                  cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                  cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                                  cc_i64 PH, cc_i64 PW, cc_i64 OH, cc_i64 OW,
                                  cc_i64 count_include_pad, cc_i64 divisor_override,
                                  T *__restrict__ dx)
{
    const cc_i64 total = N * C * H * W;
    CC_GRID_LOOP(i, total) {
        const cc_i64 w = i % W;
        const cc_i64 h = (i / W) % H;
        const cc_i64 nc = i / (H * W);
        const T *g = dy + nc * OH * OW;
        /* windows with oh*SH - PH <= h < oh*SH - PH + KH */
        const cc_i64 oh0 = cc_max64(cc_floordiv(h + PH - KH, SH) + 1, 0);
        const cc_i64 oh1 = cc_min64(cc_floordiv(h + PH, SH), OH - 1);
        const cc_i64 ow0 = cc_max64(cc_floordiv(w + PW - KW, SW) + 1, 0);
        const cc_i64 ow1 = cc_min64(cc_floordiv(w + PW, SW), OW - 1);
        T acc = (T)0;
        for (cc_i64 oh = oh0; oh <= oh1; ++oh)
            for (cc_i64 ow = ow0; ow <= ow1; ++ow) {
                const cc_i64 d = cc_avg_divisor(oh, ow, H, W, KH, KW, SH, SW, PH, PW,
                                                count_include_pad, divisor_override);
                acc += g[oh * OW + ow] / (T)d;
            }
        dx[i] = acc;
    }
}

/* Adaptive average pooling: geometry N, C, H, W, OH, OW. */
template <typename T>
__global__ void cc_adaptive_avg_pool2d_fwd(const T *__restrict__ x,
                                           cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                           cc_i64 OH, cc_i64 OW, T *__restrict__ y)
{
    const cc_i64 total = N * C * OH * OW;
    CC_GRID_LOOP(i, total) {
        const cc_i64 ow = i % OW;
        const cc_i64 oh = (i / OW) % OH;
        const cc_i64 nc = i / (OH * OW);
        const T *plane = x + nc * H * W;
        const cc_i64 hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
        const cc_i64 ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
        T acc = (T)0;
        for (cc_i64 h = hs; h < he; ++h)
            for (cc_i64 w = ws; w < we; ++w) acc += plane[h * W + w];
        y[i] = acc / (T)((he - hs) * (we - ws));
    }
}

template <typename T>
__global__ void cc_adaptive_avg_pool2d_bwd(const T *__restrict__ dy,
                                           cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                                           cc_i64 OH, cc_i64 OW, T *__restrict__ dx)
{
    const cc_i64 total = N * C * H * W;
    CC_GRID_LOOP(i, total) {
        const cc_i64 w = i % W;
        const cc_i64 h = (i / W) % H;
        const cc_i64 nc = i / (H * W);
        const T *g = dy + nc * OH * OW;
        /* windows whose [start, end) holds h: oh in
         * [floor(h*OH/H), ceil((h+1)*OH/H) - 1], checked exactly below */
        const cc_i64 oh0 = (h * OH) / H, oh1 = ((h + 1) * OH + H - 1) / H;
        const cc_i64 ow0 = (w * OW) / W, ow1 = ((w + 1) * OW + W - 1) / W;
        T acc = (T)0;
        for (cc_i64 oh = oh0; oh < oh1 && oh < OH; ++oh) {
            const cc_i64 hs = (oh * H) / OH, he = ((oh + 1) * H + OH - 1) / OH;
            if (h < hs || h >= he) continue;
            for (cc_i64 ow = ow0; ow < ow1 && ow < OW; ++ow) {
                const cc_i64 ws = (ow * W) / OW, we = ((ow + 1) * W + OW - 1) / OW;
                if (w < ws || w >= we) continue;
                acc += g[oh * OW + ow] / (T)((he - hs) * (we - ws));
            }
        }
        dx[i] = acc;
    }
}
