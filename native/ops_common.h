/* Shared helpers of the ops and conv kernel files (element-wise, row and conv ops).
 *
 *   - OPS_FOR_RANGE: the one thread partition every variant (scalar and SIMD) uses: [0, n)
 *     cut by cw_split into one contiguous chunk per thread, a single thread below
 *     OPS_PAR_MIN elements of work, so SIMD / scalar ratios measure SIMD only.
 *   - RoPE angle rows: cos / sin of pos * theta^(-2i/D) in double, exact (cos, sin) every
 *     ROPE_RESEED positions and advanced between them by one double-precision rotation
 *     per position (error ~ 1e-15 per step, far below float rounding), then stored as
 *     float rows C[D], S[D] so that out[j] = x[j] * C[j] + x[partner(j)] * S[j].
 *   - exp / SiLU vectors for the ISA of the including file (AVX2 with __AVX2__, AVX-512
 *     with __AVX512F__): exp(x) = 2^n * e^r with n = round(x / ln 2), r = x - n ln 2
 *     (ln 2 split in two constants), e^r = 1 + r + r^2 p(r) with a degree-5 minimax p
 *     (the classic Cephes expf coefficients, about 1 ulp on |r| <= ln2 / 2).  Inputs
 *     are clamped to [-87, 88] so 2^n stays a normal float (no inf, no NaN); below -87
 *     the result is 0 (true value < 1.7e-38).  SiLU(a) = a / (1 + exp(-a)) with a true
 *     division; below a = -88 it returns -0 (true |value| < 1e-36), so huge negative
 *     inputs never see the clamped exp.
 */
#ifndef CW_OPS_COMMON_H
#define CW_OPS_COMMON_H

#include <omp.h>
#include "cw_internal.h"

#define OPS_PAR_MIN 32768 /* elements of work below which one thread does it all */
#define ROPE_RESEED 128   /* positions between exact cos / sin evaluations */

static inline int ops_threads(int64_t work) { return work > OPS_PAR_MIN ? cw_nthreads() : 1; }

/* Run the statements (using int64_t lo, hi) on [lo, hi) chunks of [0, n) on nt threads;
   chunk starts are multiples of `align`.  Needs a variable named nt in scope. */
#define OPS_FOR_RANGE(n, align, ...)                                                       \
    do {                                                                                   \
        if (nt <= 1) {                                                                     \
            const int64_t lo = 0, hi = (n);                                                \
            __VA_ARGS__;                                                                   \
        } else {                                                                           \
            _Pragma("omp parallel num_threads(nt)") {                                      \
                int64_t lo, hi;                                                            \
                cw_split((n), omp_get_num_threads(), omp_get_thread_num(), (align), &lo, &hi); \
                if (hi > lo) { __VA_ARGS__; }                                              \
            }                                                                              \
        }                                                                                  \
    } while (0)

/* ---- RoPE angle rows --------------------------------------------------------------- */
typedef struct {
    int D, P, neox;        /* head size, pairs P = D / 2, pair order */
    const double* inv;     /* inv[P] = theta^(-2i/D) (shared by all threads) */
    double *c, *s;         /* [P] cos, sin at the current position */
    double *cs, *ss;       /* [P] cos, sin of one position step */
    float *C, *S;          /* [D] the float rows the kernels apply */
} rope_tab;

/* Bytes of one thread's rope_tab arrays (64-byte multiple). */
static inline size_t rope_tab_bytes(int D) {
    size_t b = (size_t)(D / 2) * 4 * sizeof(double) + (size_t)D * 2 * sizeof(float);
    return (b + 63) & ~(size_t)63;
}

/* inv[i] = theta^(-2i/D) by repeated multiplication with theta^(-2/D), re-anchored with
   pow every 16 entries (relative error < 1e-14, far below float; one pow per 16). */
static inline void rope_inv_freq(double* inv, int D, float theta) {
    const double step = pow((double)theta, -2.0 / D);
    for (int i = 0; i < D / 2; i++)
        inv[i] = i % 16 == 0 ? pow((double)theta, -2.0 * i / D) : inv[i - 1] * step;
}

/* `steps`: whether rope_tab_at will advance by one position (else cs, ss stay unset). */
static inline void rope_tab_init(rope_tab* tb, void* mem, const double* inv, int D, int neox,
                                 int steps) {
    tb->D = D, tb->P = D / 2, tb->neox = neox, tb->inv = inv;
    double* d = (double*)mem;
    tb->c = d, tb->s = d + tb->P, tb->cs = d + 2 * tb->P, tb->ss = d + 3 * tb->P;
    tb->C = (float*)(d + 4 * tb->P), tb->S = tb->C + D;
    for (int i = 0; steps && i < tb->P; i++) tb->cs[i] = cos(inv[i]), tb->ss[i] = sin(inv[i]);
}

/* Fill C, S for position pos: exactly when `fresh`, else one step on from pos - 1. */
static inline void rope_tab_at(rope_tab* tb, int64_t pos, int fresh) {
    const int P = tb->P;
    for (int i = 0; i < P; i++) {
        double c, s;
        if (fresh) {
            double a = (double)pos * tb->inv[i];
            c = cos(a), s = sin(a);
        } else {
            c = tb->c[i] * tb->cs[i] - tb->s[i] * tb->ss[i];
            s = tb->s[i] * tb->cs[i] + tb->c[i] * tb->ss[i];
        }
        tb->c[i] = c, tb->s[i] = s;
        int j0 = tb->neox ? i : 2 * i, j1 = tb->neox ? i + P : 2 * i + 1;
        tb->C[j0] = tb->C[j1] = (float)c;
        tb->S[j0] = (float)-s, tb->S[j1] = (float)s;
    }
}

/* ---- vector exp and SiLU ------------------------------------------------------------ */
#define EXP_LOG2E 1.44269504088896341f
#define EXP_LN2_HI 0.693359375f
#define EXP_LN2_LO -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

static inline __m256 exp_avx2(__m256 x) {
    __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(EXP_LOG2E)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_HI), xc);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(EXP_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(EXP_P0), r, _mm256_set1_ps(EXP_P1));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(EXP_P5));
    __m256 e = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    e = _mm256_mul_ps(e, _mm256_castsi256_ps(bits));
    return _mm256_andnot_ps(_mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_LT_OQ), e);
}

static inline __m256 silu_avx2(__m256 a) {
    __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), a)));
    __m256 y = _mm256_div_ps(a, d);
    return _mm256_blendv_ps(y, _mm256_set1_ps(-0.0f), _mm256_cmp_ps(a, _mm256_set1_ps(-88.0f), _CMP_LT_OQ));
}
#endif

#if defined(__AVX512F__)
static inline __m512 exp_avx512(__m512 x) {
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(EXP_LOG2E)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_HI), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(EXP_LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(EXP_P0), r, _mm512_set1_ps(EXP_P1));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_P5));
    __m512 e = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    e = _mm512_scalef_ps(e, n); /* e * 2^n */
    __mmask16 under = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_LT_OQ);
    return _mm512_mask_mov_ps(e, under, _mm512_setzero_ps());
}

static inline __m512 silu_avx512(__m512 a) {
    __m512 d = _mm512_add_ps(_mm512_set1_ps(1.0f), exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), a)));
    __m512 y = _mm512_div_ps(a, d);
    __mmask16 tiny = _mm512_cmp_ps_mask(a, _mm512_set1_ps(-88.0f), _CMP_LT_OQ);
    return _mm512_mask_mov_ps(y, tiny, _mm512_set1_ps(-0.0f));
}
#endif

#endif
