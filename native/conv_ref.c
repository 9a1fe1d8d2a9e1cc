/* Convolutions (NHWC, one image), plain C references: 4x4 stride-4 patch embedding and
 * 3x3 depthwise convolution with zero padding 1, optional bias and SiLU.
 *
 * Direct loops in float, one output at a time, no auto-vectorization (the pragma below);
 * taps accumulate in the order the SIMD files use (bias first, then ky / kx / channel for
 * the patch embedding, dy / dx for the depthwise taps).  Threads split the output rows
 * exactly as the SIMD files do (OPS_FOR_RANGE in ops_common.h).
 */
#pragma GCC optimize("no-tree-vectorize")
#include "ops_common.h"

static inline float act1(float v, int act) { return act ? v / (1.0f + expf(-v)) : v; }

/* ---- patch_embed: x[H, W, Cin], w[Cout, 4, 4, Cin] -> out[H/4, W/4, Cout] -------------- */
static void patch_rows(const float* x, const float* w, const float* bias, float* out, int64_t r0,
                       int64_t r1, int W, int Cin, int Cout, int act) {
    const int Wo = W / 4, L = 4 * Cin; /* L: one patch row, 4 pixels x Cin, contiguous */
    for (int64_t oy = r0; oy < r1; oy++)
        for (int ox = 0; ox < Wo; ox++) {
            const float* xp = x + ((4 * oy) * W + 4 * ox) * (int64_t)Cin;
            float* y = out + (oy * Wo + ox) * (int64_t)Cout;
            for (int co = 0; co < Cout; co++) {
                const float* wc = w + (int64_t)co * 4 * L;
                float acc = bias ? bias[co] : 0.0f;
                for (int ky = 0; ky < 4; ky++)
                    for (int j = 0; j < L; j++) acc += xp[(int64_t)ky * W * Cin + j] * wc[ky * L + j];
                y[co] = act1(acc, act);
            }
        }
}

int cw_patch_embed_scalar(const float* x, const float* w, const float* bias, float* out, int H,
                          int W, int Cin, int Cout, int act) {
    const int Ho = H / 4;
    int nt = ops_threads((int64_t)Ho * (W / 4) * Cout * 16 * Cin);
    OPS_FOR_RANGE(Ho, 1, patch_rows(x, w, bias, out, lo, hi, W, Cin, Cout, act));
    return CW_OK;
}

/* ---- dwconv3x3: x[H, W, C], w[3, 3, C] -> out[Ho, Wo, C] -------------------------------- */
static void dw_rows(const float* x, const float* w, const float* bias, float* out, int64_t r0,
                    int64_t r1, int H, int W, int C, int s, int act) {
    const int Wo = (W - 1) / s + 1;
    for (int64_t oy = r0; oy < r1; oy++)
        for (int ox = 0; ox < Wo; ox++) {
            float* y = out + (oy * Wo + ox) * (int64_t)C;
            for (int c = 0; c < C; c++) {
                float acc = bias ? bias[c] : 0.0f;
                for (int dy = 0; dy < 3; dy++) {
                    int64_t iy = oy * s + dy - 1;
                    if (iy < 0 || iy >= H) continue;
                    for (int dx = 0; dx < 3; dx++) {
                        int64_t ix = (int64_t)ox * s + dx - 1;
                        if (ix < 0 || ix >= W) continue;
                        acc += x[(iy * W + ix) * C + c] * w[(dy * 3 + dx) * C + c];
                    }
                }
                y[c] = act1(acc, act);
            }
        }
}

int cw_dwconv3x3_scalar(const float* x, const float* w, const float* bias, float* out, int H,
                        int W, int C, int stride, int act) {
    const int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    int nt = ops_threads((int64_t)Ho * Wo * C * 9);
    OPS_FOR_RANGE(Ho, 1, dw_rows(x, w, bias, out, lo, hi, H, W, C, stride, act));
    return CW_OK;
}
