// Building blocks shared by the attention kernels (attention_forward.cuh, attention_backward.cuh):
// the launch parameters, inline-PTX wrappers for the Ampere/Hopper warp-level tensor-core path
// (mma.sync m16n8k16, ldmatrix, cp.async) and tile copies between device and shared memory.
//
// Why mma.sync and not WMMA: the online softmax works on the score tile while it sits in the
// accumulator registers. mma.sync documents which thread holds which element (PTX ISA, "Matrix
// Fragments for mma.m16n8k16"), so a row's max and sum need only two shuffles inside a group of
// four lanes, and an f32 accumulator tile re-packs into the A operand of the next product without
// touching shared memory. WMMA fragments are opaque and would force a round trip.
//
// Fragment layout used everywhere (lane = 4 * g + t, g = lane / 4 in 0..7, t = lane % 4 in 0..3):
//   A 16x16 (row major): a[0] = (g, 2t..2t+1), a[1] = (g+8, 2t..), a[2] = (g, 2t+8..), a[3] = (g+8, 2t+8..)
//   B 16x8  (k x n):     b[0] = (k = 2t..2t+1, n = g), b[1] = (k = 2t+8.., n = g)
//   C 16x8  (f32):       c[0], c[1] = (g, 2t..2t+1), c[2], c[3] = (g+8, 2t..2t+1)
// so two adjacent C tiles (16 x 16) hold exactly the elements of one A fragment (pack_a_from_acc).
//
// Shared-memory tiles are row major with rows padded by kPad elements (16 bytes): ldmatrix reads
// eight 16-byte rows at a time, and a row pitch of 144 or 272 bytes puts them in eight different
// groups of four banks, so these reads are free of bank conflicts without a swizzle.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace zt::cuda::attn {

// ---- launch parameters ---------------------------------------------------------------------------
// Note [Attention layouts]: q, k, v, out and their gradients are [B, H, T, D] with any element
// strides for B, H and T and a unit stride for D, so the kernels read q, k and v straight out of a
// linear layer's packed [B, T, 3, H, D] output and write [B, T, H, D] (no permute copies around
// attention). Every row start must be 16-byte aligned. lse and delta are f32 [B, H, T] contiguous.
struct HeadLayout {
  int64_t batch = 0, head = 0, row = 0;  // element strides of B, H and T
};

// Where row 0 of (batch, head) = divmod(bh, heads) starts.
__host__ __device__ __forceinline__ int64_t head_start(const HeadLayout& l, int bh, int heads) {
  return static_cast<int64_t>(bh / heads) * l.batch + static_cast<int64_t>(bh % heads) * l.head;
}

struct ForwardParams {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;
  HeadLayout lq, lk, lv, lout;
  int heads = 1;        // H
  int batch_heads = 0;  // B * H
  int seq_len = 0;      // T
  float scale = 0;      // multiplies q.k before the softmax
  bool causal = false;
};

struct BackwardParams {
  const void* grad_out = nullptr;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const float* lse = nullptr;
  float* delta = nullptr;  // scratch, f32 [B, H, T]: rowsum(grad_out * out), written by the dQ kernel
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  HeadLayout lq, lk, lv, lout, ldout, ldq, ldk, ldv;
  int heads = 1;
  int batch_heads = 0;
  int seq_len = 0;
  float scale = 0;
  bool causal = false;
};

enum class ElemType : uint8_t { bf16, f16 };

inline constexpr int kPad = 8;  // elements of padding per shared-memory row (16 bytes)
inline constexpr float kLog2e = 1.4426950408889634f;
inline constexpr float kLn2 = 0.6931471805599453f;

// ---- small device helpers ------------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 2^x with the special-function unit (ex2.approx: relative error ~2^-22, ex2(-inf) = +0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

template <typename Elem>
__device__ __forceinline__ uint32_t pack2(float lo, float hi) {
  // The element with the lower column index goes to the low half of the register.
  if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&v);
  }
}

// c += a * b for one 16x8x16 tile, f32 accumulation.
template <typename Elem>
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Four 8x8 matrices of 16-bit elements; lanes 8i..8i+7 give the row addresses of matrix i.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// Lane address offsets (in elements, relative to the 16x16 block's top-left) for ldmatrix_x4:
//  * a_or_trans_offset: A fragment of a row-major tile (no trans), or two n8 B tiles of a
//    row-major [k][n] tile (with trans): rows 0..15 by lane % 16, column half by lane / 16.
//  * b_offset: two n8 B tiles of a row-major [n][k] tile (no trans): matrices (n0,k0), (n0,k0+8),
//    (n0+8,k0), (n0+8,k0+8), so r[0], r[1] are b0, b1 of tile n0 and r[2], r[3] those of n0 + 8.
template <int kStride>
__device__ __forceinline__ int a_or_trans_offset(int lane) {
  return (lane & 15) * kStride + (lane >> 4) * 8;
}
template <int kStride>
__device__ __forceinline__ int b_offset(int lane) {
  return ((lane & 7) + ((lane >> 4) << 3)) * kStride + ((lane >> 3) & 1) * 8;
}

// Two adjacent 16x8 f32 accumulator tiles (columns 16j..16j+15) as one A fragment of 16-bit elements.
template <typename Elem>
__device__ __forceinline__ void pack_a_from_acc(uint32_t (&a)[4], const float (&lo)[4], const float (&hi)[4]) {
  a[0] = pack2<Elem>(lo[0], lo[1]);
  a[1] = pack2<Elem>(lo[2], lo[3]);
  a[2] = pack2<Elem>(hi[0], hi[1]);
  a[3] = pack2<Elem>(hi[2], hi[3]);
}

// ---- asynchronous copies -------------------------------------------------------------------------
// 16 bytes global -> shared, bypassing L1; with valid == false nothing is read and zeros are written.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}

// Rows [row0, row0 + kRows) of a row-major [T, D] matrix into a padded shared tile; rows past T
// become zeros (their source address is clamped to row 0 so no byte outside the tensor is named).
// Consecutive threads take consecutive 16-byte chunks of a row: coalesced reads.
template <int kRows, int D, int kThreads, typename Elem>
__device__ __forceinline__ void load_tile_async(Elem* smem, const Elem* gmem, int64_t row_stride, int row0, int T,
                                                int tid) {
  constexpr int kChunksPerRow = D / 8;
  constexpr int kChunks = kRows * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "tile copy assumes whole rounds of the block");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int c = tid + i * kThreads;
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    const int grow = row0 + r;
    const bool valid = grow < T;
    cp_async_16(smem_u32(smem + r * (D + kPad) + col), gmem + static_cast<int64_t>(valid ? grow : 0) * row_stride + col,
                valid);
  }
}

// A warp stores the 16 x D accumulator tile it owns (rows row0 + 0..15 of the output) through its
// own 16 rows of a padded shared tile, so the global writes are whole 16-byte chunks. `stage` must
// be rows only this warp uses; rows at or past T are not written.
template <typename Elem, int D>
__device__ __forceinline__ void store_warp_tile(const float (&acc)[D / 8][4], float scale_lo, float scale_hi,
                                                Elem* stage, Elem* gmem, int64_t row_stride, int row0, int T,
                                                int lane) {
  constexpr int kStride = D + kPad;
  const int g = lane >> 2, t = lane & 3;
  __syncwarp();
#pragma unroll
  for (int n = 0; n < D / 8; ++n) {
    *reinterpret_cast<uint32_t*>(stage + g * kStride + n * 8 + 2 * t) =
        pack2<Elem>(acc[n][0] * scale_lo, acc[n][1] * scale_lo);
    *reinterpret_cast<uint32_t*>(stage + (g + 8) * kStride + n * 8 + 2 * t) =
        pack2<Elem>(acc[n][2] * scale_hi, acc[n][3] * scale_hi);
  }
  __syncwarp();
  constexpr int kChunksPerRow = D / 8;
#pragma unroll
  for (int i = 0; i < 16 * kChunksPerRow / 32; ++i) {
    const int c = lane + 32 * i;
    const int r = c / kChunksPerRow;
    const int col = (c % kChunksPerRow) * 8;
    if (row0 + r < T) {
      *reinterpret_cast<uint4*>(gmem + static_cast<int64_t>(row0 + r) * row_stride + col) =
          *reinterpret_cast<const uint4*>(stage + r * kStride + col);
    }
  }
}

// Sum and max over the four lanes of a quad (the lanes that share a row of a C fragment).
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  x += __shfl_xor_sync(0xffffffffu, x, 2);
  return x;
}
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
  return x;
}

// A 16 x D A-operand block (16 rows owned by one warp) either kept in registers for the whole
// kernel (cheap for D = 64) or re-read from shared memory with ldmatrix at each use (D = 128,
// where keeping it would push the kernel past the register file).
template <int D, bool kInRegisters>
struct AOperand {
  static constexpr int kChunks = D / 16;
  uint32_t frag[kInRegisters ? kChunks : 1][4];
  uint32_t lane_addr = 0;  // shared address of this lane's ldmatrix row for chunk 0

  __device__ __forceinline__ void init(uint32_t addr) {
    lane_addr = addr;
    if constexpr (kInRegisters) {
#pragma unroll
      for (int kk = 0; kk < kChunks; ++kk) ldmatrix_x4(frag[kk], lane_addr + kk * 32);
    }
  }
  // The fragment for columns 16 kk .. 16 kk + 15 (kk a compile-time constant after unrolling).
  __device__ __forceinline__ const uint32_t (&get(int kk))[4] {
    if constexpr (kInRegisters) {
      return frag[kk];
    } else {
      ldmatrix_x4(frag[0], lane_addr + kk * 32);
      return frag[0];
    }
  }
};

}  // namespace zt::cuda::attn
