/* conv kernels, avx512 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include "cw_internal.h"

int cw_patch_embed_avx512(const float* x, const float* w, const float* bias, float* out, int H, int W, int Cin, int Cout, int act) {
    return CW_EINVAL;
}

int cw_dwconv3x3_avx512(const float* x, const float* w, const float* bias, float* out, int H, int W, int C, int stride, int act) {
    return CW_EINVAL;
}

