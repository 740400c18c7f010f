// Small definitions for dtype.h, device.h and error.h.
#include <cmath>
#include <string>

#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace zt {

namespace detail {
void throw_assert(const char* cond, const char* file, int line, const std::string& msg) {
  throw Error(concat("internal error: ", cond, " failed at ", file, ":", line, msg.empty() ? "" : ": ", msg));
}
}  // namespace detail

size_t dtype_size(DType d) {
  switch (d) {
    case DType::f32: return 4;
    case DType::f64: return 8;
    case DType::bf16: return 2;
    case DType::f16: return 2;
    case DType::i32: return 4;
    case DType::i64: return 8;
    case DType::u8: return 1;
    case DType::boolean: return 1;
  }
  return 0;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::bf16: return "bf16";
    case DType::f16: return "f16";
    case DType::i32: return "i32";
    case DType::i64: return "i64";
    case DType::u8: return "u8";
    case DType::boolean: return "bool";
  }
  return "?";
}

DType dtype_from_name(std::string_view name) {
  for (DType d : {DType::f32, DType::f64, DType::bf16, DType::f16, DType::i32, DType::i64, DType::u8, DType::boolean})
    if (name == dtype_name(d)) return d;
  ZT_FAIL("dtype", "unknown dtype '", name, "'; accepted: f32, f64, bf16, f16, i32, i64, u8, bool");
}

void throw_dtype_error(const char* api, DType got, const char* accepted) {
  ZT_FAIL(api, "dtype ", dtype_name(got), " is not supported here; accepted: ", accepted);
}

// IEEE half conversions with round to nearest even (subnormals included).
float f16_to_float(f16 h) {
  uint32_t sign = (h.bits & 0x8000u) << 16;
  uint32_t exp = (h.bits >> 10) & 0x1f;
  uint32_t mant = h.bits & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal: normalise
      int e = -1;
      do {
        ++e;
        mant <<= 1;
      } while ((mant & 0x400u) == 0);
      u = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (mant & 0x3ffu) << 13;
    }
  } else if (exp == 0x1f) {
    u = sign | 0x7f800000u | mant << 13;
  } else {
    u = sign | (exp + 127 - 15) << 23 | mant << 13;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

f16 float_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  uint32_t sign = (u >> 16) & 0x8000u;
  uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) return f16{static_cast<uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0))};
  if (abs >= 0x477ff000u) return f16{static_cast<uint16_t>(sign | 0x7c00u)};  // overflow to inf
  if (abs < 0x38800000u) {  // subnormal or zero in half
    float af;
    std::memcpy(&af, &abs, 4);
    // Scale so that the half subnormal unit is 1, and round to nearest even by the FPU.
    float scaled = af * 16777216.0f;  // 2^24
    uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return f16{static_cast<uint16_t>(sign | m)};
  }
  uint32_t mant = abs & 0x7fffffu;
  uint32_t exp = (abs >> 23) - 127 + 15;
  uint32_t half = exp << 10 | mant >> 13;
  uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) ++half;
  return f16{static_cast<uint16_t>(sign | half)};
}

std::string Device::str() const { return is_cpu() ? "cpu" : "cuda:" + std::to_string(index); }

Device Device::parse(std::string_view text) {
  if (text == "cpu") return cpu();
  if (text == "cuda") return cuda(0);
  if (text.starts_with("cuda:")) {
    std::string rest(text.substr(5));
    try {
      size_t used = 0;
      int index = std::stoi(rest, &used);
      if (used == rest.size() && index >= 0) return cuda(index);
    } catch (const std::exception&) {
    }
  }
  ZT_FAIL("device", "unknown device '", text, "'; accepted: cpu, cuda, cuda:N");
}

}  // namespace zt
