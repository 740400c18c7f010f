// CUDA backend: reductions (kernels in reduce.cuh).
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/elementwise.cuh"
#include "kernels/cuda/reduce.cuh"

namespace zt::cuda {

__global__ void sum_partials_kernel(const double* __restrict__ partial, int count, double* __restrict__ out) {
  __shared__ double scratch[32];
  double acc = 0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) *out = acc;
}

namespace {

// How many chunks to split `r` reduced elements into, given how many blocks the outputs alone make.
int64_t chunk_count(int64_t r, int64_t blocks_for_outputs, int64_t min_chunk) {
  const int64_t wanted = (kReduceTargetBlocks + blocks_for_outputs - 1) / blocks_for_outputs;
  const int64_t most = std::max<int64_t>(1, r / min_chunk);
  return std::clamp<int64_t>(wanted, 1, std::min<int64_t>(most, 65535));
}

}  // namespace

}  // namespace zt::cuda

namespace zt {

Tensor CudaBackend::reduce(ReduceOp op, const Tensor& x, const std::vector<bool>& reduce_mask) const {
  const char* api = op == ReduceOp::sum ? "sum" : "max";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  ZT_CHECK(static_cast<int64_t>(reduce_mask.size()) == x.dim(), api, "mask has ", reduce_mask.size(),
           " entries for a ", x.dim(), "-d tensor ", x.describe());
  Shape out_shape = x.shape(), kept_shape, kept_strides, red_shape, red_strides;
  for (size_t d = 0; d < reduce_mask.size(); ++d) {
    if (reduce_mask[d]) {
      out_shape[d] = 1;
      red_shape.push_back(x.shape()[d]);
      red_strides.push_back(x.strides()[d]);
    } else {
      kept_shape.push_back(x.shape()[d]);
      kept_strides.push_back(x.strides()[d]);
    }
  }
  Tensor out = empty(out_shape, x.dtype(), x.device());
  const int64_t outputs = out.numel(), r = shape_numel(red_shape);
  if (outputs == 0) return out;
  if (r == 0) {
    ZT_CHECK(op == ReduceOp::sum, api, "cannot take the maximum over an empty dim of ", x.describe());
    fill(out, 0.0);
    return out;
  }
  const auto kept_layout = cuda::coalesce<1>(kept_shape, {&kept_strides});
  const auto red_layout = cuda::coalesce<1>(red_shape, {&red_strides});
  const auto kept = cuda::make_indexer<1, int64_t>(kept_layout);
  const cuda::ReducedIndex reduced{cuda::make_indexer<1, int64_t>(red_layout)};
  const bool rows = red_layout.ndim == 0 || (red_layout.ndim == 1 && red_layout.strides[0][0] == 1);
  const int64_t chunks = rows ? cuda::chunk_count(r, outputs, 4096)
                              : cuda::chunk_count(r, (outputs + cuda::kThreads - 1) / cuda::kThreads, 64);
  cuda::DeviceGuard guard(device);
  cudaStream_t stream = cuda::current_stream(device);
  cuda::dispatch_numeric(x.dtype(), api, [&]<typename T>() {
    using A = cuda::acc_t<T>;
    Tensor partial;
    if (chunks > 1)
      partial = empty({chunks * outputs * static_cast<int64_t>(sizeof(A))}, DType::u8, x.device(), MemoryCategory::other);
    A* pp = chunks > 1 ? static_cast<A*>(partial.raw_data()) : nullptr;
    const T* px = static_cast<const T*>(x.raw_data());
    T* po = static_cast<T*>(out.raw_data());
    if (rows) {
      cuda::launch_reduce_rows<T>(op, px, kept, outputs, r, chunks, pp, po, stream);
    } else {
      cuda::launch_reduce_columns<T>(op, px, kept, reduced, outputs, r, chunks, pp, po, stream);
    }
  });
  return out;
}

std::pair<Tensor, Tensor> CudaBackend::max_last_dim(const Tensor& x) const {
  const char* api = "max";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  ZT_CHECK(x.dim() >= 1 && x.size(-1) > 0, api, "needs a non-empty last dim, got ", x.describe());
  const int64_t c = x.size(-1), rows = x.numel() / c;
  Shape out_shape(x.shape().begin(), x.shape().end() - 1);
  Tensor values = empty(out_shape, x.dtype(), x.device());
  Tensor indices = empty(out_shape, DType::i64, x.device());
  cuda::DeviceGuard guard(device);
  cuda::dispatch_numeric(x.dtype(), api, [&]<typename T>() {
    cuda::launch_max_last_dim<T>(static_cast<const T*>(x.raw_data()), rows, c, static_cast<T*>(values.raw_data()),
                                 static_cast<int64_t*>(indices.raw_data()), cuda::current_stream(device));
  });
  return {values, indices};
}

double CudaBackend::sum_squares(const Tensor& x) const {
  const char* api = "sum_squares";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  if (x.numel() == 0) return 0.0;
  Tensor scratch = empty({cuda::kSumSquaresBlocks + 1}, DType::f64, x.device(), MemoryCategory::other);
  double* partial = static_cast<double*>(scratch.raw_data());
  cuda::DeviceGuard guard(device);
  dispatch_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_sum_squares<T>(static_cast<const T*>(x.raw_data()), x.numel(), partial,
                                partial + cuda::kSumSquaresBlocks, cuda::current_stream(device));
  });
  double result = 0;
  cuda::copy_bytes(&result, -1, partial + cuda::kSumSquaresBlocks, device, sizeof(double));
  return result;
}

void CudaBackend::sum_squares_into(const Tensor& x, Tensor& acc) const {
  const char* api = "sum_squares_into";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  ZT_CHECK(acc.dtype() == DType::f64 && acc.numel() == 1 && acc.device() == x.device() && acc.is_contiguous(), api,
           "acc must be one f64 on ", x.device().str(), ", got ", acc.describe());
  if (x.numel() == 0) return;
  Tensor scratch = empty({cuda::kSumSquaresBlocks + 1}, DType::f64, x.device(), MemoryCategory::other);
  double* partial = static_cast<double*>(scratch.raw_data());
  cuda::DeviceGuard guard(device);
  const cudaStream_t stream = cuda::current_stream(device);
  dispatch_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_sum_squares<T>(static_cast<const T*>(x.raw_data()), x.numel(), partial,
                                partial + cuda::kSumSquaresBlocks, stream);
  });
  cuda::launch_axpby<double, double>(static_cast<double*>(acc.raw_data()), partial + cuda::kSumSquaresBlocks, 1.0, 1.0,
                                     1, stream);
}

bool CudaBackend::all_finite(const Tensor& x) const {
  const char* api = "all_finite";
  const int device = cuda::cuda_device_of(api, x);
  cuda::check_contiguous(api, x, "x");
  if (x.numel() == 0 || !is_floating(x.dtype())) return true;
  Tensor flag = empty({1}, DType::i32, x.device(), MemoryCategory::other);
  fill(flag, 1.0);
  cuda::DeviceGuard guard(device);
  dispatch_float(x.dtype(), api, [&]<typename T>() {
    cuda::launch_all_finite<T>(static_cast<const T*>(x.raw_data()), x.numel(), static_cast<int*>(flag.raw_data()),
                               cuda::current_stream(device));
  });
  int finite = 0;
  cuda::copy_bytes(&finite, -1, flag.raw_data(), device, sizeof(int));
  return finite != 0;
}

}  // namespace zt
