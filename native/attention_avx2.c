/* attention kernels, avx2 (stub: not written yet). */
#pragma GCC target("avx2,fma,f16c")
#include "cw_internal.h"

int cw_attention_avx2(const float* q, const float* k, const float* v, float* out, int Tq, int Tk, int Hq, int Hkv, int D, int64_t q_ts, int64_t q_hs, int64_t kv_ts, int64_t kv_hs, int64_t o_ts, int64_t o_hs, float scale, int causal_offset) {
    return CW_EINVAL;
}

int cw_window_attention_avx2(const float* q, const float* k, const float* v, float* out, int H, int W, int nh, int D, int ws, float scale) {
    return CW_EINVAL;
}

