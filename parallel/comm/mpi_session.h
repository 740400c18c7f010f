// MpiSession: MPI's lifetime as an RAII object, owned by main() (no hidden global).
//
// It asks for MPI_THREAD_MULTIPLE (so a communication thread may call MPI while the main thread
// does too) and records what the library granted; zerotrain itself calls MPI only from the thread
// that made the communicator, so FUNNELED is enough. If MPI is already initialised (a host program
// did it) the session neither initialises nor finalises.
#pragma once

namespace zt::comm {

class MpiSession {
 public:
  MpiSession() : MpiSession(nullptr, nullptr) {}
  MpiSession(int* argc, char*** argv);
  ~MpiSession();  // MPI_Finalize if this session called MPI_Init_thread; never throws
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int thread_level() const { return thread_level_; }  // MPI_THREAD_SINGLE ... MPI_THREAD_MULTIPLE
  bool initialized_here() const { return initialized_here_; }
  int world_rank() const;
  int world_size() const;

 private:
  bool initialized_here_ = false;
  int thread_level_ = 0;
};

}  // namespace zt::comm
