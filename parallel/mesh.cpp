#include "parallel/mesh.h"

#include "core/error.h"

namespace zt {

std::string MeshShape::str() const { return detail::concat("dp (", dp, ") x tp (", tp, ") x pp (", pp, ")"); }

const char* mesh_axis_name(MeshAxis axis) {
  switch (axis) {
    case MeshAxis::tp: return "tp";
    case MeshAxis::dp: return "dp";
    case MeshAxis::pp: return "pp";
  }
  return "?";
}

MeshLayout::MeshLayout(MeshShape shape, int world_size) : shape_(shape), world_size_(world_size) {
  ZT_CHECK(shape.dp >= 1, "mesh", "dp must be at least 1, got ", shape.dp);
  ZT_CHECK(shape.tp >= 1, "mesh", "tp must be at least 1, got ", shape.tp);
  ZT_CHECK(shape.pp >= 1, "mesh", "pp must be at least 1, got ", shape.pp);
  ZT_CHECK(shape.world_size() == world_size, "mesh", shape.str(), " = ", shape.world_size(), " but the world has ",
           world_size, " ranks");
}

int MeshLayout::axis_size(MeshAxis axis) const {
  switch (axis) {
    case MeshAxis::tp: return shape_.tp;
    case MeshAxis::dp: return shape_.dp;
    case MeshAxis::pp: return shape_.pp;
  }
  return 1;
}

void MeshLayout::check_rank(int rank) const {
  ZT_CHECK(rank >= 0 && rank < world_size_, "mesh", "rank ", rank, " is outside the world of ", world_size_, " ranks");
}

MeshCoord MeshLayout::coord(int rank) const {
  check_rank(rank);
  MeshCoord c;
  c.tp = rank % shape_.tp;
  c.dp = (rank / shape_.tp) % shape_.dp;
  c.pp = rank / (shape_.tp * shape_.dp);
  return c;
}

int MeshLayout::rank(const MeshCoord& c) const {
  ZT_CHECK(c.tp >= 0 && c.tp < shape_.tp && c.dp >= 0 && c.dp < shape_.dp && c.pp >= 0 && c.pp < shape_.pp, "mesh",
           "coordinate (dp ", c.dp, ", tp ", c.tp, ", pp ", c.pp, ") is outside ", shape_.str());
  return c.pp * shape_.dp * shape_.tp + c.dp * shape_.tp + c.tp;
}

std::vector<int> MeshLayout::group(int rank, MeshAxis axis) const {
  MeshCoord c = coord(rank);
  std::vector<int> ranks;
  for (int i = 0; i < axis_size(axis); ++i) {
    MeshCoord member = c;
    if (axis == MeshAxis::tp) member.tp = i;
    if (axis == MeshAxis::dp) member.dp = i;
    if (axis == MeshAxis::pp) member.pp = i;
    ranks.push_back(this->rank(member));
  }
  return ranks;
}

int MeshLayout::group_color(int rank, MeshAxis axis) const {
  MeshCoord c = coord(rank);
  switch (axis) {
    case MeshAxis::tp: return c.pp * shape_.dp + c.dp;
    case MeshAxis::dp: return c.pp * shape_.tp + c.tp;
    case MeshAxis::pp: return c.dp * shape_.tp + c.tp;
  }
  return 0;
}

int MeshLayout::group_key(int rank, MeshAxis axis) const {
  MeshCoord c = coord(rank);
  switch (axis) {
    case MeshAxis::tp: return c.tp;
    case MeshAxis::dp: return c.dp;
    case MeshAxis::pp: return c.pp;
  }
  return 0;
}

Mesh::Mesh(comm::Communicator& world, MeshShape shape)
    : world_(world), layout_(shape, world.size()), coord_(layout_.coord(world.rank())) {
  auto make = [&](MeshAxis axis) {
    const int r = world_.rank();
    std::unique_ptr<comm::Communicator> group = world_.split(layout_.group_color(r, axis), layout_.group_key(r, axis));
    ZT_ASSERT(group && group->size() == layout_.axis_size(axis) && group->rank() == layout_.group_key(r, axis),
              "mesh ", mesh_axis_name(axis), " group of rank ", r, " came out wrong");
    return group;
  };
  tp_ = make(MeshAxis::tp);
  dp_ = make(MeshAxis::dp);
  pp_ = make(MeshAxis::pp);
}

comm::Communicator& Mesh::group(MeshAxis axis) const {
  switch (axis) {
    case MeshAxis::tp: return *tp_;
    case MeshAxis::dp: return *dp_;
    case MeshAxis::pp: return *pp_;
  }
  return *tp_;
}

}  // namespace zt
