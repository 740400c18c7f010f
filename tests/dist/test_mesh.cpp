// ranks: 4 8
// Mesh subgroups for every factorisation of the world into dp x tp x pp: each group's members,
// found by all-gathering world ranks over it, must be the ranks a naive enumeration puts there.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "parallel/comm/mpi_communicator.h"
#include "parallel/mesh.h"

namespace zt {
namespace {

std::vector<MeshShape> factorisations(int world) {
  std::vector<MeshShape> shapes;
  for (int dp = 1; dp <= world; ++dp)
    for (int tp = 1; tp <= world; ++tp)
      for (int pp = 1; pp <= world; ++pp)
        if (dp * tp * pp == world) shapes.push_back({dp, tp, pp});
  return shapes;
}

// World ranks sharing the other two coordinates with `rank`, by nested loops pp, dp, tp.
std::vector<int> naive_group(const MeshShape& s, int rank, MeshAxis axis) {
  std::vector<int> members;
  MeshCoord mine{};
  int r = 0;
  for (int pp = 0; pp < s.pp; ++pp)
    for (int dp = 0; dp < s.dp; ++dp)
      for (int tp = 0; tp < s.tp; ++tp, ++r)
        if (r == rank) mine = {dp, tp, pp};
  r = 0;
  for (int pp = 0; pp < s.pp; ++pp)
    for (int dp = 0; dp < s.dp; ++dp)
      for (int tp = 0; tp < s.tp; ++tp, ++r) {
        bool same = axis == MeshAxis::tp   ? (dp == mine.dp && pp == mine.pp)
                    : axis == MeshAxis::dp ? (tp == mine.tp && pp == mine.pp)
                                           : (dp == mine.dp && tp == mine.tp);
        if (same) members.push_back(r);
      }
  return members;
}

std::vector<int> gather_world_ranks(comm::Communicator& group, int world_rank) {
  Tensor mine = empty({1}, DType::i32);
  *static_cast<int32_t*>(mine.raw_data()) = world_rank;
  Tensor all = empty({group.size()}, DType::i32);
  group.all_gather(mine, all)->wait();
  const int32_t* p = static_cast<const int32_t*>(all.raw_data());
  return std::vector<int>(p, p + group.size());
}

TEST(Mesh, GroupsForEveryLayout) {
  auto world = comm::MpiCommunicator::world();
  const int rank = world->rank();
  for (const MeshShape& shape : factorisations(world->size())) {
    Mesh mesh(*world, shape);
    const std::string what = shape.str() + " rank " + std::to_string(rank);
    EXPECT_EQ(mesh.coord(), mesh.layout().coord(rank)) << what;
    for (MeshAxis axis : {MeshAxis::tp, MeshAxis::dp, MeshAxis::pp}) {
      comm::Communicator& group = mesh.group(axis);
      std::vector<int> want = naive_group(shape, rank, axis);
      EXPECT_EQ(gather_world_ranks(group, rank), want) << what << " axis " << mesh_axis_name(axis);
      EXPECT_EQ(group.size(), static_cast<int>(want.size())) << what;
      EXPECT_EQ(group.rank(), mesh.layout().group_key(rank, axis)) << what;
    }
    EXPECT_EQ(mesh.tp().rank(), mesh.coord().tp) << what;
    EXPECT_EQ(mesh.dp().rank(), mesh.coord().dp) << what;
    EXPECT_EQ(mesh.pp().rank(), mesh.coord().pp) << what;
    EXPECT_EQ(&mesh.world(), world.get());

    // A reduction over dp sums exactly the members' values (world rank + 1).
    Tensor t = empty({1}, DType::f64);
    *static_cast<double*>(t.raw_data()) = rank + 1.0;
    mesh.dp().all_reduce(t, comm::ReduceOp::sum)->wait();
    double want_sum = 0;
    for (int r : naive_group(shape, rank, MeshAxis::dp)) want_sum += r + 1.0;
    EXPECT_EQ(*static_cast<double*>(t.raw_data()), want_sum) << what;
  }
}

TEST(Mesh, WrongWorldSizeIsRefused) {
  auto world = comm::MpiCommunicator::world();
  const std::string n = std::to_string(world->size());
  try {
    Mesh mesh(*world, {2, 2, 3});
    ADD_FAILURE() << "a 12-rank mesh was accepted on " << n << " ranks";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "[mesh] dp (2) x tp (2) x pp (3) = 12 but the world has " + n + " ranks");
  }
  EXPECT_THROW(Mesh(*world, {world->size(), 0, 1}), Error);
}

}  // namespace
}  // namespace zt
