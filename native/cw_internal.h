/* Internal declarations shared by the kernel files (not part of the public API).
 *
 * Every public kernel cw_X in kernels.h has three implementations, cw_X_scalar
 * (*_ref.c), cw_X_avx2 (*_avx2.c) and cw_X_avx512 (*_avx512.c), with the same
 * parameters.  dispatch.c validates the arguments once, then calls the variant of
 * the ISA in use, so the variants may assume valid arguments.  An AVX-512 variant
 * that would not pay simply calls the AVX2 one.
 */
#ifndef CROMWELL_CW_INTERNAL_H
#define CROMWELL_CW_INTERNAL_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"

#define CW_VARIANTS(ret, name, params) \
    ret name##_scalar params;          \
    ret name##_avx2 params;            \
    ret name##_avx512 params;

CW_VARIANTS(int, cw_matmul_f32, (const float* x, const float* w, const float* bias, float* y, int M, int N, int K))
CW_VARIANTS(int, cw_quantize_q8, (const float* x, int8_t* q, uint16_t* d, int64_t n))
CW_VARIANTS(int, cw_dequantize_q8, (const int8_t* q, const uint16_t* d, float* x, int64_t n))
CW_VARIANTS(int, cw_matmul_q8, (const float* x, const int8_t* wq, const uint16_t* wd, const float* bias, float* y, int M, int N, int K))
CW_VARIANTS(int, cw_rmsnorm, (const float* x, const float* w, float* out, int M, int N, float eps))
CW_VARIANTS(int, cw_swiglu, (const float* a, const float* b, float* out, int64_t n))
CW_VARIANTS(int, cw_silu, (float* x, int64_t n))
CW_VARIANTS(int, cw_rope, (float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta, int neox))
CW_VARIANTS(int, cw_softmax, (float* x, int M, int N))
CW_VARIANTS(int, cw_add, (const float* a, const float* b, float* out, int64_t n))
CW_VARIANTS(int, cw_attention, (const float* q, const float* k, const float* v, float* out, int Tq, int Tk, int Hq, int Hkv, int D, int64_t q_ts, int64_t q_hs, int64_t kv_ts, int64_t kv_hs, int64_t o_ts, int64_t o_hs, float scale, int causal_offset))
CW_VARIANTS(int, cw_window_attention, (const float* q, const float* k, const float* v, float* out, int H, int W, int nh, int D, int ws, float scale))
CW_VARIANTS(int, cw_patch_embed, (const float* x, const float* w, const float* bias, float* out, int H, int W, int Cin, int Cout, int act))
CW_VARIANTS(int, cw_dwconv3x3, (const float* x, const float* w, const float* bias, float* out, int H, int W, int C, int stride, int act))

/* Threads the kernels should use (the value of cw_get_threads()). */
int cw_nthreads(void);

/* Split [0, n) into `parts` contiguous chunks, multiples of `align` except the last;
   chunk i is [*lo, *hi). */
static inline void cw_split(int64_t n, int parts, int i, int64_t align, int64_t* lo, int64_t* hi) {
    int64_t units = (n + align - 1) / align;
    int64_t per = units / parts, rem = units % parts;
    int64_t u0 = i * per + (i < rem ? i : rem);
    int64_t u1 = u0 + per + (i < rem ? 1 : 0);
    *lo = u0 * align < n ? u0 * align : n;
    *hi = u1 * align < n ? u1 * align : n;
}

/* IEEE half <-> float, round to nearest even (portable; the SIMD files use F16C). */
static inline float cw_fp16_to_fp32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t cw_fp32_to_fp16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00); /* rounds to inf */
    if (ax < 0x38800000u) { /* subnormal half or zero */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        int shift = 13 + (113 - (int)e); /* mantissa bits dropped */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((ax - 0x38000000u) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

#endif
