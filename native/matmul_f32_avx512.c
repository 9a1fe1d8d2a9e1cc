/* matmul_f32, AVX-512 variant: y[M, N] = x[M, K] @ w[N, K]^T + bias[N].
 *
 * Every path splits N across the threads: each owns a contiguous range of outputs
 * (cw_split, multiples of 32: the partition every variant uses), so w is read by one
 * thread only and no output is shared.  Three paths, chosen by shape:
 *
 * M == 1 (decode): a matrix-vector product, memory-bound.  Each thread streams its rows
 * of w once, 4 rows at a time with two zmm accumulators each; x stays in L1.
 *
 * M <= 4, or M <= 128 with K >= 256 (streamed dot-product GEMM): both x and w are contiguous along K,
 * so a register tile of 4 rows of x x 6 rows of w keeps 24 zmm dot-product accumulators
 * (10 loads per 24 FMAs, no packing), reduced horizontally at the end of K.  The rows of
 * w are taken in blocks of DOT_L2 bytes (half of L2) and every group of 4 rows of x
 * passes over a block while it is cached.  No scratch.
 *
 * Otherwise the BLIS-style packed GEMM: for short rows (K < 256), where those horizontal
 * sums would dominate, and for M > 128, where its blocking bounds the traffic for x too.  Blocks of NC columns x KC inputs of w are packed
 * transposed into panels [KC][NR = 32] in 64-byte aligned scratch (8x8 transposes); a tile
 * of MR = 12 rows of x is packed into [KC][MR]; a 12 x 32 register tile (24 zmm
 * accumulators) is computed with broadcast-FMA and stored with lane masks: the first K
 * block adds the bias, later K blocks add what the earlier ones stored.  Scratch per
 * thread is at most NC * KC + MR * KC floats, independent of M.
 *
 * The choice between the last two was measured on Zen 4 (2 threads): within 2% of each
 * other for M >= 512, the dot-product path 1.05-1.3x faster for M <= 128 and K >= 256 (it
 * packs nothing per call), the packed GEMM up to 1.6x faster for K = 64 and M > 4.
 */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include <immintrin.h>
#include <omp.h>
#include "cw_internal.h"

#define NALIGN 32 /* thread ranges of N are multiples of this (same in every variant) */
#define MR 12
#define NR 32
#define KC 256
#define NC 512
/* The streamed dot-product path takes M <= DOT_ANY_K, or M <= DOT_MAX_M with K >= DOT_MIN_K. */
#define DOT_ANY_K 4
#define DOT_MIN_K 256
#define DOT_MAX_M 128
#define DOT_MR 4  /* rows of x per dot_gemm tile */
#define DOT_L2 (512 << 10) /* bytes of w per dot_gemm column block */
#define DOT_NR 6 /* rows of w per dot_gemm tile (4 x 6 zmm accumulators) */
#define INLINE static inline __attribute__((always_inline))

static inline int imin(int a, int b) { return a < b ? a : b; }

/* y[n] = bias[n] or 0 for every row: the K == 0 product. */
static void fill_bias(const float* bias, float* y, int M, int N) {
    for (int m = 0; m < M; m++) {
        if (bias) memcpy(y + (size_t)m * N, bias, (size_t)N * sizeof(float));
        else memset(y + (size_t)m * N, 0, (size_t)N * sizeof(float));
    }
}

/* ---- packing ------------------------------------------------------------------- */
/* dst[c][r] = src[r][c] for an 8 x 8 block; rows of src are lds apart, of dst ldd. */
INLINE void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
    __m256 r0 = _mm256_loadu_ps(src + 0 * lds), r1 = _mm256_loadu_ps(src + 1 * lds);
    __m256 r2 = _mm256_loadu_ps(src + 2 * lds), r3 = _mm256_loadu_ps(src + 3 * lds);
    __m256 r4 = _mm256_loadu_ps(src + 4 * lds), r5 = _mm256_loadu_ps(src + 5 * lds);
    __m256 r6 = _mm256_loadu_ps(src + 6 * lds), r7 = _mm256_loadu_ps(src + 7 * lds);
    __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
    __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
    __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
    __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
    __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(dst + 0 * ldd, _mm256_permute2f128_ps(s0, s4, 0x20));
    _mm256_store_ps(dst + 1 * ldd, _mm256_permute2f128_ps(s1, s5, 0x20));
    _mm256_store_ps(dst + 2 * ldd, _mm256_permute2f128_ps(s2, s6, 0x20));
    _mm256_store_ps(dst + 3 * ldd, _mm256_permute2f128_ps(s3, s7, 0x20));
    _mm256_store_ps(dst + 4 * ldd, _mm256_permute2f128_ps(s0, s4, 0x31));
    _mm256_store_ps(dst + 5 * ldd, _mm256_permute2f128_ps(s1, s5, 0x31));
    _mm256_store_ps(dst + 6 * ldd, _mm256_permute2f128_ps(s2, s6, 0x31));
    _mm256_store_ps(dst + 7 * ldd, _mm256_permute2f128_ps(s3, s7, 0x31));
}

/* One panel: dst[k][j] = w[j][k] for j < nr (rows K apart), 0 for nr <= j < NR.
   w points at w[n][k0]; dst is [kc][NR], 64-byte aligned. */
static void pack_b_panel(const float* w, int64_t K, int nr, int kc, float* dst) {
    int k = 0;
    if (nr == NR) {
        for (; k + 8 <= kc; k += 8)
            for (int j = 0; j < NR; j += 8) transpose8x8(w + j * K + k, K, dst + k * NR + j, NR);
    }
    for (; k < kc; k++) {
        int j = 0;
        for (; j < nr; j++) dst[k * NR + j] = w[j * K + k];
        for (; j < NR; j++) dst[k * NR + j] = 0.0f;
    }
}

/* w[n0 : n0 + nc, k0 : k0 + kc] -> panels [ceil(nc / NR)][kc][NR]. */
static void pack_b(const float* w, int64_t K, int n0, int nc, int k0, int kc, float* dst) {
    for (int p = 0; p * NR < nc; p++)
        pack_b_panel(w + (int64_t)(n0 + p * NR) * K + k0, K, imin(NR, nc - p * NR), kc,
                     dst + (int64_t)p * kc * NR);
}

/* x[0 : mr, 0 : kc] (rows K apart) -> dst[kc][MR]; rows past mr are left unread. */
static void pack_a(const float* x, int64_t K, int mr, int kc, float* dst) {
    for (int r = 0; r < mr; r++)
        for (int k = 0; k < kc; k++) dst[k * MR + r] = x[r * K + k];
}

/* ---- microkernel ------------------------------------------------------------------- */
/* c = a[kc][MR] (rows < mr) @ b[kc][NR]; then y[r][0:nr] = c + (first ? bias : y).
   mr is a constant in every inlined copy, so the accumulators live in registers. */
INLINE void kernel(int mr, int kc, const float* a, const float* b, float* y, int64_t ldy,
                   int nr, const float* bias, int first) {
    __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++) c0[r] = c1[r] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 16
        for (int r = 0; r < mr; r++) {
            __m512 av = _mm512_set1_ps(a[r]);
            c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
            c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
        }
        a += MR;
        b += NR;
    }
    __mmask16 m0 = nr >= 16 ? 0xFFFF : (__mmask16)((1u << nr) - 1);
    __mmask16 m1 = nr >= 32 ? 0xFFFF : nr <= 16 ? 0 : (__mmask16)((1u << (nr - 16)) - 1);
    __m512 add0 = _mm512_setzero_ps(), add1 = _mm512_setzero_ps();
    if (first && bias) {
        add0 = _mm512_maskz_loadu_ps(m0, bias);
        add1 = _mm512_maskz_loadu_ps(m1, bias + 16);
    }
#pragma GCC unroll 16
    for (int r = 0; r < mr; r++) {
        float* yr = y + r * ldy;
        if (!first) {
            add0 = _mm512_maskz_loadu_ps(m0, yr);
            add1 = _mm512_maskz_loadu_ps(m1, yr + 16);
        }
        _mm512_mask_storeu_ps(yr, m0, _mm512_add_ps(c0[r], add0));
        _mm512_mask_storeu_ps(yr + 16, m1, _mm512_add_ps(c1[r], add1));
    }
}

static void kernel_any(int mr, int kc, const float* a, const float* b, float* y, int64_t ldy,
                       int nr, const float* bias, int first) {
    switch (mr) {
#define CASE(R) case R: kernel(R, kc, a, b, y, ldy, nr, bias, first); break;
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
        CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
#undef CASE
    }
}

/* ---- prefill: one thread's columns [n_lo, n_hi) ------------------------------------- */
static void gemm_range(const float* x, const float* w, const float* bias, float* y, int M,
                       int N, int K, int n_lo, int n_hi, float* bpack, float* apack) {
    for (int n0 = n_lo; n0 < n_hi; n0 += NC) {
        int nc = imin(NC, n_hi - n0);
        for (int k0 = 0; k0 < K; k0 += KC) {
            int kc = imin(KC, K - k0);
            pack_b(w, K, n0, nc, k0, kc, bpack);
            for (int m0 = 0; m0 < M; m0 += MR) {
                int mr = imin(MR, M - m0);
                pack_a(x + (int64_t)m0 * K + k0, K, mr, kc, apack);
                for (int p = 0; p * NR < nc; p++) {
                    int n = n0 + p * NR;
                    kernel_any(mr, kc, apack, bpack + (int64_t)p * kc * NR, y + (int64_t)m0 * N + n,
                               N, imin(NR, nc - p * NR), bias ? bias + n : NULL, k0 == 0);
                }
            }
        }
    }
}

/* ---- decode: rows [n_lo, n_hi) of w dotted with the vector x[K] ------------------------ */
INLINE __m512 dot_step(__m512 acc, const float* w, __m512 xv) {
    return _mm512_fmadd_ps(_mm512_loadu_ps(w), xv, acc);
}

static void gemv_range(const float* x, const float* w, const float* bias, float* y, int K,
                       int n_lo, int n_hi) {
    int n = n_lo;
    __mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);
    int k16 = K & ~15, k32 = K & ~31;
    for (; n + 4 <= n_hi; n += 4) {
        const float* w0 = w + (int64_t)n * K;
        const float *w1 = w0 + K, *w2 = w1 + K, *w3 = w2 + K;
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        __m512 b0 = a0, b1 = a0, b2 = a0, b3 = a0;
        int k = 0;
        for (; k < k32; k += 32) {
            __m512 xv = _mm512_loadu_ps(x + k), xu = _mm512_loadu_ps(x + k + 16);
            a0 = dot_step(a0, w0 + k, xv); b0 = dot_step(b0, w0 + k + 16, xu);
            a1 = dot_step(a1, w1 + k, xv); b1 = dot_step(b1, w1 + k + 16, xu);
            a2 = dot_step(a2, w2 + k, xv); b2 = dot_step(b2, w2 + k + 16, xu);
            a3 = dot_step(a3, w3 + k, xv); b3 = dot_step(b3, w3 + k + 16, xu);
        }
        for (; k < k16; k += 16) {
            __m512 xv = _mm512_loadu_ps(x + k);
            a0 = dot_step(a0, w0 + k, xv); a1 = dot_step(a1, w1 + k, xv);
            a2 = dot_step(a2, w2 + k, xv); a3 = dot_step(a3, w3 + k, xv);
        }
        if (tail) {
            __m512 xv = _mm512_maskz_loadu_ps(tail, x + k);
            b0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + k), xv, b0);
            b1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w1 + k), xv, b1);
            b2 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w2 + k), xv, b2);
            b3 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w3 + k), xv, b3);
        }
        y[n + 0] = _mm512_reduce_add_ps(_mm512_add_ps(a0, b0)) + (bias ? bias[n + 0] : 0.0f);
        y[n + 1] = _mm512_reduce_add_ps(_mm512_add_ps(a1, b1)) + (bias ? bias[n + 1] : 0.0f);
        y[n + 2] = _mm512_reduce_add_ps(_mm512_add_ps(a2, b2)) + (bias ? bias[n + 2] : 0.0f);
        y[n + 3] = _mm512_reduce_add_ps(_mm512_add_ps(a3, b3)) + (bias ? bias[n + 3] : 0.0f);
    }
    for (; n < n_hi; n++) {
        const float* w0 = w + (int64_t)n * K;
        __m512 a0 = _mm512_setzero_ps();
        int k = 0;
        for (; k < k16; k += 16) a0 = dot_step(a0, w0 + k, _mm512_loadu_ps(x + k));
        if (tail)
            a0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, w0 + k),
                                 _mm512_maskz_loadu_ps(tail, x + k), a0);
        y[n] = _mm512_reduce_add_ps(a0) + (bias ? bias[n] : 0.0f);
    }
}

/* ---- M > 1, streamed: dot products with several rows of x sharing each load of w ---- */
/* y[r][n + j] for r < mx rows of x and j < nw rows of w starting at row n; x rows and w
   rows are K apart, y rows N apart.  mx and nw are constants in every inlined copy. */
INLINE void dot_tile(int mx, int nw, const float* x, const float* w, const float* bias,
                      float* y, int64_t N, int K, int n) {
    __m512 acc[DOT_MR][DOT_NR], wv[DOT_NR];
    const float* wr = w + (int64_t)n * K;
#pragma GCC unroll 16
    for (int r = 0; r < mx; r++)
#pragma GCC unroll 8
        for (int j = 0; j < nw; j++) acc[r][j] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
#pragma GCC unroll 8
        for (int j = 0; j < nw; j++) wv[j] = _mm512_loadu_ps(wr + j * K + k);
#pragma GCC unroll 16
        for (int r = 0; r < mx; r++) {
            __m512 xv = _mm512_loadu_ps(x + r * K + k);
#pragma GCC unroll 8
            for (int j = 0; j < nw; j++) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
        }
    }
    if (k < K) { /* masked tail: lanes past K load as zero */
        __mmask16 mask = (__mmask16)((1u << (K - k)) - 1);
#pragma GCC unroll 8
        for (int j = 0; j < nw; j++) wv[j] = _mm512_maskz_loadu_ps(mask, wr + j * K + k);
#pragma GCC unroll 16
        for (int r = 0; r < mx; r++) {
            __m512 xv = _mm512_maskz_loadu_ps(mask, x + r * K + k);
#pragma GCC unroll 8
            for (int j = 0; j < nw; j++) acc[r][j] = _mm512_fmadd_ps(wv[j], xv, acc[r][j]);
        }
    }
#pragma GCC unroll 16
    for (int r = 0; r < mx; r++)
#pragma GCC unroll 8
        for (int j = 0; j < nw; j++)
            y[r * N + n + j] = _mm512_reduce_add_ps(acc[r][j]) + (bias ? bias[n + j] : 0.0f);
}

/* Rows [0, mx) of y, columns [n_lo, n_hi): tiles of DOT_NR rows of w, then single rows. */
INLINE void dot_rows(int mx, const float* x, const float* w, const float* bias, float* y,
                            int N, int K, int n_lo, int n_hi) {
    int n = n_lo;
    for (; n + DOT_NR <= n_hi; n += DOT_NR) dot_tile(mx, DOT_NR, x, w, bias, y, N, K, n);
    for (; n < n_hi; n++) dot_tile(mx, 1, x, w, bias, y, N, K, n);
}

/* Columns [n_lo, n_hi) in blocks of rows of w that fit in half of L2 (DOT_L2 bytes); every
   group of DOT_MR rows of x passes over a block while it is cached. */
static void dot_gemm(const float* x, const float* w, const float* bias, float* y, int M, int N,
                       int K, int n_lo, int n_hi) {
    int nb = (int)(DOT_L2 / ((int64_t)K * sizeof(float)));
    nb = nb < DOT_NR ? DOT_NR : nb - nb % DOT_NR;
    for (int n0 = n_lo; n0 < n_hi; n0 += nb) {
        int n1 = imin(n_hi, n0 + nb);
        for (int m = 0; m < M; m += DOT_MR) {
            const float* xm = x + (int64_t)m * K;
            float* ym = y + (int64_t)m * N;
            switch (imin(DOT_MR, M - m)) {
#define CASE(R) case R: dot_rows(R, xm, w, bias, ym, N, K, n0, n1); break;
                CASE(1) CASE(2) CASE(3) CASE(4)
#undef CASE
            }
        }
    }
}

/* ---- entry --------------------------------------------------------------------------- */
int cw_matmul_f32_avx512(const float* x, const float* w, const float* bias, float* y, int M, int N, int K) {
    if (K == 0) {
        fill_bias(bias, y, M, N);
        return CW_OK;
    }
    int nt = cw_nthreads(), rc = CW_OK;
    int dot = M <= DOT_ANY_K || (K >= DOT_MIN_K && M <= DOT_MAX_M);
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        cw_split(N, omp_get_num_threads(), omp_get_thread_num(), NALIGN, &lo, &hi);
        if (hi > lo && M == 1) {
            gemv_range(x, w, bias, y, K, (int)lo, (int)hi);
        } else if (hi > lo && dot) {
            dot_gemm(x, w, bias, y, M, N, K, (int)lo, (int)hi);
        } else if (hi > lo) {
            int ncols = imin(NC, (int)(hi - lo)), kc = imin(KC, K);
            int npanels = (ncols + NR - 1) / NR;
            float* bpack = cw_alloc((size_t)npanels * NR * kc * sizeof(float));
            float* apack = cw_alloc((size_t)MR * kc * sizeof(float));
            if (bpack && apack) {
                gemm_range(x, w, bias, y, M, N, K, (int)lo, (int)hi, bpack, apack);
            } else {
#pragma omp atomic write
                rc = CW_ENOMEM;
            }
            cw_free(bpack);
            cw_free(apack);
        }
    }
    return rc;
}
