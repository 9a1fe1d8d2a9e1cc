/* Element-wise and row ops, plain C references: rmsnorm, swiglu, silu, rope, softmax, add.
 *
 * One element at a time, no auto-vectorization (the pragma below), libm expf / cos / sin;
 * sums of squares and softmax denominators in double.  The thread partition is the one
 * the SIMD files use (OPS_FOR_RANGE in ops_common.h), so SIMD / scalar ratios measure
 * the SIMD code alone.
 */
#pragma GCC optimize("no-tree-vectorize")
#include "ops_common.h"

/* ---- rmsnorm: x[M, N] -> out[M, N] -------------------------------------------------- */
static void rmsnorm_rows(const float* x, const float* w, float* out, int64_t m0, int64_t m1,
                         int N, float eps) {
    for (int64_t m = m0; m < m1; m++) {
        const float* xr = x + m * N;
        float* yr = out + m * N;
        double ss = 0.0;
        for (int j = 0; j < N; j++) ss += (double)xr[j] * xr[j];
        float scale = (float)(1.0 / sqrt(ss / N + eps));
        for (int j = 0; j < N; j++) yr[j] = xr[j] * scale * w[j];
    }
}

int cw_rmsnorm_scalar(const float* x, const float* w, float* out, int M, int N, float eps) {
    int nt = ops_threads((int64_t)M * N);
    OPS_FOR_RANGE(M, 1, rmsnorm_rows(x, w, out, lo, hi, N, eps));
    return CW_OK;
}

/* ---- swiglu / silu: flat [n] ---------------------------------------------------------- */
static inline float silu1(float a) { return a / (1.0f + expf(-a)); }

static void swiglu_range(const float* a, const float* b, float* out, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) out[i] = silu1(a[i]) * b[i];
}

int cw_swiglu_scalar(const float* a, const float* b, float* out, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, swiglu_range(a, b, out, lo, hi));
    return CW_OK;
}

static void silu_range(float* x, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) x[i] = silu1(x[i]);
}

int cw_silu_scalar(float* x, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, silu_range(x, lo, hi));
    return CW_OK;
}

/* ---- rope: x[t, h, 0:D] at x + t*ts + h*hs ---------------------------------------------- */
static void rope_head(float* x, const float* C, const float* S, int D, int neox) {
    const int P = D / 2;
    for (int i = 0; i < P; i++) {
        int j0 = neox ? i : 2 * i, j1 = neox ? i + P : 2 * i + 1;
        float x0 = x[j0], x1 = x[j1];
        x[j0] = x0 * C[j0] + x1 * S[j0];
        x[j1] = x1 * C[j1] + x0 * S[j1];
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

int cw_rope_scalar(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta,
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
static void softmax_rows(float* x, int64_t m0, int64_t m1, int N) {
    for (int64_t m = m0; m < m1; m++) {
        float* r = x + m * N;
        float mx = r[0];
        for (int j = 1; j < N; j++) mx = r[j] > mx ? r[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < N; j++) sum += (r[j] = expf(r[j] - mx));
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < N; j++) r[j] *= inv;
    }
}

int cw_softmax_scalar(float* x, int M, int N) {
    int nt = ops_threads((int64_t)M * N);
    OPS_FOR_RANGE(M, 1, softmax_rows(x, lo, hi, N));
    return CW_OK;
}

/* ---- add: flat [n] -------------------------------------------------------------------- */
static void add_range(const float* a, const float* b, float* out, int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; i++) out[i] = a[i] + b[i];
}

int cw_add_scalar(const float* a, const float* b, float* out, int64_t n) {
    int nt = ops_threads(n);
    OPS_FOR_RANGE(n, 16, add_range(a, b, out, lo, hi));
    return CW_OK;
}
