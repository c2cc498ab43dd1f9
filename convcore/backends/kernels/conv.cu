/* im2col and col2im for NCHW, mirroring src_c/conv_impl.h (PyTorch's
 * unfold/fold layout): column matrix (N, C*KH*KW, OH*OW), row
 * (c*KH + kh)*KW + kw, column oh*OW + ow.
 *
 * Geometry arguments follow the C core's cc_conv_geom order:
 * N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW (all int64).
 */
#include "common.cuh"

#define CC_CONV_PARAMS(I) I N, I C, I H, I W, I KH, I KW, I SH, I SW, \
                          I PH, I PW, I DH, I DW, I OH, I OW
#define CC_CONV_ARGS(I) (I)N, (I)C, (I)H, (I)W, (I)KH, (I)KW, (I)SH, (I)SW, \
                        (I)PH, (I)PW, (I)DH, (I)DW, (I)OH, (I)OW

/* One thread per column entry: copy the input pixel under kernel tap
 * (kh, kw) of window (oh, ow), or 0 where the tap falls in the padding. */
template <typename T, typename I>
__device__ __forceinline__ void cc_im2col_body(const T *__restrict__ x, CC_CONV_PARAMS(I),
                                               T *__restrict__ cols)
{
    const I L = OH * OW, CKK = C * KH * KW;
    const I total = N * CKK * L;
    CC_GRID_LOOP(I, i, total) {
        const I l = i % L;
        const I r = (i / L) % CKK;
        const I n = i / (CKK * L);
        const I c = r / (KH * KW), kh = (r / KW) % KH, kw = r % KW;
        const I oh = l / OW, ow = l % OW;
        const I ih = oh * SH - PH + kh * DH;
        const I iw = ow * SW - PW + kw * DW;
        T v = (T)0;
        if (ih >= 0 && ih < H && iw >= 0 && iw < W)
            v = x[((n * C + c) * H + ih) * W + iw];
        cols[i] = v;
    }
}

template <typename T>
__global__ void cc_im2col(const T *__restrict__ x, CC_CONV_PARAMS(cc_i64),
                          T *__restrict__ cols)
{
    if (cc_window_fits32(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, KH * KW))
        cc_im2col_body<T, int>(x, CC_CONV_ARGS(int), cols);
    else
        cc_im2col_body<T, cc_i64>(x, CC_CONV_ARGS(cc_i64), cols);
}

/* col2im as a gather: one thread per image pixel sums every column entry
 * that im2col copied from it, in the fixed order (kh, kw) — the same order
 * as the C core — so the result is deterministic and needs no atomics.
 * For a pixel and a tap (kh, kw) at most one window (oh, ow) covers it. */
template <typename T, typename I>
__device__ __forceinline__ void cc_col2im_body(const T *__restrict__ cols, CC_CONV_PARAMS(I),
                                               T *__restrict__ x)
{
    const I L = OH * OW, CKK = C * KH * KW;
    const I total = N * C * H * W;
    CC_GRID_LOOP(I, i, total) {
        const I w = i % W;
        const I h = (i / W) % H;
        const I c = (i / (H * W)) % C;
        const I n = i / (C * H * W);
        const T *col = cols + (n * CKK + c * KH * KW) * L;
        T acc = (T)0;
        for (I kh = 0; kh < KH; ++kh) {
            const I th = h + PH - kh * DH;
            if (th < 0) break;                 /* th only decreases with kh */
            if (th % SH != 0) continue;
            const I oh = th / SH;
            if (oh >= OH) continue;
            for (I kw = 0; kw < KW; ++kw) {
                const I tw = w + PW - kw * DW;
                if (tw < 0) break;
                if (tw % SW != 0) continue;
                const I ow = tw / SW;
                if (ow >= OW) continue;
                acc += col[(kh * KW + kw) * L + oh * OW + ow];
            }
        }
        x[i] = acc;
    }
}

template <typename T>
__global__ void cc_col2im(const T *__restrict__ cols, CC_CONV_PARAMS(cc_i64),
                          T *__restrict__ x)
{
    if (cc_window_fits32(N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, KH * KW))
        cc_col2im_body<T, int>(cols, CC_CONV_ARGS(int), x);
    else
        cc_col2im_body<T, cc_i64>(cols, CC_CONV_ARGS(cc_i64), x);
}
