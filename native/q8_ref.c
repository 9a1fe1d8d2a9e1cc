/* q8 kernels, scalar reference: block quantization to int8 with fp16 scales, its
 * inverse, and the int8 x int8 matmul.
 *
 * Plain C with auto-vectorization switched off, so it stays the slow, obviously correct
 * baseline the SIMD files are measured against.  It follows the block-scaled int8 scheme
 * of kernels.h (one scale per 32 values, integer dot products per block, scales applied
 * once per block) and uses the thread partition of q8_common.h, the same as the SIMD
 * versions.
 */
#pragma GCC optimize("no-tree-vectorize")
#include <omp.h>
#include "q8_common.h"

/* One block of 32 floats -> q[32]; returns the fp32 scale d = max|x| / 127. */
static float quant_block(const float* x, int8_t* q) {
    float amax = 0.0f;
    for (int i = 0; i < CW_QK; i++) {
        float a = fabsf(x[i]);
        amax = a > amax ? a : amax;
    }
    float d = amax / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < CW_QK; i++) q[i] = (int8_t)nearbyintf(x[i] * id);
    return d;
}

/* Exact integer dot product of two blocks of 32 int8. */
static int32_t dot_block(const int8_t* a, const int8_t* b) {
    int32_t s = 0;
    for (int i = 0; i < CW_QK; i++) s += (int32_t)a[i] * (int32_t)b[i];
    return s;
}

int cw_quantize_q8_scalar(const float* x, int8_t* q, uint16_t* d, int64_t n) {
    int64_t nblk = n / CW_QK;
    int nt = q8_threads_for(nblk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        cw_split(nblk, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
        for (int64_t b = lo; b < hi; b++)
            d[b] = cw_fp32_to_fp16(quant_block(x + b * CW_QK, q + b * CW_QK));
    }
    return CW_OK;
}

int cw_dequantize_q8_scalar(const int8_t* q, const uint16_t* d, float* x, int64_t n) {
    int64_t nblk = n / CW_QK;
    int nt = q8_threads_for(nblk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        cw_split(nblk, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
        for (int64_t b = lo; b < hi; b++) {
            float s = cw_fp16_to_fp32(d[b]);
            for (int i = 0; i < CW_QK; i++) x[b * CW_QK + i] = (float)q[b * CW_QK + i] * s;
        }
    }
    return CW_OK;
}

/* y[rows, n] for one weight row n: xq[rows, K] with scales dx[rows, nb]; dw[nb] fp32. */
static void row_dot(const int8_t* xq, const float* dx, int rows, const int8_t* w,
                    const float* dw, int nb, float bias, float* y, int64_t ystride) {
    for (int i = 0; i < rows; i++) {
        const int8_t* xr = xq + (int64_t)i * nb * CW_QK;
        const float* dxr = dx + (int64_t)i * nb;
        float acc = 0.0f;
        for (int b = 0; b < nb; b++)
            acc += (dxr[b] * dw[b]) * (float)dot_block(xr + b * CW_QK, w + b * CW_QK);
        y[i * ystride] = acc + bias;
    }
}

int cw_matmul_q8_scalar(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias,
                        float* y, int M, int N, int K) {
    int nb = K / CW_QK, nt = cw_nthreads(), mc = q8_chunk_rows(M, K);
    q8_scratch s;
    if (q8_scratch_alloc(&s, mc, nb, nt) != CW_OK) return CW_ENOMEM;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        float* dw = q8_dwT(&s, t); /* [nb]: one weight row's scales in fp32 */
        for (int m0 = 0; m0 < M; m0 += mc) {
            int rows = M - m0 < mc ? M - m0 : mc;
            int64_t lo, hi;
            /* 1. quantize this chunk's rows of x: xq[rows, K], dx[rows, nb] */
            cw_split(rows, T, t, 1, &lo, &hi);
            for (int64_t i = lo; i < hi; i++)
                for (int b = 0; b < nb; b++)
                    s.dx[i * nb + b] = quant_block(x + (m0 + i) * (int64_t)K + b * CW_QK,
                                                   s.xq + i * K + b * CW_QK);
#pragma omp barrier
            /* 2. y[m0:m0+rows, lo:hi] */
            cw_split(N, T, t, Q8_NR, &lo, &hi);
            for (int64_t n = lo; n < hi; n++) {
                for (int b = 0; b < nb; b++) dw[b] = cw_fp16_to_fp32(wd[n * nb + b]);
                row_dot(s.xq, s.dx, rows, wq + n * K, dw, nb, bias ? bias[n] : 0.0f,
                        y + (int64_t)m0 * N + n, N);
            }
#pragma omp barrier
        }
    }
    cw_free(s.base);
    return CW_OK;
}
