#include "launch/input_staging.h"

#include <cstring>

#include "core/error.h"
#include "core/ops.h"

namespace zt {

Tensor InputStaging::upload(const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  ZT_CHECK(static_cast<int64_t>(tokens.size()) == B * T, "input_staging", "got ", tokens.size(), " tokens for [", B,
           ", ", T, "]");
  if (!device_.is_cuda()) return from_vector(tokens, {B, T}, device_);
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  slot.fence.wait();  // its previous copy has finished: the buffer may be rewritten
  if (!slot.host.defined() || slot.host.numel() != B * T) {
    auto impl = std::make_shared<TensorImpl>();
    impl->storage = std::make_shared<Storage>(static_cast<size_t>(B * T) * sizeof(int32_t),
                                              cuda::pinned_host_allocator(), MemoryCategory::other);
    impl->shape = {B * T};
    impl->strides = {1};
    impl->dtype = DType::i32;
    slot.host = Tensor(std::move(impl));
  }
  std::memcpy(slot.host.raw_data(), tokens.data(), tokens.size() * sizeof(int32_t));
  Tensor out = empty({B, T}, DType::i32, device_);
  slot.fence = cuda::upload_async(out.raw_data(), device_.index, slot.host.raw_data(), out.nbytes());
  return out;
}

}  // namespace zt
