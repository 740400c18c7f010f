// Runtime element types. Kernels dispatch on DType with templates inside; no compile-time modes.
// bf16 and f16 are stored as 16-bit patterns; the conversions round to nearest even, as the
// hardware does, so CPU and GPU produce the same bits for the same float.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <type_traits>

namespace zt {

enum class DType : uint8_t { f32, f64, bf16, f16, i32, i64, u8, boolean };

size_t dtype_size(DType dtype);
const char* dtype_name(DType dtype);
DType dtype_from_name(std::string_view name);  // throws on unknown names, listing the accepted ones
inline bool is_floating(DType d) { return d == DType::f32 || d == DType::f64 || d == DType::bf16 || d == DType::f16; }
inline bool is_half(DType d) { return d == DType::bf16 || d == DType::f16; }

struct bf16 {
  uint16_t bits = 0;
};
struct f16 {
  uint16_t bits = 0;
};

inline float bf16_to_float(bf16 h) {
  uint32_t u = static_cast<uint32_t>(h.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline bf16 float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return bf16{static_cast<uint16_t>(u >> 16)};
}

float f16_to_float(f16 h);
f16 float_to_f16(float f);

// The compute type for an element type: halves compute in f32 (DESIGN: bf16 and f16 through f32).
template <typename T>
struct ComputeType {
  using type = T;
};
template <>
struct ComputeType<bf16> {
  using type = float;
};
template <>
struct ComputeType<f16> {
  using type = float;
};

template <typename T>
inline typename ComputeType<T>::type to_compute(T v) {
  return v;
}
template <>
inline float to_compute<bf16>(bf16 v) {
  return bf16_to_float(v);
}
template <>
inline float to_compute<f16>(f16 v) {
  return f16_to_float(v);
}

// Narrows to f32 rounding to odd (truncate, then set the last bit when inexact), so that a second
// rounding to bf16 or f16 gives the correctly rounded result of the original value.
template <typename C>
inline float to_float_round_to_odd(C v) {
  float f = static_cast<float>(v);
  if constexpr (std::is_same_v<C, double>) {
    if (static_cast<double>(f) != v && std::isfinite(f)) {
      if (std::fabs(static_cast<double>(f)) > std::fabs(v)) f = std::nextafter(f, 0.0f);
      uint32_t u;
      std::memcpy(&u, &f, 4);
      u |= 1u;
      std::memcpy(&f, &u, 4);
    }
  }
  return f;
}

template <typename T, typename C>
inline T from_compute(C v) {
  if constexpr (std::is_same_v<T, bf16>) {
    return float_to_bf16(to_float_round_to_odd(v));
  } else if constexpr (std::is_same_v<T, f16>) {
    return float_to_f16(to_float_round_to_odd(v));
  } else {
    return static_cast<T>(v);
  }
}

[[noreturn]] void throw_dtype_error(const char* api, DType got, const char* accepted);

// dispatch_float(dtype, "api", [&]<typename T>() { ... }) calls the lambda with T = float, double,
// bf16 or f16; dispatch_all also covers the integer and bool types (bool as uint8_t).
template <typename F>
decltype(auto) dispatch_float(DType dtype, const char* api, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<bf16>();
    case DType::f16: return f.template operator()<f16>();
    default: break;
  }
  throw_dtype_error(api, dtype, "f32, f64, bf16 or f16");
}

template <typename F>
decltype(auto) dispatch_all(DType dtype, const char* api, F&& f) {
  switch (dtype) {
    case DType::f32: return f.template operator()<float>();
    case DType::f64: return f.template operator()<double>();
    case DType::bf16: return f.template operator()<bf16>();
    case DType::f16: return f.template operator()<f16>();
    case DType::i32: return f.template operator()<int32_t>();
    case DType::i64: return f.template operator()<int64_t>();
    case DType::u8: return f.template operator()<uint8_t>();
    case DType::boolean: return f.template operator()<uint8_t>();
  }
  throw_dtype_error(api, dtype, "any dtype");
}

template <typename T>
constexpr DType dtype_of();
template <>
constexpr DType dtype_of<float>() { return DType::f32; }
template <>
constexpr DType dtype_of<double>() { return DType::f64; }
template <>
constexpr DType dtype_of<bf16>() { return DType::bf16; }
template <>
constexpr DType dtype_of<f16>() { return DType::f16; }
template <>
constexpr DType dtype_of<int32_t>() { return DType::i32; }
template <>
constexpr DType dtype_of<int64_t>() { return DType::i64; }
template <>
constexpr DType dtype_of<uint8_t>() { return DType::u8; }

}  // namespace zt
