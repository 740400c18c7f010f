// Helpers for the CUDA tests: every CUDA kernel is checked against the CPU backend's kernel on the
// same random inputs (never zeros), element by element, with tolerances by dtype.
//
// Inputs are made on the host directly from core/rng.h (no CPU kernel needed to make them), moved
// to the GPU with the CUDA backend's copy_bytes, and results come back through to_vector.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "core/backend.h"
#include "core/cuda_support.h"
#include "core/rng.h"
#include "core/tensor.h"

namespace zt::test {

// Skips the test on machines without a usable GPU (ctest reports it as skipped).
#define ZT_REQUIRE_GPU()                                                      \
  do {                                                                        \
    if (::zt::cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";    \
  } while (0)

inline const Backend& cpu() { return cpu_backend(); }
inline const Backend& gpu() { return cuda::backend(); }
inline Device gpu_device() { return Device::cuda(0); }

// Writes value(i) into every element of a fresh contiguous CPU tensor.
template <typename F>
Tensor make_cpu(const Shape& shape, DType dtype, F&& value) {
  Tensor t = empty(shape, dtype, Device::cpu());
  dispatch_all(dtype, "test", [&]<typename T>() {
    T* p = static_cast<T*>(t.raw_data());
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = from_compute<T>(static_cast<typename ComputeType<T>::type>(value(i)));
  });
  return t;
}

// shift + scale * N(0, 1), drawn from seed.
inline Tensor randn_cpu(const Shape& shape, DType dtype, uint64_t seed, double scale = 1.0, double shift = 0.0) {
  return make_cpu(shape, dtype, [&](int64_t i) { return shift + scale * rng::normal(seed, static_cast<uint64_t>(i)); });
}

// Uniform in [lo, hi).
inline Tensor uniform_cpu(const Shape& shape, DType dtype, uint64_t seed, double lo, double hi) {
  return make_cpu(shape, dtype,
                  [&](int64_t i) { return lo + (hi - lo) * rng::uniform(seed, static_cast<uint64_t>(i)); });
}

// Integers in [lo, hi).
inline Tensor randint_cpu(const Shape& shape, DType dtype, uint64_t seed, int64_t lo, int64_t hi) {
  return make_cpu(shape, dtype, [&](int64_t i) {
    return static_cast<double>(lo + static_cast<int64_t>(rng::uniform(seed, static_cast<uint64_t>(i)) *
                                                         static_cast<double>(hi - lo)));
  });
}

// A copy of a contiguous tensor on the other device.
inline Tensor to_gpu(const Tensor& t) {
  Tensor g = empty(t.shape(), t.dtype(), gpu_device());
  gpu().copy_bytes(g.raw_data(), g.device(), t.raw_data(), t.device(), t.nbytes());
  return g;
}

inline Tensor to_cpu(const Tensor& t) {
  Tensor c = empty(t.shape(), t.dtype(), Device::cpu());
  gpu().copy_bytes(c.raw_data(), Device::cpu(), t.raw_data(), t.device(), t.nbytes());
  return c;
}

// The input for a CPU reference: f32 widened to f64 (an exact copy), so that long f32 sums on the
// CPU are not the less exact side of the comparison; other dtypes as they are (their rounding is
// part of what is compared).
inline Tensor reference(const Tensor& x) {
  if (x.dtype() != DType::f32) return x;
  Tensor wide = empty(x.shape(), DType::f64, Device::cpu());
  cpu().copy_strided(x.device().is_cpu() ? x : to_cpu(x), wide);
  return wide;
}

// Every element as a double (any device, dtype or layout).
inline std::vector<double> as_doubles(const Tensor& t) {
  std::vector<double> out;
  dispatch_all(t.dtype(), "test", [&]<typename T>() {
    for (const T& v : t.template to_vector<T>()) out.push_back(static_cast<double>(to_compute(v)));
  });
  return out;
}

// The raw bytes of every element, in row-major order (for bit-exact comparisons).
inline std::vector<unsigned char> as_bytes(const Tensor& t) {
  std::vector<unsigned char> out;
  dispatch_all(t.dtype(), "test", [&]<typename T>() {
    std::vector<T> v = t.template to_vector<T>();
    out.resize(v.size() * sizeof(T));
    if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  });
  return out;
}

// rel: per element |got - want| <= abs + rel * |want|; abs is rel times `scale` (the magnitude the
// computation works at, so that results that cancel to near zero are not judged relatively).
struct Tol {
  double rel;
  double abs_factor = 1.0;  // abs = rel * abs_factor * scale
};

// f32 ~1e-5, bf16 ~1e-2 (8 bits of mantissa: one rounding is 4e-3), f16 ~2e-3, f64 ~1e-12.
inline Tol tol_for(DType d) {
  switch (d) {
    case DType::f64: return {1e-12};
    case DType::f32: return {1e-5};
    case DType::bf16: return {1e-2};
    case DType::f16: return {2e-3};
    default: return {0.0};
  }
}

inline double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

// Checks every element of got against want (any devices); `scale` defaults to max |want|.
inline void expect_close(const Tensor& got, const Tensor& want, Tol tol, const std::string& what, double scale = -1) {
  ASSERT_TRUE(got.defined()) << what << ": result undefined";
  ASSERT_TRUE(want.defined()) << what << ": reference undefined";
  ASSERT_EQ(shape_str(got.shape()), shape_str(want.shape())) << what;
  const std::vector<double> g = as_doubles(got), w = as_doubles(want);
  if (scale < 0) scale = std::max(max_abs(w), 1e-30);
  const double abs_tol = tol.rel * tol.abs_factor * scale;
  int64_t bad = 0;
  std::string first;
  double err2 = 0, ref2 = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const double d = std::abs(g[i] - w[i]);
    err2 += std::isfinite(d) ? d * d : 0.0;
    ref2 += w[i] * w[i];
    const bool ok = (std::isnan(w[i]) && std::isnan(g[i])) || (std::isinf(w[i]) && g[i] == w[i]) ||
                    d <= abs_tol + tol.rel * std::abs(w[i]);
    if (!ok) {
      if (bad < 5)
        first += "\n  [" + std::to_string(i) + "] got " + std::to_string(g[i]) + ", want " + std::to_string(w[i]);
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << g.size() << " elements off (rel " << tol.rel << ", abs "
                    << abs_tol << "); relative norm error " << std::sqrt(err2 / std::max(ref2, 1e-300)) << first;
}

inline void expect_same_bits(const Tensor& got, const Tensor& want, const std::string& what) {
  ASSERT_EQ(shape_str(got.shape()), shape_str(want.shape())) << what;
  ASSERT_EQ(got.dtype(), want.dtype()) << what;
  const auto g = as_bytes(got), w = as_bytes(want);
  ASSERT_EQ(g.size(), w.size()) << what;
  const size_t elem = dtype_size(got.dtype());
  size_t bad = 0, first = g.size();
  for (size_t i = 0; i < g.size(); i += elem) {
    if (std::memcmp(&g[i], &w[i], elem) != 0) {
      if (bad == 0) first = i / elem;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " elements differ in their bits, first at " << first;
}

// Runs fn and checks that it throws zt::Error whose message contains every part.
template <typename F>
void expect_error(F&& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "expected an error mentioning '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

inline std::vector<DType> float_types() { return {DType::f32, DType::bf16, DType::f16}; }

}  // namespace zt::test
