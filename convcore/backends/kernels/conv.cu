/* im2col and col2im for NCHW, mirroring src_c/conv_impl.h (PyTorch's
 * unfold/fold layout): column matrix (N, C*KH*KW, OH*OW), row
 * (c*KH + kh)*KW + kw, column oh*OW + ow.
 *
 * Geometry arguments follow the C core's cc_conv_geom order:
 * N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW (all int64).
 */
#include "common.cuh"

/* One thread per column entry: copy the input pixel under kernel tap
 * (kh, kw) of window (oh, ow), or 0 where the tap falls in the padding. */
template <typename T>
__global__ void cc_im2col(const T *__restrict__ x,
                          cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                          cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                          cc_i64 PH, cc_i64 PW, cc_i64 DH, cc_i64 DW,
                          cc_i64 OH, cc_i64 OW, T *__restrict__ cols)
{
    const cc_i64 L = OH * OW, CKK = C * KH * KW;
    const cc_i64 total = N * CKK * L;
    CC_GRID_LOOP(i, total) {
        const cc_i64 l = i % L;
        const cc_i64 r = (i / L) % CKK;
        const cc_i64 n = i / (CKK * L);
        const cc_i64 c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        const cc_i64 oh = l / OW, ow = l % OW;
        const cc_i64 ih = oh * SH - PH + kh * DH;
        const cc_i64 iw = ow * SW - PW + kw * DW;
        T v = (T)0;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
            v = x[((n * C + c) * H + ih) * W + iw];
        cols[i] = v;
    }
}

/* col2im as a gather: one thread per image pixel sums every column entry
 * that im2col copied from it, in the fixed order (kh, kw) — the same order
 * as the C core — so the result is deterministic and needs no atomics.
 * For a pixel and a tap (kh, kw) at most one window (oh, ow) covers it. */
template <typename T>
__global__ void cc_col2im(const T *__restrict__ cols,
                          cc_i64 N, cc_i64 C, cc_i64 H, cc_i64 W,
                          cc_i64 KH, cc_i64 KW, cc_i64 SH, cc_i64 SW,
                          cc_i64 PH, cc_i64 PW, cc_i64 DH, cc_i64 DW,
                          cc_i64 OH, cc_i64 OW, T *__restrict__ x)
{
    const cc_i64 L = OH * OW, CKK = C * KH * KW;
    const cc_i64 total = N * C * H * W;
    CC_GRID_LOOP(i, total) {
        const cc_i64 w = i % W;
        const cc_i64 h = (i / W) % H;
        const cc_i64 c = (i / (H * W)) % C;
        const cc_i64 n = i / (C * H * W);
        const T *col = cols + (n * CKK + c * KH * KW) * L;
        T acc = (T)0;
        for (cc_i64 kh = 0; kh < KH; ++kh) {
            const cc_i64 th = h + PH - kh * DH;
            if (th < 0) break;                 /* th only decreases with kh */
            if (th % SH != 0) continue;
            const cc_i64 oh = th / SH;
            if (oh >= OH) continue;
            for (cc_i64 kw = 0; kw < KW; ++kw) {
                const cc_i64 tw = w + PW - kw * DW;
                if (tw < 0) break;
                if (tw % SW != 0) continue;
                const cc_i64 ow = tw / SW;
                if (ow >= OW) continue;
                acc += col[(kh * KW + kw) * L + oh * OW + ow];
            }
        }
        x[i] = acc;
    }
}
