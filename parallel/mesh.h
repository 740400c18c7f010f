// Mesh: the world's ranks arranged as pp x dp x tp, and a communicator per axis.
//
// Note [mesh layout]: tp varies fastest, then dp, then pp:
//     rank = pp_idx * (dp * tp) + dp_idx * tp + tp_idx
// so the ranks of one tensor-parallel group are consecutive (on one node, over NVLink: tp
// communicates every layer), data-parallel groups stride by tp, and pipeline stages are the
// outermost blocks (point-to-point traffic only, the cheapest to send between nodes). Group rank
// along an axis equals the coordinate along it: tp().rank() == coord().tp, pp().rank() is the
// pipeline stage.
//
// MeshLayout is the pure arithmetic (no communication, unit-testable); Mesh makes the subgroup
// communicators with split(). Grad norms need no extra group: each rank's parameter shard is
// distinct, so one all-reduce over world counts every parameter once.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "parallel/comm/communicator.h"

namespace zt {

struct MeshShape {
  int dp = 1;
  int tp = 1;
  int pp = 1;
  int64_t world_size() const { return int64_t{dp} * tp * pp; }
  std::string str() const;  // "dp (2) x tp (2) x pp (3)"
};

struct MeshCoord {
  int dp = 0;
  int tp = 0;
  int pp = 0;
  friend bool operator==(const MeshCoord&, const MeshCoord&) = default;
};

enum class MeshAxis : uint8_t { tp, dp, pp };
const char* mesh_axis_name(MeshAxis axis);

class MeshLayout {
 public:
  // Throws "[mesh] ..." unless every axis is at least 1 and their product is world_size.
  MeshLayout(MeshShape shape, int world_size);

  const MeshShape& shape() const { return shape_; }
  int world_size() const { return world_size_; }
  int axis_size(MeshAxis axis) const;
  MeshCoord coord(int rank) const;
  int rank(const MeshCoord& coord) const;
  // The world ranks of `rank`'s group along `axis`, ordered by the coordinate along it.
  std::vector<int> group(int rank, MeshAxis axis) const;
  // Arguments of split() that form those groups: ranks agreeing on the other two coordinates share
  // a color; the key is the coordinate along the axis.
  int group_color(int rank, MeshAxis axis) const;
  int group_key(int rank, MeshAxis axis) const;

 private:
  void check_rank(int rank) const;
  MeshShape shape_;
  int world_size_;
};

class Mesh {
 public:
  // Collective over world: every rank calls it with the same shape. Splits tp, dp, pp in that order.
  // world must outlive the Mesh.
  Mesh(comm::Communicator& world, MeshShape shape);

  const MeshLayout& layout() const { return layout_; }
  const MeshShape& shape() const { return layout_.shape(); }
  const MeshCoord& coord() const { return coord_; }
  comm::Communicator& world() const { return world_; }
  comm::Communicator& tp() const { return *tp_; }
  comm::Communicator& dp() const { return *dp_; }
  comm::Communicator& pp() const { return *pp_; }
  comm::Communicator& group(MeshAxis axis) const;

 private:
  comm::Communicator& world_;
  MeshLayout layout_;
  MeshCoord coord_;
  std::unique_ptr<comm::Communicator> tp_, dp_, pp_;
};

}  // namespace zt
