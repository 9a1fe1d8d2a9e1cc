/* ops kernels, avx2 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c")
#include "cw_internal.h"

int cw_rmsnorm_avx2(const float* x, const float* w, float* out, int M, int N, float eps) {
    return CW_EINVAL;
}

int cw_swiglu_avx2(const float* a, const float* b, float* out, int64_t n) {
    return CW_EINVAL;
}

int cw_silu_avx2(float* x, int64_t n) {
    return CW_EINVAL;
}

int cw_rope_avx2(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta, int neox) {
    return CW_EINVAL;
}

int cw_softmax_avx2(float* x, int M, int N) {
    return CW_EINVAL;
}

int cw_add_avx2(const float* a, const float* b, float* out, int64_t n) {
    return CW_EINVAL;
}

