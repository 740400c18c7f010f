// CPU kernels: scaled dot-product attention over q, k, v [B, H, T, D], causal or not.
//
// Each (batch, head) pair is an independent problem; OpenMP spreads the B * H pairs over threads,
// and each pair runs row by row, so at most one row of T scores is alive per thread. The forward
// keeps only lse (the log-sum-exp of each row of scaled scores) next to the output; the backward
// recomputes each probability as p_ij = exp(scale * q_i . k_j - lse_i) instead of storing the
// T x T matrix, like the CUDA kernel, and uses
//   delta_i = dO_i . O_i,  dV_j += p_ij dO_i,  dS_ij = p_ij (dO_i . v_j - delta_i),
//   dQ_i += scale dS_ij k_j,  dK_j += scale dS_ij q_i.
// dK and dV of one head are written by the one thread that owns the head, in row order, so the
// result is deterministic.
//
// Compute type: f32 (f64 for f64 inputs); bf16/f16 heads are widened into per-thread f32 buffers.
// lse is f32, or f64 for f64 inputs (so the f64 gradient checks are not capped at f32 precision).
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "kernels/cpu/cpu_backend.h"

namespace zt {

namespace {

template <typename C>
inline C dot(const C* a, const C* b, int64_t n) {
  C acc = 0;
#pragma omp simd reduction(+ : acc)
  for (int64_t i = 0; i < n; ++i) acc += a[i] * b[i];
  return acc;
}

template <typename C>
inline void axpy(C* y, C alpha, const C* x, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// One head: q, k, v, out [T, D]; lse [T]; scores is scratch of length T.
template <typename C>
void head_forward(const C* q, const C* k, const C* v, C* out, C* lse, C* scores, int64_t t_len, int64_t d,
                  bool causal, C scale) {
  for (int64_t i = 0; i < t_len; ++i) {
    const int64_t n = causal ? i + 1 : t_len;
    const C* qi = q + i * d;
    C m = -std::numeric_limits<C>::infinity();
    for (int64_t j = 0; j < n; ++j) {
      scores[j] = scale * dot(qi, k + j * d, d);
      m = std::max(m, scores[j]);
    }
    C l = 0;
    for (int64_t j = 0; j < n; ++j) {
      scores[j] = std::exp(scores[j] - m);
      l += scores[j];
    }
    C* oi = out + i * d;
    for (int64_t x = 0; x < d; ++x) oi[x] = 0;
    for (int64_t j = 0; j < n; ++j) axpy(oi, scores[j], v + j * d, d);
    const C inv = C(1) / l;
    for (int64_t x = 0; x < d; ++x) oi[x] *= inv;
    lse[i] = m + std::log(l);
  }
}

// One head's backward; dq, dk, dv [T, D] must be zero on entry.
template <typename C>
void head_backward(const C* q, const C* k, const C* v, const C* out, const C* dout, const C* lse, C* dq, C* dk, C* dv,
                   int64_t t_len, int64_t d, bool causal, C scale) {
  for (int64_t i = 0; i < t_len; ++i) {
    const int64_t n = causal ? i + 1 : t_len;
    const C* qi = q + i * d;
    const C* doi = dout + i * d;
    C* dqi = dq + i * d;
    const C delta = dot(doi, out + i * d, d);
    for (int64_t j = 0; j < n; ++j) {
      const C p = std::exp(scale * dot(qi, k + j * d, d) - lse[i]);
      axpy(dv + j * d, p, doi, d);
      const C ds = p * (dot(doi, v + j * d, d) - delta) * scale;
      axpy(dqi, ds, k + j * d, d);
      axpy(dk + j * d, ds, qi, d);
    }
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

// Where a head's output is computed: straight into dst when the types agree, else into `buffer`
// (zeroed) and narrowed by store_head.
template <typename T, typename C>
C* output_head(T* dst, int64_t n, std::vector<C>& buffer) {
  if constexpr (std::is_same_v<T, C>) {
    for (int64_t i = 0; i < n; ++i) dst[i] = C(0);
    return dst;
  } else {
    buffer.assign(static_cast<size_t>(n), C(0));
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

// Threads only pay off past a few hundred thousand multiply-adds (tiny heads in tests and gradient
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
  dispatch_float(q.dtype(), "attention", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    const T* qp = static_cast<const T*>(q.raw_data());
    const T* kp = static_cast<const T*>(k.raw_data());
    const T* vp = static_cast<const T*>(v.raw_data());
    T* op = static_cast<T*>(r.out.raw_data());
    C* lp = static_cast<C*>(r.lse.raw_data());
#pragma omp parallel if (parallel_worth_it(heads, t_len, d))
    {
      std::vector<C> qb, kb, vb, ob, scores(static_cast<size_t>(t_len));
#pragma omp for schedule(static)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = h * block;
        C* o = output_head<T, C>(op + at, block, ob);
        head_forward<C>(load_head<T, C>(qp + at, block, qb), load_head<T, C>(kp + at, block, kb),
                        load_head<T, C>(vp + at, block, vb), o, lp + h * t_len, scores.data(), t_len, d, causal,
                        static_cast<C>(scale));
        store_head<T, C>(op + at, block, ob);
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
  dispatch_float(q.dtype(), "attention_backward", [&]<typename T>() {
    using C = typename ComputeType<T>::type;
    auto in = [](const Tensor& t) { return static_cast<const T*>(t.raw_data()); };
    auto outp = [](const Tensor& t) { return static_cast<T*>(t.raw_data()); };
    const C* lp = static_cast<const C*>(lse.raw_data());
#pragma omp parallel if (parallel_worth_it(heads, t_len, d))
    {
      std::vector<C> qb, kb, vb, ob, dob, dqb, dkb, dvb;
#pragma omp for schedule(static)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t at = h * block;
        C* dq = output_head<T, C>(outp(g.dq) + at, block, dqb);
        C* dk = output_head<T, C>(outp(g.dk) + at, block, dkb);
        C* dv = output_head<T, C>(outp(g.dv) + at, block, dvb);
        head_backward<C>(load_head<T, C>(in(q) + at, block, qb), load_head<T, C>(in(k) + at, block, kb),
                         load_head<T, C>(in(v) + at, block, vb), load_head<T, C>(in(out) + at, block, ob),
                         load_head<T, C>(in(grad_out) + at, block, dob), lp + h * t_len, dq, dk, dv, t_len, d,
                         causal, static_cast<C>(scale));
        store_head<T, C>(outp(g.dq) + at, block, dqb);
        store_head<T, C>(outp(g.dk) + at, block, dkb);
        store_head<T, C>(outp(g.dv) + at, block, dvb);
      }
    }
  });
  return g;
}

}  // namespace zt
