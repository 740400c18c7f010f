// The public op API. Each function checks its inputs (errors name the op and both operands' shapes
// and dtypes), picks the kernel for the inputs' device through core/backend.h and, when an input
// requires grad, records a node with its own backward (core/autograd.h).
//
// Conventions: dims may be negative (counted from the end). Binary ops broadcast NumPy style and
// need equal dtypes and devices (cast explicitly with to()). bf16 and f16 compute in f32.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "core/autograd.h"
#include "core/tensor.h"

namespace zt {

// ---- factories (no autograd history; set_requires_grad to make a leaf) -------------------------
Tensor zeros(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor ones(const Shape& shape, DType dtype = DType::f32, Device device = Device::cpu());
Tensor full(const Shape& shape, double value, DType dtype = DType::f32, Device device = Device::cpu());
Tensor arange(int64_t n, DType dtype = DType::i64, Device device = Device::cpu());
template <typename T>
Tensor from_vector(const std::vector<T>& values, const Shape& shape, Device device = Device::cpu());
Tensor from_vector_as(const std::vector<double>& values, const Shape& shape, DType dtype,
                      Device device = Device::cpu());
// Counter-based random numbers (core/rng.h): element i of the result is draw (seed, offset + i),
// whatever the device, so a tensor split across ranks draws the same numbers as the whole.
Tensor randn(const Shape& shape, uint64_t seed, uint64_t offset = 0, DType dtype = DType::f32,
             Device device = Device::cpu());
Tensor rand_uniform(const Shape& shape, uint64_t seed, uint64_t offset = 0, DType dtype = DType::f32,
                    Device device = Device::cpu());
Tensor randint(const Shape& shape, int64_t high, uint64_t seed, uint64_t offset = 0, DType dtype = DType::i64,
               Device device = Device::cpu());

// ---- views and layout --------------------------------------------------------------------------
Tensor view(const Tensor& x, const Shape& shape);     // needs compatible strides; one dim may be -1
Tensor reshape(const Tensor& x, const Shape& shape);  // a view when possible, else a copy
Tensor transpose(const Tensor& x, int64_t dim0, int64_t dim1);
Tensor permute(const Tensor& x, const std::vector<int64_t>& dims);
Tensor narrow(const Tensor& x, int64_t dim, int64_t start, int64_t length);
Tensor slice(const Tensor& x, int64_t dim, int64_t start, int64_t end);
Tensor unsqueeze(const Tensor& x, int64_t dim);
Tensor squeeze(const Tensor& x, int64_t dim);
std::vector<Tensor> split(const Tensor& x, int64_t split_size, int64_t dim);
Tensor cat(const std::vector<Tensor>& xs, int64_t dim);
Tensor contiguous(const Tensor& x);
Tensor clone(const Tensor& x);
Tensor to(const Tensor& x, DType dtype);   // cast; differentiable between floating types
Tensor to(const Tensor& x, Device device);  // copy across devices; differentiable
Tensor expand(const Tensor& x, const Shape& shape);  // broadcast view (stride 0)

// ---- elementwise -------------------------------------------------------------------------------
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double exponent);
Tensor neg(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor gelu(const Tensor& x);  // tanh approximation, as GPT-2
Tensor operator+(const Tensor& a, const Tensor& b);
Tensor operator-(const Tensor& a, const Tensor& b);
Tensor operator*(const Tensor& a, const Tensor& b);
Tensor operator/(const Tensor& a, const Tensor& b);

// ---- reductions --------------------------------------------------------------------------------
Tensor sum(const Tensor& x);  // all elements, a 0-d tensor
Tensor sum(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int64_t>& dims, bool keepdim = false);
Tensor max(const Tensor& x);  // all elements
Tensor max(const Tensor& x, int64_t dim, bool keepdim = false);  // gradient goes to the first maximum
Tensor argmax(const Tensor& x, int64_t dim, bool keepdim = false);  // i64, no gradient

// ---- neural-network ops ------------------------------------------------------------------------
Tensor softmax(const Tensor& x, int64_t dim);
Tensor log_softmax(const Tensor& x, int64_t dim);
// a [..., M, K] x b [..., K, N] with batch dims broadcast; transpose flags act on the last two dims.
Tensor matmul(const Tensor& a, const Tensor& b, bool transpose_a = false, bool transpose_b = false);
// x [..., in] x weight [out, in]^T + bias [out] (bias may be undefined).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// gelu(linear(x, weight, bias)) as one op: on CUDA the bias and GeLU are the product's epilogue.
Tensor linear_gelu(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());
// A GPT MLP, gelu(x w1^T + b1) w2^T + b2, as one autograd node: the same values and saved
// activations as linear(linear_gelu(x, w1, b1), w2, b2), with a backward whose weight-gradient
// products carry the bias gradients in their epilogues on the GPU (Backend::linear_weight_grads).
Tensor mlp(const Tensor& x, const Tensor& w1, const Tensor& b1, const Tensor& w2, const Tensor& b2);
// Normalise over the last dim. weight/bias [C] (bias may be undefined for layernorm).
Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps = 1e-5);
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps = 1e-6);
// weight [V, C], ids (i32 or i64) of any shape -> [*ids.shape, C].
Tensor embedding(const Tensor& weight, const Tensor& ids);
// q, k, v [B, H, T, D] -> [B, H, T, D]; softmax(q k^T * scale + causal mask) v.
// scale defaults to 1/sqrt(D). The CUDA kernel never materialises the T x T matrix.
Tensor scaled_dot_product_attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal = true,
                                    std::optional<double> scale = std::nullopt);
// logits [N, V] (any float dtype), targets [N] (i32/i64). Mean over targets != ignore_index of
// -log softmax(logits)[target]; columns at or past valid_vocab (vocabulary padding) are excluded
// from the softmax. Returns an f32 0-d tensor.
Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index = -100,
                     int64_t valid_vocab = -1);
// cross_entropy(x weight^T, targets, ...) for x [..., C] and weight [V, C], computed chunk_rows
// rows at a time with the logits' gradient made during the forward, so the [N, V] logits never
// exist whole (Note [Chunked loss] in core/ops/linear_cross_entropy.cpp). Returns an f32 0-d
// tensor (f64 for f64 inputs).
Tensor linear_cross_entropy(const Tensor& x, const Tensor& weight, const Tensor& targets, int64_t chunk_rows,
                            int64_t ignore_index = -100, int64_t valid_vocab = -1);
// The backward of a head whose gradients were made in the forward (Note [Chunked loss]): records
// on `loss` that x's gradient is dx * g * inv_count and weight's dw * g * inv_count (g: loss's
// incoming gradient), dx [N, C] and dw [V, C] in the accumulation dtype, inv_count 0-d, all on x's
// device, rounded to x's and weight's dtypes then. Undefined dx or dw: that input gets none.
void record_precomputed_head_gradients(const Tensor& x, const Tensor& weight, Tensor& loss, Tensor dx, Tensor dw,
                                       Tensor inv_count);
// Inverted dropout with a counter-based mask: element i is kept when draw (seed, offset + i) >= p.
Tensor dropout(const Tensor& x, double p, uint64_t seed, uint64_t offset, bool training = true);

// ---- in-place, no autograd (optimizers, communication, initialisation) -------------------------
void copy_(Tensor& dst, const Tensor& src);  // same shape; casts and crosses devices
void fill_(Tensor& dst, double value);
void add_(Tensor& dst, const Tensor& src, double alpha = 1.0);  // dst += alpha * src
void mul_(Tensor& dst, double s);

// ---- comparisons for tests and checks ----------------------------------------------------------
bool allclose(const Tensor& a, const Tensor& b, double rtol = 1e-5, double atol = 1e-8);
double max_abs_diff(const Tensor& a, const Tensor& b);
double norm(const Tensor& x);  // Euclidean norm of all elements, computed in f64
bool all_finite(const Tensor& x);

}  // namespace zt
