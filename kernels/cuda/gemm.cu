// Matrix products through cuBLASLt: see gemm.h for the layout and why.
#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/gemm_candidates.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/gemm_state.h"

namespace zt::cuda {

GemmState::GemmState(int dev) : device(dev) {
  DeviceGuard guard(dev);
  ZT_CUBLAS_CHECK(cublasLtCreate(&handle));
  // Note [GEMM autotuning]: opt-in, like the non-deterministic attention backward.
  const char* env = std::getenv("ZT_GEMM_AUTOTUNE");
  ZT_CHECK(env == nullptr || env[0] == '\0' || std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0, "gemm",
           "ZT_GEMM_AUTOTUNE='", env, "' is not one of 0 (default: cuBLASLt's first heuristic choice) or 1 (time "
           "the candidates once per problem)");
  autotune = env != nullptr && std::strcmp(env, "1") == 0;
  // ZT_GEMM_TUNING_LOG=1: each timed problem's candidates and the choice on stderr, to compare the
  // tuning's timings with a benchmark's steady state (docs/performance.md).
  const char* log = std::getenv("ZT_GEMM_TUNING_LOG");
  log_tuning = log != nullptr && std::strcmp(log, "1") == 0;
}

GemmState::~GemmState() {
  for (auto& [stream, ws] : workspaces) (void)cudaFree(ws);
  if (handle != nullptr) (void)cublasLtDestroy(handle);
}

// The workspaces come straight from cudaMalloc and are kept for the process: 32 MiB per stream
// that ever ran a GEMM, outside the caching allocator's statistics.
void* GemmState::workspace(cudaStream_t stream) {
  auto it = workspaces.find(stream);
  if (it != workspaces.end()) return it->second;
  void* p = nullptr;
  ZT_CUDA_CHECK(cudaMalloc(&p, kWorkspaceBytes));
  workspaces.emplace(stream, p);
  return p;
}

namespace {

// RAII owners of the cuBLASLt descriptors of one call.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  MatmulDesc(cublasComputeType_t compute, cudaDataType_t scale) {
    ZT_CUBLAS_CHECK(cublasLtMatmulDescCreate(&desc, compute, scale));
  }
  ~MatmulDesc() { (void)cublasLtMatmulDescDestroy(desc); }
  template <typename V>
  void set(cublasLtMatmulDescAttributes_t attr, const V& value) {
    ZT_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(desc, attr, &value, sizeof(V)));
  }
};

struct MatrixLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  // A column-major rows x cols matrix with leading dimension ld, batch items `stride` apart.
  MatrixLayout(cudaDataType_t type, int64_t rows, int64_t cols, int64_t ld, int64_t batch, int64_t stride) {
    ZT_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&layout, type, static_cast<uint64_t>(rows), static_cast<uint64_t>(cols), ld));
    if (batch > 1) {
      const int32_t count = static_cast<int32_t>(batch);
      ZT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
      ZT_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride,
                                                       sizeof(stride)));
    }
  }
  ~MatrixLayout() { (void)cublasLtMatrixLayoutDestroy(layout); }
};

struct Preference {
  cublasLtMatmulPreference_t pref = nullptr;
  Preference() { ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  ~Preference() { (void)cublasLtMatmulPreferenceDestroy(pref); }
  template <typename V>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const V& value) {
    ZT_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &value, sizeof(V)));
  }
};

cudaDataType_t cuda_type(DType t) {
  switch (t) {
    case DType::f32: return CUDA_R_32F;
    case DType::f64: return CUDA_R_64F;
    case DType::bf16: return CUDA_R_16BF;
    case DType::f16: return CUDA_R_16F;
    default: break;
  }
  throw_dtype_error("gemm", t, "f32, f64, bf16 or f16");
}

// The largest power of two (up to 256) dividing the address: cuBLASLt's kernels need aligned operands.
int32_t alignment_of(const void* p) {
  const auto a = reinterpret_cast<uintptr_t>(p);
  if (a == 0) return 256;
  return static_cast<int32_t>(std::min<uintptr_t>(a & (~a + 1), 256));
}

const char* epilogue_name(GemmEpilogue e) {
  switch (e) {
    case GemmEpilogue::none: return "none";
    case GemmEpilogue::bias: return "bias";
    case GemmEpilogue::bias_gelu: return "bias_gelu";
    case GemmEpilogue::grad_bias_a: return "grad_bias_a";
  }
  return "?";
}


bool is_backward_epilogue(GemmEpilogue e) { return e == GemmEpilogue::grad_bias_a; }

void check_epilogue(const GemmArgs& args) {
  const GemmEpilogue e = args.epilogue;
  const bool adds_bias = e == GemmEpilogue::bias || e == GemmEpilogue::bias_gelu;
  const bool grad_bias = e == GemmEpilogue::grad_bias_a;
  ZT_CHECK(!adds_bias || args.bias != nullptr, "gemm", "epilogue ", epilogue_name(e), " needs a bias");
  ZT_CHECK(!grad_bias || args.bias_grad != nullptr, "gemm", "epilogue ", epilogue_name(e), " needs bias_grad");
  ZT_CHECK(e == GemmEpilogue::none || args.batch == 1, "gemm", "epilogue ", epilogue_name(e),
           " is for unbatched products (linear layers), got batch ", args.batch);
  ZT_CHECK(!is_backward_epilogue(e) || args.beta == 0.0, "gemm", "epilogue ", epilogue_name(e),
           " does not accumulate into out (beta must be 0)");
  ZT_CHECK(args.pre_gelu == nullptr || (e == GemmEpilogue::bias_gelu && args.n % 8 == 0), "gemm",
           "pre_gelu output needs the bias_gelu epilogue and n divisible by 8, got epilogue ", epilogue_name(e),
           " and n = ", args.n);
}

// cuBLASLt's epilogue and its pointers. Its A is our b and its B our a (gemm.h), so our per-column
// bias is its per-row bias and our op(a) row sums are its BGRADB.
void set_epilogue(MatmulDesc& desc, const GemmArgs& args) {
  cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_DEFAULT;
  switch (args.epilogue) {
    case GemmEpilogue::none: return;
    case GemmEpilogue::bias: epi = CUBLASLT_EPILOGUE_BIAS; break;
    case GemmEpilogue::bias_gelu:
      epi = args.pre_gelu != nullptr ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_BIAS;
      break;
    case GemmEpilogue::grad_bias_a: epi = CUBLASLT_EPILOGUE_BGRADB; break;
  }
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epi);
  if (args.bias != nullptr) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, args.bias);
  if (args.bias_grad != nullptr) desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, static_cast<const void*>(args.bias_grad));
  if (args.pre_gelu != nullptr) {
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, static_cast<const void*>(args.pre_gelu));
    desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, args.n);
  }
}

// Note [GEMM autotuning]: with train.gemm_algorithms = tuned (cuda::set_gemm_autotune; the
// environment's ZT_GEMM_AUTOTUNE=1 does the same for benchmarks and tests), the first call of a
// problem times up to kCandidates of the heuristic's algorithms on the call's own operands
// (fastest_algorithm) and keeps the fastest for the process, as XLA and TransformerEngine do. Off
// by default: the choice then depends on timings, so two processes may pick different algorithms
// and round differently, and zerotrain's default is that two runs give the same bits; the tuning
// file (Note [GEMM tuning file] in core/gemm_tuning.h) is what makes tuned runs repeatable. Only
// problems that overwrite their output are tuned (beta = 0): the timed calls write it, and the
// real call then writes it again; accumulating products keep the first choice.
constexpr int kCandidates = 8;

// One product's operands, ready to run with a given algorithm (the tuning runs and the real call).
struct MatmulCall {
  cublasLtHandle_t handle;
  const MatmulDesc& desc;
  const void *alpha, *beta;
  const void* first;  // cuBLASLt's A: our b (gemm.h)
  const MatrixLayout& first_layout;
  const void* second;  // cuBLASLt's B: our a
  const MatrixLayout& second_layout;
  void* out;
  const MatrixLayout& out_layout;
  void* workspace;
  cudaStream_t stream;

  cublasStatus_t run(const cublasLtMatmulAlgo_t& algo) const {
    return cublasLtMatmul(handle, desc.desc, alpha, first, first_layout.layout, second, second_layout.layout, beta, out,
                          out_layout.layout, out, out_layout.layout, &algo, workspace, GemmState::kWorkspaceBytes,
                          stream);
  }
};

// Each candidate runs once to warm up, then kRounds rounds time kCallsPerRound calls of every
// candidate, in an order that rotates from round to round (behind one untimed call each), and
// choose_gemm_candidate picks by the median round (Note [Choosing among timed GEMM candidates] in
// core/gemm_candidates.h: the clocks drop part-way through a burst of products, so best rounds
// mislead).
constexpr int kRounds = 5, kCallsPerRound = 5;
constexpr float kMargin = 0.02f;

cublasLtMatmulAlgo_t fastest_algorithm(const MatmulCall& call, int device,
                                       const cublasLtMatmulHeuristicResult_t* results, int count, const char* problem) {
  std::vector<bool> runs(static_cast<size_t>(count));
  for (int i = 0; i < count; ++i) runs[static_cast<size_t>(i)] = call.run(results[i].algo) == CUBLAS_STATUS_SUCCESS;
  if (!runs[0]) return results[0].algo;  // the first choice cannot run: its call reports why
  std::vector<std::vector<float>> times(kRounds, std::vector<float>(static_cast<size_t>(count), -1.0f));
  Event start(device, true), stop(device, true);
  for (int round = 0; round < kRounds; ++round) {
    for (const int i : gemm_candidate_order(count, round)) {
      if (!runs[static_cast<size_t>(i)]) continue;  // cannot run here: skipped
      // One call ahead of the start event keeps the stream busy while the timed calls are queued,
      // so the host's launch of the first timed call is not counted (bench/timing.h does the same).
      ZT_CUBLAS_CHECK(call.run(results[i].algo));
      start.record(call.stream);
      for (int r = 0; r < kCallsPerRound; ++r) ZT_CUBLAS_CHECK(call.run(results[i].algo));
      stop.record(call.stream);
      stop.synchronize();
      times[static_cast<size_t>(round)][static_cast<size_t>(i)] = stop.elapsed_ms_since(start) / kCallsPerRound;
    }
  }
  std::vector<float> scores;
  const int chosen = choose_gemm_candidate(times, kMargin, &scores);
  if (problem != nullptr) log_gemm_tuning(problem, scores, runs, chosen);
  return results[chosen].algo;
}

// Note [GEMM tuning file]: a choice from a table is used once cuBLASLt confirms it runs this
// problem within the workspace; otherwise the problem is chosen for as if the table lacked it.
using AlgorithmMap = decltype(GemmState::algorithms);
AlgorithmMap::iterator take_imported(GemmState& state, const GemmKey& key, const MatmulCall& call) {
  const auto it = state.imported.find(key);
  if (it == state.imported.end()) return state.algorithms.end();
  const cublasLtMatmulAlgo_t algo = it->second;
  state.imported.erase(it);
  cublasLtMatmulHeuristicResult_t check{};
  const cublasStatus_t status =
      cublasLtMatmulAlgoCheck(call.handle, call.desc.desc, call.first_layout.layout, call.second_layout.layout,
                              call.out_layout.layout, call.out_layout.layout, &algo, &check);
  if (status != CUBLAS_STATUS_SUCCESS || check.workspaceSize > GemmState::kWorkspaceBytes) return state.algorithms.end();
  state.tuned[key] = algo;
  return state.algorithms.emplace(key, algo).first;
}

}  // namespace

bool gemm(const GemmArgs& args, const void* a, const void* b, void* out, int device, cudaStream_t stream,
          bool may_decline) {
  ZT_CHECK(args.m >= 0 && args.n >= 0 && args.k > 0 && args.batch >= 1, "gemm", "bad problem m=", args.m,
           " n=", args.n, " k=", args.k, " batch=", args.batch, " (needs m, n >= 0, k >= 1, batch >= 1)");
  if (args.m == 0 || args.n == 0) return true;
  check_epilogue(args);
  may_decline = may_decline && is_backward_epilogue(args.epilogue);

  const cudaDataType_t type = cuda_type(args.dtype);
  const bool f64 = args.dtype == DType::f64;
  // f32 stays exact f32 (CUBLAS_COMPUTE_32F never uses TF32); bf16/f16 accumulate in f32.
  MatmulDesc desc(f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F, f64 ? CUDA_R_64F : CUDA_R_32F);
  // cuBLASLt's A is our b and its B is our a (gemm.h: out^T = b^T a^T in column-major).
  const cublasOperation_t op_first = args.transpose_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_second = args.transpose_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, op_first);
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, op_second);
  set_epilogue(desc, args);

  const int64_t m = args.m, n = args.n, k = args.k;
  // Stored (pre-op) column-major shapes: our b is [k, n] row-major = [n, k] column-major, etc.
  MatrixLayout layout_first(type, args.transpose_b ? k : n, args.transpose_b ? n : k, args.transpose_b ? k : n,
                            args.batch, args.stride_b);
  MatrixLayout layout_second(type, args.transpose_a ? m : k, args.transpose_a ? k : m, args.transpose_a ? m : k,
                             args.batch, args.stride_a);
  ZT_CHECK(!args.out_f32 || (args.epilogue == GemmEpilogue::none && is_half(args.dtype)), "gemm",
           "an f32 out takes bf16/f16 operands without epilogue, got ", dtype_name(args.dtype), " and epilogue ",
           epilogue_name(args.epilogue));
  const DType out_dtype = args.out_f32 ? DType::f32 : args.dtype;
  MatrixLayout layout_out(cuda_type(out_dtype), n, m, n, args.batch, args.stride_out);

  GemmKey key;
  key.dtype = static_cast<int32_t>(args.dtype) | static_cast<int32_t>(out_dtype) << 8;
  key.epilogue = static_cast<int32_t>(args.epilogue) | (args.pre_gelu != nullptr ? 0x100 : 0);
  key.transpose_a = args.transpose_a;
  key.transpose_b = args.transpose_b;
  key.accumulate = args.beta != 0.0;
  key.batched = args.batch > 1;
  key.m = m;
  key.n = n;
  key.k = k;
  key.batch = args.batch;
  key.stride_a = args.stride_a;
  key.stride_b = args.stride_b;
  key.stride_c = args.stride_out;
  key.align_a = alignment_of(a);
  key.align_b = alignment_of(b);
  key.align_c = alignment_of(out);
  key.align_bias = std::min({alignment_of(args.bias), alignment_of(args.pre_gelu), alignment_of(args.bias_grad)});

  DeviceGuard guard(device);
  GemmState& state = DeviceContext::get(device).gemm_state();
  std::lock_guard<std::mutex> lock(state.mutex);
  void* workspace = state.workspace(stream);
  const double alpha64 = args.alpha, beta64 = args.beta;
  const float alpha32 = static_cast<float>(args.alpha), beta32 = static_cast<float>(args.beta);
  const void* alpha = f64 ? static_cast<const void*>(&alpha64) : static_cast<const void*>(&alpha32);
  const void* beta = f64 ? static_cast<const void*>(&beta64) : static_cast<const void*>(&beta32);
  const MatmulCall call{state.handle, desc, alpha, beta, b, layout_first, a, layout_second, out, layout_out,
                        workspace, stream};
  auto found = state.algorithms.find(key);
  if (found == state.algorithms.end()) found = take_imported(state, key, call);
  if (found == state.algorithms.end()) {
    Preference pref;
    pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, static_cast<uint64_t>(GemmState::kWorkspaceBytes));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, static_cast<uint32_t>(key.align_b));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, static_cast<uint32_t>(key.align_a));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, static_cast<uint32_t>(key.align_c));
    pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, static_cast<uint32_t>(key.align_c));
    const bool tune = state.autotune && args.beta == 0.0;
    cublasLtMatmulHeuristicResult_t results[kCandidates] = {};
    int returned = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
        state.handle, desc.desc, layout_first.layout, layout_second.layout, layout_out.layout, layout_out.layout,
        pref.pref, tune ? kCandidates : 1, results, &returned);
    if (status != CUBLAS_STATUS_NOT_SUPPORTED) ZT_CUBLAS_CHECK(status);
    if (status == CUBLAS_STATUS_NOT_SUPPORTED) returned = 0;
    if (returned == 0 && may_decline) {
      state.algorithms.emplace(key, std::nullopt);
      return false;
    }
    ZT_CHECK(returned > 0, "gemm", "cuBLASLt has no algorithm for ", dtype_name(args.dtype), " m=", m, " n=", n,
             " k=", k, " batch=", args.batch, " transpose_a=", args.transpose_a, " transpose_b=", args.transpose_b,
             " epilogue=", epilogue_name(args.epilogue), " (alignments ", key.align_a, "/", key.align_b, "/",
             key.align_c, " bytes)");
    const std::string problem =
        state.log_tuning ? detail::concat(dtype_name(args.dtype), " m=", m, " n=", n, " k=", k, " batch=", args.batch,
                                          args.transpose_a ? " a^T" : "", args.transpose_b ? " b^T" : "",
                                          " epilogue=", epilogue_name(args.epilogue))
                         : std::string();
    const cublasLtMatmulAlgo_t chosen =
        returned > 1 ? fastest_algorithm(call, device, results, returned, state.log_tuning ? problem.c_str() : nullptr)
                     : results[0].algo;
    if (tune) state.tuned[key] = chosen;
    found = state.algorithms.emplace(key, chosen).first;
  }
  if (!found->second) {
    ZT_CHECK(may_decline, "gemm", "cuBLASLt has no algorithm for epilogue ", epilogue_name(args.epilogue), " at m=",
             m, " n=", n, " k=", k);
    return false;
  }
  ZT_CUBLAS_CHECK(call.run(*found->second));
  return true;
}

Tensor linear_forward(const Tensor& x, const Tensor& weight, const Tensor& bias, GemmEpilogue epilogue,
                      Tensor* pre_gelu) {
  const char* api = "linear_forward";
  const int device = cuda_device_of(api, x);
  check_same_device(api, x, weight);
  ZT_CHECK(x.dim() == 2 && weight.dim() == 2 && x.size(1) == weight.size(1), api,
           "needs x [rows, in] and weight [out, in], got x ", x.describe(), ", weight ", weight.describe());
  ZT_CHECK(x.dtype() == weight.dtype() && is_floating(x.dtype()), api, "needs one floating dtype, got x ",
           x.describe(), ", weight ", weight.describe());
  check_contiguous(api, x, "x");
  check_contiguous(api, weight, "weight");
  const int64_t rows = x.size(0), in = x.size(1), out_features = weight.size(0);
  if (epilogue != GemmEpilogue::none) {
    ZT_CHECK(bias.defined() && bias.dim() == 1 && bias.size(0) == out_features && bias.dtype() == x.dtype(), api,
             "epilogue ", epilogue_name(epilogue), " needs bias [", out_features, "] ", dtype_name(x.dtype()),
             ", got ", bias.describe());
    check_same_device(api, x, bias);
    check_contiguous(api, bias, "bias");
  }
  ZT_CHECK(pre_gelu == nullptr || epilogue == GemmEpilogue::bias_gelu, api,
           "pre_gelu is an output of the bias_gelu epilogue only");
  ZT_CHECK(in > 0, api, "needs at least one input feature, got x ", x.describe());
  Tensor y = empty({rows, out_features}, x.dtype(), x.device());
  GemmArgs args;
  args.dtype = x.dtype();
  args.m = rows;
  args.n = out_features;
  args.k = in;
  args.transpose_b = true;
  args.epilogue = epilogue;
  args.bias = epilogue != GemmEpilogue::none ? bias.raw_data() : nullptr;
  if (pre_gelu != nullptr) {
    *pre_gelu = empty({rows, out_features}, x.dtype(), x.device());
    args.pre_gelu = pre_gelu->raw_data();
  }
  gemm(args, x.raw_data(), weight.raw_data(), y.raw_data(), device, current_stream(device));
  return y;
}

}  // namespace zt::cuda

namespace zt {

namespace {
struct MatrixDims {
  int64_t batch, rows, cols;
};
MatrixDims matrix_dims(const char* name, const Tensor& t) {
  ZT_CHECK(t.dim() == 2 || t.dim() == 3, "gemm", name, " must be [rows, cols] or [batch, rows, cols], got ",
           t.describe());
  if (t.dim() == 2) return {1, t.size(0), t.size(1)};
  return {t.size(0), t.size(1), t.size(2)};
}
}  // namespace

Tensor CudaBackend::gemm(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, int64_t batch,
                         const Tensor& accumulate) const {
  const char* api = "gemm";
  const int device = cuda::cuda_device_of(api, a);
  cuda::check_same_device(api, a, b);
  ZT_CHECK(a.dtype() == b.dtype() && is_floating(a.dtype()), api, "needs two operands of one floating dtype, got a ",
           a.describe(), ", b ", b.describe());
  // An empty operand has no layout to speak of (and may carry any strides).
  if (a.numel() > 0) cuda::check_contiguous(api, a, "a");
  if (b.numel() > 0) cuda::check_contiguous(api, b, "b");
  const MatrixDims da = matrix_dims("a", a), db = matrix_dims("b", b);
  const int64_t m = transpose_a ? da.cols : da.rows, k = transpose_a ? da.rows : da.cols;
  const int64_t kb = transpose_b ? db.cols : db.rows, n = transpose_b ? db.rows : db.cols;
  ZT_CHECK(k == kb, api, "inner dimensions differ: a is ", a.describe(), transpose_a ? " (transposed)" : "", ", b is ",
           b.describe(), transpose_b ? " (transposed)" : "");
  ZT_CHECK(batch >= 0 && (da.batch == batch || da.batch == 1) && (db.batch == batch || db.batch == 1), api,
           "batch ", batch, " does not match a ", a.describe(), " and b ", b.describe(), " (each needs batch or 1)");
  Tensor out = empty({batch, m, n}, a.dtype(), a.device());
  if (out.numel() == 0) return out;
  double beta = 0.0;
  if (accumulate.defined()) {
    cuda::check_same_device(api, a, accumulate);
    ZT_CHECK(accumulate.numel() == out.numel() && accumulate.is_contiguous(), api, "accumulate must be contiguous with ",
             batch * m * n, " elements (out is [", batch, ", ", m, ", ", n, "]), got ", accumulate.describe());
    Tensor start = make_view(accumulate, out.shape(), contiguous_strides(out.shape()), accumulate.offset());
    copy_strided(start, out);  // casts when accumulate has another dtype
    beta = 1.0;
  }
  if (k == 0) {  // an empty inner dimension: the product is zero
    if (!accumulate.defined())
      ZT_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), cuda::current_stream(device)));
    return out;
  }
  cuda::GemmArgs args;
  args.dtype = a.dtype();
  args.m = m;
  args.n = n;
  args.k = k;
  args.transpose_a = transpose_a;
  args.transpose_b = transpose_b;
  args.beta = beta;
  if (batch > 1 && da.batch == batch && db.batch == 1 && !transpose_a) {
    args.m = batch * m;  // a shared b: one tall product (Note [Matmul operands] in core/ops/matmul.cpp)
  } else {
    args.batch = batch;
    args.stride_a = da.batch == 1 ? 0 : m * k;
    args.stride_b = db.batch == 1 ? 0 : k * n;
    args.stride_out = m * n;
  }
  cuda::gemm(args, a.raw_data(), b.raw_data(), out.raw_data(), device, cuda::current_stream(device));
  return out;
}

void CudaBackend::gemm_into(const Tensor& a, const Tensor& b, bool transpose_a, bool transpose_b, Tensor& out,
                            bool accumulate) const {
  const char* api = "gemm_into";
  const int device = cuda::cuda_device_of(api, a);
  cuda::check_same_device(api, a, b);
  cuda::check_same_device(api, a, out);
  ZT_CHECK(a.dim() == 2 && b.dim() == 2 && out.dim() == 2, api, "needs 2-D a, b and out, got a ", a.describe(),
           ", b ", b.describe(), ", out ", out.describe());
  ZT_CHECK(a.dtype() == b.dtype() && is_floating(a.dtype()), api, "needs two operands of one floating dtype, got a ",
           a.describe(), ", b ", b.describe());
  ZT_CHECK(out.dtype() == a.dtype() || (is_half(a.dtype()) && out.dtype() == DType::f32), api, "out ",
           out.describe(), " must have the operands' dtype (", dtype_name(a.dtype()), ") or f32 for 16-bit operands");
  if (a.numel() > 0) cuda::check_contiguous(api, a, "a");
  if (b.numel() > 0) cuda::check_contiguous(api, b, "b");
  cuda::check_contiguous(api, out, "out");
  const int64_t m = transpose_a ? a.size(1) : a.size(0), k = transpose_a ? a.size(0) : a.size(1);
  const int64_t n = transpose_b ? b.size(0) : b.size(1);
  ZT_CHECK(k == (transpose_b ? b.size(1) : b.size(0)) && out.size(0) == m && out.size(1) == n, api,
           "shapes do not match: a ", a.describe(), transpose_a ? " (transposed)" : "", ", b ", b.describe(),
           transpose_b ? " (transposed)" : "", ", out ", out.describe());
  if (out.numel() == 0) return;
  if (k == 0) {
    if (!accumulate) ZT_CUDA_CHECK(cudaMemsetAsync(out.raw_data(), 0, out.nbytes(), cuda::current_stream(device)));
    return;
  }
  cuda::GemmArgs args;
  args.dtype = a.dtype();
  args.out_f32 = out.dtype() != a.dtype();
  args.m = m;
  args.n = n;
  args.k = k;
  args.transpose_a = transpose_a;
  args.transpose_b = transpose_b;
  args.beta = accumulate ? 1.0 : 0.0;
  cuda::gemm(args, a.raw_data(), b.raw_data(), out.raw_data(), device, cuda::current_stream(device));
}

}  // namespace zt

namespace zt {

// The bias (and GeLU) ride in cuBLASLt's epilogue: one pass over the output instead of the
// default's bias copy, product with beta = 1, and separate GeLU pass. f64, a GeLU without a bias
// and operands the epilogue cannot take fall back to the default.
Tensor CudaBackend::linear(const Tensor& x, const Tensor& weight, const Tensor& bias, bool gelu,
                           Tensor* pre_activation) const {
  const bool fusable = bias.defined() && x.dtype() != DType::f64 && x.is_contiguous() && weight.is_contiguous() &&
                       bias.is_contiguous() && bias.dtype() == x.dtype() && x.numel() > 0 && weight.numel() > 0 &&
                       (!gelu || weight.size(0) % 8 == 0);
  if (!fusable) return Backend::linear(x, weight, bias, gelu, pre_activation);
  return cuda::linear_forward(x, weight, bias, gelu ? cuda::GemmEpilogue::bias_gelu : cuda::GemmEpilogue::bias,
                              gelu ? pre_activation : nullptr);
}

// The weight gradient folds the bias-gradient reduction into the product's epilogue where cuBLASLt
// has a kernel for it (16-bit and f32 types); elsewhere, or when it declines, the default runs
// (product, then reduction).
namespace {
bool epilogue_eligible(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (!t->is_contiguous() || t->dtype() == DType::f64 || t->numel() == 0) return false;
  return true;
}
}  // namespace

LinearWeightGrads CudaBackend::linear_weight_grads(const Tensor& dy, const Tensor& x, bool bias) const {
  if (!bias || !epilogue_eligible({&dy, &x}) || dy.dtype() != x.dtype() || dy.size(0) != x.size(0))
    return Backend::linear_weight_grads(dy, x, bias);
  const int device = cuda::cuda_device_of("linear_weight_grads", dy);
  cuda::check_same_device("linear_weight_grads", dy, x);
  const int64_t rows = dy.size(0), out_features = dy.size(1), in = x.size(1);
  LinearWeightGrads g;
  g.dweight = empty({out_features, in}, dy.dtype(), dy.device());
  g.dbias = empty({out_features}, dy.dtype(), dy.device());
  cuda::GemmArgs args;
  args.dtype = dy.dtype();
  args.m = out_features;
  args.n = in;
  args.k = rows;
  args.transpose_a = true;  // dw = dy^T x
  args.epilogue = cuda::GemmEpilogue::grad_bias_a;
  args.bias_grad = g.dbias.raw_data();
  if (cuda::gemm(args, dy.raw_data(), x.raw_data(), g.dweight.raw_data(), device, cuda::current_stream(device),
                 /*may_decline=*/true))
    return g;
  return Backend::linear_weight_grads(dy, x, bias);
}

}  // namespace zt
