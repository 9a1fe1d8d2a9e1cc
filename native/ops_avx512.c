/* Element-wise and row ops, AVX-512F: rmsnorm, swiglu, silu, rope, softmax, add.
 *
 * The AVX2 file's algorithms on 16-float vectors; the tail of each loop (fewer than 16
 * elements) is one masked vector operation instead of a scalar loop.  exp and SiLU come
 * from ops_common.h (exp_avx512: 2^n by vscalefps).
 * add forwards to the AVX2 version: it is bound by memory bandwidth, and 512-bit
 * vectors measured no faster.  Threads: the partition of ops_ref.c (OPS_FOR_RANGE).
 */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include <immintrin.h>
#include "ops_common.h"

static inline __mmask16 tail_mask(int64_t left) { return (__mmask16)((1u << left) - 1u); }

/* ---- rmsnorm: x[M, N] -> out[M, N] -------------------------------------------------- */
static float sumsq(const float* x, int N) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int j = 0;
    for (; j + 64 <= N; j += 64) {
        __m512 a = _mm512_loadu_ps(x + j), b = _mm512_loadu_ps(x + j + 16);
        __m512 c = _mm512_loadu_ps(x + j + 32), d = _mm512_loadu_ps(x + j + 48);
        s0 = _mm512_fmadd_ps(a, a, s0), s1 = _mm512_fmadd_ps(b, b, s1);
        s2 = _mm512_fmadd_ps(c, c, s2), s3 = _mm512_fmadd_ps(d, d, s3);
    }
    for (; j + 16 <= N; j += 16) {
        __m512 a = _mm512_loadu_ps(x + j);
        s0 = _mm512_fmadd_ps(a, a, s0);
    }
    if (j < N) {
        __m512 a = _mm512_maskz_loadu_ps(tail_mask(N - j), x + j);
        s1 = _mm512_fmadd_ps(a, a, s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static void rmsnorm_rows(const float* x, const float* w, float* out, int64_t m0, int64_t m1,
                         int N, float eps) {
    for (int64_t m = m0; m < m1; m++) {
        const float* xr = x + m * N;
        float* yr = out + m * N;
        __m512 vs = _mm512_set1_ps(1.0f / sqrtf(sumsq(xr, N) / N + eps));
        int j = 0;
        for (; j + 16 <= N; j += 16) {
            __m512 v = _mm512_mul_ps(_mm512_loadu_ps(xr + j), vs);
            _mm512_storeu_ps(yr + j, _mm512_mul_ps(v, _mm512_loadu_ps(w + j)));
        }
        if (j < N) {
            __mmask16 k = tail_mask(N - j);
            __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, xr + j), vs);
            _mm512_mask_storeu_ps(yr + j, k, _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + j)));
        }
    }
}

int cw_rmsnorm_avx512(const float* x, const float* w, float* out, int M, int N, float eps) {
    int nt = ops_threads((int64_t)M * N);
    OPS_FOR_RANGE(M, 1, rmsnorm_rows(x, w, out, lo, hi, N, eps));
    return CW_OK;
}

/* ---- swiglu / silu: flat [n] ---------------------------------------------------------- */
static void swiglu_range(const float* a, const float* b, float* out, int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + 32 <= hi; i += 32) {
        __m512 y0 = _mm512_mul_ps(silu_avx512(_mm512_loadu_ps(a + i)), _mm512_loadu_ps(b + i));
        __m512 y1 = _mm512_mul_ps(silu_avx512(_mm512_loadu_ps(a + i + 16)), _mm512_loadu_ps(b + i + 16));
        _mm512_storeu_ps(out + i, y0);
        _mm512_storeu_ps(out + i + 16, y1);
    }
    for (; i < hi; i += 16) {
        __mmask16 k = hi - i >= 16 ? 0xFFFF : tail_mask(hi - i);
        __m512 y = _mm512_mul_ps(silu_avx512(_mm512_maskz_loadu_ps(k, a + i)), _mm512_maskz_loadu_ps(k, b + i));
        _mm512_mask_storeu_ps(out + i, k, y);
    }
}

int cw_swiglu_avx512(const float* a, const float* b, float* out, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, swiglu_range(a, b, out, lo, hi));
    return CW_OK;
}

static void silu_range(float* x, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i += 16) {
        __mmask16 k = hi - i >= 16 ? 0xFFFF : tail_mask(hi - i);
        _mm512_mask_storeu_ps(x + i, k, silu_avx512(_mm512_maskz_loadu_ps(k, x + i)));
    }
}

int cw_silu_avx512(float* x, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, silu_range(x, lo, hi));
    return CW_OK;
}

/* ---- rope: x[t, h, 0:D] at x + t*ts + h*hs ---------------------------------------------- */
/* neox = 0: out = x * C + swap_pairs(x) * S (masked tail: D is even, so a partial vector
   still holds whole pairs); neox = 1: the halves x[0:P], x[P:D] rotate against each other. */
static void rope_head(float* x, const float* C, const float* S, int D, int neox) {
    const int P = D / 2;
    if (!neox) {
        for (int j = 0; j < D; j += 16) {
            __mmask16 k = D - j >= 16 ? 0xFFFF : tail_mask(D - j);
            __m512 v = _mm512_maskz_loadu_ps(k, x + j);
            __m512 sw = _mm512_permute_ps(v, 0xB1);
            __m512 y = _mm512_fmadd_ps(sw, _mm512_maskz_loadu_ps(k, S + j),
                                       _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, C + j)));
            _mm512_mask_storeu_ps(x + j, k, y);
        }
        return;
    }
    for (int i = 0; i < P; i += 16) {
        __mmask16 k = P - i >= 16 ? 0xFFFF : tail_mask(P - i);
        __m512 a = _mm512_maskz_loadu_ps(k, x + i), b = _mm512_maskz_loadu_ps(k, x + P + i);
        __m512 ya = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(k, S + i), _mm512_mul_ps(a, _mm512_maskz_loadu_ps(k, C + i)));
        __m512 yb = _mm512_fmadd_ps(a, _mm512_maskz_loadu_ps(k, S + P + i),
                                    _mm512_mul_ps(b, _mm512_maskz_loadu_ps(k, C + P + i)));
        _mm512_mask_storeu_ps(x + i, k, ya);
        _mm512_mask_storeu_ps(x + P + i, k, yb);
    }
}

static void rope_tokens(float* x, int64_t t0, int64_t t1, int H, int D, int64_t ts, int64_t hs,
                        int pos0, int neox, const double* inv, void* mem) {
    rope_tab tb;
    rope_tab_init(&tb, mem, inv, D, neox, t1 - t0 > 1);
    for (int64_t t = t0; t < t1; t++) {
        rope_tab_at(&tb, pos0 + t, (t - t0) % ROPE_RESEED == 0);
        for (int h = 0; h < H; h++) rope_head(x + t * ts + h * hs, tb.C, tb.S, D, neox);
    }
}

int cw_rope_avx512(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta,
                   int neox) {
    int nt = ops_threads((int64_t)T * H * D);
    size_t per = rope_tab_bytes(D), inv_bytes = ((size_t)D / 2 * sizeof(double) + 63) & ~(size_t)63;
    char* mem = cw_alloc(inv_bytes + per * (size_t)nt);
    if (!mem) return CW_ENOMEM;
    double* inv = (double*)mem;
    rope_inv_freq(inv, D, theta);
    OPS_FOR_RANGE(T, 1, rope_tokens(x, lo, hi, H, D, ts, hs, pos0, neox, inv,
                                    mem + inv_bytes + per * (size_t)omp_get_thread_num()));
    cw_free(mem);
    return CW_OK;
}

/* ---- softmax: rows of x[M, N] in place ------------------------------------------------- */
static void softmax_row(float* r, int N) {
    __m512 m0 = _mm512_set1_ps(-INFINITY), m1 = m0;
    int j = 0;
    for (; j + 32 <= N; j += 32)
        m0 = _mm512_max_ps(m0, _mm512_loadu_ps(r + j)), m1 = _mm512_max_ps(m1, _mm512_loadu_ps(r + j + 16));
    for (; j < N; j += 16) {
        __mmask16 k = N - j >= 16 ? 0xFFFF : tail_mask(N - j);
        m0 = _mm512_mask_max_ps(m0, k, m0, _mm512_maskz_loadu_ps(k, r + j));
    }
    __m512 vm = _mm512_set1_ps(_mm512_reduce_max_ps(_mm512_max_ps(m0, m1)));

    __m512 s0 = _mm512_setzero_ps(), s1 = s0;
    j = 0;
    for (; j + 32 <= N; j += 32) {
        __m512 e0 = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(r + j), vm));
        __m512 e1 = exp_avx512(_mm512_sub_ps(_mm512_loadu_ps(r + j + 16), vm));
        _mm512_storeu_ps(r + j, e0), _mm512_storeu_ps(r + j + 16, e1);
        s0 = _mm512_add_ps(s0, e0), s1 = _mm512_add_ps(s1, e1);
    }
    for (; j < N; j += 16) {
        __mmask16 k = N - j >= 16 ? 0xFFFF : tail_mask(N - j);
        __m512 e = exp_avx512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, r + j), vm));
        _mm512_mask_storeu_ps(r + j, k, e);
        s0 = _mm512_mask_add_ps(s0, k, s0, e);
    }
    __m512 vi = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)));
    for (j = 0; j < N; j += 16) {
        __mmask16 k = N - j >= 16 ? 0xFFFF : tail_mask(N - j);
        _mm512_mask_storeu_ps(r + j, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, r + j), vi));
    }
}

int cw_softmax_avx512(float* x, int M, int N) {
    int nt = ops_threads((int64_t)M * N);
    OPS_FOR_RANGE(M, 1, for (int64_t m = lo; m < hi; m++) softmax_row(x + m * N, N));
    return CW_OK;
}

/* ---- add: memory-bound, forwards to AVX2 (see the header comment) ---------------------- */
int cw_add_avx512(const float* a, const float* b, float* out, int64_t n) {
    return cw_add_avx2(a, b, out, n);
}
