// Tensor: a handle (shared pointer) to shape, strides, offset, dtype and storage, plus autograd
// metadata. Copying a Tensor copies the handle; views share storage. Ops never write into their
// inputs (the only in-place functions are the *_ functions in core/ops.h, used by optimizers and
// communication without autograd), so a saved tensor is never changed behind the tape's back.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/error.h"

namespace zt {

using Shape = std::vector<int64_t>;

std::string shape_str(const Shape& shape);  // "[2, 3]"
int64_t shape_numel(const Shape& shape);
Shape contiguous_strides(const Shape& shape);

// A buffer from an Allocator. Freed (returned to its allocator) when the last reference goes.
class Storage {
 public:
  Storage(size_t nbytes, Device device, MemoryCategory category);
  // From a given allocator (pinned host memory, say) instead of the device's own.
  Storage(size_t nbytes, Allocator& allocator, MemoryCategory category);
  // Wrap memory the caller owns (for example a pinned host buffer or an mmap'd file); not freed.
  Storage(void* external, size_t nbytes, Device device);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }
  MemoryCategory category() const { return category_; }

  // Note [Releasable storage]: ZeRO-3 gathers a unit's parameters into one storage before use and
  // gives the memory back afterwards. The Storage object (and so every view of it, including the
  // ones autograd saved for backward) stays; only its memory comes and goes. Using a tensor whose
  // storage is released is an error, not a crash.
  void release_memory() noexcept;
  void acquire_memory();
  bool has_memory() const { return data_ != nullptr || nbytes_ == 0; }

 private:
  void* data_ = nullptr;
  size_t nbytes_ = 0;
  Device device_;
  MemoryCategory category_ = MemoryCategory::other;
  Allocator* allocator_ = nullptr;  // null for external memory
};

class Tensor;
class Node;
using GradHook = std::function<void(const Tensor& grad)>;

struct TensorImpl {
  std::shared_ptr<Storage> storage;
  Shape shape;
  Shape strides;  // in elements
  int64_t offset = 0;  // in elements
  DType dtype = DType::f32;

  // Autograd (core/autograd.h). A leaf that requires grad accumulates into `grad`; a non-leaf
  // points at the node that made it (grad_fn) and which of that node's outputs it is.
  bool requires_grad = false;
  std::shared_ptr<Node> grad_fn;
  int output_nr = 0;
  std::shared_ptr<TensorImpl> grad;
  std::weak_ptr<Node> grad_accumulator;   // created on first use, owned by the graph
  std::vector<GradHook> grad_ready_hooks;  // run once per backward, after the leaf's grad is complete
  std::string name;                        // optional, for error messages and checkpoints
};

class Tensor {
 public:
  Tensor() = default;
  explicit Tensor(std::shared_ptr<TensorImpl> impl) : impl_(std::move(impl)) {}

  bool defined() const { return impl_ != nullptr; }
  const Shape& shape() const { return impl().shape; }
  const Shape& strides() const { return impl().strides; }
  int64_t offset() const { return impl().offset; }
  int64_t dim() const { return static_cast<int64_t>(impl().shape.size()); }
  int64_t size(int64_t d) const;  // negative d counts from the end
  int64_t numel() const { return shape_numel(impl().shape); }
  size_t nbytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype()); }
  DType dtype() const { return impl().dtype; }
  Device device() const { return impl().storage->device(); }
  bool is_contiguous() const;
  const std::shared_ptr<Storage>& storage() const { return impl().storage; }
  std::string describe() const;  // "[2, 3] f32 cpu", for error messages

  // Raw data at this tensor's offset. Only meaningful for contiguous access on the right device.
  void* raw_data() const;
  template <typename T>
  T* data() const {
    check_data_type(dtype_of<T>());
    return static_cast<T*>(raw_data());
  }

  // Host-side access (copies from the device when needed). item() needs exactly one element.
  template <typename T>
  std::vector<T> to_vector() const;
  double item() const;

  // Autograd.
  bool requires_grad() const { return impl().requires_grad; }
  Tensor& set_requires_grad(bool value);
  bool is_leaf() const { return impl().grad_fn == nullptr; }
  Tensor grad() const { return impl().grad ? Tensor(impl().grad) : Tensor(); }
  void set_grad(const Tensor& g);
  void zero_grad() { impl().grad.reset(); }
  const std::shared_ptr<Node>& grad_fn() const { return impl().grad_fn; }
  // Called with the leaf's complete gradient once per backward pass (data parallel and ZeRO start
  // reducing from here while the rest of backward goes on).
  void register_grad_ready_hook(GradHook hook);
  Tensor detach() const;  // shares storage, no autograd history
  const std::string& name() const { return impl().name; }
  Tensor& set_name(std::string n);

  TensorImpl& impl() const;
  const std::shared_ptr<TensorImpl>& impl_ptr() const { return impl_; }
  bool same(const Tensor& other) const { return impl_ == other.impl_; }

 private:
  void check_data_type(DType wanted) const;
  std::shared_ptr<TensorImpl> impl_;
};

// A tensor over fresh storage (contiguous). The category defaults to MemoryCategoryScope::current().
Tensor empty(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor empty(const Shape& shape, DType dtype, Device device, MemoryCategory category);
// A tensor viewing an existing storage.
Tensor make_view(const Tensor& base, Shape shape, Shape strides, int64_t offset);

}  // namespace zt
