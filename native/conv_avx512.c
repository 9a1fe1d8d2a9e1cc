/* Convolutions (NHWC, one image), AVX-512F: 4x4 stride-4 patch embedding and 3x3
 * depthwise convolution, optional bias and SiLU (silu_avx512 of ops_common.h).
 *
 * The algorithms of conv_avx2.c on 16-float vectors: patch_embed tiles 4 pixels x 32
 * output channels (8 zmm accumulators) over weights transposed once per call into
 * scratch wt[K][Cp] (Cp = Cout rounded up to 32, zero-padded), and stores the last,
 * partial channel block with a mask; dwconv3x3 takes 64 channels at a time over the
 * in-bounds taps, then 16 at a time, the remainder as one masked vector.
 * Both split the output rows over threads (OPS_FOR_RANGE, as in conv_ref.c).
 */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include <immintrin.h>
#include "ops_common.h"

#define INLINE static inline __attribute__((always_inline))
#define PE_NP 4  /* pixels per tile */
#define PE_CB 32 /* output channels per tile (2 vectors) */

INLINE __m512 act16(__m512 v, int act) { return act ? silu_avx512(v) : v; }
static inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1u); }

/* ---- patch_embed: x[H, W, Cin], w[Cout, 4, 4, Cin] -> out[H/4, W/4, Cout] -------------- */
/* np (1..PE_NP) pixels starting at xp (image row 4 oy, column 4 ox), channels co..co+32. */
INLINE void pe_tile(const float* xp, int64_t xrow, int L, const float* wt, int Cp,
                    const float* bp, float* y, int Cout, int co, const int np, int act) {
    __m512 acc[PE_NP][2];
    for (int p = 0; p < np; p++) acc[p][0] = _mm512_load_ps(bp + co), acc[p][1] = _mm512_load_ps(bp + co + 16);
    for (int ky = 0; ky < 4; ky++) {
        const float* xr = xp + ky * xrow;
        const float* wk = wt + (int64_t)ky * L * Cp + co;
        for (int j = 0; j < L; j++) {
            __m512 w0 = _mm512_load_ps(wk + (int64_t)j * Cp), w1 = _mm512_load_ps(wk + (int64_t)j * Cp + 16);
            for (int p = 0; p < np; p++) {
                __m512 xb = _mm512_set1_ps(xr[p * L + j]);
                acc[p][0] = _mm512_fmadd_ps(xb, w0, acc[p][0]);
                acc[p][1] = _mm512_fmadd_ps(xb, w1, acc[p][1]);
            }
        }
    }
    __mmask16 k0 = tail_mask(Cout - co), k1 = tail_mask(Cout - co - 16 > 0 ? Cout - co - 16 : 0);
    for (int p = 0; p < np; p++) {
        float* yp = y + (int64_t)p * Cout + co;
        _mm512_mask_storeu_ps(yp, k0, act16(acc[p][0], act));
        _mm512_mask_storeu_ps(yp + 16, k1, act16(acc[p][1], act));
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

int cw_patch_embed_avx512(const float* x, const float* w, const float* bias, float* out, int H,
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
    for (; c + 64 <= C; c += 64) {
        __m512 a[4];
        for (int v = 0; v < 4; v++) a[v] = bias ? _mm512_loadu_ps(bias + c + 16 * v) : _mm512_setzero_ps();
        for (int k = 0; k < n; k++)
            for (int v = 0; v < 4; v++)
                a[v] = _mm512_fmadd_ps(_mm512_loadu_ps(xs[k] + c + 16 * v), _mm512_loadu_ps(ws[k] + c + 16 * v), a[v]);
        for (int v = 0; v < 4; v++) _mm512_storeu_ps(y + c + 16 * v, act16(a[v], act));
    }
    for (; c < C; c += 16) {
        __mmask16 m = tail_mask(C - c);
        __m512 a = bias ? _mm512_maskz_loadu_ps(m, bias + c) : _mm512_setzero_ps();
        for (int k = 0; k < n; k++)
            a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xs[k] + c), _mm512_maskz_loadu_ps(m, ws[k] + c), a);
        _mm512_mask_storeu_ps(y + c, m, act16(a, act));
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

int cw_dwconv3x3_avx512(const float* x, const float* w, const float* bias, float* out, int H,
                        int W, int C, int stride, int act) {
    const int Ho = (H - 1) / stride + 1, Wo = (W - 1) / stride + 1;
    int nt = ops_threads((int64_t)Ho * Wo * C * 9);
    OPS_FOR_RANGE(Ho, 1, dw_rows(x, w, bias, out, lo, hi, H, W, C, stride, act));
    return CW_OK;
}
