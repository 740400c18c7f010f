// CUDA backend: causal / non-causal scaled-dot-product attention, forward and backward. Each call
// first offers the problem to cuDNN's fused SDPA (attention_cudnn.h; when the build has cuDNN's
// frontend and the backend was not made with AttentionImpl::kernels), and otherwise runs the
// FlashAttention-2 style kernels of attention_forward.cuh and attention_backward.cuh (mma.sync
// tensor cores; the T x T score matrix never reaches device memory). This file checks the inputs,
// allocates the outputs (in the layouts of Note [Attention layouts]) and picks the path.
//
// Measured on an H200, 2026-12-01, GPT-2 124M shape B=16 H=12 T=1024 D=64, bf16, causal, GPU time
// per call with launch overhead hidden (bench/timing.h), forward / forward+backward ms:
//   cuDNN SDPA (deterministic backward) 0.088 / 0.395; our kernels 0.123 / 0.539;
//   PyTorch 2.11 SDPA flash 0.086 / 0.383 (docs/performance.md).
// The earlier figures in this header (0.126 forward, then 0.145 once the strided layouts came in)
// timed single synchronised calls, so they included the host's launch path, which the strided
// version lengthened; the kernels' own time before that change was not measured back to back.
// Tile shapes in the launchers were chosen with bench/attention_tiles.cu (D = 64 and 128).
#include <climits>
#include <cmath>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "kernels/cuda/attention_backward.cuh"
#include "kernels/cuda/attention_cudnn.h"
#include "kernels/cuda/attention_forward.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/runtime.h"

namespace zt {

namespace {

struct AttentionDims {
  int64_t batch = 0, heads = 0, seq = 0, head_dim = 0;
};

// The kernels read 16-byte chunks of each row.
bool aligned16(const Tensor& t) { return reinterpret_cast<uintptr_t>(t.raw_data()) % 16 == 0; }

// Note [Attention layouts] in attention_common.cuh: any B, H, T strides, unit D stride, 16-byte rows.
bool layout_ok(const Tensor& t) {
  if (t.dim() != 4 || t.strides()[3] != 1 || !aligned16(t)) return false;
  const int64_t elem = static_cast<int64_t>(dtype_size(t.dtype()));
  for (int d = 0; d < 3; ++d)
    if ((t.strides()[static_cast<size_t>(d)] * elem) % 16 != 0) return false;
  return true;
}

void check_operand(const char* api, const char* name, const Tensor& t, const Tensor& q) {
  ZT_CHECK(t.defined(), api, name, " is undefined");
  ZT_CHECK(t.device().is_cuda(), api, name, " must be on a CUDA device, got ", t.describe());
  ZT_CHECK(t.device() == q.device(), api, name, " is on ", t.device().str(), " but q is on ", q.device().str());
  ZT_CHECK(t.dtype() == q.dtype(), api, name, " is ", dtype_name(t.dtype()), " but q is ", dtype_name(q.dtype()));
  ZT_CHECK(t.shape() == q.shape(), api, name, " has shape ", shape_str(t.shape()), " but q has ",
           shape_str(q.shape()), " (all are [B, H, T, D])");
  ZT_CHECK(layout_ok(t), api, name, " needs a unit stride in D and 16-byte aligned rows, got strides ",
           shape_str(t.strides()), " at offset ", t.offset());
}

cuda::attn::HeadLayout head_layout(const Tensor& t) { return {t.strides()[0], t.strides()[1], t.strides()[2]}; }

// [B, H, T, D] views of fresh [B, T, H, D] memory: what a following permute + reshape to [B, T, C]
// reads without a copy.
Tensor heads_last_view(const Tensor& like) {
  const int64_t B = like.size(0), H = like.size(1), T = like.size(2), D = like.size(3);
  Tensor memory = empty({B, T, H, D}, like.dtype(), like.device());
  return make_view(memory, {B, H, T, D}, {T * H * D, D, H * D, 1}, 0);
}

// Whether q, k and v are the three parts of one [B, T, 3, H, D] buffer (a linear layer's packed
// output), in that order.
bool packed_qkv(const Tensor& q, const Tensor& k, const Tensor& v) {
  const int64_t H = q.size(1), T = q.size(2), D = q.size(3), C = H * D;
  const Shape packed{T * 3 * C, D, 3 * C, 1};
  return q.storage() == k.storage() && q.storage() == v.storage() && q.strides() == packed &&
         k.strides() == packed && v.strides() == packed && k.offset() == q.offset() + C &&
         v.offset() == q.offset() + 2 * C;
}

AttentionDims check_attention_inputs(const char* api, const Tensor& q, const Tensor& k, const Tensor& v,
                                     double scale) {
  ZT_CHECK(q.defined(), api, "q is undefined");
  ZT_CHECK(q.dim() == 4, api, "q, k and v must be [B, H, T, D], got q ", q.describe());
  ZT_CHECK(q.dtype() == DType::bf16 || q.dtype() == DType::f16, api, "accepts bf16 or f16 on CUDA, got ",
           dtype_name(q.dtype()), " (cast with to() first)");
  check_operand(api, "q", q, q);
  check_operand(api, "k", k, q);
  check_operand(api, "v", v, q);
  AttentionDims d{q.size(0), q.size(1), q.size(2), q.size(3)};
  ZT_CHECK(d.head_dim == 64 || d.head_dim == 128, api, "head dim D must be 64 or 128 on CUDA, got ", d.head_dim,
           " (q is ", q.describe(), ")");
  // Grids are (B*H, tiles of 64 rows); CUDA allows 2^31 - 1 and 65535 blocks in those dims.
  ZT_CHECK(d.batch * d.heads <= INT32_MAX && d.seq <= int64_t{65535} * 64, api, "shape ", shape_str(q.shape()),
           " is too large: B*H must be below 2^31 and T at most ", int64_t{65535} * 64);
  ZT_CHECK(std::isfinite(scale) && scale > 0, api, "scale must be positive and finite, got ", scale);
  return d;
}

cuda::attn::ElemType elem_type(DType dtype) { return dtype == DType::bf16 ? cuda::attn::ElemType::bf16 : cuda::attn::ElemType::f16; }

}  // namespace

AttentionResult CudaBackend::attention(const Tensor& q, const Tensor& k, const Tensor& v, bool causal,
                                       double scale) const {
  const char* api = "attention";
  const AttentionDims d = check_attention_inputs(api, q, k, v, scale);
  AttentionResult result;
  result.out = heads_last_view(q);
  result.lse = empty({d.batch, d.heads, d.seq}, DType::f32, q.device());
  if (q.numel() == 0) return result;

  if (use_cudnn_ && cuda::cudnn_sdpa_forward(q, k, v, result.out, result.lse, causal, scale)) return result;
  const int device = q.device().index;
  cuda::DeviceGuard guard(device);
  cuda::attn::ForwardParams p;
  p.q = q.raw_data();
  p.k = k.raw_data();
  p.v = v.raw_data();
  p.out = result.out.raw_data();
  p.lse = result.lse.data<float>();
  p.lq = head_layout(q);
  p.lk = head_layout(k);
  p.lv = head_layout(v);
  p.lout = head_layout(result.out);
  p.heads = static_cast<int>(d.heads);
  p.batch_heads = static_cast<int>(d.batch * d.heads);
  p.seq_len = static_cast<int>(d.seq);
  p.scale = static_cast<float>(scale);
  p.causal = causal;
  ZT_CUDA_CHECK(cuda::attn::launch_attention_forward(p, elem_type(q.dtype()), static_cast<int>(d.head_dim),
                                               cuda::current_stream(device)));
  return result;
}

AttentionGrads CudaBackend::attention_backward(const Tensor& grad_out, const Tensor& q, const Tensor& k,
                                               const Tensor& v, const Tensor& out, const Tensor& lse, bool causal,
                                               double scale) const {
  const char* api = "attention_backward";
  const AttentionDims d = check_attention_inputs(api, q, k, v, scale);
  check_operand(api, "grad_out", grad_out, q);
  check_operand(api, "out", out, q);
  ZT_CHECK(lse.defined() && lse.dtype() == DType::f32 && lse.device() == q.device() && lse.is_contiguous() &&
               lse.shape() == Shape({d.batch, d.heads, d.seq}),
           api, "lse must be contiguous f32 [B, H, T] = ", shape_str({d.batch, d.heads, d.seq}), " on ",
           q.device().str(), ", got ", lse.defined() ? lse.describe() : std::string("undefined"));

  // The gradients take q, k and v's layout when those are one packed buffer (so the split that
  // made them concatenates its gradients without a copy), else [B, T, H, D] memory each.
  AttentionGrads grads;
  if (packed_qkv(q, k, v)) {
    const int64_t C = d.heads * d.head_dim;
    Tensor memory = empty({d.batch, d.seq, 3 * C}, q.dtype(), q.device());
    grads.dq = make_view(memory, q.shape(), q.strides(), 0);
    grads.dk = make_view(memory, q.shape(), q.strides(), C);
    grads.dv = make_view(memory, q.shape(), q.strides(), 2 * C);
  } else {
    grads.dq = heads_last_view(q);
    grads.dk = heads_last_view(q);
    grads.dv = heads_last_view(q);
  }
  if (q.numel() == 0) return grads;

  if (use_cudnn_ && cuda::cudnn_sdpa_backward(grad_out, q, k, v, out, lse, grads.dq, grads.dk, grads.dv, causal, scale,
                                                  deterministic_))
    return grads;
  const int device = q.device().index;
  cuda::DeviceGuard guard(device);
  // Delta = rowsum(grad_out * out), f32 [B, H, T]; freed (to the caching allocator) on return,
  // which is safe because the allocator orders reuse on the same stream.
  Tensor delta = empty({d.batch, d.heads, d.seq}, DType::f32, q.device());
  cuda::attn::BackwardParams p;
  p.grad_out = grad_out.raw_data();
  p.q = q.raw_data();
  p.k = k.raw_data();
  p.v = v.raw_data();
  p.out = out.raw_data();
  p.lse = lse.data<float>();
  p.delta = delta.data<float>();
  p.dq = grads.dq.raw_data();
  p.dk = grads.dk.raw_data();
  p.dv = grads.dv.raw_data();
  p.lq = head_layout(q);
  p.lk = head_layout(k);
  p.lv = head_layout(v);
  p.lout = head_layout(out);
  p.ldout = head_layout(grad_out);
  p.ldq = head_layout(grads.dq);
  p.ldk = head_layout(grads.dk);
  p.ldv = head_layout(grads.dv);
  p.heads = static_cast<int>(d.heads);
  p.batch_heads = static_cast<int>(d.batch * d.heads);
  p.seq_len = static_cast<int>(d.seq);
  p.scale = static_cast<float>(scale);
  p.causal = causal;
  ZT_CUDA_CHECK(cuda::attn::launch_attention_backward(p, elem_type(q.dtype()), static_cast<int>(d.head_dim),
                                                cuda::current_stream(device)));
  return grads;
}

bool CudaBackend::attention_accepts_layout(const Tensor& t) const { return layout_ok(t); }

bool CudaBackend::fused_attention_supported(DType dtype, int64_t head_dim) const {
  return (dtype == DType::bf16 || dtype == DType::f16) && (head_dim == 64 || head_dim == 128);
}

}  // namespace zt
