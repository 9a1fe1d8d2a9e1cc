/* ops kernels, scalar (stub: not written yet). */
#pragma GCC optimize("no-tree-vectorize")
#include "cw_internal.h"

int cw_rmsnorm_scalar(const float* x, const float* w, float* out, int M, int N, float eps) {
    return CW_EINVAL;
}

int cw_swiglu_scalar(const float* a, const float* b, float* out, int64_t n) {
    return CW_EINVAL;
}

int cw_silu_scalar(float* x, int64_t n) {
    return CW_EINVAL;
}

int cw_rope_scalar(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta, int neox) {
    return CW_EINVAL;
}

int cw_softmax_scalar(float* x, int M, int N) {
    return CW_EINVAL;
}

int cw_add_scalar(const float* a, const float* b, float* out, int64_t n) {
    return CW_EINVAL;
}

