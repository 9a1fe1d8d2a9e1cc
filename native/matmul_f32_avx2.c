/* matmul_f32 kernels, avx2 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c")
#include "cw_internal.h"

int cw_matmul_f32_avx2(const float* x, const float* w, const float* bias, float* y, int M, int N, int K) {
    return CW_EINVAL;
}

