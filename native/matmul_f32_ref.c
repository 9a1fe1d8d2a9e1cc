/* matmul_f32, scalar reference: y[M, N] = x[M, K] @ w[N, K]^T + bias[N].
 *
 * Plain C, kept scalar (no auto-vectorisation) so that it measures what the SIMD
 * variants gain from vectors alone: it runs on the same OpenMP threads with the same
 * partition (each thread owns a contiguous range of N, multiples of 32, from cw_split).
 * Both x and w are contiguous along K, so each output is a dot product over K; a tile of
 * 4 rows x 4 outputs keeps 16 scalar accumulators for instruction-level parallelism, and
 * the edges of M and N fall back to one dot product per output.  M == 1 (decode) takes
 * the same code with tiles of 1 row x 4 outputs.
 */
#pragma GCC optimize("no-tree-vectorize")
#include <omp.h>
#include "cw_internal.h"

#define NALIGN 32 /* thread ranges of N are multiples of this (same in every variant) */

/* y[m][n] for the 4 x 4 tile at (m, n): rows of x and w are K apart. */
static void tile4x4(const float* x, const float* w, const float* bias, float* y, int64_t N,
                    int64_t K) {
    float c[4][4] = {{0}};
    const float *x0 = x, *x1 = x + K, *x2 = x + 2 * K, *x3 = x + 3 * K;
    const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
    for (int64_t k = 0; k < K; k++) {
        float a0 = x0[k], a1 = x1[k], a2 = x2[k], a3 = x3[k];
        float b0 = w0[k], b1 = w1[k], b2 = w2[k], b3 = w3[k];
        c[0][0] += a0 * b0; c[0][1] += a0 * b1; c[0][2] += a0 * b2; c[0][3] += a0 * b3;
        c[1][0] += a1 * b0; c[1][1] += a1 * b1; c[1][2] += a1 * b2; c[1][3] += a1 * b3;
        c[2][0] += a2 * b0; c[2][1] += a2 * b1; c[2][2] += a2 * b2; c[2][3] += a2 * b3;
        c[3][0] += a3 * b0; c[3][1] += a3 * b1; c[3][2] += a3 * b2; c[3][3] += a3 * b3;
    }
    for (int r = 0; r < 4; r++)
        for (int j = 0; j < 4; j++) y[r * N + j] = c[r][j] + (bias ? bias[j] : 0.0f);
}

/* y[n .. n+3] for one row: four dot products sharing the loads of x. */
static void tile1x4(const float* x, const float* w, const float* bias, float* y, int64_t K) {
    float c0 = 0.0f, c1 = 0.0f, c2 = 0.0f, c3 = 0.0f;
    const float *w0 = w, *w1 = w + K, *w2 = w + 2 * K, *w3 = w + 3 * K;
    for (int64_t k = 0; k < K; k++) {
        float a = x[k];
        c0 += a * w0[k]; c1 += a * w1[k]; c2 += a * w2[k]; c3 += a * w3[k];
    }
    y[0] = c0 + (bias ? bias[0] : 0.0f);
    y[1] = c1 + (bias ? bias[1] : 0.0f);
    y[2] = c2 + (bias ? bias[2] : 0.0f);
    y[3] = c3 + (bias ? bias[3] : 0.0f);
}

/* One output: dot(x row, w row) + bias. */
static float dot1(const float* x, const float* w, int64_t K) {
    float s = 0.0f;
    for (int64_t k = 0; k < K; k++) s += x[k] * w[k];
    return s;
}

/* Rows [0, M) x columns [n_lo, n_hi) of y. */
static void matmul_range(const float* x, const float* w, const float* bias, float* y, int64_t M,
                         int64_t N, int64_t K, int64_t n_lo, int64_t n_hi) {
    int64_t m = 0;
    for (; m + 4 <= M; m += 4) {
        int64_t n = n_lo;
        for (; n + 4 <= n_hi; n += 4)
            tile4x4(x + m * K, w + n * K, bias ? bias + n : NULL, y + m * N + n, N, K);
        for (; n < n_hi; n++)
            for (int64_t r = m; r < m + 4; r++)
                y[r * N + n] = dot1(x + r * K, w + n * K, K) + (bias ? bias[n] : 0.0f);
    }
    for (; m < M; m++) {
        int64_t n = n_lo;
        for (; n + 4 <= n_hi; n += 4)
            tile1x4(x + m * K, w + n * K, bias ? bias + n : NULL, y + m * N + n, K);
        for (; n < n_hi; n++) y[m * N + n] = dot1(x + m * K, w + n * K, K) + (bias ? bias[n] : 0.0f);
    }
}

int cw_matmul_f32_scalar(const float* x, const float* w, const float* bias, float* y, int M, int N, int K) {
    int nt = cw_nthreads();
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        cw_split(N, omp_get_num_threads(), omp_get_thread_num(), NALIGN, &lo, &hi);
        if (hi > lo) matmul_range(x, w, bias, y, M, N, K, lo, hi);
    }
    return CW_OK;
}
