#include "core/tensor.h"

#include <sstream>

#include "core/autograd.h"
#include "core/backend.h"

namespace zt {

std::string shape_str(const Shape& shape) {
  std::ostringstream out;
  out << "[";
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t shape_numel(const Shape& shape) {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

Shape contiguous_strides(const Shape& shape) {
  Shape strides(shape.size());
  int64_t stride = 1;
  for (size_t i = shape.size(); i-- > 0;) {
    strides[i] = stride;
    stride *= std::max<int64_t>(shape[i], 1);
  }
  return strides;
}

Storage::Storage(size_t nbytes, Device device, MemoryCategory category)
    : nbytes_(nbytes), device_(device), category_(category), allocator_(&allocator_for(device)) {
  data_ = allocator_->allocate(nbytes, category);
}

Storage::Storage(size_t nbytes, Allocator& allocator, MemoryCategory category)
    : nbytes_(nbytes), device_(allocator.device()), category_(category), allocator_(&allocator) {
  data_ = allocator_->allocate(nbytes, category);
}

Storage::Storage(void* external, size_t nbytes, Device device) : data_(external), nbytes_(nbytes), device_(device) {}

void Storage::release_memory() noexcept {
  if (allocator_ != nullptr && data_ != nullptr) allocator_->deallocate(data_, nbytes_, category_);
  data_ = nullptr;
}

void Storage::acquire_memory() {
  ZT_CHECK(allocator_ != nullptr, "storage", "external memory cannot be re-acquired");
  if (data_ == nullptr && nbytes_ > 0) data_ = allocator_->allocate(nbytes_, category_);
}

Storage::~Storage() {
  if (allocator_ != nullptr && data_ != nullptr) allocator_->deallocate(data_, nbytes_, category_);
}

TensorImpl& Tensor::impl() const {
  ZT_CHECK(impl_ != nullptr, "tensor", "use of an undefined tensor");
  return *impl_;
}

int64_t Tensor::size(int64_t d) const {
  int64_t n = dim();
  ZT_CHECK(d >= -n && d < n, "tensor.size", "dim ", d, " out of range for a ", n, "-d tensor ", shape_str(shape()));
  return shape()[static_cast<size_t>(d < 0 ? d + n : d)];
}

bool Tensor::is_contiguous() const {
  if (numel() == 0) return true;
  const auto& sh = shape();
  const auto& st = strides();
  int64_t expected = 1;
  for (size_t i = sh.size(); i-- > 0;) {
    if (sh[i] == 1) continue;
    if (st[i] != expected) return false;
    expected *= sh[i];
  }
  return true;
}

std::string Tensor::describe() const {
  if (!defined()) return "undefined";
  return shape_str(shape()) + " " + dtype_name(dtype()) + " " + device().str();
}

void* Tensor::raw_data() const {
  ZT_CHECK(impl().storage->has_memory(), "tensor", "the memory of ", shape_str(shape()), " ",
           impl().name.empty() ? std::string("tensor") : "'" + impl().name + "'",
           " has been released (a ZeRO-3 parameter used while its unit is not gathered?)");
  return static_cast<char*>(impl().storage->data()) + impl().offset * static_cast<int64_t>(dtype_size(dtype()));
}

void Tensor::check_data_type(DType wanted) const {
  DType have = dtype() == DType::boolean ? DType::u8 : dtype();
  ZT_CHECK(have == wanted, "tensor.data", "tensor is ", dtype_name(dtype()), ", accessed as ", dtype_name(wanted));
}

template <typename T>
std::vector<T> Tensor::to_vector() const {
  ZT_CHECK(dtype_of<T>() == dtype() || (dtype() == DType::boolean && dtype_of<T>() == DType::u8), "tensor.to_vector",
           "tensor is ", dtype_name(dtype()), ", requested ", dtype_name(dtype_of<T>()));
  Tensor src = *this;
  std::vector<T> out(static_cast<size_t>(numel()));
  if (out.empty()) return out;
  if (!is_contiguous() || device().is_cuda()) {
    // Gather on the tensor's own device, then copy the bytes to the host.
    Tensor dense = empty(shape(), dtype(), device(), MemoryCategory::other);
    backend_for(device()).copy_strided(src, dense);
    src = dense;
  }
  backend_for(src.device()).copy_bytes(out.data(), Device::cpu(), src.raw_data(), src.device(), src.nbytes());
  return out;
}

template std::vector<float> Tensor::to_vector<float>() const;
template std::vector<double> Tensor::to_vector<double>() const;
template std::vector<bf16> Tensor::to_vector<bf16>() const;
template std::vector<f16> Tensor::to_vector<f16>() const;
template std::vector<int32_t> Tensor::to_vector<int32_t>() const;
template std::vector<int64_t> Tensor::to_vector<int64_t>() const;
template std::vector<uint8_t> Tensor::to_vector<uint8_t>() const;

double Tensor::item() const {
  ZT_CHECK(numel() == 1, "tensor.item", "needs exactly one element, tensor is ", describe());
  return dispatch_all(dtype(), "tensor.item", [&]<typename T>() -> double {
    return static_cast<double>(to_compute(to_vector<T>()[0]));
  });
}

Tensor& Tensor::set_requires_grad(bool value) {
  ZT_CHECK(!value || is_floating(dtype()), "tensor.set_requires_grad", "only floating tensors can require grad, not ",
           describe());
  ZT_CHECK(is_leaf(), "tensor.set_requires_grad", "only leaves can be marked; this tensor was made by ",
           grad_fn()->name());
  impl().requires_grad = value;
  return *this;
}

void Tensor::set_grad(const Tensor& g) {
  if (g.defined()) {
    ZT_CHECK(g.shape() == shape(), "tensor.set_grad", "gradient ", g.describe(), " does not match tensor ", describe());
  }
  impl().grad = g.defined() ? g.impl_ptr() : nullptr;
}

void Tensor::register_grad_ready_hook(GradHook hook) {
  ZT_CHECK(is_leaf() && requires_grad(), "tensor.register_grad_ready_hook",
           "hooks go on leaves that require grad; tensor is ", describe());
  impl().grad_ready_hooks.push_back(std::move(hook));
}

Tensor Tensor::detach() const {
  auto out = std::make_shared<TensorImpl>();
  out->storage = impl().storage;
  out->shape = shape();
  out->strides = strides();
  out->offset = offset();
  out->dtype = dtype();
  out->name = impl().name;
  return Tensor(std::move(out));
}

Tensor& Tensor::set_name(std::string n) {
  impl().name = std::move(n);
  return *this;
}

Tensor empty(const Shape& shape, DType dtype, Device device) {
  return empty(shape, dtype, device, MemoryCategoryScope::current());
}

Tensor empty(const Shape& shape, DType dtype, Device device, MemoryCategory category) {
  for (int64_t s : shape) ZT_CHECK(s >= 0, "empty", "negative size in shape ", shape_str(shape));
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = std::make_shared<Storage>(static_cast<size_t>(shape_numel(shape)) * dtype_size(dtype), device, category);
  impl->shape = shape;
  impl->strides = contiguous_strides(shape);
  impl->dtype = dtype;
  return Tensor(std::move(impl));
}

Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset) {
  auto impl = std::make_shared<TensorImpl>();
  impl->storage = base.storage();
  impl->shape = std::move(shape);
  impl->strides = std::move(strides);
  impl->offset = offset;
  impl->dtype = base.dtype();
  return Tensor(std::move(impl));
}

}  // namespace zt
