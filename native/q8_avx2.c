/* q8 kernels, AVX2 + FMA + F16C: block quantization, dequantization and the int8 matmul.
 *
 * Quantization works one 32-value block (four 8-float vectors) at a time: max|x| by
 * vector max, the scale divided in scalar float32 exactly as the reference does,
 * x * (1/d) rounded by cvtps_epi32 (round-to-nearest-even, the default MXCSR mode),
 * packed to int8 with saturating packs; scales go to fp16 with F16C (round to nearest
 * even), so q and d are bit-identical to the scalar reference.
 *
 * matmul_q8 follows the block-scaled int8 scheme of kernels.h: rows of x are quantized
 * once into scratch (fp32 scales).  Every int8 product uses the sign trick: |w| as
 * unsigned bytes times x with w's sign moved onto it (_mm256_sign_epi8), so maddubs
 * (u8 x s8 -> pairs summed to s16) cannot saturate (2 * 128 * 127 < 32768, w = -128
 * included); madd with ones widens to exact int32 sums of 4 products.
 *
 *   M >= Q8_MR (prefill): each group of Q8_NR = 16 weight rows is repacked once per chunk
 *     of x rows into wp[nb, 8, 8 rows, 4 bytes] per half of 8 rows (8 x 8 transposes of
 *     4-byte words; |w| and the signed words stored separately), so 4 bytes of x
 *     broadcast to all lanes meet 4 bytes of each of 8 rows and the int32 lanes are
 *     already the 8 rows' sums: no horizontal sums.  Tiles of 4 x rows x 8 w rows; per
 *     block one convert and one FMA with dx * dw[8] per x row.
 *   M < Q8_MR (decode): the weight rows are streamed as stored, 4 at a time; hadd folds
 *     the four rows' 8 partial sums into [n0 n1 n2 n3 | n0 n1 n2 n3], converted and
 *     scaled by dx * dw[n0..n3] into one accumulator per x row; the halves are added at
 *     the end.  This path is bound by memory bandwidth.
 */
#pragma GCC target("avx2,fma,f16c")
#include <immintrin.h>
#include <omp.h>
#include "q8_common.h"

#define INLINE static inline __attribute__((always_inline))

/* ---- quantize / dequantize ------------------------------------------------------- */

/* One block x[32] -> q[32]; returns the fp32 scale d = max|x| / 127. */
INLINE float quant_block(const float* x, int8_t* q) {
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
    /* packs work per 128-bit lane: bytes come out as i0[0:4] i1[0:4] i2[0:4] i3[0:4] |
       i0[4:8] i1[4:8] i2[4:8] i3[4:8]; the dword permute restores the order. */
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
    p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256((__m256i*)q, p);
    return d;
}

int cw_quantize_q8_avx2(const float* x, int8_t* q, uint16_t* d, int64_t n) {
    int64_t nblk = n / CW_QK;
    int nt = q8_threads_for(nblk);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int64_t lo, hi;
        cw_split(nblk, omp_get_num_threads(), omp_get_thread_num(), 1, &lo, &hi);
        for (int64_t b = lo; b < hi; b++) {
            float s = quant_block(x + b * CW_QK, q + b * CW_QK);
            d[b] = (uint16_t)_cvtss_sh(s, _MM_FROUND_TO_NEAREST_INT);
        }
    }
    return CW_OK;
}

int cw_dequantize_q8_avx2(const int8_t* q, const uint16_t* d, float* x, int64_t n) {
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

/* ---- matmul ------------------------------------------------------------------------ */

/* dwT[b, j] = fp32(d[j][b]) for the Q8_NR rows of one group: 8 blocks at a time by F16C
   and a 4 x 8 transpose, then a scalar tail. */
static void build_dwT(const uint16_t* const d[4], int nb, float* dwT) {
    int b = 0;
    for (; b + 8 <= nb; b += 8) {
        __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d[0] + b)));
        __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d[1] + b)));
        __m256 s2 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d[2] + b)));
        __m256 s3 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d[3] + b)));
        __m256 a = _mm256_unpacklo_ps(s0, s1), c = _mm256_unpacklo_ps(s2, s3);
        __m256 e = _mm256_unpackhi_ps(s0, s1), f = _mm256_unpackhi_ps(s2, s3);
        __m256 t[4] = {_mm256_shuffle_ps(a, c, 0x44), _mm256_shuffle_ps(a, c, 0xEE),
                       _mm256_shuffle_ps(e, f, 0x44), _mm256_shuffle_ps(e, f, 0xEE)};
        for (int k = 0; k < 4; k++) { /* t[k] = blocks b+k (low half) and b+4+k (high) */
            _mm_storeu_ps(dwT + 4 * (b + k), _mm256_castps256_ps128(t[k]));
            _mm_storeu_ps(dwT + 4 * (b + 4 + k), _mm256_extractf128_ps(t[k], 1));
        }
    }
    for (; b < nb; b++)
        for (int j = 0; j < 4; j++) dwT[4 * b + j] = _cvtsh_ss(d[j][b]);
}

/* Exact dot products of one x block with four w blocks, folded by hadd into
   [n0 n1 n2 n3 | n0 n1 n2 n3] (each lane a partial sum of 16 products). */
INLINE __m256i dot4(__m256i x, const __m256i aw[4], const int8_t* const w[4], int64_t off) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i p[4];
    for (int j = 0; j < 4; j++) {
        __m256i sx = _mm256_sign_epi8(x, _mm256_loadu_si256((const __m256i*)(w[j] + off)));
        p[j] = _mm256_madd_epi16(_mm256_maddubs_epi16(aw[j], sx), ones);
    }
    return _mm256_hadd_epi32(_mm256_hadd_epi32(p[0], p[1]), _mm256_hadd_epi32(p[2], p[3]));
}

/* out[i, j] = sum_b dx[i, b] * dwT[b, j] * (xq[i, b, :] . w[j][b, :]) for i < MR (a
   compile-time constant after inlining), j < 4.  xq rows are K = nb * 32 bytes apart. */
INLINE void tile(int MR, const int8_t* xq, const float* dx, int nb, const int8_t* const w[4],
                 const float* dwT, float* out /* [MR, 4] */) {
    __m256 acc[Q8_MR];
    for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
    int64_t K = (int64_t)nb * CW_QK;
    for (int b = 0; b < nb; b++) {
        int64_t off = (int64_t)b * CW_QK;
        __m256i aw[4];
        if (b % 2 == 0) /* the next 4 rows (next in memory when w rows are adjacent) */
            for (int j = 0; j < 4; j++) _mm_prefetch((const char*)(w[j] + 4 * K + off), _MM_HINT_T0);
        for (int j = 0; j < 4; j++)
            aw[j] = _mm256_abs_epi8(_mm256_loadu_si256((const __m256i*)(w[j] + off)));
        __m256 dw = _mm256_broadcast_ps((const __m128*)(dwT + 4 * b));
        for (int i = 0; i < MR; i++) {
            __m256i x = _mm256_loadu_si256((const __m256i*)(xq + i * K + off));
            __m256 sc = _mm256_mul_ps(dw, _mm256_broadcast_ss(dx + (int64_t)i * nb + b));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot4(x, aw, w, off)), sc, acc[i]);
        }
    }
    for (int i = 0; i < MR; i++)
        _mm_storeu_ps(out + 4 * i, _mm_add_ps(_mm256_castps256_ps128(acc[i]),
                                              _mm256_extractf128_ps(acc[i], 1)));
}

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

/* dwT[b, j] = fp32(d[j][b]) for the 16 rows of a group. */
static void build_dwT16(const uint16_t* const d[Q8_NR], int nb, float* dwT) {
    int b = 0;
    for (; b + 8 <= nb; b += 8)
        for (int h = 0; h < 16; h += 8) {
            __m256i r[8];
            for (int j = 0; j < 8; j++)
                r[j] = _mm256_castps_si256(
                    _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(d[h + j] + b))));
            transpose8(r);
            for (int k = 0; k < 8; k++) _mm256_storeu_si256((__m256i*)(dwT + 16 * (b + k) + h), r[k]);
        }
    for (; b < nb; b++)
        for (int j = 0; j < 16; j++) dwT[16 * b + j] = _cvtsh_ss(d[j][b]);
}

/* Repack the 16 rows of a group for the prefill tile, per half h of 8 rows:
   wp[h, 0, b, k, j, 0:4] = |w[8h + j][32 b + 4 k : +4]| (bytes, read as unsigned) and
   wp[h, 1, b, k, j, 0:4] = the same words as stored (the signs). */
static void pack_group(const int8_t* const w[Q8_NR], int nb, int8_t* wp) {
    int64_t half = (int64_t)nb * 256;
    for (int h = 0; h < 2; h++)
        for (int b = 0; b < nb; b++) {
            __m256i r[8];
            for (int j = 0; j < 8; j++)
                r[j] = _mm256_loadu_si256((const __m256i*)(w[8 * h + j] + (int64_t)b * CW_QK));
            transpose8(r);
            int8_t* pa = wp + 2 * h * half + b * 256;
            for (int k = 0; k < 8; k++) {
                _mm256_store_si256((__m256i*)(pa + 32 * k), _mm256_abs_epi8(r[k]));
                _mm256_store_si256((__m256i*)(pa + half + 32 * k), r[k]);
            }
        }
}

/* Packed tile: out[i, j] = sum_b dx[i, b] * dwT[b, j] * (xq[i, b, :] . w_j[b, :]) for
   i < MR, the 8 rows j of one half.  4 bytes of x broadcast to all lanes meet 4 bytes of
   each of the 8 rows: sign moved onto x, maddubs, madd -> 8 int32 (one per row). */
INLINE void ptile(int MR, const int8_t* xq, const float* dx, int nb, const int8_t* wa,
                  const int8_t* ws, const float* dwT, float* out /* [MR, 8] */) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[Q8_MR];
    for (int i = 0; i < MR; i++) acc[i] = _mm256_setzero_ps();
    int64_t K = (int64_t)nb * CW_QK;
    for (int b = 0; b < nb; b++) {
        __m256i s[Q8_MR];
        for (int i = 0; i < MR; i++) s[i] = _mm256_setzero_si256();
#pragma GCC unroll 2
        for (int k = 0; k < 8; k++) {
            __m256i aw = _mm256_load_si256((const __m256i*)(wa + 256 * b + 32 * k));
            __m256i sw = _mm256_load_si256((const __m256i*)(ws + 256 * b + 32 * k));
            for (int i = 0; i < MR; i++) {
                int32_t v;
                memcpy(&v, xq + i * K + b * CW_QK + 4 * k, 4);
                __m256i sx = _mm256_sign_epi8(_mm256_set1_epi32(v), sw);
                s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones));
            }
        }
        __m256 dw = _mm256_loadu_ps(dwT + 16 * b);
        for (int i = 0; i < MR; i++) {
            __m256 sc = _mm256_mul_ps(dw, _mm256_broadcast_ss(dx + (int64_t)i * nb + b));
            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[i]), sc, acc[i]);
        }
    }
    for (int i = 0; i < MR; i++) _mm256_storeu_ps(out + 8 * i, acc[i]);
}

/* y[i, n0 + j] = out[i, j] (+ bias) for i < mr, j < nn; out rows are `ld` apart. */
static void store_tile(const float* out, int ld, int mr, int nn, const float* bias, int n0,
                       float* y, int64_t N) {
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nn; j++)
            y[i * N + n0 + j] = out[ld * i + j] + (bias ? bias[n0 + j] : 0.0f);
}

/* One group of 16 weight rows (nn valid; missing rows repeat the last valid one and their
   results are dropped) against `rows` quantized x rows, repacked, 8 rows at a time. */
static void group_packed(const q8_scratch* s, int rows, int nb, const int8_t* const w[Q8_NR],
                         const uint16_t* const d[Q8_NR], float* dwT, int8_t* wp,
                         const float* bias, int n0, int nn, float* y, int64_t N) {
    float out[Q8_MR * 8];
    int64_t K = (int64_t)nb * CW_QK, half = (int64_t)nb * 256;
    build_dwT16(d, nb, dwT);
    pack_group(w, nb, wp);
    for (int h = 0; h * 8 < nn; h++) {
        const int8_t* wa = wp + 2 * h * half;
        int nh = nn - 8 * h < 8 ? nn - 8 * h : 8;
        for (int i0 = 0; i0 < rows; i0 += Q8_MR) {
            int mr = rows - i0 < Q8_MR ? rows - i0 : Q8_MR;
            const int8_t* xi = s->xq + i0 * K;
            const float* di = s->dx + (int64_t)i0 * nb;
            const float* dh = dwT + 8 * h;
            switch (mr) {
            case 4: ptile(4, xi, di, nb, wa, wa + half, dh, out); break;
            case 3: ptile(3, xi, di, nb, wa, wa + half, dh, out); break;
            case 2: ptile(2, xi, di, nb, wa, wa + half, dh, out); break;
            default: ptile(1, xi, di, nb, wa, wa + half, dh, out); break;
            }
            store_tile(out, 8, mr, nh, bias, n0 + 8 * h, y + i0 * N, N);
        }
    }
}

/* The same group streamed as stored, 4 weight rows at a time (rows < Q8_MR x rows). */
static void group_stream(const q8_scratch* s, int rows, int nb, const int8_t* const w[Q8_NR],
                         const uint16_t* const d[Q8_NR], float* dwT, const float* bias, int n0,
                         int nn, float* y, int64_t N) {
    float out[Q8_MR * 4];
    for (int h = 0; h < nn; h += 4) {
        build_dwT(d + h, nb, dwT);
        int nh = nn - h < 4 ? nn - h : 4;
        switch (rows) {
        case 3: tile(3, s->xq, s->dx, nb, w + h, dwT, out); break;
        case 2: tile(2, s->xq, s->dx, nb, w + h, dwT, out); break;
        default: tile(1, s->xq, s->dx, nb, w + h, dwT, out); break;
        }
        store_tile(out, 4, rows, nh, bias, n0 + h, y, N);
    }
}

int cw_matmul_q8_avx2(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias,
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
            /* 1. quantize this chunk's rows of x: xq[rows, K], dx[rows, nb] */
            cw_split(rows, T, t, 1, &lo, &hi);
            for (int64_t i = lo; i < hi; i++)
                for (int b = 0; b < nb; b++)
                    s.dx[i * nb + b] = quant_block(x + (m0 + i) * (int64_t)K + b * CW_QK,
                                                   s.xq + i * K + b * CW_QK);
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
