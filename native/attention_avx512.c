/* Attention kernels, AVX-512 (16 floats per vector).
 *
 * Same algorithm and the same work partition as attention_ref.c (see there): blocked
 * online softmax (the flash-attention recurrence: running max m, denominator l and an
 * unnormalised accumulator rescaled by exp(m_old - m_new)), decode items (kv head, key
 * chunk) merged at the end (flash-decoding), window items (window, head).
 *
 * Prefill block layout.  A work item holds nq <= BQ = 64 queries of one head and keeps
 * everything transposed, queries along the vector lanes:
 *   qt[D][BQ]   scaled queries, column i = query i (zero columns past nq)
 *   st[BK][BQ]  scores of BK keys x BQ queries, then their probabilities
 *   ot[D][BQ]   the unnormalised output, transposed
 *   m, l[BQ]    running max and denominator per query (one vector op per 16 queries)
 * so both products are register-tiled rank-1 updates reading K and V rows in place
 * with scalar broadcasts (no packing of K or V):
 *   st[j][:] = sum_d K[j][d] * qt[d][:]           (tiles of 6 keys x 64 queries)
 *   ot[d][:] = ot[d][:] * alpha + sum_j V[j][d] * st[j][:]   (tiles of 6 dims x 64)
 * and the softmax max / sum run down the columns, without horizontal reductions.
 *
 * Decode: one query per head, so the G heads of a kv head are processed together.  Four
 * K rows at a time sit in registers while every head of the group takes its dot products
 * with them (reduced four keys at a time by hsum4); each V row is loaded once into
 * registers for up to four heads.  D is walked in chunks of 64 floats with masked loads.
 * (Software prefetching of the next rows was tried and measured slower than leaving the
 * streams to the hardware prefetcher.)
 *
 * exp: exp(x) = 2^n * e^r with n = round(x / ln 2), r = x - n ln 2 (two-constant
 * Cody-Waite split), e^r by a degree-6 polynomial fitted for relative error on
 * |r| <= ln2 / 2 (about 2e-9, so about 1 ulp after float rounding); 2^n is applied with
 * vscalefps, which also produces subnormals and 0 for very negative x (and -inf).
 */
#pragma GCC target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512dq,avx512vnni")
#include <immintrin.h>
#include <omp.h>
#include "cw_internal.h"

#define W 16           /* floats per vector */
#define BQ 64          /* queries per prefill item (the partition every ISA shares) */
#define NVQ (BQ / W)   /* vectors per query block */
#define BK 64          /* keys per block */
#define RT 6           /* rows per register tile: 6 x 4 accumulators */
#define AI static inline __attribute__((always_inline))

/* ---- exp ------------------------------------------------------------------------ */
AI __m512 exp16(__m512 x) {
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* e^-104 rounds to 0 in float */
    x = _mm512_min_ps(x, _mm512_set1_ps(88.0f));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(0.0013836846f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.008374816f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.041668225f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.1666642f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.4999999f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

static int decode_splits(int Hkv, int64_t T, int nt) { /* as in attention_ref.c */
    int64_t want = (8 * (int64_t)nt + Hkv - 1) / Hkv, most = (T + 127) / 128;
    int64_t s = want < most ? want : most;
    return s < 1 ? 1 : (int)s;
}

typedef struct {
    const float *q, *k, *v;
    float* out;
    int Tq, Tk, Hq, Hkv, D;
    int64_t q_ts, q_hs, kv_ts, kv_hs, o_ts, o_hs;
    float scale;
    int causal_offset;
} attn_args;

/* ---- prefill register tiles ---------------------------------------------------- */
/* st[r][0:NV*W] = sum_d k[r*kv_ts + d] * qt[d][0:NV*W] for r < R. */
AI void kq_tile(const float* k, int64_t kv_ts, const float* qt, int D, float* st, const int R,
                const int NV) {
    __m512 acc[RT][NVQ];
    const float* kr[RT];
    for (int r = 0; r < R; r++) {
        kr[r] = k + r * kv_ts;
        for (int c = 0; c < NV; c++) acc[r][c] = _mm512_setzero_ps();
    }
    for (int d = 0; d < D; d++) {
        __m512 b[NVQ];
        for (int c = 0; c < NV; c++) b[c] = _mm512_load_ps(qt + (size_t)d * BQ + c * W);
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(kr[r][d]);
            for (int c = 0; c < NV; c++) acc[r][c] = _mm512_fmadd_ps(a, b[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) _mm512_store_ps(st + r * BQ + c * W, acc[r][c]);
}

/* ot[r][:] = ot[r][:] * alpha + sum_j v[j*kv_ts + r] * pt[j][:] for r < R, j < nk. */
AI void pv_tile(const float* v, int64_t kv_ts, const float* pt, int nk, float* ot,
                const float* alpha, const int R, const int NV) {
    __m512 acc[RT][NVQ];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++)
            acc[r][c] = _mm512_mul_ps(_mm512_load_ps(ot + r * BQ + c * W),
                                      _mm512_load_ps(alpha + c * W));
    for (int j = 0; j < nk; j++) {
        __m512 b[NVQ];
        const float* vr = v + j * kv_ts;
        for (int c = 0; c < NV; c++) b[c] = _mm512_load_ps(pt + (size_t)j * BQ + c * W);
        for (int r = 0; r < R; r++) {
            __m512 a = _mm512_set1_ps(vr[r]);
            for (int c = 0; c < NV; c++) acc[r][c] = _mm512_fmadd_ps(a, b[c], acc[r][c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < NV; c++) _mm512_store_ps(ot + r * BQ + c * W, acc[r][c]);
}

/* Instantiate a tile for a run-time (R, NV) with compile-time loop bounds. */
#define TILE_NV(call, R)                 \
    switch (nv) {                        \
    case 1: call(R, 1); break;           \
    case 2: call(R, 2); break;           \
    case 3: call(R, 3); break;           \
    default: call(R, 4); break;          \
    }
#define TILE_R(call, rows)               \
    switch (rows) {                      \
    case 1: TILE_NV(call, 1) break;      \
    case 2: TILE_NV(call, 2) break;      \
    case 3: TILE_NV(call, 3) break;      \
    case 4: TILE_NV(call, 4) break;      \
    case 5: TILE_NV(call, 5) break;      \
    default: TILE_NV(call, 6) break;     \
    }

/* st[0:nk][0:nv*W] = K[0:nk] . qt */
static void kq_block(const float* k, int64_t kv_ts, const float* qt, int D, float* st, int nk,
                     int nv) {
    for (int j = 0; j < nk; j += RT) {
        int rows = nk - j < RT ? nk - j : RT;
        const float* kj = k + j * kv_ts;
        float* sj = st + j * BQ;
#define KQ(R, NV) kq_tile(kj, kv_ts, qt, D, sj, R, NV)
        TILE_R(KQ, rows)
#undef KQ
    }
}

/* ot = ot * alpha + P^T V over nk keys, tiles of RT output dims. */
static void pv_block(const float* v, int64_t kv_ts, const float* pt, int nk, float* ot,
                     const float* alpha, int D, int nv) {
    for (int d = 0; d < D; d += RT) {
        int rows = D - d < RT ? D - d : RT;
        const float* vd = v + d;
        float* od = ot + (size_t)d * BQ;
#define PV(R, NV) pv_tile(vd, kv_ts, pt, nk, od, alpha, R, NV)
        TILE_R(PV, rows)
#undef PV
    }
}

/* Causal mask of a key block: key row j (global key kb0 + j) is visible to query column i
   iff i >= first + j where first = kb0 - off - t0; earlier columns get -inf. */
static void mask_block(float* st, int nk, int nv, int64_t first) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    for (int j = 0; j < nk; j++) {
        int64_t c0 = first + j; /* first visible column of this key */
        if (c0 <= 0) continue;
        int lim = c0 < BQ ? (int)c0 : BQ;
        for (int c = 0; c < nv && c * W < lim; c++) {
            __mmask16 hide = _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32(lim - c * W));
            float* p = st + (size_t)j * BQ + c * W;
            _mm512_store_ps(p, _mm512_mask_blend_ps(hide, _mm512_load_ps(p), ninf));
        }
    }
}

/* Online-softmax step down the columns of st[0:nk][0:nv*W]: scores become
   probabilities exp(s - m_new), l and m are updated, alpha = exp(m_old - m_new). */
static void softmax_block(float* st, int nk, int nv, float* m, float* l, float* alpha) {
    for (int c = 0; c < nv; c++) {
        __m512 mx = _mm512_set1_ps(-INFINITY);
        for (int j = 0; j < nk; j++) mx = _mm512_max_ps(mx, _mm512_load_ps(st + j * BQ + c * W));
        __m512 m_old = _mm512_load_ps(m + c * W), m_new = _mm512_max_ps(m_old, mx);
        /* a query with no visible key yet keeps m = -inf; subtract 0 instead (p = 0) */
        __mmask16 none = _mm512_cmpeq_ps_mask(m_new, _mm512_set1_ps(-INFINITY));
        __m512 m_use = _mm512_mask_blend_ps(none, m_new, _mm512_setzero_ps());
        __m512 sum = _mm512_setzero_ps();
        for (int j = 0; j < nk; j++) {
            float* p = st + j * BQ + c * W;
            __m512 e = exp16(_mm512_sub_ps(_mm512_load_ps(p), m_use));
            _mm512_store_ps(p, e);
            sum = _mm512_add_ps(sum, e);
        }
        __m512 a = exp16(_mm512_sub_ps(m_old, m_use));
        _mm512_store_ps(alpha + c * W, a);
        _mm512_store_ps(l + c * W, _mm512_fmadd_ps(_mm512_load_ps(l + c * W), a, sum));
        _mm512_store_ps(m + c * W, m_new);
    }
}

static size_t prefill_scratch_floats(int D) { return (size_t)2 * D * BQ + BK * BQ + 3 * BQ; }

/* nq <= BQ query rows of one head against the keys of one kv head (see attention_ref.c);
   row i is query t0 + i for the causal mask (off >= 0: sees keys j <= off + t0 + i). */
static void prefill_block(const float* q, int64_t q_ts, float* out, int64_t o_ts, int nq, int t0,
                          const float* k, const float* v, int64_t kv_ts, int Tk, int D,
                          float scale, int off, float* scratch) {
    float *qt = scratch, *ot = qt + (size_t)D * BQ, *st = ot + (size_t)D * BQ;
    float *m = st + BK * BQ, *l = m + BQ, *alpha = l + BQ;
    int nv = (nq + W - 1) / W, ncol = nv * W;
    for (int d = 0; d < D; d++) { /* qt = (q * scale)^T, ot = 0 */
        for (int i = 0; i < nq; i++) qt[(size_t)d * BQ + i] = q[i * q_ts + d] * scale;
        for (int i = nq; i < ncol; i++) qt[(size_t)d * BQ + i] = 0.0f;
        memset(ot + (size_t)d * BQ, 0, (size_t)ncol * sizeof(float));
    }
    for (int i = 0; i < ncol; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
    }
    int64_t kend = off >= 0 ? (int64_t)off + t0 + nq : Tk; /* keys any row sees */
    if (kend > Tk) kend = Tk;
    for (int64_t kb0 = 0; kb0 < kend; kb0 += BK) {
        int nk = kend - kb0 < BK ? (int)(kend - kb0) : BK;
        kq_block(k + kb0 * kv_ts, kv_ts, qt, D, st, nk, nv);
        if (off >= 0 && kb0 + nk - 1 > (int64_t)off + t0) mask_block(st, nk, nv, kb0 - off - t0);
        softmax_block(st, nk, nv, m, l, alpha);
        pv_block(v + kb0 * kv_ts, kv_ts, st, nk, ot, alpha, D, nv);
    }
    for (int i = 0; i < nq; i++) l[i] = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
    for (int i = 0; i < nq; i++)
        for (int d = 0; d < D; d++) out[i * o_ts + d] = ot[(size_t)d * BQ + i] * l[i];
}

static int attention_prefill(const attn_args* a) {
    int nt = cw_nthreads(), nqb = (a->Tq + BQ - 1) / BQ, G = a->Hq / a->Hkv, failed = 0;
    int64_t items = (int64_t)nqb * a->Hq;
#pragma omp parallel num_threads(nt)
    {
        float* scratch = cw_alloc(prefill_scratch_floats(a->D) * sizeof(float));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!scratch) continue;
            int qb = nqb - 1 - (int)(it / a->Hq), h = (int)(it % a->Hq), g = h / G;
            int t0 = qb * BQ, nq = a->Tq - t0 < BQ ? a->Tq - t0 : BQ;
            prefill_block(a->q + t0 * a->q_ts + h * a->q_hs, a->q_ts,
                          a->out + t0 * a->o_ts + h * a->o_hs, a->o_ts, nq, t0,
                          a->k + g * a->kv_hs, a->v + g * a->kv_hs, a->kv_ts, a->Tk, a->D,
                          a->scale, a->causal_offset, scratch);
        }
        cw_free(scratch);
    }
    return failed ? CW_ENOMEM : CW_OK;
}

/* ---- decode ------------------------------------------------------------------- */
/* D is walked in chunks of DC = 64 floats (4 vectors, the last ones masked), so the
   register tiles below have fixed shapes for any D. */
#define DC (4 * W)

AI void chunk_masks(int n, __mmask16 mk[4]) { /* n = floats of D left from the chunk start */
    for (int c = 0; c < 4; c++) {
        int r = n - c * W;
        mk[c] = r >= W ? 0xFFFF : r > 0 ? (__mmask16)((1u << r) - 1) : 0;
    }
}

/* [sum a, sum b, sum c, sum d] */
AI __m128 hsum4(__m512 a, __m512 b, __m512 c, __m512 d) {
    __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
    __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
    /* 128-bit lane 0 now holds partial sums of a, lane 1 of b, lane 2 of c, lane 3 of d */
    __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
    x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xB1));
    x = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));
    return _mm512_castps512_ps128(
        _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x));
}

/* s[hh][j] (+)= qd[hh][dc:dc+DC] . K[j][dc:dc+DC] for the G heads, one chunk of D
   (qd[G][dp]: scaled, zero padded to dp, a multiple of DC).  Four keys at a time, held
   in registers while every head of the group uses them. */
static void decode_scores_chunk(const float* qd, int G, int dp, const float* k, int64_t kv_ts,
                                int nk, int D, int dc, float* s) {
    __mmask16 mk[4];
    chunk_masks(D - dc, mk);
    int j = 0;
    for (; j + 4 <= nk; j += 4) {
        __m512 x[4][4];
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) x[r][c] = _mm512_maskz_loadu_ps(mk[c], k + (j + r) * kv_ts + dc + c * W);
        for (int hh = 0; hh < G; hh++) {
            const float* qh = qd + (size_t)hh * dp + dc;
            __m512 acc[4];
            for (int r = 0; r < 4; r++) acc[r] = _mm512_mul_ps(_mm512_load_ps(qh), x[r][0]);
            for (int c = 1; c < 4; c++) {
                __m512 qc = _mm512_load_ps(qh + c * W);
                for (int r = 0; r < 4; r++) acc[r] = _mm512_fmadd_ps(qc, x[r][c], acc[r]);
            }
            __m128 sum = hsum4(acc[0], acc[1], acc[2], acc[3]);
            float* sj = s + (size_t)hh * BK + j;
            _mm_storeu_ps(sj, dc ? _mm_add_ps(_mm_loadu_ps(sj), sum) : sum);
        }
    }
    for (; j < nk; j++) { /* last keys one at a time */
        const float* kj = k + j * kv_ts + dc;
        for (int hh = 0; hh < G; hh++) {
            const float* qh = qd + (size_t)hh * dp + dc;
            __m512 acc = _mm512_setzero_ps();
            for (int c = 0; c < 4; c++)
                acc = _mm512_fmadd_ps(_mm512_load_ps(qh + c * W), _mm512_maskz_loadu_ps(mk[c], kj + c * W), acc);
            s[(size_t)hh * BK + j] = (dc ? s[(size_t)hh * BK + j] : 0.0f) + _mm512_reduce_add_ps(acc);
        }
    }
}

/* Online-softmax step of one head over a row of nk scores s (becomes exp(s - m_new));
   returns alpha = exp(m_old - m_new). */
static float decode_softmax(float* s, int nk, float* m, float* l) {
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int j = 0;
    for (; j + W <= nk; j += W) mx = _mm512_max_ps(mx, _mm512_loadu_ps(s + j));
    float mb = _mm512_reduce_max_ps(mx);
    for (; j < nk; j++) mb = s[j] > mb ? s[j] : mb;
    float m_new = mb > *m ? mb : *m;
    __m512 mv = _mm512_set1_ps(m_new), sum = _mm512_setzero_ps();
    for (j = 0; j + W <= nk; j += W) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + j), mv));
        _mm512_storeu_ps(s + j, e);
        sum = _mm512_add_ps(sum, e);
    }
    if (j < nk) { /* masked tail */
        __mmask16 t = (__mmask16)((1u << (nk - j)) - 1);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, s + j), mv));
        _mm512_mask_storeu_ps(s + j, t, e);
        sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(t, e));
    }
    float alpha = expf(*m - m_new); /* 0 on the first block (m = -inf) */
    *l = *l * alpha + _mm512_reduce_add_ps(sum);
    *m = m_new;
    return alpha;
}

/* o[h][0:DC] = o[h] * alpha[h] + sum_j p[h][j] V[j][0:DC] for HG heads (p rows BK apart,
   o rows D apart): each V row is loaded once for the HG heads. */
AI void decode_pv_heads(const float* p, int nk, const float* v, int64_t kv_ts,
                        const __mmask16 mk[4], const float* alpha, float* o, int D, const int HG) {
    __m512 acc[4][4];
    for (int h = 0; h < HG; h++)
        for (int c = 0; c < 4; c++)
            acc[h][c] = _mm512_mul_ps(_mm512_maskz_loadu_ps(mk[c], o + (size_t)h * D + c * W),
                                      _mm512_set1_ps(alpha[h]));
    for (int j = 0; j < nk; j++) {
        __m512 x[4];
        for (int c = 0; c < 4; c++) x[c] = _mm512_maskz_loadu_ps(mk[c], v + j * kv_ts + c * W);
        for (int h = 0; h < HG; h++) {
            __m512 pj = _mm512_set1_ps(p[h * BK + j]);
            for (int c = 0; c < 4; c++) acc[h][c] = _mm512_fmadd_ps(pj, x[c], acc[h][c]);
        }
    }
    for (int h = 0; h < HG; h++)
        for (int c = 0; c < 4; c++) _mm512_mask_storeu_ps(o + (size_t)h * D + c * W, mk[c], acc[h][c]);
}

/* acc[hh] = acc[hh] * alpha[hh] + P[hh] V for all G heads, by chunks of D and heads in
   groups of 4. */
static void decode_pv(const float* p, int G, int nk, const float* v, int64_t kv_ts, int D,
                      const float* alpha, float* acc) {
    for (int dc = 0; dc < D; dc += DC) {
        __mmask16 mk[4];
        chunk_masks(D - dc, mk);
        for (int h0 = 0; h0 < G; h0 += 4) {
            const float *ph = p + (size_t)h0 * BK, *ah = alpha + h0, *vd = v + dc;
            float* oh = acc + (size_t)h0 * D + dc;
            switch (G - h0 < 4 ? G - h0 : 4) {
            case 1: decode_pv_heads(ph, nk, vd, kv_ts, mk, ah, oh, D, 1); break;
            case 2: decode_pv_heads(ph, nk, vd, kv_ts, mk, ah, oh, D, 2); break;
            case 3: decode_pv_heads(ph, nk, vd, kv_ts, mk, ah, oh, D, 3); break;
            default: decode_pv_heads(ph, nk, vd, kv_ts, mk, ah, oh, D, 4); break;
            }
        }
    }
}

/* Keys [j0, j1) of kv head g for its G query heads -> part = m[G], l[G], acc[G][D].
   Scratch: qd[G][dp], s[G][BK], alpha[G]. */
static void decode_item(const attn_args* a, int g, int64_t j0, int64_t j1, float* part,
                        float* scratch) {
    int G = a->Hq / a->Hkv, D = a->D, dp = (D + DC - 1) / DC * DC;
    float *qd = scratch, *s = qd + (size_t)G * dp, *alpha = s + (size_t)G * BK;
    float *m = part, *l = m + G, *acc = l + G;
    const float* kg = a->k + g * a->kv_hs;
    const float* vg = a->v + g * a->kv_hs;
    for (int hh = 0; hh < G; hh++) {
        const float* qh = a->q + (g * G + hh) * a->q_hs;
        for (int d = 0; d < dp; d++) qd[(size_t)hh * dp + d] = d < D ? qh[d] * a->scale : 0.0f;
        m[hh] = -INFINITY;
        l[hh] = 0.0f;
    }
    memset(acc, 0, (size_t)G * D * sizeof(float));
    for (int64_t jb = j0; jb < j1; jb += BK) {
        int nk = j1 - jb < BK ? (int)(j1 - jb) : BK;
        const float *kb = kg + jb * a->kv_ts, *vb = vg + jb * a->kv_ts;
        for (int dc = 0; dc < D; dc += DC) decode_scores_chunk(qd, G, dp, kb, a->kv_ts, nk, D, dc, s);
        for (int hh = 0; hh < G; hh++) alpha[hh] = decode_softmax(s + (size_t)hh * BK, nk, &m[hh], &l[hh]);
        decode_pv(s, G, nk, vb, a->kv_ts, D, alpha, acc);
    }
}

static void decode_merge(const attn_args* a, const float* parts, int nsplit) {
    int G = a->Hq / a->Hkv, D = a->D;
    size_t psz = (size_t)G * (D + 2);
    for (int h = 0; h < a->Hq; h++) {
        int g = h / G, hh = h % G;
        float* o = a->out + h * a->o_hs;
        float M = -INFINITY, L = 0.0f;
        for (int s = 0; s < nsplit; s++) {
            float ms = parts[((size_t)g * nsplit + s) * psz + hh];
            M = ms > M ? ms : M;
        }
        for (int d = 0; d < D; d++) o[d] = 0.0f;
        if (M == -INFINITY) continue;
        for (int s = 0; s < nsplit; s++) {
            const float* p = parts + ((size_t)g * nsplit + s) * psz;
            float w = expf(p[hh] - M);
            L += w * p[G + hh];
            for (int d = 0; d < D; d++) o[d] += w * p[2 * G + (size_t)hh * D + d];
        }
        float inv = L > 0.0f ? 1.0f / L : 0.0f;
        for (int d = 0; d < D; d++) o[d] *= inv;
    }
}

static int attention_decode(const attn_args* a) {
    int64_t T = a->Tk;
    if (a->causal_offset >= 0 && (int64_t)a->causal_offset + 1 < T) T = a->causal_offset + 1;
    int nt = cw_nthreads(), G = a->Hq / a->Hkv, nsplit = decode_splits(a->Hkv, T, nt), failed = 0;
    int items = a->Hkv * nsplit, dp = (a->D + DC - 1) / DC * DC;
    size_t psz = (size_t)G * (a->D + 2);
    float* parts = cw_alloc((size_t)items * psz * sizeof(float));
    if (!parts) return CW_ENOMEM;
#pragma omp parallel num_threads(nt)
    {
        float* scratch = cw_alloc(((size_t)G * dp + (size_t)G * BK + G) * sizeof(float));
        if (!scratch) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++) {
            if (!scratch) continue;
            int64_t lo, hi;
            cw_split(T, nsplit, it % nsplit, 16, &lo, &hi);
            decode_item(a, it / nsplit, lo, hi, parts + (size_t)it * psz, scratch);
        }
        cw_free(scratch);
    }
    if (!failed) decode_merge(a, parts, nsplit);
    cw_free(parts);
    return failed ? CW_ENOMEM : CW_OK;
}

int cw_attention_avx512(const float* q, const float* k, const float* v, float* out, int Tq, int Tk,
                        int Hq, int Hkv, int D, int64_t q_ts, int64_t q_hs, int64_t kv_ts,
                        int64_t kv_hs, int64_t o_ts, int64_t o_hs, float scale, int causal_offset) {
    attn_args a = {q, k, v, out, Tq, Tk, Hq, Hkv, D, q_ts, q_hs, kv_ts, kv_hs, o_ts, o_hs,
                   scale, causal_offset};
    return Tq == 1 ? attention_decode(&a) : attention_prefill(&a);
}

/* ---- window attention ---------------------------------------------------------- */
static void window_copy(float* grid, float* rows, int W_, int nh, int D, int h, int y0, int x0,
                        int wh, int ww, int to_grid) {
    for (int y = 0; y < wh; y++)
        for (int x = 0; x < ww; x++) {
            float* g = grid + (((int64_t)(y0 + y) * W_ + x0 + x) * nh + h) * D;
            float* r = rows + ((size_t)y * ww + x) * D;
            if (to_grid) memcpy(g, r, (size_t)D * sizeof(float));
            else memcpy(r, g, (size_t)D * sizeof(float));
        }
}

int cw_window_attention_avx512(const float* q, const float* k, const float* v, float* out, int H,
                               int W_, int nh, int D, int ws, float scale) {
    int wsy = ws < H ? ws : H, wsx = ws < W_ ? ws : W_;
    int nwy = (H + wsy - 1) / wsy, nwx = (W_ + wsx - 1) / wsx, nt = cw_nthreads(), failed = 0;
    int64_t items = (int64_t)nwy * nwx * nh;
    size_t nmax = (size_t)wsy * wsx, wsz = (nmax * D + 15) / 16 * 16; /* 64-byte multiples */
#pragma omp parallel num_threads(nt)
    {
        float* buf = cw_alloc((4 * wsz + prefill_scratch_floats(D)) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!buf) continue;
            int h = (int)(it % nh), wi = (int)(it / nh), y0 = wi / nwx * wsy, x0 = wi % nwx * wsx;
            int wh = H - y0 < wsy ? H - y0 : wsy, ww = W_ - x0 < wsx ? W_ - x0 : wsx, n = wh * ww;
            float *qw = buf, *kw = qw + wsz, *vw = kw + wsz, *ow = vw + wsz;
            window_copy((float*)q, qw, W_, nh, D, h, y0, x0, wh, ww, 0);
            window_copy((float*)k, kw, W_, nh, D, h, y0, x0, wh, ww, 0);
            window_copy((float*)v, vw, W_, nh, D, h, y0, x0, wh, ww, 0);
            for (int t0 = 0; t0 < n; t0 += BQ)
                prefill_block(qw + (size_t)t0 * D, D, ow + (size_t)t0 * D, D,
                              n - t0 < BQ ? n - t0 : BQ, t0, kw, vw, D, n, D, scale, -1,
                              ow + wsz);
            window_copy(out, ow, W_, nh, D, h, y0, x0, wh, ww, 1);
        }
        cw_free(buf);
    }
    return failed ? CW_ENOMEM : CW_OK;
}
