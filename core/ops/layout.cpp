// Views and layout ops: view, reshape, transpose, permute, narrow, slice, unsqueeze, squeeze,
// split, cat, contiguous, clone, to(dtype), to(device), expand, copy_, fill_.
//
// Views share storage with their input (make_view) and never copy; their backward maps the
// gradient back onto the input's shape. Gradients returned by these nodes may themselves be views
// (for example a transposed gradient): consumers call contiguous() before handing them to kernels.
#include <algorithm>
#include <numeric>
#include <optional>

#include "core/backend.h"
#include "core/ops.h"
#include "core/ops/op_helpers.h"

namespace zt {

namespace ops {

int64_t normalize_dim(const char* api, int64_t dim, int64_t ndim, const Tensor& x) {
  ZT_CHECK(dim >= -ndim && dim < ndim, api, "dim ", dim, " out of range for ", x.describe(), " (accepted: ", -ndim,
           " to ", ndim - 1, ")");
  return dim < 0 ? dim + ndim : dim;
}

int64_t normalize_dim(const char* api, int64_t dim, const Tensor& x) { return normalize_dim(api, dim, x.dim(), x); }

void check_defined(const char* api, const Tensor& x, const char* what) {
  ZT_CHECK(x.defined(), api, what, " is an undefined tensor");
}

void check_same_dtype_device(const char* api, const Tensor& a, const Tensor& b) {
  check_defined(api, a, "a");
  check_defined(api, b, "b");
  ZT_CHECK(a.dtype() == b.dtype(), api, "dtypes differ: a is ", a.describe(), ", b is ", b.describe(),
           " (cast with to())");
  ZT_CHECK(a.device() == b.device(), api, "devices differ: a is ", a.describe(), ", b is ", b.describe(),
           " (move with to())");
}

}  // namespace ops

namespace {

using ops::normalize_dim;

// Strides for viewing (shape, strides) as new_shape without a copy, if possible: each run of
// input dims that is contiguous in memory may be regrouped freely.
std::optional<Shape> view_strides(const Shape& shape, const Shape& strides, const Shape& new_shape) {
  if (shape_numel(shape) == 0 || shape.empty()) return contiguous_strides(new_shape);
  Shape out(new_shape.size());
  int64_t view_d = static_cast<int64_t>(new_shape.size()) - 1;
  int64_t chunk_stride = strides.back();
  int64_t tensor_numel = 1, view_numel = 1;
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
    tensor_numel *= shape[d];
    // A chunk ends where the next outer dim is not laid out right after this one.
    if (d == 0 || (shape[d - 1] != 1 && strides[d - 1] != tensor_numel * chunk_stride)) {
      while (view_d >= 0 && (view_numel < tensor_numel || new_shape[view_d] == 1)) {
        out[view_d] = view_numel * chunk_stride;
        view_numel *= new_shape[view_d];
        --view_d;
      }
      if (view_numel != tensor_numel) return std::nullopt;
      if (d > 0) {
        chunk_stride = strides[d - 1];
        tensor_numel = 1;
        view_numel = 1;
      }
    }
  }
  if (view_d != -1) return std::nullopt;
  return out;
}

// Resolves one -1 entry and checks the element count.
Shape infer_shape(const char* api, const Tensor& x, const Shape& shape) {
  Shape out = shape;
  int64_t known = 1;
  int infer = -1;
  for (size_t i = 0; i < out.size(); ++i) {
    if (out[i] == -1) {
      ZT_CHECK(infer < 0, api, "only one dim may be -1, got ", shape_str(shape), " for ", x.describe());
      infer = static_cast<int>(i);
    } else {
      ZT_CHECK(out[i] >= 0, api, "invalid size ", out[i], " in ", shape_str(shape), " for ", x.describe());
      known *= out[i];
    }
  }
  if (infer >= 0) {
    ZT_CHECK(known != 0 && x.numel() % known == 0, api, "cannot infer the -1 in ", shape_str(shape), " for ",
             x.describe());
    out[static_cast<size_t>(infer)] = x.numel() / known;
  }
  ZT_CHECK(shape_numel(out) == x.numel(), api, "shape ", shape_str(shape), " has ", shape_numel(out),
           " elements, tensor ", x.describe(), " has ", x.numel());
  return out;
}

class ViewBackward final : public Node {
 public:
  explicit ViewBackward(Shape in_shape) : in_shape_(std::move(in_shape)) {}
  std::string name() const override { return "ViewBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {reshape(g[0], in_shape_)}; }

 private:
  Shape in_shape_;
};

class PermuteBackward final : public Node {
 public:
  explicit PermuteBackward(std::vector<int64_t> dims) : inverse_(dims.size()) {
    for (size_t i = 0; i < dims.size(); ++i) inverse_[static_cast<size_t>(dims[i])] = static_cast<int64_t>(i);
  }
  std::string name() const override { return "PermuteBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {permute(g[0], inverse_)}; }

 private:
  std::vector<int64_t> inverse_;
};

// The gradient of a narrow is zero outside the window: a zero tensor with the gradient copied into
// the matching narrow view of it.
class NarrowBackward final : public Node {
 public:
  NarrowBackward(Shape in_shape, int64_t dim, int64_t start) : in_shape_(std::move(in_shape)), dim_(dim), start_(start) {}
  std::string name() const override { return "NarrowBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    Tensor full_grad = zeros(in_shape_, g[0].dtype(), g[0].device());
    Tensor window = narrow(full_grad, dim_, start_, g[0].size(dim_));
    copy_(window, g[0]);
    return {full_grad};
  }

 private:
  Shape in_shape_;
  int64_t dim_, start_;
};

class ExpandBackward final : public Node {
 public:
  explicit ExpandBackward(Shape in_shape) : in_shape_(std::move(in_shape)) {}
  std::string name() const override { return "ExpandBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {ops::sum_to_shape(g[0], in_shape_)}; }

 private:
  Shape in_shape_;
};

class CatBackward final : public Node {
 public:
  CatBackward(int64_t dim, std::vector<int64_t> sizes) : dim_(dim), sizes_(std::move(sizes)) {}
  std::string name() const override { return "CatBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    std::vector<Tensor> out(sizes_.size());
    int64_t start = 0;
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (next[i].node) out[i] = narrow(g[0], dim_, start, sizes_[i]);
      start += sizes_[i];
    }
    return out;
  }

 private:
  int64_t dim_;
  std::vector<int64_t> sizes_;
};

// The pieces' gradients laid side by side along dim_ (zeros for pieces that got none). When they
// already are adjacent windows of one buffer that forms the whole gradient contiguously (CUDA
// attention writes dq, dk and dv so, Note [Attention layouts]), that buffer is the result and
// nothing is copied: the incoming gradients are this node's alone, and no op writes into its inputs.
class SplitBackward final : public Node {
 public:
  SplitBackward(Shape in_shape, int64_t dim, std::vector<int64_t> sizes)
      : in_shape_(std::move(in_shape)), dim_(dim), sizes_(std::move(sizes)) {}
  std::string name() const override { return "SplitBackward"; }
  int num_outputs() const override { return static_cast<int>(sizes_.size()); }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override {
    if (Tensor whole = adjacent_whole(g); whole.defined()) return {whole};
    bool all = g.size() == sizes_.size();
    for (const Tensor& t : g) all = all && t.defined();
    Tensor out = all ? empty(in_shape_, dtype_of(g), device_of(g)) : zeros(in_shape_, dtype_of(g), device_of(g));
    int64_t start = 0;
    for (size_t i = 0; i < sizes_.size(); ++i) {
      if (i < g.size() && g[i].defined()) {
        Tensor window = narrow(out, dim_, start, sizes_[i]);
        copy_(window, g[i]);
      }
      start += sizes_[i];
    }
    return {out};
  }

 private:
  Tensor adjacent_whole(const std::vector<Tensor>& g) const {
    if (g.size() != sizes_.size()) return Tensor();
    for (const Tensor& t : g)
      if (!t.defined() || t.storage() != g[0].storage() || t.strides() != g[0].strides()) return Tensor();
    const int64_t step = g[0].strides()[static_cast<size_t>(dim_)];
    int64_t offset = g[0].offset();
    for (size_t i = 0; i < g.size(); ++i) {
      if (g[i].offset() != offset) return Tensor();
      offset += sizes_[i] * step;
    }
    Tensor whole = make_view(g[0], in_shape_, g[0].strides(), g[0].offset());
    return whole.is_contiguous() ? whole : Tensor();
  }
  static const Tensor& first_defined(const std::vector<Tensor>& g) {
    for (const Tensor& t : g)
      if (t.defined()) return t;
    ZT_FAIL("split", "backward without any gradient");
  }
  static DType dtype_of(const std::vector<Tensor>& g) { return first_defined(g).dtype(); }
  static Device device_of(const std::vector<Tensor>& g) { return first_defined(g).device(); }

  Shape in_shape_;
  int64_t dim_;
  std::vector<int64_t> sizes_;
};

class CloneBackward final : public Node {
 public:
  std::string name() const override { return "CloneBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {g[0]}; }
};

class ToDTypeBackward final : public Node {
 public:
  explicit ToDTypeBackward(DType in_dtype) : in_dtype_(in_dtype) {}
  std::string name() const override { return "ToDTypeBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {to(g[0], in_dtype_)}; }

 private:
  DType in_dtype_;
};

class ToDeviceBackward final : public Node {
 public:
  explicit ToDeviceBackward(Device in_device) : in_device_(in_device) {}
  std::string name() const override { return "ToDeviceBackward"; }
  std::vector<Tensor> backward(const std::vector<Tensor>& g) override { return {to(g[0], in_device_)}; }

 private:
  Device in_device_;
};

template <typename NodeT, typename... Args>
Tensor record_unary(const Tensor& x, Tensor out, Args&&... args) {
  if (needs_grad({&x})) record(std::make_shared<NodeT>(std::forward<Args>(args)...), {x}, {&out});
  return out;
}

}  // namespace

Tensor view(const Tensor& x, const Shape& shape) {
  ops::check_defined("view", x);
  Shape new_shape = infer_shape("view", x, shape);
  std::optional<Shape> strides = view_strides(x.shape(), x.strides(), new_shape);
  ZT_CHECK(strides.has_value(), "view", "cannot view ", x.describe(), " with strides ", shape_str(x.strides()),
           " as ", shape_str(new_shape), " without a copy (use reshape)");
  return record_unary<ViewBackward>(x, make_view(x, new_shape, *strides, x.offset()), x.shape());
}

Tensor reshape(const Tensor& x, const Shape& shape) {
  ops::check_defined("reshape", x);
  Shape new_shape = infer_shape("reshape", x, shape);
  if (view_strides(x.shape(), x.strides(), new_shape)) return view(x, new_shape);
  return view(clone(x), new_shape);
}

Tensor permute(const Tensor& x, const std::vector<int64_t>& dims) {
  ops::check_defined("permute", x);
  ZT_CHECK(static_cast<int64_t>(dims.size()) == x.dim(), "permute", "got ", dims.size(), " dims for ", x.describe());
  std::vector<int64_t> d(dims.size());
  std::vector<bool> seen(dims.size(), false);
  Shape shape(dims.size()), strides(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) {
    d[i] = normalize_dim("permute", dims[i], x);
    ZT_CHECK(!seen[static_cast<size_t>(d[i])], "permute", "dim ", dims[i], " repeats in the permutation for ",
             x.describe());
    seen[static_cast<size_t>(d[i])] = true;
    shape[i] = x.shape()[static_cast<size_t>(d[i])];
    strides[i] = x.strides()[static_cast<size_t>(d[i])];
  }
  return record_unary<PermuteBackward>(x, make_view(x, shape, strides, x.offset()), d);
}

Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1) {
  ops::check_defined("transpose", x);
  int64_t a = normalize_dim("transpose", dim0, x), b = normalize_dim("transpose", dim1, x);
  std::vector<int64_t> dims(static_cast<size_t>(x.dim()));
  std::iota(dims.begin(), dims.end(), 0);
  std::swap(dims[static_cast<size_t>(a)], dims[static_cast<size_t>(b)]);
  return permute(x, dims);
}

Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length) {
  ops::check_defined("narrow", x);
  int64_t d = normalize_dim("narrow", dim, x);
  int64_t size = x.shape()[static_cast<size_t>(d)];
  if (start < 0 && start >= -size) start += size;
  ZT_CHECK(start >= 0 && length >= 0 && start + length <= size, "narrow", "window start ", start, " length ", length,
           " does not fit dim ", dim, " of ", x.describe());
  Shape shape = x.shape();
  shape[static_cast<size_t>(d)] = length;
  Tensor out = make_view(x, shape, x.strides(), x.offset() + start * x.strides()[static_cast<size_t>(d)]);
  return record_unary<NarrowBackward>(x, out, x.shape(), d, start);
}

Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end) {
  ops::check_defined("slice", x);
  int64_t d = normalize_dim("slice", dim, x);
  int64_t size = x.shape()[static_cast<size_t>(d)];
  int64_t s = start < 0 ? start + size : start, e = end < 0 ? end + size : end;
  ZT_CHECK(s >= 0 && s <= e && e <= size, "slice", "range [", start, ", ", end, ") does not fit dim ", dim, " of ",
           x.describe());
  return narrow(x, d, s, e - s);
}

Tensor unsqueeze(const Tensor& x, int64_t dim) {
  ops::check_defined("unsqueeze", x);
  int64_t d = normalize_dim("unsqueeze", dim, x.dim() + 1, x);
  Shape shape = x.shape(), strides = x.strides();
  size_t pos = static_cast<size_t>(d);
  int64_t stride = pos < shape.size() ? shape[pos] * strides[pos] : 1;
  shape.insert(shape.begin() + d, 1);
  strides.insert(strides.begin() + d, stride);
  return record_unary<ViewBackward>(x, make_view(x, shape, strides, x.offset()), x.shape());
}

Tensor squeeze(const Tensor& x, int64_t dim) {
  ops::check_defined("squeeze", x);
  int64_t d = normalize_dim("squeeze", dim, x);
  ZT_CHECK(x.shape()[static_cast<size_t>(d)] == 1, "squeeze", "dim ", dim, " of ", x.describe(),
           " has size ", x.shape()[static_cast<size_t>(d)], ", not 1");
  Shape shape = x.shape(), strides = x.strides();
  shape.erase(shape.begin() + d);
  strides.erase(strides.begin() + d);
  return record_unary<ViewBackward>(x, make_view(x, shape, strides, x.offset()), x.shape());
}

std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim) {
  ops::check_defined("split", x);
  int64_t d = normalize_dim("split", dim, x);
  ZT_CHECK(split_size > 0, "split", "split_size must be positive, got ", split_size, " for ", x.describe());
  int64_t size = x.shape()[static_cast<size_t>(d)];
  std::vector<Tensor> pieces;
  std::vector<int64_t> sizes;
  for (int64_t start = 0; start < size; start += split_size) {
    sizes.push_back(std::min(split_size, size - start));
    Shape shape = x.shape();
    shape[static_cast<size_t>(d)] = sizes.back();
    pieces.push_back(make_view(x, shape, x.strides(), x.offset() + start * x.strides()[static_cast<size_t>(d)]));
  }
  // One node for all pieces: its backward writes the input's gradient once (a narrow per piece
  // would each make a whole-size zero gradient and the engine would add them up).
  if (needs_grad({&x})) {
    std::vector<Tensor*> outs;
    for (Tensor& p : pieces) outs.push_back(&p);
    record(std::make_shared<SplitBackward>(x.shape(), d, sizes), {x}, outs);
  }
  return pieces;
}

Tensor cat(const std::vector<Tensor>& xs, int64_t dim) {
  ZT_CHECK(!xs.empty(), "cat", "needs at least one tensor");
  const Tensor& first = xs[0];
  ops::check_defined("cat", first, "tensor 0");
  int64_t d = normalize_dim("cat", dim, first);
  Shape shape = first.shape();
  std::vector<int64_t> sizes;
  shape[static_cast<size_t>(d)] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    ops::check_same_dtype_device("cat", first, x);
    bool fits = x.dim() == first.dim();
    for (int64_t k = 0; fits && k < x.dim(); ++k)
      fits = k == d || x.shape()[static_cast<size_t>(k)] == first.shape()[static_cast<size_t>(k)];
    ZT_CHECK(fits, "cat", "tensor ", i, " is ", x.describe(), ", tensor 0 is ", first.describe(),
             ": sizes must match except in dim ", dim);
    sizes.push_back(x.shape()[static_cast<size_t>(d)]);
    shape[static_cast<size_t>(d)] += sizes.back();
  }
  Tensor out = empty(shape, first.dtype(), first.device());
  const Backend& backend = backend_for(first.device());
  int64_t start = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    Shape piece_shape = shape;
    piece_shape[static_cast<size_t>(d)] = sizes[i];
    Tensor window = make_view(out, piece_shape, out.strides(), start * out.strides()[static_cast<size_t>(d)]);
    backend.copy_strided(xs[i], window);
    start += sizes[i];
  }
  if (needs_grad(xs)) record(std::make_shared<CatBackward>(d, sizes), xs, {&out});
  return out;
}

Tensor clone(const Tensor& x) {
  ops::check_defined("clone", x);
  Tensor out = empty(x.shape(), x.dtype(), x.device());
  backend_for(x.device()).copy_strided(x, out);
  return record_unary<CloneBackward>(x, out);
}

Tensor contiguous(const Tensor& x) {
  ops::check_defined("contiguous", x);
  return x.is_contiguous() ? x : clone(x);
}

Tensor to(const Tensor& x, DType dtype) {
  ops::check_defined("to", x);
  if (x.dtype() == dtype) return x;
  Tensor out = empty(x.shape(), dtype, x.device());
  backend_for(x.device()).copy_strided(x, out);
  // Only floating results carry gradients; a cast to an integer type ends the graph.
  if (is_floating(dtype)) return record_unary<ToDTypeBackward>(x, out, x.dtype());
  return out;
}

Tensor to(const Tensor& x, Device device) {
  ops::check_defined("to", x);
  if (x.device() == device) return x;
  Tensor src = x.is_contiguous() ? x : clone(x.detach());
  Tensor out = empty(x.shape(), x.dtype(), device);
  // The CPU backend forwards anything that touches a GPU to the CUDA backend.
  backend_for(device.is_cuda() ? device : x.device())
      .copy_bytes(out.raw_data(), device, src.raw_data(), src.device(), src.nbytes());
  return record_unary<ToDeviceBackward>(x, out, x.device());
}

Tensor expand(const Tensor& x, const Shape& shape) {
  ops::check_defined("expand", x);
  const int64_t nd = static_cast<int64_t>(shape.size()), lead = nd - x.dim();
  ZT_CHECK(lead >= 0, "expand", "cannot expand ", x.describe(), " to fewer dims ", shape_str(shape));
  Shape out_shape(shape.size()), strides(shape.size(), 0);
  for (int64_t i = 0; i < nd; ++i) {
    size_t k = static_cast<size_t>(i);
    if (i < lead) {
      ZT_CHECK(shape[k] >= 0, "expand", "cannot expand ", x.describe(), " to ", shape_str(shape),
               " (-1 only for existing dims)");
      out_shape[k] = shape[k];
      continue;
    }
    size_t j = static_cast<size_t>(i - lead);
    int64_t have = x.shape()[j];
    int64_t want = shape[k] == -1 ? have : shape[k];
    ZT_CHECK(want == have || have == 1, "expand", "cannot expand ", x.describe(), " to ", shape_str(shape),
             ": dim ", i, " has size ", have, " (only size-1 dims expand)");
    out_shape[k] = want;
    strides[k] = want == have ? x.strides()[j] : 0;
  }
  if (out_shape == x.shape()) return x;
  return record_unary<ExpandBackward>(x, make_view(x, out_shape, strides, x.offset()), x.shape());
}

void copy_(Tensor& dst, const Tensor& src) {
  ops::check_defined("copy_", dst, "dst");
  ops::check_defined("copy_", src, "src");
  ZT_CHECK(dst.shape() == src.shape(), "copy_", "shapes differ: dst is ", dst.describe(), ", src is ",
           src.describe());
  NoGradGuard no_grad;
  if (dst.device() == src.device()) {
    backend_for(dst.device()).copy_strided(src, dst);
    return;
  }
  // Across devices: cast on the source side, move the bytes, scatter on the destination side.
  Tensor moved = to(to(src.detach(), dst.dtype()), dst.device());
  backend_for(dst.device()).copy_strided(moved, dst);
}

void fill_(Tensor& dst, double value) {
  ops::check_defined("fill_", dst, "dst");
  const Backend& backend = backend_for(dst.device());
  if (dst.is_contiguous()) {
    backend.fill(dst, value);
    return;
  }
  Tensor dense = full(dst.shape(), value, dst.dtype(), dst.device());
  backend.copy_strided(dense, dst);
}

}  // namespace zt
