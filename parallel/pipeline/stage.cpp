#include "parallel/pipeline/stage.h"

#include "core/autograd.h"
#include "core/error.h"

namespace zt::pipeline {

namespace {

constexpr const char* kApi = "pipeline";

int tag(MessageTag t) { return static_cast<int>(t); }

// Identity on the tied embedding whose backward also adds the head copy's gradient when one is
// pending (Note [Pipeline tied embedding]); the slot is emptied so it is added exactly once.
class AddHeadGradient final : public Node {
 public:
  explicit AddHeadGradient(std::shared_ptr<Tensor> pending) : pending_(std::move(pending)) {}
  std::string name() const override { return "PipelineAddHeadGradient"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    if (!pending_->defined()) return {grads[0]};
    Tensor extra = *pending_;
    *pending_ = Tensor();
    return {grads[0].defined() ? add(grads[0], extra) : extra};
  }

 private:
  std::shared_ptr<Tensor> pending_;
};

}  // namespace

StagePlan::StagePlan(const StagePartition& partition, int pp, int rank) : pp_(pp), rank_(rank) {
  ZT_CHECK(pp >= 1, kApi, "pp must be >= 1 (got ", pp, ")");
  ZT_CHECK(rank >= 0 && rank < pp, kApi, "pipeline rank ", rank, " is not in [0, ", pp, ")");
  const int stages = partition.num_stages();
  ZT_CHECK(stages >= pp && stages % pp == 0, kApi, "the partition has ", stages,
           " stages; it needs a multiple of pp (", pp, "): pp x virtual chunks");
  num_blocks_ = partition.num_blocks();
  for (int c = 0; c < stages / pp; ++c) {
    ChunkPlacement p;
    p.stage = c * pp + rank;
    p.first_block = partition.begin(p.stage);
    p.end_block = partition.end(p.stage);
    ZT_CHECK(p.end_block > p.first_block, kApi, "stage ", p.stage, " has no blocks");
    p.first = p.stage == 0;
    p.last = p.stage == stages - 1;
    chunks_.push_back(p);
  }
}

const ChunkPlacement& StagePlan::chunk(int c) const {
  ZT_CHECK(c >= 0 && c < num_chunks(), kApi, "chunk ", c, " is not in [0, ", num_chunks(), ") on pipeline rank ",
           rank_);
  return chunks_[static_cast<size_t>(c)];
}

std::vector<bool> StagePlan::owned_units() const {
  std::vector<bool> owned(static_cast<size_t>(num_blocks_) + 2, false);
  for (const ChunkPlacement& p : chunks_) {
    if (p.first) owned.front() = true;
    if (p.last) owned.back() = true;
    for (int b = p.first_block; b < p.end_block; ++b) owned[static_cast<size_t>(b) + 1] = true;
  }
  return owned;
}

StageSource::StageSource(ParameterSource& inner, const StagePlan& plan, comm::Communicator& pp, Shape head_shape,
                         DType dtype, Device device)
    : inner_(inner),
      plan_(plan),
      pp_(pp),
      head_shape_(std::move(head_shape)),
      dtype_(dtype),
      device_(device),
      pending_grad_(std::make_shared<Tensor>()) {
  ZT_CHECK(pp.size() == plan.pp() && pp.rank() == plan.rank(), kApi, "the pipeline group has rank ", pp.rank(),
           " of ", pp.size(), " but the stage plan is for rank ", plan.rank(), " of ", plan.pp());
  if (plan_.holds_head_copy()) {
    MemoryCategoryScope scope(MemoryCategory::parameters);
    head_ = zeros(head_shape_, dtype_, device_);
    head_.set_requires_grad(true).set_name("head_copy(wte.weight)");
  }
}

StageSource::~StageSource() {
  try {
    wait_sends();
  } catch (...) {
  }
}

std::vector<Tensor> StageSource::acquire(int unit) {
  if (unit == 0 && plan_.holds_head_copy()) return {head_};  // only the head uses unit 0 here
  std::vector<Tensor> params = inner_.acquire(unit);
  if (unit == 0 && plan_.pp() > 1 && needs_grad({&params[0]})) {
    auto node = std::make_shared<AddHeadGradient>(pending_grad_);
    Tensor wte = params[0].detach();
    record(node, {params[0]}, {&wte});
    params[0] = wte;
  }
  return params;
}

void StageSource::release(int unit) {
  if (unit == 0 && plan_.holds_head_copy()) return;
  inner_.release(unit);
}

Tensor StageSource::unit_output(int unit, const Tensor& out) {
  if (unit == 0 && plan_.holds_head_copy()) return out;
  return inner_.unit_output(unit, out);
}

void StageSource::send_head_grad() {
  if (!plan_.holds_head_copy()) return;
  Tensor grad = head_.grad();
  if (!grad.defined()) grad = zeros(head_shape_, dtype_, device_);  // no micro-batch reached the head
  sends_.push_back(pp_.send(contiguous(grad), plan_.first_stage_rank(), tag(MessageTag::head_grad)));
  head_.zero_grad();
}

void StageSource::receive_head_grad() {
  if (plan_.pp() == 1 || !plan_.holds_first_stage()) return;
  MemoryCategoryScope scope(MemoryCategory::gradients);
  Tensor grad = empty(head_shape_, dtype_, device_);
  pp_.recv(grad, plan_.last_stage_rank(), tag(MessageTag::head_grad))->wait();
  ZT_CHECK(!pending_grad_->defined(), kApi, "internal error: a head gradient was received twice in one step");
  *pending_grad_ = grad;
}

void StageSource::sync_head() {
  if (plan_.pp() == 1) return;
  NoGradGuard no_grad;
  if (plan_.holds_first_stage()) {
    Tensor wte = inner_.acquire(0)[0];
    ZT_CHECK(wte.shape() == head_shape_ && wte.dtype() == dtype_, kApi, "the tied embedding is ", wte.describe(),
             " but the head copy was declared ", shape_str(head_shape_), " ", dtype_name(dtype_));
    pp_.send(contiguous(wte), plan_.last_stage_rank(), tag(MessageTag::head_weight))->wait();
    inner_.release(0);
  } else if (plan_.holds_head_copy()) {
    pp_.recv(head_, plan_.first_stage_rank(), tag(MessageTag::head_weight))->wait();
  }
}

void StageSource::wait_sends() {
  for (auto& w : sends_) w->wait();
  sends_.clear();
}

}  // namespace zt::pipeline
