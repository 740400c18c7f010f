// cuDNN SDPA graphs: building, caching and running them (attention_cudnn.h says why).
#include "kernels/cuda/attention_cudnn.h"

#include <fmt/format.h>

#include "core/error.h"
#include "kernels/cuda/runtime.h"

#if defined(ZT_HAVE_CUDNN)
#include <cudnn.h>
#endif
#if defined(ZT_HAVE_CUDNN_FRONTEND)
#include <cudnn_frontend.h>
#endif

namespace zt::cuda {

#if defined(ZT_HAVE_CUDNN)
namespace {

void check_cudnn(cudnnStatus_t status, const char* what) {
  ZT_CHECK(status == CUDNN_STATUS_SUCCESS, "cudnn", what, " failed: ", cudnnGetErrorString(status));
}

cudnnHandle_t handle_of(const SdpaState& state) { return static_cast<cudnnHandle_t>(state.handle); }

}  // namespace

SdpaState::SdpaState(int dev) : device(dev) {
  DeviceGuard guard(dev);
  cudnnHandle_t h = nullptr;
  check_cudnn(cudnnCreate(&h), "cudnnCreate");
  handle = h;
}

SdpaState::~SdpaState() {
  graphs.clear();  // before the handle they were built with
  if (handle != nullptr) (void)cudnnDestroy(handle_of(*this));
}
#else
SdpaState::SdpaState(int dev) : device(dev) {}
SdpaState::~SdpaState() = default;
#endif

#if !defined(ZT_HAVE_CUDNN_FRONTEND)

struct SdpaGraph {};
bool cudnn_sdpa_compiled() { return false; }
bool cudnn_sdpa_forward(const Tensor&, const Tensor&, const Tensor&, Tensor&, Tensor&, bool, double) { return false; }
bool cudnn_sdpa_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                         Tensor&, Tensor&, Tensor&, bool, double, bool) {
  return false;
}

#else

namespace fe = cudnn_frontend;

struct SdpaGraph {
  std::shared_ptr<fe::graph::Graph> graph;
  int64_t workspace_bytes = 0;
};

bool cudnn_sdpa_compiled() { return true; }

namespace {

// Tensor uids in the variant packs.
enum Uid : int64_t { kQ = 1, kK, kV, kO, kStats, kDO, kDQ, kDK, kDV };

std::vector<int64_t> dims_of(const Tensor& t) { return {t.size(0), t.size(1), t.size(2), t.size(3)}; }
std::vector<int64_t> strides_of(const Tensor& t) {
  return {t.strides()[0], t.strides()[1], t.strides()[2], t.strides()[3]};
}

// Everything a graph depends on: dtype, shape, every operand's strides, the mask and the scale.
std::string graph_key(const char* kind, const std::vector<const Tensor*>& operands, bool causal, double scale) {
  const Tensor& q = *operands[0];
  std::string key = fmt::format("{} {} {}x{}x{}x{} c{} s{:a}", kind, static_cast<int>(q.dtype()), q.size(0), q.size(1),
                                q.size(2), q.size(3), causal ? 1 : 0, scale);
  for (const Tensor* t : operands)
    key += fmt::format(" {}/{}/{}", t->strides()[0], t->strides()[1], t->strides()[2]);
  return key;
}

std::shared_ptr<fe::graph::Tensor_attributes> io_tensor(fe::graph::Graph& g, const char* name, Uid uid,
                                                        const Tensor& t) {
  return g.tensor(fe::graph::Tensor_attributes().set_name(name).set_uid(uid).set_dim(dims_of(t)).set_stride(
      strides_of(t)));
}

void set_output(const std::shared_ptr<fe::graph::Tensor_attributes>& t, Uid uid, const Tensor& like) {
  t->set_output(true).set_uid(uid).set_dim(dims_of(like)).set_stride(strides_of(like));
}

std::shared_ptr<fe::graph::Graph> new_graph(DType dtype) {
  auto g = std::make_shared<fe::graph::Graph>();
  g->set_io_data_type(dtype == DType::bf16 ? fe::DataType_t::BFLOAT16 : fe::DataType_t::HALF)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  return g;
}

// Validates, lowers and plans a graph; nullptr when cuDNN has no engine for it (the reason goes to
// the log once, since every later call with this problem hits the cache).
std::shared_ptr<SdpaGraph> finish(const std::shared_ptr<fe::graph::Graph>& g, cudnnHandle_t handle,
                                  const std::string& key) {
  auto declined = [&](const char* step, fe::error_t& e) -> std::shared_ptr<SdpaGraph> {
    fmt::print(stderr, "[zerotrain] cuDNN attention declined ({}: {}) for {}; using zerotrain's kernels\n", step,
               e.get_message(), key);
    return nullptr;
  };
  if (auto e = g->validate(); e.is_bad()) return declined("validate", e);
  if (auto e = g->build_operation_graph(handle); e.is_bad()) return declined("build_operation_graph", e);
  if (auto e = g->create_execution_plans({fe::HeurMode_t::A}); e.is_bad()) return declined("create_execution_plans", e);
  if (auto e = g->check_support(); e.is_bad()) return declined("check_support", e);
  if (auto e = g->build_plans(); e.is_bad()) return declined("build_plans", e);
  auto out = std::make_shared<SdpaGraph>();
  out->graph = g;
  if (auto e = g->get_workspace_size(out->workspace_bytes); e.is_bad()) return declined("get_workspace_size", e);
  return out;
}

bool eligible(const Tensor& q) {
  return (q.dtype() == DType::bf16 || q.dtype() == DType::f16) && q.dim() == 4 && q.numel() > 0;
}

// Runs a built graph on the device's current stream; the workspace comes from the caching
// allocator (stream-ordered, so it may be freed on return).
void execute(SdpaState& state, const SdpaGraph& graph, std::unordered_map<int64_t, void*>& pack, const Device& device) {
  Tensor workspace;
  if (graph.workspace_bytes > 0) workspace = empty({graph.workspace_bytes}, DType::u8, device);
  check_cudnn(cudnnSetStream(handle_of(state), current_stream(device.index)), "cudnnSetStream");
  fe::error_t e = graph.graph->execute(handle_of(state), pack, workspace.defined() ? workspace.raw_data() : nullptr);
  ZT_CHECK(!e.is_bad(), "attention", "cuDNN SDPA execution failed: ", e.get_message());
}

template <typename Build>
std::shared_ptr<SdpaGraph> cached_graph(SdpaState& state, const std::string& key, Build build) {
  auto it = state.graphs.find(key);
  if (it != state.graphs.end()) return it->second;
  std::shared_ptr<SdpaGraph> g = build();
  state.graphs.emplace(key, g);
  return g;
}

}  // namespace

bool cudnn_sdpa_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out, Tensor& lse, bool causal,
                        double scale) {
  if (!eligible(q)) return false;
  const int device = q.device().index;
  DeviceGuard guard(device);
  SdpaState& state = DeviceContext::get(device).sdpa_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  const std::string key = graph_key("fwd", {&q, &k, &v, &out}, causal, scale);
  std::shared_ptr<SdpaGraph> graph = cached_graph(state, key, [&] {
    auto g = new_graph(q.dtype());
    auto Q = io_tensor(*g, "Q", kQ, q), K = io_tensor(*g, "K", kK, k), V = io_tensor(*g, "V", kV, v);
    auto options = fe::graph::SDPA_attributes().set_name("sdpa").set_generate_stats(true).set_attn_scale(
        static_cast<float>(scale));
    if (causal) options.set_causal_mask(true);
    auto [O, stats] = g->sdpa(Q, K, V, options);
    set_output(O, kO, out);
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2);
    stats->set_output(true).set_uid(kStats).set_data_type(fe::DataType_t::FLOAT).set_dim({B, H, T, 1}).set_stride(
        {H * T, T, 1, 1});
    return finish(g, handle_of(state), key);
  });
  if (!graph) return false;
  std::unordered_map<int64_t, void*> pack{{kQ, const_cast<void*>(q.raw_data())},
                                          {kK, const_cast<void*>(k.raw_data())},
                                          {kV, const_cast<void*>(v.raw_data())},
                                          {kO, out.raw_data()},
                                          {kStats, lse.raw_data()}};
  execute(state, *graph, pack, q.device());
  return true;
}

bool cudnn_sdpa_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                         const Tensor& lse, Tensor& dq, Tensor& dk, Tensor& dv, bool causal, double scale,
                         bool deterministic) {
  if (!eligible(q)) return false;
  const int device = q.device().index;
  DeviceGuard guard(device);
  SdpaState& state = DeviceContext::get(device).sdpa_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  const std::string key = graph_key(deterministic ? "bwd" : "bwd-nondet", {&q, &k, &v, &out, &grad_out, &dq, &dk, &dv},
                                    causal, scale);
  std::shared_ptr<SdpaGraph> graph = cached_graph(state, key, [&] {
    auto g = new_graph(q.dtype());
    auto Q = io_tensor(*g, "Q", kQ, q), K = io_tensor(*g, "K", kK, k), V = io_tensor(*g, "V", kV, v);
    auto O = io_tensor(*g, "O", kO, out), dO = io_tensor(*g, "dO", kDO, grad_out);
    const int64_t B = q.size(0), H = q.size(1), T = q.size(2);
    auto stats = g->tensor(fe::graph::Tensor_attributes()
                               .set_name("stats")
                               .set_uid(kStats)
                               .set_dim({B, H, T, 1})
                               .set_stride({H * T, T, 1, 1})
                               .set_data_type(fe::DataType_t::FLOAT));
    auto options = fe::graph::SDPA_backward_attributes()
                       .set_name("sdpa_backward")
                       .set_attn_scale(static_cast<float>(scale))
                       .set_deterministic_algorithm(deterministic);
    if (causal) options.set_causal_mask(true);
    auto [dQ, dK, dV] = g->sdpa_backward(Q, K, V, O, dO, stats, options);
    set_output(dQ, kDQ, dq);
    set_output(dK, kDK, dk);
    set_output(dV, kDV, dv);
    return finish(g, handle_of(state), key);
  });
  if (!graph) return false;
  std::unordered_map<int64_t, void*> pack{{kQ, const_cast<void*>(q.raw_data())},
                                          {kK, const_cast<void*>(k.raw_data())},
                                          {kV, const_cast<void*>(v.raw_data())},
                                          {kO, const_cast<void*>(out.raw_data())},
                                          {kDO, const_cast<void*>(grad_out.raw_data())},
                                          {kStats, const_cast<void*>(lse.raw_data())},
                                          {kDQ, dq.raw_data()},
                                          {kDK, dk.raw_data()},
                                          {kDV, dv.raw_data()}};
  execute(state, *graph, pack, q.device());
  return true;
}

#endif

}  // namespace zt::cuda
