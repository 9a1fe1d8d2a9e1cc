/* Element-wise and row ops, AVX2 + FMA: rmsnorm, swiglu, silu, rope, softmax, add.
 *
 * 8 floats per vector, main loops unrolled so several independent accumulators hide the
 * add latency (rmsnorm sums of squares, softmax sums); exp and SiLU come from
 * ops_common.h (2^n * e^r, degree-5 polynomial).  Every loop ends in a scalar tail.
 * Threads: the partition of ops_ref.c (OPS_FOR_RANGE).
 */
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include "ops_common.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float hmax8(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float silu1(float a) { return a / (1.0f + expf(-a)); }

/* ---- rmsnorm: x[M, N] -> out[M, N] -------------------------------------------------- */
static float sumsq(const float* x, int N) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    int j = 0;
    for (; j + 32 <= N; j += 32) {
        __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + 8);
        __m256 c = _mm256_loadu_ps(x + j + 16), d = _mm256_loadu_ps(x + j + 24);
        s0 = _mm256_fmadd_ps(a, a, s0), s1 = _mm256_fmadd_ps(b, b, s1);
        s2 = _mm256_fmadd_ps(c, c, s2), s3 = _mm256_fmadd_ps(d, d, s3);
    }
    for (; j + 8 <= N; j += 8) {
        __m256 a = _mm256_loadu_ps(x + j);
        s0 = _mm256_fmadd_ps(a, a, s0);
    }
    float ss = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; j < N; j++) ss += x[j] * x[j];
    return ss;
}

static void rmsnorm_rows(const float* x, const float* w, float* out, int64_t m0, int64_t m1,
                         int N, float eps) {
    for (int64_t m = m0; m < m1; m++) {
        const float* xr = x + m * N;
        float* yr = out + m * N;
        float scale = 1.0f / sqrtf(sumsq(xr, N) / N + eps);
        __m256 vs = _mm256_set1_ps(scale);
        int j = 0;
        for (; j + 8 <= N; j += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xr + j), vs);
            _mm256_storeu_ps(yr + j, _mm256_mul_ps(v, _mm256_loadu_ps(w + j)));
        }
        for (; j < N; j++) yr[j] = xr[j] * scale * w[j];
    }
}

int cw_rmsnorm_avx2(const float* x, const float* w, float* out, int M, int N, float eps) {
    int nt = ops_threads((int64_t)M * N);
    OPS_FOR_RANGE(M, 1, rmsnorm_rows(x, w, out, lo, hi, N, eps));
    return CW_OK;
}

/* ---- swiglu / silu: flat [n] ---------------------------------------------------------- */
static void swiglu_range(const float* a, const float* b, float* out, int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + 16 <= hi; i += 16) {
        __m256 y0 = _mm256_mul_ps(silu_avx2(_mm256_loadu_ps(a + i)), _mm256_loadu_ps(b + i));
        __m256 y1 = _mm256_mul_ps(silu_avx2(_mm256_loadu_ps(a + i + 8)), _mm256_loadu_ps(b + i + 8));
        _mm256_storeu_ps(out + i, y0);
        _mm256_storeu_ps(out + i + 8, y1);
    }
    for (; i + 8 <= hi; i += 8)
        _mm256_storeu_ps(out + i, _mm256_mul_ps(silu_avx2(_mm256_loadu_ps(a + i)), _mm256_loadu_ps(b + i)));
    for (; i < hi; i++) out[i] = silu1(a[i]) * b[i];
}

int cw_swiglu_avx2(const float* a, const float* b, float* out, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, swiglu_range(a, b, out, lo, hi));
    return CW_OK;
}

static void silu_range(float* x, int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + 8 <= hi; i += 8) _mm256_storeu_ps(x + i, silu_avx2(_mm256_loadu_ps(x + i)));
    for (; i < hi; i++) x[i] = silu1(x[i]);
}

int cw_silu_avx2(float* x, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, silu_range(x, lo, hi));
    return CW_OK;
}

/* ---- rope: x[t, h, 0:D] at x + t*ts + h*hs ---------------------------------------------- */
/* neox = 0: out = x * C + swap_pairs(x) * S over whole vectors (pairs never straddle a
   vector); neox = 1: the halves x[0:P], x[P:D] rotate against each other. */
static void rope_head(float* x, const float* C, const float* S, int D, int neox) {
    const int P = D / 2;
    if (!neox) {
        int j = 0;
        for (; j + 8 <= D; j += 8) {
            __m256 v = _mm256_loadu_ps(x + j);
            __m256 sw = _mm256_permute_ps(v, 0xB1); /* (1 0 3 2) in each lane */
            __m256 y = _mm256_fmadd_ps(sw, _mm256_loadu_ps(S + j), _mm256_mul_ps(v, _mm256_loadu_ps(C + j)));
            _mm256_storeu_ps(x + j, y);
        }
        for (; j < D; j += 2) {
            float x0 = x[j], x1 = x[j + 1];
            x[j] = x0 * C[j] + x1 * S[j];
            x[j + 1] = x1 * C[j + 1] + x0 * S[j + 1];
        }
        return;
    }
    int i = 0;
    for (; i + 8 <= P; i += 8) {
        __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + P + i);
        __m256 ya = _mm256_fmadd_ps(b, _mm256_loadu_ps(S + i), _mm256_mul_ps(a, _mm256_loadu_ps(C + i)));
        __m256 yb = _mm256_fmadd_ps(a, _mm256_loadu_ps(S + P + i), _mm256_mul_ps(b, _mm256_loadu_ps(C + P + i)));
        _mm256_storeu_ps(x + i, ya);
        _mm256_storeu_ps(x + P + i, yb);
    }
    for (; i < P; i++) {
        float x0 = x[i], x1 = x[i + P];
        x[i] = x0 * C[i] + x1 * S[i];
        x[i + P] = x1 * C[i + P] + x0 * S[i + P];
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

int cw_rope_avx2(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta,
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
    __m256 m0 = _mm256_set1_ps(-INFINITY), m1 = m0;
    int j = 0;
    for (; j + 16 <= N; j += 16)
        m0 = _mm256_max_ps(m0, _mm256_loadu_ps(r + j)), m1 = _mm256_max_ps(m1, _mm256_loadu_ps(r + j + 8));
    for (; j + 8 <= N; j += 8) m0 = _mm256_max_ps(m0, _mm256_loadu_ps(r + j));
    float mx = hmax8(_mm256_max_ps(m0, m1));
    for (; j < N; j++) mx = r[j] > mx ? r[j] : mx;

    __m256 vm = _mm256_set1_ps(mx), s0 = _mm256_setzero_ps(), s1 = s0;
    j = 0;
    for (; j + 16 <= N; j += 16) {
        __m256 e0 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(r + j), vm));
        __m256 e1 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(r + j + 8), vm));
        _mm256_storeu_ps(r + j, e0), _mm256_storeu_ps(r + j + 8, e1);
        s0 = _mm256_add_ps(s0, e0), s1 = _mm256_add_ps(s1, e1);
    }
    for (; j + 8 <= N; j += 8) {
        __m256 e0 = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(r + j), vm));
        _mm256_storeu_ps(r + j, e0);
        s0 = _mm256_add_ps(s0, e0);
    }
    float sum = hsum8(_mm256_add_ps(s0, s1));
    for (; j < N; j++) sum += (r[j] = expf(r[j] - mx));

    float inv = 1.0f / sum;
    __m256 vi = _mm256_set1_ps(inv);
    j = 0;
    for (; j + 8 <= N; j += 8) _mm256_storeu_ps(r + j, _mm256_mul_ps(_mm256_loadu_ps(r + j), vi));
    for (; j < N; j++) r[j] *= inv;
}

int cw_softmax_avx2(float* x, int M, int N) {
    int nt = ops_threads((int64_t)M * N);
    OPS_FOR_RANGE(M, 1, for (int64_t m = lo; m < hi; m++) softmax_row(x + m * N, N));
    return CW_OK;
}

/* ---- add: flat [n] -------------------------------------------------------------------- */
static void add_range(const float* a, const float* b, float* out, int64_t lo, int64_t hi) {
    int64_t i = lo;
    for (; i + 32 <= hi; i += 32)
        for (int k = 0; k < 32; k += 8)
            _mm256_storeu_ps(out + i + k, _mm256_add_ps(_mm256_loadu_ps(a + i + k), _mm256_loadu_ps(b + i + k)));
    for (; i + 8 <= hi; i += 8)
        _mm256_storeu_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
    for (; i < hi; i++) out[i] = a[i] + b[i];
}

int cw_add_avx2(const float* a, const float* b, float* out, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, add_range(a, b, out, lo, hi));
    return CW_OK;
}
