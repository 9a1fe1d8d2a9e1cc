/* Runtime for the kernels: ISA choice, thread count, aligned scratch memory, and the
 * public entry points, which validate their arguments and call the chosen variant.
 *
 * The ISA is chosen once per process from the CPU's features (__builtin_cpu_supports),
 * unless CROMWELL_ISA names one; cw_set_isa() may change it later (tests force each path).
 * The dispatch follows ggml-cpu's idea of one table chosen at start-up, kept as a
 * switch on one global so that every variant stays a plain C function.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sched.h>
#include <omp.h>
#include "cw_internal.h"

static int g_isa = -1;
static int g_threads = 0;
static _Atomic int64_t g_scratch_now = 0, g_scratch_peak = 0;

/* ---- ISA ------------------------------------------------------------------ */
int cw_isa_supported(int isa) {
    __builtin_cpu_init();
    switch (isa) {
    case CW_ISA_SCALAR: return 1;
    case CW_ISA_AVX2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                             __builtin_cpu_supports("f16c");
    case CW_ISA_AVX512:
        return cw_isa_supported(CW_ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("avx512vnni");
    default: return 0;
    }
}

const char* cw_isa_name(int isa) {
    switch (isa) {
    case CW_ISA_SCALAR: return "scalar";
    case CW_ISA_AVX2: return "avx2";
    case CW_ISA_AVX512: return "avx512";
    default: return "unknown";
    }
}

static int best_isa(void) {
    const char* env = getenv("CROMWELL_ISA");
    if (env && *env) {
        for (int isa = CW_ISA_SCALAR; isa <= CW_ISA_AVX512; isa++)
            if (strcmp(env, cw_isa_name(isa)) == 0 && cw_isa_supported(isa)) return isa;
        fprintf(stderr, "cromwell: CROMWELL_ISA=%s is not one of scalar|avx2|avx512 supported "
                        "by this CPU; choosing automatically\n", env);
    }
    if (cw_isa_supported(CW_ISA_AVX512)) return CW_ISA_AVX512;
    if (cw_isa_supported(CW_ISA_AVX2)) return CW_ISA_AVX2;
    return CW_ISA_SCALAR;
}

int cw_get_isa(void) {
    if (g_isa < 0) g_isa = best_isa();
    return g_isa;
}

int cw_set_isa(int isa) {
    if (!cw_isa_supported(isa)) return CW_EISA;
    g_isa = isa;
    return CW_OK;
}

/* ---- threads -------------------------------------------------------------- */
int cw_num_cores(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cw_get_threads(void) {
    if (g_threads <= 0) g_threads = cw_num_cores();
    return g_threads;
}

int cw_nthreads(void) { return cw_get_threads(); }

int cw_set_threads(int n) {
    if (n < 1 || n > 1024) return CW_EINVAL;
    g_threads = n;
    return CW_OK;
}

/* ---- memory --------------------------------------------------------------- */
/* A 64-byte header before each block remembers its size, for the scratch counters. */
void* cw_alloc(size_t bytes) {
    void* p = NULL;
    if (bytes > ((size_t)1 << 46)) return NULL;
    if (posix_memalign(&p, 64, bytes + 64) != 0) return NULL;
    memset(p, 0, bytes + 64);
    *(size_t*)p = bytes;
    int64_t now = atomic_fetch_add(&g_scratch_now, (int64_t)bytes) + (int64_t)bytes;
    int64_t peak = atomic_load(&g_scratch_peak);
    while (now > peak && !atomic_compare_exchange_weak(&g_scratch_peak, &peak, now)) {}
    return (char*)p + 64;
}

void cw_free(void* p) {
    if (!p) return;
    char* base = (char*)p - 64;
    atomic_fetch_sub(&g_scratch_now, (int64_t)*(size_t*)base);
    free(base);
}

int64_t cw_scratch_peak_bytes(void) { return atomic_load(&g_scratch_peak); }
void cw_scratch_reset_peak(void) { atomic_store(&g_scratch_peak, atomic_load(&g_scratch_now)); }

int cw_copy(float* dst, const float* src, int64_t n) {
    if (!dst || !src || n < 0) return CW_EINVAL;
    int nt = cw_nthreads();
#pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        cw_split(n, omp_get_num_threads(), omp_get_thread_num(), 16, &lo, &hi);
        if (hi > lo) memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
    }
    return CW_OK;
}

/* ---- public entry points -------------------------------------------------- */
#define CHECK(cond) do { if (!(cond)) return CW_EINVAL; } while (0)
#define DISPATCH(name, ...)                                       \
    switch (cw_get_isa()) {                                       \
    case CW_ISA_AVX512: return name##_avx512(__VA_ARGS__);        \
    case CW_ISA_AVX2: return name##_avx2(__VA_ARGS__);            \
    default: return name##_scalar(__VA_ARGS__);                   \
    }

/* y[M, N] = bias (or zeros): the product over an empty K. */
static int fill_bias(const float* bias, float* y, int M, int N) {
    CHECK(y);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) y[m * N + n] = bias ? bias[n] : 0.0f;
    return CW_OK;
}

int cw_matmul_f32(const float* x, const float* w, const float* bias, float* y, int M, int N, int K) {
    CHECK(M >= 0 && N >= 0 && K >= 0);
    if (M == 0 || N == 0) return CW_OK;
    if (K == 0) return fill_bias(bias, y, M, N);
    CHECK(x && w && y);
    DISPATCH(cw_matmul_f32, x, w, bias, y, M, N, K)
}

int cw_quantize_q8(const float* x, int8_t* q, uint16_t* d, int64_t n) {
    CHECK(n >= 0 && n % CW_QK == 0);
    if (n == 0) return CW_OK;
    CHECK(x && q && d);
    DISPATCH(cw_quantize_q8, x, q, d, n)
}

int cw_dequantize_q8(const int8_t* q, const uint16_t* d, float* x, int64_t n) {
    CHECK(n >= 0 && n % CW_QK == 0);
    if (n == 0) return CW_OK;
    CHECK(x && q && d);
    DISPATCH(cw_dequantize_q8, q, d, x, n)
}

int cw_matmul_q8(const float* x, const int8_t* wq, const uint16_t* wd, const float* bias, float* y,
                 int M, int N, int K) {
    CHECK(M >= 0 && N >= 0 && K >= 0 && K % CW_QK == 0);
    if (M == 0 || N == 0) return CW_OK;
    if (K == 0) return fill_bias(bias, y, M, N);
    CHECK(x && wq && wd && y);
    DISPATCH(cw_matmul_q8, x, wq, wd, bias, y, M, N, K)
}

int cw_rmsnorm(const float* x, const float* w, float* out, int M, int N, float eps) {
    CHECK(M >= 0 && N >= 0 && eps >= 0.0f);
    if (M == 0 || N == 0) return CW_OK;
    CHECK(x && w && out);
    DISPATCH(cw_rmsnorm, x, w, out, M, N, eps)
}

int cw_swiglu(const float* a, const float* b, float* out, int64_t n) {
    CHECK(n >= 0);
    if (n == 0) return CW_OK;
    CHECK(a && b && out);
    DISPATCH(cw_swiglu, a, b, out, n)
}

int cw_silu(float* x, int64_t n) {
    CHECK(n >= 0);
    if (n == 0) return CW_OK;
    CHECK(x);
    DISPATCH(cw_silu, x, n)
}

int cw_rope(float* x, int T, int H, int D, int64_t ts, int64_t hs, int pos0, float theta, int neox) {
    CHECK(T >= 0 && H >= 0 && D >= 0 && D % 2 == 0 && pos0 >= 0 && theta > 0.0f);
    CHECK(ts >= 0 && hs >= 0);
    if (T == 0 || H == 0 || D == 0) return CW_OK;
    CHECK(x);
    DISPATCH(cw_rope, x, T, H, D, ts, hs, pos0, theta, neox)
}

int cw_softmax(float* x, int M, int N) {
    CHECK(M >= 0 && N >= 0);
    if (M == 0 || N == 0) return CW_OK;
    CHECK(x);
    DISPATCH(cw_softmax, x, M, N)
}

int cw_add(const float* a, const float* b, float* out, int64_t n) {
    CHECK(n >= 0);
    if (n == 0) return CW_OK;
    CHECK(a && b && out);
    DISPATCH(cw_add, a, b, out, n)
}

int cw_attention(const float* q, const float* k, const float* v, float* out, int Tq, int Tk, int Hq,
                 int Hkv, int D, int64_t q_ts, int64_t q_hs, int64_t kv_ts, int64_t kv_hs,
                 int64_t o_ts, int64_t o_hs, float scale, int causal_offset) {
    CHECK(Tq >= 0 && Tk >= 0 && Hq >= 1 && Hkv >= 1 && Hq % Hkv == 0 && D >= 1);
    CHECK(q_ts >= 0 && q_hs >= 0 && kv_ts >= 0 && kv_hs >= 0 && o_ts >= 0 && o_hs >= 0);
    if (Tq == 0) return CW_OK;
    CHECK(q && out && (Tk == 0 || (k && v)));
    DISPATCH(cw_attention, q, k, v, out, Tq, Tk, Hq, Hkv, D, q_ts, q_hs, kv_ts, kv_hs, o_ts, o_hs,
             scale, causal_offset)
}

int cw_window_attention(const float* q, const float* k, const float* v, float* out, int H, int W,
                        int nh, int D, int ws, float scale) {
    CHECK(H >= 0 && W >= 0 && nh >= 1 && D >= 1 && ws >= 1);
    if (H == 0 || W == 0) return CW_OK;
    CHECK(q && k && v && out);
    DISPATCH(cw_window_attention, q, k, v, out, H, W, nh, D, ws, scale)
}

int cw_patch_embed(const float* x, const float* w, const float* bias, float* out, int H, int W,
                   int Cin, int Cout, int act) {
    CHECK(H >= 0 && W >= 0 && H % 4 == 0 && W % 4 == 0 && Cin >= 1 && Cout >= 1);
    CHECK(act == 0 || act == 1);
    if (H == 0 || W == 0) return CW_OK;
    CHECK(x && w && out);
    DISPATCH(cw_patch_embed, x, w, bias, out, H, W, Cin, Cout, act)
}

int cw_dwconv3x3(const float* x, const float* w, const float* bias, float* out, int H, int W, int C,
                 int stride, int act) {
    CHECK(H >= 0 && W >= 0 && C >= 1 && (stride == 1 || stride == 2) && (act == 0 || act == 1));
    if (H == 0 || W == 0) return CW_OK;
    CHECK(x && w && out);
    DISPATCH(cw_dwconv3x3, x, w, bias, out, H, W, C, stride, act)
}
