// libzt_cupti_trace.so: a GPU timeline of any CUDA program, for finding where a training step's
// time goes without Nsight Systems (which the GPU machines lack) and without Nsight Compute's
// per-kernel replay (far too slow for the thousands of kernels of a step).
//
//   ZT_TRACE_OUT=trace.csv LD_PRELOAD=build-gpu/lib/libzt_cupti_trace.so zerotrain train ...
//   python3 bench/trace_summary.py trace.csv
//
// CUPTI's activity API records, with device timestamps and little overhead, every kernel, memcpy,
// memset and synchronisation, and every CUDA runtime call on the host (its start and end: where
// the host was while the GPU ran or waited). At exit the records are written as CSV rows
// `kind,name,start_ns,end_ns,bytes`; bench/trace_summary.py turns them into a per-step table.
//
// A preloaded library has no main to own its state: the one Recorder below, made at load and
// written out by an atexit handler, is the price (it touches nothing of the program it watches).
#include <cupti.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Record {
  char kind;  // k kernel, c memcpy, s memset, y synchronisation, r runtime call
  std::string name;
  uint64_t start, end, bytes;
};

constexpr size_t kBufferBytes = 8u << 20;

#define ZT_CUPTI_CHECK(call)                                                                     \
  do {                                                                                           \
    CUptiResult r_ = (call);                                                                     \
    if (r_ != CUPTI_SUCCESS) {                                                                   \
      const char* msg_ = nullptr;                                                                \
      cuptiGetResultString(r_, &msg_);                                                           \
      std::fprintf(stderr, "[cupti_trace] %s failed: %s\n", #call, msg_ ? msg_ : "unknown error"); \
    }                                                                                            \
  } while (0)

class Recorder {
 public:
  Recorder() {
    const char* out = std::getenv("ZT_TRACE_OUT");
    path_ = out != nullptr ? out : "zt_trace.csv";
    ZT_CUPTI_CHECK(cuptiActivityRegisterCallbacks(&Recorder::buffer_requested, &Recorder::buffer_completed));
    for (CUpti_ActivityKind k : {CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL, CUPTI_ACTIVITY_KIND_MEMCPY,
                                 CUPTI_ACTIVITY_KIND_MEMSET, CUPTI_ACTIVITY_KIND_SYNCHRONIZATION,
                                 CUPTI_ACTIVITY_KIND_RUNTIME})
      ZT_CUPTI_CHECK(cuptiActivityEnable(k));
  }
  void finish() {
    cuptiActivityFlushAll(1);
    std::lock_guard<std::mutex> lock(mutex_);
    if (records_.empty()) return;  // a helper process the program started (MPI's), not the program
    std::FILE* f = std::fopen(path_.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "[cupti_trace] cannot write %s\n", path_.c_str());
      return;
    }
    std::fprintf(f, "kind,name,start_ns,end_ns,bytes\n");
    for (const Record& r : records_)
      std::fprintf(f, "%c,%s,%llu,%llu,%llu\n", r.kind, r.name.c_str(), static_cast<unsigned long long>(r.start),
                   static_cast<unsigned long long>(r.end), static_cast<unsigned long long>(r.bytes));
    std::fclose(f);
    std::fprintf(stderr, "[cupti_trace] %zu records in %s\n", records_.size(), path_.c_str());
  }

  static Recorder& get();

 private:
  static void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
    *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, kBufferBytes));
    *size = kBufferBytes;
    *max_records = 0;
  }

  static void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
    Recorder& self = get();
    CUpti_Activity* a = nullptr;
    std::vector<Record> got;
    while (cuptiActivityGetNextRecord(buffer, valid, &a) == CUPTI_SUCCESS) {
      switch (a->kind) {
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
          auto* k = reinterpret_cast<CUpti_ActivityKernel10*>(a);
          got.push_back({'k', clean(k->name), k->start, k->end, 0});
          break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
          auto* m = reinterpret_cast<CUpti_ActivityMemcpy6*>(a);
          got.push_back({'c', "memcpy_kind" + std::to_string(m->copyKind), m->start, m->end, m->bytes});
          break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
          auto* m = reinterpret_cast<CUpti_ActivityMemset4*>(a);
          got.push_back({'s', "memset", m->start, m->end, m->bytes});
          break;
        }
        case CUPTI_ACTIVITY_KIND_SYNCHRONIZATION: {
          auto* s = reinterpret_cast<CUpti_ActivitySynchronization2*>(a);
          got.push_back({'y', "sync_type" + std::to_string(static_cast<int>(s->type)), s->start, s->end, 0});
          break;
        }
        case CUPTI_ACTIVITY_KIND_RUNTIME: {
          auto* r = reinterpret_cast<CUpti_ActivityAPI*>(a);
          const char* name = nullptr;
          cuptiGetCallbackName(CUPTI_CB_DOMAIN_RUNTIME_API, r->cbid, &name);
          got.push_back({'r', name != nullptr ? name : "runtime", r->start, r->end, 0});
          break;
        }
        default:
          break;
      }
    }
    std::free(buffer);
    std::lock_guard<std::mutex> lock(self.mutex_);
    self.records_.insert(self.records_.end(), got.begin(), got.end());
  }

  // Kernel names without their argument lists or commas (the CSV has no quoting).
  static std::string clean(const char* name) {
    std::string s = name != nullptr ? name : "?";
    if (const size_t p = s.find('('); p != std::string::npos) s.resize(p);
    for (char& c : s)
      if (c == ',') c = ';';
    return s.size() > 120 ? s.substr(0, 120) : s;
  }

  std::string path_;
  std::mutex mutex_;
  std::vector<Record> records_;
};

Recorder& Recorder::get() {
  // Never destroyed: CUPTI may deliver its last buffers while the program's statics go away.
  static Recorder* recorder = [] {
    auto* r = new Recorder;
    std::atexit([] { get().finish(); });
    return r;
  }();
  return *recorder;
}

// Start recording when the library is loaded, before the program's first CUDA call.
[[maybe_unused]] const bool started = (Recorder::get(), true);

}  // namespace
