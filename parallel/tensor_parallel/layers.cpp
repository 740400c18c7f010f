#include "parallel/tensor_parallel/layers.h"

#include <vector>

#include "core/ops.h"
#include "parallel/tensor_parallel/comm_ops.h"

namespace zt::tp {

Tensor enter_tp_region(const Tensor& x, const TpGroup& tp) {
  if (!tp.active()) return x;
  return tp.sequence_parallel ? gather_from_sequence_parallel(x, *tp.comm, 1) : copy_to_tp(x, *tp.comm);
}

Tensor leave_tp_region(const Tensor& partial, const TpGroup& tp) {
  if (!tp.active()) return partial;
  return tp.sequence_parallel ? reduce_scatter_to_sequence_parallel(partial, *tp.comm, 1)
                              : reduce_from_tp(partial, *tp.comm);
}

Tensor column_parallel_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const TpGroup& tp,
                              bool gather_output) {
  if (!tp.active()) return linear(x, weight, bias);
  Tensor y = linear(enter_tp_region(x, tp), weight, bias);
  return gather_output ? gather_from_tp(y, *tp.comm, -1) : y;
}

Tensor row_parallel_linear(const Tensor& x, const Tensor& weight, const Tensor& bias, const TpGroup& tp) {
  if (!tp.active()) return linear(x, weight, bias);
  Tensor y = leave_tp_region(linear(x, weight), tp);
  return bias.defined() ? add(y, bias) : y;
}

Tensor parallel_mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2,
                    const TpGroup& tp) {
  if (!tp.active()) return mlp(x, w1, b1, w2, b2);
  Tensor y = leave_tp_region(mlp(enter_tp_region(x, tp), w1, b1, w2, Tensor()), tp);
  return b2.defined() ? add(y, b2) : y;
}

Tensor vocab_parallel_embedding(const Tensor& weight, const Tensor& ids, const TpGroup& tp) {
  const char* api = "vocab_parallel_embedding";
  if (!tp.active()) return embedding(weight, ids);
  ZT_CHECK(weight.defined() && weight.dim() == 2, api, "weight must be [V/tp, C], got ",
           weight.defined() ? weight.describe() : std::string("undefined"));
  ZT_CHECK(ids.defined() && (ids.dtype() == DType::i32 || ids.dtype() == DType::i64), api,
           "ids must be i32 or i64, got ", ids.defined() ? ids.describe() : std::string("undefined"));
  const int64_t rows = weight.size(0), begin = tp.rank() * rows, vocab = rows * tp.size();
  // The rank's local ids (0 where the id belongs to another rank) and a 1/0 row mask.
  std::vector<int64_t> all = ids.dtype() == DType::i64 ? ids.to_vector<int64_t>() : [&] {
    std::vector<int64_t> v;
    for (int32_t t : ids.to_vector<int32_t>()) v.push_back(t);
    return v;
  }();
  std::vector<int64_t> local(all.size());
  std::vector<double> mask(all.size());
  for (size_t i = 0; i < all.size(); ++i) {
    const int64_t t = all[i];
    ZT_CHECK(t >= 0 && t < vocab, api, "token id ", t, " at position ", i, " is outside the vocabulary [0, ", vocab,
             ")");
    const bool mine = t >= begin && t < begin + rows;
    local[i] = mine ? t - begin : 0;
    mask[i] = mine ? 1.0 : 0.0;
  }
  Shape mask_shape = ids.shape();
  mask_shape.push_back(1);
  Tensor local_ids = from_vector(local, ids.shape(), ids.device());
  Tensor row_mask = from_vector_as(mask, mask_shape, weight.dtype(), weight.device());
  return leave_tp_region(mul(embedding(weight, local_ids), row_mask), tp);
}

Tensor sequence_shard_dropout(const Tensor& x, double p, uint64_t seed, int64_t full_seq_len, int64_t seq_start) {
  ZT_CHECK(x.dim() >= 2 && seq_start + x.size(1) <= full_seq_len, "sequence_shard_dropout", "shard ", x.describe(),
           " at position ", seq_start, " does not fit a sequence of ", full_seq_len);
  const int64_t inner = x.numel() / (x.size(0) * x.size(1));
  std::vector<Tensor> rows;
  for (int64_t b = 0; b < x.size(0); ++b) {
    const auto offset = static_cast<uint64_t>((b * full_seq_len + seq_start) * inner);
    rows.push_back(dropout(narrow(x, 0, b, 1), p, seed, offset));
  }
  return rows.size() == 1 ? rows[0] : cat(rows, 0);
}

}  // namespace zt::tp
