// Layout ops against naive index arithmetic, on contiguous and strided inputs, with f64 gradchecks
// and the error messages for bad shapes.
#include <gtest/gtest.h>

#include <numeric>

#include "core/cuda_support.h"
#include "core/ops.h"
#include "gradcheck.h"
#include "reference.h"

namespace zt::testing {
namespace {

TEST(Layout, ViewSharesStorageAndInfersMinusOne) {
  Tensor x = randn({2, 3, 4}, 1);
  Tensor v = view(x, {6, -1});
  EXPECT_EQ(v.shape(), (Shape{6, 4}));
  EXPECT_EQ(v.storage(), x.storage());
  expect_equal_all(v, host(x), "view");
  // A view of a narrowed (but row-contiguous) tensor keeps the offset.
  Tensor rows = narrow(x, 0, 1, 1);
  Tensor flat = view(rows, {12});
  EXPECT_EQ(flat.offset(), 12);
  std::vector<double> all = host(x);
  expect_equal_all(flat, std::vector<double>(all.begin() + 12, all.end()), "view of narrow");
  // Splitting and merging compatible dims of a transposed tensor is still a view.
  Tensor t = transpose(randn({4, 6}, 2), 0, 1);  // [6, 4], strides [1, 6]
  Tensor split_dim = view(t, {2, 3, 4});
  EXPECT_EQ(split_dim.strides(), (Shape{3, 1, 6}));
  expect_equal_all(split_dim, host(t), "split dim view");
}

TEST(Layout, ViewErrors) {
  Tensor x = randn({2, 3}, 1);
  EXPECT_ZT_ERROR(view(x, {4, 2}), "[view]", "[4, 2]", "[2, 3] f32 cpu");
  EXPECT_ZT_ERROR(view(x, {-1, -1}), "[view]", "only one dim may be -1");
  EXPECT_ZT_ERROR(view(x, {4, -1}), "[view]", "cannot infer");
  EXPECT_ZT_ERROR(view(transpose(x, 0, 1), {6}), "[view]", "without a copy (use reshape)", "[3, 2] f32 cpu");
  EXPECT_ZT_ERROR(reshape(x, {7}), "[reshape]", "[2, 3] f32 cpu");
}

TEST(Layout, ReshapeCopiesWhenNeeded) {
  Tensor t = transpose(randn({3, 5}, 3), 0, 1);
  Tensor r = reshape(t, {15});
  EXPECT_NE(r.storage(), t.storage());
  expect_equal_all(r, host(t), "reshape copy");
  Tensor c = randn({3, 5}, 4);
  EXPECT_EQ(reshape(c, {5, 3}).storage(), c.storage());
}

TEST(Layout, PermuteMatchesIndexArithmetic) {
  for (uint64_t seed = 0; seed < 4; ++seed) {
    Shape shape{2 + static_cast<int64_t>(seed), 3, 4};
    Tensor x = seed % 2 ? random_strided(shape, seed) : randn(shape, seed);
    std::vector<int64_t> dims{2, 0, 1};
    Tensor p = permute(x, dims);
    ASSERT_EQ(p.shape(), (Shape{4, shape[0], 3}));
    std::vector<double> xv = host(x), ref(xv.size());
    for_each_index(p.shape(), [&](const std::vector<int64_t>& i) {
      ref[static_cast<size_t>(flat_index(p.shape(), i))] = xv[static_cast<size_t>(flat_index(shape, {i[1], i[2], i[0]}))];
    });
    expect_equal_all(p, ref, "permute");
    EXPECT_EQ(p.storage(), x.storage());
    Tensor t = transpose(x, -1, 0);
    std::vector<double> tref(xv.size());
    for_each_index(t.shape(), [&](const std::vector<int64_t>& i) {
      tref[static_cast<size_t>(flat_index(t.shape(), i))] = xv[static_cast<size_t>(flat_index(shape, {i[2], i[1], i[0]}))];
    });
    expect_equal_all(t, tref, "transpose");
  }
  Tensor x = randn({2, 3}, 1);
  EXPECT_ZT_ERROR(permute(x, {0, 0}), "[permute]", "repeats");
  EXPECT_ZT_ERROR(permute(x, {0}), "[permute]", "[2, 3] f32 cpu");
  EXPECT_ZT_ERROR(transpose(x, 0, 2), "[transpose]", "dim 2 out of range", "[2, 3] f32 cpu");
}

TEST(Layout, NarrowSliceSplit) {
  Tensor x = random_strided({5, 7}, 9);
  std::vector<double> xv = host(x);
  Tensor n = narrow(x, 1, 2, 3);
  std::vector<double> ref;
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 2; j < 5; ++j) ref.push_back(xv[static_cast<size_t>(i * 7 + j)]);
  expect_equal_all(n, ref, "narrow");
  EXPECT_EQ(n.storage(), x.storage());
  expect_equal_all(slice(x, 1, 2, 5), ref, "slice");
  expect_equal_all(slice(x, -1, -5, -2), ref, "slice negative");
  std::vector<Tensor> pieces = split(x, 3, 1);
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[2].shape(), (Shape{5, 1}));
  expect_equal_all(cat(pieces, 1), xv, "cat of split");
  EXPECT_ZT_ERROR(narrow(x, 1, 5, 3), "[narrow]", "does not fit", "[5, 7] f32 cpu");
  EXPECT_ZT_ERROR(slice(x, 0, 3, 2), "[slice]", "[5, 7] f32 cpu");
  EXPECT_ZT_ERROR(split(x, 0, 0), "[split]", "positive");
}

TEST(Layout, UnsqueezeSqueeze) {
  Tensor x = random_strided({3, 4}, 5);
  Tensor u = unsqueeze(x, 1);
  EXPECT_EQ(u.shape(), (Shape{3, 1, 4}));
  expect_equal_all(u, host(x), "unsqueeze");
  EXPECT_EQ(unsqueeze(x, -1).shape(), (Shape{3, 4, 1}));
  EXPECT_EQ(unsqueeze(x, 0).shape(), (Shape{1, 3, 4}));
  EXPECT_EQ(squeeze(u, 1).shape(), (Shape{3, 4}));
  expect_equal_all(squeeze(unsqueeze(x, -1), -1), host(x), "squeeze");
  EXPECT_ZT_ERROR(squeeze(x, 0), "[squeeze]", "has size 3, not 1");
  EXPECT_ZT_ERROR(unsqueeze(x, 3), "[unsqueeze]", "out of range");
}

TEST(Layout, CatMatchesNaive) {
  Tensor a = random_strided({2, 3, 4}, 1), b = randn({2, 5, 4}, 2);
  Tensor c = cat({a, b}, 1);
  ASSERT_EQ(c.shape(), (Shape{2, 8, 4}));
  std::vector<double> av = host(a), bv = host(b), ref;
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t j = 0; j < 3 * 4; ++j) ref.push_back(av[static_cast<size_t>(i * 12 + j)]);
    for (int64_t j = 0; j < 5 * 4; ++j) ref.push_back(bv[static_cast<size_t>(i * 20 + j)]);
  }
  expect_equal_all(c, ref, "cat");
  EXPECT_ZT_ERROR(cat({a, randn({2, 3, 5}, 3)}, 1), "[cat]", "tensor 1 is [2, 3, 5] f32 cpu",
                  "tensor 0 is [2, 3, 4] f32 cpu");
  EXPECT_ZT_ERROR(cat({a, to(b, DType::f64)}, 1), "[cat]", "dtypes differ", "f64");
  EXPECT_ZT_ERROR(cat({}, 0), "[cat]", "at least one");
}

TEST(Layout, ContiguousCloneExpand) {
  Tensor x = randn({3, 4}, 1);
  EXPECT_TRUE(contiguous(x).same(x));
  Tensor t = transpose(x, 0, 1);
  Tensor tc = contiguous(t);
  EXPECT_TRUE(tc.is_contiguous());
  expect_equal_all(tc, host(t), "contiguous");
  Tensor cl = clone(x);
  EXPECT_NE(cl.storage(), x.storage());
  expect_equal_all(cl, host(x), "clone");

  Tensor col = randn({3, 1}, 2);
  Tensor e = expand(col, {2, 3, 4});
  EXPECT_EQ(e.strides(), (Shape{0, 1, 0}));
  std::vector<double> cv = host(col), ref;
  for_each_index(e.shape(), [&](const std::vector<int64_t>& i) { ref.push_back(cv[static_cast<size_t>(i[1])]); });
  expect_equal_all(e, ref, "expand");
  EXPECT_EQ(expand(col, {-1, 5}).shape(), (Shape{3, 5}));
  EXPECT_ZT_ERROR(expand(col, {4, 4}), "[expand]", "cannot expand [3, 1] f32 cpu to [4, 4]");
  EXPECT_ZT_ERROR(expand(col, {4}), "[expand]", "fewer dims");
}

TEST(Layout, CopyAndFillIntoStridedViews) {
  Tensor dst = zeros({4, 6}, DType::f64);
  Tensor window = transpose(narrow(dst, 1, 1, 3), 0, 1);  // [3, 4], strided
  Tensor src = randn({3, 4}, 7);                          // f32: copy_ casts
  copy_(window, src);
  std::vector<double> sv = host(src), dv = host(dst);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t j = 0; j < 6; ++j) {
      double want = (j >= 1 && j < 4) ? sv[static_cast<size_t>((j - 1) * 4 + i)] : 0.0;
      EXPECT_EQ(dv[static_cast<size_t>(i * 6 + j)], want) << i << "," << j;
    }
  Tensor col = narrow(dst, 1, 5, 1);
  fill_(col, 2.5);
  dv = host(dst);
  for (int64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(dv[static_cast<size_t>(i * 6 + 5)], 2.5);
    EXPECT_EQ(dv[static_cast<size_t>(i * 6)], 0.0);
  }
  EXPECT_ZT_ERROR(copy_(dst, src), "[copy_]", "dst is [4, 6] f64 cpu", "src is [3, 4] f32 cpu");
}

TEST(Layout, ToDtypeRoundTrips) {
  Tensor x = random_strided({3, 5}, 3, DType::f64);
  Tensor f = to(x, DType::f32);
  EXPECT_EQ(f.dtype(), DType::f32);
  std::vector<double> xv = host(x), ref;
  for (double v : xv) ref.push_back(static_cast<double>(static_cast<float>(v)));
  expect_equal_all(f, ref, "to f32");
  EXPECT_TRUE(to(x, DType::f64).same(x));
  Tensor i = to(from_vector<double>({1.0, -2.0, 3.0}, {3}), DType::i64);
  EXPECT_EQ(i.to_vector<int64_t>(), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_TRUE(to(x, Device::cpu()).same(x));
  if (!cuda::built_with_cuda()) EXPECT_ZT_ERROR(to(x, Device::cuda(0)), "built without CUDA");
}

// ---- gradients ---------------------------------------------------------------------------------

TEST(LayoutGrad, Views) {
  Tensor x = random_noncontiguous_f64({3, 4}, 1).set_requires_grad(true);
  Tensor y = random_f64({2, 3, 4}, 2).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return reshape(in[0], {2, 6}); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return view(in[0], {12, 2}); }, {y});
  gradcheck([](const std::vector<Tensor>& in) { return permute(in[0], {1, 2, 0}); }, {y});
  gradcheck([](const std::vector<Tensor>& in) { return transpose(in[0], 0, 1); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return narrow(in[0], 1, 1, 2); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return slice(in[0], 2, 1, 4); }, {y});
  gradcheck([](const std::vector<Tensor>& in) { return squeeze(unsqueeze(in[0], 1), 1); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return unsqueeze(in[0], 0); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return expand(unsqueeze(in[0], 1), {3, 5, 4}); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return expand(in[0], {2, 3, 4}); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return contiguous(in[0]); }, {x});
  gradcheck([](const std::vector<Tensor>& in) { return clone(in[0]); }, {x});
}

TEST(LayoutGrad, SplitAndCat) {
  Tensor x = random_noncontiguous_f64({4, 5}, 3).set_requires_grad(true);
  Tensor y = random_f64({4, 2}, 4).set_requires_grad(true);
  gradcheck([](const std::vector<Tensor>& in) { return cat({in[0], in[1], in[0]}, 1); }, {x, y});
  gradcheck(
      [](const std::vector<Tensor>& in) {
        std::vector<Tensor> parts = split(in[0], 2, 1);
        return cat({mul(parts[0], parts[1]), parts[2]}, 1);
      },
      {x});
}

TEST(LayoutGrad, SplitWithUnusedPiecesAndAdjacentGradients) {
  Tensor x = random_f64({6, 3}, 5).set_requires_grad(true);
  // A piece that gets no gradient contributes zeros.
  gradcheck([](const std::vector<Tensor>& in) { return mul_scalar(split(in[0], 4, 0)[1], 3.0); }, {x});
  // Gradients that already are adjacent windows of one buffer (as CUDA attention writes dq, dk
  // and dv) become the input's gradient as they are: same values, same memory, no copy.
  std::vector<Tensor> parts = split(x, 2, 0);
  Tensor buffer = random_f64({6, 3}, 6);
  std::vector<Tensor> grads = split(buffer, 2, 0);
  std::vector<Tensor> got = grad(parts, {x}, grads);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].storage(), buffer.storage());
  EXPECT_EQ(got[0].to_vector<double>(), buffer.to_vector<double>());
  // Not adjacent (swapped): copied into place.
  std::vector<Tensor> swapped = grad(parts, {x}, {grads[1], grads[0], grads[2]});
  EXPECT_NE(swapped[0].storage(), buffer.storage());
  EXPECT_EQ(narrow(swapped[0], 0, 0, 2).to_vector<double>(), grads[1].to_vector<double>());
}

TEST(LayoutGrad, ToDtype) {
  Tensor x = random_noncontiguous_f64({3, 4}, 5).set_requires_grad(true);
  // Through f32 and back: the gradient is cast back to f64 (exact for these values up to f32 rounding).
  gradcheck([](const std::vector<Tensor>& in) { return to(to(in[0], DType::f32), DType::f64); }, {x}, 1e-2, 1e-4);
  Tensor leaf = randn({3}, 6).set_requires_grad(true);
  Tensor h = to(leaf, DType::bf16);
  EXPECT_TRUE(h.requires_grad());
  backward(sum(to(h, DType::f32)));
  ASSERT_TRUE(leaf.grad().defined());
  EXPECT_EQ(leaf.grad().dtype(), DType::f32);
  expect_equal_all(leaf.grad(), {1, 1, 1}, "cast grad");
  EXPECT_FALSE(to(leaf, DType::i64).requires_grad());
}

}  // namespace
}  // namespace zt::testing
