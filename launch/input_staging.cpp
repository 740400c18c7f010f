#include "launch/input_staging.h"

#include <cstring>

#include "core/error.h"
#include "core/ops.h"
#include "parallel/zero/offload.h"

namespace zt {

Tensor InputStaging::upload(const std::vector<int32_t>& tokens, int64_t B, int64_t T) {
  ZT_CHECK(static_cast<int64_t>(tokens.size()) == B * T, "input_staging", "got ", tokens.size(), " tokens for [", B,
           ", ", T, "]");
  if (!device_.is_cuda()) return from_vector(tokens, {B, T}, device_);
  Slot& slot = slots_[next_];
  next_ = (next_ + 1) % slots_.size();
  slot.fence.wait();  // its previous copy has finished: the buffer may be rewritten
  if (!slot.host.defined() || slot.host.numel() != B * T)
    slot.host = zero::empty_host(B * T, DType::i32, MemoryCategory::other, /*pinned=*/true);
  std::memcpy(slot.host.raw_data(), tokens.data(), tokens.size() * sizeof(int32_t));
  Tensor out = empty({B, T}, DType::i32, device_);
  slot.fence = cuda::upload_async(out.raw_data(), device_.index, slot.host.raw_data(), out.nbytes());
  return out;
}

}  // namespace zt
