/* Convolutions (NHWC, one image), AVX2 + FMA: 4x4 stride-4 patch embedding and 3x3
 * depthwise convolution, optional bias and SiLU (silu_avx2 of ops_common.h).
 *
 * patch_embed is a small matrix product per output pixel: out[p, co] = sum over the
 * K = 16 Cin patch values k of patch[p, k] * wt[k, co].  The weights are transposed once
 * per call into scratch wt[K][Cp] (Cp = Cout rounded up to 16, zero-padded, bias alike),
 * then tiles of 4 pixels x 16 output channels (8 ymm accumulators) take, per k, two
 * weight loads and four broadcasts of the patch values.  A patch is four contiguous
 * runs of 4 Cin floats (one per image row), read in place.
 * dwconv3x3 vectorizes over channels: per output pixel the in-bounds taps (up to 9,
 * zero padding = skipped taps) are listed once, then 32 channels at a time accumulate
 * tap by tap (dy, dx order), then 8 at a time, then a scalar tail.
 * Both split the output rows over threads (OPS_FOR_RANGE, as in conv_ref.c).
 */
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include "ops_common.h"

#define INLINE static inline __attribute__((always_inline))
#define PE_NP 4  /* pixels per tile */
#define PE_CB 16 /* output channels per tile (2 vectors) */

INLINE __m256 act8(__m256 v, int act) { return act ? silu_avx2(v) : v; }
static inline float act1(float v, int act) { return act ? v / (1.0f + expf(-v)) : v; }

/* ---- patch_embed: x[H, W, Cin], w[Cout, 4, 4, Cin] -> out[H/4, W/4, Cout] -------------- */
/* np (1..PE_NP) pixels starting at xp (image row 4 oy, column 4 ox), channels co..co+16. */
INLINE void pe_tile(const float* xp, int64_t xrow, int L, const float* wt, int Cp,
                    const float* bp, float* y, int Cout, int co, const int np, int act) {
    __m256 acc[PE_NP][2];
    for (int p = 0; p < np; p++) acc[p][0] = _mm256_load_ps(bp + co), acc[p][1] = _mm256_load_ps(bp + co + 8);
    for (int ky = 0; ky < 4; ky++) {
        const float* xr = xp + ky * xrow;
        const float* wk = wt + (int64_t)ky * L * Cp + co;
        for (int j = 0; j < L; j++) {
            __m256 w0 = _mm256_load_ps(wk + (int64_t)j * Cp), w1 = _mm256_load_ps(wk + (int64_t)j * Cp + 8);
            for (int p = 0; p < np; p++) {
                __m256 xb = _mm256_broadcast_ss(xr + p * L + j);
                acc[p][0] = _mm256_fmadd_ps(xb, w0, acc[p][0]);
                acc[p][1] = _mm256_fmadd_ps(xb, w1, acc[p][1]);
            }
        }
    }
    for (int p = 0; p < np; p++) {
        float* yp = y + (int64_t)p * Cout + co;
        __m256 v0 = act8(acc[p][0], act), v1 = act8(acc[p][1], act);
        if (co + PE_CB <= Cout) {
            _mm256_storeu_ps(yp, v0), _mm256_storeu_ps(yp + 8, v1);
        } else { /* last, partial channel block */
            float tmp[PE_CB];
            _mm256_storeu_ps(tmp, v0), _mm256_storeu_ps(tmp + 8, v1);
            for (int k = 0; k < Cout - co; k++) yp[k] = tmp[k];
        }
    }
}

static void patch_rows(const float* x, const float* wt, const float* bp, float* out, int64_t r0,
                       int64_t r1, int W, int Cin, int Cout, int Cp, int act) {
    const int Wo = W / 4, L = 4 * Cin;
    const int64_t xrow = (int64_t)W * Cin;
    for (int64_t oy = r0; oy < r1; oy++) {
        int ox = 0;
        for (; ox + PE_NP <= Wo; ox += PE_NP) {
            const float* xp = x + 4 * oy * xrow + (int64_t)4 * ox * Cin;
            float* y = out + (oy * Wo + ox) * (int64_t)Cout;
            for (int co = 0; co < Cout; co += PE_CB) pe_tile(xp, xrow, L, wt, Cp, bp, y, Cout, co, PE_NP, act);
        }
        for (; ox < Wo; ox++) {
            const float* xp = x + 4 * oy * xrow + (int64_t)4 * ox * Cin;
            float* y = out + (oy * Wo + ox) * (int64_t)Cout;
            for (int co = 0; co < Cout; co += PE_CB) pe_tile(xp, xrow, L, wt, Cp, bp, y, Cout, co, 1, act);
        }
    }
}

int cw_patch_embed_avx2(const float* x, const float* w, const float* bias, float* out, int H,
                        int W, int Cin, int Cout, int act) {
    const int Ho = H / 4, K = 16 * Cin, Cp = (Cout + PE_CB - 1) / PE_CB * PE_CB;
    float* wt = cw_alloc(((size_t)K + 1) * Cp * sizeof(float)); /* wt[K][Cp], then bp[Cp] */
    if (!wt) return CW_ENOMEM;
    float* bp = wt + (size_t)K * Cp;
    for (int co = 0; co < Cout; co++) {
        for (int k = 0; k < K; k++) wt[(size_t)k * Cp + co] = w[(size_t)co * K + k];
        bp[co] = bias ? bias[co] : 0.0f;
    }
    int nt = ops_threads((int64_t)Ho * (W / 4) * Cout * K);
    OPS_FOR_RANGE(Ho, 1, patch_rows(x, wt, bp, out, lo, hi, W, Cin, Cout, Cp, act));
    cw_free(wt);
    return CW_OK;
}

/* ---- dwconv3x3: x[H, W, C], w[3, 3, C] -> out[Ho, Wo, C] -------------------------------- */
/* The in-bounds taps of output (oy, ox): input and weight pointers, dy / dx order. */
static int dw_taps(const float* x, const float* w, int64_t oy, int ox, int H, int W, int C, int s,
                   const float** xs, const float** ws) {
    int n = 0;
    for (int dy = 0; dy < 3; dy++) {
        int64_t iy = oy * s + dy - 1;
        if (iy < 0 || iy >= H) continue;
        for (int dx = 0; dx < 3; dx++) {
            int64_t ix = (int64_t)ox * s + dx - 1;
            if (ix < 0 || ix >= W) continue;
            xs[n] = x + (iy * W + ix) * C, ws[n] = w + (dy * 3 + dx) * C, n++;
        }
    }
    return n;
}

static void dw_pixel(const float* const* xs, const float* const* ws, int n, const float* bias,
                     float* y, int C, int act) {
    int c = 0;
    for (; c + 32 <= C; c += 32) {
        __m256 a[4];
        for (int v = 0; v < 4; v++) a[v] = bias ? _mm256_loadu_ps(bias + c + 8 * v) : _mm256_setzero_ps();
        for (int k = 0; k < n; k++)
            for (int v = 0; v < 4; v++)
                a[v] = _mm256_fmadd_ps(_mm256_loadu_ps(xs[k] + c + 8 * v), _mm256_loadu_ps(ws[k] + c + 8 * v), a[v]);
        for (int v = 0; v < 4; v++) _mm256_storeu_ps(y + c + 8 * v, act8(a[v], act));
    }
    for (; c + 8 <= C; c += 8) {
        __m256 a = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
        for (int k = 0; k < n; k++) a = _mm256_fmadd_ps(_mm256_loadu_ps(xs[k] + c), _mm256_loadu_ps(ws[k] + c), a);
        _mm256_storeu_ps(y + c, act8(a, act));
    }
    for (; c < C; c++) {
        float a = bias ? bias[c] : 0.0f;
        for (int k = 0; k < n; k++) a = fmaf(xs[k][c], ws[k][c], a);
        y[c] = act1(a, act);
    }
}

static void dw_rows(const float* x, const float* w, const float* bias, float* out, int64_t r0,
                    int64_t r1, int H, int W, int C, int s, int act) {
    const int Wo = (W - 1) / s + 1;
    const float *xs[9], *ws[9];
    for (int64_t oy = r0; oy < r1; oy++)
        for (int ox = 0; ox < Wo; ox++) {
            int n = dw_taps(x, w, oy, ox, H, W, C, s, xs, ws);
            dw_pixel(xs, ws, n, bias, out + (oy * Wo + ox) * (int64_t)C, C, act);
        }
}

int cw_dwconv3x3_avx2(const float* x, const float* w, const float* bias, float* out, int H,
                      int W, int C, int stride, int act) {
    const int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    int nt = ops_threads((int64_t)Ho * Wo * C * 9);
    OPS_FOR_RANGE(Ho, 1, dw_rows(x, w, bias, out, lo, hi, H, W, C, stride, act));
    return CW_OK;
}
