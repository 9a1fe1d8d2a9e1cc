/* conv kernels, scalar (stub: not written yet). */
#pragma GCC optimize("no-tree-vectorize")
#include "cw_internal.h"

int cw_patch_embed_scalar(const float* x, const float* w, const float* bias, float* out, int H, int W, int Cin, int Cout, int act) {
    return CW_EINVAL;
}

int cw_dwconv3x3_scalar(const float* x, const float* w, const float* bias, float* out, int H, int W, int C, int stride, int act) {
    return CW_EINVAL;
}

