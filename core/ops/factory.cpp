// Factories: fresh tensors with no autograd history.
#include <algorithm>
#include <cmath>

#include "core/backend.h"
#include "core/ops.h"

namespace zt {

Tensor full(const Shape& shape, double value, DType dtype, Device device) {
  Tensor t = empty(shape, dtype, device);
  backend_for(device).fill(t, value);
  return t;
}

Tensor zeros(const Shape& shape, DType dtype, Device device) { return full(shape, 0.0, dtype, device); }
Tensor ones(const Shape& shape, DType dtype, Device device) { return full(shape, 1.0, dtype, device); }

template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device) {
  ZT_CHECK(static_cast<int64_t>(values.size()) == shape_numel(shape), "from_vector", values.size(),
           " values do not fill shape ", shape_str(shape));
  Tensor t = empty(shape, dtype_of<T>(), device);
  backend_for(device).copy_bytes(t.raw_data(), device, values.data(), Device::cpu(), t.nbytes());
  return t;
}
template Tensor from_vector<float>(const std::vector<float>&, const Shape&, Device);
template Tensor from_vector<double>(const std::vector<double>&, const Shape&, Device);
template Tensor from_vector<bf16>(const std::vector<bf16>&, const Shape&, Device);
template Tensor from_vector<f16>(const std::vector<f16>&, const Shape&, Device);
template Tensor from_vector<int32_t>(const std::vector<int32_t>&, const Shape&, Device);
template Tensor from_vector<int64_t>(const std::vector<int64_t>&, const Shape&, Device);
template Tensor from_vector<uint8_t>(const std::vector<uint8_t>&, const Shape&, Device);

Tensor from_vector_as(const std::vector<double>& values, const Shape& shape, DType dtype, Device device) {
  Tensor f64 = from_vector(values, shape, Device::cpu());
  Tensor out = empty(shape, dtype, Device::cpu());
  cpu_backend().copy_strided(f64, out);
  return device.is_cpu() ? out : to(out, device);
}

Tensor arange(int64_t n, DType dtype, Device device) {
  std::vector<double> values(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) values[static_cast<size_t>(i)] = static_cast<double>(i);
  return from_vector_as(values, {n}, dtype, device);
}

namespace {
Tensor random_tensor(const Shape& shape, RandomKind kind, uint64_t seed, uint64_t offset, DType dtype, Device device) {
  ZT_CHECK(is_floating(dtype), kind == RandomKind::normal ? "randn" : "rand_uniform", "needs a floating dtype, got ",
           dtype_name(dtype));
  Tensor t = empty(shape, dtype, device);
  backend_for(device).random_fill(t, kind, seed, offset);
  return t;
}
}  // namespace

Tensor randn(const Shape& shape, uint64_t seed, uint64_t offset, DType dtype, Device device) {
  return random_tensor(shape, RandomKind::normal, seed, offset, dtype, device);
}

Tensor rand_uniform(const Shape& shape, uint64_t seed, uint64_t offset, DType dtype, Device device) {
  return random_tensor(shape, RandomKind::uniform, seed, offset, dtype, device);
}

Tensor randint(const Shape& shape, int64_t high, uint64_t seed, uint64_t offset, DType dtype, Device device) {
  ZT_CHECK(high > 0, "randint", "high must be positive, got ", high);
  ZT_CHECK(dtype == DType::i32 || dtype == DType::i64, "randint", "dtype must be i32 or i64, got ", dtype_name(dtype));
  Tensor u = rand_uniform(shape, seed, offset, DType::f64, Device::cpu());
  std::vector<double> v = u.to_vector<double>();
  for (double& x : v) x = std::min(static_cast<double>(high - 1), std::floor(x * static_cast<double>(high)));
  return from_vector_as(v, shape, dtype, device);
}

}  // namespace zt
