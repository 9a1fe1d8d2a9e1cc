/* matmul_f32 kernels, scalar (stub: not written yet). */
#pragma GCC optimize("no-tree-vectorize")
#include "cw_internal.h"

int cw_matmul_f32_scalar(const float* x, const float* w, const float* bias, float* y, int M, int N, int K) {
    return CW_EINVAL;
}

