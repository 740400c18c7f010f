#include "core/autograd.h"

#include <atomic>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "core/ops.h"

namespace zt {

namespace {

thread_local bool grad_enabled = true;
std::atomic<uint64_t> next_sequence_nr{0};

// Sums gradients into a leaf's .grad and runs its grad-ready hooks (Note [Grad-ready hooks]).
class AccumulateGrad final : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::string name() const override { return "AccumulateGrad"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    const Tensor& g = grads[0];
    if (!g.defined()) return {};
    MemoryCategoryScope scope(MemoryCategory::gradients);
    Tensor leaf(leaf_);
    Tensor incoming = g.dtype() == leaf.dtype() ? g : to(g, leaf.dtype());
    ZT_ASSERT(incoming.shape() == leaf.shape(), "gradient ", incoming.describe(), " for leaf ", leaf.describe());
    Tensor current = leaf.grad();
    // Always fresh memory: an incoming gradient may alias another leaf's or be a view into a
    // larger buffer, and .grad is updated in place later (clipping, data-parallel hooks).
    leaf.set_grad(current.defined() ? add(current, incoming) : clone(incoming));
    Tensor complete = leaf.grad();
    for (const GradHook& hook : leaf_->grad_ready_hooks) hook(complete);
    return {};
  }
  const std::shared_ptr<TensorImpl>& leaf() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

std::shared_ptr<Node> grad_accumulator(const Tensor& leaf) {
  TensorImpl& impl = leaf.impl();
  if (auto existing = impl.grad_accumulator.lock()) return existing;
  auto node = std::make_shared<AccumulateGrad>(leaf.impl_ptr());
  node->sequence_nr = next_sequence_nr++;
  impl.grad_accumulator = node;
  return node;
}

Edge edge_of(const Tensor& t) {
  if (!t.defined() || !t.requires_grad()) return {};
  if (t.is_leaf()) return {grad_accumulator(t), 0};
  return {t.grad_fn(), t.impl().output_nr};
}

Tensor sum_grads(const Tensor& a, const Tensor& b) {
  if (!a.defined()) return b;
  if (!b.defined()) return a;
  return add(a, b);
}

struct ByLaterSequence {
  bool operator()(const Node* a, const Node* b) const { return a->sequence_nr < b->sequence_nr; }
};

// The engine. With `captures` (for grad()), the gradient arriving at each captured edge is
// returned and leaves' .grad are left alone; otherwise leaves accumulate.
std::vector<Tensor> run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& root_grads,
                                 const std::vector<Edge>* captures) {
  NoGradGuard no_grad;
  std::unordered_map<Node*, int> dependencies;
  std::unordered_map<Node*, std::shared_ptr<Node>> owner;
  std::vector<Node*> stack;
  std::vector<Edge> root_edges;
  for (const Tensor& r : roots) {
    Edge e = edge_of(r);
    ZT_CHECK(e.node != nullptr, "backward", "tensor ", r.describe(), " does not require grad (no path to a leaf)");
    root_edges.push_back(e);
    if (owner.emplace(e.node.get(), e.node).second) stack.push_back(e.node.get());
  }
  while (!stack.empty()) {  // count the consumers of every reachable node
    Node* n = stack.back();
    stack.pop_back();
    for (const Edge& e : n->next) {
      if (!e.node) continue;
      dependencies[e.node.get()] += 1;
      if (owner.emplace(e.node.get(), e.node).second) stack.push_back(e.node.get());
    }
  }

  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  auto deposit = [&](const Edge& e, const Tensor& g) {
    auto& buf = buffers[e.node.get()];
    if (buf.empty()) buf.resize(static_cast<size_t>(e.node->num_outputs()));
    buf[e.input_nr] = sum_grads(buf[e.input_nr], g);
  };
  std::priority_queue<Node*, std::vector<Node*>, ByLaterSequence> ready;
  std::unordered_set<Node*> queued;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& r = roots[i];
    Tensor g = i < root_grads.size() && root_grads[i].defined() ? root_grads[i] : Tensor();
    if (!g.defined()) {
      ZT_CHECK(r.numel() == 1, "backward", "a gradient must be given for a non-scalar root ", r.describe());
      g = ones(r.shape(), r.dtype(), r.device());
    }
    ZT_CHECK(g.shape() == r.shape(), "backward", "gradient ", g.describe(), " does not match root ", r.describe());
    deposit(root_edges[i], g);
  }
  for (const Edge& e : root_edges)
    if (dependencies[e.node.get()] == 0 && queued.insert(e.node.get()).second) ready.push(e.node.get());

  std::vector<Tensor> captured(captures ? captures->size() : 0);
  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    std::vector<Tensor> grads = std::move(buffers[n]);
    buffers.erase(n);
    grads.resize(static_cast<size_t>(n->num_outputs()));
    std::vector<Tensor> input_grads;
    bool is_accumulator = dynamic_cast<AccumulateGrad*>(n) != nullptr;
    if (captures) {
      for (size_t i = 0; i < captures->size(); ++i)
        if ((*captures)[i].node.get() == n) captured[i] = sum_grads(captured[i], grads[(*captures)[i].input_nr]);
    }
    if (!(captures && is_accumulator)) {
      input_grads = n->backward(grads);
      n->release();
    }
    for (size_t i = 0; i < n->next.size(); ++i) {
      const Edge& e = n->next[i];
      if (!e.node) continue;
      if (i < input_grads.size() && input_grads[i].defined()) deposit(e, input_grads[i]);
      if (--dependencies[e.node.get()] == 0 && queued.insert(e.node.get()).second) ready.push(e.node.get());
    }
  }
  return captured;
}

// Note [Checkpoint].
class CheckpointNode final : public Node {
 public:
  using Fn = std::function<std::vector<Tensor>(const std::vector<Tensor>&)>;
  CheckpointNode(Fn fn, std::vector<Tensor> inputs, size_t num_outputs)
      : fn_(std::move(fn)), inputs_(std::move(inputs)), num_outputs_(num_outputs) {}
  std::string name() const override { return "Checkpoint"; }
  int num_outputs() const override { return static_cast<int>(num_outputs_); }
  void release() override { inputs_.clear(); }

  std::vector<Tensor> backward(const std::vector<Tensor>& grads) override {
    EnableGradGuard enable;
    std::vector<Tensor> replay_inputs;
    for (const Tensor& x : inputs_) {
      Tensor d = x.detach();
      if (x.requires_grad()) d.set_requires_grad(true);
      replay_inputs.push_back(d);
    }
    std::vector<Tensor> outputs = fn_(replay_inputs);
    std::vector<Tensor> roots, root_grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (grads[i].defined() && outputs[i].requires_grad()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grads[i]);
      }
    }
    if (!roots.empty()) run_backward(roots, root_grads, nullptr);
    std::vector<Tensor> result;
    for (const Tensor& x : replay_inputs) result.push_back(x.requires_grad() ? x.grad() : Tensor());
    return result;
  }

 private:
  Fn fn_;
  std::vector<Tensor> inputs_;
  size_t num_outputs_;
};

}  // namespace

bool grad_mode_enabled() { return grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(grad_enabled) { grad_enabled = false; }
NoGradGuard::~NoGradGuard() { grad_enabled = previous_; }
EnableGradGuard::EnableGradGuard() : previous_(grad_enabled) { grad_enabled = true; }
EnableGradGuard::~EnableGradGuard() { grad_enabled = previous_; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t != nullptr && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs) {
  node->sequence_nr = next_sequence_nr++;
  node->next.clear();
  for (const Tensor& x : inputs) node->next.push_back(edge_of(x));
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl& impl = outputs[i]->impl();
    impl.requires_grad = true;
    impl.grad_fn = node;
    impl.output_nr = static_cast<int>(i);
  }
}

void backward(const Tensor& root, const Tensor& grad) { run_backward({root}, {grad}, nullptr); }

std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs) {
  std::vector<Edge> captures;
  for (const Tensor& x : inputs) {
    Edge e = edge_of(x);
    ZT_CHECK(e.node != nullptr, "grad", "input ", x.describe(), " does not require grad");
    captures.push_back(e);
  }
  std::vector<Tensor> result = run_backward(outputs, grad_outputs, &captures);
  for (size_t i = 0; i < result.size(); ++i)
    if (!result[i].defined()) result[i] = zeros(inputs[i].shape(), inputs[i].dtype(), inputs[i].device());
  return result;
}

std::vector<Tensor> checkpoint(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& fn,
                               const std::vector<Tensor>& inputs) {
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = fn(inputs);
  }
  if (!grad_mode_enabled()) return outputs;
  auto node = std::make_shared<CheckpointNode>(fn, inputs, outputs.size());
  std::vector<Tensor*> outs;
  for (Tensor& o : outputs) {
    o = o.detach();  // a fresh handle, even when fn returned one of its inputs
    if (is_floating(o.dtype())) outs.push_back(&o);
  }
  ZT_CHECK(outs.size() == outputs.size(), "checkpoint", "every output of a checkpointed function must be floating");
  record(node, inputs, outs);
  return outputs;
}

}  // namespace zt
