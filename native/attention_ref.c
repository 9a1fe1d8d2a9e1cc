/* Attention kernels, scalar reference (plain C, no SIMD, auto-vectorisation off).
 *
 * Every variant computes softmax(q.k * scale) v without ever storing a Tq x Tk score
 * matrix: keys are visited in blocks of BK and each query row keeps a running maximum
 * m, a running denominator l and an unnormalised accumulator acc[D] (the online-softmax
 * recurrence of flash attention).  When a block raises the maximum from m to m', the
 * old l and acc are rescaled by exp(m - m') before the block's terms are added; the
 * result is acc / l at the end (zeros when the row saw no key).
 *
 * Work partition (the SIMD files use exactly the same one, so their speed-up over this
 * file measures SIMD only):
 *   - Tq == 1 (decode): items (kv head g, chunk s of the visible keys); an item serves
 *     the whole group of Hq/Hkv query heads of g, so each K/V row is read once for the
 *     group.  Each item leaves a partial (m, l, acc) per head; a final merge combines
 *     the chunks of a head (flash-decoding).  decode_splits() picks the chunk count.
 *   - Tq > 1 (prefill): items (query head h, block of BQ queries), heaviest first;
 *     causal blocks stop at the last key their last query sees.
 *   - window attention: items (window, head); the window's q/k/v rows of that head are
 *     gathered into contiguous scratch and run through the prefill block code.
 * Items go to cw_nthreads() OpenMP threads with schedule(dynamic, 1).  Scratch comes
 * from cw_alloc, per thread, sized by the block sizes (never by Tq x Tk).
 */
#pragma GCC optimize("no-tree-vectorize")
#include <omp.h>
#include "cw_internal.h"

#define BQ 64  /* queries per prefill work item: the partition every ISA shares */
#define BK 64  /* keys per block */

/* Chunks per kv head for decode: about 8 items per thread in all, chunks of >= 128
   keys.  The SIMD files use the same formula. */
static int decode_splits(int Hkv, int64_t T, int nt) {
    int64_t want = (8 * (int64_t)nt + Hkv - 1) / Hkv, most = (T + 127) / 128;
    int64_t s = want < most ? want : most;
    return s < 1 ? 1 : (int)s;
}

/* The arguments of cw_attention, bundled. */
typedef struct {
    const float *q, *k, *v;
    float* out;
    int Tq, Tk, Hq, Hkv, D;
    int64_t q_ts, q_hs, kv_ts, kv_hs, o_ts, o_hs;
    float scale;
    int causal_offset;
} attn_args;

static float dot(const float* a, const float* b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; d++) s += a[d] * b[d];
    return s;
}

/* One online-softmax step for one query row: scores s[0:n] of a block of keys whose
   value rows are v + j*kv_ts.  Updates the running (m, l, acc[D]) in place. */
static void online_update(float* m, float* l, float* acc, float* s, int n, const float* v,
                          int64_t kv_ts, int D) {
    float mx = s[0];
    for (int j = 1; j < n; j++) mx = s[j] > mx ? s[j] : mx;
    if (mx > *m) {
        float alpha = expf(*m - mx); /* exp(-inf) = 0 on the first block */
        *l *= alpha;
        for (int d = 0; d < D; d++) acc[d] *= alpha;
        *m = mx;
    }
    for (int j = 0; j < n; j++) {
        float p = expf(s[j] - *m);
        const float* vr = v + j * kv_ts;
        *l += p;
        for (int d = 0; d < D; d++) acc[d] += p * vr[d];
    }
}

/* ---- prefill: one block of nq <= BQ query rows of one head ------------------- */
/* q, out: row 0 of the block (row i at + i*q_ts / + i*o_ts); k, v: key 0 of the kv head.
   Row i sees keys j < n_seen(i): all Tk keys, or causal j <= off + t0 + i.
   Scratch: acc[BQ][D], m[BQ], l[BQ], s[BK]. */
static void prefill_block(const float* q, int64_t q_ts, float* out, int64_t o_ts, int nq, int t0,
                          const float* k, const float* v, int64_t kv_ts, int Tk, int D,
                          float scale, int off, float* scratch) {
    float *acc = scratch, *m = acc + (size_t)BQ * D, *l = m + BQ, *s = l + BQ;
    int64_t kend = off >= 0 ? (int64_t)off + t0 + nq : Tk; /* keys any row of the block sees */
    if (kend > Tk) kend = Tk;
    for (int i = 0; i < nq; i++) {
        m[i] = -INFINITY;
        l[i] = 0.0f;
        memset(acc + (size_t)i * D, 0, (size_t)D * sizeof(float));
    }
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        int nk = kend - j0 < BK ? (int)(kend - j0) : BK;
        for (int i = 0; i < nq; i++) {
            int n = nk;
            if (off >= 0) { /* causal: this row sees keys j <= off + t0 + i */
                int64_t lim = (int64_t)off + t0 + i + 1 - j0;
                if (lim <= 0) continue;
                if (lim < n) n = (int)lim;
            }
            const float* qi = q + i * q_ts;
            for (int j = 0; j < n; j++) s[j] = dot(qi, k + (j0 + j) * kv_ts, D) * scale;
            online_update(&m[i], &l[i], acc + (size_t)i * D, s, n, v + j0 * kv_ts, kv_ts, D);
        }
    }
    for (int i = 0; i < nq; i++) {
        float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;
        for (int d = 0; d < D; d++) out[i * o_ts + d] = acc[(size_t)i * D + d] * inv;
    }
}

static size_t prefill_scratch_floats(int D) { return (size_t)BQ * D + 2 * BQ + BK; }

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
            int qb = nqb - 1 - (int)(it / a->Hq), h = (int)(it % a->Hq), g = h / G; /* late blocks first */
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

/* ---- decode: one query row, the G heads of a kv head together ------------------ */
/* Keys [j0, j1) of kv head g for its G query heads; leaves part = m[G], l[G], acc[G][D].
   Scratch s[G][BK]. */
static void decode_item(const attn_args* a, int g, int64_t j0, int64_t j1, float* part, float* s) {
    int G = a->Hq / a->Hkv, D = a->D;
    float *m = part, *l = m + G, *acc = l + G;
    const float* kg = a->k + g * a->kv_hs;
    const float* vg = a->v + g * a->kv_hs;
    for (int hh = 0; hh < G; hh++) {
        m[hh] = -INFINITY;
        l[hh] = 0.0f;
    }
    memset(acc, 0, (size_t)G * D * sizeof(float));
    for (int64_t jb = j0; jb < j1; jb += BK) {
        int nk = j1 - jb < BK ? (int)(j1 - jb) : BK;
        for (int j = 0; j < nk; j++) { /* each K row once for the whole group */
            const float* kr = kg + (jb + j) * a->kv_ts;
            for (int hh = 0; hh < G; hh++)
                s[hh * BK + j] = dot(a->q + (g * G + hh) * a->q_hs, kr, D) * a->scale;
        }
        for (int hh = 0; hh < G; hh++)
            online_update(&m[hh], &l[hh], acc + (size_t)hh * D, s + hh * BK, nk,
                          vg + jb * a->kv_ts, a->kv_ts, D);
    }
}

/* Combine the nsplit partials of each head: out = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s. */
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
        if (M == -INFINITY) continue; /* no key seen: zeros */
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
    int items = a->Hkv * nsplit;
    size_t psz = (size_t)G * (a->D + 2);
    float* parts = cw_alloc((size_t)items * psz * sizeof(float));
    if (!parts) return CW_ENOMEM;
#pragma omp parallel num_threads(nt)
    {
        float* s = cw_alloc((size_t)G * BK * sizeof(float));
        if (!s) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int it = 0; it < items; it++) {
            if (!s) continue;
            int64_t lo, hi;
            cw_split(T, nsplit, it % nsplit, 16, &lo, &hi);
            decode_item(a, it / nsplit, lo, hi, parts + (size_t)it * psz, s);
        }
        cw_free(s);
    }
    if (!failed) decode_merge(a, parts, nsplit);
    cw_free(parts);
    return failed ? CW_ENOMEM : CW_OK;
}

int cw_attention_scalar(const float* q, const float* k, const float* v, float* out, int Tq, int Tk,
                        int Hq, int Hkv, int D, int64_t q_ts, int64_t q_hs, int64_t kv_ts,
                        int64_t kv_hs, int64_t o_ts, int64_t o_hs, float scale, int causal_offset) {
    attn_args a = {q, k, v, out, Tq, Tk, Hq, Hkv, D, q_ts, q_hs, kv_ts, kv_hs, o_ts, o_hs,
                   scale, causal_offset};
    return Tq == 1 ? attention_decode(&a) : attention_prefill(&a);
}

/* ---- window attention ----------------------------------------------------------- */
/* Copy head h of the tokens of window (y0, x0, wh, ww) of x[H, W, nh, D] into dst[n][D]
   (gather) or back (scatter), token order row-major within the window. */
static void window_copy(float* grid, float* rows, int W, int nh, int D, int h, int y0, int x0,
                        int wh, int ww, int to_grid) {
    for (int y = 0; y < wh; y++)
        for (int x = 0; x < ww; x++) {
            float* g = grid + (((int64_t)(y0 + y) * W + x0 + x) * nh + h) * D;
            float* r = rows + ((size_t)y * ww + x) * D;
            if (to_grid) memcpy(g, r, (size_t)D * sizeof(float));
            else memcpy(r, g, (size_t)D * sizeof(float));
        }
}

int cw_window_attention_scalar(const float* q, const float* k, const float* v, float* out, int H,
                               int W, int nh, int D, int ws, float scale) {
    int wsy = ws < H ? ws : H, wsx = ws < W ? ws : W; /* a window never exceeds the grid */
    int nwy = (H + wsy - 1) / wsy, nwx = (W + wsx - 1) / wsx, nt = cw_nthreads(), failed = 0;
    int64_t items = (int64_t)nwy * nwx * nh;
    size_t nmax = (size_t)wsy * wsx;
#pragma omp parallel num_threads(nt)
    {
        /* qw, kw, vw, ow [nmax][D], then the prefill block scratch */
        float* buf = cw_alloc((4 * nmax * D + prefill_scratch_floats(D)) * sizeof(float));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < items; it++) {
            if (!buf) continue;
            int h = (int)(it % nh), wi = (int)(it / nh), y0 = wi / nwx * wsy, x0 = wi % nwx * wsx;
            int wh = H - y0 < wsy ? H - y0 : wsy, ww = W - x0 < wsx ? W - x0 : wsx, n = wh * ww;
            float *qw = buf, *kw = qw + nmax * D, *vw = kw + nmax * D, *ow = vw + nmax * D;
            window_copy((float*)q, qw, W, nh, D, h, y0, x0, wh, ww, 0);
            window_copy((float*)k, kw, W, nh, D, h, y0, x0, wh, ww, 0);
            window_copy((float*)v, vw, W, nh, D, h, y0, x0, wh, ww, 0);
            for (int t0 = 0; t0 < n; t0 += BQ)
                prefill_block(qw + (size_t)t0 * D, D, ow + (size_t)t0 * D, D,
                              n - t0 < BQ ? n - t0 : BQ, t0, kw, vw, D, n, D, scale, -1,
                              ow + nmax * D);
            window_copy(out, ow, W, nh, D, h, y0, x0, wh, ww, 1);
        }
        cw_free(buf);
    }
    return failed ? CW_ENOMEM : CW_OK;
}
