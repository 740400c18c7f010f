// MeshLayout (Note [mesh layout]) against a naive enumeration: ranks counted in nested loops
// pp (outer), dp, tp (inner), and groups found by filtering all ranks on the other coordinates.
#include <gtest/gtest.h>

#include <functional>
#include <string>
#include <vector>

#include "parallel/mesh.h"

namespace zt {
namespace {

std::vector<MeshCoord> enumerate(const MeshShape& shape) {
  std::vector<MeshCoord> coords;
  for (int pp = 0; pp < shape.pp; ++pp)
    for (int dp = 0; dp < shape.dp; ++dp)
      for (int tp = 0; tp < shape.tp; ++tp) coords.push_back({dp, tp, pp});
  return coords;
}

bool same_group(const MeshCoord& a, const MeshCoord& b, MeshAxis axis) {
  switch (axis) {
    case MeshAxis::tp: return a.dp == b.dp && a.pp == b.pp;
    case MeshAxis::dp: return a.tp == b.tp && a.pp == b.pp;
    case MeshAxis::pp: return a.dp == b.dp && a.tp == b.tp;
  }
  return false;
}

int along(const MeshCoord& c, MeshAxis axis) {
  return axis == MeshAxis::tp ? c.tp : axis == MeshAxis::dp ? c.dp : c.pp;
}

const std::vector<MeshShape> kShapes = {{1, 1, 1}, {8, 1, 1}, {1, 8, 1}, {1, 1, 8}, {2, 2, 2},
                                        {3, 2, 1}, {2, 3, 4}, {4, 1, 3}, {1, 4, 2}, {5, 2, 3}};

TEST(MeshLayout, CoordinatesFollowTpFastestThenDpThenPp) {
  for (const MeshShape& shape : kShapes) {
    const int world = static_cast<int>(shape.world_size());
    MeshLayout layout(shape, world);
    std::vector<MeshCoord> expected = enumerate(shape);
    for (int r = 0; r < world; ++r) {
      MeshCoord c = layout.coord(r);
      EXPECT_EQ(c, expected[r]) << shape.str() << " rank " << r;
      EXPECT_EQ(layout.rank(c), r) << shape.str();
      EXPECT_EQ(r, c.pp * shape.dp * shape.tp + c.dp * shape.tp + c.tp);
    }
  }
}

TEST(MeshLayout, GroupsMatchNaiveFiltering) {
  for (const MeshShape& shape : kShapes) {
    const int world = static_cast<int>(shape.world_size());
    MeshLayout layout(shape, world);
    std::vector<MeshCoord> coords = enumerate(shape);
    for (MeshAxis axis : {MeshAxis::tp, MeshAxis::dp, MeshAxis::pp}) {
      for (int r = 0; r < world; ++r) {
        std::vector<int> want;  // ordered by the coordinate along the axis, which rises with rank
        for (int other = 0; other < world; ++other)
          if (same_group(coords[r], coords[other], axis)) want.push_back(other);
        const std::string what = shape.str() + " axis " + mesh_axis_name(axis) + " rank " + std::to_string(r);
        EXPECT_EQ(layout.group(r, axis), want) << what;
        EXPECT_EQ(static_cast<int>(want.size()), layout.axis_size(axis)) << what;
        EXPECT_EQ(layout.group_key(r, axis), along(coords[r], axis)) << what;
        for (int other = 0; other < world; ++other) {
          EXPECT_EQ(layout.group_color(r, axis) == layout.group_color(other, axis),
                    same_group(coords[r], coords[other], axis))
              << what << " vs rank " << other;
        }
      }
    }
  }
}

TEST(MeshLayout, TensorParallelGroupsAreConsecutiveRanks) {
  MeshLayout layout({2, 4, 2}, 16);
  EXPECT_EQ(layout.group(5, MeshAxis::tp), (std::vector<int>{4, 5, 6, 7}));
  EXPECT_EQ(layout.group(5, MeshAxis::dp), (std::vector<int>{1, 5}));
  EXPECT_EQ(layout.group(5, MeshAxis::pp), (std::vector<int>{5, 13}));
}

void expect_error(const std::function<void()>& fn, const std::string& expected) {
  try {
    fn();
    ADD_FAILURE() << "expected an error containing: " << expected;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << "error was: " << e.what();
  }
}

TEST(MeshLayout, BadShapesAreRefused) {
  expect_error([] { (void)MeshLayout({2, 2, 3}, 8).world_size(); },
               "[mesh] dp (2) x tp (2) x pp (3) = 12 but the world has 8 ranks");
  expect_error([] { (void)MeshLayout({1, 0, 1}, 1).world_size(); }, "[mesh] tp must be at least 1, got 0");
  expect_error([] { (void)MeshLayout({-2, 1, 1}, 2).world_size(); }, "[mesh] dp must be at least 1, got -2");
  MeshLayout layout({2, 2, 1}, 4);
  expect_error([&] { layout.coord(4); }, "[mesh] rank 4 is outside the world of 4 ranks");
  expect_error([&] { layout.rank({0, 2, 0}); },
               "[mesh] coordinate (dp 0, tp 2, pp 0) is outside dp (2) x tp (2) x pp (1)");
}

}  // namespace
}  // namespace zt
