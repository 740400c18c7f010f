#include "parallel/zero/zero_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/backend.h"
#include "optim/clip.h"

namespace zt::zero {

struct ZeroEngine::Unit {
  UnitLayout layout;
  int shard_rank = 0;
  std::shared_ptr<Storage> full_storage;  // compute dtype, layout.padded elements
  Tensor full;                            // [padded] over full_storage
  Tensor compute_shard;                   // [shard]: own storage under stage 3 (host memory with
                                          // offload_params), else a view of full
  Tensor master, exp_avg, exp_avg_sq;     // f32 [shard] (host memory when offloaded); master
                                          // may alias compute_shard
  bool master_aliases_compute = false;
  bool offloaded = false;                 // offload_optimizer covers this unit (Note [Partial optimizer
                                          // offload]): master, moments and host_grad in host memory
  Tensor grad_full;                       // [padded], compute dtype (stages 2-3: only while reducing)
  Tensor grad_shard;                      // [shard]: a view of grad_full (stages 0-1) or its own (2-3,
                                          // undefined when offloaded)
  Tensor host_grad;                       // offloaded: f32 [shard] in host memory
  bool host_grad_stale = false;           // host_grad holds an earlier step's sum: the next gradient
                                          // is written over it (GradientLanding::land's `first`)
  bool compute_current = false;           // the step wrote compute_shard already (fused AdamW copy)
  std::vector<ShardSegment> segments;
  bool empty = false;                     // this rank holds none of the unit (a pipeline stage's others)
  int ready = 0;                          // parameters whose gradient arrived this micro-batch
  bool grads_done = false;                // this micro-batch's gradient is complete (and reduced)
  bool gathered = false;                  // stage 3: full holds memory
  comm::WorkPtr gather_work, reduce_work;
  int bucket = -1;
};

struct ZeroEngine::Bucket {
  std::vector<int> units;
  Tensor buffer;
  int ready_units = 0;
  comm::WorkPtr work;
};

namespace {

Tensor own_slice(const Tensor& flat, int64_t shard, int rank) { return narrow(flat, 0, rank * shard, shard); }

// Note [ZeRO-3 gather and release]: the identity node on a unit's output. Its backward runs before
// any backward node of the unit (they consume its gradient), so the unit is gathered just in time.
// Activation checkpointing (models/checkpointing.h) re-runs a unit's forward inside backward: that
// replay acquires the unit (gathering it if the node above did not already) and, with the tape on,
// releases it; release() then keeps it, since the replayed nodes' backward follows at once, and
// on_unit_ready() frees it when its gradients are complete. So a recomputed unit costs no extra
// all-gather, and at most the units of one recomputed segment (plus the prefetched one) are held.
class GatherBeforeBackward final : public Node {
 public:
  GatherBeforeBackward(std::function<void()> gather) : gather_(std::move(gather)) {}
  std::string name() const override { return "ZeroGatherBeforeBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    gather_();
    return {grads[0]};
  }

 private:
  std::function<void()> gather_;
};

}  // namespace

ZeroEngine::ZeroEngine(std::vector<Parameter>& params, int num_units, comm::Communicator& dp, AdamWConfig adamw,
                       ZeroConfig config)
    : params_(params), dp_(dp), adamw_(adamw), config_(config) {
  ZT_CHECK(config_.stage >= 0 && config_.stage <= 3, "zero", "stage must be 0, 1, 2 or 3, got ", config_.stage);
  ZT_CHECK(!params_.empty(), "zero", "no parameters");
  ZT_CHECK(is_floating(config_.compute_dtype) && config_.compute_dtype != DType::f64, "zero",
           "compute dtype must be f32, bf16 or f16, got ", dtype_name(config_.compute_dtype));
  device_ = params_[0].tensor.device();
  ZT_CHECK(dp_.device() == device_, "zero", "parameters are on ", device_.str(), " but the data-parallel group is on ",
           dp_.device().str());
  const int dp_size = config_.stage == 0 ? 1 : dp_.size();
  const int shard_rank = config_.stage == 0 ? 0 : dp_.rank();
  const DType cdt = config_.compute_dtype;
  ZT_CHECK(!config_.offload_params || config_.stage == 3, "zero",
           "offload_params needs stage 3 (only ZeRO-3 keeps a parameter shard to offload), got stage ", config_.stage);
  ZT_CHECK(!config_.offload_optimizer ||
               (config_.offload_optimizer_fraction > 0.0 && config_.offload_optimizer_fraction <= 1.0),
           "zero", "offload_optimizer_fraction must be in (0, 1], got ", config_.offload_optimizer_fraction);
  const Device param_device = config_.offload_params ? Device::cpu() : device_;
  if ((config_.offload_optimizer || config_.offload_params) && device_.is_cuda()) {
    host_buffers_.gradients.pin();
    host_buffers_.parameters.pin();
  }

  unit_of_param_.assign(params_.size(), -1);
  index_in_unit_.assign(params_.size(), -1);
  std::vector<std::vector<int>> members(static_cast<size_t>(num_units));
  ZT_CHECK(num_units >= 1, "zero", "num_units must be >= 1, got ", num_units);
  for (size_t i = 0; i < params_.size(); ++i) {
    const int u = params_[i].unit;
    ZT_CHECK(u >= 0 && u < num_units, "zero", "parameter '", params_[i].name, "' has unit ", u, ", outside [0, ",
             num_units, ")");
    ZT_CHECK(params_[i].tensor.device() == device_, "zero", "parameter '", params_[i].name, "' is on ",
             params_[i].tensor.device().str(), ", others on ", device_.str());
    unit_of_param_[i] = u;
    index_in_unit_[i] = static_cast<int>(members[static_cast<size_t>(u)].size());
    members[static_cast<size_t>(u)].push_back(static_cast<int>(i));
  }

  // Note [Partial optimizer offload]: the same choice on every rank (equal shard sizes).
  std::vector<bool> offloaded(static_cast<size_t>(num_units), false);
  if (config_.offload_optimizer) {
    std::vector<int64_t> unit_elements(static_cast<size_t>(num_units), 0);
    for (size_t i = 0; i < params_.size(); ++i)
      unit_elements[static_cast<size_t>(params_[i].unit)] += params_[i].tensor.numel();
    offloaded = offloaded_units(unit_elements, config_.offload_optimizer_fraction);
  }

  // Offloaded units are laid out first: each unit's original parameters are freed as its flat
  // buffer takes their place, so the device's peak during construction is the steady state (flat
  // parameters and the device units' states), not that plus the offloaded units' originals (f32,
  // twice their compute size) still waiting.
  std::vector<int> order;
  for (int pass = 0; pass < 2; ++pass)
    for (int u = 0; u < num_units; ++u)
      if (offloaded[static_cast<size_t>(u)] == (pass == 0)) order.push_back(u);
  units_.resize(static_cast<size_t>(num_units));

  NoGradGuard no_grad;
  for (int u : order) {
    std::vector<int64_t> sizes;
    for (int i : members[static_cast<size_t>(u)]) sizes.push_back(params_[static_cast<size_t>(i)].tensor.numel());
    auto unit = std::make_unique<Unit>();
    if (members[static_cast<size_t>(u)].empty()) {
      unit->empty = true;
      unit->grads_done = true;
      unit->layout.unit = u;
      units_[static_cast<size_t>(u)] = std::move(unit);
      continue;
    }
    unit->layout = make_unit_layout(u, members[static_cast<size_t>(u)], sizes, dp_size);
    unit->shard_rank = shard_rank;
    unit->segments = unit->layout.segments(shard_rank);
    const UnitLayout& L = unit->layout;

    MemoryCategoryScope param_scope(MemoryCategory::parameters);
    unit->full = zeros({L.padded}, cdt, device_);
    unit->full_storage = unit->full.storage();
    for (size_t k = 0; k < L.params.size(); ++k) {
      Tensor dst = narrow(unit->full, 0, L.offsets[k], L.sizes[k]);
      copy_(dst, reshape(params_[static_cast<size_t>(L.params[k])].tensor.detach(), {L.sizes[k]}));
    }
    if (config_.stage == 3) {
      // Note [Parameter offload]: a host shard is page-locked on GPU runs (it crosses every gather).
      unit->compute_shard = config_.offload_params
                                ? empty_host(L.shard, cdt, MemoryCategory::parameters, device_.is_cuda())
                                : empty({L.shard}, cdt, param_device);
      copy_(unit->compute_shard, own_slice(unit->full, L.shard, shard_rank));
    } else {
      unit->compute_shard = own_slice(unit->full, L.shard, shard_rank);
    }
    // One f32 copy serves as compute shard and master when both live in the same memory. The rule
    // looks at the configuration, not at the devices, so a CPU-only run stores what a GPU run would.
    unit->offloaded = offloaded[static_cast<size_t>(u)];
    unit->master_aliases_compute = cdt == DType::f32 && unit->offloaded == config_.offload_params;
    const Device master_device = unit->offloaded ? Device::cpu() : device_;
    {
      MemoryCategoryScope scope(MemoryCategory::optimizer);
      if (unit->master_aliases_compute) {
        unit->master = unit->compute_shard;
      } else {
        unit->master = empty({L.shard}, DType::f32, master_device);
        copy_(unit->master, unit->compute_shard);
      }
      unit->exp_avg = zeros({L.shard}, DType::f32, master_device);
      unit->exp_avg_sq = zeros({L.shard}, DType::f32, master_device);
    }
    {
      MemoryCategoryScope scope(MemoryCategory::gradients);
      if (unit->offloaded) {
        unit->host_grad = zeros({L.shard}, DType::f32, Device::cpu());
      } else if (config_.stage >= 2) {
        unit->grad_shard = zeros({L.shard}, cdt, device_);
      }
    }
    // Repoint each parameter at its place in the flat buffer (Note [Units]).
    for (size_t k = 0; k < L.params.size(); ++k) {
      TensorImpl& impl = params_[static_cast<size_t>(L.params[k])].tensor.impl();
      impl.storage = unit->full_storage;
      impl.offset = L.offsets[k];
      impl.strides = contiguous_strides(impl.shape);
      impl.dtype = cdt;
      impl.grad.reset();
    }
    if (config_.stage == 3) {
      unit->full = Tensor();  // only the storage is kept; views are made on use
      unit->full_storage->release_memory();
    }
    units_[static_cast<size_t>(u)] = std::move(unit);
  }
  // Gradient buffers: stage 0 groups units into all-reduce buckets in backward order (last unit
  // first); stage 1 keeps one full buffer per unit.
  {
    MemoryCategoryScope scope(MemoryCategory::gradients);
    if (config_.stage == 0) {
      const double bucket_bytes = std::max(1.0, config_.bucket_mb * 1024 * 1024);
      auto bucket = std::make_unique<Bucket>();
      double bytes = 0;
      for (int u = num_units - 1; u >= 0; --u) {
        if (units_[static_cast<size_t>(u)]->empty) {
          if (u == 0 && !bucket->units.empty()) buckets_.push_back(std::move(bucket));
          continue;
        }
        bucket->units.push_back(u);
        bytes += static_cast<double>(units_[static_cast<size_t>(u)]->layout.padded * dtype_size(cdt));
        if (bytes >= bucket_bytes || u == 0) {
          buckets_.push_back(std::move(bucket));
          bucket = std::make_unique<Bucket>();
          bytes = 0;
        }
      }
      for (size_t b = 0; b < buckets_.size(); ++b) {
        Bucket& bk = *buckets_[b];
        int64_t total = 0;
        for (int u : bk.units) total += units_[static_cast<size_t>(u)]->layout.padded;
        bk.buffer = zeros({total}, cdt, device_);
        int64_t off = 0;
        for (int u : bk.units) {
          Unit& U = *units_[static_cast<size_t>(u)];
          U.bucket = static_cast<int>(b);
          U.grad_full = narrow(bk.buffer, 0, off, U.layout.padded);
          U.grad_shard = U.grad_full;
          off += U.layout.padded;
        }
      }
    } else if (config_.stage == 1) {
      for (auto& U : units_) {
        if (U->empty) continue;
        U->grad_full = zeros({U->layout.padded}, cdt, device_);
        U->grad_shard = own_slice(U->grad_full, U->layout.shard, U->shard_rank);
      }
    }
  }

  for (const auto& U : units_) layouts_.push_back(U->layout);  // empty units: numel 0
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& t = params_[i].tensor;
    t.impl().grad_ready_hooks.clear();
    t.register_grad_ready_hook([this, i](const Tensor& g) { on_grad_ready(static_cast<int>(i), g); });
  }
}

ZeroEngine::~ZeroEngine() {
  try {
    drain_reductions(0);
    for (auto& U : units_) U->gather_work.reset();
  } catch (...) {
  }
  for (Parameter& p : params_)
    if (p.tensor.defined()) p.tensor.impl().grad_ready_hooks.clear();
}

// ---- forward: parameters on demand --------------------------------------------------------------

std::vector<Tensor> ZeroEngine::acquire(int unit) {
  ZT_CHECK(unit >= 0 && unit < static_cast<int>(units_.size()) && !units_[static_cast<size_t>(unit)]->empty, "zero",
           "unit ", unit, " is not held by this rank");
  if (config_.stage == 3) {
    gather(unit, /*wait=*/true);
    // Prefetch the unit the forward needs next: the following one, and the tied embedding (unit 0)
    // again after the last; not after the head's second use of unit 0.
    const int n = static_cast<int>(units_.size());
    if (config_.prefetch && !in_backward_) {
      if (unit + 1 < n && unit + 1 > forward_progress_) gather(unit + 1, /*wait=*/false);
      if (unit == n - 1) gather(0, /*wait=*/false);  // the tied head
    }
    forward_progress_ = std::max(forward_progress_, unit);
  }
  std::vector<Tensor> out;
  for (int i : units_[static_cast<size_t>(unit)]->layout.params) out.push_back(params_[static_cast<size_t>(i)].tensor);
  return out;
}

void ZeroEngine::release(int unit) {
  // A unit acquired during backward is being recomputed (activation checkpointing): its backward
  // follows at once and needs it gathered again, so it stays until its gradients are complete
  // (on_unit_ready) or backward ends.
  if (config_.stage == 3 && !(in_backward_ && grad_mode_enabled())) free_gathered(unit);
}

Tensor ZeroEngine::unit_output(int unit, const Tensor& out) {
  if (config_.stage != 3 || !needs_grad({&out}) || units_[static_cast<size_t>(unit)]->empty) return out;
  auto node = std::make_shared<GatherBeforeBackward>([this, unit] {
    in_backward_ = true;
    gather(unit, true);
    // Prefetch the unit whose backward comes next: the one before in forward order, skipping
    // units whose gradients are already complete (the tied embedding is used at both ends).
    const int n = static_cast<int>(units_.size());
    const int prev = unit == 0 ? n - 1 : unit - 1;
    if (config_.prefetch && !units_[static_cast<size_t>(prev)]->grads_done) gather(prev, false);
  });
  Tensor y = out.detach();
  record(node, {out}, {&y});
  return y;
}

void ZeroEngine::gather(int unit, bool wait) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  if (U.empty) return;
  if (!U.gathered) {
    U.full_storage->acquire_memory();
    U.full = make_view(params_[static_cast<size_t>(U.layout.params[0])].tensor, {U.layout.padded}, {1}, 0);
    if (config_.offload_params) {  // Note [Parameter offload]: fetch into our slice, gather in place
      Tensor own = own_slice(U.full, U.layout.shard, U.shard_rank);
      copy_to_device(U.compute_shard, own, counters_.offload);
      U.gather_work = dp_.all_gather(own, U.full);
    } else {
      U.gather_work = dp_.all_gather(U.compute_shard, U.full);
    }
    U.gathered = true;
    ++counters_.unit_gathers;
  }
  if (wait) wait_gather(unit);
}

void ZeroEngine::wait_gather(int unit) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  if (U.gather_work) {
    U.gather_work->wait();
    U.gather_work.reset();
  }
}

void ZeroEngine::free_gathered(int unit) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  if (U.empty || !U.gathered) return;
  wait_gather(unit);
  U.full = Tensor();
  U.full_storage->release_memory();
  U.gathered = false;
}

// ---- backward: gradients as they become ready -------------------------------------------------

void ZeroEngine::begin_micro_batch(bool last) {
  last_micro_batch_ = last;
  in_backward_ = false;
  forward_progress_ = -1;
  for (auto& U : units_) {
    U->ready = 0;
    U->grads_done = U->empty;
  }
}

Tensor ZeroEngine::full_grad(int unit) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  if (U.reduce_work) {
    // The unit's previous reduction (an earlier micro-batch) still reads this buffer: finish it
    // before the next gradient is written (the same order on every rank: Note [Grad-ready order]).
    auto it = std::find(reducing_.begin(), reducing_.end(), unit);
    if (it != reducing_.end()) reducing_.erase(it);
    finalize_reduction(unit);
  }
  if (!U.grad_full.defined()) {
    MemoryCategoryScope scope(MemoryCategory::gradients);
    U.grad_full = zeros({U.layout.padded}, config_.compute_dtype, device_);
  }
  return U.grad_full;
}

void ZeroEngine::on_grad_ready(int param, const Tensor& grad) {
  const int u = unit_of_param_[static_cast<size_t>(param)];
  Unit& U = *units_[static_cast<size_t>(u)];
  const int k = index_in_unit_[static_cast<size_t>(param)];
  Tensor dst = narrow(full_grad(u), 0, U.layout.offsets[static_cast<size_t>(k)], U.layout.sizes[static_cast<size_t>(k)]);
  Tensor g = reshape(grad, {U.layout.sizes[static_cast<size_t>(k)]});
  if (config_.stage <= 1) {
    add_(dst, g);  // accumulates across micro-batches until the step
  } else {
    copy_(dst, g);  // a fresh full gradient every micro-batch
  }
  params_[static_cast<size_t>(param)].tensor.zero_grad();  // the flat buffer holds it now
  if (++U.ready == static_cast<int>(U.layout.params.size())) on_unit_ready(u);
}

void ZeroEngine::on_unit_ready(int unit) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  U.grads_done = true;
  if (config_.stage == 0) {
    Bucket& b = *buckets_[static_cast<size_t>(U.bucket)];
    if (++b.ready_units == static_cast<int>(b.units.size())) {
      b.ready_units = 0;
      if (last_micro_batch_) b.work = dp_.all_reduce(b.buffer, comm::ReduceOp::avg);
    }
    return;
  }
  if (config_.stage == 1 && !last_micro_batch_) return;
  U.reduce_work = dp_.reduce_scatter(U.grad_full, own_slice(U.grad_full, U.layout.shard, U.shard_rank),
                                     comm::ReduceOp::avg);
  reducing_.push_back(unit);
  if (config_.stage == 3) free_gathered(unit);  // every use of its parameters in backward is done
  if (config_.stage >= 2) drain_reductions(static_cast<size_t>(std::max(1, config_.max_reductions_in_flight)));
}

void ZeroEngine::finalize_reduction(int unit) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  if (U.reduce_work) {
    U.reduce_work->wait();
    U.reduce_work.reset();
  }
  if (config_.stage >= 1) take_reduced_gradient(unit, own_slice(U.grad_full, U.layout.shard, U.shard_rank));
  if (config_.stage >= 2) U.grad_full = Tensor();
}

void ZeroEngine::take_reduced_gradient(int unit, const Tensor& reduced) {
  Unit& U = *units_[static_cast<size_t>(unit)];
  if (U.offloaded) {  // Note [Optimizer offload]
    host_buffers_.gradients.land(reduced, U.host_grad, U.host_grad_stale, counters_.offload);
    U.host_grad_stale = false;
  } else if (config_.stage >= 2) {
    add_(U.grad_shard, reduced);
  }  // stages 0-1 without offload: grad_shard is a view of the reduced buffer already
}

Tensor& ZeroEngine::step_gradient(Unit& unit) { return unit.offloaded ? unit.host_grad : unit.grad_shard; }

bool ZeroEngine::unit_offloaded(int unit) const { return units_.at(static_cast<size_t>(unit))->offloaded; }

void ZeroEngine::drain_reductions(size_t keep) {
  while (reducing_.size() > keep) {
    finalize_reduction(reducing_.front());
    reducing_.pop_front();
  }
}

void ZeroEngine::end_backward() {
  // Units some of whose parameters got no gradient (unused in this micro-batch) still take part:
  // every rank walks the same graph, so every rank reaches the same decision (Note [Grad-ready order]).
  for (size_t u = 0; u < units_.size(); ++u) {
    Unit& U = *units_[u];
    if (U.empty || U.grads_done) continue;
    full_grad(static_cast<int>(u));
    on_unit_ready(static_cast<int>(u));
  }
  if (config_.stage == 3)
    for (size_t u = 0; u < units_.size(); ++u) free_gathered(static_cast<int>(u));
  in_backward_ = false;
  if (!last_micro_batch_) return;
  for (auto& b : buckets_) {
    if (b->work) {
      b->work->wait();
      b->work.reset();
    }
    for (int u : b->units) take_reduced_gradient(u, units_[static_cast<size_t>(u)]->grad_full);
  }
  drain_reductions(0);
}

// ---- the optimizer step ------------------------------------------------------------------------

StepResult ZeroEngine::step(double lr, double max_grad_norm, double loss_scale) {
  ZT_CHECK(reducing_.empty(), "zero", "step() before end_backward() of the last micro-batch");
  NoGradGuard no_grad;
  const auto start = std::chrono::steady_clock::now();
  // Note [Global gradient norm]: each element counted once over the whole mesh. A shard element
  // belongs to one dp rank (stages 1-3; under stage 0 every dp rank holds the same full gradient),
  // each pipeline stage holds its own parameters, and a parameter replicated across tensor-parallel
  // ranks is counted on tp rank 0 only.
  // The sum stays on the device (one read below, the step's only synchronisation), and runs of
  // adjacent counted segments of a shard are summed in one call.
  host_buffers_.gradients.absorb_all(counters_.offload);  // Note [Gradient landing]
  for (auto& U : units_) {  // a unit that received no gradient this step has a zero one
    if (U->host_grad_stale) fill_(U->host_grad, 0.0);
    U->host_grad_stale = false;
  }
  // One running sum per memory the gradients are in (the device's, and the host's for offloaded
  // units), each summed where its gradients are.
  Tensor device_sum, host_sum;
  for (auto& U : units_) {
    if (U->empty) continue;
    const Tensor& g = step_gradient(*U);
    Tensor& sum = g.device() == device_ ? device_sum : host_sum;
    if (!sum.defined()) sum = zeros({1}, DType::f64, g.device());
    const Backend& be = backend_for(g.device());
    int64_t run_begin = 0, run_end = 0;  // the current run [run_begin, run_end) of the shard
    for (const ShardSegment& s : U->segments) {
      if (tp_rank_ != 0 && params_[static_cast<size_t>(s.param)].tp_replicated) continue;
      if (s.shard_begin != run_end) {
        if (run_end > run_begin) be.sum_squares_into(narrow(g, 0, run_begin, run_end - run_begin), sum);
        run_begin = s.shard_begin;
      }
      run_end = s.shard_end;
    }
    if (run_end > run_begin) be.sum_squares_into(narrow(g, 0, run_begin, run_end - run_begin), sum);
  }
  std::vector<comm::Communicator*> groups = norm_groups_;
  if (config_.stage >= 1) groups.insert(groups.begin(), &dp_);
  Tensor t = zeros({1}, DType::f64, dp_.device());
  for (const Tensor& sum : {device_sum, host_sum})
    if (sum.defined()) add_(t, sum.device() == t.device() ? sum : to(sum, t.device()));
  for (comm::Communicator* g : groups)
    if (g->size() > 1) g->all_reduce(t, comm::ReduceOp::sum)->wait();
  const double total = t.item();
  StepResult result;
  result.grad_norm = std::sqrt(total) / loss_scale;
  result.skipped = !std::isfinite(result.grad_norm);
  if (!result.skipped) {
    const double grad_scale = clip_scale(result.grad_norm, max_grad_norm) / loss_scale;
    ++step_;
    // Device units first: their AdamW is queued on the GPU and runs while the host steps the
    // offloaded ones (Note [Partial optimizer offload]).
    for (auto& U : units_)
      if (!U->empty && !U->offloaded) update_unit(*U, lr, grad_scale);
    bool any_offloaded = false;
    for (auto& U : units_) {
      if (U->empty || !U->offloaded) continue;
      update_unit(*U, lr, grad_scale);
      any_offloaded = true;
    }
    if (any_offloaded)  // host work (the norm and AdamW), synchronous: the wall time is its cost
      counters_.host_optimizer_seconds +=
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    write_back_parameters();
  }
  for (auto& U : units_) {
    if (U->empty) continue;
    if (U->host_grad.defined()) U->host_grad_stale = true;  // overwritten by the next gradient
    if (U->grad_shard.defined()) fill_(U->grad_shard, 0.0);  // stage 0: the unit's part of its bucket
    if (config_.stage == 1) fill_(U->grad_full, 0.0);
  }
  return result;
}

void ZeroEngine::update_unit(Unit& U, double lr, double grad_scale) {
  Tensor g = step_gradient(U);
  // AdamW reads 16-bit gradients itself (widening to f32 is exact, so the update is the same),
  // so only f64 gradients are cast, and offloaded ones cross to the host in their own dtype.
  if (g.dtype() == DType::f64) g = to(g, DType::f32);
  if (g.device() != U.master.device()) g = to(g, U.master.device());
  // Runs of adjacent segments that share their weight decay (a block's 12 parameters make 9
  // runs), all updated by one adamw_step_runs (one launch on the GPU).
  std::vector<AdamWRun> runs;
  for (const ShardSegment& s : U.segments) {
    const double decay = params_[static_cast<size_t>(s.param)].decay ? adamw_.weight_decay : 0.0;
    if (!runs.empty() && runs.back().begin + runs.back().n == s.shard_begin && runs.back().weight_decay == decay)
      runs.back().n = s.shard_end - runs.back().begin;
    else
      runs.push_back({s.shard_begin, s.shard_end - s.shard_begin, decay});
  }
  AdamWArgs args;
  args.lr = lr;
  args.beta1 = adamw_.beta1;
  args.beta2 = adamw_.beta2;
  args.eps = adamw_.eps;
  args.step = step_;
  args.grad_scale = grad_scale;
  if (U.offloaded && !U.master_aliases_compute) {
    update_offloaded_unit(U, g, runs, args);
  } else {
    backend_for(U.master.device()).adamw_step_runs(U.master, g, U.exp_avg, U.exp_avg_sq, runs, args);
  }
}

void ZeroEngine::write_back_parameters() {
  NoGradGuard no_grad;
  std::vector<comm::WorkPtr> gathers;
  for (auto& U : units_) {
    if (U->empty) continue;
    if (config_.stage == 3) free_gathered(U->layout.unit);  // a gathered copy would now be stale
    if (!U->master_aliases_compute && !U->compute_current) {
      if (U->offloaded && !config_.offload_params) {
        write_master_to_device(U->master, U->compute_shard, host_buffers_, counters_.offload);
      } else {
        copy_(U->compute_shard, U->master);  // same memory kind (or offload_params alone)
      }
    }
    U->compute_current = false;
    if (config_.stage == 1 || config_.stage == 2) gathers.push_back(dp_.all_gather(U->compute_shard, U->full));
  }
  for (auto& w : gathers) w->wait();
}

// Note [Offloaded step]: the host AdamW writes the compute-dtype copy of the master in the same pass
// (Backend::adamw_step_runs' param_copy): straight into the host parameter shard under
// offload_params, else into a parameter-return slot (Note [Parameter return]), whose positions
// outside the runs (padding) are filled from the master before the copy to the device.
// write_back_parameters then skips the unit.
void ZeroEngine::update_offloaded_unit(Unit& U, const Tensor& g, const std::vector<AdamWRun>& runs,
                                       const AdamWArgs& args) {
  const Backend& be = backend_for(U.master.device());
  if (config_.offload_params) {
    be.adamw_step_runs(U.master, g, U.exp_avg, U.exp_avg_sq, runs, args, &U.compute_shard);
  } else {
    const int64_t n = U.master.numel();
    Tensor rounded = host_buffers_.parameters.slot(n, U.compute_shard.dtype());  // Note [Parameter return]
    be.adamw_step_runs(U.master, g, U.exp_avg, U.exp_avg_sq, runs, args, &rounded);
    int64_t covered = 0;  // runs are in order: fill the gaps between and after them
    auto fill_gap = [&](int64_t end) {
      if (end <= covered) return;
      Tensor gap = narrow(rounded, 0, covered, end - covered);
      copy_(gap, narrow(U.master, 0, covered, end - covered));
    };
    for (const AdamWRun& r : runs) {
      fill_gap(r.begin);
      covered = std::max(covered, r.begin + r.n);
    }
    fill_gap(n);
    host_buffers_.parameters.send(rounded, U.compute_shard, counters_.offload);
  }
  U.compute_current = true;
}

void ZeroEngine::sync_parameters_from_masters() { write_back_parameters(); }

std::vector<ZeroEngine::ShardState> ZeroEngine::shard_states() {
  std::vector<ShardState> out;
  for (auto& U : units_) out.push_back({U->master, U->exp_avg, U->exp_avg_sq});
  return out;
}

ModelStateBytes ZeroEngine::model_state_bytes() const {
  ModelStateBytes b;
  const int64_t cs = static_cast<int64_t>(dtype_size(config_.compute_dtype));
  for (const auto& U : units_) {
    if (U->empty) continue;
    const UnitLayout& L = U->layout;
    (config_.offload_params ? b.host_parameters : b.parameters) += (config_.stage == 3 ? L.shard : L.padded) * cs;
    if (config_.stage <= 1 || !U->offloaded) b.gradients += (config_.stage >= 2 ? L.shard : L.padded) * cs;
    if (U->offloaded) b.host_gradients += L.shard * 4;
    (U->offloaded ? b.host_optimizer : b.optimizer) += L.shard * 4 * (U->master_aliases_compute ? 2 : 3);
  }
  return b;
}

}  // namespace zt::zero
