/* Work partition shared by the three q8 kernel files (q8_ref.c, q8_avx2.c, q8_avx512.c).
 *
 * Every ISA splits the work across threads in exactly the same way, so that a timing
 * comparison between ISAs compares the per-thread code and nothing else:
 *   - quantize / dequantize: the n/32 blocks split into contiguous runs, one per thread
 *     (one thread only below Q8_PAR_MIN_BLOCKS blocks, where a fork costs more than it
 *     saves);
 *   - matmul_q8: the rows of x are taken in chunks of q8_chunk_rows() rows; for each chunk
 *     the threads first quantize its rows (a contiguous run of rows each), then compute
 *     y[chunk, :] with the outputs N split into runs of whole groups of Q8_NR rows of w.
 *
 * Scratch of matmul_q8 (one cw_alloc per call, 64-byte aligned, bounded by the chunk):
 *   xq[mc, K] int8 | dx[mc, nb] float | xc[mc, nb] int32 (-128 * sum of each x block, for
 *   the unsigned-offset form of the AVX-512 products) | per thread: dwT[nb, Q8_NR] float
 *   (the scales of one group of weight rows in fp32, block-major) and a packed copy of
 *   the group's weights, wp[2, nb, 8, Q8_NR, 4] int8 (see q8_avx2.c).
 */
#ifndef CROMWELL_Q8_COMMON_H
#define CROMWELL_Q8_COMMON_H

#include "cw_internal.h"

#define Q8_NR 16                      /* weight rows (outputs) per group */
#define Q8_MR 4                       /* x rows per tile */
#define Q8_PAR_MIN_BLOCKS 2048        /* quantize/dequantize: fork only from 64 Ki values */
#define Q8_CHUNK_BYTES ((int64_t)1 << 18) /* int8 activations kept per chunk (256 KiB) */

/* Threads for a quantize/dequantize of nblocks blocks. */
static inline int q8_threads_for(int64_t nblocks) {
    int nt = cw_nthreads();
    return nblocks >= Q8_PAR_MIN_BLOCKS ? nt : 1;
}

/* Rows of x per chunk: all of them when M*K fits Q8_CHUNK_BYTES, otherwise equal chunks,
   each a multiple of Q8_MR rows. */
static inline int q8_chunk_rows(int M, int K) {
    int64_t total = (int64_t)M * K;
    if (total <= Q8_CHUNK_BYTES) return M;
    int64_t chunks = (total + Q8_CHUNK_BYTES - 1) / Q8_CHUNK_BYTES;
    int64_t mc = (M + chunks - 1) / chunks;
    mc = (mc + Q8_MR - 1) / Q8_MR * Q8_MR;
    return (int)(mc < M ? mc : M);
}

/* Layout of the matmul_q8 scratch for chunks of mc rows, nb blocks per row, nt threads. */
typedef struct {
    int8_t* xq;   /* [mc, K] */
    float* dx;    /* [mc, nb] */
    int32_t* xc;  /* [mc, nb] */
    char* thr;    /* [nt, thr_bytes]: dwT then wp, per thread */
    int64_t thr_bytes;
    void* base;   /* what cw_free takes */
} q8_scratch;

static inline int64_t q8_round64(int64_t n) { return (n + 63) / 64 * 64; }

static inline int q8_scratch_alloc(q8_scratch* s, int mc, int nb, int nt) {
    int64_t bx = q8_round64((int64_t)mc * nb * CW_QK);
    int64_t bd = q8_round64((int64_t)mc * nb * 4);
    s->thr_bytes = q8_round64((int64_t)nb * Q8_NR * 4) + 2 * (int64_t)nb * CW_QK * Q8_NR;
    char* p = (char*)cw_alloc((size_t)(bx + 2 * bd + s->thr_bytes * nt));
    if (!p) return CW_ENOMEM;
    s->base = p;
    s->xq = (int8_t*)p;
    s->dx = (float*)(p + bx);
    s->xc = (int32_t*)(p + bx + bd);
    s->thr = p + bx + 2 * bd;
    return CW_OK;
}

/* Thread t's dwT[nb, Q8_NR] buffer. */
static inline float* q8_dwT(const q8_scratch* s, int t) {
    return (float*)(s->thr + s->thr_bytes * t);
}

/* Thread t's packed-weights buffer, 2 * nb * 32 * Q8_NR bytes, 64-byte aligned. */
static inline int8_t* q8_wp(const q8_scratch* s, int nb, int t) {
    return (int8_t*)(s->thr + s->thr_bytes * t + q8_round64((int64_t)nb * Q8_NR * 4));
}

#endif
