/* conv kernels, avx2 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c")
#include "cw_internal.h"

int cw_patch_embed_avx2(const float* x, const float* w, const float* bias, float* out, int H, int W, int Cin, int Cout, int act) {
    return CW_EINVAL;
}

int cw_dwconv3x3_avx2(const float* x, const float* w, const float* bias, float* out, int H, int W, int C, int stride, int act) {
    return CW_EINVAL;
}

