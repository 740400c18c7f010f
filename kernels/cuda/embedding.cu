// CUDA backend: embedding lookup and its deterministic backward (see embedding.cuh for why).
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/embedding.cuh"

namespace zt::cuda {

__global__ void embedding_run_bounds_kernel(const uint32_t* __restrict__ sorted_keys, int64_t n, int64_t vocab,
                                            uint32_t* __restrict__ run_begin, uint32_t* __restrict__ run_end) {
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t key = sorted_keys[p];
    if (key >= vocab) continue;  // ids out of range sort last and are skipped
    if (p == 0 || sorted_keys[p - 1] != key) run_begin[key] = static_cast<uint32_t>(p);
    if (p == n - 1 || sorted_keys[p + 1] != key) run_end[key] = static_cast<uint32_t>(p + 1);
  }
}

namespace {

// The scratch layout: keys and positions (in and sorted), run bounds, then CUB's temporary storage.
struct BackwardScratch {
  uint32_t *keys, *sorted_keys, *positions, *sorted_positions, *run_begin, *run_end;
  void* cub_temp;
  size_t cub_bytes;
};

size_t align16(size_t bytes) { return (bytes + 15) / 16 * 16; }

int key_bits(int64_t vocab) {  // bits for keys 0..vocab (vocab is the out-of-range key)
  int bits = 1;
  while (bits < 32 && (int64_t{1} << bits) <= vocab) ++bits;
  return bits;
}

size_t cub_temp_bytes(int64_t n, int64_t vocab) {
  size_t bytes = 0;
  ZT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, bytes, static_cast<const uint32_t*>(nullptr),
                                                static_cast<uint32_t*>(nullptr), static_cast<const uint32_t*>(nullptr),
                                                static_cast<uint32_t*>(nullptr), static_cast<int>(n), 0,
                                                key_bits(vocab)));
  return bytes;
}

BackwardScratch carve(void* base, int64_t n, int64_t vocab) {
  char* p = static_cast<char*>(base);
  BackwardScratch s;
  const size_t per_n = align16(static_cast<size_t>(n) * 4), per_v = align16(static_cast<size_t>(vocab) * 4);
  s.keys = reinterpret_cast<uint32_t*>(p);
  s.sorted_keys = reinterpret_cast<uint32_t*>(p + per_n);
  s.positions = reinterpret_cast<uint32_t*>(p + 2 * per_n);
  s.sorted_positions = reinterpret_cast<uint32_t*>(p + 3 * per_n);
  s.run_begin = reinterpret_cast<uint32_t*>(p + 4 * per_n);
  s.run_end = reinterpret_cast<uint32_t*>(p + 4 * per_n + per_v);
  s.cub_temp = p + 4 * per_n + 2 * per_v;
  s.cub_bytes = cub_temp_bytes(n, vocab);
  return s;
}

}  // namespace

size_t embedding_backward_scratch_bytes(int64_t n, int64_t vocab) {
  return 4 * align16(static_cast<size_t>(n) * 4) + 2 * align16(static_cast<size_t>(vocab) * 4) +
         align16(cub_temp_bytes(n, vocab));
}

template <typename T, typename I>
void launch_embedding_backward(const T* grad_out, const I* ids, T* dweight, int64_t n, int64_t vocab, int64_t c,
                               void* scratch, DeviceErrorSink errors, cudaStream_t stream) {
  if (vocab == 0 || c == 0) return;
  BackwardScratch s = carve(scratch, n, vocab);
  ZT_CUDA_CHECK(cudaMemsetAsync(s.run_begin, 0, static_cast<size_t>(vocab) * 4, stream));
  ZT_CUDA_CHECK(cudaMemsetAsync(s.run_end, 0, static_cast<size_t>(vocab) * 4, stream));
  if (n > 0) {
    embedding_sort_keys_kernel<I><<<grid_for(n), kThreads, 0, stream>>>(ids, n, vocab, s.keys, s.positions, errors);
    ZT_CUDA_CHECK_LAUNCH();
    ZT_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(s.cub_temp, s.cub_bytes, s.keys, s.sorted_keys, s.positions,
                                                  s.sorted_positions, static_cast<int>(n), 0, key_bits(vocab), stream));
    embedding_run_bounds_kernel<<<grid_for(n), kThreads, 0, stream>>>(s.sorted_keys, n, vocab, s.run_begin, s.run_end);
    ZT_CUDA_CHECK_LAUNCH();
  }
  if (pack_aligned(c, sizeof(T), {grad_out, dweight})) {
    const RowLaunch l = row_launch(c / Pack16<T>::kSize);
    embedding_backward_rows_kernel<T, true><<<dim3(static_cast<unsigned>(vocab), l.blocks_per_row), l.threads, 0, stream>>>(
        grad_out, s.sorted_positions, s.run_begin, s.run_end, dweight, c);
  } else {
    const RowLaunch l = row_launch(c);
    embedding_backward_rows_kernel<T, false><<<dim3(static_cast<unsigned>(vocab), l.blocks_per_row), l.threads, 0, stream>>>(
        grad_out, s.sorted_positions, s.run_begin, s.run_end, dweight, c);
  }
  ZT_CUDA_CHECK_LAUNCH();
}

}  // namespace zt::cuda

namespace zt {

namespace {

template <typename F>
decltype(auto) dispatch_ids(const char* api, const Tensor& ids, F&& f) {
  if (ids.dtype() == DType::i32) return f.template operator()<int32_t>();
  if (ids.dtype() == DType::i64) return f.template operator()<int64_t>();
  throw_dtype_error(api, ids.dtype(), "i32 or i64 ids");
}

}  // namespace

Tensor CudaBackend::embedding(const Tensor& weight, const Tensor& ids) const {
  const char* api = "embedding";
  const int device = cuda::cuda_device_of(api, weight);
  cuda::check_same_device(api, weight, ids);
  ZT_CHECK(weight.dim() == 2, api, "weight must be [vocab, C], got ", weight.describe());
  cuda::check_contiguous(api, weight, "weight");
  cuda::check_contiguous(api, ids, "ids");
  const int64_t vocab = weight.size(0), c = weight.size(1), n = ids.numel();
  ZT_CHECK(n < (int64_t{1} << 31), api, "too many ids: ", ids.describe());
  Tensor out = empty({n, c}, weight.dtype(), weight.device());
  cuda::DeviceGuard guard(device);
  cuda::DeviceContext& ctx = cuda::DeviceContext::get(device);
  dispatch_float(weight.dtype(), api, [&]<typename T>() {
    dispatch_ids(api, ids, [&]<typename I>() {
      cuda::launch_embedding_forward<T, I>(static_cast<const T*>(weight.raw_data()), static_cast<const I*>(ids.raw_data()),
                                           static_cast<T*>(out.raw_data()), n, vocab, c, ctx.error_sink(),
                                           ctx.current_stream());
    });
  });
  return out;
}

Tensor CudaBackend::embedding_backward(const Tensor& grad_out, const Tensor& ids, int64_t vocab) const {
  const char* api = "embedding_backward";
  const int device = cuda::cuda_device_of(api, grad_out);
  cuda::check_same_device(api, grad_out, ids);
  cuda::check_contiguous(api, grad_out, "grad_out");
  cuda::check_contiguous(api, ids, "ids");
  const int64_t n = ids.numel();
  ZT_CHECK(grad_out.dim() >= 1, api, "grad_out must be [ids, C], got ", grad_out.describe());
  const int64_t c = grad_out.size(-1);
  ZT_CHECK(n * c == grad_out.numel(), api, "grad_out ", grad_out.describe(), " must be [", n, ", C] for ", n, " ids");
  ZT_CHECK(vocab >= 0 && vocab < (int64_t{1} << 31) && n < (int64_t{1} << 31), api, "vocab ", vocab, " and ", n,
           " ids must be below 2^31");
  Tensor dweight = empty({vocab, c}, grad_out.dtype(), grad_out.device());
  Tensor scratch = empty({static_cast<int64_t>(cuda::embedding_backward_scratch_bytes(n, vocab))}, DType::u8,
                         grad_out.device(), MemoryCategory::other);
  cuda::DeviceGuard guard(device);
  cuda::DeviceContext& ctx = cuda::DeviceContext::get(device);
  dispatch_float(grad_out.dtype(), api, [&]<typename T>() {
    dispatch_ids(api, ids, [&]<typename I>() {
      cuda::launch_embedding_backward<T, I>(static_cast<const T*>(grad_out.raw_data()),
                                            static_cast<const I*>(ids.raw_data()), static_cast<T*>(dweight.raw_data()),
                                            n, vocab, c, scratch.raw_data(), ctx.error_sink(), ctx.current_stream());
    });
  });
  return dweight;
}

}  // namespace zt
