// Autograd: a define-by-run tape.
//
// Every differentiable op that sees an input requiring grad creates a Node (one small class per
// primitive, with its own backward) holding what the backward needs and one Edge per input.
// backward(loss) walks the graph from the loss, counts each node's consumers, runs a node once all
// of its output gradients are summed, and accumulates into leaves. Backward formulas are written
// with the public ops under a NoGradGuard, so they run on any device the forward ran on.
//
// Note [Grad-ready hooks]: a leaf's AccumulateGrad node runs exactly once per backward, after every
// contribution to that leaf has been summed; the leaf's hooks run right then. Data parallel and
// ZeRO start reducing a bucket from these hooks while the rest of backward continues.
//
// Note [Checkpoint]: checkpoint(fn, inputs) runs fn without a tape and records one node that keeps
// only the inputs; its backward runs fn again with the tape on (dropout draws from explicit
// (seed, offset) pairs, so the replay sees the same masks) and back-propagates through that.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace zt {

struct Edge {
  std::shared_ptr<Node> node;  // null when the input needs no gradient
  int input_nr = 0;            // which output of `node` this edge feeds
};

class Node : public std::enable_shared_from_this<Node> {
 public:
  virtual ~Node() = default;
  // grads[i] is the gradient of output i (undefined if output i did not reach the loss).
  // Returns one gradient per input edge (undefined where there is none).
  virtual std::vector<Tensor> backward(const std::vector<Tensor>& grads) = 0;
  virtual std::string name() const = 0;
  virtual int num_outputs() const { return 1; }
  // Drop saved tensors after backward (the graph is not kept for a second backward).
  virtual void release() {}

  std::vector<Edge> next;
  uint64_t sequence_nr = 0;  // creation order; later nodes run first among ready ones
};

// True while the tape records (the default). NoGradGuard turns it off for a scope on this thread.
bool grad_mode_enabled();
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};
class EnableGradGuard {
 public:
  EnableGradGuard();
  ~EnableGradGuard();
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

// True when any of the inputs requires grad and grad mode is on: the op must record a node.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);

// Connect `outputs` to `node`: sets node->next from the inputs and marks outputs as requiring grad.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, std::vector<Tensor*> outputs);

// Back-propagate from `root` (a scalar unless `grad` is given) and accumulate into leaves.
void backward(const Tensor& root, const Tensor& grad = Tensor());

// Gradients of `outputs` with respect to `inputs` without touching .grad of any leaf.
std::vector<Tensor> grad(const std::vector<Tensor>& outputs, const std::vector<Tensor>& inputs,
                         const std::vector<Tensor>& grad_outputs);

// Note [Checkpoint]. fn must be a pure function of its inputs (and of parameters it captures).
std::vector<Tensor> checkpoint(const std::function<std::vector<Tensor>(const std::vector<Tensor>&)>& fn,
                               const std::vector<Tensor>& inputs);

}  // namespace zt
