/* q8 kernels, AVX-512 (F/BW/VL/DQ + VNNI): block quantization, dequantization and the
 * int8 matmul with vpdpbusd.
 *
 * Quantization is the AVX2 scheme (bit-identical q and d: float32 divide, multiply by
 * 1/d, cvtps_epi32 round-to-nearest-even, F16C scale), with the narrowing done by
 * vpmovsdb.  For the rows of x in matmul_q8 it also records xc = -128 * (sum of the
 * block's int8 values).
 *
 * Products use the unsigned-offset form of vpdpbusd (u8 x s8 -> int32, no saturation):
 * the weights enter as wu = w ^ 0x80 = w + 128 (unsigned), the activations as signed
 * bytes, so sum wu * x = w . x + 128 * sum x, and starting the int32 accumulator at xc
 * leaves the exact dot product.  (The abs/sign form |w| x sign(x, w) is exact too, but
 * costs a vpsignb per product and an abs per weight vector, and vpsignb has no 512-bit
 * form.)
 *
 *   M >= Q8_MR (prefill): each group of Q8_NR = 16 weight rows is first repacked into
 *     wp[nb, 8, 16 rows, 4 bytes] (8 x 8 transposes of 4-byte words, xor 0x80), so one
 *     512-bit vpdpbusd with 4 bytes of x broadcast from memory ({1to16}) adds 4 products
 *     to each of the 16 rows' int32 lanes: no horizontal sums.  A tile of 4 x rows x 16
 *     w rows keeps the block's 8 weight vectors in registers across the 4 rows, two int32
 *     accumulators per x row, then one convert and one FMA with dx * dw[16] per row and
 *     block.  The repacking is paid once per group and chunk of x rows.
 *   M < Q8_MR (decode): the weight rows are streamed as stored, 4 at a time, with 256-bit
 *     vectors (one block each): one vpdpbusd per (x row, w row) gives 8 partial sums,
 *     vphaddd folds four w rows into [n0 n1 n2 n3 | n0 n1 n2 n3], then convert and FMA
 *     with dx * dw.  This path is bound by memory bandwidth, not by these instructions.
 */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include <immintrin.h>
#include <omp.h>
#include "q8_common.h"

#define INLINE static inline __attribute__((always_inline))

/* ---- quantize / dequantize ------------------------------------------------------- */

/* One block x[32] -> q[32]; returns d = max|x| / 127 (fp32); *sum = sum of q. */
INLINE float quant_block(const float* x, int8_t* q, int32_t* sum) {
    const __m256 nz = _mm256_set1_ps(-0.0f);
    __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    __m256 v2 = _mm256_loadu_ps(x + 16), v3 = _mm256_loadu_ps(x + 24);
    __m256 a = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(nz, v0), _mm256_andnot_ps(nz, v1)),
                             _mm256_max_ps(_mm256_andnot_ps(nz, v2), _mm256_andnot_ps(nz, v3)));
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    float d = _mm_cvtss_f32(m) / 127.0f;
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid));
    __m256i i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
    __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid));
    __m256i i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
    _mm_storel_epi64((__m128i*)q, _mm256_cvtsepi32_epi8(i0));
    _mm_storel_epi64((__m128i*)(q + 8), _mm256_cvtsepi32_epi8(i1));
    _mm_storel_epi64((__m128i*)(q + 16), _mm256_cvtsepi32_epi8(i2));
    _mm_storel_epi64((__m128i*)(q + 24), _mm256_cvtsepi32_epi8(i3));
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
    __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4E));
    h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xB1));
    *sum = _mm_cvtsi128_si32(h);
    return d;
}

int cw_quantize_q8_avx512(const float* x, int8_t* q, uint16_t* d, int64_t n) {
    int64_t nblk = n / CW_QK;
    int nt = q8_threads_for(nblk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        int32_t sum;
        cw_split(nblk, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
        for (int64_t b = lo; b < hi; b++) {
            float s = quant_block(x + b * CW_QK, q + b * CW_QK, &sum);
            d[b] = (uint16_t)_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT);
        }
    }
    return CW_OK;
}

int cw_dequantize_q8_avx512(const int8_t* q, const uint16_t* d, float* x, int64_t n) {
    int64_t nblk = n / CW_QK;
    int nt = q8_threads_for(nblk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        cw_split(nblk, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
        for (int64_t b = lo; b < hi; b++) {
            __m256 s = _mm256_set1_ps(_cvtsh_ss(d[b]));
            const int8_t* qb = q + b * CW_QK;
            float* xb = x + b * CW_QK;
            for (int k = 0; k < CW_QK; k += 8) {
                __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)(qb + k)));
                _mm256_storeu_ps(xb + k, _mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
            }
        }
    }
    return CW_OK;
}

/* ---- weight-group preparation -------------------------------------------------------- */

/* In-place transpose of an 8 x 8 matrix of 4-byte words: r[i] word k <-> r[k] word i. */
INLINE void transpose8(__m256i r[8]) {
    __m256i t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
        r[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
    }
}

/* dwT[b, j] = fp32(d[j][b]) for j < rows (4 or 16). */
static void build_dwT(const uint16_t* const* d, int rows, int nb, float* dwT) {
    int b = 0;
    if (rows == 16) {
        for (; b + 8 <= nb; b += 8)
            for (int h = 0; h < 16; h += 8) {
                __m256i r[8];
                for (int j = 0; j < 8; j++)
                    r[j] = _mm256_castps_si256(
                        _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d[h + j] + b))));
                transpose8(r);
                for (int k = 0; k < 8; k++)
                    _mm256_storeu_si256((__m256i*)(dwT + 16 * (b + k) + h), r[k]);
            }
    }
    for (; b < nb; b++)
        for (int j = 0; j < rows; j++) dwT[rows * b + j] = _cvtsh_ss(d[j][b]);
}

/* wp[b, k, j, 0:4] = (w[j][32 b + 4 k : +4]) ^ 0x80 for the 16 rows of a group. */
static void pack_group(const int8_t* const w[Q8_NR], int nb, int8_t* wp) {
    const __m256i off = _mm256_set1_epi8((char)0x80);
    for (int b = 0; b < nb; b++)
        for (int h = 0; h < 16; h += 8) {
            __m256i r[8];
            for (int j = 0; j < 8; j++)
                r[j] = _mm256_loadu_si256((const __m256i*)(w[h + j] + (int64_t)b * CW_QK));
            transpose8(r);
            for (int k = 0; k < 8; k++)
                _mm256_store_si256((__m256i*)(wp + (int64_t)b * 512 + 64 * k + 4 * h),
                                   _mm256_xor_si256(r[k], off));
        }
}

/* ---- tiles -------------------------------------------------------------------------- */

/* acc += dpbusd(wu, the 4 bytes at p broadcast to every lane), with the broadcast taken
   from memory by the instruction itself ({1to16}; GCC 12 does not fold it from
   _mm512_set1_epi32). */
INLINE __m512i dpbusd_bcast(__m512i acc, __m512i wu, const int8_t* p) {
    __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(wu), "m"(*(const int32_t*)p));
    return acc;
}

/* Packed tile: out[i, j] = sum_b dx[i, b] * dwT[b, j] * (xq[i, b, :] . w_j[b, :]) for
   i < MR (constant after inlining), j < 16; xq rows K = nb * 32 bytes apart. */
INLINE void ptile(int MR, const int8_t* xq, const float* dx, const int32_t* xc, int nb,
                  const int8_t* wp, const float* dwT, float* out /* [MR, 16] */) {
    __m512 acc[Q8_MR];
    for (int i = 0; i < MR; i++) acc[i] = _mm512_setzero_ps();
    int64_t K = (int64_t)nb * CW_QK;
    for (int b = 0; b < nb; b++) {
        __m512i w[8];
        for (int k = 0; k < 8; k++) w[k] = _mm512_load_si512((const void*)(wp + 512 * b + 64 * k));
        __m512 dw = _mm512_loadu_ps(dwT + 16 * b);
        for (int i = 0; i < MR; i++) {
            const int8_t* xb = xq + i * K + b * CW_QK;
            __m512i s0 = _mm512_set1_epi32(xc[i * nb + b]), s1 = _mm512_setzero_si512();
            for (int k = 0; k < 8; k += 2) {
                s0 = dpbusd_bcast(s0, w[k], xb + 4 * k);
                s1 = dpbusd_bcast(s1, w[k + 1], xb + 4 * k + 4);
            }
            __m512 sc = _mm512_mul_ps(dw, _mm512_set1_ps(dx[i * nb + b]));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), sc, acc[i]);
        }
    }
    for (int i = 0; i < MR; i++) _mm512_storeu_ps(out + 16 * i, acc[i]);
}

/* Streaming tile (weights as stored): 4 weight rows w[j], aw = w ^ 0x80; the correction
   xc enters lane 0 of each product so the folded sum counts it once.  out [MR, 4]. */
INLINE void tile4(int MR, const int8_t* xq, const float* dx, const int32_t* xc, int nb,
                  const int8_t* const w[4], const float* dwT, float* out) {
    const __m256i off = _mm256_set1_epi8((char)0x80);
    __m256 acc[Q8_MR];
    for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
    int64_t K = (int64_t)nb * CW_QK;
    for (int b = 0; b < nb; b++) {
        int64_t o = (int64_t)b * CW_QK;
        __m256i aw[4];
        if (b % 2 == 0) /* the next 4 rows (next in memory when w rows are adjacent) */
            for (int j = 0; j < 4; j++) _mm_prefetch((const char*)(w[j] + 4 * K + o), _MM_HINT_T0);
        for (int j = 0; j < 4; j++)
            aw[j] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i*)(w[j] + o)), off);
        __m256 dw = _mm256_broadcast_ps((const __m128*)(dwT + 4 * b));
        for (int i = 0; i < MR; i++) {
            __m256i x = _mm256_loadu_si256((const __m256i*)(xq + i * K + o));
            __m256i c = _mm256_zextsi128_si256(_mm_cvtsi32_si128(xc[i * nb + b]));
            __m256i p0 = _mm256_dpbusd_epi32(c, aw[0], x), p1 = _mm256_dpbusd_epi32(c, aw[1], x);
            __m256i p2 = _mm256_dpbusd_epi32(c, aw[2], x), p3 = _mm256_dpbusd_epi32(c, aw[3], x);
            __m256i s = _mm256_hadd_epi32(_mm256_hadd_epi32(p0, p1), _mm256_hadd_epi32(p2, p3));
            __m256 sc = _mm256_mul_ps(dw, _mm256_set1_ps(dx[i * nb + b]));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), sc, acc[i]);
        }
    }
    for (int i = 0; i < MR; i++)
        _mm_storeu_ps(out + 4 * i, _mm_add_ps(_mm256_castps256_ps128(acc[i]),
                                              _mm256_extractf128_ps(acc[i], 1)));
}

/* ---- matmul ------------------------------------------------------------------------ */

/* y[i, n0 + j] = out[i, j] (+ bias) for i < mr, j < nn; out rows are `ld` apart. */
static void store_tile(const float* out, int ld, int mr, int nn, const float* bias, int n0,
                       float* y, int64_t N) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nn; j++)
            y[i * N + n0 + j] = out[ld * i + j] + (bias ? bias[n0 + j] : 0.0f);
}

/* One group of 16 weight rows (nn valid) against `rows` quantized x rows, packed. */
static void group_packed(const q8_scratch* s, int rows, int nb, const int8_t* const w[16],
                         const uint16_t* const d[16], float* dwT, int8_t* wp, const float* bias,
                         int n0, int nn, float* y, int64_t N) {
    float out[Q8_MR * 16];
    int64_t K = (int64_t)nb * CW_QK;
    build_dwT(d, 16, nb, dwT);
    pack_group(w, nb, wp);
    for (int i0 = 0; i0 < rows; i0 += Q8_MR) {
        int mr = rows - i0 < Q8_MR ? rows - i0 : Q8_MR;
        const int8_t* xi = s->xq + i0 * K;
        const float* di = s->dx + (int64_t)i0 * nb;
        const int32_t* ci = s->xc + (int64_t)i0 * nb;
        switch (mr) {
        case 4: ptile(4, xi, di, ci, nb, wp, dwT, out); break;
        case 3: ptile(3, xi, di, ci, nb, wp, dwT, out); break;
        case 2: ptile(2, xi, di, ci, nb, wp, dwT, out); break;
        default: ptile(1, xi, di, ci, nb, wp, dwT, out); break;
        }
        store_tile(out, 16, mr, nn, bias, n0, y + i0 * N, N);
    }
}

/* The same group streamed 4 weight rows at a time (rows < Q8_MR x rows). */
static void group_stream(const q8_scratch* s, int rows, int nb, const int8_t* const w[16],
                         const uint16_t* const d[16], float* dwT, const float* bias, int n0,
                         int nn, float* y, int64_t N) {
    float out[Q8_MR * 4];
    for (int h = 0; h < nn; h += 4) {
        build_dwT(d + h, 4, nb, dwT);
        int nh = nn - h < 4 ? nn - h : 4;
        switch (rows) {
        case 3: tile4(3, s->xq, s->dx, s->xc, nb, w + h, dwT, out); break;
        case 2: tile4(2, s->xq, s->dx, s->xc, nb, w + h, dwT, out); break;
        default: tile4(1, s->xq, s->dx, s->xc, nb, w + h, dwT, out); break;
        }
        store_tile(out, 4, rows, nh, bias, n0 + h, y, N);
    }
}

int cw_matmul_q8_avx512(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias,
                        float* y, int M, int N, int K) {
    int nb = K / CW_QK, nt = cw_nthreads(), mc = q8_chunk_rows(M, K);
    q8_scratch s;
    if (q8_scratch_alloc(&s, mc, nb, nt) != CW_OK) return CW_ENOMEM;
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        float* dwT = q8_dwT(&s, t);
        int8_t* wp = q8_wp(&s, nb, t);
        for (int m0 = 0; m0 < M; m0 += mc) {
            int rows = M - m0 < mc ? M - m0 : mc;
            int64_t lo, hi;
            /* 1. quantize this chunk's rows of x: xq[rows, K], dx, xc[rows, nb] */
            cw_split(rows, T, t, 1, &lo, &hi);
            for (int64_t i = lo; i < hi; i++)
                for (int b = 0; b < nb; b++) {
                    int32_t sum;
                    s.dx[i * nb + b] = quant_block(x + (m0 + i) * (int64_t)K + b * CW_QK,
                                                   s.xq + i * K + b * CW_QK, &sum);
                    s.xc[i * nb + b] = -128 * sum;
                }
#pragma omp barrier
            /* 2. y[m0:m0+rows, lo:hi] in groups of Q8_NR weight rows */
            cw_split(N, T, t, Q8_NR, &lo, &hi);
            for (int64_t n0 = lo; n0 < hi; n0 += Q8_NR) {
                int nn = hi - n0 < Q8_NR ? (int)(hi - n0) : Q8_NR;
                const int8_t* w[Q8_NR];
                const uint16_t* d[Q8_NR];
                for (int j = 0; j < Q8_NR; j++) { /* rows past the end repeat the last one */
                    int64_t n = n0 + (j < nn ? j : nn - 1);
                    w[j] = wq + n * K;
                    d[j] = wd + n * nb;
                }
                float* yc = y + (int64_t)m0 * N;
                if (M >= Q8_MR)
                    group_packed(&s, rows, nb, w, d, dwT, wp, bias, (int)n0, nn, yc, N);
                else
                    group_stream(&s, rows, nb, w, d, dwT, bias, (int)n0, nn, yc, N);
            }
#pragma omp barrier
        }
    }
    cw_free(s.base);
    return CW_OK;
}
