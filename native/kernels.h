/* Cromwell native kernels: the one C API.
 *
 * Conventions (every function):
 *   - float32, row-major, C-contiguous unless a stride argument says otherwise;
 *     strides are counted in elements, not bytes.
 *   - Linear layers store weights as W[N, K] (out, in), like torch.nn.Linear, and
 *     compute y[M, N] = x[M, K] @ W^T (+ bias[N]).
 *   - int8 weights ("q8"): blocks of CW_QK = 32 consecutive values along K share one
 *     scale; q[N, K] int8 and d[N, K/32] float16 (stored as uint16_t bits).
 *     value = d * q.  Activations are quantized on the fly the same way (fp32 scale).
 *   - Every function returns CW_OK (0) or a negative CW_E* code; it validates its
 *     arguments and never reads or writes out of the bounds the arguments describe.
 *   - Every public kernel dispatches once per process to a scalar reference, an
 *     AVX2+FMA version or an AVX-512 (F/BW/VL/VNNI) version; CROMWELL_ISA
 *     (scalar|avx2|avx512) overrides the choice; cw_set_isa() changes it at run time.
 *   - Kernels run on cw_get_threads() OpenMP threads (default: the usable cores).
 */
#ifndef CROMWELL_KERNELS_H
#define CROMWELL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define CW_OK 0
#define CW_EINVAL -1   /* bad argument: null pointer, bad size, bad stride */
#define CW_ENOMEM -2   /* scratch allocation failed */
#define CW_EISA -3     /* the requested ISA is not supported by this CPU */

#define CW_ISA_SCALAR 0
#define CW_ISA_AVX2 1
#define CW_ISA_AVX512 2

#define CW_QK 32

/* ---- runtime: ISA, threads, aligned memory ---------------------------------- */
int cw_isa_supported(int isa);      /* 1 if this CPU can run `isa` */
int cw_get_isa(void);               /* the ISA in use */
int cw_set_isa(int isa);            /* CW_OK or CW_EISA */
const char* cw_isa_name(int isa);   /* "scalar", "avx2", "avx512" */
int cw_num_cores(void);             /* cores usable by this process */
int cw_get_threads(void);
int cw_set_threads(int n);          /* n >= 1; CW_EINVAL otherwise */
void* cw_alloc(size_t bytes);       /* 64-byte aligned, zero-filled; NULL on failure */
void cw_free(void* p);
int64_t cw_scratch_peak_bytes(void);  /* high-water mark of cw_alloc'd bytes in use */
void cw_scratch_reset_peak(void);
int cw_copy(float* dst, const float* src, int64_t n);  /* threaded copy (bandwidth probe) */

/* ---- matrix multiply ------------------------------------------------------ */
/* y[M, N] = x[M, K] @ w[N, K]^T + bias[N] (bias may be NULL).
   M == 1 takes the decode (matrix-vector) path, M > 1 the register-tiled prefill path. */
int cw_matmul_f32(const float* x, const float* w, const float* bias, float* y,
                  int M, int N, int K);

/* Quantize n values (n % 32 == 0) into blocks of 32: d = max|x| / 127, id = 1 / d (0 when
   d == 0), q = round_half_even(x * id), all in float32 so every ISA gives the same bits;
   d is rounded to float16 (nearest even) when stored. */
int cw_quantize_q8(const float* x, int8_t* q, uint16_t* d, int64_t n);
int cw_dequantize_q8(const int8_t* q, const uint16_t* d, float* x, int64_t n);
/* y[M, N] = x[M, K] @ dequant(wq, wd)^T + bias; K % 32 == 0.  The rows of x are quantized
   to int8 blocks (fp32 scales) on the fly and multiplied with integer dot products. */
int cw_matmul_q8(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias,
                 float* y, int M, int N, int K);

/* ---- element-wise and row ops --------------------------------------------- */
/* out[m, :] = x[m, :] / sqrt(mean(x[m, :]^2) + eps) * w; out may alias x. */
int cw_rmsnorm(const float* x, const float* w, float* out, int M, int N, float eps);
/* out = silu(a) * b, silu(a) = a / (1 + exp(-a)); out may alias a or b. */
int cw_swiglu(const float* a, const float* b, float* out, int64_t n);
/* x = silu(x) in place. */
int cw_silu(float* x, int64_t n);
/* Rotary embedding in place on x[t, h, 0:D] at x + t*ts + h*hs, position pos0 + t,
   angle (pos) * theta^(-2i/D).  neox = 0 rotates adjacent pairs (2i, 2i+1) (Llama /
   GGUF order); neox = 1 rotates (i, i + D/2) (the rotate-half order).  D even. */
int cw_rope(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta,
            int neox);
/* Softmax of each row of x[M, N] in place. */
int cw_softmax(float* x, int M, int N);
/* out = a + b; out may alias a or b. */
int cw_add(const float* a, const float* b, float* out, int64_t n);

/* ---- attention ------------------------------------------------------------ */
/* Scaled dot-product attention with grouped-query heads.
   q[t, h, :] at q + t*q_ts + h*q_hs          (t < Tq, h < Hq)
   k[j, g, :] at k + j*kv_ts + g*kv_hs, v alike (j < Tk, g < Hkv); Hq % Hkv == 0 and
   query head h reads kv head h / (Hq / Hkv).
   out[t, h, :] at out + t*o_ts + h*o_hs.
   causal_offset >= 0: query t sees keys j <= causal_offset + t (a KV cache holding
   causal_offset earlier tokens); causal_offset < 0: every query sees every key.
   Tq == 1 takes the decode path; Tq > 1 the blocked prefill path with online softmax:
   no Tq x Tk matrix is ever stored.  A query that sees no key gets zeros. */
int cw_attention(const float* q, const float* k, const float* v, float* out,
                 int Tq, int Tk, int Hq, int Hkv, int D,
                 int64_t q_ts, int64_t q_hs, int64_t kv_ts, int64_t kv_hs,
                 int64_t o_ts, int64_t o_hs, float scale, int causal_offset);

/* 2D windowed self-attention over an H x W grid of tokens; q, k, v, out are
   [H, W, nh, D] contiguous.  Windows of ws x ws tokens tile the grid from (0, 0);
   windows on the right and bottom edges are smaller when H or W is not a multiple of ws.
   Each token attends to every token of its own window. */
int cw_window_attention(const float* q, const float* k, const float* v, float* out,
                        int H, int W, int nh, int D, int ws, float scale);

/* ---- convolutions (NHWC, one image) --------------------------------------- */
/* 4x4 stride-4 patch embedding: x[H, W, Cin] (H, W multiples of 4),
   w[Cout, 4, 4, Cin], bias[Cout] or NULL, out[H/4, W/4, Cout].  act: 0 none, 1 SiLU. */
int cw_patch_embed(const float* x, const float* w, const float* bias, float* out,
                   int H, int W, int Cin, int Cout, int act);
/* 3x3 depthwise convolution, zero padding 1, stride 1 or 2: x[H, W, C], w[3, 3, C],
   bias[C] or NULL, out[Ho, Wo, C] with Ho = (H - 1) / stride + 1 (Wo alike).
   act: 0 none, 1 SiLU. */
int cw_dwconv3x3(const float* x, const float* w, const float* bias, float* out,
                 int H, int W, int C, int stride, int act);

#endif
