#include "parallel/tensor_parallel/sharding.h"

#include "core/ops.h"

namespace zt::tp {

namespace {

constexpr const char* kApi = "tensor_parallel";

int split_dim(TpSplit split) { return split == TpSplit::columns ? 1 : 0; }
int sections(TpSplit split) { return split == TpSplit::qkv_rows ? 3 : 1; }

// Elements of one index of dim 0 (the product of the other dims): the stride of a row.
int64_t row_elements(const Shape& s) {
  int64_t n = 1;
  for (size_t d = 1; d < s.size(); ++d) n *= s[d];
  return n;
}

}  // namespace

const char* tp_split_name(TpSplit split) {
  switch (split) {
    case TpSplit::replicated: return "replicated";
    case TpSplit::rows: return "rows";
    case TpSplit::columns: return "columns";
    case TpSplit::qkv_rows: return "qkv_rows";
  }
  return "?";
}

Shape shard_shape(const Shape& full, TpSplit split, int size, const char* what) {
  ZT_CHECK(size >= 1, kApi, "group size must be >= 1, got ", size);
  if (split == TpSplit::replicated) return full;
  const int d = split_dim(split);
  ZT_CHECK(static_cast<int64_t>(full.size()) > d, kApi, what, " ", shape_str(full), " has no dim ", d, " to split by ",
           tp_split_name(split));
  const int64_t parts = int64_t{size} * sections(split);
  ZT_CHECK(full[static_cast<size_t>(d)] % parts == 0, kApi, what, " ", shape_str(full), ": dim ", d, " (",
           full[static_cast<size_t>(d)], ") is not divisible by ", parts, " (", tp_split_name(split),
           " over tensor-parallel size ", size, ")");
  Shape out = full;
  out[static_cast<size_t>(d)] /= size;
  return out;
}

Tensor take_shard(const Tensor& full, TpSplit split, int rank, int size) {
  NoGradGuard no_grad;
  const Shape local = shard_shape(full.shape(), split, size);
  if (split == TpSplit::replicated) return clone(full.detach());
  const int d = split_dim(split);
  if (split != TpSplit::qkv_rows) {
    const int64_t n = local[static_cast<size_t>(d)];
    return contiguous(narrow(full.detach(), d, rank * n, n));
  }
  const int64_t section = full.size(0) / 3, n = section / size;
  std::vector<Tensor> parts;
  for (int s = 0; s < 3; ++s) parts.push_back(narrow(full.detach(), 0, s * section + rank * n, n));
  return cat(parts, 0);
}

Tensor join_shards(const std::vector<Tensor>& shards, TpSplit split) {
  NoGradGuard no_grad;
  ZT_CHECK(!shards.empty(), kApi, "join_shards needs at least one shard");
  if (split == TpSplit::replicated) return clone(shards[0].detach());
  if (split != TpSplit::qkv_rows) return cat(shards, split_dim(split));
  const int64_t n = shards[0].size(0) / 3;
  std::vector<Tensor> parts;
  for (int s = 0; s < 3; ++s)
    for (const Tensor& shard : shards) parts.push_back(narrow(shard.detach(), 0, s * n, n));
  return cat(parts, 0);
}

Tensor gather_shards(const Tensor& shard, TpSplit split, comm::Communicator& tp) {
  NoGradGuard no_grad;
  if (split == TpSplit::replicated || tp.size() == 1) return clone(shard.detach());
  Tensor mine = contiguous(shard.detach());
  Tensor all = empty({mine.numel() * tp.size()}, mine.dtype(), mine.device(), MemoryCategory::communication);
  tp.all_gather(reshape(mine, {mine.numel()}), all)->wait();
  std::vector<Tensor> shards;
  for (int r = 0; r < tp.size(); ++r)
    shards.push_back(view(narrow(all, 0, r * mine.numel(), mine.numel()), mine.shape()));
  return join_shards(shards, split);
}

Tensor randn_shard(const Shape& full, TpSplit split, int rank, int size, uint64_t seed, Device device) {
  NoGradGuard no_grad;
  const Shape local = shard_shape(full, split, size);
  switch (split) {
    case TpSplit::replicated: return randn(full, seed, 0, DType::f32, device);
    case TpSplit::rows:
      return randn(local, seed, static_cast<uint64_t>(rank * local[0] * row_elements(full)), DType::f32, device);
    case TpSplit::qkv_rows: {
      // Each section's shard is a contiguous range of the whole: draw it at its offset.
      const int64_t section = full[0] / 3, n = section / size, row = row_elements(full);
      Shape part = local;
      part[0] = n;
      std::vector<Tensor> parts;
      for (int s = 0; s < 3; ++s)
        parts.push_back(randn(part, seed, static_cast<uint64_t>((s * section + rank * n) * row), DType::f32, device));
      return cat(parts, 0);
    }
    case TpSplit::columns:
      // Columns are strided in the whole: draw it and cut (one parameter at a time, at start-up).
      return take_shard(randn(full, seed, 0, DType::f32, device), split, rank, size);
  }
  ZT_FAIL(kApi, "unknown split");
}

}  // namespace zt::tp
