// Errors: user-facing checks throw zt::Error with the API name first, for example
//   [matmul] inner dimensions differ: a is [2, 3] f32, b is [4, 5] f32
// Internal invariants use ZT_ASSERT, which names the file and line: they are bugs, not bad input.
// Library code never exits; only main() turns an exception into a message and an exit code.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace zt {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Out-of-memory errors are their own type so that callers (the trainer's report, tests) can catch them.
class OutOfMemoryError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
[[noreturn]] void throw_assert(const char* cond, const char* file, int line, const std::string& msg);
}  // namespace detail

// ZT_CHECK(cond, "api", parts...) throws "[api] parts..." when cond is false.
#define ZT_CHECK(cond, api, ...)                                                      \
  do {                                                                                \
    if (!(cond)) throw ::zt::Error(::zt::detail::concat("[", api, "] ", __VA_ARGS__)); \
  } while (0)

#define ZT_FAIL(api, ...) throw ::zt::Error(::zt::detail::concat("[", api, "] ", __VA_ARGS__))

#define ZT_ASSERT(cond, ...)                                                                      \
  do {                                                                                            \
    if (!(cond)) ::zt::detail::throw_assert(#cond, __FILE__, __LINE__, ::zt::detail::concat(__VA_ARGS__)); \
  } while (0)

}  // namespace zt
