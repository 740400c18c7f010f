#include "parallel/zero/flat_layout.h"

#include <algorithm>

#include "core/error.h"

namespace zt::zero {

int64_t shard_elements(int64_t numel, int dp) {
  ZT_CHECK(dp >= 1, "zero", "data-parallel size must be >= 1, got ", dp);
  return std::max<int64_t>(1, (numel + dp - 1) / dp);
}

UnitLayout make_unit_layout(int unit, const std::vector<int>& params, const std::vector<int64_t>& sizes, int dp) {
  ZT_CHECK(params.size() == sizes.size(), "zero", "unit ", unit, ": ", params.size(), " parameters but ",
           sizes.size(), " sizes");
  UnitLayout l;
  l.unit = unit;
  l.params = params;
  l.sizes = sizes;
  for (int64_t s : sizes) {
    l.offsets.push_back(l.numel);
    l.numel += s;
  }
  l.shard = shard_elements(l.numel, dp);
  l.padded = l.shard * dp;
  return l;
}

std::vector<ShardSegment> UnitLayout::segments(int rank) const {
  const int64_t begin = rank * shard, end = begin + shard;
  std::vector<ShardSegment> out;
  for (size_t i = 0; i < params.size(); ++i) {
    const int64_t a = std::max(begin, offsets[i]), b = std::min(end, offsets[i] + sizes[i]);
    if (a < b) out.push_back({params[i], a - begin, b - begin, a - offsets[i]});
  }
  return out;
}

std::vector<bool> offloaded_units(const std::vector<int64_t>& unit_elements, double fraction) {
  ZT_CHECK(fraction > 0.0 && fraction <= 1.0, "offloaded_units", "fraction must be in (0, 1], got ", fraction);
  int64_t total = 0;
  for (int64_t n : unit_elements) total += n;
  const double target = fraction * static_cast<double>(total);
  std::vector<bool> offloaded(unit_elements.size(), false);
  double taken = 0;
  for (size_t i = unit_elements.size(); i-- > 0;) {
    const double n = static_cast<double>(unit_elements[i]);
    if (n == 0) continue;
    if (fraction >= 1.0 || taken + n / 2 <= target) {
      offloaded[i] = true;
      taken += n;
    }
  }
  return offloaded;
}

}  // namespace zt::zero
