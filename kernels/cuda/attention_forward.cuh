// Attention forward, FlashAttention-2 style: out = softmax(scale * q k^T + mask) v and the
// log-sum-exp of every score row, without ever writing the T x T score matrix anywhere.
//
// Why this shape: one block owns kBlockM query rows of one (batch, head) and walks over the keys in
// tiles of kBlockN. Each of its warps owns 16 query rows, keeps their q fragments, the running row
// max m, the running sum l and the output accumulator in registers, and rescales the accumulator
// when the max grows (online softmax). K and V tiles are double-buffered in shared memory with
// cp.async, so the next tile streams in while the tensor cores work on the current one. Scores are
// kept in the log2 domain (exp2 is one special-function instruction): p = 2^(s * scale * log2 e - m).
//
// Causal masking: key tiles entirely above the diagonal are never loaded; only tiles that cross the
// diagonal or the end of the sequence pay for per-element masking. Query-tile blocks are launched
// longest-first (the last query tiles see the most keys) so the tail of the grid is short.
#pragma once

#include "kernels/cuda/attention_common.cuh"

namespace zt::cuda::attn {

template <int D, int kWarps, int kBlockN_, int kMTiles_>
struct ForwardConfig {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kMTiles = kMTiles_;              // 16-row tiles of queries per warp
  static constexpr int kBlockM = 16 * kMTiles * kWarps;  // query rows per block
  static constexpr int kBlockN = kBlockN_;               // keys per tile
  static constexpr int kStride = D + kPad;
  static constexpr int kTileQ = kBlockM * kStride;
  static constexpr int kTileKV = kBlockN * kStride;
  template <typename Elem>
  static constexpr size_t smem_bytes() {
    return static_cast<size_t>(kTileQ + 4 * kTileKV) * sizeof(Elem);  // q, two k and two v buffers
  }
};

// kMTiles = 2 (a warp owns 32 query rows) halves the shared-memory reads per tensor-core product:
// every k and v fragment loaded with ldmatrix feeds two products instead of one. With 16 rows per
// warp the loop is bound by ldmatrix bandwidth (two products per 512-byte ldmatrix.x4), not by the
// tensor cores; the price is twice the accumulator and score registers, affordable for D = 64.
template <typename Elem, int D, int kWarps, int kBlockN_, int kMTiles>
__global__ void __launch_bounds__(32 * kWarps) attention_forward_kernel(ForwardParams p) {
  using Cfg = ForwardConfig<D, kWarps, kBlockN_, kMTiles>;
  constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN, kStride = Cfg::kStride;
  constexpr int kThreads = Cfg::kThreads;
  constexpr int kTilesN = kBlockN / 8;  // n8 tiles of scores per m-tile
  constexpr int kTilesD = D / 8;        // n8 tiles of output per m-tile
  constexpr int kWarpRows = 16 * kMTiles;

  extern __shared__ __align__(16) unsigned char smem_raw[];
  Elem* s_q = reinterpret_cast<Elem*>(smem_raw);
  Elem* s_k = s_q + Cfg::kTileQ;      // two buffers of kTileKV
  Elem* s_v = s_k + 2 * Cfg::kTileKV;  // two buffers of kTileKV

  const int T = p.seq_len;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t4 = lane & 3;
  const int bh = blockIdx.x;
  const int q0 = (gridDim.y - 1 - blockIdx.y) * kBlockM;  // longest (causal) tiles first
  const Elem* q = static_cast<const Elem*>(p.q) + head_start(p.lq, bh, p.heads);
  const Elem* k = static_cast<const Elem*>(p.k) + head_start(p.lk, bh, p.heads);
  const Elem* v = static_cast<const Elem*>(p.v) + head_start(p.lv, bh, p.heads);

  const int kv_end = p.causal ? min(T, q0 + kBlockM) : T;
  const int num_tiles = (kv_end + kBlockN - 1) / kBlockN;

  load_tile_async<kBlockM, D, kThreads>(s_q, q, p.lq.row, q0, T, tid);
  cp_async_commit();
  load_tile_async<kBlockN, D, kThreads>(s_k, k, p.lk.row, 0, T, tid);
  load_tile_async<kBlockN, D, kThreads>(s_v, v, p.lv.row, 0, T, tid);
  cp_async_commit();

  const int warp_row0 = q0 + kWarpRows * warp;  // first query row of this warp
  const float scale_log2 = p.scale * kLog2e;

  cp_async_wait<1>();  // the q tile (the first k/v tile may still be in flight)
  __syncthreads();
  AOperand<D, true> q_frag[kMTiles];
#pragma unroll
  for (int m = 0; m < kMTiles; ++m)
    q_frag[m].init(smem_u32(s_q + (kWarpRows * warp + 16 * m) * kStride + a_or_trans_offset<kStride>(lane)));
  float acc[kMTiles][kTilesD][4];
  float row_max[kMTiles][2];  // of raw (unscaled) scores
  float row_sum[kMTiles][2];  // this lane's partial sums; reduced over the quad at the end
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
#pragma unroll
    for (int n = 0; n < kTilesD; ++n) acc[m][n][0] = acc[m][n][1] = acc[m][n][2] = acc[m][n][3] = 0.f;
    row_max[m][0] = row_max[m][1] = -INFINITY;
    row_sum[m][0] = row_sum[m][1] = 0.f;
  }

  const int b_off = b_offset<kStride>(lane);
  const int t_off = a_or_trans_offset<kStride>(lane);

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < num_tiles) {
      // The buffer written here was last read in the previous iteration, which ended in a barrier.
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

    // s = q k^T for this warp's rows and the tile's kBlockN keys; each k fragment serves every m-tile.
    float s[kMTiles][kTilesN][4];
#pragma unroll
    for (int m = 0; m < kMTiles; ++m)
#pragma unroll
      for (int n = 0; n < kTilesN; ++n) s[m][n][0] = s[m][n][1] = s[m][n][2] = s[m][n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < kBlockN / 16; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, smem_u32(sk + np * 16 * kStride + kk * 16 + b_off));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          const uint32_t(&qa)[4] = q_frag[m].get(kk);
          mma_16816<Elem>(s[m][2 * np], qa, b[0], b[1]);
          mma_16816<Elem>(s[m][2 * np + 1], qa, b[2], b[3]);
        }
      }
    }

#pragma unroll
    for (int m = 0; m < kMTiles; ++m) {
      const int tile_row0 = warp_row0 + 16 * m;
      const int row_lo = tile_row0 + g, row_hi = row_lo + 8;
      // Mask keys past the end and (causal) keys after the query. Only tiles that reach the end of
      // the sequence or cross this m-tile's part of the diagonal need it.
      const bool need_mask = (kv0 + kBlockN > T) || (p.causal && kv0 + kBlockN - 1 > tile_row0);
      if (need_mask) {
#pragma unroll
        for (int n = 0; n < kTilesN; ++n) {
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int col = kv0 + n * 8 + 2 * t4 + (e & 1);
            const int row = e < 2 ? row_lo : row_hi;
            if (col >= T || (p.causal && col > row)) s[m][n][e] = -INFINITY;
          }
        }
      }

      // Online softmax: new max, rescale what was accumulated, exponentiate this tile.
      float new_max[2] = {row_max[m][0], row_max[m][1]};
#pragma unroll
      for (int n = 0; n < kTilesN; ++n) {
        new_max[0] = fmaxf(new_max[0], fmaxf(s[m][n][0], s[m][n][1]));
        new_max[1] = fmaxf(new_max[1], fmaxf(s[m][n][2], s[m][n][3]));
      }
      float shift[2], alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        new_max[r] = quad_max(new_max[r]);
        // A row with every key masked so far keeps max -inf; shifting by 0 then gives p = 0, not NaN.
        shift[r] = new_max[r] == -INFINITY ? 0.f : new_max[r] * scale_log2;
        alpha[r] = fast_exp2(row_max[m][r] * scale_log2 - shift[r]);  // 0 on the first tile
        row_max[m][r] = new_max[r];
        row_sum[m][r] *= alpha[r];
      }
#pragma unroll
      for (int n = 0; n < kTilesN; ++n) {
        s[m][n][0] = fast_exp2(fmaf(s[m][n][0], scale_log2, -shift[0]));
        s[m][n][1] = fast_exp2(fmaf(s[m][n][1], scale_log2, -shift[0]));
        s[m][n][2] = fast_exp2(fmaf(s[m][n][2], scale_log2, -shift[1]));
        s[m][n][3] = fast_exp2(fmaf(s[m][n][3], scale_log2, -shift[1]));
        row_sum[m][0] += s[m][n][0] + s[m][n][1];
        row_sum[m][1] += s[m][n][2] + s[m][n][3];
      }
#pragma unroll
      for (int n = 0; n < kTilesD; ++n) {
        acc[m][n][0] *= alpha[0];
        acc[m][n][1] *= alpha[0];
        acc[m][n][2] *= alpha[1];
        acc[m][n][3] *= alpha[1];
      }
    }

    // acc += p v: p goes from accumulator registers straight into A fragments; each v fragment
    // serves every m-tile.
#pragma unroll
    for (int kc = 0; kc < kBlockN / 16; ++kc) {
      uint32_t a[kMTiles][4];
#pragma unroll
      for (int m = 0; m < kMTiles; ++m) pack_a_from_acc<Elem>(a[m], s[m][2 * kc], s[m][2 * kc + 1]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, smem_u32(sv + kc * 16 * kStride + dp * 16 + t_off));
#pragma unroll
        for (int m = 0; m < kMTiles; ++m) {
          mma_16816<Elem>(acc[m][2 * dp], a[m], b[0], b[1]);
          mma_16816<Elem>(acc[m][2 * dp + 1], a[m], b[2], b[3]);
        }
      }
    }
    __syncthreads();  // the next iteration's prefetch overwrites the buffers read above
  }

  // Normalise, write out (staged through this warp's rows of the q tile, no longer needed) and lse.
  Elem* out = static_cast<Elem*>(p.out) + head_start(p.lout, bh, p.heads);
  float* lse = p.lse + static_cast<int64_t>(bh) * T;
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    float inv[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      row_sum[m][r] = quad_sum(row_sum[m][r]);
      inv[r] = 1.f / row_sum[m][r];
    }
    const int tile_row0 = warp_row0 + 16 * m;
    store_warp_tile<Elem, D>(acc[m], inv[0], inv[1], s_q + (kWarpRows * warp + 16 * m) * kStride, out, p.lout.row,
                             tile_row0, T, lane);
    const int row_lo = tile_row0 + g, row_hi = row_lo + 8;
    if (t4 == 0) {
      if (row_lo < T) lse[row_lo] = row_max[m][0] * p.scale + logf(row_sum[m][0]);
      if (row_hi < T) lse[row_hi] = row_max[m][1] * p.scale + logf(row_sum[m][1]);
    }
  }
}

template <typename Elem, int D, int kWarps, int kBlockN, int kMTiles>
inline cudaError_t launch_attention_forward_t(const ForwardParams& p, cudaStream_t stream) {
  using Cfg = ForwardConfig<D, kWarps, kBlockN, kMTiles>;
  constexpr size_t smem = Cfg::template smem_bytes<Elem>();
  auto kernel = attention_forward_kernel<Elem, D, kWarps, kBlockN, kMTiles>;
  // Above 48 KiB a kernel must opt in; the attribute belongs to the current device, so set it each time.
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  const dim3 grid(p.batch_heads, (p.seq_len + Cfg::kBlockM - 1) / Cfg::kBlockM);
  kernel<<<grid, Cfg::kThreads, smem, stream>>>(p);
  return cudaGetLastError();
}

// Picks the instantiation for the element type and head dim (64 or 128; checked by the caller).
// Shapes chosen with bench/attention_tiles.cu on an H200: D = 64 takes 32 rows per warp
// (kMTiles = 2), D = 128 keeps 16 (its accumulators alone are 64 registers per m-tile).
template <typename Elem>
inline cudaError_t launch_attention_forward_for(const ForwardParams& p, int head_dim, cudaStream_t stream) {
  return head_dim == 64 ? launch_attention_forward_t<Elem, 64, 4, 64, 2>(p, stream)
                        : launch_attention_forward_t<Elem, 128, 4, 64, 1>(p, stream);
}

inline cudaError_t launch_attention_forward(const ForwardParams& p, ElemType type, int head_dim, cudaStream_t stream) {
  return type == ElemType::bf16 ? launch_attention_forward_for<__nv_bfloat16>(p, head_dim, stream)
                                : launch_attention_forward_for<__half>(p, head_dim, stream);
}

}  // namespace zt::cuda::attn
