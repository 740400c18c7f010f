// CPU kernels: scaled dot-product attention over q, k, v [B, H, T, D], causal or not.
//
// Each (batch, head) pair is an independent problem; OpenMP spreads the B * H pairs over threads.
// A head is processed in blocks of kRows query rows, so at most kRows x T scores are alive per
// thread. The forward keeps only lse (the log-sum-exp of each row of scaled scores) next to the
// output; the backward recomputes each probability as p_ij = exp(scale * q_i . k_j - lse_i)
// instead of storing the T x T matrix, like the CUDA kernel, and uses
//   delta_i = dO_i . O_i,  dV_j += p_ij dO_i,  dS_ij = p_ij (dO_i . v_j - delta_i),
//   dQ_i += scale dS_ij k_j,  dK_j += scale dS_ij q_i.
// dK and dV of one head are accumulated by the one thread that owns the head, in block order, so
// the result is deterministic.
//
// Note [Attention tiles]: the products run as small register tiles (kRows rows x kWidth columns
// of accumulators) over zero-padded copies of k and v (k^T for the scores), so the inner loops
// have fixed trip counts the compiler vectorises, and each loaded vector of k or v feeds kRows
// multiply-adds. OpenBLAS is not called here: the heads already occupy every thread.
//
// Compute type: f32 (f64 for f64 inputs); bf16/f16 heads are widened into per-thread buffers.
// lse is f32, or f64 for f64 inputs (so the f64 gradient checks are not capped at f32 precision).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

constexpr int64_t kRows = 4;   // query rows per block (and per register tile)
constexpr int64_t kWidth = 8;  // columns per register tile

int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// kWidth lanes of C as one GCC vector: the compiler maps it onto whatever registers the target
// has (two SSE registers, one AVX register, half an AVX-512 one) without guessing at loops.
template <typename C>
struct VecOf;
template <>
struct VecOf<float> {
  typedef float type __attribute__((vector_size(kWidth * sizeof(float))));
};
template <>
struct VecOf<double> {
  typedef double type __attribute__((vector_size(kWidth * sizeof(double))));
};
template <typename C>
using Vec = typename VecOf<C>::type;

// s[r][j] = sum_x a[r][x] * bt[x][j] for r < kRows, j < n_pad (a multiple of kWidth).
// a: [kRows][d]; bt: [d][ld]; s: [kRows][ld].
template <typename C>
[[gnu::always_inline]] inline void tile_a_bt_impl(const C* a, int64_t d, const C* bt, int64_t ld, int64_t n_pad, C* s) {
  using V = Vec<C>;
  for (int64_t j0 = 0; j0 < n_pad; j0 += kWidth) {
    V acc[kRows] = {};
    for (int64_t x = 0; x < d; ++x) {
      V b;
      std::memcpy(&b, bt + x * ld + j0, sizeof(V));
      for (int64_t r = 0; r < kRows; ++r) acc[r] += a[r * d + x] * b;
    }
    for (int64_t r = 0; r < kRows; ++r) std::memcpy(s + r * ld + j0, &acc[r], sizeof(V));
  }
}

// o[r][c] = sum_{j < n} p[r][j] * v[j][c] for r < kRows, c < d_pad (a multiple of kWidth).
// p: [kRows][ld]; v: [n][d_pad]; o: [kRows][d_pad].
template <typename C>
[[gnu::always_inline]] inline void tile_p_v_impl(const C* p, int64_t ld, int64_t n, const C* v, int64_t d_pad, C* o) {
  using V = Vec<C>;
  for (int64_t c0 = 0; c0 < d_pad; c0 += kWidth) {
    V acc[kRows] = {};
    for (int64_t j = 0; j < n; ++j) {
      V vr;
      std::memcpy(&vr, v + j * d_pad + c0, sizeof(V));
      for (int64_t r = 0; r < kRows; ++r) acc[r] += p[r * ld + j] * vr;
    }
    for (int64_t r = 0; r < kRows; ++r) std::memcpy(o + r * d_pad + c0, &acc[r], sizeof(V));
  }
}

// y[j][c] += sum_r w[r][j] * x[r][c] for j < n, c < d (the rank-kRows updates of dK and dV).
// w: [kRows][ld]; x: [kRows][d]; y: [n][d].
template <typename C>
[[gnu::always_inline]] inline void rank_update_impl(const C* w, int64_t ld, const C* x, int64_t d, int64_t n, C* y) {
  for (int64_t j = 0; j < n; ++j) {
    C coef[kRows];
    for (int64_t r = 0; r < kRows; ++r) coef[r] = w[r * ld + j];
    C* yj = y + j * d;
    for (int64_t c = 0; c < d; ++c) {
      C sum = 0;
      for (int64_t r = 0; r < kRows; ++r) sum += coef[r] * x[r * d + c];
      yj[c] += sum;
    }
  }
}

// The tiles compiled once per instruction set (AVX-512, AVX2 + FMA, baseline), picked at load
// time by the CPU: the build targets baseline x86-64, where the tiles run at a fraction of the
// speed the machines they train on can give. Note [Attention tiles].
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ZT_ATTENTION_CLONES [[gnu::target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")]]
#else
#define ZT_ATTENTION_CLONES
#endif

#define ZT_ATTENTION_TILES(C)                                                                                   \
  ZT_ATTENTION_CLONES void tile_a_bt(const C* a, int64_t d, const C* bt, int64_t ld, int64_t n_pad, C* s) {      \
    tile_a_bt_impl<C>(a, d, bt, ld, n_pad, s);                                                                  \
  }                                                                                                             \
  ZT_ATTENTION_CLONES void tile_p_v(const C* p, int64_t ld, int64_t n, const C* v, int64_t d_pad, C* o) {        \
    tile_p_v_impl<C>(p, ld, n, v, d_pad, o);                                                                    \
  }                                                                                                             \
  ZT_ATTENTION_CLONES void rank_update(const C* w, int64_t ld, const C* x, int64_t d, int64_t n, C* y) {         \
    rank_update_impl<C>(w, ld, x, d, n, y);                                                                     \
  }
ZT_ATTENTION_TILES(float)
ZT_ATTENTION_TILES(double)
#undef ZT_ATTENTION_TILES

// Per-thread scratch for one head, in the compute type. Sized once per thread, reused per head.
template <typename C>
struct HeadScratch {
  int64_t t_len, d, t_pad, d_pad;
  std::vector<C> q, k, v, o, dout;  // the head's inputs widened (halves only)
  std::vector<C> kt, vt;            // [d][t_pad]: k^T and v^T, zero-padded columns
  std::vector<C> kp, vp;            // [t_len][d_pad]: k and v with zero-padded rows
  std::vector<C> qb, dob;           // [kRows][d]: one block of query rows (and of dO), zero-padded
  std::vector<C> s, dp;             // [kRows][t_pad]: scores / probabilities, and dO v^T
  std::vector<C> ob;                // [kRows][d_pad]: a block of outputs (or of dQ)
  std::vector<C> dq, dk, dv;        // [t_len][d] accumulators (halves only; else written in place)

  HeadScratch(int64_t t, int64_t dim) : t_len(t), d(dim), t_pad(round_up(t, kWidth)), d_pad(round_up(dim, kWidth)) {
    kt.assign(static_cast<size_t>(d * t_pad), C(0));
    vt.assign(static_cast<size_t>(d * t_pad), C(0));
    kp.assign(static_cast<size_t>(t_len * d_pad), C(0));
    vp.assign(static_cast<size_t>(t_len * d_pad), C(0));
    qb.assign(static_cast<size_t>(kRows * d), C(0));
    dob.assign(static_cast<size_t>(kRows * d), C(0));
    s.assign(static_cast<size_t>(kRows * t_pad), C(0));
    dp.assign(static_cast<size_t>(kRows * t_pad), C(0));
    ob.assign(static_cast<size_t>(kRows * d_pad), C(0));
  }

  // src [T, D] transposed into a [D][t_pad] buffer, or copied into a [T][d_pad] one.
  void transpose_into(const C* src, std::vector<C>& dst_t) const {
    for (int64_t j = 0; j < t_len; ++j)
      for (int64_t x = 0; x < d; ++x) dst_t[static_cast<size_t>(x * t_pad + j)] = src[j * d + x];
  }
  void pad_rows_into(const C* src, std::vector<C>& dst) const {
    for (int64_t j = 0; j < t_len; ++j)
      for (int64_t x = 0; x < d; ++x) dst[static_cast<size_t>(j * d_pad + x)] = src[j * d + x];
  }
  // Rows [i0, i0 + rows) of src into a [kRows][d] block, zeros below.
  void load_block(const C* src, int64_t i0, int64_t rows, std::vector<C>& dst) const {
    std::fill(dst.begin(), dst.end(), C(0));
    std::copy(src + i0 * d, src + (i0 + rows) * d, dst.begin());
  }
};

// Forward of one head: q, k, v, out [T, D]; lse [T].
template <typename C>
void head_forward(HeadScratch<C>& ws, const C* q, const C* k, const C* v, C* out, C* lse, bool causal, C scale) {
  const int64_t t_len = ws.t_len, d = ws.d, ld = ws.t_pad;
  ws.transpose_into(k, ws.kt);
  ws.pad_rows_into(v, ws.vp);
  for (int64_t i0 = 0; i0 < t_len; i0 += kRows) {
    const int64_t rows = std::min(kRows, t_len - i0);
    const int64_t n = causal ? i0 + rows : t_len;  // keys any row of the block sees
    ws.load_block(q, i0, rows, ws.qb);
    tile_a_bt(ws.qb.data(), d, ws.kt.data(), ld, round_up(n, kWidth), ws.s.data());
    C inv_l[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      C* p = ws.s.data() + r * ld;
      const int64_t nr = r >= rows ? 0 : causal ? i0 + r + 1 : t_len;
      C m = -std::numeric_limits<C>::infinity();
      for (int64_t j = 0; j < nr; ++j) m = std::max(m, p[j] * scale);
      C l = 0;
      for (int64_t j = 0; j < nr; ++j) {
        p[j] = std::exp(p[j] * scale - m);
        l += p[j];
      }
      std::fill(p + nr, p + n, C(0));  // masked keys and padding rows
      if (r < rows) lse[i0 + r] = m + std::log(l);
      inv_l[r] = r < rows ? C(1) / l : C(0);
    }
    tile_p_v(ws.s.data(), ld, n, ws.vp.data(), ws.d_pad, ws.ob.data());
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t x = 0; x < d; ++x) out[(i0 + r) * d + x] = ws.ob[static_cast<size_t>(r * ws.d_pad + x)] * inv_l[r];
  }
}

// Backward of one head; dq, dk, dv [T, D] are written (dq) and accumulated from zero (dk, dv).
template <typename C>
void head_backward(HeadScratch<C>& ws, const C* q, const C* k, const C* v, const C* out, const C* dout, const C* lse,
                   C* dq, C* dk, C* dv, bool causal, C scale) {
  const int64_t t_len = ws.t_len, d = ws.d, ld = ws.t_pad;
  ws.transpose_into(k, ws.kt);
  ws.transpose_into(v, ws.vt);
  ws.pad_rows_into(k, ws.kp);
  std::fill(dk, dk + t_len * d, C(0));
  std::fill(dv, dv + t_len * d, C(0));
  for (int64_t i0 = 0; i0 < t_len; i0 += kRows) {
    const int64_t rows = std::min(kRows, t_len - i0);
    const int64_t n = causal ? i0 + rows : t_len;
    const int64_t n_pad = round_up(n, kWidth);
    ws.load_block(q, i0, rows, ws.qb);
    ws.load_block(dout, i0, rows, ws.dob);
    tile_a_bt(ws.qb.data(), d, ws.kt.data(), ld, n_pad, ws.s.data());    // q k^T
    tile_a_bt(ws.dob.data(), d, ws.vt.data(), ld, n_pad, ws.dp.data());  // dO v^T
    for (int64_t r = 0; r < kRows; ++r) {
      C* p = ws.s.data() + r * ld;
      C* ds = ws.dp.data() + r * ld;
      const int64_t nr = r >= rows ? 0 : causal ? i0 + r + 1 : t_len;
      C delta = 0;
      for (int64_t x = 0; x < d && r < rows; ++x) delta += dout[(i0 + r) * d + x] * out[(i0 + r) * d + x];
      const C row_lse = r < rows ? lse[i0 + r] : C(0);
      for (int64_t j = 0; j < nr; ++j) {
        p[j] = std::exp(p[j] * scale - row_lse);
        ds[j] = p[j] * (ds[j] - delta) * scale;
      }
      std::fill(p + nr, p + n, C(0));
      std::fill(ds + nr, ds + n, C(0));
    }
    tile_p_v(ws.dp.data(), ld, n, ws.kp.data(), ws.d_pad, ws.ob.data());  // dQ = dS k
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t x = 0; x < d; ++x) dq[(i0 + r) * d + x] = ws.ob[static_cast<size_t>(r * ws.d_pad + x)];
    rank_update(ws.dp.data(), ld, ws.qb.data(), d, n, dk);  // dK += dS^T q
    rank_update(ws.s.data(), ld, ws.dob.data(), d, n, dv);  // dV += P^T dO
  }
}

// A head slice [T, D] of a storage-type tensor as compute-type values: the pointer itself when
// the types agree, else a widened copy in `buffer`.
template <typename T, typename C>
const C* load_head(const T* src, int64_t n, std::vector<C>& buffer) {
  if constexpr (std::is_same_v<T, C>) {
    return src;
  } else {
    buffer.resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) buffer[static_cast<size_t>(i)] = to_compute(src[i]);
    return buffer.data();
  }
}

// Where a head's result is computed: straight into dst when the types agree, else into `buffer`,
// narrowed afterwards by store_head.
template <typename T, typename C>
C* result_head(T* dst, int64_t n, std::vector<C>& buffer) {
  if constexpr (std::is_same_v<T, C>) {
    return dst;
  } else {
    buffer.resize(static_cast<size_t>(n));
    return buffer.data();
  }
}

template <typename T, typename C>
void store_head(T* dst, int64_t n, const std::vector<C>& buffer) {
  if constexpr (!std::is_same_v<T, C>)
    for (int64_t i = 0; i < n; ++i) dst[i] = from_compute<T>(buffer[static_cast<size_t>(i)]);
}

void check_qkv(const char* api, const Tensor& q, const Tensor& k, const Tensor& v) {
  ZT_CHECK(q.dim() == 4, api, "q must be [B, H, T, D], got ", q.describe());
  for (const Tensor* t : {&k, &v})
    ZT_CHECK(t->shape() == q.shape() && t->dtype() == q.dtype(), api, "q ", q.describe(), " and ", t->describe(),
             " must have the same shape and dtype");
  for (const Tensor* t : {&q, &k, &v})
    ZT_CHECK(t->is_contiguous() && t->device().is_cpu(), api, "inputs must be contiguous cpu tensors, got ",
             t->describe());
}

// Threads only pay off past some hundred thousand multiply-adds (tiny heads in tests and gradient
// checks would spend their time waking threads).
bool parallel_worth_it(int64_t heads, int64_t t_len, int64_t d) { return heads > 1 && heads * t_len * t_len * d > 65536; }

DType lse_dtype(DType input) { return input == DType::f64 ? DType::f64 : DType::f32; }

}  // namespace

AttentionResult CpuBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                      double scale) const {
  check_qkv("attention", q, k, v);
  const int64_t heads = q.size(0) * q.size(1), t_len = q.size(2), d = q.size(3), block = t_len * d;
  AttentionResult r;
  r.out = empty(q.shape(), q.dtype(), q.device());
  r.lse = empty({q.size(0), q.size(1), t_len}, lse_dtype(q.dtype()), q.device());
  if (q.numel() == 0) return r;
  dispatch_float(q.dtype(), "attention", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* qp = static_cast<const T*>(q.raw_data());
    const T* kp = static_cast<const T*>(k.raw_data());
    const T* vp = static_cast<const T*>(v.raw_data());
    T* op = static_cast<T*>(r.out.raw_data());
    C* lp = static_cast<C*>(r.lse.raw_data());
#pragma omp parallel if (parallel_worth_it(heads, t_len, d))
    {
      HeadScratch<C> ws(t_len, d);
#pragma omp for schedule(static)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = h * block;
        C* o = result_head<T, C>(op + at, block, ws.o);
        head_forward<C>(ws, load_head<T, C>(qp + at, block, ws.q), load_head<T, C>(kp + at, block, ws.k),
                        load_head<T, C>(vp + at, block, ws.v), o, lp + h * t_len, causal, static_cast<C>(scale));
        store_head<T, C>(op + at, block, ws.o);
      }
    }
  });
  return r;
}

AttentionGrads CpuBackend::attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                              const Tensor& v, const Tensor& out, const Tensor& lse, bool causal,
                                              double scale) const {
  check_qkv("attention_backward", q, k, v);
  check_qkv("attention_backward", q, grad_out, out);
  ZT_CHECK(lse.shape() == Shape({q.size(0), q.size(1), q.size(2)}) && lse.dtype() == lse_dtype(q.dtype()) &&
               lse.is_contiguous(),
           "attention_backward", "lse ", lse.describe(), " does not match q ", q.describe());
  const int64_t heads = q.size(0) * q.size(1), t_len = q.size(2), d = q.size(3), block = t_len * d;
  AttentionGrads g;
  g.dq = empty(q.shape(), q.dtype(), q.device());
  g.dk = empty(q.shape(), q.dtype(), q.device());
  g.dv = empty(q.shape(), q.dtype(), q.device());
  if (q.numel() == 0) return g;
  dispatch_float(q.dtype(), "attention_backward", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    auto in = [](const Tensor& t) { return static_cast<const T*>(t.raw_data()); };
    auto res = [](const Tensor& t) { return static_cast<T*>(t.raw_data()); };
    const C* lp = static_cast<const C*>(lse.raw_data());
#pragma omp parallel if (parallel_worth_it(heads, t_len, d))
    {
      HeadScratch<C> ws(t_len, d);
#pragma omp for schedule(static)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = h * block;
        C* dq = result_head<T, C>(res(g.dq) + at, block, ws.dq);
        C* dk = result_head<T, C>(res(g.dk) + at, block, ws.dk);
        C* dv = result_head<T, C>(res(g.dv) + at, block, ws.dv);
        head_backward<C>(ws, load_head<T, C>(in(q) + at, block, ws.q), load_head<T, C>(in(k) + at, block, ws.k),
                         load_head<T, C>(in(v) + at, block, ws.v), load_head<T, C>(in(out) + at, block, ws.o),
                         load_head<T, C>(in(grad_out) + at, block, ws.dout), lp + h * t_len, dq, dk, dv, causal,
                         static_cast<C>(scale));
        store_head<T, C>(res(g.dq) + at, block, ws.dq);
        store_head<T, C>(res(g.dk) + at, block, ws.dk);
        store_head<T, C>(res(g.dv) + at, block, ws.dv);
      }
    }
  });
  return g;
}

}  // namespace zt
