// Learning-rate schedules: linear warm-up, then cosine or linear decay to min_lr_ratio x lr, or constant.
#pragma once

#include <cstdint>

namespace zt {

enum class ScheduleKind { warmup_cosine, linear, constant };

struct LrSchedule {
  ScheduleKind kind = ScheduleKind::warmup_cosine;
  double lr = 3e-4;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  double min_lr_ratio = 0.1;

  // Learning rate for 0-based step `step`.
  double at(int64_t step) const;
};

}  // namespace zt
