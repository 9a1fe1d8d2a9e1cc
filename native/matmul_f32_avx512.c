/* matmul_f32 kernels, avx512 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include "cw_internal.h"

int cw_matmul_f32_avx512(const float* x, const float* w, const float* bias, float* y, int M, int N, int K) {
    return CW_EINVAL;
}

