// Attention backward, FlashAttention-2 algorithm, deterministic. With s = scale q k^T (+ mask),
// p = softmax(s) = exp(s - lse) and dO the output gradient:
//   dV = p^T dO,  dP = dO V^T,  dS = p * (dP - Delta) with Delta = rowsum(dO * O),
//   dK = scale dS^T Q,  dQ = scale dS K.
// p is recomputed tile by tile from q, k and the forward's lse, so nothing T x T is ever stored.
//
// Why two kernels (launched in this order on one stream):
//  1. attention_dq_kernel: one block per query tile, each warp owning 16 queries, walking the key
//     tiles. First it computes Delta for its rows (it holds their dO anyway) and writes it out;
//     then it recomputes p and dP and accumulates dQ. That is two more products than
//     FlashAttention-2's version, which adds dQ with atomicAdd from the key-tile blocks, but every
//     dQ element is written exactly once: results do not depend on block scheduling.
//  2. attention_dkdv_kernel: one block per key tile, each warp owning 16 keys; it walks over the
//     query tiles and accumulates dK and dV for its keys in registers. Everything it needs of a
//     query tile (the transposed scores, p^T, dP^T, dS^T) is produced in the warp's own accumulator
//     registers, so no shared-memory round trip and no barrier beyond the tile double-buffering.
// The masking and longest-first ordering follow attention_forward.cuh.
#pragma once

#include "kernels/cuda/attention_common.cuh"

namespace zt::cuda::attn {

// ---- Delta = rowsum(dO * O), computed by the dQ kernel's warps --------------------------------
// For the 16 rows a warp owns: dO from the warp's rows of the shared tile, O straight from device
// memory (read once, here). Each pair of lanes sums one row; the row's value is then handed to the
// lanes of the accumulator layout (rows g and g + 8) and written out for the dK/dV kernel, which
// runs after the dQ kernel. Rows past T get 0 and are not written.
template <typename Elem, int D>
__device__ __forceinline__ void warp_delta(const Elem* s_do_rows, const Elem* out, int64_t out_row_stride, float* delta,
                                           int row0, int T, int lane, float (&dlt)[2]) {
  constexpr int kStride = D + kPad;
  const int r = lane >> 1, half = lane & 1;
  const int row = row0 + r;
  float sum = 0.f;
  if (row < T) {
#pragma unroll
    for (int c = 0; c < D / 16; ++c) {
      const int col = half * (D / 2) + c * 8;
      const uint4 a = *reinterpret_cast<const uint4*>(s_do_rows + r * kStride + col);
      const uint4 b = *reinterpret_cast<const uint4*>(out + static_cast<int64_t>(row) * out_row_stride + col);
      const uint32_t aw[4] = {a.x, a.y, a.z, a.w}, bw[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        float2 fa, fb;
        if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
          fa = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&aw[i]));
          fb = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&bw[i]));
        } else {
          fa = __half22float2(*reinterpret_cast<const __half2*>(&aw[i]));
          fb = __half22float2(*reinterpret_cast<const __half2*>(&bw[i]));
        }
        sum = fmaf(fa.x, fb.x, fmaf(fa.y, fb.y, sum));
      }
    }
  }
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  if (half == 0 && row < T) delta[row] = sum;
  const int g = lane >> 2;
  dlt[0] = __shfl_sync(0xffffffffu, sum, 2 * g);
  dlt[1] = __shfl_sync(0xffffffffu, sum, 2 * (g + 8));
}

// ---- dK and dV, one block per key tile --------------------------------------------------------
template <int D, int kWarps, int kBlockM>
struct DkDvConfig {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockN = 16 * kWarps;  // keys per block
  static constexpr int kStride = D + kPad;
  static constexpr int kTileKV = kBlockN * kStride;
  static constexpr int kTileQ = kBlockM * kStride;
  template <typename Elem>
  static constexpr size_t smem_bytes() {
    // k, v; two buffers each of q and dO; two buffers each of lse and Delta.
    return static_cast<size_t>(2 * kTileKV + 4 * kTileQ) * sizeof(Elem) + 4 * kBlockM * sizeof(float);
  }
};

template <typename Elem, int D, int kWarps, int kBlockM, bool kKVInRegisters>
__global__ void __launch_bounds__(32 * kWarps) attention_dkdv_kernel(BackwardParams p) {
  using Cfg = DkDvConfig<D, kWarps, kBlockM>;
  constexpr int kBlockN = Cfg::kBlockN, kStride = Cfg::kStride, kThreads = Cfg::kThreads;
  constexpr int kTilesM = kBlockM / 8;  // n8 tiles of transposed scores per warp
  constexpr int kTilesD = D / 8;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_k = reinterpret_cast<Elem*>(smem_raw);
  Elem* s_v = s_k + Cfg::kTileKV;
  Elem* s_q = s_v + Cfg::kTileKV;        // two buffers
  Elem* s_do = s_q + 2 * Cfg::kTileQ;    // two buffers
  float* s_lse = reinterpret_cast<float*>(s_do + 2 * Cfg::kTileQ);  // two buffers, lse * log2(e)
  float* s_delta = s_lse + 2 * kBlockM;                                // two buffers

  const int T = p.seq_len;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int bh = blockIdx.x;
  const int kv0 = blockIdx.y * kBlockN;  // causal: the first key tiles see the most queries, and go first
  const Elem* q = static_cast<const Elem*>(p.q) + head_start(p.lq, bh, p.heads);
  const Elem* k = static_cast<const Elem*>(p.k) + head_start(p.lk, bh, p.heads);
  const Elem* v = static_cast<const Elem*>(p.v) + head_start(p.lv, bh, p.heads);
  const Elem* dout = static_cast<const Elem*>(p.grad_out) + head_start(p.ldout, bh, p.heads);
  const float* lse = p.lse + static_cast<int64_t>(bh) * T;
  const float* delta = p.delta + static_cast<int64_t>(bh) * T;

  const int m_begin = p.causal ? kv0 / kBlockM : 0;  // earlier query tiles see none of these keys
  const int m_end = (T + kBlockM - 1) / kBlockM;

  // Query tile m into buffer buf: q and dO asynchronously; lse and Delta with plain loads (they
  // are read only after the barrier that also publishes the cp.async data). Queries past T get
  // lse = +inf, so their p is exactly 0 and they add nothing.
  auto load_query_tile = [&](int m, int buf) {
    load_tile_async<kBlockM, D, kThreads>(s_q + buf * Cfg::kTileQ, q, p.lq.row, m * kBlockM, T, tid);
    load_tile_async<kBlockM, D, kThreads>(s_do + buf * Cfg::kTileQ, dout, p.ldout.row, m * kBlockM, T, tid);
    for (int i = tid; i < kBlockM; i += kThreads) {
      const int row = m * kBlockM + i;
      s_lse[buf * kBlockM + i] = row < T ? lse[row] * kLog2e : INFINITY;
      s_delta[buf * kBlockM + i] = row < T ? delta[row] : 0.f;
    }
  };

  load_tile_async<kBlockN, D, kThreads>(s_k, k, p.lk.row, kv0, T, tid);
  load_tile_async<kBlockN, D, kThreads>(s_v, v, p.lv.row, kv0, T, tid);
  cp_async_commit();
  load_query_tile(m_begin, 0);
  cp_async_commit();
  cp_async_wait<1>();  // k and v
  __syncthreads();

  const int a_off = a_or_trans_offset<kStride>(lane);
  const int b_off = b_offset<kStride>(lane);
  AOperand<D, kKVInRegisters> k_frag, v_frag;
  k_frag.init(smem_u32(s_k + 16 * warp * kStride + a_off));
  v_frag.init(smem_u32(s_v + 16 * warp * kStride + a_off));

  const int warp_key0 = kv0 + 16 * warp;
  const int key_lo = warp_key0 + g, key_hi = key_lo + 8;
  const float scale_log2 = p.scale * kLog2e;

  float dk[kTilesD][4], dv[kTilesD][4];
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[n][e] = dv[n][e] = 0.f;
  }

  for (int m = m_begin; m < m_end; ++m) {
    const int buf = (m - m_begin) & 1;
    if (m + 1 < m_end) {
      load_query_tile(m + 1, buf ^ 1);  // last read in the previous iteration, which ended in a barrier
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    const Elem* sq = s_q + buf * Cfg::kTileQ;
    const Elem* sdo = s_do + buf * Cfg::kTileQ;
    const float* slse = s_lse + buf * kBlockM;
    const float* sdelta = s_delta + buf * kBlockM;
    const int q0 = m * kBlockM;

    // st = k q^T and dpt = v dO^T: [16 keys of this warp] x [kBlockM queries].
    float st[kTilesM][4], dpt[kTilesM][4];
#pragma unroll
    for (int n = 0; n < kTilesM; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) st[n][e] = dpt[n][e] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t(&ka)[4] = k_frag.get(kk);
      const uint32_t(&va)[4] = v_frag.get(kk);
#pragma unroll
      for (int np = 0; np < kBlockM / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, smem_u32(sq + np * 16 * kStride + kk * 16 + b_off));
        mma_16816<Elem>(st[2 * np], ka, b[0], b[1]);
        mma_16816<Elem>(st[2 * np + 1], ka, b[2], b[3]);
        ldmatrix_x4(b, smem_u32(sdo + np * 16 * kStride + kk * 16 + b_off));
        mma_16816<Elem>(dpt[2 * np], va, b[0], b[1]);
        mma_16816<Elem>(dpt[2 * np + 1], va, b[2], b[3]);
      }
    }

    // p^T = exp(s - lse) (0 where the key comes after the query) and dS^T = p^T (dP^T - Delta).
    const bool need_mask = p.causal && q0 < warp_key0 + 15;
#pragma unroll
    for (int n = 0; n < kTilesM; ++n) {
      const int col = n * 8 + 2 * t4;  // query index within the tile of elements 0 and 2
      const float2 l2 = *reinterpret_cast<const float2*>(slse + col);
      const float2 dl = *reinterpret_cast<const float2*>(sdelta + col);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float lse2 = (e & 1) ? l2.y : l2.x;
        const float de = (e & 1) ? dl.y : dl.x;
        float pe = fast_exp2(fmaf(st[n][e], scale_log2, -lse2));
        if (need_mask && (e < 2 ? key_lo : key_hi) > q0 + col + (e & 1)) pe = 0.f;
        st[n][e] = pe;
        dpt[n][e] = pe * (dpt[n][e] - de);
      }
    }

    // dV += p^T dO and dK += dS^T q (scaled at the end), both operands' A side straight from registers.
#pragma unroll
    for (int kc = 0; kc < kBlockM / 16; ++kc) {
      uint32_t pa[4], dsa[4];
      pack_a_from_acc<Elem>(pa, st[2 * kc], st[2 * kc + 1]);
      pack_a_from_acc<Elem>(dsa, dpt[2 * kc], dpt[2 * kc + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_u32(sdo + kc * 16 * kStride + dp * 16 + a_off));
        mma_16816<Elem>(dv[2 * dp], pa, b[0], b[1]);
        mma_16816<Elem>(dv[2 * dp + 1], pa, b[2], b[3]);
        ldmatrix_x4_trans(b, smem_u32(sq + kc * 16 * kStride + dp * 16 + a_off));
        mma_16816<Elem>(dk[2 * dp], dsa, b[0], b[1]);
        mma_16816<Elem>(dk[2 * dp + 1], dsa, b[2], b[3]);
      }
    }
    __syncthreads();  // the next prefetch overwrites the buffers read above
  }

  // Each warp stages its results through its own 16 rows of the k and v tiles.
  store_warp_tile<Elem, D>(dk, p.scale, p.scale, s_k + 16 * warp * kStride,
                           static_cast<Elem*>(p.dk) + head_start(p.ldk, bh, p.heads), p.ldk.row, warp_key0, T, lane);
  store_warp_tile<Elem, D>(dv, 1.f, 1.f, s_v + 16 * warp * kStride,
                           static_cast<Elem*>(p.dv) + head_start(p.ldv, bh, p.heads), p.ldv.row, warp_key0, T, lane);
}

// ---- dQ (and Delta), one block per query tile -------------------------------------------------------------
template <int D, int kWarps, int kBlockN>
struct DqConfig {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kWarps;  // queries per block
  static constexpr int kStride = D + kPad;
  static constexpr int kTileQ = kBlockM * kStride;
  static constexpr int kTileKV = kBlockN * kStride;
  template <typename Elem>
  static constexpr size_t smem_bytes() {
    return static_cast<size_t>(2 * kTileQ + 4 * kTileKV) * sizeof(Elem);  // q, dO; two buffers of k and v
  }
};

template <typename Elem, int D, int kWarps, int kBlockN>
__global__ void __launch_bounds__(32 * kWarps) attention_dq_kernel(BackwardParams p) {
  using Cfg = DqConfig<D, kWarps, kBlockN>;
  constexpr int kBlockM = Cfg::kBlockM, kStride = Cfg::kStride, kThreads = Cfg::kThreads;
  constexpr int kTilesN = kBlockN / 8;
  constexpr int kTilesD = D / 8;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_q = reinterpret_cast<Elem*>(smem_raw);
  Elem* s_do = s_q + Cfg::kTileQ;
  Elem* s_k = s_do + Cfg::kTileQ;       // two buffers
  Elem* s_v = s_k + 2 * Cfg::kTileKV;  // two buffers

  const int T = p.seq_len;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int bh = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;
  const Elem* q = static_cast<const Elem*>(p.q) + head_start(p.lq, bh, p.heads);
  const Elem* k = static_cast<const Elem*>(p.k) + head_start(p.lk, bh, p.heads);
  const Elem* v = static_cast<const Elem*>(p.v) + head_start(p.lv, bh, p.heads);
  const Elem* dout = static_cast<const Elem*>(p.grad_out) + head_start(p.ldout, bh, p.heads);

  const int kv_end = p.causal ? min(T, q0 + kBlockM) : T;
  const int num_tiles = (kv_end + kBlockN - 1) / kBlockN;

  load_tile_async<kBlockM, D, kThreads>(s_q, q, p.lq.row, q0, T, tid);
  load_tile_async<kBlockM, D, kThreads>(s_do, dout, p.ldout.row, q0, T, tid);
  cp_async_commit();
  load_tile_async<kBlockN, D, kThreads>(s_k, k, p.lk.row, 0, T, tid);
  load_tile_async<kBlockN, D, kThreads>(s_v, v, p.lv.row, 0, T, tid);
  cp_async_commit();

  const int warp_row0 = q0 + 16 * warp;
  const int row_lo = warp_row0 + g, row_hi = row_lo + 8;
  const float scale_log2 = p.scale * kLog2e;
  const float* lse = p.lse + static_cast<int64_t>(bh) * T;
  // Queries past T: p = 0 (lse = +inf), and their dQ rows are not stored.
  const float lse2[2] = {row_lo < T ? lse[row_lo] * kLog2e : INFINITY, row_hi < T ? lse[row_hi] * kLog2e : INFINITY};

  cp_async_wait<1>();  // q and dO
  __syncthreads();
  float dlt[2];
  warp_delta<Elem, D>(s_do + 16 * warp * kStride, static_cast<const Elem*>(p.out) + head_start(p.lout, bh, p.heads),
                      p.lout.row, p.delta + static_cast<int64_t>(bh) * T, warp_row0, T, lane, dlt);
  const int a_off = a_or_trans_offset<kStride>(lane);
  const int b_off = b_offset<kStride>(lane);
  AOperand<D, true> q_frag, do_frag;
  q_frag.init(smem_u32(s_q + 16 * warp * kStride + a_off));
  do_frag.init(smem_u32(s_do + 16 * warp * kStride + a_off));

  float dq[kTilesD][4];
#pragma unroll
  for (int n = 0; n < kTilesD; ++n) dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < num_tiles) {
      load_tile_async<kBlockN, D, kThreads>(s_k + (buf ^ 1) * Cfg::kTileKV, k, p.lk.row, (tile + 1) * kBlockN, T, tid);
      load_tile_async<kBlockN, D, kThreads>(s_v + (buf ^ 1) * Cfg::kTileKV, v, p.lv.row, (tile + 1) * kBlockN, T, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    const Elem* sk = s_k + buf * Cfg::kTileKV;
    const Elem* sv = s_v + buf * Cfg::kTileKV;
    const int kv0 = tile * kBlockN;

    // s = q k^T and dp = dO v^T: [16 queries of this warp] x [kBlockN keys].
    float s[kTilesN][4], dp[kTilesN][4];
#pragma unroll
    for (int n = 0; n < kTilesN; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[n][e] = dp[n][e] = 0.f;
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t(&qa)[4] = q_frag.get(kk);
      const uint32_t(&da)[4] = do_frag.get(kk);
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, smem_u32(sk + np * 16 * kStride + kk * 16 + b_off));
        mma_16816<Elem>(s[2 * np], qa, b[0], b[1]);
        mma_16816<Elem>(s[2 * np + 1], qa, b[2], b[3]);
        ldmatrix_x4(b, smem_u32(sv + np * 16 * kStride + kk * 16 + b_off));
        mma_16816<Elem>(dp[2 * np], da, b[0], b[1]);
        mma_16816<Elem>(dp[2 * np + 1], da, b[2], b[3]);
      }
    }

    // dS = p (dP - Delta), p = exp(s - lse), 0 for keys past T or (causal) after the query.
    const bool need_mask = (kv0 + kBlockN > T) || (p.causal && kv0 + kBlockN - 1 > warp_row0);
#pragma unroll
    for (int n = 0; n < kTilesN; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        float pe = fast_exp2(fmaf(s[n][e], scale_log2, -lse2[r]));
        if (need_mask) {
          const int col = kv0 + n * 8 + 2 * t4 + (e & 1);
          if (col >= T || (p.causal && col > (r ? row_hi : row_lo))) pe = 0.f;
        }
        dp[n][e] = pe * (dp[n][e] - dlt[r]);
      }
    }

    // dq += dS k.
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t a[4];
      pack_a_from_acc<Elem>(a, dp[2 * kc], dp[2 * kc + 1]);
#pragma unroll
      for (int dd = 0; dd < D / 16; ++dd) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_u32(sk + kc * 16 * kStride + dd * 16 + a_off));
        mma_16816<Elem>(dq[2 * dd], a, b[0], b[1]);
        mma_16816<Elem>(dq[2 * dd + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();
  }

  store_warp_tile<Elem, D>(dq, p.scale, p.scale, s_q + 16 * warp * kStride,
                           static_cast<Elem*>(p.dq) + head_start(p.ldq, bh, p.heads), p.ldq.row, warp_row0, T, lane);
}

// ---- launchers -----------------------------------------------------------------------------------
template <typename Kernel>
inline cudaError_t launch_with_smem(Kernel kernel, dim3 grid, int threads, size_t smem, cudaStream_t stream,
                                    const BackwardParams& p) {
  // Above 48 KiB a kernel must opt in; the attribute belongs to the current device, so set it each time.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  kernel<<<grid, threads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename Elem, int D, int kWarps, int kBlockM, bool kKVInRegisters>
inline cudaError_t launch_attention_dkdv(const BackwardParams& p, cudaStream_t stream) {
  using Cfg = DkDvConfig<D, kWarps, kBlockM>;
  return launch_with_smem(attention_dkdv_kernel<Elem, D, kWarps, kBlockM, kKVInRegisters>,
                          dim3(p.batch_heads, (p.seq_len + Cfg::kBlockN - 1) / Cfg::kBlockN), Cfg::kThreads,
                          Cfg::template smem_bytes<Elem>(), stream, p);
}

template <typename Elem, int D, int kWarps, int kBlockN>
inline cudaError_t launch_attention_dq(const BackwardParams& p, cudaStream_t stream) {
  using Cfg = DqConfig<D, kWarps, kBlockN>;
  return launch_with_smem(attention_dq_kernel<Elem, D, kWarps, kBlockN>,
                          dim3(p.batch_heads, (p.seq_len + Cfg::kBlockM - 1) / Cfg::kBlockM), Cfg::kThreads,
                          Cfg::template smem_bytes<Elem>(), stream, p);
}

// Tile shapes per head dim, picked by timing the candidates on an H200 (GPT-2 shapes, causal, bf16;
// see the notes in attention.cu). D = 64 keeps the per-warp A operands in registers; D = 128 re-reads
// the k and v fragments from shared memory in dK/dV to stay within 255 registers.
template <typename Elem, int D>
inline cudaError_t launch_attention_backward_t(const BackwardParams& p, cudaStream_t stream) {
  // dQ first: it also writes Delta, which the dK/dV kernel reads (same stream, so ordered).
  if constexpr (D == 64) {
    cudaError_t err = launch_attention_dq<Elem, D, /*warps*/ 8, /*key tile*/ 32>(p, stream);
    if (err != cudaSuccess) return err;
    return launch_attention_dkdv<Elem, D, /*warps*/ 4, /*query tile*/ 32, /*k, v in registers*/ true>(p, stream);
  } else {
    cudaError_t err = launch_attention_dq<Elem, D, 4, 32>(p, stream);
    if (err != cudaSuccess) return err;
    return launch_attention_dkdv<Elem, D, 4, 64, false>(p, stream);
  }
}

inline cudaError_t launch_attention_backward(const BackwardParams& p, ElemType type, int head_dim,
                                             cudaStream_t stream) {
  if (type == ElemType::bf16) {
    return head_dim == 64 ? launch_attention_backward_t<__nv_bfloat16, 64>(p, stream)
                          : launch_attention_backward_t<__nv_bfloat16, 128>(p, stream);
  }
  return head_dim == 64 ? launch_attention_backward_t<__half, 64>(p, stream)
                        : launch_attention_backward_t<__half, 128>(p, stream);
}

}  // namespace zt::cuda::attn
