/* q8 kernels, scalar (stub: not written yet). */
#pragma GCC optimize("no-tree-vectorize")
#include "cw_internal.h"

int cw_quantize_q8_scalar(const float* x, int8_t* q, uint16_t* d, int64_t n) {
    return CW_EINVAL;
}

int cw_dequantize_q8_scalar(const int8_t* q, const uint16_t* d, float* x, int64_t n) {
    return CW_EINVAL;
}

int cw_matmul_q8_scalar(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias, float* y, int M, int N, int K) {
    return CW_EINVAL;
}

