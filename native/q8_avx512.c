/* q8 kernels, avx512 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include "cw_internal.h"

int cw_quantize_q8_avx512(const float* x, int8_t* q, uint16_t* d, int64_t n) {
    return CW_EINVAL;
}

int cw_dequantize_q8_avx512(const int8_t* q, const uint16_t* d, float* x, int64_t n) {
    return CW_EINVAL;
}

int cw_matmul_q8_avx512(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias, float* y, int M, int N, int K) {
    return CW_EINVAL;
}

