// Learning-rate schedules, gradient clipping and the dynamic loss scaler against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "core/ops.h"
#include "optim/clip.h"
#include "optim/loss_scaler.h"
#include "optim/schedule.h"

namespace zt {
namespace {

TEST(LrSchedule, WarmupThenCosineToTheFloor) {
  LrSchedule s{ScheduleKind::warmup_cosine, 1e-3, 10, 110, 0.1};
  EXPECT_DOUBLE_EQ(s.at(0), 1e-4);   // (0 + 1) / 10 of the peak
  EXPECT_DOUBLE_EQ(s.at(9), 1e-3);
  EXPECT_DOUBLE_EQ(s.at(10), 1e-3);  // cosine starts at the peak
  EXPECT_NEAR(s.at(60), 1e-4 + 0.5 * 9e-4 * (1 + std::cos(std::numbers::pi * 0.5)), 1e-15);
  EXPECT_NEAR(s.at(110), 1e-4, 1e-15);
  EXPECT_NEAR(s.at(500), 1e-4, 1e-15);  // past the end: the floor
}

TEST(LrSchedule, LinearAndConstant) {
  LrSchedule lin{ScheduleKind::linear, 2.0, 0, 100, 0.5};
  EXPECT_DOUBLE_EQ(lin.at(0), 2.0);
  EXPECT_DOUBLE_EQ(lin.at(50), 1.5);
  EXPECT_DOUBLE_EQ(lin.at(100), 1.0);
  LrSchedule c{ScheduleKind::constant, 3.0, 5, 100, 0.1};
  EXPECT_DOUBLE_EQ(c.at(0), 3.0);
  EXPECT_DOUBLE_EQ(c.at(99), 3.0);
}

TEST(Clip, NormIsOverEveryElementAndScaleCapsIt) {
  Tensor a = from_vector<float>({3, 4}, {2});
  Tensor b = from_vector<float>({12}, {1});
  EXPECT_DOUBLE_EQ(grad_norm_squared({a, Tensor(), b}), 9 + 16 + 144);  // undefined gradients skipped
  EXPECT_NEAR(clip_scale(13.0, 1.0), 1.0 / (13.0 + 1e-6), 1e-15);
  EXPECT_DOUBLE_EQ(clip_scale(0.5, 1.0), 1.0);
  EXPECT_DOUBLE_EQ(clip_scale(13.0, 0.0), 1.0);  // clipping off
  EXPECT_TRUE(grads_finite({a, b}));
  EXPECT_FALSE(grads_finite({a, from_vector<float>({1.0f, std::nanf("")}, {2})}));
  EXPECT_FALSE(grads_finite({from_vector<float>({INFINITY}, {1})}));
}

TEST(LossScaler, BacksOffOnOverflowAndGrowsAfterCleanSteps) {
  LossScalerConfig c;
  c.enabled = true;
  c.initial_scale = 1024;
  c.growth = 2;
  c.backoff = 0.5;
  c.growth_interval = 3;
  LossScaler s(c);
  EXPECT_FALSE(s.update(false));  // overflow: skip and halve
  EXPECT_DOUBLE_EQ(s.scale(), 512);
  EXPECT_EQ(s.skipped_steps(), 1);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_DOUBLE_EQ(s.scale(), 512);
  EXPECT_TRUE(s.update(true));  // third clean step in a row: grow
  EXPECT_DOUBLE_EQ(s.scale(), 1024);
  EXPECT_EQ(s.clean_steps(), 0);
  s.restore(8, 2, 5);
  EXPECT_TRUE(s.update(true));
  EXPECT_DOUBLE_EQ(s.scale(), 16);
  EXPECT_EQ(s.skipped_steps(), 5);
}

TEST(LossScaler, DisabledNeverScalesButReportsOverflow) {
  LossScaler s;
  EXPECT_DOUBLE_EQ(s.scale(), 1.0);
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));
  EXPECT_DOUBLE_EQ(s.scale(), 1.0);
}

TEST(LossScaler, NeverBelowTheMinimum) {
  LossScalerConfig c;
  c.enabled = true;
  c.initial_scale = 2;
  c.min_scale = 1;
  LossScaler s(c);
  for (int i = 0; i < 5; ++i) s.update(false);
  EXPECT_DOUBLE_EQ(s.scale(), 1.0);
}

}  // namespace
}  // namespace zt
