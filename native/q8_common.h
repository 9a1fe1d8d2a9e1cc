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
 *   xq[mc, K] int8 | dx[mc, nb] float | per thread: dwT[nb, Q8_NR] float (the scales of
 *   one group of weight rows, converted to fp32 and stored block-major).
 */
#ifndef CROMWELL_Q8_COMMON_H
#define CROMWELL_Q8_COMMON_H

#include "cw_internal.h"

#define Q8_NR 4                       /* weight rows (outputs) per group / tile */
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
    float* dwT;   /* [nt, nb * Q8_NR] */
    void* base;   /* what cw_free takes */
} q8_scratch;

static inline int64_t q8_round64(int64_t n) { return (n + 63) / 64 * 64; }

static inline int q8_scratch_alloc(q8_scratch* s, int mc, int nb, int nt) {
    int64_t bx = q8_round64((int64_t)mc * nb * CW_QK);
    int64_t bd = q8_round64((int64_t)mc * nb * 4);
    int64_t bw = q8_round64((int64_t)nb * Q8_NR * 4);
    char* p = (char*)cw_alloc((size_t)(bx + bd + bw * nt));
    if (!p) return CW_ENOMEM;
    s->base = p;
    s->xq = (int8_t*)p;
    s->dx = (float*)(p + bx);
    s->dwT = (float*)(p + bx + bd);
    return CW_OK;
}

/* Per-thread dwT buffer of thread t. */
static inline float* q8_dwT(const q8_scratch* s, int nb, int t) {
    return s->dwT + (q8_round64((int64_t)nb * Q8_NR * 4) / 4) * t;
}

#endif
